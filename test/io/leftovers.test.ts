/**
 * A failed command leaves nothing it created (src/io/folder.ts, the dataset and analysis writers),
 * and what an interrupted writer left is cleaned on the next start. Real child processes where a
 * command is involved; every pre-existing file byte-identical after a failure.
 */
import { test, after } from "node:test";
import assert from "node:assert/strict";
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { hostname, tmpdir } from "node:os";
import { join } from "node:path";
import { makeTinyHfModel } from "../helpers/tiny-model.ts";
import { writeSyntheticDataset } from "../helpers/synthetic-dataset.ts";
import { runChild, snapshot } from "../helpers/child-cli.ts";
import { writeDataset, jsonlPathFor, type Dataset } from "../../src/selfreport/dataset.ts";
import { writeAnalysisOutput } from "../../src/analysis/context.ts";
import { loadRun } from "../../src/selfreport/run.ts";
import { truncateLogToStep } from "../../src/io/folder.ts";
import { removeDeadStages } from "../../src/sweep/jobs.ts";
import { readFileSync } from "node:fs";

const root = mkdtempSync(join(tmpdir(), "selfreport-leftovers-"));
after(() => rmSync(root, { recursive: true, force: true }));

const model = join(root, "tiny");
makeTinyHfModel(model, { dVocab: 50257, nLayers: 2, dModel: 16, nHeads: 2, nCtx: 16, seed: 4 });
const data = join(root, "ds.safetensors");
const ds = writeSyntheticDataset(data, model, { n: 120 });

function failed(r: { code: number | null; stderr: string }, pattern: RegExp): void {
  assert.equal(r.code, 1, r.stderr);
  assert.equal(r.stderr.trimEnd().split("\n").length, 1, r.stderr);
  assert.match(r.stderr, pattern);
}

test("train --resume on a folder that does not exist: refused before anything is created", () => {
  const out = join(root, "never");
  failed(runChild(["train", "--data", data, "--head", "regression", "--solver", "adamw", "--resume", "--out", out]), /--resume: no checkpoint in .*never\/checkpoint/);
  assert.equal(existsSync(out), false);
});

test("a train that fails before its first checkpoint removes the folder it created", () => {
  const out = join(root, "diverged");
  failed(runChild(["train", "--data", data, "--head", "regression", "--solver", "adamw", "--lr", "1e30", "--warmup", "0", "--grad-clip", "0", "--epochs", "5", "--out", out]), /loss became .* no checkpoint was written before it/);
  assert.equal(existsSync(out), false, "no run folder with only train_log.jsonl");
});

test("a failed train --force leaves the folder without the old run's config.json but with nothing half-written of the new one", () => {
  const out = join(root, "forced");
  assert.equal(runChild(["train", "--data", data, "--head", "regression", "--epochs", "1", "--out", out]).code, 0);
  failed(runChild(["train", "--data", data, "--head", "regression", "--solver", "adamw", "--lr", "1e30", "--warmup", "0", "--grad-clip", "0", "--force", "--out", out]), /loss became/);
  assert.deepEqual(readdirSync(out), [], "the old run was replaced (--force) and the failed new one left nothing");
});

test("pretrain that fails (corpus too small) leaves no vocab.json / merges.txt, nor the folder", () => {
  const small = join(root, "small.txt");
  writeFileSync(small, "a short text.\n\nanother one.\n");
  const out = join(root, "lm");
  failed(runChild(["pretrain", "--corpus", small, "--steps", "1", "--batch-size", "4", "--ctx", "16", "--layers", "1", "--d-model", "8", "--heads", "2", "--out", out]), /fewer than one batch/);
  assert.equal(existsSync(out), false);
  // into an existing empty folder: the folder stays, empty
  mkdirSync(out);
  failed(runChild(["pretrain", "--corpus", small, "--steps", "1", "--batch-size", "4", "--ctx", "16", "--layers", "1", "--d-model", "8", "--heads", "2", "--out", out]), /fewer than one batch/);
  assert.deepEqual(readdirSync(out), []);
});

test("a dataset write that fails leaves neither file, and an older dataset pair byte-identical", () => {
  const broken: Dataset = { ...ds, tokens: ds.tokens.subarray(0, ds.tokens.length - 1) };
  const fresh = join(root, "fresh.safetensors");
  // the text fails (as a full disk would): no .safetensors without its .jsonl
  assert.throws(() => writeDataset(fresh, ds, () => {
    throw new Error("ENOSPC: no space left on device");
  }), /ENOSPC/);
  assert.equal(existsSync(fresh), false, "no .safetensors without its .jsonl");
  assert.equal(existsSync(jsonlPathFor(fresh)), false);
  // the arrays fail after the text was written: the text goes again
  assert.throws(() => writeDataset(fresh, broken, () => "x"), /cannot write .*tensor "tokens"/);
  assert.equal(existsSync(fresh), false);
  assert.equal(existsSync(jsonlPathFor(fresh)), false, "no .jsonl without its .safetensors");
  writeFileSync(jsonlPathFor(data), "the old text\n");
  const before = { ...snapshot(data), ...Object.fromEntries(Object.entries(snapshot(jsonlPathFor(data))).map(([k, v]) => [`jsonl${k}`, v])) };
  assert.throws(() => writeDataset(data, broken, () => "x"), /cannot write/);
  const afterFail = { ...snapshot(data), ...Object.fromEntries(Object.entries(snapshot(jsonlPathFor(data))).map(([k, v]) => [`jsonl${k}`, v])) };
  assert.deepEqual(afterFail, before);
  assert.deepEqual(readdirSync(root).filter((f) => f.startsWith(".")), []);
});

test("an analysis whose output fails leaves no folder; an existing analysis stays byte-identical", () => {
  const runDir = join(root, "run-a");
  assert.equal(runChild(["train", "--data", data, "--head", "regression", "--epochs", "1", "--out", runDir]).code, 0);
  const run = loadRun(runDir);
  const out = join(root, "analysis", "weights");
  const unserialisable = { n: 10n };
  assert.throws(() => writeAnalysisOutput(out, "weights", run, unserialisable, { plot: "<svg/>" }));
  assert.equal(existsSync(out), false);
  writeAnalysisOutput(out, "weights", run, { n: 1 }, { plot: "<svg/>" });
  const before = snapshot(out);
  assert.throws(() => writeAnalysisOutput(out, "weights", run, unserialisable, { plot: "<svg>2</svg>" }));
  assert.deepEqual(snapshot(out), before);
  assert.deepEqual(readdirSync(join(root, "analysis")), ["weights"], "no stage folder left");
  writeAnalysisOutput(out, "weights", run, { n: 2 }, { other: "<svg/>" });
  assert.deepEqual(readdirSync(out).sort(), ["other.svg", "summary.json"], "replaced as a whole");
});

test("truncateLogToStep keeps the lines up to the checkpoint's step and drops a line cut by a kill", () => {
  const log = join(root, "log.jsonl");
  writeFileSync(log, ['{"step":1,"loss":1}', '{"step":2,"loss":1}', '{"step":2,"val_loss":1}', '{"step":3,"loss":1}', '{"step":4,"lo'].join("\n"));
  truncateLogToStep(log, 2);
  assert.equal(readFileSync(log, "utf8"), '{"step":1,"loss":1}\n{"step":2,"loss":1}\n{"step":2,"val_loss":1}\n');
});

test("removeDeadStages removes the stage folders of dead workers on this host only", () => {
  const sweep = join(root, "sweep");
  const jobs = join(sweep, "jobs");
  const dead = `.stage-L0-N1-regression-frozen~4194305~${hostname()}~0a1b2c3d`;
  const live = `.stage-L0-N2-regression-frozen~${process.pid}~${hostname()}~0a1b2c3d`;
  const elsewhere = `.stage-L0-N3-regression-frozen~4194305~other-host~0a1b2c3d`;
  for (const s of [dead, live, elsewhere]) mkdirSync(join(jobs, s), { recursive: true });
  assert.equal(removeDeadStages(sweep), 1);
  assert.deepEqual(readdirSync(jobs).sort(), [live, elsewhere].sort());
});
