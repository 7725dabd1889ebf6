/**
 * One run format end to end: every command that reads a run (analyze weights|patching|residual,
 * report, predict) works, through the CLI, on a run from `train`, on a sweep job (multi-output and
 * single-trainer) and on a run from `import-pt`. The analyses land in RUN_DIR/analysis/ by default,
 * where the report finds them; a sweep job names its dataset with its target column, so its
 * analyses use its own neuron's activations; its training log draws a curve.
 */
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve, dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { readRun, readRunDataset, readTrainLog, analysisDir } from "../../src/selfreport/run.ts";
import { readDataset } from "../../src/selfreport/dataset.ts";
import { examplesPath, readLayerTargets, neuronDataset } from "../../src/sweep/data.ts";
import { fileSha256 } from "../../src/io/outputs.ts";
import { buildProgram } from "../../src/cli/main.ts";
import { TRAINING_DEFAULTS, trainOptionsFrom, trainingSettingsOf, TRAIN_DEFAULTS } from "../../src/selfreport/train.ts";
import { makeTinyHfModel } from "../helpers/tiny-model.ts";
import { runCapture } from "../helpers/cli.ts";
import { makeSweepFixture, type SweepFixture } from "../sweep/fixture.ts";

process.env["SELFREPORT_QUIET"] = "1";
const fixtures = resolve(dirname(fileURLToPath(import.meta.url)), "../../../test/fixtures/torch");

let root = "";
/** config.json's training keys of the run from `train` (compared with a sweep job's). */
let trainedKeys: string[] = [];
let fx: SweepFixture;
before(() => {
  root = mkdtempSync(join(tmpdir(), "run-format-"));
  fx = makeSweepFixture(join(root, "fx"), { docs: 60 });
});
after(() => rmSync(root, { recursive: true, force: true }));

async function ok(args: string[]): Promise<string[]> {
  const r = await runCapture(args);
  assert.equal(r.code, 0, `selfreport ${args.join(" ")}:\n${r.lines.join("\n")}`);
  return r.lines;
}

/**
 * Runs every analysis that applies (residual only for fine-tuned runs) with the default --out, then
 * the report and predict; checks the report found every analysis and a training curve when expected.
 */
async function everyCommand(runDir: string, o: { data?: string; curve: boolean }): Promise<string> {
  const data = o.data !== undefined ? ["--data", o.data] : [];
  const frozen = readRun(runDir).config.freeze_mode === "frozen";
  const names = frozen ? ["weights", "patching"] : ["weights", "patching", "residual"];
  for (const name of names) {
    const extra = name === "weights" ? ["--max-examples", "60"] : name === "patching" ? ["--n-inputs", "12", "--controls", "2"] : ["--n-inputs", "12"];
    // a sweep job holds the analyses its sweep asked for: replacing them needs --force (src/io/outputs.ts)
    const force = existsSync(analysisDir(runDir, name)) ? ["--force"] : [];
    const lines = await ok(["analyze", name, "--run", runDir, ...data, ...extra, ...force]);
    assert.equal(lines.at(-1), `wrote ${lines.at(-1)!.split(" ")[1]} files to ${analysisDir(runDir, name)}`);
    assert.ok(existsSync(join(analysisDir(runDir, name), "summary.json")), name);
  }
  const html = join(runDir, "report.html");
  const rep = await ok(["report", "--run", runDir, "--out", html, ...(existsSync(html) ? ["--force"] : [])]);
  assert.match(rep[0]!, new RegExp(`^wrote .*report\\.html: analyses ${names.join(", ")} \\(\\d+ plots\\)$`), rep.join("\n"));
  const page = readFileSync(html, "utf8");
  assert.ok(!page.includes("not run"), "every analysis is found");
  if (o.curve) assert.ok(!page.includes("No training curve"), "the training curve is drawn");
  const pred = await ok(["predict", "--run", runDir, "--prompt", "the cat sat on a mat"]);
  const c = readRun(runDir).config;
  assert.match(pred[0]!, new RegExp(`reporting blocks\\.${c.target_layer}\\.(mlp\\.hook_post|hook_mlp_out)\\[${c.target_neuron}\\]$`));
  assert.match(pred[1]!, /^predicted -?\d+\.\d{4}\s+actual -?\d+\.\d{4}/);
  return page;
}

test("a run from `train` (fine-tuned): every command, analyses in RUN/analysis, curve from the run", async () => {
  const data = join(root, "train", "data.safetensors");
  await ok(["dataset", "--model", fx.modelDir, "--layer", "1", "--neuron", "3", "--corpus", fx.corpus, "--n", "150", "--max-len", "12", "--weights", "raw", "--out", data]);
  const runDir = join(root, "train", "run");
  await ok(["train", "--data", data, "--head", "regression", "--freeze", "partial", "--unfreeze-last", "1", "--epochs", "2", "--batch-size", "32", "--out", runDir]);
  const log = readTrainLog(runDir)!;
  assert.equal(log.bad, 0);
  assert.ok(log.records.some((r) => typeof r["loss"] === "number") && log.records.some((r) => typeof r["val_loss"] === "number"));
  trainedKeys = Object.keys(readRun(runDir).config.training).sort();
  assert.deepEqual(trainedKeys, ["batch_size", "best_epoch", "epochs", "epochs_run", "grad_clip", "lr", "patience", "seconds", "seed", "solver", "steps", "warmup", "weight_decay"]);
  await everyCommand(runDir, { curve: true });
});

test("sweep jobs: their dataset is the examples with the job's own neuron as targets; every command works on them", async () => {
  const sweep = join(root, "sweep");
  await ok([
    "sweep", "--model", fx.modelDir, "--layers", "1", "--neurons", "2,5", "--heads", "regression", "--freeze", "frozen,unfrozen",
    "--analyses", "weights,patching", "--corpus", fx.corpus, "--n", "150", "--max-len", "12", "--weights", "raw", "--epochs", "2",
    "--workers", "1", "--patching-inputs", "12", "--weights-max-examples", "60", "--solver", "adamw", "--out", sweep,
  ]);
  const examples = readDataset(examplesPath(sweep));
  assert.equal(examples.meta.neuron, 0, "the shared examples file's own target is neuron 0");
  for (const id of ["L1-N5-regression-frozen", "L1-N5-regression-unfrozen"]) {
    const job = join(sweep, "jobs", id);
    const run = readRun(job);
    const ref = run.config.dataset;
    assert.equal(ref.path, join("..", "..", "data", "examples.safetensors"), "relative to the job folder");
    assert.deepEqual(ref.target_column, { path: join("..", "..", "data", "L1.targets.safetensors"), column: 1, sha256: fileSha256(join(sweep, "data", "L1.targets.safetensors")) });
    assert.equal(ref.sha256, fileSha256(examplesPath(sweep)), "the job records the examples' hash, as train does");
    // the dataset the job reads back is the one it was trained on: neuron 5's activations
    const { ds } = readRunDataset(run);
    const want = neuronDataset(examples, readLayerTargets(sweep, 1, examples.meta.n), 5);
    assert.deepEqual(ds.targets, want.targets);
    assert.equal(ds.meta.neuron, 5);
    assert.deepEqual(ds.meta.stats, want.meta.stats);
    // the sweep's own analyses are where the report reads them, and its log has steps
    for (const name of ["weights", "patching"]) {
      assert.ok(existsSync(join(analysisDir(job, name), "summary.json")), `${id} ${name}`);
      // with the plots `analyze` would draw, so the job's report shows them
      assert.ok(readdirSync(analysisDir(job, name)).filter((f) => f.endsWith(".svg")).length >= 2, `${id} ${name}: plots`);
    }
    const log = readTrainLog(job)!;
    assert.equal(log.bad, 0);
    assert.ok(log.records.length >= 2 && log.records.every((r) => r.step > 0));
    const first = await ok(["report", "--run", job, "--out", join(job, "first.html")]);
    assert.match(first[0]!, /analyses weights, patching/);
    assert.ok(!readFileSync(join(job, "first.html"), "utf8").includes("No training curve"));
    await everyCommand(job, { curve: true });
  }
  // one training record: a sweep job's config.json records the same fields as a run from train
  for (const id of ["L1-N5-regression-frozen", "L1-N5-regression-unfrozen"]) {
    const t = readRun(join(sweep, "jobs", id)).config.training;
    assert.deepEqual(Object.keys(t).filter((k) => k !== "multi_output_neurons").sort(), trainedKeys, id);
    assert.equal(t.lr, id.endsWith("-frozen") ? 1e-3 : 1e-4, `${id}: the lr of its freezing mode`);
    assert.equal(t.epochs, 2);
  }
  // the frozen multi-output job logs epoch means, drawn as such
  const page = readFileSync(join(sweep, "jobs", "L1-N5-regression-frozen", "report.html"), "utf8");
  assert.ok(page.includes("train (epoch mean)"));
  // a moved sweep folder still works: the job's paths are relative
  const moved = join(root, "sweep-moved");
  const { renameSync } = await import("node:fs");
  renameSync(sweep, moved);
  assert.equal(readRunDataset(readRun(join(moved, "jobs", "L1-N2-regression-frozen"))).ds.meta.neuron, 2);
  // a changed targets file is refused by the job's analyses, naming it (the examples are unchanged)
  const targetsFile = join(moved, "data", "L1.targets.safetensors");
  const bytes = readFileSync(targetsFile);
  bytes[bytes.length - 1] ^= 0x01;
  writeFileSync(targetsFile, bytes);
  const changed = await runCapture(["analyze", "weights", "--run", join(moved, "jobs", "L1-N2-regression-frozen"), "--out", join(root, "changed-weights")]);
  assert.equal(changed.code, 1);
  assert.match(changed.lines.join("\n"), /targets file .*L1\.targets\.safetensors has changed since run .*L1-N2-regression-frozen was trained on column 0 of it \(sha256 [0-9a-f]{12}… in its config\.json, [0-9a-f]{12}… now\)/);
  // the sweep folder itself is not a run: the error points at --sweep
  const r = await runCapture(["report", "--run", moved, "--out", join(root, "x.html")]);
  assert.equal(r.code, 1);
  assert.match(r.lines.join("\n"), /is a sweep folder, not a run directory: its runs are .*jobs\/<job id>; `selfreport report --sweep .* --out FILE\.html` reports the whole sweep/);
});

test("an imported run: every command with --data (a dataset built for it)", async () => {
  const d8 = join(root, "d8");
  makeTinyHfModel(d8, { dModel: 8, nHeads: 2, nLayers: 2, nCtx: 16, dVocab: 50257, seed: 1 });
  const cfg = join(root, "py-config.json");
  writeFileSync(cfg, JSON.stringify({
    head_type: "regression", head_config: { class_name: "RegressionHead", input_dim: 8, dropout: 0.1, hidden_dim: null },
    target_layer: 1, target_neuron: 3, layer_type: "mlp_post", token_pos: "last", feature_layer: -1,
    bin_edges: Array.from({ length: 11 }, (_, i) => i / 10), activation_mean: 0.25, activation_std: 2, base_model_name: "gpt2", d_model: 8,
  }));
  const runDir = join(root, "imported");
  await ok(["import-pt", "--head", join(fixtures, "head.pt"), "--config", cfg, "--model", d8, "--out", runDir]);
  const data = join(root, "imported-data.safetensors");
  await ok(["dataset", "--model", d8, "--layer", "1", "--neuron", "3", "--corpus", fx.corpus, "--n", "120", "--max-len", "12", "--weights", "tl", "--out", data]);
  const page = await everyCommand(runDir, { data, curve: false });
  assert.ok(page.includes("No training curve"), "an imported run has no log");
});

test("one training record: the flags of train and sweep are registered once, with the same defaults; settings ↔ TrainOptions round trip", () => {
  const program = buildProgram();
  const flags = (name: string): Map<string, unknown> => {
    const cmd = program.commands.find((c) => c.name() === name)!;
    return new Map(cmd.options.map((o) => [o.long!, o.defaultValue]));
  };
  const train = flags("train");
  const sweep = flags("sweep");
  const shared = ["--feature-layer", "--epochs", "--batch-size", "--weight-decay", "--warmup", "--grad-clip", "--patience", "--seed"];
  const want = [TRAINING_DEFAULTS.feature_layer, TRAINING_DEFAULTS.epochs, TRAINING_DEFAULTS.batch_size, TRAINING_DEFAULTS.weight_decay, TRAINING_DEFAULTS.warmup, TRAINING_DEFAULTS.grad_clip, TRAINING_DEFAULTS.patience, TRAINING_DEFAULTS.seed];
  shared.forEach((f, i) => {
    assert.equal(train.get(f), want[i], `train ${f}`);
    assert.equal(sweep.get(f), want[i], `sweep ${f}`);
  });
  assert.equal(sweep.get("--lr"), 1e-3);
  assert.equal(sweep.get("--lr-finetune"), 1e-4);
  const settings = { feature_layer: 1, epochs: 7, batch_size: 16, lr: 3e-4, weight_decay: 0.1, warmup: 5, grad_clip: 0.5, patience: 2, seed: 9 };
  const o = { ...TRAIN_DEFAULTS, data: "d", out: "o", head: "regression" as const, unfreezeLast: null, hiddenDim: null, activation: null, numClasses: null, resume: false, force: false, ...trainOptionsFrom(settings) };
  assert.deepEqual(trainingSettingsOf(o), settings);
});
