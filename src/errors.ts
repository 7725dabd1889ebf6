/**
 * An error meant for the user: the CLI prints its message as one line, without a stack trace.
 * Its message names the bad value and what was expected.
 */
export class SelfreportError extends Error {
  override name = "SelfreportError";
}

/** What a system error code means for the path it concerns, in words (never the raw errno text). */
const SYSTEM_ERRORS: Record<string, (path: string) => string> = {
  EEXIST: (p) => `${p} already exists and is not a folder; expected a folder (or a path that does not exist yet)`,
  ENOTDIR: (p) => `a part of ${p} is a file, not a folder; expected a folder path`,
  EISDIR: (p) => `${p} is a folder; expected a file`,
  ENOENT: (p) => `${p} does not exist (or its parent folder cannot be created); expected an existing file or a creatable path`,
  EACCES: (p) => `permission denied for ${p}; expected a path you may read and write`,
  EPERM: (p) => `operation not permitted on ${p}; expected a path you may read and write`,
  EROFS: (p) => `${p} is on a read-only file system; expected a writable location`,
  ENOSPC: (p) => `no space left on the device for ${p}`,
  EDQUOT: (p) => `disk quota exceeded for ${p}`,
  ENAMETOOLONG: (p) => `the path ${p} is too long`,
  ELOOP: (p) => `too many symbolic links in ${p}`,
  EMFILE: (p) => `too many open files while opening ${p}`,
  EBUSY: (p) => `${p} is busy (in use by another process)`,
  ENOTEMPTY: (p) => `${p} is a folder that is not empty`,
};

/** A Node system error (ENOENT, EEXIST, …) carries its code, the failing call and usually the path. */
export function isSystemError(e: unknown): e is NodeJS.ErrnoException {
  return e instanceof Error && typeof (e as NodeJS.ErrnoException).code === "string" && typeof (e as NodeJS.ErrnoException).syscall === "string";
}

/**
 * One line for a system error: what is wrong with which path and what was expected, e.g.
 * "cannot create folder out: out already exists and is not a folder; expected a folder …".
 * `path` defaults to the error's own.
 */
export function describeSystemError(e: NodeJS.ErrnoException, path?: string): string {
  const p = path ?? e.path ?? (e as { dest?: string }).dest ?? "(unknown path)";
  if (e.code === "ENOENT" && e.syscall === "mkdir") return `folder ${p} cannot be made there (its parent does not exist or accepts no folders); expected a writable location`;
  const say = e.code !== undefined ? SYSTEM_ERRORS[e.code] : undefined;
  return say !== undefined ? say(p) : `${p}: the system refused ${e.syscall ?? "the operation"} (${e.code ?? "unknown error"})`;
}
