/**
 * Importing a run of the Python tool: the committed torch.save fixtures of test/fixtures/torch
 * (values written out by hand below, exact in float32) with config.json files written here, into
 * run directories that loadRun reads and predictPrompts uses.
 */
import { test, after } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync, existsSync, readdirSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve, dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { noGrad } from "../../src/tensor/index.ts";
import { loadTokenizer } from "../../src/model/tokenizer.ts";
import { SelfreportError } from "../../src/errors.ts";
import { importPythonRun, type ImportOptions } from "../../src/selfreport/import-pt.ts";
import { loadRun, loadRunModel, loadBaseModel } from "../../src/selfreport/run.ts";
import { predictPrompts } from "../../src/selfreport/predict.ts";
import { readSafetensors } from "../../src/io/safetensors.ts";
import { makeTinyHfModel } from "../helpers/tiny-model.ts";
import { assertExact } from "../tensor/gradcheck.ts";

process.env["SELFREPORT_QUIET"] = "1";

// dist/test/selfreport → the repository's test/fixtures/torch
const fixtures = resolve(dirname(fileURLToPath(import.meta.url)), "../../../test/fixtures/torch");
const fixture = (name: string): string => join(fixtures, name);

const root = mkdtempSync(join(tmpdir(), "selfreport-import-"));
after(() => rmSync(root, { recursive: true, force: true }));
const d8 = join(root, "d8");
makeTinyHfModel(d8, { dModel: 8, nHeads: 2, nLayers: 2, nCtx: 16, dVocab: 50257, seed: 1 });
const d4 = join(root, "d4");
makeTinyHfModel(d4, { dModel: 4, nHeads: 2, nLayers: 2, nCtx: 16, dVocab: 64, seed: 2 });
const edges = Array.from({ length: 11 }, (_, i) => i / 10);

let counter = 0;
/** Writes a Python-tool config.json (regression head on d_model 8 unless overridden). */
function pyConfig(o: Record<string, unknown> = {}): string {
  const path = join(root, `config${counter++}.json`);
  writeFileSync(path, JSON.stringify({
    head_type: "regression",
    head_config: { class_name: "RegressionHead", input_dim: 8, dropout: 0.1, hidden_dim: null },
    target_layer: 1, target_neuron: 3, layer_type: "mlp_post", token_pos: "last", feature_layer: -1,
    bin_edges: edges, activation_mean: 0.25, activation_std: 2, base_model_name: "gpt2", d_model: 8, ...o,
  }));
  return path;
}

function imp(head: string, config: string, o: Partial<ImportOptions> = {}): { out: string; result: ReturnType<typeof importPythonRun> } {
  const out = join(root, `run${counter++}`);
  return { out, result: importPythonRun({ headPath: fixture(head), configPath: config, outDir: out, modelDir: d8, ...o }) };
}

function throwsExactly(fn: () => unknown, message: string): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof SelfreportError, `not a SelfreportError: ${String(e)}`);
    assert.equal(e.message, message);
    return true;
  });
}

test("regression head.pt: tensors exact, feature_layer −1 → last layer, defaults noted; the run loads and predicts", () => {
  const { out, result } = imp("head.pt", pyConfig());
  const run = loadRun(out);
  assertExact("output.weight", run.head.get("output.weight")!.data, [0.5, -1, 2, 0.25, -0.125, 3, 0, 1.5]);
  assert.deepEqual(run.head.get("output.weight")!.shape, [1, 8]);
  assertExact("output.bias", run.head.get("output.bias")!.data, [0.75]);
  assert.equal(run.config.feature_layer, 1, "−1 = the last of 2 layers");
  assert.equal(run.config.freeze_mode, "frozen");
  assert.equal(run.config.weights, "tl");
  assert.equal(run.config.base_model_name, "gpt2");
  assert.equal(run.config.base_model_dir, resolve(d8));
  assert.equal(run.config.head_config.dropout, 0.1);
  assert.deepEqual(run.config.bin_edges, edges);
  assert.deepEqual(result.notes, ["freeze_mode was missing: taken as frozen (only the head was trained)"]);
  assert.deepEqual(run.config.imported, { from: fixture("head.pt"), notes: result.notes });
  assert.equal(readSafetensors(join(out, "head.safetensors")).metadata["imported_from"], fixture("head.pt"));

  // predicts: (w·resid_post[1] + b)·2 + 0.25 at the last token, by hand
  const model = loadRunModel(run);
  const tok = loadTokenizer(d8);
  const prompt = "The river was cold";
  const [p] = predictPrompts(run, model, model, tok, [prompt]);
  const ids = Int32Array.from(tok.encode(prompt));
  const T = ids.length;
  const { cache } = noGrad(() => model.runWithCache({ ids, batch: 1, len: T }, ["blocks.1.hook_resid_post", "blocks.1.mlp.hook_post"]));
  const x = cache.get("blocks.1.hook_resid_post")!.data.subarray((T - 1) * 8, T * 8);
  const w = [0.5, -1, 2, 0.25, -0.125, 3, 0, 1.5];
  const want = (w.reduce((s, wc, c) => s + wc * x[c]!, 0.75)) * 2 + 0.25;
  assert.ok(Math.abs(p!.predicted - want) <= 1e-5 * Math.max(1, Math.abs(want)), `${p!.predicted} vs ${want}`);
  assert.ok(Math.abs(p!.actual - cache.get("blocks.1.mlp.hook_post")!.data[(T - 1) * 32 + 3]!) <= 1e-6);
});

test("hidden.pt: hidden layer tensors exact (arange(12)/4, …) on a d_model 4 model", () => {
  const cfg = pyConfig({ head_config: { class_name: "RegressionHead", input_dim: 4, dropout: 0, hidden_dim: 3, activation: "tanh" }, d_model: 4 });
  const { out } = imp("hidden.pt", cfg, { modelDir: d4 });
  const run = loadRun(out);
  assertExact("hidden.weight", run.head.get("hidden.weight")!.data, Array.from({ length: 12 }, (_, i) => i / 4));
  assert.deepEqual(run.head.get("hidden.weight")!.shape, [3, 4]);
  assertExact("hidden.bias", run.head.get("hidden.bias")!.data, [-1, 0, 1]);
  assertExact("output.weight", run.head.get("output.weight")!.data, [1, -2, 0.5]);
  assertExact("output.bias", run.head.get("output.bias")!.data, [0.125]);
  assert.equal(run.config.head_config.activation, "tanh");
  assert.equal(run.config.head_config.hidden_dim, 3);
});

test("token_head.pt: the head. prefix is dropped, ASCII digit_tokens become 15–24 with a note, mlp_out is kept with a note", () => {
  const cfg = pyConfig({
    head_type: "token", layer_type: "mlp_out", target_neuron: 6, activation_mean: 0, activation_std: 1, freeze_mode: "frozen",
    head_config: { class_name: "TokenHead", input_dim: 8, dropout: 0, hidden_dim: null, num_classes: 10, digit_tokens: [48, 49, 50, 51, 52, 53, 54, 55, 56, 57] },
  });
  const { out, result } = imp("token_head.pt", cfg);
  const run = loadRun(out);
  assertExact("output.weight", run.head.get("output.weight")!.data, Array.from({ length: 80 }, (_, k) => k / 64));
  assert.deepEqual(run.head.get("output.weight")!.shape, [10, 8]);
  assertExact("output.bias", run.head.get("output.bias")!.data, Array.from({ length: 10 }, (_, i) => i / 8));
  assert.deepEqual(run.config.head_config.digit_tokens, [15, 16, 17, 18, 19, 20, 21, 22, 23, 24]);
  assert.equal(run.config.layer_type, "mlp_out");
  assert.equal(run.config.target_neuron, 6);
  assert.equal(result.notes.length, 2, result.notes.join(" | "));
  assert.ok(result.notes[0]!.startsWith("head_config.digit_tokens were the ASCII codes 48–57") && result.notes[0]!.includes("replaced by GPT-2's digit tokens 15–24"), result.notes[0]);
  assert.equal(result.notes[1], "layer_type mlp_out kept as the Python tool read it: dimension 6 of blocks.1.hook_mlp_out (a residual-stream coordinate of the MLP's output), not MLP neuron 6");
  // the run predicts; its "actual" is dimension 6 of hook_mlp_out
  const model = loadBaseModel(run);
  const tok = loadTokenizer(d8);
  const [p] = predictPrompts(run, model, model, tok, ["A bird sang"]);
  const ids = Int32Array.from(tok.encode("A bird sang"));
  const { cache } = noGrad(() => model.runWithCache({ ids, batch: 1, len: ids.length }, ["blocks.1.hook_mlp_out"]));
  assert.ok(Math.abs(p!.actual - cache.get("blocks.1.hook_mlp_out")!.data[(ids.length - 1) * 8 + 6]!) <= 1e-6);
  assert.ok(p!.predicted >= 0 && p!.predicted <= 1, "an expected bin centre lies within the edges");
});

test("malicious.pt is refused naming the forbidden global, and nothing is written", () => {
  const out = join(root, "evil");
  assert.throws(() => importPythonRun({ headPath: fixture("malicious.pt"), configPath: pyConfig(), outDir: out, modelDir: d8 }), (e: unknown) => {
    assert.ok(e instanceof SelfreportError);
    assert.ok(e.message.includes("refusing to load"), e.message);
    assert.ok(/(posix|nt)\.system/.test(e.message), e.message);
    return true;
  });
  assert.equal(existsSync(out), false);
  assert.equal(existsSync("/tmp/selfreport-pwned"), false);
});

test("errors: gpt2 without --model, d_model mismatches, an existing run without --force, an unfrozen run without --finetuned", () => {
  const cfg = pyConfig();
  // an empty Hugging Face cache, so "gpt2" is found nowhere on this machine
  const hub = process.env["HF_HUB_CACHE"];
  process.env["HF_HUB_CACHE"] = join(root, "empty-hub");
  try {
    assert.throws(() => importPythonRun({ headPath: fixture("head.pt"), configPath: cfg, outDir: join(root, "x1") }), (e: unknown) => {
      assert.ok(e instanceof SelfreportError);
      assert.ok(e.message.startsWith('base_model_name "gpt2" is not available locally ('), e.message);
      assert.ok(e.message.includes(join(root, "empty-hub")), "names where it looked");
      assert.ok(e.message.endsWith("); pass --model DIR (a local Hugging Face GPT-2 directory; nothing is downloaded)"), e.message);
      return true;
    });
  } finally {
    if (hub === undefined) delete process.env["HF_HUB_CACHE"];
    else process.env["HF_HUB_CACHE"] = hub;
  }
  assert.equal(existsSync(join(root, "x1")), false);
  const c16 = pyConfig({ d_model: 16 });
  throwsExactly(() => imp("head.pt", c16), `${c16}: d_model 16 but the model in ${d8} has d_model 8`);
  const c4 = pyConfig({ head_config: { class_name: "RegressionHead", input_dim: 4, dropout: 0, hidden_dim: 3, activation: "tanh" }, d_model: null });
  throwsExactly(() => imp("hidden.pt", c4), `${c4}: head_config.input_dim 4 but the model in ${d8} has d_model 8`);
  // an existing run directory
  const { out } = imp("head.pt", cfg);
  throwsExactly(() => importPythonRun({ headPath: fixture("head.pt"), configPath: cfg, outDir: out, modelDir: d8 }), `--out ${resolve(out)} already holds a run; pass --force to replace it, or choose another --out`);
  importPythonRun({ headPath: fixture("head.pt"), configPath: cfg, outDir: out, modelDir: d8, force: true });
  // unfrozen without and with --finetuned
  const cu = pyConfig({ freeze_mode: "unfrozen" });
  const outU = join(root, "unfrozen");
  throwsExactly(() => importPythonRun({ headPath: fixture("head.pt"), configPath: cu, outDir: outU, modelDir: d8 }), `${cu}: a run with freeze_mode unfrozen needs its fine-tuned model; pass --finetuned DIR (a local Hugging Face directory)`);
  assert.equal(existsSync(outU), false);
  importPythonRun({ headPath: fixture("head.pt"), configPath: cu, outDir: outU, modelDir: d8, finetunedDir: d8 });
  assert.deepEqual(readdirSync(join(outU, "finetuned")).filter((f) => f === "model.safetensors" || f === "config.json").sort(), ["config.json", "model.safetensors"]);
  const ft = loadRunModel(loadRun(outU));
  assert.equal(ft.cfg.dModel, 8);
  // a selfreport config is not a Python one; a head file without the tensors the config needs
  throwsExactly(() => importPythonRun({ headPath: fixture("head.pt"), configPath: join(out, "config.json"), outDir: join(root, "x2"), modelDir: d8 }),
    `${join(out, "config.json")} is already a selfreport run config (format_version 1); nothing to import`);
  const cls = pyConfig({ head_type: "classification", head_config: { class_name: "ClassificationHead", input_dim: 8, dropout: 0, hidden_dim: null, num_classes: 10 } });
  throwsExactly(() => imp("head.pt", cls), `${fixture("head.pt")}: head tensor "output.weight" has shape [1, 8], expected [10, 8] for this head_config`);
});

test("a regression config without bin_edges (missing or null) imports with a note; a classification one still needs them", () => {
  for (const [cfg, said] of [[pyConfig({ bin_edges: undefined }), "missing"], [pyConfig({ bin_edges: null }), "null"]] as const) {
    const { out, result } = imp("head.pt", cfg);
    const run = loadRun(out);
    assert.deepEqual(run.config.bin_edges, []);
    assert.deepEqual(result.notes, [`bin_edges was ${said}: none stored (a regression head does not use bins)`, "freeze_mode was missing: taken as frozen (only the head was trained)"]);
    const model = loadRunModel(run);
    const [p] = predictPrompts(run, model, model, loadTokenizer(d8), ["The river was cold"]);
    assert.ok(Number.isFinite(p!.predicted));
  }
  const cls = pyConfig({ head_type: "classification", head_config: { class_name: "ClassificationHead", input_dim: 8, dropout: 0, hidden_dim: null, num_classes: 10 }, bin_edges: null });
  throwsExactly(() => imp("token_head.pt", cls), "bin_edges must be a list of numbers, got null");
});

test("head_config.class_name: an unknown or missing name with a known head_type imports with a note; a known name that disagrees is an error", () => {
  const unknown = pyConfig({ head_config: { class_name: "LinearProbeHead", input_dim: 8, dropout: 0, hidden_dim: null } });
  const { out, result } = imp("head.pt", unknown);
  assert.equal(loadRun(out).config.head_config.class_name, "RegressionHead");
  assert.equal(result.notes[0], 'head_config.class_name "LinearProbeHead" is not a class selfreport knows: taken as RegressionHead from head_type "regression"');
  const missing = pyConfig({ head_config: { input_dim: 8, dropout: 0, hidden_dim: null } });
  assert.equal(imp("head.pt", missing).result.notes[0], 'head_config.class_name was missing: taken as RegressionHead from head_type "regression"');
  const token = pyConfig({
    head_type: "token", head_config: { class_name: "DigitTokenHead", input_dim: 8, dropout: 0, hidden_dim: null, num_classes: 10, digit_tokens: [15, 16, 17, 18, 19, 20, 21, 22, 23, 24] },
  });
  assert.equal(loadRun(imp("token_head.pt", token).out).config.head_config.class_name, "TokenHead");
  const disagree = pyConfig({ head_config: { class_name: "TokenHead", input_dim: 8, dropout: 0, hidden_dim: null } });
  throwsExactly(() => imp("head.pt", disagree), `${disagree}: head_type "regression" disagrees with head_config.class_name "TokenHead"`);
});
