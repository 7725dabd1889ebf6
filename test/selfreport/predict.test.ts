/**
 * predictPrompts: the predicted activation equals the head applied by hand (float64) to features
 * from a forward pass of each prompt alone; the "actual" activation equals runWithCache.
 */
import { test, after } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { noGrad } from "../../src/tensor/index.ts";
import type { HookedTransformer } from "../../src/model/transformer.ts";
import { loadGpt2Tokenizer } from "../../src/model/tokenizer.ts";
import { SelfreportError } from "../../src/errors.ts";
import { loadRun, type Run } from "../../src/selfreport/run.ts";
import { predictPrompts, readPosition } from "../../src/selfreport/predict.ts";
import { binCentres } from "../../src/selfreport/stats.ts";
import { makeTinyRun } from "../helpers/run-fixture.ts";
import { mulberry32, randnArray } from "../helpers/rng.ts";

/** |got − want| ≤ 1e-8 + 1e-5·|want| (float32 forward vs float64 hand computation). */
function near(got: number, want: number, what: string): void {
  assert.ok(Math.abs(got - want) <= 1e-8 + 1e-5 * Math.abs(want), `${what}: ${got} vs ${want} (|diff| ${Math.abs(got - want)})`);
}

process.env["SELFREPORT_QUIET"] = "1";

const root = mkdtempSync(join(tmpdir(), "selfreport-predict-"));
after(() => rmSync(root, { recursive: true, force: true }));
const tok = loadGpt2Tokenizer();
const model50k = { nLayers: 2, dModel: 16, nHeads: 2, nCtx: 16, dVocab: 50257 };
const prompts = ["The cat sat on the mat", "Rivers run", "A"];

/** Activation at `hook`[pos] of `prompt` alone: [width]. */
function ownActs(model: HookedTransformer, prompt: string, hook: string, pos: number): Float32Array {
  const ids = Int32Array.from(tok.encode(prompt));
  const { cache } = noGrad(() => model.runWithCache({ ids, batch: 1, len: ids.length }, [hook]));
  const A = cache.get(hook)!; // [1, T, width]
  const w = A.shape[2]!;
  return A.data.slice(pos * w, (pos + 1) * w);
}

/** The head of `run` applied by hand in float64 to a feature vector x [C] (token head: ln_final of `model` first). */
function handPrediction(run: Run, model: HookedTransformer, x: Float32Array): number {
  const C = x.length;
  let v = Float64Array.from(x);
  if (run.headType === "token") {
    const mu = v.reduce((s, a) => s + a, 0) / C;
    const sd = Math.sqrt(v.reduce((s, a) => s + (a - mu) ** 2, 0) / C + model.cfg.lnEps);
    const w = model.p("ln_final.w").data;
    const b = model.p("ln_final.b").data;
    v = v.map((a, c) => ((a - mu) / sd) * w[c]! + b[c]!);
  }
  const W = run.head.get("output.weight")!;
  const bias = run.head.get("output.bias")!.data;
  const K = W.shape[0]!;
  const out = Array.from({ length: K }, (_, k) => {
    let s = bias[k]!;
    for (let c = 0; c < C; c++) s += W.data[k * C + c]! * v[c]!;
    return s;
  });
  if (run.headType === "regression") return out[0]! * run.readout.activationStd + run.readout.activationMean;
  const m = Math.max(...out);
  const e = out.map((o) => Math.exp(o - m));
  const z = e.reduce((s, a) => s + a, 0);
  const centres = binCentres(run.readout.binEdges);
  return e.reduce((s, a, k) => s + (a / z) * centres[k]!, 0);
}

for (const head of ["regression", "classification", "token"] as const) {
  test(`${head} head: predicted = the head on hand-computed features; actual = runWithCache at the last token`, () => {
    // a planted reading direction of scale 50, so predictions span the activation range (features are ~0.03)
    const direction = randnArray(mulberry32(head.length), 16).map((v) => 50 * v);
    const fx = makeTinyRun(join(root, head), { head, model: model50k, n: 30, randomLn: true, plantedDirection: direction });
    const run = loadRun(fx.runDir);
    const preds = predictPrompts(run, fx.model, fx.model, tok, prompts);
    const predicted: number[] = [];
    assert.equal(preds.length, prompts.length);
    preds.forEach((p, i) => {
      const T = tok.encode(prompts[i]!).length;
      assert.equal(p.prompt, prompts[i]);
      assert.equal(p.tokens, T);
      assert.equal(p.position, T - 1);
      const x = ownActs(fx.model, prompts[i]!, `blocks.${run.config.feature_layer}.hook_resid_post`, T - 1);
      const want = handPrediction(run, fx.model, x);
      near(p.predicted, want, `prompt ${i}: predicted`);
      const actual = ownActs(fx.model, prompts[i]!, `blocks.${run.config.target_layer}.mlp.hook_post`, T - 1)[run.config.target_neuron]!;
      near(p.actual, actual, `prompt ${i}: actual`);
      predicted.push(p.predicted);
      assert.equal(p.actualFinetuned, null);
    });
    // not a degenerate check: the prompts get different predictions, within the activation range
    const spread = Math.max(...predicted) - Math.min(...predicted);
    assert.ok(spread > 0.05 * (run.config.bin_edges[10]! - run.config.bin_edges[0]!), `prediction spread ${spread}`);
  });
}

test("a fine-tuned run predicts with the fine-tuned model and reports the neuron in both models", () => {
  const fx = makeTinyRun(join(root, "ft"), { freeze: "unfrozen", model: model50k, n: 30, finetuneNoise: 0.05, plantedDirection: randnArray(mulberry32(4), 16).map((v) => 50 * v) });
  const run = loadRun(fx.runDir);
  const [p] = predictPrompts(run, fx.runModel, fx.model, tok, ["The old man walked"]);
  const T = tok.encode("The old man walked").length;
  const want = handPrediction(run, fx.runModel, ownActs(fx.runModel, "The old man walked", "blocks.1.hook_resid_post", T - 1));
  near(p!.predicted, want, "predicted");
  const hook = "blocks.1.mlp.hook_post";
  near(p!.actual, ownActs(fx.model, "The old man walked", hook, T - 1)[5]!, "actual (base model)");
  near(p!.actualFinetuned!, ownActs(fx.runModel, "The old man walked", hook, T - 1)[5]!, "actual (fine-tuned model)");
  assert.notEqual(p!.actual, p!.actualFinetuned);
});

test("a fixed token_pos reads that position; prompts too short, empty or too long are refused", () => {
  const fx = makeTinyRun(join(root, "pos"), { model: model50k, n: 30 });
  const run = loadRun(fx.runDir);
  const fixed: Run = { ...run, config: { ...run.config, token_pos: 1 } };
  const [p] = predictPrompts(fixed, fx.model, fx.model, tok, ["The cat sat on"]);
  assert.equal(p!.position, 1);
  const x = ownActs(fx.model, "The cat sat on", "blocks.1.hook_resid_post", 1);
  near(p!.predicted, handPrediction(run, fx.model, x), "predicted at position 1");
  near(p!.actual, ownActs(fx.model, "The cat sat on", "blocks.1.mlp.hook_post", 1)[5]!, "actual at position 1");
  assert.equal(readPosition("last", 7, "x"), 6);
  const err = (fn: () => unknown, message: string): void => {
    assert.throws(fn, (e: unknown) => e instanceof SelfreportError && e.message === message);
  };
  err(() => predictPrompts(fixed, fx.model, fx.model, tok, ["The cat", "A"]), "prompt 2 has 1 tokens, but the run reads position 1");
  err(() => predictPrompts(run, fx.model, fx.model, tok, []), "give at least one --prompt");
  err(() => predictPrompts(run, fx.model, fx.model, tok, ["ok", ""]), "prompt 2 is empty");
  err(() => predictPrompts(run, fx.model, fx.model, tok, [Array(20).fill("word").join(" ")]), "prompt 1 has 20 tokens, more than the model's n_positions 16");
});
