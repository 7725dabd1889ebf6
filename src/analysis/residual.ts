/**
 * Residual-stream analysis of a fine-tuned run (unfrozen or partial): what did training change,
 * and does the change write the target neuron's directions into what the fixed head reads?
 *
 * On the same inputs, at each input's read position p, the base and fine-tuned models give residual
 * streams r_l (l = embed, then resid_post of blocks 0..F, F = the head's feature layer) and the change
 * Δr_l = r_l(fine-tuned) − r_l(base)   [N, C].
 *
 * Read-out decomposition. Let g_i be ∂prediction/∂features for input i (activation units), averaged
 * between the base and fine-tuned features (trapezoid rule; for a linear regression head g = std·w
 * everywhere and everything below is exact). The first-order change in prediction is g_i·Δr_F,i, and
 * since the residual stream is a running sum, Δr_F = Σ_l (Δr_l − Δr_{l−1}): block l's increment
 * inc_l,i = g_i·(Δr_l,i − Δr_{l−1},i) adds up to it exactly. Each layer's share of the prediction
 * change is <inc_l, Δpred> / <Δpred, Δpred> over the inputs (shares sum to ≈ 1; exactly 1 for a
 * linear head), and r(inc_l, activation) says whether that layer's contribution tracks the neuron.
 *
 * Directions. Per layer, the mean change mean_i Δr_l,i, and the activation-coupled change
 * β_l = Cov(Δr_l, a) / Var(a) (what the change writes per unit of the neuron's base activation a),
 * each compared by cosine with W_in[:, n] (raw and with ln2 folded), W_out[n, :] and the head's
 * reading direction (mean g); the null for a random direction is mean 0, std 1/√d_model.
 *
 * Mean shift vs tracking. Δpred_i = m + β_pred·(a_i − ā) + e_i: a mean shift m (re-calibrating the
 * fixed random head), an activation-coupled part (the change that tracks the neuron) and the rest. Each
 * layer's increment splits the same way: its mean, and its share of the coupled part,
 * Cov(inc_l, a) / Cov(Σ_l inc_l, a) (sums to 1 over layers). The verdict uses the coupled part.
 *
 * Noise floor. A layer whose residual stream changed by less than RESID_NOISE_FLOOR (relative) is
 * "unchanged" and gets no direction cosines; a weight tensor that changed by less than PARAM_NOISE_FLOOR
 * (relative) is unchanged (float32 round-off of saving and processing is ~1e-8).
 *
 * Parameters. Relative Frobenius change ‖θ_ft − θ_base‖ / ‖θ_base‖ per weight tensor; for a partial run,
 * the tensors that were frozen in training (everything but blocks F−k+1..F and ln_final) are checked.
 * The neuron. Its activation in the base vs the fine-tuned model on the same inputs.
 *
 * See docs/analyses/residual.md for what each number answers and the summary.json schema.
 */
import { Tensor, noGrad } from "../tensor/index.ts";
import type { HookedTransformer } from "../model/transformer.ts";
import { SelfreportError } from "../errors.ts";
import { exampleBatch, type SplitName } from "../selfreport/dataset.ts";
import { runTarget, targetHook } from "../selfreport/target.ts";
import { headForward, predictionsFromOutput } from "../selfreport/predictor.ts";
import { pearson, mean, std } from "../selfreport/stats.ts";
import { runSteps, runStepsInterruptibly } from "../util/interrupt.ts";
import { progress } from "../util/progress.ts";
import { barChart, heatmap, scatter, renderSvg } from "../report/charts.ts";
import { selectInputs, padIdFor, type AnalysisContext } from "./context.ts";
import { headGradients, headDirection, neuronVector } from "./weights.ts";
import { blockSpec } from "../model/config.ts";
import { linearFit, type LinearFit } from "./fit.ts";
import * as la from "./linalg.ts";

export interface ResidualOptions {
  /** Inputs to compare on (test split first, then validation, then train). Default 500. */
  nInputs?: number;
}

export const RESIDUAL_DEFAULTS = { nInputs: 500 } as const;

/** Relative residual change (mean ‖Δr‖ / mean ‖r‖) below which a layer is reported as unchanged. */
export const RESID_NOISE_FLOOR = 1e-5;
/** Relative parameter change below which a weight tensor is reported as unchanged. */
export const PARAM_NOISE_FLOOR = 1e-6;

/** Inputs per forward batch. */
const BATCH = 32;

export interface DirectionCosines {
  W_in_raw: number;
  W_in_folded: number;
  /** A gated MLP's gate column (ln2 folded), the neuron's second reader; null for a plain MLP. */
  W_gate_folded: number | null;
  W_out: number;
  head: number;
}

export interface LayerChange {
  /** "embed" (blocks.0.hook_resid_pre) or the block index of blocks.l.hook_resid_post. */
  layer: "embed" | number;
  hook: string;
  /** mean_i ‖Δr_l,i‖ and mean_i ‖r_l,i(base)‖. */
  mean_norm_change: number;
  mean_norm_base: number;
  relative_change: number;
  /** "unchanged" when relative_change < RESID_NOISE_FLOOR: then the direction cosines are null (noise has no direction). */
  status: "changed" | "unchanged";
  /** mean_i g_i·Δr_l,i: the first-order prediction change already present after this layer (activation units). */
  readout_change: number;
  /** mean_i g_i·(Δr_l,i − Δr_{l−1},i): this layer's own increment. */
  readout_increment: number;
  /** <inc_l, Δpred> / <Δpred, Δpred>: this layer's share of the prediction change (sums to ≈ 1 over layers). */
  share_of_prediction_change: number | null;
  /** Cov(inc_l, a) / Cov(Σ inc, a): this layer's share of the activation-coupled prediction change (sums to 1). */
  share_of_coupled_change: number | null;
  /** Pearson r over the inputs of this layer's increment with the neuron's base activation. */
  increment_r_with_activation: number | null;
  /** Cosines of the mean change with the neuron's and the head's directions (null when unchanged). */
  mean_change_cosines: DirectionCosines | null;
  /** β_l = Cov(Δr_l, a)/Var(a): its norm (residual units per unit activation) and cosines (null when the layer is
   *  unchanged or ‖β‖·σ_a / mean ‖r‖ is below the noise floor: no part of the change tracks the neuron). */
  coupled_change_norm: number;
  coupled_change_cosines: DirectionCosines | null;
}

export interface ParamChange {
  name: string;
  /** Block index, or null for embed / pos_embed / ln_final / unembed. */
  layer: number | null;
  /** The name without "blocks.l." (e.g. "attn.W_Q", "mlp.W_in", "embed.W_E"). */
  kind: string;
  base_norm: number;
  change_norm: number;
  /** change_norm / base_norm; null when the base tensor is all zeros. */
  relative: number | null;
  /** relative ≥ PARAM_NOISE_FLOOR (or any change of an all-zero tensor beyond float32 round-off). */
  changed: boolean;
}

export interface ResidualSummary {
  target: {
    layer: number; neuron: number; layer_type: string; hook: string; feature_layer: number;
    head_type: string; freeze_mode: string; unfreeze_last: number | null; d_model: number; weights: string;
  };
  inputs: { n_used: number; n_dataset: number; selection: string; from_split: Record<SplitName, number>; indices: number[] };
  readout: {
    method: string;
    /** How well the first-order decomposition accounts for the prediction change: R² of g·Δr_F against Δpred, and the largest error. */
    linearisation_r2: number | null;
    linearisation_max_abs_error: number;
  };
  predictions: {
    /** The run's head (for a token head: through the fine-tuned ln_final and unembedding) on the base model's features and on the fine-tuned model's. */
    base: { r_with_target: number; rmse: number; mean: number };
    finetuned: { r_with_target: number; rmse: number; mean: number };
    mean_change: number;
    mean_abs_change: number;
    /** Δpred = mean shift + β_pred·(a − ā) + rest: the mean-square share of each part (sum to 1). */
    split: { mean_shift: number; coupled_slope: number; share_mean_shift: number; share_coupled: number; share_rest: number } | null;
  };
  /** 1/√d_model: the std of the cosine of two random directions. */
  null_cosine_std: number;
  noise_floor: { residual_relative: number; parameter_relative: number };
  layers: LayerChange[];
  /** Partial runs: the frozen tensors that nonetheless changed beyond the floor (should be none). */
  frozen_check: { frozen_blocks: number[]; checked: number; moved: string[] } | null;
  parameters: ParamChange[];
  neuron: {
    /** The target neuron's activation in the base model vs the fine-tuned model, same inputs. */
    r: number;
    fit: LinearFit | null;
    base: { mean: number; std: number };
    finetuned: { mean: number; std: number };
    rms_difference: number;
    /** The fine-tuned model's activation vs the dataset target (the base activation when the dataset was built from this base model). */
    finetuned_r_with_target: number;
  };
  /** Up to 2000 (base, fine-tuned) activation pairs for the scatter. */
  neuron_points: Array<[number, number]>;
  notes: string[];
}

// ---------------------------------------------------------------------------------------------
// Collecting the residual rows

interface Rows {
  /** Per layer (embed, blocks 0..F) the rows at the read positions [N, C]. */
  resid: Float32Array[];
  /** [N] the target hook's value at the read position. */
  act: Float64Array;
}

/** Residual rows at each input's read position in `model`, for the layers `hooks`, and the target activation. */
function* collectRows(ctx: AnalysisContext, model: HookedTransformer, inputs: readonly number[], hooks: readonly string[], label: string): Generator<void, Rows> {
  const c = ctx.run.config;
  const C = model.cfg.dModel;
  const N = inputs.length;
  const target = targetHook(runTarget(c));
  const resid = hooks.map(() => new Float32Array(N * C));
  const act = new Float64Array(N);
  const stopAt = Math.max(c.target_layer, c.feature_layer) + 1;
  const bar = progress(label, N);
  try {
    for (let k0 = 0; k0 < N; k0 += BATCH) {
      noGrad(() => {
        const ks = Array.from({ length: Math.min(BATCH, N - k0) }, (_, j) => k0 + j);
        const batch = exampleBatch(ctx.ds, ks.map((k) => inputs[k]!), padIdFor(model));
        const { cache } = model.runWithCache(batch, [...new Set([...hooks, target])], { stopAtLayer: stopAt });
        const T = batch.len;
        const A = cache.get(target)!;
        const width = A.shape[2]!;
        ks.forEach((k, b) => {
          const pos = batch.positions[b]!;
          act[k] = A.data[(b * T + pos) * width + c.target_neuron]!;
          hooks.forEach((h, li) => {
            const o = (b * T + pos) * C;
            resid[li]!.set(cache.get(h)!.data.subarray(o, o + C), k * C);
          });
        });
        bar.update(k0 + ks.length);
      });
      yield;
    }
  } finally {
    bar.stop();
  }
  return { resid, act };
}

function predictRows(ctx: AnalysisContext, model: HookedTransformer, X: Float32Array, N: number): Float64Array {
  const run = ctx.run;
  const out = noGrad(() => headForward(run.config.head_config, run.head, new Tensor(X.slice(), [N, model.cfg.dModel]), model));
  return Float64Array.from(predictionsFromOutput(run.headType, out, run.readout));
}

// ---------------------------------------------------------------------------------------------
// Parameters

/** Relative Frobenius change of every weight tensor the two models share. */
export function parameterChanges(base: HookedTransformer, tuned: HookedTransformer): ParamChange[] {
  const out: ParamChange[] = [];
  for (const [name, b] of base.params) {
    const t = tuned.params.get(name);
    if (!t) throw new SelfreportError(`the fine-tuned model has no parameter ${name} (base and fine-tuned configs differ?)`);
    if (t.size !== b.size) throw new SelfreportError(`parameter ${name}: base has ${b.size} values, fine-tuned ${t.size}`);
    let bb = 0;
    let dd = 0;
    for (let i = 0; i < b.size; i++) {
      bb += b.data[i]! * b.data[i]!;
      const d = t.data[i]! - b.data[i]!;
      dd += d * d;
    }
    const m = /^blocks\.(\d+)\.(.+)$/.exec(name);
    const baseNorm = Math.sqrt(bb);
    const changeNorm = Math.sqrt(dd);
    const relative = baseNorm > 0 ? changeNorm / baseNorm : null;
    out.push({
      name, layer: m ? Number(m[1]) : null, kind: m ? m[2]! : name,
      base_norm: baseNorm, change_norm: changeNorm, relative,
      changed: relative === null ? changeNorm > 1e-6 * Math.sqrt(b.size) : relative >= PARAM_NOISE_FLOOR,
    });
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// The analysis

function cosines(v: ArrayLike<number>, dirs: { W_in_raw: la.Vec; W_in_folded: la.Vec; W_gate_folded: la.Vec | null; W_out: la.Vec; head: la.Vec }): DirectionCosines {
  const cos = (a: ArrayLike<number>, b: ArrayLike<number>): number => (la.norm(a) === 0 || la.norm(b) === 0 ? 0 : la.cosine(a, b));
  return {
    W_in_raw: cos(v, dirs.W_in_raw), W_in_folded: cos(v, dirs.W_in_folded), W_gate_folded: dirs.W_gate_folded === null ? null : cos(v, dirs.W_gate_folded),
    W_out: cos(v, dirs.W_out), head: cos(v, dirs.head),
  };
}

const layerName = (l: "embed" | number): string => (l === "embed" ? "embed" : `L${l}`);

function meanStd(xs: ArrayLike<number>): { mean: number; std: number } {
  return { mean: mean(xs), std: std(xs) };
}

function rmse(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += (a[i]! - b[i]!) ** 2;
  return Math.sqrt(s / a.length);
}

/** Pearson r, or null when either side is constant. */
function rOrNull(a: ArrayLike<number>, b: ArrayLike<number>): number | null {
  const r = pearson(a, b);
  return Number.isFinite(r) ? r : null;
}

export function residualAnalysis(ctx: AnalysisContext, opts: ResidualOptions = {}): ResidualSummary {
  return runSteps(residualAnalysisSteps(ctx, opts));
}

/**
 * residualAnalysis, stopping with Interrupted on SIGINT/SIGTERM (with the CLI's handlers) between
 * batches of forward passes; `stopped()` is the Interrupted message. Nothing is written here.
 */
export function residualAnalysisInterruptibly(ctx: AnalysisContext, opts: ResidualOptions, stopped: () => string): Promise<ResidualSummary> {
  return runStepsInterruptibly(residualAnalysisSteps(ctx, opts), stopped);
}

/** residualAnalysis as steps: yields after each batch of inputs of either model. */
export function* residualAnalysisSteps(ctx: AnalysisContext, opts: ResidualOptions = {}): Generator<void, ResidualSummary> {
  const c = ctx.run.config;
  if (c.freeze_mode === "frozen") {
    throw new SelfreportError(
      `analyze residual compares a fine-tuned model with its base, but run ${ctx.run.dir} is frozen: only the head was trained, ` +
        `the model is the base model and its residual stream did not change. Use analyze weights or analyze patching for a frozen run.`,
    );
  }
  if (c.layer_type !== "mlp_post") throw new SelfreportError(`analyze residual needs an mlp_post target (a neuron with W_in and W_out), got layer_type ${c.layer_type}`);
  const nInputs = opts.nInputs ?? RESIDUAL_DEFAULTS.nInputs;
  if (!Number.isInteger(nInputs) || nInputs < 3) throw new SelfreportError(`--n-inputs must be an integer ≥ 3, got ${nInputs}`);
  const base = ctx.baseModel;
  const tuned = ctx.model;
  const C = base.cfg.dModel;
  const n = c.target_neuron;
  const L = c.target_layer;
  const F = c.feature_layer;
  const notes: string[] = [];

  const { indices: inputs, counts } = selectInputs(ctx.ds, nInputs);
  const N = inputs.length;
  if (N < 3) throw new SelfreportError(`the dataset has only ${N} examples; the residual analysis needs at least 3`);
  const layers: Array<"embed" | number> = ["embed", ...Array.from({ length: F + 1 }, (_, l) => l)];
  const hooks = layers.map((l) => (l === "embed" ? "blocks.0.hook_resid_pre" : `blocks.${l}.hook_resid_post`));

  const b = yield* collectRows(ctx, base, inputs, hooks, "residual: base model");
  const f = yield* collectRows(ctx, tuned, inputs, hooks, "residual: fine-tuned model");
  const XbF = b.resid[hooks.length - 1]!;
  const XfF = f.resid[hooks.length - 1]!;
  // one head for both (a token head reads through the fine-tuned ln_final and unembedding), so
  // Δpred is the change the residual stream alone causes
  const predB = predictRows(ctx, tuned, XbF, N);
  const predF = predictRows(ctx, tuned, XfF, N);
  const dPred = predF.map((v, i) => v - predB[i]!);

  // g_i: the head's gradient, averaged between the two feature rows (exact for a linear head)
  const gB = headGradients(ctx.run, tuned, XbF, N).grads;
  const gF = headGradients(ctx.run, tuned, XfF, N).grads;
  const g = gB.map((v, i) => 0.5 * (v + gF[i]!)); // [N, C]
  const meanG = la.columnMeans(g, N, C);
  const linear = ctx.run.headType === "regression" && c.head_config.hidden_dim === null;
  const head = headDirection(ctx.run, tuned, meanG);

  // the neuron's directions, in the base model (what the neuron reads and writes before fine-tuning)
  const dirs = {
    W_in_raw: neuronVector(base, "W_in_raw", L, n), //                                    [C]
    W_in_folded: neuronVector(base, "W_in_folded", L, n),
    W_gate_folded: blockSpec(base.cfg).gatedMlp ? neuronVector(base, "W_gate_folded", L, n) : null,
    W_out: neuronVector(base, "W_out", L, n),
    head: head.direction,
  };

  const act = b.act;
  const actMS = meanStd(act);
  let dd = 0;
  for (let i = 0; i < N; i++) dd += dPred[i]! * dPred[i]!;
  const prevG = new Float64Array(N); // g_i·Δr_{l−1},i
  const incs: Float64Array[] = [];
  const rawLayers = layers.map((layer, li) => {
    const rb = b.resid[li]!;
    const rf = f.resid[li]!;
    const meanChange = new Float64Array(C);
    const coupled = new Float64Array(C); // Σ_i (a_i − ā)·Δr_i / Σ (a_i − ā)²
    let normChange = 0;
    let normBase = 0;
    const cum = new Float64Array(N);
    const inc = new Float64Array(N);
    for (let i = 0; i < N; i++) {
      let s2 = 0;
      let b2 = 0;
      let gd = 0;
      const da = act[i]! - actMS.mean;
      for (let k = 0; k < C; k++) {
        const d = rf[i * C + k]! - rb[i * C + k]!;
        s2 += d * d;
        b2 += rb[i * C + k]! ** 2;
        gd += g[i * C + k]! * d;
        meanChange[k]! += d / N;
        coupled[k]! += da * d;
      }
      normChange += Math.sqrt(s2) / N;
      normBase += Math.sqrt(b2) / N;
      cum[i] = gd;
      inc[i] = gd - prevG[i]!;
      prevG[i] = gd;
    }
    const varA = actMS.std * actMS.std * N;
    for (let k = 0; k < C; k++) coupled[k] = varA > 0 ? coupled[k]! / varA : 0;
    let share = 0;
    for (let i = 0; i < N; i++) share += inc[i]! * dPred[i]!;
    incs.push(inc);
    const relative = normBase > 0 ? normChange / normBase : 0;
    const changed = relative >= RESID_NOISE_FLOOR;
    // the part that tracks the neuron, ‖β‖·σ_a, must itself clear the floor to have a direction
    const coupledChanged = changed && normBase > 0 && (la.norm(coupled) * actMS.std) / normBase >= RESID_NOISE_FLOOR;
    return {
      layer, hook: hooks[li]!,
      mean_norm_change: normChange, mean_norm_base: normBase, relative_change: relative,
      status: changed ? "changed" as const : "unchanged" as const,
      readout_change: la.dot(cum, new Float64Array(N).fill(1 / N)),
      readout_increment: la.dot(inc, new Float64Array(N).fill(1 / N)),
      share_of_prediction_change: dd > 0 ? share / dd : null,
      share_of_coupled_change: null as number | null,
      increment_r_with_activation: changed ? rOrNull(inc, act) : null,
      mean_change_cosines: changed ? cosines(meanChange, dirs) : null,
      coupled_change_norm: la.norm(coupled),
      coupled_change_cosines: coupledChanged ? cosines(coupled, dirs) : null,
    };
  });
  // each layer's share of the activation-coupled change: Cov(inc_l, a) / Cov(Σ inc, a) (prevG = Σ inc)
  const covWithAct = (x: ArrayLike<number>): number => {
    let sx = 0;
    for (let i = 0; i < N; i++) sx += x[i]! * (act[i]! - actMS.mean);
    return sx / N;
  };
  const covTotal = covWithAct(prevG);
  // no tracking part to share when Cov(Σ inc, a) is round-off against the change's own size
  const tracks = Math.abs(covTotal) > 1e-6 * Math.sqrt(dd / N) * actMS.std;
  const layerChanges: LayerChange[] = rawLayers.map((l, li) => ({
    ...l,
    share_of_coupled_change: tracks ? covWithAct(incs[li]!) / covTotal : null,
  }));
  // Δpred = mean shift + β·(a − ā) + rest
  const varAct = actMS.std * actMS.std;
  const dMean = dPred.reduce((a, v) => a + v, 0) / N;
  let split: ResidualSummary["predictions"]["split"] = null;
  if (dd > 0 && varAct > 0) {
    const slope = covWithAct(dPred) / varAct;
    let coupledSq = 0;
    let restSq = 0;
    for (let i = 0; i < N; i++) {
      const cpl = slope * (act[i]! - actMS.mean);
      coupledSq += cpl * cpl;
      restSq += (dPred[i]! - dMean - cpl) ** 2;
    }
    split = { mean_shift: dMean, coupled_slope: slope, share_mean_shift: (N * dMean * dMean) / dd, share_coupled: coupledSq / dd, share_rest: restSq / dd };
  }

  // how good is the first-order decomposition? (prevG now holds g·Δr_F)
  let ssRes = 0;
  let maxErr = 0;
  const dMS = meanStd(dPred);
  for (let i = 0; i < N; i++) {
    const e = dPred[i]! - prevG[i]!;
    ssRes += e * e;
    maxErr = Math.max(maxErr, Math.abs(e));
  }
  const ssTot = dMS.std * dMS.std * N;
  const target = Float64Array.from(inputs, (i) => ctx.ds.targets[i]!);

  // which tensors could move: training trains blocks F−k+1..F and ln_final in partial mode; check the rest
  const params = parameterChanges(base, tuned);
  let frozenCheck: ResidualSummary["frozen_check"] = null;
  if (c.freeze_mode === "partial" && c.unfreeze_last !== null) {
    const first = F - c.unfreeze_last + 1;
    const trained = (p: ParamChange): boolean => (p.layer !== null ? p.layer >= first && p.layer <= F : p.name.startsWith("ln_final."));
    const frozen = params.filter((p) => !trained(p));
    const moved = frozen.filter((p) => p.changed).map((p) => p.name);
    frozenCheck = { frozen_blocks: Array.from({ length: base.cfg.nLayers }, (_, l) => l).filter((l) => l < first || l > F), checked: frozen.length, moved };
    if (moved.length > 0) notes.push(`${moved.length} tensor(s) that training kept frozen (everything but blocks ${first}..${F} and ln_final) changed by more than the noise floor ${PARAM_NOISE_FLOOR} (relative), e.g. ${moved[0]}: these weights are not the ones the run trained`);
  }
  const unchangedLayers = layerChanges.filter((l) => l.status === "unchanged").map((l) => layerName(l.layer));
  if (unchangedLayers.length > 0) notes.push(`unchanged (relative residual change < ${RESID_NOISE_FLOOR}): ${unchangedLayers.join(", ")}; no direction cosines are given for them`);
  if (F < L) notes.push(`the head reads layer ${F}, before the target layer ${L}: the neuron's output cannot reach the features; W_out cosines describe coincidence, not a path`);
  if (!linear) notes.push(`${ctx.run.headType}${c.head_config.hidden_dim !== null ? " hidden-layer" : ""} head: the read-out decomposition is first order (see linearisation_r2)`);
  if (c.weights === "tl") notes.push("weights processed as TransformerLens does (LayerNorm folded, writing weights centred): parameter changes compare the processed tensors");

  const fAct = f.act;
  const neuronFit = linearFit(act, fAct);
  const stride = Math.max(1, Math.ceil(N / 2000));
  const neuronPoints: Array<[number, number]> = [];
  for (let i = 0; i < N; i += stride) neuronPoints.push([Number(act[i]!.toPrecision(6)), Number(fAct[i]!.toPrecision(6))]);
  const pb = meanStd(predB);
  const pf = meanStd(predF);

  return {
    target: {
      layer: L, neuron: n, layer_type: c.layer_type, hook: targetHook(runTarget(c)), feature_layer: F,
      head_type: ctx.run.headType, freeze_mode: c.freeze_mode, unfreeze_last: c.unfreeze_last, d_model: C, weights: c.weights,
    },
    inputs: { n_used: N, n_dataset: ctx.ds.meta.n, selection: "test split first, then validation, then train; evenly spaced within a split", from_split: counts, indices: inputs },
    readout: {
      method: linear
        ? "g = activation_std · output.weight (linear regression head: the decomposition is exact)"
        : "g_i = ½(∂pred/∂x at the base features + at the fine-tuned features), per input (trapezoid rule)",
      linearisation_r2: ssTot > 0 ? 1 - ssRes / ssTot : null,
      linearisation_max_abs_error: maxErr,
    },
    predictions: {
      base: { r_with_target: pearson(predB, target), rmse: rmse(predB, target), mean: pb.mean },
      finetuned: { r_with_target: pearson(predF, target), rmse: rmse(predF, target), mean: pf.mean },
      mean_change: dMS.mean,
      mean_abs_change: dPred.reduce((a, v) => a + Math.abs(v), 0) / N,
      split,
    },
    null_cosine_std: 1 / Math.sqrt(C),
    noise_floor: { residual_relative: RESID_NOISE_FLOOR, parameter_relative: PARAM_NOISE_FLOOR },
    layers: layerChanges,
    frozen_check: frozenCheck,
    parameters: params,
    neuron: {
      r: pearson(act, fAct),
      fit: neuronFit,
      base: actMS,
      finetuned: meanStd(fAct),
      rms_difference: rmse(act, fAct),
      finetuned_r_with_target: pearson(fAct, target),
    },
    neuron_points: neuronPoints,
    notes,
  };
}

// ---------------------------------------------------------------------------------------------
// Plots


/** SVGs by name: per-layer change and read-out share, direction cosines, parameter changes, the neuron before/after. */
export async function residualPlots(s: ResidualSummary): Promise<Record<string, string>> {
  const t = s.target;
  const who = `L${t.layer}N${t.neuron}`;
  const names = s.layers.map((l) => layerName(l.layer));
  const plots: Record<string, string> = {};
  plots["layer_change"] = await renderSvg(barChart({
    title: `What fine-tuning changed in the residual stream (${t.freeze_mode} run)`,
    categories: names, values: s.layers.map((l) => l.relative_change),
    yLabel: "mean ‖Δ resid‖ / mean ‖resid‖ at the read position",
  }));
  plots["readout_share"] = await renderSvg(barChart({
    title: `Each layer's share of the neuron-tracking change in prediction (fixed ${t.head_type} head)`,
    categories: names, values: s.layers.map((l) => l.share_of_coupled_change ?? NaN),
    yLabel: "Cov(layer increment, act) / Cov(Δpred, act)",
    subtitle: `first-order R² ${s.readout.linearisation_r2 === null ? "n/a" : s.readout.linearisation_r2.toFixed(4)}`,
  }));
  const gated = s.layers.some((l) => l.mean_change_cosines?.W_gate_folded != null);
  const cosRow = (m: DirectionCosines): number[] => [m.W_in_raw, m.W_in_folded, ...(gated ? [m.W_gate_folded ?? NaN] : []), m.W_out, m.head];
  const colsOf = (p: string): string[] => [`${p} · W_in`, `${p} · W_in (ln2)`, ...(gated ? [`${p} · W_gate (ln2)`] : []), `${p} · W_out`, `${p} · head`];
  const cols = [...colsOf("mean Δ"), ...colsOf("β")];
  plots["direction_cosines"] = await renderSvg(heatmap({
    title: `Cosines of the residual change with ${who}'s directions and the head's`,
    subtitle: `β = Cov(Δresid, activation)/Var(activation); random directions: std ${s.null_cosine_std.toFixed(3)}`,
    rows: names, cols,
    values: s.layers.map((l) => {
      const m = l.mean_change_cosines;
      const k = l.coupled_change_cosines;
      if (m === null || k === null) return cols.map(() => NaN); // unchanged: no direction
      return [...cosRow(m), ...cosRow(k)];
    }),
    colorLabel: "cosine",
  }));
  const blockParams = s.parameters.filter((p) => p.layer !== null);
  const kinds = [...new Set(blockParams.map((p) => p.kind))];
  const nBlocks = Math.max(-1, ...blockParams.map((p) => p.layer!)) + 1;
  const globals = s.parameters.filter((p) => p.layer === null && p.relative !== null).map((p) => `${p.name} ${p.relative!.toExponential(1)}`);
  plots["param_change"] = await renderSvg(heatmap({
    title: "Relative change of each weight tensor, ‖θ_ft − θ_base‖ / ‖θ_base‖",
    subtitle: globals.length > 0 ? globals.join(", ") : undefined,
    rows: Array.from({ length: nBlocks }, (_, l) => `block ${l}`),
    cols: kinds,
    values: Array.from({ length: nBlocks }, (_, l) => kinds.map((k) => blockParams.find((p) => p.layer === l && p.kind === k)?.relative ?? NaN)),
    colorLabel: "relative change",
    showValues: false,
  }));
  const nf = s.neuron.fit;
  plots["neuron_before_after"] = await renderSvg(scatter({
    title: `${who} before and after fine-tuning, same inputs`,
    subtitle: `r ${s.neuron.r.toFixed(4)}${nf === null ? "" : `, slope ${nf.slope.toFixed(3)}`}`,
    points: s.neuron_points.map(([x, y]) => ({ x, y })),
    ...(nf === null ? {} : { fitLine: { slope: nf.slope, intercept: nf.intercept } }),
    xLabel: "activation in the base model", yLabel: "activation in the fine-tuned model",
  }));
  return plots;
}
