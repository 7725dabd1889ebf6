/**
 * Ctrl-C and SIGTERM with real child processes and real signals: `selfreport train` and `pretrain`
 * stop within seconds of the signal with exit code 130 (SIGINT) / 143 (SIGTERM), leave a checkpoint
 * of the steps done, print one line with the command that resumes, and that command finishes the run.
 * A local sweep stops its threads, keeps its finished jobs and prints the command that continues.
 */
import { test, after } from "node:test";
import assert from "node:assert/strict";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { makeTinyHfModel } from "../helpers/tiny-model.ts";
import { writeSyntheticDataset } from "../helpers/synthetic-dataset.ts";
import { makeDocs } from "../helpers/text-docs.ts";
import { makeSweepFixture } from "../sweep/fixture.ts";
import { exitOf, linesOf, spawnCli, until, type Child } from "../helpers/child.ts";

const root = mkdtempSync(join(tmpdir(), "selfreport-interrupt-"));
after(() => rmSync(root, { recursive: true, force: true }));
const modelDir = join(root, "tiny");
makeTinyHfModel(modelDir, { dVocab: 64, dModel: 16, nLayers: 2, nHeads: 2, nCtx: 16, seed: 2 });
const data = join(root, "ds.safetensors");
writeSyntheticDataset(data, modelDir, { n: 120, seed: 1 });
const corpus = join(root, "docs.txt");
writeFileSync(corpus, makeDocs(30, 60, 8).map((d) => d.text).join("\n\n") + "\n");

/** A signal lands within this long (the machine running the tests may be busy). */
const STOP_MS = 10_000;

function stepOf(checkpointDir: string): number {
  return (JSON.parse(readFileSync(join(checkpointDir, "state.json"), "utf8")) as { step: number }).step;
}

/** Training steps in a train_log.jsonl (records with "loss"; validation records have "val_loss"). */
function stepLines(log: string): number {
  return readFileSync(log, "utf8").split("\n").filter((l) => l.includes('"loss":')).length;
}

/** The one line that says how to resume, as arguments for spawnCli (the leading `selfreport` dropped). */
function resumeArgs(c: Child): string[] {
  const lines = c.stderr().split("\n").filter((l) => l.includes("resume with: "));
  assert.equal(lines.length, 1, `one line saying how to resume; stderr:\n${c.stderr()}`);
  const cmd = lines[0]!.slice(lines[0]!.indexOf("resume with: ") + "resume with: ".length).split(" ");
  assert.equal(cmd[0], "selfreport");
  assert.equal(cmd.at(-1), "--resume");
  return cmd.slice(1);
}

async function interruptTrain(signal: "SIGINT" | "SIGTERM", expectedCode: number): Promise<void> {
  const out = join(root, `run-${signal}`);
  // ~1 400 steps of a frozen head: seconds of work, interrupted after the first 30 are logged
  const args = ["train", "--data", data, "--head", "regression", "--solver", "adamw", "--epochs", "60", "--batch-size", "4", "--patience", "1000", "--checkpoint-every", "1000", "--out", out];
  const c = spawnCli(args);
  const log = join(out, "train_log.jsonl");
  await until(() => linesOf(log) >= 30, 60_000, c, "30 logged training steps");
  c.proc.kill(signal);
  const r = await exitOf(c, STOP_MS);
  assert.equal(r.code, expectedCode, `exit code after ${signal}; stderr:\n${c.stderr()}`);
  const ck = join(out, "checkpoint");
  assert.ok(existsSync(join(ck, "state.json")), "a checkpoint is left");
  const step = stepOf(ck);
  assert.ok(step >= 30 && step < 1440, `checkpoint at step ${step}`);
  assert.equal(stepLines(log), step, "the log holds the steps of the checkpoint");
  assert.match(c.stderr(), new RegExp(`selfreport: ${signal}: training stopped at step ${step} of 1440; checkpoint saved in ${ck}; resume with: `));
  assert.equal(existsSync(join(out, "config.json")), false, "an interrupted run is not a finished run");
  assert.doesNotMatch(c.stderr(), /\n\s+at /, "no stack trace");

  const args2 = resumeArgs(c);
  assert.deepEqual(args2, [...args, "--resume"]);
  const resumed = spawnCli(args2);
  const r2 = await exitOf(resumed, 120_000);
  assert.equal(r2.code, 0, resumed.stderr());
  assert.match(resumed.stderr(), new RegExp(`resuming at epoch \\d+, step ${step} of 1440`));
  assert.ok(existsSync(join(out, "config.json")), "the resumed run finished");
  assert.equal(existsSync(ck), false, "the checkpoint is removed when the run finishes");
  assert.equal(stepLines(log), 1440, "every step logged once");
}

test("train: SIGINT stops within seconds with exit 130, keeps a checkpoint, and the printed --resume command finishes the run", { timeout: 240_000 }, async () => {
  await interruptTrain("SIGINT", 130);
});

test("train: SIGTERM stops the same way with exit 143", { timeout: 240_000 }, async () => {
  await interruptTrain("SIGTERM", 143);
});

test("pretrain: SIGINT stops with exit 130 and a checkpoint; the printed --resume command finishes", { timeout: 240_000 }, async () => {
  const out = join(root, "pretrained");
  const args = ["pretrain", "--corpus", corpus, "--out", out, "--layers", "1", "--d-model", "8", "--heads", "2", "--ctx", "8", "--steps", "60", "--batch-size", "2", "--eval-every", "30", "--checkpoint-every", "1000"];
  const c = spawnCli(args);
  const log = join(out, "train_log.jsonl");
  await until(() => linesOf(log) >= 3, 60_000, c, "3 logged pre-training steps");
  c.proc.kill("SIGINT");
  const r = await exitOf(c, STOP_MS);
  assert.equal(r.code, 130, c.stderr());
  const ck = join(out, "checkpoint");
  const step = stepOf(ck);
  assert.ok(step >= 3 && step < 60, `checkpoint at step ${step}`);
  assert.match(c.stderr(), new RegExp(`selfreport: SIGINT: pre-training stopped at step ${step} of 60; checkpoint saved in ${ck}; resume with: `));
  assert.equal(existsSync(join(out, "model.safetensors")), false);
  const resumed = spawnCli(resumeArgs(c));
  const r2 = await exitOf(resumed, 180_000);
  assert.equal(r2.code, 0, resumed.stderr());
  assert.match(resumed.stderr(), new RegExp(`resuming from step ${step} of 60`));
  assert.ok(existsSync(join(out, "model.safetensors")));
  assert.equal(linesOf(log), 60);
});

test("sweep (local): SIGINT stops the worker threads within seconds, exit 130; the jobs finished are kept and the printed command finishes the rest", { timeout: 240_000 }, async () => {
  const fx = makeSweepFixture(join(root, "sweep-fx"));
  const out = join(root, "sweep");
  const args = [
    "sweep", "--model", fx.modelDir, "--layers", "1", "--neurons", "0-9", "--freeze", "frozen", "--corpus", fx.corpus, "--n", "120", "--max-len", "12",
    "--weights", "raw", "--epochs", "1", "--group-size", "1", "--workers", "1", "--out", out,
  ];
  // every job waits 300 ms before committing: ≥ 3 s of jobs, interrupted after the second
  const c = spawnCli(args, { env: { SELFREPORT_SWEEP_JOB_DELAY_MS: "300" } });
  const finished = (): string[] => (existsSync(join(out, "jobs")) ? readdirSync(join(out, "jobs")).filter((f) => !f.startsWith(".")) : []);
  await until(() => finished().length >= 2, 120_000, c, "two finished jobs");
  c.proc.kill("SIGINT");
  const r = await exitOf(c, STOP_MS);
  assert.equal(r.code, 130, c.stderr());
  const kept = finished();
  assert.ok(kept.length >= 2 && kept.length < 10, `jobs kept: ${kept.join(", ")}`);
  assert.match(c.stderr(), /selfreport: SIGINT: sweep stopped after \d+ of 10 tasks; every job finished so far is kept in .*; continue with: selfreport sweep /);
  const again = c.stderr().split("\n").find((l) => l.includes("continue with: "))!;
  const args2 = again.slice(again.indexOf("continue with: ") + "continue with: ".length).split(" ").slice(1);
  assert.deepEqual(args2, args);
  const rerun = spawnCli(args2);
  const r2 = await exitOf(rerun, 180_000);
  assert.equal(r2.code, 0, rerun.stderr());
  assert.match(rerun.stderr(), new RegExp(`10 jobs, ${kept.length} finished earlier, ${10 - kept.length} to run`));
  const res = JSON.parse(readFileSync(join(out, "results.json"), "utf8")) as { rows: Array<{ status: string }> };
  assert.equal(res.rows.length, 10);
  assert.ok(res.rows.every((row) => row.status === "done"));
});

test("dataset: SIGINT stops between batches with exit 130 and writes nothing", { timeout: 240_000 }, async () => {
  const tokModel = join(root, "tiny-tok");
  makeTinyHfModel(tokModel, { dVocab: 50257, nLayers: 2, dModel: 16, nHeads: 2, nCtx: 16, seed: 4 });
  const big = join(root, "big.txt");
  writeFileSync(big, makeDocs(1500, 200, 8).map((d) => d.text).join("\n\n") + "\n");
  const out = join(root, "big.safetensors");
  // ~15 000 windows: seconds of forward passes after the first progress line
  const c = spawnCli(["dataset", "--model", tokModel, "--layer", "1", "--neuron", "5", "--corpus", big, "--n", "60000", "--max-len", "16", "--weights", "raw", "--out", out]);
  await until(() => /^dataset \d+% /m.test(c.stderr()), 120_000, c, "the first dataset progress line");
  c.proc.kill("SIGINT");
  const r = await exitOf(c, STOP_MS);
  assert.equal(r.code, 130, c.stderr());
  assert.match(c.stderr(), /selfreport: SIGINT: dataset building stopped after \d+ examples; nothing was written \(run the command again to build it\)\n$/);
  assert.equal(existsSync(out), false);
  assert.deepEqual(readdirSync(root).filter((f) => f.startsWith("big.") && f !== "big.txt"), [], "no partial or temporary files");
});
