/**
 * Checks on output paths made before any work is done, so that a wrong --out fails at once with one
 * line naming the path and what was expected (not after training, and not as an errno message).
 */
import { mkdirSync, statSync, type Stats } from "node:fs";
import { dirname, resolve } from "node:path";
import { SelfreportError, describeSystemError, isSystemError } from "../errors.ts";

/** The file's stat, or undefined when nothing is there (also when a part of the path is a file: ENOTDIR). */
function statOrNull(p: string): Stats | undefined {
  try {
    return statSync(p, { throwIfNoEntry: false });
  } catch (e) {
    if (isSystemError(e) && e.code === "ENOTDIR") return undefined;
    throw e;
  }
}

/**
 * Throws unless `path` is a folder or can become one: it must not be a file, and the nearest part of
 * it that exists must be a folder. `flag` and `what` name it in the message ("--out", "a run directory").
 */
export function expectFolderPath(path: string, flag: string, what: string): void {
  let p = resolve(path);
  for (;;) {
    const st = statOrNull(p);
    if (st !== undefined) {
      if (st.isDirectory()) return;
      if (p === resolve(path)) throw new SelfreportError(`${flag} ${path} is a file; expected ${what} (a folder, or a path that does not exist yet)`);
      throw new SelfreportError(`${flag} ${path}: ${p} is a file, so no folder can be made under it; expected ${what}`);
    }
    const up = dirname(p);
    if (up === p) return;
    p = up;
  }
}

/**
 * `mkdir -p` that always ends: Node's recursive mkdirSync never returns on some file systems (under
 * /proc it retries ENOENT forever), so the missing folders are made one by one, from the nearest
 * existing parent down. Each failure is one line naming the folder and what was expected.
 */
export function makeFolders(dir: string): void {
  const target = resolve(dir);
  const missing: string[] = [];
  for (let p = target; ; ) {
    const st = statOrNull(p);
    if (st !== undefined) {
      if (!st.isDirectory()) throw new SelfreportError(`cannot create folder ${dir}: ${p} is a file; expected a folder (or a path that does not exist yet)`);
      break;
    }
    missing.push(p);
    const up = dirname(p);
    if (up === p) break;
    p = up;
  }
  for (const p of missing.reverse()) {
    try {
      mkdirSync(p);
    } catch (e) {
      if (isSystemError(e) && e.code === "EEXIST" && statOrNull(p)?.isDirectory() === true) continue; // made meanwhile
      if (isSystemError(e)) throw new SelfreportError(`cannot create folder ${dir}: ${describeSystemError(e, p)}`, { cause: e });
      throw e;
    }
  }
}
