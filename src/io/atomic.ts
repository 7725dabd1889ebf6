/**
 * Atomic file writes: the data goes to `<path>.tmp-<pid>-<random>` in the same folder, is fsynced,
 * then renamed over `path` (a rename within one file system is atomic on POSIX). A reader therefore
 * sees either the old file or the complete new one, never a half-written file; on any error the
 * temporary file is removed and the error re-thrown.
 *
 * The parent folder is created when it does not exist (as `mkdir -p`).
 */
import { closeSync, fsyncSync, openSync, renameSync, rmSync, writeSync } from "node:fs";
import { randomBytes } from "node:crypto";
import { dirname } from "node:path";
import { SelfreportError, describeSystemError, isSystemError } from "../errors.ts";
import { makeFolders } from "./paths.ts";

/** Larger single writes are split: writeSync takes at most 2 GiB at a time. */
const MAX_WRITE = 1 << 30;

/** Creates `dir` and its parents when missing (no error when it exists). */
export function ensureDir(dir: string): void {
  makeFolders(dir);
}

/**
 * Writes `data` to `path` atomically. `data` is a string (written as UTF-8), bytes, or a list of
 * byte chunks written one after the other (so a large file need not be concatenated in memory).
 */
export function writeFileAtomic(path: string, data: string | Uint8Array | readonly Uint8Array[]): void {
  ensureDir(dirname(path));
  const tmp = `${path}.tmp-${process.pid}-${randomBytes(6).toString("hex")}`;
  const chunks: readonly Uint8Array[] = typeof data === "string" ? [Buffer.from(data, "utf8")] : data instanceof Uint8Array ? [data] : data;
  let fd: number | undefined;
  try {
    fd = openSync(tmp, "wx", 0o666);
    for (const chunk of chunks) writeAll(fd, chunk);
    fsyncSync(fd);
    closeSync(fd);
    fd = undefined;
    renameSync(tmp, path);
  } catch (e) {
    if (fd !== undefined) {
      try {
        closeSync(fd);
      } catch {
        // already failing; the original error is the one to report
      }
    }
    rmSync(tmp, { force: true });
    throw asUserError(e, `cannot write ${path}`);
  }
  syncDir(dirname(path));
}

/** Writes `value` as pretty JSON (2-space indent) with a trailing newline, atomically. */
export function writeJsonAtomic(path: string, value: unknown): void {
  const text = JSON.stringify(value, null, 2);
  if (text === undefined) throw new SelfreportError(`cannot write ${path}: the value is not JSON-serialisable`);
  writeFileAtomic(path, text + "\n");
}

function writeAll(fd: number, bytes: Uint8Array): void {
  let off = 0;
  while (off < bytes.byteLength) {
    const n = Math.min(MAX_WRITE, bytes.byteLength - off);
    off += writeSync(fd, bytes, off, n);
  }
}

/** Makes the rename durable. Best effort: some file systems refuse fsync on a folder. */
function syncDir(dir: string): void {
  let fd: number | undefined;
  try {
    fd = openSync(dir, "r");
    fsyncSync(fd);
  } catch {
    // not supported here; the rename itself has happened
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
}

/** System errors (ENOENT, EACCES, ENOSPC …) are the user's to fix: wrap them with the path. */
function asUserError(e: unknown, what: string): unknown {
  if (e instanceof SelfreportError) return e;
  if (isSystemError(e)) return new SelfreportError(`${what}: ${describeSystemError(e)}`, { cause: e });
  return e;
}
