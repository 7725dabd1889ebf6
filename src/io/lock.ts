/**
 * One writer per folder: a run, sweep or model folder being written holds `.selfreport.lock`,
 * created with O_EXCL (open "wx": exactly one process can create it) and holding the writer's
 *   { pid, host, started, command }.
 *
 * A second writer gets one line naming the holder. A lock whose holder is gone (same host, pid not
 * alive) is stale: it is taken over, with a note on stderr. The lock is released when the work ends,
 * also on errors and when the process exits (an 'exit' handler); only a kill -9 leaves it, as a stale lock.
 */
import { closeSync, fsyncSync, linkSync, openSync, readFileSync, renameSync, statSync, unlinkSync, writeSync } from "node:fs";
import { randomBytes } from "node:crypto";
import { hostname } from "node:os";
import { dirname, join } from "node:path";
import { SelfreportError } from "../errors.ts";

export const LOCK_FILE = ".selfreport.lock";

export interface LockHolder {
  pid: number;
  host: string;
  started: string;
  command: string;
}

export interface FolderLock {
  dir: string;
  holder: LockHolder;
  /** Removes the lock (when it is still ours); safe to call twice. */
  release(): void;
}

/** Lock files this process holds: removed on exit, whatever the exit path. */
const held = new Map<string, string>();
let exitHandler = false;

function releaseAllOnExit(): void {
  if (exitHandler) return;
  exitHandler = true;
  process.on("exit", () => {
    for (const [path, content] of held) removeIfOurs(path, content);
    held.clear();
  });
}

function removeIfOurs(path: string, content: string): void {
  try {
    if (readFileSync(path, "utf8") === content) unlinkSync(path);
  } catch {
    // already gone
  }
}

/** Whether a process with this pid runs on this machine (EPERM: it runs, as another user). */
export function pidAlive(pid: number): boolean {
  if (!Number.isInteger(pid) || pid <= 0) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === "EPERM";
  }
}

function parseHolder(text: string): LockHolder | null {
  try {
    const h = JSON.parse(text) as Partial<LockHolder>;
    if (typeof h.pid === "number" && typeof h.host === "string" && typeof h.started === "string") return { pid: h.pid, host: h.host, started: h.started, command: String(h.command ?? "") };
  } catch {
    // a lock being written, or a corrupt one
  }
  return null;
}

function sleepMs(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

/**
 * Takes the lock of `dir` (which must exist) for this process, or throws a one-line error naming the
 * holder. `note` receives the line about a stale lock taken over (default: stderr).
 */
export function lockFolder(dir: string, note: (line: string) => void = (l) => void process.stderr.write(`${l}\n`)): FolderLock {
  const path = join(dir, LOCK_FILE);
  const holder: LockHolder = { pid: process.pid, host: hostname(), started: new Date().toISOString(), command: process.argv.slice(2).join(" ").slice(0, 300) };
  const content = JSON.stringify(holder) + "\n";
  for (let attempt = 0; attempt < 20; attempt++) {
    let fd: number;
    try {
      fd = openSync(path, "wx", 0o644);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code !== "EEXIST") throw new SelfreportError(`cannot create the lock ${path}: ${(e as Error).message}`, { cause: e });
      takeOverIfStale(path, note);
      continue;
    }
    try {
      writeSync(fd, content);
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    held.set(path, content);
    releaseAllOnExit();
    return {
      dir,
      holder,
      release: () => {
        if (!held.has(path)) return;
        held.delete(path);
        removeIfOurs(path, content);
      },
    };
  }
  throw new SelfreportError(`${dir}: could not take the lock ${path} (other processes keep taking it)`);
}

/** Returns when the lock may be tried again (a stale one removed); throws when a live process holds it. */
function takeOverIfStale(path: string, note: (line: string) => void): void {
  let text = "";
  let h: LockHolder | null = null;
  // a lock just created may not hold its content yet: look again briefly
  for (let i = 0; i < 10; i++) {
    try {
      text = readFileSync(path, "utf8");
    } catch {
      return; // released meanwhile: try again
    }
    h = parseHolder(text);
    if (h !== null) break;
    sleepMs(50);
  }
  let reason: string;
  if (h === null) {
    let age = 0;
    try {
      age = Date.now() - statSync(path).mtimeMs;
    } catch {
      return;
    }
    if (age < 10_000) throw new SelfreportError(`${path} is being taken by another selfreport process; try again in a moment`);
    reason = "an unreadable lock file";
  } else if (h.host !== hostname()) {
    throw new SelfreportError(
      `${dirname(path)} is being written by another selfreport process (pid ${h.pid} on host ${h.host}, since ${h.started}: ${h.command}); wait for it to finish, or, if that process is gone, delete ${path}`,
    );
  } else if (pidAlive(h.pid)) {
    throw new SelfreportError(`${dirname(path)} is being written by another selfreport process (pid ${h.pid}, since ${h.started}: ${h.command}); wait for it to finish or choose another --out`);
  } else reason = `pid ${h.pid}, which is no longer running (started ${h.started})`;
  // stale: move it aside under a unique name, and remove it only if it is still the lock we judged
  const aside = `${path}.stale-${process.pid}-${randomBytes(4).toString("hex")}`;
  try {
    renameSync(path, aside);
  } catch {
    return; // someone else took it over first: try again
  }
  let movedText = "";
  try {
    movedText = readFileSync(aside, "utf8");
  } catch {
    // gone
  }
  if (movedText !== text) {
    // we moved a fresh lock of another process: put it back (unless a newer one exists already)
    try {
      linkSync(aside, path);
    } catch {
      // a newer lock is in place
    }
    try {
      unlinkSync(aside);
    } catch {
      // gone
    }
    return;
  }
  unlinkSync(aside);
  note(`note: took over the stale lock ${path} of ${reason}`);
}
