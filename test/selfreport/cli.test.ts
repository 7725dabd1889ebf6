/**
 * `selfreport dataset | train | predict | import-pt` through the CLI entry point (run from
 * src/cli/main.ts), in-process on tiny models: exit codes, files written, what is printed (checked
 * against the library called directly), and one-line errors for bad input.
 */
import { test, after } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync, existsSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve, dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { run, buildProgram } from "../../src/cli/main.ts";
import { loadModel } from "../../src/model/load.ts";
import { loadTokenizer } from "../../src/model/tokenizer.ts";
import { loadCorpus } from "../../src/data/corpus.ts";
import { buildDataset, readDataset } from "../../src/selfreport/dataset.ts";
import { loadRun } from "../../src/selfreport/run.ts";
import { predictPrompts } from "../../src/selfreport/predict.ts";
import { makeTinyHfModel } from "../helpers/tiny-model.ts";
import { makeDocs } from "../helpers/text-docs.ts";

process.env["SELFREPORT_QUIET"] = "1";

const fixtures = resolve(dirname(fileURLToPath(import.meta.url)), "../../../test/fixtures/torch");
const root = mkdtempSync(join(tmpdir(), "selfreport-cli-sr-"));
after(() => rmSync(root, { recursive: true, force: true }));

const modelDir = join(root, "tiny");
makeTinyHfModel(modelDir, { dVocab: 50257, nLayers: 2, dModel: 16, nHeads: 2, nCtx: 16, seed: 4 });
const d8 = join(root, "d8");
makeTinyHfModel(d8, { dVocab: 64, nLayers: 2, dModel: 8, nHeads: 2, nCtx: 16, seed: 5 });
const corpus = join(root, "docs.txt");
writeFileSync(corpus, makeDocs(30, 60, 8).map((d) => d.text).join("\n\n") + "\n");
const data = join(root, "ds.safetensors");
const runDir = join(root, "run");

/** Runs the CLI, capturing console.log / console.warn / console.error and raw stderr writes (commander's). */
async function cli(...args: string[]): Promise<{ code: number; out: string; err: string }> {
  const out: string[] = [];
  const err: string[] = [];
  const saved = { log: console.log, warn: console.warn, error: console.error, write: process.stderr.write };
  console.log = (...a: unknown[]) => void out.push(a.join(" "));
  console.warn = (...a: unknown[]) => void err.push(a.join(" "));
  console.error = (...a: unknown[]) => void err.push(a.join(" "));
  process.stderr.write = ((chunk: string | Uint8Array): boolean => {
    err.push(String(chunk).trimEnd());
    return true;
  }) as typeof process.stderr.write;
  try {
    const code = await run(["node", "selfreport", ...args]);
    return { code, out: out.join("\n"), err: err.join("\n") };
  } finally {
    [console.log, console.warn, console.error, process.stderr.write] = [saved.log, saved.warn, saved.error, saved.write];
  }
}

function assertOneLineError(r: { code: number; out: string; err: string }, message: string): void {
  assert.equal(r.code, 1, `exit code (stderr: ${r.err})`);
  assert.equal(r.err, `selfreport: error: ${message}`);
}

const datasetArgs = ["dataset", "--model", modelDir, "--layer", "1", "--neuron", "5", "--corpus", corpus, "--n", "120", "--max-len", "8", "--weights", "raw", "--seed", "3"];

test("dataset writes the .safetensors and .jsonl, equal to buildDataset called directly, and prints the split counts", async () => {
  const r = await cli(...datasetArgs, "--out", data);
  assert.equal(r.code, 0, r.err);
  assert.ok(existsSync(data) && existsSync(join(root, "ds.jsonl")));
  const ds = readDataset(data);
  const c = ds.meta.split_counts;
  const lines = r.out.split("\n");
  assert.equal(lines[0], `wrote ${data} (120 examples: ${c.train} train / ${c.validation} validation / ${c.test} test)`);
  assert.ok(lines[1]!.startsWith(`target blocks.1.mlp.hook_post[5]: mean ${ds.meta.stats.mean.toFixed(4)}, std ${ds.meta.stats.std.toFixed(4)}`), lines[1]);
  const direct = buildDataset(loadModel(modelDir, { weights: "raw" }).model, loadTokenizer(modelDir), loadCorpus(corpus).documents, {
    modelName: modelDir, modelDir, weights: "raw", layer: 1, neuron: 5, layerType: "mlp_post", tokenPos: "last", n: 120, maxLen: 8, balance: false, seed: 3, corpusName: corpus,
  });
  assert.deepEqual(ds.meta, direct.meta);
  assert.deepEqual(ds.targets, direct.targets);
  assert.deepEqual(ds.tokens, direct.tokens);
});

test("train writes a run directory and prints the test metrics of metrics.json; predict prints what predictPrompts computes", async () => {
  const r = await cli("train", "--data", data, "--head", "regression", "--solver", "adamw", "--epochs", "2", "--batch-size", "8", "--out", runDir);
  assert.equal(r.code, 0, r.err);
  for (const f of ["config.json", "head.safetensors", "metrics.json", "train_log.jsonl", "training_curve.svg"]) assert.ok(existsSync(join(runDir, f)), f);
  const m = JSON.parse(readFileSync(join(runDir, "metrics.json"), "utf8")) as { test: { pearson_r: number; r2: number; baseline: { r2: number } } };
  const lines = r.out.split("\n");
  assert.equal(lines[0], `run: ${runDir}`);
  assert.ok(lines[1]!.startsWith(`test: r ${m.test.pearson_r.toFixed(4)}, `), lines[1]);
  assert.ok(lines[1]!.includes(`R² ${m.test.r2.toFixed(4)}`), lines[1]);
  assert.ok(lines[2]!.startsWith("baseline (always predict the training mean): MSE "), lines[2]);
  const cfg = loadRun(runDir).config;
  assert.equal(cfg.training["lr"], 1e-3, "frozen default --lr");
  assert.equal(cfg.training["epochs"], 2);

  const prompts = ["The cat sat on the mat", "A dog ran"];
  const j = await cli("predict", "--run", runDir, "--prompt", prompts[0]!, "--prompt", prompts[1]!, "--json");
  assert.equal(j.code, 0, j.err);
  const got = JSON.parse(j.out) as Array<Record<string, unknown>>;
  const runObj = loadRun(runDir);
  const model = loadModel(modelDir, { weights: "raw" }).model;
  const want = predictPrompts(runObj, model, model, loadTokenizer(modelDir), prompts);
  assert.deepEqual(got, JSON.parse(JSON.stringify(want)));
  const t = await cli("predict", "--run", runDir, "--prompt", prompts[1]!);
  assert.equal(t.code, 0, t.err);
  assert.deepEqual(t.out.split("\n"), [
    `run ${runDir}: regression head (frozen) reporting blocks.1.mlp.hook_post[5]`,
    `predicted ${want[1]!.predicted.toFixed(4)}  actual ${want[1]!.actual.toFixed(4)}  | ${JSON.stringify(prompts[1])}`,
  ]);
});

test("train: a frozen regression head is solved by ridge unless --solver adamw; --solver ridge elsewhere is one line; --help states the default", async () => {
  const out = join(root, "ridge-run");
  const r = await cli("train", "--data", data, "--head", "regression", "--out", out);
  assert.equal(r.code, 0, r.err);
  const m = JSON.parse(readFileSync(join(out, "metrics.json"), "utf8")) as { solver: string; ridge: { lambda: number }; test: { pearson_r: number } };
  assert.equal(m.solver, "ridge");
  assert.equal(loadRun(out).config.training["solver"], "ridge");
  assert.ok(r.out.split("\n")[1]!.startsWith(`test: r ${m.test.pearson_r.toFixed(4)}, `), r.out);
  // AdamW-only options given to a ridge solve are named as unused (not silently dropped)
  delete process.env["SELFREPORT_QUIET"];
  let noisy: { code: number; out: string; err: string };
  try {
    noisy = await cli("train", "--data", data, "--head", "regression", "--epochs", "2", "--lr", "0.01", "--out", join(root, "ridge-run-2"));
  } finally {
    process.env["SELFREPORT_QUIET"] = "1";
  }
  assert.equal(noisy.code, 0, noisy.err);
  assert.ok(noisy.err.includes("the ridge solver (the default for a frozen linear regression head) has no use for --epochs, --lr; pass --solver adamw to train with them"), noisy.err);
  assertOneLineError(await cli("train", "--data", data, "--head", "classification", "--solver", "ridge", "--out", join(root, "r-cls")),
    "the ridge solver fits linear regression heads only, not --head classification; use --solver adamw");
  assertOneLineError(await cli("train", "--data", data, "--head", "regression", "--freeze", "unfrozen", "--solver", "ridge", "--out", join(root, "r-unf")),
    "the ridge solver needs fixed features (--freeze frozen), not --freeze unfrozen; use --solver adamw");
  assertOneLineError(await cli("train", "--data", data, "--head", "regression", "--solver", "lbfgs", "--out", join(root, "r-x")), '--solver must be one of ridge, adamw; got "lbfgs"');
  const text = buildProgram().commands.find((c) => c.name() === "train")!.helpInformation().replace(/\s+/g, " ");
  assert.ok(text.includes("--solver <ridge|adamw>") && text.includes("default: ridge for a frozen regression head without --hidden-dim or --dropout, adamw otherwise"), text);
});

test("an unfrozen run through the CLI: default --lr 1e-4, finetuned/ written, predict reports the neuron in both models", async () => {
  const out = join(root, "run-unfrozen");
  const r = await cli("train", "--data", data, "--head", "regression", "--freeze", "unfrozen", "--epochs", "1", "--batch-size", "16", "--out", out);
  assert.equal(r.code, 0, r.err);
  assert.equal(loadRun(out).config.training["lr"], 1e-4);
  assert.ok(existsSync(join(out, "finetuned", "model.safetensors")) && existsSync(join(out, "finetuned", "vocab.json")));
  const p = await cli("predict", "--run", out, "--prompt", "The cat sat");
  assert.equal(p.code, 0, p.err);
  const lines = p.out.split("\n");
  assert.equal(lines[0], `run ${out}: regression head (unfrozen) reporting blocks.1.mlp.hook_post[5]`);
  assert.match(lines[1]!, /^predicted -?\d+\.\d{4} {2}actual -?\d+\.\d{4} {2}\(fine-tuned model's neuron: -?\d+\.\d{4}\) {2}\| "The cat sat"$/);
});

test("dataset --token-pos INDEX and --balance reach the builder; a bad --token-pos is a one-line error", async () => {
  const path = join(root, "pos.safetensors");
  const r = await cli(...datasetArgs, "--token-pos", "2", "--balance", "--out", path);
  assert.equal(r.code, 0, r.err);
  const ds = readDataset(path);
  assert.equal(ds.meta.token_pos, 2);
  assert.equal(ds.meta.balance, true);
  assert.ok(ds.positions.every((p) => p === 2));
  assertOneLineError(await cli(...datasetArgs, "--token-pos", "x", "--out", path), '--token-pos must be "last" or a non-negative index, got "x"');
});

test("import-pt imports head.pt and prints its notes; an existing run and malicious.pt are one-line errors", async () => {
  const cfgPath = join(root, "py-config.json");
  writeFileSync(cfgPath, JSON.stringify({
    head_type: "regression", head_config: { class_name: "RegressionHead", input_dim: 8, dropout: 0, hidden_dim: null },
    target_layer: 1, target_neuron: 3, layer_type: "mlp_post", feature_layer: -1, bin_edges: [0, 1], activation_mean: 0, activation_std: 1, base_model_name: "gpt2",
  }));
  const out = join(root, "imported");
  const r = await cli("import-pt", "--head", join(fixtures, "head.pt"), "--config", cfgPath, "--out", out, "--model", d8);
  assert.equal(r.code, 0, r.err);
  assert.equal(r.out, `imported a frozen regression run for blocks.1.mlp.hook_post[3] into ${out}`);
  assert.deepEqual(r.err.split("\n"), ['note: token_pos was missing: taken as "last"', "note: freeze_mode was missing: taken as frozen (only the head was trained)"]);
  assert.deepEqual(Array.from(loadRun(out).head.get("output.weight")!.data), [0.5, -1, 2, 0.25, -0.125, 3, 0, 1.5]);
  const again = await cli("import-pt", "--head", join(fixtures, "head.pt"), "--config", cfgPath, "--out", out, "--model", d8);
  assertOneLineError(again, `--out ${resolve(out)} already holds a run; pass --force to replace it, or choose another --out`);
  const evil = await cli("import-pt", "--head", join(fixtures, "malicious.pt"), "--config", cfgPath, "--out", join(root, "evil"), "--model", d8);
  assert.equal(evil.code, 1);
  assert.ok(evil.err.startsWith("selfreport: error: ") && evil.err.includes("refusing to load") && !evil.err.includes("\n"), evil.err);
  assert.equal(existsSync(join(root, "evil")), false);
});

test("bad input gives one-line errors (exit 1); a missing required option is commander's (exit 2)", async () => {
  assertOneLineError(await cli(...datasetArgs.map((a) => (a === "5" ? "999" : a)), "--out", join(root, "e.safetensors")), "--neuron 999 is out of range: layer 1 has 64 MLP neurons (0..63)");
  assertOneLineError(await cli(...datasetArgs, "--out", "x.bin"), '--out must end in .safetensors, got "x.bin"');
  assertOneLineError(await cli(...datasetArgs.map((a) => (a === "8" ? "17" : a)), "--out", join(root, "e.safetensors")), "--max-len 17 must be between 2 and the model's n_positions 16");
  assertOneLineError(await cli(...datasetArgs.map((a) => (a === "120" ? "5" : a)), "--out", join(root, "e.safetensors")), "--n must be between 10 and Infinity, got 5");
  assertOneLineError(await cli(...datasetArgs.map((a) => (a === "1" ? "2" : a)), "--out", join(root, "e.safetensors")), "--layer 2 is out of range: the model has 2 layers (0..1)");
  const missingCorpus = join(root, "none.txt");
  assertOneLineError(await cli(...datasetArgs.map((a) => (a === corpus ? missingCorpus : a)), "--out", join(root, "e.safetensors")), `corpus file not found: ${missingCorpus} (give "brown" or a .txt / .jsonl file)`);
  assert.equal(existsSync(join(root, "e.safetensors")), false);

  assertOneLineError(await cli("train", "--data", data, "--head", "ridge", "--out", join(root, "r1")), '--head must be one of regression, classification, token; got "ridge"');
  assertOneLineError(await cli("train", "--data", data, "--head", "regression", "--freeze", "partial", "--out", join(root, "r1")), "--freeze partial needs --unfreeze-last K (a positive number of blocks), got null");
  assertOneLineError(await cli("train", "--data", join(root, "nope.safetensors"), "--head", "regression", "--out", join(root, "r1")), `dataset ${join(root, "nope.safetensors")} not found (build one with \`selfreport dataset\`)`);
  assertOneLineError(await cli("train", "--data", data, "--head", "regression", "--out", runDir), `--out ${runDir} already holds a run; pass --force to replace it, --resume to continue it, or choose another --out`);
  assertOneLineError(await cli("predict", "--run", join(root, "no-run"), "--prompt", "x"), `run directory ${join(root, "no-run")} does not exist`);
  assertOneLineError(await cli("predict", "--run", runDir), "give at least one --prompt");
  const missing = await cli("train", "--head", "regression", "--out", join(root, "r2"));
  assert.equal(missing.code, 2, missing.err);
  assert.ok(missing.err.includes("required option '--data <file.safetensors>' not specified"), missing.err);
});

test("an imported run from a regression config without bin_edges and with an unknown class_name: analyze weights without --data gives the weight-only measures and names the commands that add the rest, which work", async () => {
  const d8v = join(root, "d8v");
  makeTinyHfModel(d8v, { dVocab: 50257, nLayers: 2, dModel: 8, nHeads: 2, nCtx: 16, seed: 6 });
  const cfgPath = join(root, "py-config-nobins.json");
  writeFileSync(cfgPath, JSON.stringify({
    head_type: "regression", head_config: { class_name: "LinearHead", input_dim: 8, dropout: 0, hidden_dim: null },
    target_layer: 1, target_neuron: 3, layer_type: "mlp_post", token_pos: "last", feature_layer: -1, bin_edges: null,
    activation_mean: 0, activation_std: 1, base_model_name: "gpt2", freeze_mode: "frozen",
  }));
  const out = join(root, "imported-nobins");
  const r = await cli("import-pt", "--head", join(fixtures, "head.pt"), "--config", cfgPath, "--out", out, "--model", d8v);
  assert.equal(r.code, 0, r.err);
  assert.deepEqual(r.err.split("\n"), [
    'note: head_config.class_name "LinearHead" is not a class selfreport knows: taken as RegressionHead from head_type "regression"',
    "note: bin_edges was null: none stored (a regression head does not use bins)",
  ]);
  const analysis = join(out, "analysis", "weights");
  const w = await cli("analyze", "weights", "--run", out, "--out", analysis);
  assert.equal(w.code, 0, w.err);
  const lines = w.out.split("\n");
  assert.equal(lines[0], "regression head reading resid_post of layer 1; target blocks.1.mlp.hook_post[3] (no dataset: weights only, null std 0.3536)");
  const file = join(out, "dataset.safetensors");
  const command = `selfreport dataset --model ${resolve(d8v)} --layer 1 --neuron 3 --weights tl --out ${file} && selfreport analyze weights --run ${out} --data ${file} --out ${analysis} --force`;
  assert.equal(lines.at(-2), `  ${command}`);
  const summary = JSON.parse(readFileSync(join(analysis, "summary.json"), "utf8")) as { mode: string; skipped: Array<{ field: string; command: string }>; reading: { W_out: { rank_in_layer: number } } };
  assert.equal(summary.mode, "weights only");
  assert.equal(summary.skipped[0]!.command, command);
  // the named commands work (with a small corpus of ours)
  const [datasetCmd, analyzeCmd] = command.split(" && ").map((c) => c.split(" ").slice(1));
  const d = await cli(...datasetCmd!, "--corpus", corpus, "--n", "120", "--max-len", "8");
  assert.equal(d.code, 0, d.err);
  const full = await cli(...analyzeCmd!);
  assert.equal(full.code, 0, full.err);
  const fullSummary = JSON.parse(readFileSync(join(analysis, "summary.json"), "utf8")) as { mode?: string; examples: { n_used: number }; reading: { W_out: { rank_in_layer: number } } };
  assert.equal(fullSummary.mode, undefined);
  assert.equal(fullSummary.examples.n_used, 120);
  assert.deepEqual(fullSummary.reading.W_out, summary.reading.W_out, "the weight-only cosines are the full analysis's");
});
