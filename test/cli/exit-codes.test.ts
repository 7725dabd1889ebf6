/** Only the CLI decides exit codes: library code throws (Interrupted on Ctrl-C) and the CLI maps it to the exit status. */
import { test } from "node:test";
import assert from "node:assert/strict";
import { readdirSync, readFileSync, statSync } from "node:fs";
import { join, relative } from "node:path";
import { findRepoRoot } from "../../src/tensor/backend/native.ts";

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
