/**
 * The plain progress line (off a terminal), with an injected clock: a line at every 10 % and at least
 * every 10 s of work, and after a resume an ETA from the steps done in this process only.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { progress } from "../../src/util/progress.ts";

process.env["SELFREPORT_QUIET"] = "0";

function clocked(total: number, start = 0): { lines: string[]; at: (ms: number, value: number) => void } {
  let now = 0;
  const lines: string[] = [];
  const bar = progress("work", total, [], { start, now: () => now, write: (l) => void lines.push(l) });
  return { lines, at: (ms, value) => ((now = ms), bar.update(value)) };
}

test("off a terminal: a line every 10 % of the steps", () => {
  const p = clocked(100);
  for (let v = 1; v <= 100; v++) p.at(v, v); // 1 ms per step: never 10 s between lines
  assert.deepEqual(p.lines.map((l) => l.split(" ")[1]), ["1%", "10%", "20%", "30%", "40%", "50%", "60%", "70%", "80%", "90%", "100%"]);
});

test("off a terminal: slow steps still print a line at least every 10 s", () => {
  const p = clocked(1000);
  // 1 s per step: 10 % would take 100 s
  for (let v = 1; v <= 35; v++) p.at(v * 1000, v);
  assert.deepEqual(p.lines.map((l) => l.split(" ")[2]), ["1/1000", "11/1000", "21/1000", "31/1000"]);
  assert.match(p.lines[1]!, /^work 1% 11\/1000 \| 11s elapsed, ETA 989s$/);
});

test("after a resume the ETA comes from this process's steps, not from all steps done", () => {
  // 900 of 1000 steps were done before; here each step takes 1 s: 100 steps left → 100 s
  const p = clocked(1000, 900);
  p.at(0, 900);
  p.at(10_000, 910);
  assert.match(p.lines.at(-1)!, /^work 91% 910\/1000 \| 10s elapsed, ETA 90s$/);
  // ETA unknown until a step is done here
  assert.match(p.lines[0]!, /ETA -$/);
});
