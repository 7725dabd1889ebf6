/**
 * Known-answer tests of the weights analysis on tiny hand-written runs (test/helpers/run-fixture.ts):
 * heads planted on a neuron's vectors must score cosine 1 and rank 1, a random head must look like
 * the null, and each piece of math is checked against an independent float64 computation.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { existsSync, readFileSync, unlinkSync } from "node:fs";
import { join } from "node:path";
import { Rng } from "../../src/tensor/index.ts";
import { loadAnalysisContext } from "../../src/analysis/context.ts";
import {
  weightsAnalysis, weightsPlots, headGradients, activationPattern, whitener, foldedReader, exampleIndices, targetPattern,
  randomFilterPatternCosines, empiricalNull, type WeightsSummary,
} from "../../src/analysis/weights.ts";
import { weightsVerdict } from "../../src/report/verdicts.ts";
import * as la from "../../src/analysis/linalg.ts";
import { readDataset, writeDataset } from "../../src/selfreport/dataset.ts";
import { cachedFeatures, computeFeatures } from "../../src/selfreport/features.ts";
import { binCentres } from "../../src/selfreport/stats.ts";
import { loadRun } from "../../src/selfreport/run.ts";
import { runCapture } from "../helpers/cli.ts";
import { makeTinyRun, tinyRunFolder, type TinyRunOptions } from "../helpers/run-fixture.ts";
import { close } from "../helpers/close.ts";

const { root, tinyRun } = tinyRunFolder("weights");
let counter = 0; // for output folders

function analyse(opts: TinyRunOptions = {}, maxExamples?: number): { s: WeightsSummary; fx: ReturnType<typeof makeTinyRun> } {
  const fx = tinyRun(opts);
  const ctx = loadAnalysisContext(fx.runDir);
  return { s: weightsAnalysis(ctx, maxExamples === undefined ? {} : { maxExamples }), fx };
}


test("regression head planted on W_in[:, n]: cosine 1 and rank 1 in the layer and overall", () => {
  const { s } = analyse({ plantedDirection: "W_in" });
  const r = s.reading.W_in_raw!;
  close(r.cosine, 1, 1e-5, "cosine with W_in");
  assert.equal(r.rank_in_layer, 1);
  assert.equal(r.rank_overall, 1);
  assert.equal(r.n_in_layer, 64);
  assert.equal(r.n_overall, 128);
  close(r.z, 4, 1e-4, "z = cosine·√16");
  close(s.null_model.std, 0.25, 1e-15, "null std 1/√16");
  assert.equal(s.head.method.startsWith("output.weight row"), true);
  assert.equal(s.gradient.principal.length, 0, "a linear regression head has a constant gradient");
  close(s.gradient.mean_share, 1, 1e-6, "constant gradient: mean share 1");
});

test("regression head planted on W_out[n, :]: cosine 1 and rank 1; the direct-write share matches a float64 recomputation", () => {
  const { s, fx } = analyse({ plantedDirection: "W_out" });
  const r = s.reading.W_out!;
  close(r.cosine, 1, 1e-5, "cosine with W_out");
  assert.equal(r.rank_in_layer, 1);
  assert.equal(r.rank_overall, 1);
  assert.ok(s.pattern.comparisons.W_out !== undefined && s.whitened.cosines.W_out !== undefined);

  // independent: prediction = (w·x + b)·std + mean in float64 on features from computeFeatures
  const C = 16;
  const X = computeFeatures(fx.runModel, fx.dataset, fx.config.feature_layer).data;
  const w = fx.head.get("output.weight")!.data;
  const b = fx.head.get("output.bias")!.data[0]!;
  const std = fx.config.activation_std;
  const pred = Array.from({ length: fx.dataset.meta.n }, (_, i) => (la.dot(w, X.subarray(i * C, (i + 1) * C)) + b) * std + fx.config.activation_mean);
  const wOut = fx.planted!;
  const share = (la.dot(w, wOut) * std) ** 2 * la.variance(fx.dataset.targets) / la.variance(pred);
  close(s.direct_write.share!, share, 1e-4 * share, "direct-write share");
  close(s.direct_write.w_dot_write!, la.dot(w, wOut) * std, 1e-6 * Math.abs(la.dot(w, wOut) * std), "ḡ·W_out = std·w·W_out");
});

test("a random head (seeded) scores like the null: |z| < 4 for every vector, reading and pattern", () => {
  const { s } = analyse({ seed: 7 });
  for (const kind of s.vectors) {
    for (const [what, c] of [["reading", s.reading[kind]!], ["pattern", s.pattern.comparisons[kind]!]] as const) {
      assert.ok(Math.abs(c.z) < 4, `${what} ${kind}: z ${c.z}`);
      assert.ok(c.rank_in_layer >= 1 && c.rank_in_layer <= c.n_in_layer);
    }
  }
});

test("classification head with rows (centre_i − c̄)·planted + a shared shift: cosine 1 (the centring removes the shift)", () => {
  const { s, fx } = analyse({ head: "classification", plantedDirection: "W_out", shift: 3 });
  close(s.reading.W_out!.cosine, 1, 1e-5, "centred direction vs W_out");
  assert.equal(s.reading.W_out!.rank_in_layer, 1);
  // without the centring the shift dominates: Σ_i centre_i·W_i is far from the planted direction
  const W = fx.head.get("output.weight")!.data;
  const centres = binCentres(fx.config.bin_edges);
  const raw = new Float64Array(16);
  centres.forEach((c, i) => { for (let k = 0; k < 16; k++) raw[k]! += c * W[i * 16 + k]!; });
  assert.ok(Math.abs(la.cosine(raw, fx.planted!)) < 0.99, `uncentred cosine ${la.cosine(raw, fx.planted!)} should not be 1`);
  assert.equal(s.gradient.principal.length, 3, "a softmax head's gradient varies: 3 principal directions");
});

test("token head planted through an ln_final with non-unit weights: cosine 1 only with ln_final's scale folded", () => {
  const rng = new Rng(11);
  const lnFinalW = Float32Array.from({ length: 16 }, () => 0.3 + 2 * rng.uniform());
  const { s, fx } = analyse({ head: "token", plantedDirection: "W_in_folded", lnFinalW });
  close(s.reading.W_in_folded!.cosine, 1, 1e-5, "folded token direction vs folded W_in");
  assert.equal(s.reading.W_in_folded!.rank_in_layer, 1);
  assert.equal(s.reading.W_in_folded!.rank_overall, 1);
  assert.ok(s.head.cosine_unfolded_vs_folded !== null && s.head.cosine_unfolded_vs_folded < 0.99, `unfolded vs folded ${s.head.cosine_unfolded_vs_folded}`);
  // the same rows read without the fold: Σ_i (centre_i − c̄)·W_i is not the planted direction
  const W = fx.head.get("output.weight")!.data;
  const centres = binCentres(fx.config.bin_edges);
  const cbar = centres.reduce((a, b) => a + b, 0) / 10;
  const unfolded = new Float64Array(16);
  centres.forEach((c, i) => { for (let k = 0; k < 16; k++) unfolded[k]! += (c - cbar) * W[i * 16 + k]!; });
  assert.ok(la.cosine(la.centred(unfolded), fx.planted!) < 0.99, `unfolded cosine ${la.cosine(la.centred(unfolded), fx.planted!)}`);
});

test("hidden-layer head: per-example gradients and their mean equal float64 finite differences of an independent head", () => {
  const fx = tinyRun({ hiddenDim: 8, activation: "tanh", seed: 3 });
  const run = loadRun(fx.runDir);
  const N = fx.dataset.meta.n;
  const C = 16;
  const X = computeFeatures(fx.runModel, fx.dataset, fx.config.feature_layer).data;
  const { grads, pred } = headGradients(run, fx.runModel, X, N);
  const W1 = fx.head.get("hidden.weight")!.data; // [8, C]
  const b1 = fx.head.get("hidden.bias")!.data;
  const W2 = fx.head.get("output.weight")!.data; // [1, 8]
  const b2 = fx.head.get("output.bias")!.data[0]!;
  const { activation_std: std, activation_mean: mean } = fx.config;
  const f = (x: Float64Array): number => {
    let z = b2;
    for (let h = 0; h < 8; h++) z += W2[h]! * Math.tanh(b1[h]! + la.dot(W1.subarray(h * C, (h + 1) * C), x));
    return z * std + mean;
  };
  const fdMean = new Float64Array(C);
  let worst = 0;
  let scale = 0;
  const eps = 1e-5;
  for (let i = 0; i < N; i++) {
    const x = Float64Array.from(X.subarray(i * C, (i + 1) * C));
    close(pred[i]!, f(x), 1e-6 * Math.abs(std) + 1e-7, `prediction ${i}`);
    for (let c = 0; c < C; c++) {
      const xp = x.slice();
      const xm = x.slice();
      xp[c]! += eps;
      xm[c]! -= eps;
      const g = (f(xp) - f(xm)) / (2 * eps);
      fdMean[c]! += g / N;
      worst = Math.max(worst, Math.abs(grads[i * C + c]! - g));
      scale = Math.max(scale, Math.abs(g));
    }
  }
  assert.ok(worst <= 1e-4 * scale, `worst per-example gradient difference ${worst} (scale ${scale})`);
  const s = weightsAnalysis(loadAnalysisContext(fx.runDir));
  assert.ok(la.cosine(s.head.direction, fdMean) > 1 - 1e-6, `direction vs finite-difference mean gradient: ${la.cosine(s.head.direction, fdMean)}`);
  close(s.gradient.mean_norm, la.norm(fdMean), 1e-4 * la.norm(fdMean), "|ḡ|");
  assert.equal(s.gradient.principal.length, 3);
  const total = s.gradient.principal.reduce((a, p) => a + p.explained_variance_ratio, 0);
  assert.ok(total > 0 && total <= 1 + 1e-9, `explained variance ratios sum to ${total}`);
  assert.ok(s.head.method.includes("hidden layer"));
});

test("activation pattern: equals w (up to scale) on isotropic features, and Σw/(wᵀΣw) by hand", () => {
  // rows ±e_j: mean 0, Σ = I/C exactly
  const C = 6;
  const X = new Float64Array(2 * C * C);
  for (let j = 0; j < C; j++) {
    X[(2 * j) * C + j] = 1;
    X[(2 * j + 1) * C + j] = -1;
  }
  const S = la.covariance(X, 2 * C, C);
  const w = Float64Array.from([0.3, -1, 2, 0, 0.5, 1]);
  const a = activationPattern(S, C, w);
  close(la.cosine(a, w), 1, 1e-14, "pattern ∥ w");
  // hand: rows (1, 1), (−1, −1), (1, 0), (−1, 0): Σ = [[1, .5], [.5, .5]]; w = (0, 1) → a = (.5, .5)/.5 = (1, 1)
  const S2 = la.covariance([1, 1, -1, -1, 1, 0, -1, 0], 4, 2);
  const a2 = activationPattern(S2, 2, [0, 1]);
  close(a2[0]!, 1, 1e-15, "a[0]");
  close(a2[1]!, 1, 1e-15, "a[1]");
});

test("whitening: identity covariance leaves cosines unchanged; readings are invariant; writers get unit covariance", () => {
  const C = 5;
  const I = new Float64Array(C * C);
  for (let i = 0; i < C; i++) I[i * C + i] = 2; // isotropic (any scale)
  const wh = whitener(I, C, 0.01);
  const rng = new Rng(5);
  const u = Float64Array.from({ length: C }, () => rng.normal());
  const v = Float64Array.from({ length: C }, () => rng.normal());
  close(la.cosine(wh.reader(u), wh.writer(v)), la.cosine(u, v), 1e-14, "reader vs writer");
  close(la.cosine(wh.reader(u), wh.reader(v)), la.cosine(u, v), 1e-14, "reader vs reader");
  close(la.cosine(wh.writer(u), wh.writer(v)), la.cosine(u, v), 1e-14, "writer vs writer");
  // anisotropic data: (Lᵀw)·(L⁻¹x) = w·x, and the whitened data has covariance I/(1 + ridge)
  const n = 400;
  const X = new Float64Array(n * C);
  for (let i = 0; i < n; i++) {
    const z = Float64Array.from({ length: C }, () => rng.normal());
    for (let c = 0; c < C; c++) X[i * C + c] = z[c]! * (c + 1) + (c > 0 ? 3 * z[0]! : 0);
  }
  const S = la.covariance(X, n, C);
  const ridge = 1e-9;
  const w2 = whitener(S, C, ridge);
  const x0 = X.subarray(0, C);
  close(la.dot(w2.reader(u), w2.writer(x0)), la.dot(u, x0), 1e-9, "reading invariant");
  const Xw = new Float64Array(n * C);
  for (let i = 0; i < n; i++) Xw.set(w2.writer(X.subarray(i * C, (i + 1) * C)), i * C);
  const Sw = la.covariance(Xw, n, C);
  for (let i = 0; i < C; i++) for (let j = 0; j < C; j++) close(Sw[i * C + j]!, i === j ? 1 : 0, 1e-6, `whitened covariance [${i}, ${j}]`);
});

test("mlp_out target: compared with e_n, W_in/W_out skipped with a note; a head planted on e_n has cosine 1, rank 1", () => {
  const e = new Float32Array(16);
  e[5] = 1;
  const { s } = analyse({ layerType: "mlp_out", neuron: 5, plantedDirection: e });
  assert.deepEqual(s.vectors, ["e_n"]);
  assert.equal(s.reading.W_out, undefined);
  assert.equal(s.w_in, null);
  assert.equal(s.w_out_pca, null);
  close(s.reading.e_n!.cosine, 1, 1e-6, "cosine with e_n");
  assert.equal(s.reading.e_n!.rank_in_layer, 1);
  assert.equal(s.reading.e_n!.n_in_layer, 16);
  assert.equal(s.reading.e_n!.rank_overall, null);
  assert.ok(s.notes.some((n) => n.includes("mlp_out") && n.includes("e_5")), s.notes.join(" | "));
  assert.equal(s.direct_write.applicable, true);
});

test("tl-processed run: ln2 detected as folded, W_in_raw = W_in_folded; raw run with random LayerNorms: not folded", () => {
  const tl = analyse({ weights: "tl", plantedDirection: "W_in", randomLn: true }).s;
  assert.equal(tl.w_in!.ln2_already_folded, true);
  close(tl.reading.W_in_raw!.cosine, tl.reading.W_in_folded!.cosine, 1e-6, "raw = folded under tl");
  close(tl.reading.W_in_folded!.cosine, 1, 1e-5, "planted");
  const raw = analyse({ weights: "raw", plantedDirection: "W_in_folded", randomLn: true });
  assert.equal(raw.s.w_in!.ln2_already_folded, false);
  close(raw.s.reading.W_in_folded!.cosine, 1, 1e-5, "planted on the folded W_in");
  assert.ok(raw.s.reading.W_in_raw!.cosine < 0.999, `raw W_in differs from folded: ${raw.s.reading.W_in_raw!.cosine}`);
  // foldedReader is centre(ln2.w ⊙ W_in): columns have mean 0
  const F = foldedReader(raw.fx.runModel, 1);
  let colSum = 0;
  for (let c = 0; c < 16; c++) colSum += F[c * 64 + 5]!;
  close(colSum, 0, 1e-12, "folded column mean");
});

test("features: the frozen cache gives the same numbers as computing them; unfrozen runs use the fine-tuned model", () => {
  const fx = tinyRun({ plantedDirection: "W_out", seed: 2 });
  const computed = weightsAnalysis(loadAnalysisContext(fx.runDir));
  assert.equal(computed.examples.features, "computed with the base model");
  const ctx = loadAnalysisContext(fx.runDir);
  cachedFeatures(ctx.model, fx.modelDir, ctx.ds, fx.datasetPath, fx.config.feature_layer, fx.config.weights);
  const cached = weightsAnalysis(loadAnalysisContext(fx.runDir));
  assert.equal(cached.examples.features, "frozen feature cache");
  close(cached.pattern.comparisons.W_out!.cosine, computed.pattern.comparisons.W_out!.cosine, 1e-6, "pattern cosine");
  close(cached.direct_write.share!, computed.direct_write.share!, 1e-6 * computed.direct_write.share!, "direct-write share");

  const un = analyse({ freeze: "unfrozen", plantedDirection: "W_out" }).s;
  assert.equal(un.examples.features, "computed with the fine-tuned model");
  close(un.reading.W_out!.cosine, 1, 1e-5, "planted on the fine-tuned model's W_out");
  assert.ok(un.notes.some((n) => n.includes("fine-tuned")));
});

test("--max-examples subsamples evenly (features as computeFeatures'); a feature layer before the target layer makes the direct write n/a", () => {
  const { s, fx } = analyse({ plantedDirection: "W_out", featureLayer: 0 }, 10);
  assert.equal(s.examples.n_used, 10);
  assert.equal(s.direct_write.applicable, false);
  assert.equal(s.direct_write.share, null);
  assert.ok(s.notes.some((n) => n.includes("10 of 96")));
  // the prediction variance over the chosen examples, recomputed from computeFeatures' features in float64
  const idx = exampleIndices(96, 10);
  assert.deepEqual(idx, [0, 9, 19, 28, 38, 48, 57, 67, 76, 86]);
  const X = computeFeatures(fx.runModel, fx.dataset, 0).data;
  const w = fx.head.get("output.weight")!.data;
  const pred = idx.map((i) => la.dot(w, X.subarray(i * 16, (i + 1) * 16)) * fx.config.activation_std);
  close(s.direct_write.var_prediction, la.variance(pred), 1e-4 * la.variance(pred), "Var(prediction) over the subsample");
  close(s.direct_write.var_activation, la.variance(idx.map((i) => fx.dataset.targets[i]!)), 1e-12, "Var(activation) over the subsample");
});

test("errors: no head.safetensors; a dataset of another neuron (both named); --max-examples ≤ 0", () => {
  const fx = tinyRun();
  const ctx = loadAnalysisContext(fx.runDir);
  assert.throws(() => weightsAnalysis(ctx, { maxExamples: 0 }), /--max-examples must be a positive integer, got 0/);
  assert.throws(() => weightsAnalysis(ctx, { maxExamples: -3 }), /--max-examples must be a positive integer, got -3/);

  const ds = readDataset(fx.datasetPath);
  ds.meta.neuron = 6;
  const other = join(root, `other-neuron-${counter++}.safetensors`);
  writeDataset(other, ds, (ids) => ids.join(" "));
  assert.throws(() => loadAnalysisContext(fx.runDir, other), (e: Error) => {
    assert.match(e.message, /neuron 6/);
    assert.match(e.message, /run's 5/);
    assert.ok(e.message.includes(other) && e.message.includes(fx.runDir), e.message);
    return true;
  });

  unlinkSync(join(fx.runDir, "head.safetensors"));
  assert.throws(() => loadAnalysisContext(fx.runDir), /head\.safetensors is missing/);
});

test("plots: SVGs for the histograms and the W_out PCA; the CLI writes summary.json and them, and refuses --max-examples 0", async () => {
  const fx = tinyRun({ plantedDirection: "W_out", seed: 4 });
  const s = weightsAnalysis(loadAnalysisContext(fx.runDir));
  const plots = await weightsPlots(s);
  assert.deepEqual(Object.keys(plots).sort(), ["pattern_vs_W_out", "reading_vs_W_in", "reading_vs_W_out", "w_out_pca"]);
  for (const [name, svg] of Object.entries(plots)) assert.ok(svg.includes("<svg"), `${name} is not an SVG`);
  assert.equal(s.w_out_pca!.points.length, 64);
  assert.equal(s.layer_cosines["reading_W_out"]!.length, 64);

  const out = join(root, `out${counter++}`);
  const ok = await runCapture(["analyze", "weights", "--run", fx.runDir, "--out", out, "--max-examples", "50"]);
  assert.equal(ok.code, 0, ok.lines.join("\n"));
  const bad = await runCapture(["analyze", "weights", "--run", fx.runDir, "--out", out, "--max-examples", "0"]);
  assert.equal(bad.code, 1);
  const logs = bad.lines;
  assert.equal(logs.length, 1, logs.join("\n"));
  assert.match(logs[0]!, /^selfreport: error: --max-examples must be a positive integer, got 0$/);
  const summary = JSON.parse(readFileSync(join(out, "summary.json"), "utf8")) as WeightsSummary & { analysis: string; plots: string[] };
  assert.equal(summary.analysis, "weights");
  assert.equal(summary.examples.n_used, 50);
  close(summary.reading.W_out!.cosine, 1, 1e-5, "summary.json cosine");
  for (const p of summary.plots) assert.ok(existsSync(join(out, p)), `${p} written`);
});

// ---------------------------------------------------------------------------------------------
// The verdict "does the head read what the neuron writes?" on planted heads, both directions

/** A head that predicts the activation as well as a linear read-out can while being exactly orthogonal to W_out[n, :]. */
function predictiveOrthogonalHead(opts: TinyRunOptions): { w: Float32Array; wOut: Float64Array } {
  const probe = tinyRun(opts); // same seeds → the same model and data as the planted run below
  const C = probe.model.cfg.dModel;
  const N = probe.dataset.meta.n;
  const X = computeFeatures(probe.runModel, probe.dataset, probe.config.feature_layer).data;
  const M = probe.model.cfg.dMlp;
  const n = probe.config.target_neuron;
  const Wout = probe.model.W_out(probe.config.target_layer).data;
  const u = la.unit(Float64Array.from({ length: C }, (_, c) => Wout[n * C + c]!));
  assert.equal(Wout.length, M * C);
  // P x with P = I − u uᵀ, then ridge regression of act on it: w = Σ_k (v_k·Pc) / (λ_k + ε) v_k stays ⟂ u
  const PX = new Float64Array(N * C);
  for (let i = 0; i < N; i++) {
    const x = X.subarray(i * C, (i + 1) * C);
    const xu = la.dot(x, u);
    for (let c = 0; c < C; c++) PX[i * C + c] = x[c]! - xu * u[c]!;
  }
  const S = la.covariance(PX, N, C);
  const cov = la.scaled(targetPattern(PX, probe.dataset.targets, N, C), la.variance(probe.dataset.targets) * (N - 1) / N);
  const { values, vectors } = la.symEig(S, C);
  const eps = 1e-6 * values[0]!;
  const w = new Float64Array(C);
  values.forEach((lam, k) => {
    const v = vectors[k]!;
    const coef = la.dot(v, cov) / (lam + eps);
    for (let c = 0; c < C; c++) w[c]! += coef * v[c]!;
  });
  const wu = la.dot(w, u);
  for (let c = 0; c < C; c++) w[c]! -= wu * u[c]!; // remove round-off along u
  return { w: Float32Array.from(w), wOut: u };
}

test("verdict, planted both ways: a predictive head orthogonal to W_out[n, :] → no; planted on W_out → yes; random → no", () => {
  // d_model 32: a perfect cosine is z = √32 ≈ 5.7 (with 16 it would be exactly 4, not beyond it); the neuron's write dominates its direction
  const opts: TinyRunOptions = { n: 240, perWindow: 4, seed: 3, writeScale: 30, model: { dModel: 32 } };
  const { w } = predictiveOrthogonalHead(opts);
  const orth = analyse({ ...opts, plantedDirection: w }).s;
  assert.ok(Math.abs(orth.reading.W_out!.cosine) < 1e-5, `filter cosine ${orth.reading.W_out!.cosine}`);
  assert.ok(orth.examples.prediction_activation_r > 0.7, `the orthogonal head must predict well: r ${orth.examples.prediction_activation_r}`);
  assert.ok(orth.direct_write.share! < 1e-8, `direct-write share ${orth.direct_write.share}`);
  // its pattern matches the head-free target pattern far beyond random filters, as any predictive head's does
  const nl = orth.pattern.random_filter_null.target_pattern;
  assert.ok(orth.pattern.cosine_with_target_pattern > 0.9, `pattern vs target pattern ${orth.pattern.cosine_with_target_pattern}`);
  assert.equal(nl.percentile_abs, 100);
  const vOrth = weightsVerdict(orth);
  assert.equal(vOrth.level, "no", vOrth.headline);
  assert.match(vOrth.evidence.join("\n"), /not evidence of reading/);

  const planted = analyse({ ...opts, plantedDirection: "W_out" }).s;
  assert.ok(planted.direct_write.share! >= 0.1, `planted direct-write share ${planted.direct_write.share}`);
  // without the boost, the same planted head reads mostly other neurons' writes along W_out[n, :]: partly, not yes
  const unboosted = analyse({ ...opts, writeScale: 1, plantedDirection: "W_out" }).s;
  assert.ok(unboosted.direct_write.share! < 0.1, `unboosted share ${unboosted.direct_write.share}`);
  assert.equal(weightsVerdict(unboosted).level, "partly");
  const vPlanted = weightsVerdict(planted);
  assert.equal(vPlanted.level, "yes", vPlanted.headline);

  for (const seed of [7, 8, 9]) {
    const rnd = analyse({ ...opts, seed }).s;
    const v = weightsVerdict(rnd);
    assert.equal(v.level, "no", `random head (seed ${seed}): ${v.headline}`);
  }
});

test("pattern null: random filters' patterns through Σ, seeded; the target pattern is Cov(x, act)/Var(act) by hand", () => {
  const rng = new Rng(5);
  const C = 6;
  const N = 400;
  const X = new Float64Array(N * C);
  const act = new Float64Array(N);
  for (let i = 0; i < N; i++) {
    for (let c = 0; c < C; c++) X[i * C + c] = rng.normal() * (1 + c);
    act[i] = 2 * X[i * C]! - X[i * C + 3]! + 0.1 * rng.normal();
  }
  const p = targetPattern(X, act, N, C);
  // by hand: Σ_i (x_i − x̄)(a_i − ā) / Σ_i (a_i − ā)²
  const xbar = la.columnMeans(X, N, C);
  const abar = act.reduce((a, b) => a + b, 0) / N;
  let va = 0;
  for (let i = 0; i < N; i++) va += (act[i]! - abar) ** 2;
  for (let c = 0; c < C; c++) {
    let s = 0;
    for (let i = 0; i < N; i++) s += (X[i * C + c]! - xbar[c]!) * (act[i]! - abar);
    close(p[c]!, s / va, 1e-12, `target pattern[${c}]`);
  }
  const S = la.covariance(X, N, C);
  const [a1] = randomFilterPatternCosines(S, C, [p], 50, 11);
  const [a2] = randomFilterPatternCosines(S, C, [p], 50, 11);
  assert.deepEqual(Array.from(a1!), Array.from(a2!), "seeded");
  // anisotropic Σ: random filters' patterns are not isotropic, so their cosines are not centred on 0 with std 1/√C
  const e0 = new Float64Array(C);
  e0[C - 1] = 1;
  const [toLargest] = randomFilterPatternCosines(S, C, [e0], 400, 1);
  const nl = empiricalNull(0, toLargest!);
  assert.ok(Math.abs(nl.mean) < 0.1 && nl.std > 1.5 / Math.sqrt(C), `the largest-variance axis attracts patterns: std ${nl.std} vs 1/√C ${1 / Math.sqrt(C)}`);
  const e = empiricalNull(0.5, [0.1, -0.2, 0.3, 0.6]);
  close(e.mean, 0.2, 1e-12, "mean");
  assert.equal(e.percentile_abs, 75);
});
