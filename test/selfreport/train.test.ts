/**
 * The trainer on a tiny random GPT-2 (O(1) activations) and synthetic datasets:
 *   frozen     learns a planted linear target (test r > 0.99); the base model is untouched; the
 *              feature cache is what it trains on
 *   unfrozen   the head stays bit-identical to its seeded init, the model moves
 *   partial    K = 1: earlier blocks and embeddings bit-identical, the last block and ln_final move
 *   resume     Ctrl-C checkpoint + --resume = one uninterrupted run, exactly
 *   divergence a non-finite loss stops naming the step; the checkpoint kept is one that resumes
 * and metrics.json recomputed by hand (model metrics from independent forwards, the mean baseline).
 */
import { test, after } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, readFileSync, existsSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { noGrad } from "../../src/tensor/index.ts";
import { loadModel } from "../../src/model/load.ts";
import { writeTokenizerFiles } from "../../src/model/tokenizer.ts";
import type { HookedTransformer } from "../../src/model/transformer.ts";
import { readSafetensors, writeSafetensors } from "../../src/io/safetensors.ts";
import { SelfreportError } from "../../src/errors.ts";
import { train, type TrainOptions } from "../../src/selfreport/train.ts";
import { installInterruptHandlers, Interrupted } from "../../src/util/interrupt.ts";
import { exampleTokens, splitIndices, writeDataset, type Dataset } from "../../src/selfreport/dataset.ts";
import { featureCachePath, modelFingerprint, examplesFingerprint, computeFeatures } from "../../src/selfreport/features.ts";
import { makeHeadConfig, initHead } from "../../src/selfreport/predictor.ts";
import { binOf, binCentres, activationStats } from "../../src/selfreport/stats.ts";
import { loadRun, loadRunModel } from "../../src/selfreport/run.ts";
import { makeTinyHfModel } from "../helpers/tiny-model.ts";
import { mulberry32, randnArray } from "../helpers/rng.ts";
import { assertClose, assertExact } from "../tensor/gradcheck.ts";
import { writeSyntheticDataset } from "../helpers/synthetic-dataset.ts";

process.env["SELFREPORT_QUIET"] = "1";

const root = mkdtempSync(join(tmpdir(), "selfreport-train-"));
after(() => rmSync(root, { recursive: true, force: true }));

const C = 16;
const modelDir = join(root, "model");
makeTinyHfModel(modelDir, { dVocab: 64, dModel: C, nLayers: 2, nHeads: 2, nCtx: 16, seed: 2 });
writeTokenizerFiles(modelDir); // unfrozen/partial runs copy them beside the fine-tuned model
const baseModel = loadModel(modelDir, { weights: "raw" }).model;
const otherModelDir = join(root, "other-model");
makeTinyHfModel(otherModelDir, { dVocab: 64, dModel: C, nLayers: 2, nHeads: 2, nCtx: 16, seed: 3 });

const neuronData = join(root, "neuron.safetensors");
const neuronDs = writeSyntheticDataset(neuronData, modelDir, { n: 120, seed: 1 });
const direction = randnArray(mulberry32(9), C);
const linearData = join(root, "linear.safetensors");
const linearDs = writeSyntheticDataset(linearData, modelDir, { n: 240, seed: 2, target: { direction, bias: 0.5, featureLayer: 1 } });

let counter = 0;
function opts(data: string, o: Partial<TrainOptions> = {}): TrainOptions {
  return {
    data, out: join(root, `run${counter++}`), head: "regression", freeze: "frozen", unfreezeLast: null, featureLayer: -1,
    epochs: 3, batchSize: 16, lr: 1e-3, weightDecay: 0.01, warmup: 0, gradClip: 1, seed: 0, patience: 100,
    hiddenDim: null, activation: null, dropout: 0, numClasses: null, checkpointEvery: 500, resume: false, force: false, solver: "adamw", ...o,
  };
}

function tensorsOf(path: string): Map<string, Float32Array> {
  const out = new Map<string, Float32Array>();
  for (const [k, t] of readSafetensors(path).tensors) out.set(k, t.data as Float32Array);
  return out;
}

interface MetricsFile {
  test: Record<string, unknown> & { n: number; mse: number; mae: number; pearson_r: number; spearman_rho: number; r2: number; accuracy: number | null; baseline: { description: string; mse: number; mae: number; r2: number } };
  validation: Record<string, unknown>;
  epochs_run: number;
  best_epoch: number;
  stopped_early: boolean;
  seconds: number;
}

function metricsOf(runDir: string): MetricsFile {
  return JSON.parse(readFileSync(join(runDir, "metrics.json"), "utf8")) as MetricsFile;
}

/** resid_post of `layer` at each example's read position, one forward per example: [n·C]. */
function ownFeatures(model: HookedTransformer, ds: Dataset, idx: readonly number[], layer: number): Float64Array {
  const out = new Float64Array(idx.length * C);
  const hook = `blocks.${layer}.hook_resid_post`;
  idx.forEach((i, k) => {
    const ids = Int32Array.from(exampleTokens(ds, i));
    const { cache } = noGrad(() => model.runWithCache({ ids, batch: 1, len: ids.length }, [hook]));
    out.set(cache.get(hook)!.data.subarray(ds.positions[i]! * C, (ds.positions[i]! + 1) * C), k * C);
  });
  return out;
}

/** A linear regression head (output.weight w [1, C], output.bias b) in float64 on features X [n, C]: (w·x + b)·std + mean. */
function regressionPredictions(w: Float32Array, b: number, X: Float64Array, std: number, mean: number): Float64Array {
  return Float64Array.from({ length: X.length / C }, (_, r) => {
    let s = b;
    for (let c = 0; c < C; c++) s += w[c]! * X[r * C + c]!;
    return s * std + mean;
  });
}

/** Ranks 1..n (the values here are continuous: no ties). */
function rankOf(xs: ArrayLike<number>): Float64Array {
  const order = Array.from({ length: xs.length }, (_, i) => i).sort((i, j) => xs[i]! - xs[j]!);
  const r = new Float64Array(xs.length);
  order.forEach((i, k) => void (r[i] = k + 1));
  return r;
}

function handMetrics(pred: ArrayLike<number>, target: ArrayLike<number>): { mse: number; mae: number; r: number; rho: number; r2: number } {
  const n = target.length;
  let mp = 0;
  let mt = 0;
  for (let i = 0; i < n; i++) { mp += pred[i]! / n; mt += target[i]! / n; }
  let sse = 0, sae = 0, spt = 0, spp = 0, stt = 0;
  for (let i = 0; i < n; i++) {
    const d = pred[i]! - target[i]!;
    sse += d * d;
    sae += Math.abs(d);
    spt += (pred[i]! - mp) * (target[i]! - mt);
    spp += (pred[i]! - mp) ** 2;
    stt += (target[i]! - mt) ** 2;
  }
  // Spearman: Pearson of the ranks; with ranks 1..n, 1 − 6·Σd²/(n(n² − 1))
  const rp = rankOf(pred);
  const rt = rankOf(target);
  let d2 = 0;
  for (let i = 0; i < n; i++) d2 += (rp[i]! - rt[i]!) ** 2;
  return { mse: sse / n, mae: sae / n, r: spt / Math.sqrt(spp * stt), rho: 1 - (6 * d2) / (n * (n * n - 1)), r2: 1 - sse / stt };
}

function close(actual: number, expected: number, rel: number, what: string): void {
  assert.ok(Math.abs(actual - expected) <= rel * Math.max(1e-12, Math.abs(expected)), `${what}: ${actual} vs ${expected} (relative tolerance ${rel})`);
}

// ---------------------------------------------------------------------------------------------

test("frozen regression learns a planted linear target (test r > 0.99); metrics.json recomputed by hand; the base model is untouched", async () => {
  const before = readFileSync(join(modelDir, "model.safetensors"));
  const o = opts(linearData, { epochs: 40, lr: 0.03, weightDecay: 0, patience: 100 });
  // the trainer works on this in-memory model, so its weights can be compared afterwards
  const model = loadModel(modelDir, { weights: "raw" }).model;
  const snapshot = new Map([...model.params].map(([k, t]) => [k, t.data.slice()]));
  const r = await train(o, { loaded: { model, dir: modelDir } });
  for (const [k, t] of model.params) assertExact(`base model ${k} after frozen training`, t.data, snapshot.get(k)!);
  assert.ok(r.test.pearson_r > 0.99, `test r ${r.test.pearson_r}`);
  assert.ok(r.test.r2 > 0.98, `test R² ${r.test.r2}`);
  assert.ok(readFileSync(join(modelDir, "model.safetensors")).equals(before), "base model file unchanged");
  assert.equal(existsSync(join(o.out, "finetuned")), false, "a frozen run writes no model");
  assert.equal(existsSync(join(o.out, "checkpoint")), false, "the checkpoint is removed when the run completes");
  for (const f of ["config.json", "head.safetensors", "metrics.json", "train_log.jsonl", "training_curve.svg"]) assert.ok(existsSync(join(o.out, f)), f);

  // metrics.json: every field, the model's metrics from independent forwards, the baseline by hand
  const m = metricsOf(o.out);
  assert.deepEqual(Object.keys(m).sort(), ["best_epoch", "epochs_run", "seconds", "solver", "stopped_early", "test", "validation"]);
  assert.deepEqual(Object.keys(m.test).sort(), ["accuracy", "baseline", "mae", "mse", "n", "pearson_r", "r2", "spearman_rho"]);
  assert.equal(m.test.accuracy, null, "no bin accuracy for regression");
  const testIdx = splitIndices(linearDs, "test");
  assert.equal(m.test.n, testIdx.length);
  const target = Float64Array.from(testIdx, (i) => linearDs.targets[i]!);
  const mean = linearDs.meta.stats.mean;
  const std = linearDs.meta.stats.std;
  const head = tensorsOf(join(o.out, "head.safetensors"));
  const pred = regressionPredictions(head.get("output.weight")!, head.get("output.bias")![0]!, ownFeatures(baseModel, linearDs, testIdx, 1), std, mean);
  const hm = handMetrics(pred, target);
  close(m.test.mse, hm.mse, 1e-4, "test mse");
  close(m.test.mae, hm.mae, 1e-4, "test mae");
  close(m.test.pearson_r, hm.r, 1e-5, "test r");
  close(m.test.spearman_rho, hm.rho, 1e-9, "test ρ");
  close(m.test.r2, hm.r2, 1e-4, "test R²");
  const bm = handMetrics(new Float64Array(target.length).fill(mean), target);
  assert.equal(m.test.baseline.description, "always predict the training mean");
  close(m.test.baseline.mse, bm.mse, 1e-12, "baseline mse");
  close(m.test.baseline.mae, bm.mae, 1e-12, "baseline mae");
  close(m.test.baseline.r2, bm.r2, 1e-9, "baseline R²");
  assert.ok(m.test.mse < 0.05 * m.test.baseline.mse, "far better than the baseline");
  assert.equal(m.epochs_run, 40);
  assert.equal(m.stopped_early, false);
  assert.ok(m.best_epoch >= 1 && m.best_epoch <= 40);

  // config.json describes the run
  const run = loadRun(o.out);
  assert.equal(run.config.freeze_mode, "frozen");
  assert.equal(run.config.feature_layer, 1, "-1 = the last layer");
  assert.equal(run.config.activation_mean, mean);
  assert.equal(run.config.activation_std, std);
  assert.deepEqual(run.config.bin_edges, linearDs.meta.bin_edges);
  // train_log.jsonl: one line per step (12 steps per epoch: 192 training examples / 16) and one per epoch
  const log = readFileSync(join(o.out, "train_log.jsonl"), "utf8").trimEnd().split("\n").map((l) => JSON.parse(l) as Record<string, number>);
  assert.equal(log.filter((l) => "loss" in l).length, 40 * 12);
  assert.equal(log.filter((l) => "val_loss" in l).length, 40);
});

test("frozen training reads the feature cache: planted zeros are used, a stale cache is recomputed", async () => {
  const o = opts(neuronData, { epochs: 2 });
  await train(o);
  const cache = featureCachePath(neuronData, 1, "raw");
  assert.ok(existsSync(cache));
  const { tensors, metadata } = readSafetensors(cache);
  assert.equal(metadata["fingerprint"], modelFingerprint(modelDir));
  const all = Array.from({ length: neuronDs.meta.n }, (_, i) => i);
  assertClose("cached features vs per-example forwards", tensors.get("features")!.data, ownFeatures(baseModel, neuronDs, all, 1), { atol: 1e-5, rtol: 1e-5 }, [neuronDs.meta.n, C]);

  assert.equal(metadata["examples"], examplesFingerprint(neuronDs));
  // same fingerprints, zero features: the trainer must use them (a head on zeros predicts a constant)
  const key = { fingerprint: modelFingerprint(modelDir), examples: examplesFingerprint(neuronDs) };
  writeSafetensors(cache, { features: { dtype: "F32", shape: [neuronDs.meta.n, C], data: new Float32Array(neuronDs.meta.n * C) } }, key);
  const zeros = await train({ ...o, force: true });
  assert.equal(zeros.test.pearson_r, 0, "constant predictions from zero features");
  // a foreign model fingerprint: recomputed and rewritten
  writeSafetensors(cache, { features: { dtype: "F32", shape: [neuronDs.meta.n, C], data: new Float32Array(neuronDs.meta.n * C) } }, { ...key, fingerprint: "another-model" });
  const again = await train({ ...o, force: true });
  assert.notEqual(again.test.pearson_r, 0);
  assertExact("recomputed cache", readSafetensors(cache).tensors.get("features")!.data, computeFeatures(baseModel, neuronDs, 1).data);
});

test("a dataset rebuilt at the same path (same n, other text) does not reuse the old feature cache", async () => {
  const path = join(root, "rebuilt.safetensors");
  writeSyntheticDataset(path, modelDir, { n: 120, seed: 21 });
  await train(opts(path, { epochs: 1 }));
  const rebuilt = writeSyntheticDataset(path, modelDir, { n: 120, seed: 22 });
  await train(opts(path, { epochs: 1 }));
  const cached = readSafetensors(featureCachePath(path, 1, "raw")).tensors.get("features")!.data;
  assertExact("cache after the rebuild", cached, computeFeatures(baseModel, rebuilt, 1).data);
});

test("unfrozen: the head is bit-identical to its seeded init, the model changed, and metrics reproduce on the saved model", async () => {
  const o = opts(neuronData, { freeze: "unfrozen", epochs: 2, lr: 1e-3, seed: 4 });
  const r = await train(o);
  const head = tensorsOf(join(o.out, "head.safetensors"));
  const init = initHead(makeHeadConfig("regression", { inputDim: C }), 4, null);
  for (const [k, t] of init) assertExact(`head ${k} vs seeded init`, head.get(k)!, t.data);
  const base = tensorsOf(join(modelDir, "model.safetensors"));
  const ft = tensorsOf(join(o.out, "finetuned", "model.safetensors"));
  for (const k of ["wte.weight", "wpe.weight", "h.0.attn.c_attn.weight", "h.0.mlp.c_fc.weight", "h.1.mlp.c_proj.weight", "h.1.ln_2.weight"]) {
    assert.ok(ft.get(k)!.some((v, i) => v !== base.get(k)![i]), `${k} changed`);
  }
  // ln_final is not on a regression head's path (it reads resid_post): no gradient, no change
  assertExact("ln_f.weight", ft.get("ln_f.weight")!, base.get("ln_f.weight")!);
  // the saved (best) model and head give the metrics in metrics.json
  const run = loadRun(o.out);
  const model = loadRunModel(run);
  const testIdx = splitIndices(neuronDs, "test");
  const pred = regressionPredictions(run.head.get("output.weight")!.data, run.head.get("output.bias")!.data[0]!, ownFeatures(model, neuronDs, testIdx, 1), run.config.activation_std, run.config.activation_mean);
  const hm = handMetrics(pred, Float64Array.from(testIdx, (i) => neuronDs.targets[i]!));
  close(r.test.mse, hm.mse, 1e-4, "unfrozen test mse on the saved model");
  close(metricsOf(o.out).test.mse, r.test.mse, 0, "metrics.json = returned metrics");
});

test("partial --unfreeze-last 1 (token head, which reads through ln_final): block 0 and the embeddings bit-identical; block 1 and ln_final changed", async () => {
  const o = opts(neuronData, { head: "token", freeze: "partial", unfreezeLast: 1, epochs: 2, lr: 1e-3 });
  await train(o);
  const base = tensorsOf(join(modelDir, "model.safetensors"));
  const ft = tensorsOf(join(o.out, "finetuned", "model.safetensors"));
  let frozenCount = 0;
  let trainedCount = 0;
  for (const [k, v] of ft) {
    const b = base.get(k);
    assert.ok(b !== undefined, `base has ${k}`);
    if (k.startsWith("h.1.") || k.startsWith("ln_f.")) {
      if (k.endsWith(".attn.bias") || k.endsWith(".masked_bias")) continue;
      assert.ok(v.some((x, i) => x !== b[i]), `${k} should have trained`);
      trainedCount++;
    } else {
      assertExact(`${k} must be bit-identical`, v, b);
      frozenCount++;
    }
  }
  assert.ok(frozenCount >= 14 && trainedCount >= 14, `${frozenCount} frozen, ${trainedCount} trained tensors`);
  assert.equal(loadRun(o.out).config.unfreeze_last, 1);
});

test("partial with TransformerLens-processed weights: LayerNorms (pure normalisation there) never train; block 0 stays bit-identical", async () => {
  const data = join(root, "tl.safetensors");
  writeSyntheticDataset(data, modelDir, { n: 120, seed: 1, weights: "tl" });
  const o = opts(data, { head: "token", freeze: "partial", unfreezeLast: 1, epochs: 2, lr: 1e-3 });
  await train(o);
  const base = loadModel(modelDir, { weights: "tl" }).model;
  const ft = loadModel(join(o.out, "finetuned"), { weights: "raw" }).model; // the file: the processed weights as trained
  let moved = 0;
  for (const [k, t] of base.params) {
    const f = ft.p(k).data;
    const trains = k.startsWith("blocks.1.") && !/\.ln[12]\./.test(k);
    if (trains && f.some((v, i) => v !== t.data[i])) moved++;
    if (!trains) assertExact(`${k} must be bit-identical`, f, t.data);
  }
  assert.ok(moved >= 10, `${moved} tensors of block 1 moved`);
});

test("unfrozen with TransformerLens-processed weights: the saved model loads back exactly as trained; predictions after reload give the end-of-training metrics", async () => {
  const data = join(root, "tl-unfrozen.safetensors");
  const ds = writeSyntheticDataset(data, modelDir, { n: 120, seed: 5, weights: "tl" });
  const o = opts(data, { freeze: "unfrozen", epochs: 3, lr: 3e-3, seed: 6 });
  const r = await train(o);
  const ftDir = join(o.out, "finetuned");
  // the file holds the trained (processed) weights; loading with the run's "tl" must not process them again
  const asSaved = loadModel(ftDir, { weights: "raw" }).model;
  const loaded = loadRunModel(loadRun(o.out));
  for (const [k, t] of asSaved.params) assertExact(`reloaded ${k}`, loaded.p(k).data, t.data);
  // training moved the writing weights off their centred (processed) form, so processing them again would change the model
  const rowMean = Math.max(...Array.from({ length: asSaved.cfg.dMlp }, (_, m) => Math.abs(asSaved.W_out(1).data.subarray(m * C, (m + 1) * C).reduce((a, b) => a + b, 0) / C)));
  assert.ok(rowMean > 1e-5, `largest |mean| of a trained W_out row ${rowMean}`);
  // predictions after reload: the end-of-training test metrics, to 1e-6
  const run = loadRun(o.out);
  const testIdx = splitIndices(ds, "test");
  const pred = regressionPredictions(run.head.get("output.weight")!.data, run.head.get("output.bias")!.data[0]!, ownFeatures(loaded, ds, testIdx, 1), run.config.activation_std, run.config.activation_mean);
  const hm = handMetrics(pred, Float64Array.from(testIdx, (i) => ds.targets[i]!));
  close(hm.mse, r.test.mse, 1e-6, "test MSE after reload");
  close(hm.mae, r.test.mae, 1e-6, "test MAE after reload");
  close(hm.r, r.test.pearson_r, 1e-6, "test r after reload");
});

test("early stopping: patience counts epochs without improvement; the best epoch's weights are the ones kept", async () => {
  // a step too small to move the validation loss by 1e-6: epoch 1 is the best, epochs 2 and 3 are not
  const still = await train(opts(neuronData, { epochs: 10, patience: 2, lr: 1e-12 }));
  assert.deepEqual([still.epochsRun, still.bestEpoch, still.stoppedEarly], [3, 1, true]);
  // a noisy run (large steps): the kept weights are those of the epoch with the lowest validation loss
  const o = opts(neuronData, { epochs: 8, batchSize: 4, lr: 0.3, weightDecay: 0, hiddenDim: 16, activation: "relu" });
  const r = await train(o);
  const val = readFileSync(join(o.out, "train_log.jsonl"), "utf8").trimEnd().split("\n").map((l) => JSON.parse(l) as Record<string, number>).filter((l) => "val_loss" in l);
  assert.equal(val.length, 8);
  const losses = val.map((l) => l["val_loss"]!);
  const best = losses.indexOf(Math.min(...losses)) + 1;
  assert.equal(r.bestEpoch, best);
  assert.ok(best < 8, `the last epoch (${losses.join(", ")}) should not be the best here, or this checks nothing`);
  // validation MSE in activation units = best epoch's standardised loss · std²
  close(metricsOf(o.out).validation["mse"] as number, losses[best - 1]! * neuronDs.meta.stats.std ** 2, 1e-5, "validation mse of the kept weights");
});

// ---- Ctrl-C and --resume

/**
 * Runs train(o) with the CLI's interrupt handlers installed and delivers Ctrl-C (calls the SIGINT
 * handler) when its progress line first reports step ≥ atStep. Returns the step it stopped at.
 */
async function trainInterrupted(o: TrainOptions, atStep: number): Promise<number> {
  const write = process.stderr.write;
  const quiet = process.env["SELFREPORT_QUIET"];
  const tty = Object.getOwnPropertyDescriptor(process.stderr, "isTTY");
  let at = -1;
  process.env["SELFREPORT_QUIET"] = "0";
  Object.defineProperty(process.stderr, "isTTY", { value: false, configurable: true, writable: true });
  const remove = installInterruptHandlers(() => {});
  process.stderr.write = ((chunk: string | Uint8Array): boolean => {
    const m = /^train \d+% (\d+)\//.exec(String(chunk));
    if (m !== null && at < 0 && Number(m[1]) >= atStep) {
      at = Number(m[1]);
      const handlers = process.listeners("SIGINT");
      (handlers[handlers.length - 1] as (s: NodeJS.Signals) => void)("SIGINT");
    }
    return true;
  }) as typeof process.stderr.write;
  try {
    await assert.rejects(train(o), (e: unknown) => e instanceof Interrupted && e.exitCode === 130 && e.resume === "--resume" && e.message.includes(`step ${at} of`));
  } finally {
    remove();
    process.stderr.write = write;
    process.env["SELFREPORT_QUIET"] = quiet;
    if (tty) Object.defineProperty(process.stderr, "isTTY", tty);
    else delete (process.stderr as { isTTY?: boolean }).isTTY;
  }
  assert.ok(at >= atStep, `interrupted at step ${at}`);
  return at;
}

function stateStep(runDir: string): number {
  return (JSON.parse(readFileSync(join(runDir, "checkpoint", "state.json"), "utf8")) as { step: number }).step;
}

function assertSameRun(a: string, b: string, what: string): void {
  for (const [k, v] of tensorsOf(join(a, "head.safetensors"))) assertExact(`${what}: head ${k}`, tensorsOf(join(b, "head.safetensors")).get(k)!, v);
  if (existsSync(join(a, "finetuned"))) {
    const fb = tensorsOf(join(b, "finetuned", "model.safetensors"));
    for (const [k, v] of tensorsOf(join(a, "finetuned", "model.safetensors"))) assertExact(`${what}: model ${k}`, fb.get(k)!, v);
  }
  const ma = metricsOf(a);
  const mb = metricsOf(b);
  assert.deepEqual(mb.test, ma.test, `${what}: test metrics`);
  assert.deepEqual(mb.validation, ma.validation, `${what}: validation metrics`);
  assert.deepEqual([mb.epochs_run, mb.best_epoch, mb.stopped_early], [ma.epochs_run, ma.best_epoch, ma.stopped_early]);
  const ca = JSON.parse(readFileSync(join(a, "config.json"), "utf8")) as { training: Record<string, unknown> };
  const cb = JSON.parse(readFileSync(join(b, "config.json"), "utf8")) as { training: Record<string, unknown> };
  assert.equal(cb.training["steps"], ca.training["steps"]);
}

test("Ctrl-C saves a checkpoint; --resume ends exactly where an uninterrupted run does (classification, hidden layer, dropout)", async () => {
  const o = opts(neuronData, { head: "classification", hiddenDim: 8, activation: "tanh", dropout: 0.2, numClasses: 5, epochs: 6, lr: 3e-3 });
  const whole = await train(o);
  const cut = { ...o, out: join(root, `run${counter++}`) };
  const at = await trainInterrupted(cut, 14);
  assert.equal(stateStep(cut.out), at, "checkpoint at the interrupted step");
  assert.equal(existsSync(join(cut.out, "config.json")), false, "an interrupted run is not complete");
  const resumed = await train({ ...cut, resume: true });
  assert.equal(existsSync(join(cut.out, "checkpoint")), false);
  assert.deepEqual(resumed.test, whole.test);
  assertSameRun(o.out, cut.out, "frozen classification");
  assert.ok(whole.test.accuracy !== null && whole.test.accuracy >= 0 && whole.test.accuracy <= 1);
});

test("Ctrl-C in the first epoch (before any validation) and --resume of a partial run: model, optimizer and best-tracking restored exactly", async () => {
  const o = opts(neuronData, { freeze: "partial", unfreezeLast: 1, epochs: 3, lr: 1e-3 });
  await train(o);
  const cut = { ...o, out: join(root, `run${counter++}`) };
  const at = await trainInterrupted(cut, 2);
  assert.ok(at < 6, `step ${at} is in the first epoch (6 steps per epoch)`);
  assert.equal(stateStep(cut.out), at);
  await train({ ...cut, resume: true });
  assertSameRun(o.out, cut.out, "partial regression");
});

test("a non-finite loss stops with the step; the checkpoint kept is one that resumes to the uninterrupted result", async () => {
  // a fresh run: the first step's update overflows, the second loss is infinite, nothing is kept
  const fresh = opts(linearData, { lr: 1e30, checkpointEvery: 1 });
  await assert.rejects(train(fresh), (e: unknown) => {
    assert.ok(e instanceof SelfreportError);
    assert.match(e.message, /^loss became (Infinity|NaN) at step 2 \(epoch 1\); no checkpoint was written before it; lower --lr and start again$/);
    return true;
  });
  assert.equal(existsSync(join(fresh.out, "checkpoint")), false);
  assert.equal(existsSync(join(fresh.out, "config.json")), false);

  // interrupted at step k, resumed with an absurd --lr: step k + 1 is fine, step k + 2 diverges
  const o = opts(linearData, { epochs: 2 });
  await train(o);
  const cut = { ...o, out: join(root, `run${counter++}`) };
  const k = await trainInterrupted(cut, 5);
  const ckParams = readFileSync(join(cut.out, "checkpoint", "params.safetensors"));
  const stepsPerEpoch = 12; // 192 training examples / 16
  await assert.rejects(train({ ...cut, resume: true, lr: 1e30, checkpointEvery: 1 }), (e: unknown) => {
    assert.ok(e instanceof SelfreportError);
    const epoch = Math.floor((k + 1) / stepsPerEpoch) + 1;
    assert.match(e.message, new RegExp(`^loss became (Infinity|NaN) at step ${k + 2} \\(epoch ${epoch}\\); the last good checkpoint \\(step ${k}\\) is in ${join(cut.out, "checkpoint").replace(/[.*+?^${}()|[\]\\/]/g, "\\$&")}; lower --lr and --resume$`));
    return true;
  });
  assert.ok(readFileSync(join(cut.out, "checkpoint", "params.safetensors")).equals(ckParams), "the good checkpoint's weights are kept");
  assert.equal(stateStep(cut.out), k);
  // the advice works: resuming with the original --lr finishes as the uninterrupted run did
  await train({ ...cut, resume: true });
  assertSameRun(o.out, cut.out, "resume after divergence");
});

test("a dataset of another model, or a checkpoint of another dataset, is refused", async () => {
  const o = opts(neuronData, { model: otherModelDir });
  await assert.rejects(train(o), (e: unknown) => {
    assert.ok(e instanceof SelfreportError);
    assert.equal(e.message, `dataset ${neuronData} was built from model ${neuronDs.meta.model_dir}, not ${otherModelDir}; rebuild the dataset for this model or drop --model`);
    return true;
  });
  // a checkpoint made on the neuron-5 dataset, resumed on a neuron-6 dataset
  const n6 = join(root, "neuron6.safetensors");
  writeSyntheticDataset(n6, modelDir, { n: 120, seed: 1, neuron: 6 });
  const cut = opts(neuronData, { epochs: 2 });
  await trainInterrupted(cut, 3);
  await assert.rejects(train({ ...cut, data: n6, resume: true }), (e: unknown) => {
    assert.ok(e instanceof SelfreportError);
    assert.ok(e.message.startsWith(`--resume: the checkpoint in ${join(cut.out, "checkpoint")} was made with other settings or another dataset (`), e.message);
    assert.ok(e.message.includes('"neuron":5'), e.message);
    return true;
  });
});

test("an unfrozen run on a model directory without tokenizer files fails before training, not after", async () => {
  const data = join(root, "other.safetensors");
  writeSyntheticDataset(data, otherModelDir, { n: 60, seed: 5 });
  const o = opts(data, { freeze: "unfrozen" });
  await assert.rejects(train(o), (e: unknown) => {
    assert.ok(e instanceof SelfreportError);
    assert.equal(e.message, `${otherModelDir}: no tokenizer files (vocab.json + merges.txt or tokenizer.json); --freeze unfrozen saves them beside the fine-tuned model`);
    return true;
  });
  assert.equal(existsSync(join(o.out, "train_log.jsonl")), false, "no step was run");
});

test("option errors: unknown head or freeze mode, partial without K, K too large, existing run, constant target", async () => {
  const expectError = async (o: TrainOptions, message: string): Promise<void> => {
    await assert.rejects(train(o), (e: unknown) => {
      assert.ok(e instanceof SelfreportError, String(e));
      assert.equal(e.message, message);
      return true;
    });
  };
  await expectError(opts(neuronData, { freeze: "thawed" as TrainOptions["freeze"] }), '--freeze must be one of frozen, unfrozen, partial; got "thawed"');
  await expectError(opts(neuronData, { head: "ridge" as TrainOptions["head"] }), 'unknown head "ridge"; expected one of regression, classification, token');
  await expectError(opts(neuronData, { freeze: "partial" }), "--freeze partial needs --unfreeze-last K (a positive number of blocks), got null");
  await expectError(opts(neuronData, { unfreezeLast: 1 }), "--unfreeze-last only applies to --freeze partial (got --freeze frozen)");
  await expectError(opts(neuronData, { freeze: "partial", unfreezeLast: 3 }), "--unfreeze-last 3 is more than the 2 blocks up to the feature layer 1");
  await expectError(opts(neuronData, { freeze: "partial", unfreezeLast: 2, featureLayer: 0 }), "--unfreeze-last 2 is more than the 1 blocks up to the feature layer 0");
  await expectError(opts(neuronData, { featureLayer: 2 }), "--feature-layer 2 is out of range: the model has 2 layers (0..1)");
  await expectError(opts(neuronData, { epochs: 0 }), "--epochs must be a positive integer, got 0");
  await expectError(opts(neuronData, { lr: 0 }), "--lr must be positive, got 0");
  const existing = opts(neuronData, { epochs: 1 });
  await train(existing);
  await expectError({ ...existing }, `--out ${existing.out} already holds a run; pass --force to replace it, --resume to continue it, or choose another --out`);
  await expectError({ ...existing, resume: true }, `--resume: no checkpoint in ${join(existing.out, "checkpoint")}`);
  // a dead neuron: every target equal
  const flat = join(root, "flat.safetensors");
  const ds = writeSyntheticDataset(flat, modelDir, { n: 60, seed: 3 });
  ds.targets.fill(0.25);
  ds.meta = { ...ds.meta, stats: activationStats(ds.targets.filter((_, i) => ds.split[i] === 0)) };
  writeDataset(flat, ds, () => "");
  await expectError(opts(flat), "the target activation is constant (0.25) on the training split: nothing to predict; choose another neuron");
});

test("token head on a tiny vocabulary trains and reports bin accuracy against binOf of the targets", async () => {
  const o = opts(neuronData, { head: "token", epochs: 2, lr: 1e-3 });
  const r = await train(o);
  const run = loadRun(o.out);
  assert.deepEqual(run.config.head_config.digit_tokens, [15, 16, 17, 18, 19, 20, 21, 22, 23, 24]);
  // accuracy by hand: argmax of the head on ln_final(features) vs the target's bin
  const testIdx = splitIndices(neuronDs, "test");
  const X = ownFeatures(baseModel, neuronDs, testIdx, 1);
  const W = run.head.get("output.weight")!.data;
  const b = run.head.get("output.bias")!.data;
  const lnW = baseModel.p("ln_final.w").data;
  const lnB = baseModel.p("ln_final.b").data;
  let correct = 0;
  const centres = binCentres(run.config.bin_edges);
  const preds: number[] = [];
  testIdx.forEach((i, r0) => {
    const x = X.subarray(r0 * C, (r0 + 1) * C);
    const mu = x.reduce((s, v) => s + v, 0) / C;
    const sd = Math.sqrt(x.reduce((s, v) => s + (v - mu) ** 2, 0) / C + baseModel.cfg.lnEps);
    const logits = Array.from({ length: 10 }, (_, d) => {
      let s = b[d]!;
      for (let c = 0; c < C; c++) s += W[d * C + c]! * (((x[c]! - mu) / sd) * lnW[c]! + lnB[c]!);
      return s;
    });
    const arg = logits.indexOf(Math.max(...logits));
    if (arg === binOf(neuronDs.targets[i]!, run.config.bin_edges)) correct++;
    const mx = Math.max(...logits);
    const e = logits.map((l) => Math.exp(l - mx));
    const z = e.reduce((s, v) => s + v, 0);
    preds.push(e.reduce((s, v, k) => s + (v / z) * centres[k]!, 0));
  });
  assert.equal(r.test.accuracy, correct / testIdx.length);
  const hm = handMetrics(preds, Float64Array.from(testIdx, (i) => neuronDs.targets[i]!));
  close(r.test.mse, hm.mse, 1e-4, "token head test mse");
});
