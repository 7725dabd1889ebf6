/**
 * How the CLI reports what went wrong (src/cli/main.ts reportError, src/errors.ts describeSystemError):
 * one line on stderr, naming the path and what was expected; never the raw errno text.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { reportError } from "../../src/cli/main.ts";
import { SelfreportError, describeSystemError, isSystemError } from "../../src/errors.ts";
import { makeFolders } from "../../src/io/paths.ts";

function printed(e: unknown): { code: number; lines: string[] } {
  const lines: string[] = [];
  const saved = console.error;
  console.error = (...a: unknown[]) => void lines.push(a.join(" "));
  try {
    return { code: reportError(e), lines };
  } finally {
    console.error = saved;
  }
}

function systemError(fn: () => unknown): NodeJS.ErrnoException {
  try {
    fn();
  } catch (e) {
    assert.ok(isSystemError(e), String(e));
    return e;
  }
  throw new Error("no error");
}

const root = mkdtempSync(join(tmpdir(), "selfreport-errors-"));
const file = join(root, "a-file");
writeFileSync(file, "x");

test("a system error from anywhere prints as one line naming the path, without the errno text", () => {
  const eexist = systemError(() => mkdirSync(file));
  const r = printed(eexist);
  assert.equal(r.code, 1);
  assert.deepEqual(r.lines, [`selfreport: error: ${file} already exists and is not a folder; expected a folder (or a path that does not exist yet)`]);
  const enotdir = systemError(() => statSync(join(file, "sub")));
  assert.equal(describeSystemError(enotdir), `a part of ${join(file, "sub")} is a file, not a folder; expected a folder path`);
  const enoent = systemError(() => mkdirSync(join(root, "no", "such")));
  assert.equal(describeSystemError(enoent), `folder ${join(root, "no", "such")} cannot be made there (its parent does not exist or accepts no folders); expected a writable location`);
});

test("a size too large to allocate is one line saying the input is corrupt; multi-line messages are joined", () => {
  const r = printed(new RangeError("Invalid typed array length: 1099511627776"));
  assert.equal(r.code, 1);
  assert.equal(r.lines.length, 1);
  assert.match(r.lines[0]!, /^selfreport: error: a size read from an input file is too large to allocate \(Invalid typed array length: 1099511627776\); the file is corrupt/);
  assert.deepEqual(printed(new SelfreportError("x.json: not valid JSON (Unexpected token\n  ...here)")).lines, ["selfreport: error: x.json: not valid JSON (Unexpected token ...here)"]);
});

test("makeFolders makes missing folders one by one and refuses a file on the way", () => {
  const deep = join(root, "a", "b", "c");
  makeFolders(deep);
  assert.ok(statSync(deep).isDirectory());
  makeFolders(deep); // exists: nothing to do
  assert.throws(() => makeFolders(join(file, "x")), (e: unknown) => e instanceof SelfreportError && e.message === `cannot create folder ${join(file, "x")}: ${file} is a file; expected a folder (or a path that does not exist yet)`);
  rmSync(root, { recursive: true, force: true });
});
