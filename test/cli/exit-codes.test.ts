/**
 * Only the CLI decides exit codes: library code throws (InterruptedError on Ctrl-C) and
 * reportError maps it to the exit status.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { readdirSync, readFileSync, statSync } from "node:fs";
import { join, relative } from "node:path";
import { reportError } from "../../src/cli/main.ts";
import { InterruptedError, SelfreportError } from "../../src/errors.ts";
import { findRepoRoot } from "../../src/tensor/backend/native.ts";

test("the CLI maps InterruptedError to exit code 130 and a user error to 1", () => {
  const err = console.error;
  const printed: string[] = [];
  console.error = (...a: unknown[]) => void printed.push(a.join(" "));
  try {
    assert.equal(reportError(new InterruptedError("stopped at step 3; continue with the same command plus --resume")), 130);
    assert.deepEqual(printed, [], "the trainer already said where it stopped; the CLI adds nothing");
    assert.equal(reportError(new SelfreportError("bad value")), 1);
    assert.deepEqual(printed, ["selfreport: error: bad value"]);
  } finally {
    console.error = err;
  }
});

function tsFiles(dir: string): string[] {
  return readdirSync(dir).flatMap((f) => {
    const p = join(dir, f);
    return statSync(p).isDirectory() ? tsFiles(p) : p.endsWith(".ts") ? [p] : [];
  });
}

test("no library code under src/ calls process.exit (only src/cli and the second-Ctrl-C handler do)", () => {
  const repo = findRepoRoot();
  assert.ok(repo !== null);
  const src = join(repo, "src");
  const offenders = tsFiles(src)
    .map((p) => relative(src, p))
    .filter((p) => !p.startsWith("cli/") && p !== join("util", "interrupt.ts"))
    .filter((p) => /process\.exit\s*\(/.test(readFileSync(join(src, p), "utf8")));
  assert.deepEqual(offenders, []);
});
