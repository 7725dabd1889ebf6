/**
 * Weights analysis: does the head read what the target neuron writes?
 *
 *   1. The head's reading direction w in the residual stream (resid_post of feature_layer):
 *        regression, no hidden layer   w = output.weight[0]
 *        classification                w = Σ_i (centre_i − c̄)·output.weight[i]       (softmax ignores a shared shift)
 *        token                         w[c] = Σ_i (centre_i − c̄)·W[i, c]·ln_final.w[c], then centred
 *                                      (ln_final's scale folded; its mean-subtraction removes the all-ones direction)
 *        with a hidden layer           w = mean over examples of ∂prediction/∂resid
 *      plus the per-example gradients g_i = ∂prediction_i/∂resid_i (activation units) and their top 3
 *      principal directions.
 *   2. w against the neuron's vectors W_in[:, n] (as loaded, and folded: centre(ln2.w ⊙ W_in[:, n])) and
 *      W_out[n, :]: cosine, z = cosine·√d_model (random directions: mean 0, std 1/√d_model), and the rank of
 *      |cosine| among every neuron of the target layer and of all layers (1 = highest).
 *   3. The activation pattern a = Σ w / (wᵀ Σ w) (Haufe et al., NeuroImage 2014), Σ = Cov(resid) over the
 *      dataset: what the prediction co-varies with. It is NOT evidence that the head reads anything: any head
 *      that predicts the activation well has a pattern ≈ the head-free target pattern p = Cov(x, act)/Var(act).
 *      So the pattern is compared with p, against an empirical null: the patterns of seeded random filters
 *      pushed through the same Σ. Also: cosines in the whitened basis (Σ + ridge)^{-1/2}; for a reader (W_in)
 *      the whitened cosine is the readout correlation corr(w·x, v·x) over the dataset.
 *   4. The share of the prediction's variance carried by the neuron's direct write:
 *      (ḡ·W_out[n, :])²·Var(act) / Var(prediction).
 *   5. A PCA of the target layer's W_out rows with the head direction projected.
 *
 * For an `mlp_out` target the "neuron" is residual dimension n: its vector is the unit vector e_n.
 * See docs/analyses/weights.md for what each number answers, and the summary.json schema.
 */
import { existsSync } from "node:fs";
import { Rng, Tensor, backward, noGrad, withGrad } from "../tensor/index.ts";
import type { HookedTransformer } from "../model/transformer.ts";
import { blockSpec } from "../model/config.ts";
import { SelfreportError } from "../errors.ts";
import { binCentres, pearson } from "../selfreport/stats.ts";
import { headForward, predictionTensor } from "../selfreport/predictor.ts";
import { cachedFeatures, featureCachePath } from "../selfreport/features.ts";
import { targetHookName, exampleBatch } from "../selfreport/dataset.ts";
import type { Run } from "../selfreport/run.ts";
import { histogram, scatter, renderSvg } from "../report/charts.ts";
import { runSteps, runStepsInterruptibly } from "../util/interrupt.ts";
import { padIdFor, type AnalysisContext } from "./context.ts";
import * as la from "./linalg.ts";

type Vec = la.Vec;

export interface WeightsOptions {
  /** Examples for the covariance, gradients and variances (evenly spaced over the dataset). Default 2000. */
  maxExamples?: number;
  /** Whitening ridge, as a fraction of the mean residual variance: Σ + ridge·(tr Σ / d_model)·I. Default 0.01. */
  ridge?: number;
  /** Random filters for the activation pattern's empirical null. Default 200. */
  nullFilters?: number;
  /** Seed of the random filters. Default 0. */
  seed?: number;
}

export const WEIGHTS_DEFAULTS = { maxExamples: 2000, ridge: 0.01, nullFilters: 200, seed: 0 } as const;

/** Mean and standard deviation of a sample of cosines, and where a value falls among them. */
export interface EmpiricalNull {
  mean: number;
  std: number;
  /** (value − mean) / std. */
  z: number;
  /** Percentage of the null's values with |cosine| strictly below |value|. */
  percentile_abs: number;
}

/** The neuron vectors a direction is compared with. */
export type VectorKind = "W_in_raw" | "W_in_folded" | "W_gate_raw" | "W_gate_folded" | "W_out" | "e_n";

/** The matrices an MLP neuron reads through: W_in, and for a gated MLP also W_gate (both [d_model, d_mlp]). */
export type ReaderMatrix = "W_in" | "W_gate";

export interface Comparison {
  cosine: number;
  /** cosine·√d_model: the cosine in units of the null's standard deviation. */
  z: number;
  /** Rank of this neuron's |cosine| among the n_in_layer candidates (1 = highest); for e_n among the d_model basis vectors. */
  rank_in_layer: number;
  n_in_layer: number;
  /** Rank among every neuron of every layer; null for e_n. */
  rank_overall: number | null;
  n_overall: number | null;
}

export interface PrincipalDirection {
  explained_variance_ratio: number;
  /** Cosines of the (sign-arbitrary) principal direction with the head direction and the neuron's vectors. */
  cosine_with_direction: number;
  cosine_with: Partial<Record<VectorKind, number>>;
}

export interface WeightsSummary {
  target: {
    layer: number; neuron: number; layer_type: string; hook: string; feature_layer: number;
    d_model: number; d_mlp: number; n_layers: number; weights: string; freeze_mode: string;
  };
  examples: { n_used: number; n_dataset: number; features: string; prediction_activation_r: number };
  null_model: { mean: number; std: number; description: string };
  head: {
    type: string; hidden_dim: number | null; method: string;
    /** The reading direction, unit length [d_model]. */
    direction: number[];
    /** For a token head: cosine of the direction without ln_final's scale with the folded one; else null. */
    cosine_unfolded_vs_folded: number | null;
  };
  gradient: {
    /** |ḡ|: prediction change (activation units) per unit of residual along the mean gradient. */
    mean_norm: number;
    /** |ḡ|² / mean |g_i|²: 1 when every example is read along the same direction. */
    mean_share: number;
    cosine_mean_with_direction: number;
    /** Top 3 principal directions of the per-example gradients (empty for a linear regression head, whose gradient is constant). */
    principal: PrincipalDirection[];
  };
  vectors: VectorKind[];
  w_in: {
    ln2_already_folded: boolean; note: string;
    /** The neuron reads ln2(resid_mid) of its own layer; the head reads resid_post of the feature layer. */
    spaces: string;
    /** corr(w·x, W_in_folded[:, n]·x) over the dataset's resid_post vectors x (the whitened cosine of two readers). */
    readout_correlation: number;
    /** The same for a gated MLP's W_gate_folded[:, n]; null for a plain MLP. */
    gate_readout_correlation: number | null;
    readout_note: string;
  } | null;
  reading: Partial<Record<VectorKind, Comparison>>;
  pattern: {
    /** Unit activation pattern Σw/(wᵀΣw) [d_model]: what the prediction co-varies with, not what the head reads. */
    direction: number[];
    note: string;
    /** Cosines and ranks against the neuron's vectors; their z uses the 1/√d null, which does not hold for patterns: see random_filter_null. */
    comparisons: Partial<Record<VectorKind, Comparison>>;
    /** The head-free target pattern p = Cov(x, act)/Var(act), unit [d_model]. */
    target_pattern: number[];
    /** cos(head pattern, target pattern), and the same for random filters' patterns. */
    cosine_with_target_pattern: number;
    /** Random filters r ~ N(0, I) (seeded), their patterns Σr/(rᵀΣr): the null for the pattern's cosines. */
    random_filter_null: {
      n: number; seed: number;
      target_pattern: EmpiricalNull;
      /** Per neuron vector: the null of cos(pattern, vector). */
      vectors: Partial<Record<VectorKind, EmpiricalNull>>;
    };
    /** cos(target pattern, the neuron's vectors): where the activation itself co-varies, whatever the head. */
    target_pattern_cosines: Partial<Record<VectorKind, number>>;
  };
  whitened: { ridge: number; cosines: Partial<Record<VectorKind, number>>; note: string };
  residual: { participation_ratio: number; top_pc_variance_ratio: number; mean_norm_share: number };
  direct_write: {
    applicable: boolean; note: string;
    w_dot_write: number | null; var_activation: number; var_prediction: number; share: number | null;
  };
  w_out_pca: {
    explained_variance_ratio: number[]; head_in_plane: number;
    head: [number, number]; target: [number, number]; points: Array<[number, number]>;
  } | null;
  /** Every candidate's cosine in the target layer (for the histograms), keyed "reading_W_out" etc. */
  layer_cosines: Record<string, number[]>;
  notes: string[];
}

// ---------------------------------------------------------------------------------------------
// Examples and features

/** At most `max` example indices, evenly spaced over 0..n-1. */
export function exampleIndices(n: number, max: number): number[] {
  const m = Math.min(n, max);
  return Array.from({ length: m }, (_, i) => Math.floor((i * n) / m));
}

/**
 * Residual features [N, C] of the chosen examples: the frozen feature cache when training left one,
 * else computed with the run's model. As in computeFeatures, examples cut from one text window share
 * their prefix, so one forward pass over the longest covers the others (causal attention: a position
 * never sees what follows it, so neither the longer suffix nor the right-padding changes it).
 */
function* featuresOf(ctx: AnalysisContext, idx: readonly number[]): Generator<void, { X: Float32Array; source: string }> {
  const c = ctx.run.config;
  const ds = ctx.ds;
  const { dModel: C } = ctx.model.cfg;
  const X = new Float32Array(idx.length * C);
  if (c.freeze_mode === "frozen" && existsSync(featureCachePath(ctx.datasetPath, c.feature_layer, c.weights))) {
    const all = cachedFeatures(ctx.model, c.base_model_dir, ds, ctx.datasetPath, c.feature_layer, c.weights).data;
    idx.forEach((i, j) => X.set(all.subarray(i * C, (i + 1) * C), j * C));
    return { X, source: "frozen feature cache" };
  }
  const groups = new Map<number, number[]>(); // window → rows j of X
  idx.forEach((i, j) => {
    const g = groups.get(ds.window[i]!);
    if (g) g.push(j);
    else groups.set(ds.window[i]!, [j]);
  });
  const list = [...groups.values()];
  const padId = padIdFor(ctx.model);
  for (let g0 = 0; g0 < list.length; g0 += 16) {
    noGrad(() => {
      const chunk = list.slice(g0, g0 + 16);
      const longest = chunk.map((rows) => idx[rows.reduce((a, b) => (ds.lengths[idx[b]!]! > ds.lengths[idx[a]!]! ? b : a))]!);
      const batch = exampleBatch(ds, longest, padId);
      const { resid } = ctx.model.forward(batch, { stopAtLayer: c.feature_layer + 1 }); // [B, T, C]
      chunk.forEach((rows, b) => {
        for (const j of rows) {
          const o = (b * batch.len + ds.positions[idx[j]!]!) * C;
          X.set(resid.data.subarray(o, o + C), j * C);
        }
      });
    });
    yield;
  }
  return { X, source: c.freeze_mode === "frozen" ? "computed with the base model" : "computed with the fine-tuned model" };
}

// ---------------------------------------------------------------------------------------------
// The head

/** Per-example gradients ∂prediction/∂resid [N, C] (activation units) and the predictions [N]. */
export function headGradients(run: Run, model: HookedTransformer, X: Float32Array, N: number): { grads: Vec; pred: Vec } {
  const C = run.config.head_config.input_dim;
  return withGrad(() => {
    const x = new Tensor(X.slice(), [N, C], true); //                       [N, C]
    const out = headForward(run.config.head_config, run.head, x, model); //  [N] or [N, K]
    const pred = predictionTensor(run.headType, out, run.readout); //        [N]
    // rows are independent (no dropout at inference), so one backward gives every row's gradient
    backward(pred, new Float32Array(N).fill(1));
    return { grads: Float64Array.from(x.grad!), pred: Float64Array.from(pred.data) };
  });
}

/** The head's static reading direction (see the file comment); `meanGradient` is used for hidden-layer heads. */
export function headDirection(run: Run, model: HookedTransformer, meanGradient: Vec): { direction: Vec; method: string; unfolded: Vec | null } {
  const cfg = run.config.head_config;
  const W = run.head.get("output.weight")!; // [out, in]
  const C = cfg.input_dim;
  if (cfg.hidden_dim !== null) {
    return { direction: meanGradient.slice(), method: "mean over the examples of ∂prediction/∂resid (the head has a hidden layer)", unfolded: null };
  }
  if (run.headType === "regression") {
    return { direction: Float64Array.from(W.data), method: "output.weight row (linear regression head)", unfolded: null };
  }
  const centres = binCentres(run.config.bin_edges);
  const K = W.shape[0]!;
  if (centres.length !== K) throw new SelfreportError(`${run.dir}: the head has ${K} classes but the run's bin_edges give ${centres.length} bins`);
  const cbar = centres.reduce((a, b) => a + b, 0) / K;
  const w = new Float64Array(C); // Σ_i (centre_i − c̄)·W[i, :]
  for (let i = 0; i < K; i++) for (let c = 0; c < C; c++) w[c]! += (centres[i]! - cbar) * W.data[i * C + c]!;
  if (run.headType === "classification") {
    return { direction: w, method: "Σ_i (centre_i − mean centre)·output.weight[i] (classification head; softmax ignores a shared shift)", unfolded: null };
  }
  const lnf = model.p("ln_final.w").data; // [C]
  const folded = la.centred(w.map((v, c) => v * lnf[c]!));
  return {
    direction: folded,
    method: "Σ_i (centre_i − mean centre)·output.weight[i] ⊙ ln_final.w, centred (token head read through ln_final)",
    unfolded: w,
  };
}

// ---------------------------------------------------------------------------------------------
// Neuron vectors and cosines with every neuron

/**
 * A reader of layer l (W_in, or a gated MLP's W_gate) with ln2 folded in → [C, M]: ln2.w[c]·W[c, m],
 * centred over d_model after a LayerNorm (which removes the mean before the weight); an RMSNorm
 * removes no mean, so nothing is centred.
 */
export function foldedReader(model: HookedTransformer, l: number, which: ReaderMatrix = "W_in"): Vec {
  const { dModel: C, dMlp: M } = model.cfg;
  const W = (which === "W_in" ? model.W_in(l) : model.W_gate(l)).data;
  const s = model.ln2W(l).data;
  const F = new Float64Array(C * M);
  const mean = new Float64Array(M);
  for (let c = 0; c < C; c++) for (let m = 0; m < M; m++) {
    const v = s[c]! * W[c * M + m]!;
    F[c * M + m] = v;
    mean[m]! += v / C;
  }
  if (blockSpec(model.cfg).normalizationType === "LN") for (let c = 0; c < C; c++) for (let m = 0; m < M; m++) F[c * M + m]! -= mean[m]!;
  return F;
}

/**
 * Whether the model's ln2 is already folded into its readers (tl weights): ln2.w = 1, and for a
 * LayerNorm also ln2.b = 0 and the W_in columns centred (an RMSNorm has no bias and centres nothing).
 */
export function ln2AlreadyFolded(model: HookedTransformer): boolean {
  const { nLayers, dModel: C, dMlp: M } = model.cfg;
  const rms = blockSpec(model.cfg).normalizationType === "RMS";
  for (let l = 0; l < nLayers; l++) {
    if (model.ln2W(l).data.some((v) => v !== 1)) return false;
    if (rms) continue;
    if (model.p(`blocks.${l}.ln2.b`).data.some((v) => v !== 0)) return false;
    const W = model.W_in(l).data;
    for (let m = 0; m < M; m++) {
      let s = 0;
      let ss = 0;
      for (let c = 0; c < C; c++) {
        s += W[c * M + m]!;
        ss += W[c * M + m]! ** 2;
      }
      if (Math.abs(s / C) > 1e-4 * Math.sqrt(ss / C) + 1e-12) return false;
    }
  }
  return true;
}

/** One layer's neuron vectors of a kind as a matrix and its layout: "cols" [C, M] (W_in) or "rows" [M, C] (W_out). */
function layerMatrix(model: HookedTransformer, kind: Exclude<VectorKind, "e_n">, l: number): { A: ArrayLike<number>; layout: "cols" | "rows" } {
  if (kind === "W_in_raw") return { A: model.W_in(l).data, layout: "cols" };
  if (kind === "W_in_folded") return { A: foldedReader(model, l, "W_in"), layout: "cols" };
  if (kind === "W_gate_raw") return { A: model.W_gate(l).data, layout: "cols" };
  if (kind === "W_gate_folded") return { A: foldedReader(model, l, "W_gate"), layout: "cols" };
  return { A: model.W_out(l).data, layout: "rows" };
}

/** cos(u, v_m) for every neuron m of layer l → [M]. */
function layerCosines(model: HookedTransformer, kind: Exclude<VectorKind, "e_n">, l: number, u: Vec): Vec {
  const { dModel: C, dMlp: M } = model.cfg;
  const { A, layout } = layerMatrix(model, kind, l);
  const dots = new Float64Array(M);
  const sq = new Float64Array(M);
  if (layout === "cols") {
    for (let c = 0; c < C; c++) for (let m = 0; m < M; m++) {
      const v = A[c * M + m]!;
      dots[m]! += u[c]! * v;
      sq[m]! += v * v;
    }
  } else {
    for (let m = 0; m < M; m++) for (let c = 0; c < C; c++) {
      const v = A[m * C + c]!;
      dots[m]! += u[c]! * v;
      sq[m]! += v * v;
    }
  }
  const nu = la.norm(u);
  return dots.map((d, m) => (nu === 0 || sq[m] === 0 ? 0 : d / (nu * Math.sqrt(sq[m]!))));
}

/** The target neuron's vector of a kind [C]. */
export function neuronVector(model: HookedTransformer, kind: VectorKind, l: number, n: number): Vec {
  const { dModel: C, dMlp: M } = model.cfg;
  if (kind === "e_n") {
    const e = new Float64Array(C);
    e[n] = 1;
    return e;
  }
  const { A, layout } = layerMatrix(model, kind, l);
  return Float64Array.from({ length: C }, (_, c) => (layout === "cols" ? A[c * M + n]! : A[n * C + c]!));
}

/** 1 + the number of candidates whose |cosine| is strictly larger than the target's. */
function rankOf(target: number, all: ArrayLike<number>): number {
  let r = 1;
  for (let i = 0; i < all.length; i++) if (Math.abs(all[i]!) > Math.abs(target)) r++;
  return r;
}

/** Compares direction u with the target neuron's vector of a kind; also returns the target layer's cosines. */
export function compare(model: HookedTransformer, kind: VectorKind, layer: number, neuron: number, u: Vec): { cmp: Comparison; inLayer: Vec } {
  const C = model.cfg.dModel;
  if (kind === "e_n") {
    const inLayer = la.unit(u); // cos(u, e_j) = u_j / |u|
    const cos = inLayer[neuron]!;
    return { cmp: { cosine: cos, z: cos * Math.sqrt(C), rank_in_layer: rankOf(cos, inLayer), n_in_layer: C, rank_overall: null, n_overall: null }, inLayer };
  }
  const perLayer = Array.from({ length: model.cfg.nLayers }, (_, l) => layerCosines(model, kind, l, u));
  const inLayer = perLayer[layer]!;
  const cos = inLayer[neuron]!;
  let overall = 1;
  for (const cs of perLayer) overall += rankOf(cos, cs) - 1;
  return {
    cmp: {
      cosine: cos, z: cos * Math.sqrt(C), rank_in_layer: rankOf(cos, inLayer), n_in_layer: inLayer.length,
      rank_overall: overall, n_overall: perLayer.length * inLayer.length,
    },
    inLayer,
  };
}

/**
 * The head's reading direction w (unit, [C]) against the neuron's vectors, as both the full and the
 * weights-only analysis report it: for an MLP neuron W_in (as loaded and ln2-folded) and W_out, for a
 * residual dimension its unit vector e_n; with each vector's cosines over its layer (for the plots).
 */
export function readingComparisons(model: HookedTransformer, layer: number, neuron: number, isPost: boolean, w: Vec): {
  vectors: VectorKind[]; folded: boolean; reading: Partial<Record<VectorKind, Comparison>>; layerCos: Record<string, number[]>; note: string | null;
} {
  const gated = blockSpec(model.cfg).gatedMlp;
  const vectors: VectorKind[] = !isPost ? ["e_n"] : gated ? ["W_in_raw", "W_in_folded", "W_gate_raw", "W_gate_folded", "W_out"] : ["W_in_raw", "W_in_folded", "W_out"];
  const folded = isPost ? ln2AlreadyFolded(model) : false;
  const C = model.cfg.dModel;
  const note = isPost ? null : `layer_type mlp_out: the target is residual dimension ${neuron} of blocks.${layer}.hook_mlp_out, so its vector is the unit vector e_${neuron}; W_in/W_out comparisons and their ranks do not apply (rank_in_layer ranks e_${neuron} among the ${C} basis vectors)`;
  const reading: Partial<Record<VectorKind, Comparison>> = {};
  const layerCos: Record<string, number[]> = {};
  for (const kind of vectors) {
    const { cmp, inLayer } = compare(model, kind, layer, neuron, w);
    reading[kind] = cmp;
    if (kind !== "W_in_raw" && kind !== "W_gate_raw") layerCos[`reading_${kind}`] = round6(inLayer);
  }
  return { vectors, folded, reading, layerCos, note };
}

// ---------------------------------------------------------------------------------------------
// Activation pattern and whitening

/**
 * The activation pattern of a linear read-out w (Haufe et al. 2014): a = Σ w / (wᵀ Σ w), the
 * residual-stream direction that co-varies with what the head reads (a = Cov(x, w·x) / Var(w·x)).
 */
export function activationPattern(S: Vec, C: number, w: ArrayLike<number>): Vec {
  const Sw = la.matVec(S, w, C, C);
  const wSw = la.dot(w, Sw);
  return la.scaled(Sw, wSw > 0 ? 1 / wSw : 0);
}

/** The head-free target pattern Cov(x, act) / Var(act) [C]: the direction the activation co-varies with. */
export function targetPattern(X: ArrayLike<number>, act: ArrayLike<number>, N: number, C: number): Vec {
  const mu = la.columnMeans(X, N, C);
  let abar = 0;
  for (let i = 0; i < N; i++) abar += act[i]! / N;
  const cov = new Float64Array(C);
  let varA = 0;
  for (let i = 0; i < N; i++) {
    const da = act[i]! - abar;
    varA += da * da;
    for (let c = 0; c < C; c++) cov[c]! += (X[i * C + c]! - mu[c]!) * da;
  }
  return la.scaled(cov, varA > 0 ? 1 / varA : 0);
}

/** The empirical null of a cosine: mean, std, and where `value` falls. */
export function empiricalNull(value: number, sample: ArrayLike<number>): EmpiricalNull {
  const n = sample.length;
  let mean = 0;
  for (let i = 0; i < n; i++) mean += sample[i]! / n;
  let v = 0;
  for (let i = 0; i < n; i++) v += (sample[i]! - mean) ** 2 / Math.max(1, n - 1);
  const std = Math.sqrt(v);
  let below = 0;
  for (let i = 0; i < n; i++) if (Math.abs(sample[i]!) < Math.abs(value)) below++;
  return { mean, std, z: std > 0 ? (value - mean) / std : 0, percentile_abs: n > 0 ? (100 * below) / n : 0 };
}

/**
 * Cosines of random filters' activation patterns with each of `refs`: r ~ N(0, I) seeded, pattern Σr/(rᵀΣr).
 * Returns one sample [n] per reference vector.
 */
export function randomFilterPatternCosines(S: Vec, C: number, refs: readonly Vec[], n: number, seed: number): Vec[] {
  return runSteps(randomFilterPatternCosinesSteps(S, C, refs, n, seed));
}

/** randomFilterPatternCosines as steps: yields after every 10 filters. */
function* randomFilterPatternCosinesSteps(S: Vec, C: number, refs: readonly Vec[], n: number, seed: number): Generator<void, Vec[]> {
  const rng = new Rng(seed);
  const out = refs.map(() => new Float64Array(n));
  const r = new Float64Array(C);
  for (let k = 0; k < n; k++) {
    for (let c = 0; c < C; c++) r[c] = rng.normal();
    const p = activationPattern(S, C, r);
    refs.forEach((ref, j) => (out[j]![k] = la.cosine(p, ref)));
    if (k % 10 === 9) yield;
  }
  return out;
}

/**
 * The whitened basis x̃ = L⁻¹ x with L Lᵀ = Σ + ridge·(tr Σ / C)·I (Cholesky: the same cosines as
 * the symmetric Σ^{-1/2}, which differs by a rotation). Vectors that are added to the residual
 * stream (writers: W_out rows, e_n) map by L⁻¹; vectors that read it (the head, W_in) by Lᵀ, so
 * that a reading w·x equals (Lᵀw)·(L⁻¹x).
 */
export function whitener(S: Vec, C: number, ridge: number): { reader: (v: ArrayLike<number>) => Vec; writer: (v: ArrayLike<number>) => Vec } {
  let trace = 0;
  for (let i = 0; i < C; i++) trace += S[i * C + i]!;
  const Sr = S.slice();
  for (let i = 0; i < C; i++) Sr[i * C + i]! += ridge * (trace / C) + 1e-30;
  const L = la.cholesky(Sr, C);
  return { reader: (v) => la.mulLowerT(L, v, C), writer: (v) => la.solveLower(L, v, C) };
}

// ---------------------------------------------------------------------------------------------
// The analysis

export function weightsAnalysis(ctx: AnalysisContext, opts: WeightsOptions = {}): WeightsSummary {
  return runSteps(weightsAnalysisSteps(ctx, opts));
}

/**
 * weightsAnalysis, stopping with Interrupted on SIGINT/SIGTERM (with the CLI's handlers) between
 * batches of forward passes and between stages; `stopped()` is the Interrupted message. Nothing is written here.
 */
export function weightsAnalysisInterruptibly(ctx: AnalysisContext, opts: WeightsOptions, stopped: () => string): Promise<WeightsSummary> {
  return runStepsInterruptibly(weightsAnalysisSteps(ctx, opts), stopped);
}

/** Whether ln2 is already folded into W_in, in words: the part of `w_in` that needs no examples. */
export function wInFolding(folded: boolean, model: HookedTransformer): { ln2_already_folded: boolean; note: string } {
  const spec = blockSpec(model.cfg);
  const rms = spec.normalizationType === "RMS";
  const gate = spec.gatedMlp ? " (and likewise W_gate, the gated MLP's second reader: the neuron is act(x·W_gate[:, n])·(x·W_in[:, n]))" : "";
  return {
    ln2_already_folded: folded,
    note: folded
      ? (rms
        ? `the model's weights are TransformerLens-processed (RMSNorm ln2.w = 1, folded into W_in${spec.gatedMlp ? " and W_gate" : ""}): the raw and folded vectors are the same`
        : "the model's weights are TransformerLens-processed (ln2.w = 1, ln2.b = 0, W_in centred): W_in_raw and W_in_folded are the same vector")
      : (rms
        ? `W_in_folded = ln2.w ⊙ W_in[:, n]${gate}: what the neuron reads from the RMS-normalised residual stream (RMSNorm removes no mean, so nothing is centred)`
        : `W_in_folded = centre(ln2.w ⊙ W_in[:, n])${gate}: what the neuron reads from the residual stream, LayerNorm included`),
  };
}

/** Where the neuron of layer `layer` reads, in words: ln2 of resid_mid, or of resid_pre in a parallel block (GPT-NeoX). */
export function neuronReadsFrom(model: HookedTransformer, layer: number): string {
  const spec = blockSpec(model.cfg);
  const norm = spec.normalizationType === "RMS" ? "RMSNorm ln2" : "LayerNorm ln2";
  return spec.parallelAttnMlp
    ? `the normalised resid_pre of layer ${layer} (${norm} applied; a parallel block: attention and MLP both read resid_pre)`
    : `the normalised resid_mid of layer ${layer} (${norm} applied)`;
}

/** The run's target and feature layers and its neuron, checked against the model (one error each). */
export function checkRunTarget(run: Run, model: HookedTransformer): void {
  const c = run.config;
  model.checkLayer(c.target_layer, "target layer");
  model.checkLayer(c.feature_layer, "feature layer");
  const width = c.layer_type === "mlp_post" ? model.cfg.dMlp : model.cfg.dModel;
  const neuron = c.target_neuron;
  if (!Number.isInteger(neuron) || neuron < 0 || neuron >= width) throw new SelfreportError(`${run.dir}: target neuron ${neuron} is out of range 0..${width - 1}`);
}

/** weightsAnalysis as steps: yields between batches of forward passes, stages and random filters. */
export function* weightsAnalysisSteps(ctx: AnalysisContext, opts: WeightsOptions = {}): Generator<void, WeightsSummary> {
  const maxExamples = opts.maxExamples ?? WEIGHTS_DEFAULTS.maxExamples;
  if (!Number.isInteger(maxExamples) || maxExamples < 1) throw new SelfreportError(`--max-examples must be a positive integer, got ${maxExamples}`);
  const ridge = opts.ridge ?? WEIGHTS_DEFAULTS.ridge;
  if (!(ridge > 0)) throw new SelfreportError(`the whitening ridge must be positive, got ${ridge}`);
  const nullFilters = opts.nullFilters ?? WEIGHTS_DEFAULTS.nullFilters;
  if (!Number.isInteger(nullFilters) || nullFilters < 2) throw new SelfreportError(`the number of random filters for the pattern null must be an integer ≥ 2, got ${nullFilters}`);
  const seed = opts.seed ?? WEIGHTS_DEFAULTS.seed;
  const { run, model, ds } = ctx;
  const c = run.config;
  const { dModel: C, dMlp: M, nLayers } = model.cfg;
  const layer = c.target_layer;
  const neuron = c.target_neuron;
  checkRunTarget(run, model);
  if (ds.meta.n < 2) throw new SelfreportError(`dataset ${ctx.datasetPath} has ${ds.meta.n} examples; the weights analysis needs at least 2`);
  const notes: string[] = [];
  const isPost = c.layer_type === "mlp_post";

  // ---- examples, features, gradients, predictions
  const idx = exampleIndices(ds.meta.n, maxExamples);
  const N = idx.length;
  if (N < ds.meta.n) notes.push(`${N} of ${ds.meta.n} examples used (evenly spaced; --max-examples ${maxExamples})`);
  const { X, source } = yield* featuresOf(ctx, idx); //            [N, C]
  const act = Float64Array.from(idx, (i) => ds.targets[i]!); //   [N]
  const { grads, pred } = headGradients(run, model, X, N); //      [N, C], [N]
  const meanGrad = la.columnMeans(grads, N, C); //                 [C]
  let meanSq = 0;
  for (let i = 0; i < N * C; i++) meanSq += grads[i]! ** 2 / N;
  yield;

  const { direction: rawDirection, method, unfolded } = headDirection(run, model, meanGrad);
  const w = la.unit(rawDirection); // [C]
  if (la.norm(rawDirection) === 0) notes.push("the head's reading direction is zero: every cosine below is 0");

  // ---- 2. reading direction against the neuron's vectors
  const { vectors, folded, reading, layerCos, note } = readingComparisons(model, layer, neuron, isPost, w);
  if (note !== null) notes.push(note);
  if (c.freeze_mode !== "frozen") notes.push(`${c.freeze_mode} run: weights and features are the fine-tuned model's; the activations (dataset targets) are the base model's`);
  const target = (kind: VectorKind): Vec => neuronVector(model, kind, layer, neuron);

  // ---- 3. activation pattern, whitened cosines, residual anisotropy
  const S = la.covariance(X, N, C); // [C, C]
  yield;
  const a = activationPattern(S, C, w); // [C]
  const patternCmp: Partial<Record<VectorKind, Comparison>> = {};
  for (const kind of vectors) {
    const { cmp, inLayer } = compare(model, kind, layer, neuron, a);
    patternCmp[kind] = cmp;
    if (kind === "W_out" || kind === "e_n") layerCos[`pattern_${kind}`] = round6(inLayer);
  }
  const p = targetPattern(X, act, N, C); // [C]
  const refs = [p, ...vectors.map((kind) => target(kind))];
  const nullSamples = yield* randomFilterPatternCosinesSteps(S, C, refs, nullFilters, seed);
  const cosWithTarget = la.cosine(a, p);
  const vectorNulls: Partial<Record<VectorKind, EmpiricalNull>> = {};
  const targetPatternCosines: Partial<Record<VectorKind, number>> = {};
  vectors.forEach((kind, j) => {
    vectorNulls[kind] = empiricalNull(patternCmp[kind]!.cosine, nullSamples[j + 1]!);
    targetPatternCosines[kind] = la.cosine(p, target(kind));
  });
  let trace = 0;
  let frob = 0;
  for (let i = 0; i < C; i++) trace += S[i * C + i]!;
  for (let i = 0; i < C * C; i++) frob += S[i]! ** 2;
  const white = whitener(S, C, ridge);
  const whitened: Partial<Record<VectorKind, number>> = {};
  for (const kind of vectors) {
    const isWriter = kind === "W_out" || kind === "e_n";
    whitened[kind] = la.cosine(white.reader(w), isWriter ? white.writer(target(kind)) : white.reader(target(kind)));
  }
  const mu = la.columnMeans(X, N, C);
  let meanSqX = 0;
  for (let i = 0; i < N * C; i++) meanSqX += X[i]! ** 2 / N;
  const topVariance = la.topEigenvalue(S, C);

  // ---- 4. direct-write share
  const varAct = la.variance(act);
  const varPred = la.variance(pred);
  const writer = isPost ? target("W_out") : target("e_n");
  const readsAfterWrite = c.feature_layer >= layer;
  const wDotWrite = readsAfterWrite ? la.dot(meanGrad, writer) : null;
  const directWrite = {
    applicable: readsAfterWrite,
    note: readsAfterWrite
      ? `(ḡ·${isPost ? "W_out[n, :]" : `e_${neuron}`})²·Var(act)/Var(prediction), ḡ = mean gradient in activation units; a first-order share (may exceed 1 when other paths cancel)`
      : `the head reads layer ${c.feature_layer}, before the target layer ${layer} writes: there is no direct write to read`,
    w_dot_write: wDotWrite,
    var_activation: varAct,
    var_prediction: varPred,
    share: wDotWrite === null || !(varPred > 0) ? null : (wDotWrite ** 2 * varAct) / varPred,
  };
  if (!readsAfterWrite) notes.push(directWrite.note);

  // ---- 5. PCA of the target layer's W_out rows
  const wOutPca = isPost ? wOutPcaOf(model, layer, neuron, w) : null;

  // ---- gradient principal directions (not for a linear regression head: its gradient is constant)
  const linearRegression = run.headType === "regression" && c.head_config.hidden_dim === null;
  const principal: PrincipalDirection[] = [];
  if (!linearRegression && N >= 2) {
    const p = la.pca(grads, N, C, Math.min(3, C));
    p.components.forEach((v, k) => {
      const cosWith: Partial<Record<VectorKind, number>> = {};
      for (const kind of vectors) cosWith[kind] = la.cosine(v, target(kind));
      principal.push({ explained_variance_ratio: p.explainedRatio[k]!, cosine_with_direction: la.cosine(v, w), cosine_with: cosWith });
    });
  }

  return {
    target: {
      layer, neuron, layer_type: c.layer_type, hook: targetHookName(layer, c.layer_type), feature_layer: c.feature_layer,
      d_model: C, d_mlp: M, n_layers: nLayers, weights: c.weights, freeze_mode: c.freeze_mode,
    },
    examples: { n_used: N, n_dataset: ds.meta.n, features: source, prediction_activation_r: pearson(pred, act) },
    null_model: { mean: 0, std: 1 / Math.sqrt(C), description: `cosine of two independent random directions in ${C} dimensions: mean 0, std 1/√${C}` },
    head: {
      type: run.headType, hidden_dim: c.head_config.hidden_dim, method, direction: round6(w),
      cosine_unfolded_vs_folded: unfolded === null ? null : la.cosine(unfolded, rawDirection),
    },
    gradient: {
      mean_norm: la.norm(meanGrad),
      mean_share: meanSq > 0 ? la.dot(meanGrad, meanGrad) / meanSq : 0,
      cosine_mean_with_direction: la.cosine(meanGrad, w),
      principal,
    },
    vectors,
    w_in: isPost
      ? {
        ...wInFolding(folded, model),
        spaces: `the neuron reads ${neuronReadsFrom(model, layer)}; the head reads resid_post of layer ${c.feature_layer}: the cosine compares two readers of different points of the residual stream, so a small cosine does not rule out that the head recomputes the neuron's input`,
        readout_correlation: whitened.W_in_folded!,
        readout_note: `over the dataset, what the head reads from resid_post of layer ${c.feature_layer} and what W_in[:, ${neuron}] (ln2 folded) would read from the same vectors correlate with r = ${whitened.W_in_folded!.toFixed(3)} (the whitened cosine; 1 = the two readouts carry the same signal, 0 = unrelated)` +
          (whitened.W_gate_folded === undefined ? "" : `; for the gate W_gate[:, ${neuron}] (ln2 folded), r = ${whitened.W_gate_folded.toFixed(3)}`),
        gate_readout_correlation: whitened.W_gate_folded ?? null,
      }
      : null,
    reading,
    pattern: {
      direction: round6(la.unit(a)),
      note: "the activation pattern Σw/(wᵀΣw) is what the prediction co-varies with; any head that predicts the activation well has a pattern close to the head-free target pattern Cov(x, act)/Var(act), whatever it reads, so it is not evidence that the head reads the neuron",
      comparisons: patternCmp,
      target_pattern: round6(la.unit(p)),
      cosine_with_target_pattern: cosWithTarget,
      random_filter_null: { n: nullFilters, seed, target_pattern: empiricalNull(cosWithTarget, nullSamples[0]!), vectors: vectorNulls },
      target_pattern_cosines: targetPatternCosines,
    },
    whitened: {
      ridge,
      cosines: whitened,
      note: "basis x̃ = (Σ + ridge·tr(Σ)/d·I)^{-1/2} x; readers (head, W_in) map by Σ^{1/2}, writers (W_out, e_n) by Σ^{-1/2}; here the head's pattern and filter coincide; between two readers (head, W_in) the whitened cosine is the correlation of their readouts over the dataset",
    },
    residual: {
      participation_ratio: frob > 0 ? (trace * trace) / frob : 0,
      top_pc_variance_ratio: trace > 0 ? topVariance / trace : 0,
      mean_norm_share: meanSqX > 0 ? la.dot(mu, mu) / meanSqX : 0,
    },
    direct_write: directWrite,
    w_out_pca: wOutPca,
    layer_cosines: layerCos,
    notes,
  };
}

/** The top 2 principal components of layer l's W_out rows, every row and the head direction w (unit) projected. */
export function wOutPcaOf(model: HookedTransformer, layer: number, neuron: number, w: Vec): NonNullable<WeightsSummary["w_out_pca"]> {
  const { dModel: C, dMlp: M } = model.cfg;
  const Wout = model.W_out(layer).data; // [M, C]
  const p = la.pca(Wout, M, C, 2);
  const mean = la.columnMeans(Wout, M, C);
  let rms = 0;
  const points: Array<[number, number]> = [];
  for (let m = 0; m < M; m++) {
    const row = Float64Array.from({ length: C }, (_, k) => Wout[m * C + k]! - mean[k]!);
    rms += la.dot(row, row) / M;
    points.push([r6(la.dot(row, p.components[0]!)), r6(la.dot(row, p.components[1] ?? new Float64Array(C)))]);
  }
  const h1 = la.dot(w, p.components[0]!);
  const h2 = la.dot(w, p.components[1] ?? new Float64Array(C));
  return {
    explained_variance_ratio: [...p.explainedRatio],
    head_in_plane: h1 * h1 + h2 * h2,
    head: [h1 * Math.sqrt(rms), h2 * Math.sqrt(rms)],
    target: points[neuron]!,
    points,
  };
}

function r6(x: number): number {
  return Number(x.toPrecision(6));
}

export function round6(v: ArrayLike<number>): number[] {
  return Array.from(v, r6);
}

// ---------------------------------------------------------------------------------------------
// Plots

/** The pattern's null in words: random filters' patterns, not random directions. */
function patternNullText(s: WeightsPlotInput, kind: VectorKind): string {
  const n = s.pattern?.random_filter_null;
  const v = n?.vectors[kind];
  if (n === undefined || v === undefined) return "not evidence of reading";
  return `null: patterns of ${n.n} random filters, cosine ${v.mean.toFixed(3)} ± ${v.std.toFixed(3)}; not evidence of reading`;
}

/** SVGs by name: histograms of the target layer's cosines (target marked) and the W_out PCA scatter. */
export type WeightsPlotInput = Pick<WeightsSummary, "target" | "null_model" | "reading" | "layer_cosines" | "w_out_pca"> & { pattern?: Pick<WeightsSummary["pattern"], "comparisons"> & Partial<Pick<WeightsSummary["pattern"], "random_filter_null">> };

export async function weightsPlots(s: WeightsPlotInput): Promise<Record<string, string>> {
  const t = s.target;
  const who = t.layer_type === "mlp_post" ? `L${t.layer}N${t.neuron}` : `mlp_out[${t.neuron}]`;
  const plots: Record<string, string> = {};
  const hist = async (name: string, title: string, key: string, cmp: Comparison | undefined, xLabel: string, subtitle?: string): Promise<void> => {
    const values = s.layer_cosines[key];
    if (values === undefined || cmp === undefined) return;
    plots[name] = await renderSvg(histogram({
      title, values, bins: 40, markValue: cmp.cosine, markLabel: `${who}: ${cmp.cosine.toFixed(3)} (rank ${cmp.rank_in_layer}/${cmp.n_in_layer})`,
      xLabel, subtitle: subtitle ?? `null std 1/√${t.d_model} = ${s.null_model.std.toFixed(3)}`,
    }));
  };
  if (t.layer_type === "mlp_post") {
    await hist("reading_vs_W_out", `Head direction · W_out rows, layer ${t.layer}`, "reading_W_out", s.reading.W_out, "cosine(head direction, W_out[m, :])");
    await hist("reading_vs_W_in", `Head direction · W_in columns (ln2 folded), layer ${t.layer}`, "reading_W_in_folded", s.reading.W_in_folded, "cosine(head direction, W_in[:, m])");
    await hist("pattern_vs_W_out", `Activation pattern (what the prediction co-varies with) · W_out rows, layer ${t.layer}`, "pattern_W_out", s.pattern?.comparisons.W_out, "cosine(pattern, W_out[m, :])",
      patternNullText(s, "W_out"));
  } else {
    await hist("reading_vs_basis", "Head direction · residual basis vectors", "reading_e_n", s.reading.e_n, "cosine(head direction, e_j)");
    await hist("pattern_vs_basis", "Activation pattern (what the prediction co-varies with) · residual basis vectors", "pattern_e_n", s.pattern?.comparisons.e_n, "cosine(pattern, e_j)",
      patternNullText(s, "e_n"));
  }
  const p = s.w_out_pca;
  if (p !== null) {
    const points = p.points.map(([x, y], m) => ({ x, y, ...(m === t.neuron ? { label: who } : {}) }));
    points.push({ x: p.head[0], y: p.head[1], label: "head direction" });
    plots["w_out_pca"] = await renderSvg(scatter({
      title: `W_out rows of layer ${t.layer}: top 2 principal components`,
      subtitle: `PC1 ${(100 * p.explained_variance_ratio[0]!).toFixed(1)}%, PC2 ${(100 * (p.explained_variance_ratio[1] ?? 0)).toFixed(1)}% of variance; head direction (scaled to the rms row norm) ${(100 * p.head_in_plane).toFixed(1)}% in this plane`,
      points, xLabel: "PC1", yLabel: "PC2",
    }));
  }
  return plots;
}
