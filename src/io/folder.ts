/**
 * Writing into an output folder (a run, a model, an imported run):
 *
 *   await withOutputFolder(dir, async (folder) => { …write files into dir… }, { keepOnFailure })
 *
 * 1. creates `dir` when missing and takes its lock (src/io/lock.ts): one writer at a time;
 * 2. removes what interrupted writers of this folder left: `.checkpoint.tmp-*` folders, `*.tmp-PID-HEX`
 *    files of atomic writes, moved-aside stale locks (under the lock, nothing else is writing here);
 * 3. runs `work`; when it throws, removes every entry it created (entries not there when `work` began,
 *    or since `folder.markStart()`), except those `keepOnFailure` names (a checkpoint to --resume
 *    from), and the folder itself when this call created it and it is left empty;
 * 4. releases the lock, also on errors (and on process.exit, see lock.ts).
 */
import { existsSync, readdirSync, readFileSync, rmSync, rmdirSync } from "node:fs";
import { join } from "node:path";
import { ensureDir, writeFileAtomic } from "./atomic.ts";
import { lockFolder, LOCK_FILE } from "./lock.ts";

export interface OutputFolder {
  dir: string;
  /** Entries present now count as not created by this command (call after removing an old output with --force). */
  markStart(): void;
}

/** Temporaries of interrupted writes: `.NAME.tmp-PID-…` folders/files (checkpoints) and `NAME.tmp-PID-HEX` files (atomic.ts). */
export function isStaleTemp(name: string): boolean {
  return /^\..+\.tmp-\d+-/.test(name) || /\.tmp-\d+-[0-9a-f]+$/.test(name) || name.startsWith(`${LOCK_FILE}.stale-`);
}

/** Removes the temporaries of interrupted writes in `dir` (top level); returns how many. */
export function removeStaleTemps(dir: string): number {
  let n = 0;
  for (const name of readdirSync(dir)) {
    if (!isStaleTemp(name)) continue;
    rmSync(join(dir, name), { recursive: true, force: true });
    n++;
  }
  return n;
}

interface FolderOptions {
  keepOnFailure?: (dir: string) => readonly string[];
  note?: (line: string) => void;
}

/** Steps 1–2; returns the folder and what to do when the work fails or ends. */
function openOutputFolder(dir: string, o: FolderOptions): { folder: OutputFolder; failed: () => void; release: () => void } {
  const created = !existsSync(dir);
  ensureDir(dir);
  let lock;
  try {
    lock = lockFolder(dir, o.note);
  } catch (e) {
    // another process may have created the folder in the same instant and now holds it: only an
    // empty folder is ours to remove (the holder's lock file keeps its folder non-empty)
    if (created) {
      try {
        rmdirSync(dir);
      } catch {
        // not empty: someone else's
      }
    }
    throw e;
  }
  let before = new Set<string>();
  const folder: OutputFolder = { dir, markStart: () => void (before = new Set(readdirSync(dir))) };
  const failed = (): void => {
    const keep = new Set(o.keepOnFailure?.(dir) ?? []);
    for (const name of readdirSync(dir)) {
      if (name === LOCK_FILE || before.has(name) || keep.has(name)) continue;
      rmSync(join(dir, name), { recursive: true, force: true });
    }
    lock.release();
    if (created && readdirSync(dir).length === 0) rmdirSync(dir);
  };
  try {
    removeStaleTemps(dir);
    folder.markStart();
  } catch (e) {
    lock.release();
    throw e;
  }
  return { folder, failed, release: lock.release };
}

export async function withOutputFolder<T>(dir: string, work: (folder: OutputFolder) => Promise<T>, o: FolderOptions = {}): Promise<T> {
  const f = openOutputFolder(dir, o);
  try {
    return await work(f.folder);
  } catch (e) {
    f.failed();
    throw e;
  } finally {
    f.release();
  }
}

/** withOutputFolder for synchronous work. */
export function withOutputFolderSync<T>(dir: string, work: (folder: OutputFolder) => T, o: FolderOptions = {}): T {
  const f = openOutputFolder(dir, o);
  try {
    return work(f.folder);
  } catch (e) {
    f.failed();
    throw e;
  } finally {
    f.release();
  }
}

/** What a failed training keeps: its checkpoint (and the log up to it), so that --resume can continue. */
export function keepCheckpoint(dir: string): string[] {
  return existsSync(join(dir, "checkpoint", "state.json")) || existsSync(join(dir, "checkpoint.old", "state.json")) ? ["checkpoint", "checkpoint.old", "train_log.jsonl"] : [];
}

/**
 * Keeps the lines of a JSONL log whose `step` is at most `step` (a resumed run repeats the steps
 * after its checkpoint). Lines without a numeric step are kept. Rewritten atomically.
 */
export function truncateLogToStep(path: string, step: number): void {
  if (!existsSync(path)) return;
  const lines = readFileSync(path, "utf8").split("\n").filter((l) => l.trim() !== "");
  const kept = lines.filter((l) => {
    try {
      const s = (JSON.parse(l) as { step?: unknown }).step;
      return typeof s !== "number" || s <= step;
    } catch {
      return false; // a line cut by the kill
    }
  });
  if (kept.length !== lines.length) writeFileAtomic(path, kept.map((l) => l + "\n").join(""));
}
