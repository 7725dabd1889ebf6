/**
 * Ctrl-C and SIGTERM during `selfreport analyze patching` (read position; all positions) and `analyze residual`, with real child
 * processes and real signals: the command stops within seconds with exit code 130 (SIGINT) / 143
 * (SIGTERM), prints one line saying nothing was written, and leaves no output folder (nor a temporary
 * one). The same command without a signal writes its folder whole.
 */
import { test, after, type TestContext } from "node:test";
import assert from "node:assert/strict";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { makeTinyRun } from "../helpers/run-fixture.ts";
import { exitOf, spawnCli, until } from "../helpers/child.ts";
import { writeAnalysisOutput } from "../../src/analysis/context.ts";
import { loadRun } from "../../src/selfreport/run.ts";
import { writeReport } from "../../src/report/html.ts";

const root = mkdtempSync(join(tmpdir(), "selfreport-analyze-interrupt-"));
after(() => rmSync(root, { recursive: true, force: true }));
// an unfrozen run (residual needs one) on a small model with many examples: tens of seconds of patching
// and residual rows, interrupted after the first progress line
const run = makeTinyRun(join(root, "fx"), { freeze: "unfrozen", n: 3000, layer: 0, model: { nLayers: 3, dModel: 32, nCtx: 16 } });

/** From the signal to the exit, on a machine that may be busy. */
const STOP_MS = 5_000;

async function interruptAnalysis(t: TestContext, analysis: "patching" | "residual", signal: "SIGINT" | "SIGTERM", expectedCode: number, allPositions = false): Promise<void> {
  const parent = join(root, `out-${analysis}-${signal}${allPositions ? "-all" : ""}`);
  const out = join(parent, "analysis", analysis);
  const extra = analysis === "residual" ? ["--n-inputs", "3000"]
    : allPositions ? ["--n-inputs", "2000", "--controls", "100", "--positions", "all"]
    : ["--n-inputs", "2000", "--controls", "100"];
  const c = spawnCli(["analyze", analysis, "--run", run.runDir, "--out", out, ...extra]);
  const firstLine = analysis === "residual" ? /^residual: base model \d+% /m : allPositions ? /^patching \(all positions\) \d+% /m : /^patching \d+% /m;
  await until(() => firstLine.test(c.stderr()), 120_000, c, `the first ${analysis} progress line`);
  c.proc.kill(signal);
  const r = await exitOf(c, 60_000);
  assert.equal(r.code, expectedCode, `exit code after ${signal}; stderr:\n${c.stderr()}`);
  assert.ok(r.ms < STOP_MS, `stopped ${r.ms} ms after the signal (limit ${STOP_MS})`);
  t.diagnostic(`exit ${r.code} ${r.ms} ms after ${signal}`);
  const lines = c.stderr().split("\n").filter((l) => l.startsWith(`selfreport: ${signal}: `));
  assert.deepEqual(lines, [`selfreport: ${signal}: analyze ${analysis} stopped before it finished; nothing was written to ${out} (run the command again)`], c.stderr());
  assert.ok(c.stderr().endsWith(`${lines[0]}\n`), `the last line says what happened; stderr:\n${c.stderr()}`);
  assert.doesNotMatch(c.stderr(), /\n\s+at /, "no stack trace");
  assert.equal(c.stdout(), "", "no results printed");
  assert.equal(existsSync(out), false, "no output folder");
  assert.deepEqual(existsSync(parent) ? readdirSync(parent, { recursive: true }) : [], [], "nothing half-written beside it");
}

test("analyze patching: SIGINT stops within seconds with exit 130, one line, no output folder", { timeout: 240_000 }, async (t) => {
  await interruptAnalysis(t, "patching", "SIGINT", 130);
});

test("analyze patching: SIGTERM stops the same way with exit 143", { timeout: 240_000 }, async (t) => {
  await interruptAnalysis(t, "patching", "SIGTERM", 143);
});

test("analyze patching --positions all: SIGINT during the stacked forwards (patches × inputs) stops the same way", { timeout: 240_000 }, async (t) => {
  await interruptAnalysis(t, "patching", "SIGINT", 130, true);
});

test("analyze residual: SIGINT stops within seconds with exit 130, one line, no output folder", { timeout: 240_000 }, async (t) => {
  await interruptAnalysis(t, "residual", "SIGINT", 130);
});

test("analyze residual: SIGTERM stops the same way with exit 143", { timeout: 240_000 }, async (t) => {
  await interruptAnalysis(t, "residual", "SIGTERM", 143);
});

test("analyze patching without a signal writes its new folder whole", { timeout: 240_000 }, async () => {
  const out = join(root, "done", "analysis", "patching");
  const c = spawnCli(["analyze", "patching", "--run", run.runDir, "--out", out, "--n-inputs", "20", "--controls", "3"]);
  const r = await exitOf(c, 120_000);
  assert.equal(r.code, 0, c.stderr());
  assert.deepEqual(readdirSync(out).sort(), ["control_slopes.svg", "delta_scatter.svg", "direct_vs_total.svg", "sensitivity.svg", "summary.json"]);
  assert.deepEqual(readdirSync(join(root, "done", "analysis")), ["patching"], "no temporary folder left beside it");
});

test("writeAnalysisOutput: a write that fails part-way leaves no new folder; a replaced folder is swapped whole, the old one kept when the write fails", () => {
  const r = loadRun(run.runDir);
  const parent = join(root, "fail");
  const out = join(parent, "weights");
  // the second plot's name is not a valid file name (a NUL byte): the write fails after the first plot
  assert.throws(() => writeAnalysisOutput(out, "weights", r, { x: 1 }, { first: "<svg/>", "bad\0name": "<svg/>" }), /cannot write|null bytes|NUL/i);
  assert.equal(existsSync(out), false, "no folder");
  assert.deepEqual(readdirSync(parent), [], "no temporary folder");
  const files = writeAnalysisOutput(out, "weights", r, { x: 1 }, { first: "<svg/>" });
  assert.deepEqual(files, [join(out, "first.svg"), join(out, "summary.json")]);
  assert.deepEqual(readdirSync(parent), ["weights"]);
  // a failed replacement leaves the old analysis as it was
  assert.throws(() => writeAnalysisOutput(out, "weights", r, { x: 3 }, { second: "<svg/>", "bad\0name": "<svg/>" }), /cannot write|null bytes|NUL/i);
  assert.deepEqual(readdirSync(out).sort(), ["first.svg", "summary.json"]);
  assert.equal((JSON.parse(readFileSync(join(out, "summary.json"), "utf8")) as { x: number }).x, 1);
  // a replacement (--force, src/io/outputs.ts) is built beside it and renamed into place: no stale plot of the old one
  writeAnalysisOutput(out, "weights", r, { x: 2 }, { second: "<svg/>" });
  assert.deepEqual(readdirSync(out).sort(), ["second.svg", "summary.json"]);
  assert.deepEqual(readdirSync(parent), ["weights"], "no temporary folder");
});

test("writeReport: beforeWriting that throws (a signal arrived) leaves no page", async () => {
  const out = join(root, "report.html");
  await assert.rejects(writeReport({ runDir: run.runDir, out, beforeWriting: () => { throw new Error("stop"); } }), /stop/);
  assert.equal(existsSync(out), false);
  await writeReport({ runDir: run.runDir, out });
  assert.ok(existsSync(out));
});
