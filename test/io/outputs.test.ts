/**
 * The output rule (src/io/outputs.ts) through the real CLI in child processes: a command never writes
 * over its inputs, a model folder, another kind of output, or a dataset a run was trained on; an
 * existing output of the same kind needs --force; runs record their dataset's sha256 and analyses
 * refuse a changed dataset. After every refusal each pre-existing file is byte-identical.
 */
import { test, after } from "node:test";
import assert from "node:assert/strict";
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createHash } from "node:crypto";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { makeTinyHfModel } from "../helpers/tiny-model.ts";
import { makeDocs } from "../helpers/text-docs.ts";
import { runChild, snapshot, type ChildResult } from "../helpers/child-cli.ts";
import { checkOutput, kindOf } from "../../src/io/outputs.ts";

const root = mkdtempSync(join(tmpdir(), "selfreport-outputs-"));
after(() => rmSync(root, { recursive: true, force: true }));

const model = join(root, "tiny");
makeTinyHfModel(model, { dVocab: 50257, nLayers: 2, dModel: 16, nHeads: 2, nCtx: 16, seed: 4 });
const corpus = join(root, "docs.txt");
writeFileSync(corpus, makeDocs(30, 60, 8).map((d) => d.text).join("\n\n") + "\n");
const datasetArgs = (out: string, seed = "3"): string[] => ["dataset", "--model", model, "--layer", "1", "--neuron", "5", "--corpus", corpus, "--n", "120", "--max-len", "8", "--weights", "raw", "--seed", seed, "--out", out];
const data = join(root, "ds.safetensors");
const run = join(root, "run");

function ok(r: ChildResult): void {
  assert.equal(r.code, 0, r.stderr);
}

/** Exit 1, exactly one line on stderr, no stack. */
function refused(r: ChildResult, pattern: RegExp): void {
  assert.equal(r.code, 1, `exit code; stderr: ${r.stderr}`);
  const lines = r.stderr.trimEnd().split("\n");
  assert.equal(lines.length, 1, r.stderr);
  assert.match(lines[0]!, /^selfreport: error: /);
  assert.match(lines[0]!, pattern);
}

test("setup: a dataset and a run trained on it (config.json records the dataset's sha256)", () => {
  ok(runChild(datasetArgs(data)));
  ok(runChild(["train", "--data", data, "--head", "regression", "--epochs", "1", "--batch-size", "16", "--out", run]));
  const cfg = JSON.parse(readFileSync(join(run, "config.json"), "utf8")) as { dataset: { sha256: string } };
  assert.equal(cfg.dataset.sha256, createHash("sha256").update(readFileSync(data)).digest("hex"));
});

test("activations and dataset never write over a model's files; the model stays byte-identical", () => {
  const before = snapshot(model);
  refused(runChild(["activations", "--model", model, "--prompt", "Hello", "--hook", "blocks.0.mlp.hook_post", "--out", join(model, "model.safetensors")]),
    /--out .*model\.safetensors is a file of a model folder \(model\.safetensors\), not an activations file; it is never replaced, not even with --force/);
  refused(runChild(["activations", "--model", model, "--prompt", "Hello", "--hook", "blocks.0.mlp.hook_post", "--force", "--out", join(model, "model.safetensors")]), /never replaced/);
  refused(runChild(datasetArgs(join(model, "model.safetensors"))), /is a file of a model folder/);
  refused(runChild([...datasetArgs(join(model, "model.safetensors")), "--force"]), /not even with --force/);
  assert.deepEqual(snapshot(model), before);
});

test("train --force never replaces a model folder; pretrain and sweep refuse other kinds too", () => {
  const before = snapshot(model);
  refused(runChild(["train", "--data", data, "--head", "regression", "--force", "--out", model]), /--out .*tiny is a model folder \(model\.safetensors\), not a run folder; it is never replaced, not even with --force/);
  refused(runChild(["pretrain", "--corpus", corpus, "--steps", "1", "--force", "--out", run]), /is a run folder .*not a model folder/);
  refused(runChild(["sweep", "--model", model, "--layers", "1", "--neurons", "0", "--corpus", corpus, "--force", "--out", run]), /is a run folder .*not a sweep folder/);
  assert.deepEqual(snapshot(model), before);
});

test("a dataset a run was trained on is never replaced, not even with --force", () => {
  const before = snapshot(root);
  refused(runChild(datasetArgs(data, "4")), /--out .*ds\.safetensors is the dataset of run .*run \(its config\.json refers to it\); it is never replaced, not even with --force/);
  refused(runChild([...datasetArgs(data, "4"), "--force"]), /is the dataset of run/);
  assert.deepEqual(snapshot(root), before);
});

test("an existing output of the same kind needs --force; --force replaces it", () => {
  const other = join(root, "other.safetensors");
  ok(runChild(datasetArgs(other)));
  const before = snapshot(other);
  refused(runChild(datasetArgs(other, "5")), /--out .*other\.safetensors already holds a selfreport dataset; pass --force to replace it, or choose another --out/);
  assert.deepEqual(snapshot(other), before);
  ok(runChild([...datasetArgs(other, "5"), "--force"]));
  assert.notDeepEqual(snapshot(other), before);
  // the same for a report and an analysis folder
  const report = join(root, "report.html");
  ok(runChild(["report", "--run", run, "--out", report]));
  const rep = snapshot(report);
  refused(runChild(["report", "--run", run, "--out", report]), /already holds a selfreport report; pass --force/);
  assert.deepEqual(snapshot(report), rep);
  ok(runChild(["report", "--run", run, "--out", report, "--force"]));
});

test("an output that is one of the command's inputs is refused (dataset text over the corpus, analysis over the run)", () => {
  const jsonlCorpus = join(root, "corpus.jsonl");
  writeFileSync(jsonlCorpus, makeDocs(30, 60, 9).map((d) => JSON.stringify({ text: d.text })).join("\n") + "\n");
  const before = snapshot(root);
  refused(runChild(["dataset", "--model", model, "--layer", "1", "--neuron", "5", "--corpus", jsonlCorpus, "--n", "120", "--max-len", "8", "--weights", "raw", "--out", join(root, "corpus.safetensors")]),
    /--out .*corpus\.jsonl is also an input of this command/);
  refused(runChild(["analyze", "weights", "--run", run, "--force", "--out", run]), /--out .*run is also an input of this command/);
  refused(runChild(["activations", "--model", model, "--prompt", "Hi", "--hook", "blocks.0.hook_resid_pre", "--force", "--out", join(run, "head.safetensors")]),
    /head\.safetensors is a file of a run folder/);
  assert.deepEqual(snapshot(root), before);
});

test("analyses refuse a dataset changed since training, with the reason; a run without a hash still loads", () => {
  // another dataset copied over the run's (outside selfreport: cp)
  const saved = readFileSync(data);
  const other = join(root, "changed.safetensors");
  ok(runChild(datasetArgs(other, "5")));
  copyFileSync(other, data);
  const out = join(root, "analysis-w");
  refused(runChild(["analyze", "weights", "--run", run, "--out", out]), /dataset .*ds\.safetensors has changed since run .*run was trained on it \(sha256 [0-9a-f]{12}… in its config\.json, [0-9a-f]{12}… now\)/);
  assert.equal(existsSync(out), false);
  // an old run (no sha256 in config.json) analyses as before
  writeFileSync(data, saved);
  const cfgPath = join(run, "config.json");
  const cfg = JSON.parse(readFileSync(cfgPath, "utf8")) as { dataset: Record<string, unknown> };
  delete cfg.dataset["sha256"];
  writeFileSync(cfgPath, JSON.stringify(cfg, null, 2) + "\n");
  ok(runChild(["analyze", "weights", "--run", run, "--out", out]));
  refused(runChild(["analyze", "weights", "--run", run, "--out", out]), /already holds an analysis; pass --force/);
  ok(runChild(["analyze", "weights", "--run", run, "--out", out, "--force"]));
});

test("kindOf tells the kinds apart by their marker files; checkOutput refuses a folder of other files even with force", () => {
  assert.equal(kindOf(model).kind, "model");
  assert.equal(kindOf(run).kind, "run");
  assert.equal(kindOf(data).kind, "dataset");
  const misc = join(root, "misc");
  mkdirSync(misc);
  writeFileSync(join(misc, "notes.txt"), "mine\n");
  assert.throws(() => checkOutput(misc, { kind: "run", force: true }), /--out .*misc is a folder with other files \(notes\.txt\), not a run folder; it is never replaced, not even with --force/);
  // a sweep's shared examples are a file of the sweep, not a dataset of their own: never replaced
  const sweep = join(root, "sweep-kind");
  mkdirSync(join(sweep, "data"), { recursive: true });
  writeFileSync(join(sweep, "sweep.json"), "{}\n");
  copyFileSync(data, join(sweep, "data", "examples.safetensors"));
  assert.equal(kindOf(join(sweep, "data", "examples.safetensors")).kind, "sweep");
  assert.equal(kindOf(data).kind, "dataset", "the same file outside a sweep is a dataset");
  assert.throws(() => checkOutput(join(sweep, "data", "examples.safetensors"), { kind: "dataset", force: true }),
    /--out .*examples\.safetensors is a file of a sweep folder \(data\/ of .*sweep-kind\), not a selfreport dataset; it is never replaced, not even with --force/);
  const empty = join(root, "empty");
  mkdirSync(empty);
  assert.deepEqual(checkOutput(empty, { kind: "sweep", force: false }), { exists: true });
  assert.deepEqual(checkOutput(join(root, "new"), { kind: "run", force: false }), { exists: false });
});
