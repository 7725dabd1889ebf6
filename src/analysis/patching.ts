/**
 * Activation patching: does changing the target neuron change the prediction, by as much as a
 * perfect self-reporter would?
 *
 * For each input (its read position p) we set the target activation a = blocks.L.mlp.hook_post[p, n]
 * (or blocks.L.hook_mlp_out[p, n] for layer_type mlp_out) to a new value a' — scaled, set, zeroed,
 * mean-ablated or resampled from another input — rerun the model up to the feature layer F, and
 * read the head. Δact = a' − a, Δpred = pred' − pred (activation units). A perfect self-reporter
 * has Δpred = Δact: slope 1.
 *
 * The fast path (runPatches). Only position p is patched, and causal attention means positions < p
 * never see it and positions > p are never read. So after the patch only one residual row changes:
 *   resid_post(L)[p]' = resid_post(L)[p] + Δact·W_out[n, :]         (mlp_out: + Δact·e_n; exact, as
 *                                                                    mlp_out is linear in hook_post)
 * and each later block l = L+1..F is recomputed for that one row by the model's own block
 * (HookedTransformer.blockRows), attending to the clean keys and values of positions < p (cached
 * from one clean forward) and to its own new key and value. Every
 * patch of every input is one row of one big batch: a block costs a few [rows, d_model] matmuls.
 * patchedReference beside it is the naive check: the whole forward with a hook on the neuron.
 *
 * Direct effect: the neuron's write alone, everything downstream held at its clean value:
 * features' = features + Δact·W_out[n, :] (for a linear regression head exactly Δact·std·w·W_out[n, :]).
 * Controls: the same scale sweep on random other neurons of the layer (the null for the slope).
 *
 * Positions. By default only the read position is patched: "does the prediction follow the neuron's value
 * where it is read?". `positions: "all"` patches every position (as the original notebooks did):
 * "does the prediction follow the neuron anywhere in the context?", which adds effects that reach the read
 * position through attention (runPatchesAllPositions, full forwards; slower).
 *
 * See docs/analyses/patching.md for what each number answers, and the summary.json schema.
 */
import { Tensor, Rng, noGrad } from "../tensor/index.ts";
import type { Hook } from "../model/hooks.ts";
import { SelfreportError } from "../errors.ts";
import { exampleBatch, type SplitName } from "../selfreport/dataset.ts";
import { runTarget, targetHook } from "../selfreport/target.ts";
import { headForward, predictionsFromOutput } from "../selfreport/predictor.ts";
import { pearson, quantileSorted } from "../selfreport/stats.ts";
import { ciText } from "../report/verdicts.ts";
import { progress } from "../util/progress.ts";
import { runSteps, runStepsInterruptibly } from "../util/interrupt.ts";
import { barChart, histogram, scatter, renderSvg } from "../report/charts.ts";
import { selectInputs, padIdFor, type AnalysisContext } from "./context.ts";
import { linearFit, emptyMoments, addPair, addMoments, slopeOf, type LinearFit, type Moments } from "./fit.ts";

export interface PatchingOptions {
  /** Inputs to patch (test split first, then validation, then train). Default 500. */
  nInputs?: number;
  /** Scale factors for the scale sweep (target and controls). Default 0, 0.5, 1, 1.5, 2. */
  scales?: number[];
  /** Values to set the neuron to. Default: min, q25, q50, q75, max of the dataset's training targets. */
  setValues?: number[];
  /** Random other neurons of the layer for the null distribution of slopes. Default 20. */
  controls?: number;
  /** Seed of the control choice, the resample sources and the bootstrap. Default 0. */
  seed?: number;
  /** Bootstrap resamples (over inputs) for the slope's second interval. Default 1000. */
  bootstrap?: number;
  /**
   * Where the neuron is patched: "read" (only the read position, default), "all" (every position of
   * the input, as the original notebooks did) or "both" (read, plus a compact all-positions summary).
   */
  positions?: PatchPositions;
}

export type PatchPositions = "read" | "all" | "both";
export const PATCH_POSITIONS: readonly PatchPositions[] = ["read", "all", "both"];

export const PATCHING_DEFAULTS = { nInputs: 500, scales: [0, 0.5, 1, 1.5, 2], controls: 20, seed: 0, bootstrap: 1000, positions: "read" } as const;

/** Rows (patched copies of the read position) per batch of the fast path. */
const ROWS_PER_BATCH = 2048;
/** Points kept in summary.json for the scatter plot. */
const MAX_POINTS = 2000;

/** Width of the target hook: d_mlp for mlp_post, d_model for mlp_out. */
function targetWidth(ctx: AnalysisContext): number {
  return ctx.run.config.layer_type === "mlp_post" ? ctx.model.cfg.dMlp : ctx.model.cfg.dModel;
}

/** What one unit of neuron m adds to resid_post(L) at its position: W_out[m, :], or e_m for mlp_out. */
function writeVector(ctx: AnalysisContext, m: number): Float32Array {
  const c = ctx.run.config;
  const C = ctx.model.cfg.dModel;
  if (c.layer_type === "mlp_out") {
    const e = new Float32Array(C);
    e[m] = 1;
    return e;
  }
  return ctx.model.W_out(c.target_layer).data.subarray(m * C, (m + 1) * C);
}

// ---------------------------------------------------------------------------------------------
// The fast path: one residual row per patched copy

/** One intervention: neuron `neuron` of the target hook gets `value(act, k)` at input k's read position. */
export interface Patch {
  neuron: number;
  /** The new activation, from the clean one and the input's index k in `inputs`. */
  value: (act: number, k: number) => number;
  /** Also compute the direct-path prediction (features + Δact·write vector). */
  direct?: boolean;
}

export interface PatchOutcome {
  /** [nInputs] clean activation of the patched neuron. */
  act: Float64Array;
  /** [nInputs] the value it was set to. */
  patched: Float64Array;
  /** [nInputs] prediction with the patch (total effect). */
  pred: Float64Array;
  /** [nInputs] prediction with only the direct write changed; null unless asked. */
  predDirect: Float64Array | null;
}

export interface PatchRun {
  /** [nInputs] clean prediction (activation units), computed by the same path as the patched ones. */
  cleanPred: Float64Array;
  outcomes: PatchOutcome[];
}

/** Predictions (activation units) of the run's head for feature rows [R, C]. */
function predict(ctx: AnalysisContext, X: Float32Array, R: number): Float32Array {
  if (R === 0) return new Float32Array(0);
  const run = ctx.run;
  const out = headForward(run.config.head_config, run.head, new Tensor(X, [R, ctx.model.cfg.dModel]), ctx.model);
  return predictionsFromOutput(run.headType, out, run.readout);
}

/**
 * What both patching paths start from: the patches checked against the target hook's width, each
 * patch's write vector, empty outcomes, and the inputs in order of length (so a batch pads little).
 */
function patchSetup(ctx: AnalysisContext, inputs: readonly number[], patches: readonly Patch[]): {
  hook: string; width: number; writes: Float32Array[]; cleanPred: Float64Array; outcomes: PatchOutcome[]; order: number[];
} {
  const width = targetWidth(ctx);
  for (const pt of patches) {
    if (!Number.isInteger(pt.neuron) || pt.neuron < 0 || pt.neuron >= width) throw new SelfreportError(`patch: neuron ${pt.neuron} is out of range 0..${width - 1}`);
  }
  const N = inputs.length;
  return {
    hook: targetHook(runTarget(ctx.run.config)),
    width,
    writes: patches.map((pt) => writeVector(ctx, pt.neuron)),
    cleanPred: new Float64Array(N),
    outcomes: patches.map((pt) => ({
      act: new Float64Array(N), patched: new Float64Array(N), pred: new Float64Array(N), predDirect: pt.direct ? new Float64Array(N) : null,
    })),
    order: Array.from({ length: N }, (_, k) => k).sort((a, b) => ctx.ds.lengths[inputs[a]!]! - ctx.ds.lengths[inputs[b]!]! || a - b),
  };
}

/**
 * Applies every patch to every input and returns the predictions (see the file comment). Rows whose
 * Δact is exactly 0 are not recomputed: their prediction is the clean one, exactly.
 */
export function runPatches(ctx: AnalysisContext, inputs: readonly number[], patches: readonly Patch[], label = "patching"): PatchRun {
  return runSteps(runPatchesSteps(ctx, inputs, patches, label));
}

/** runPatches as steps: yields after each batch of rows (see runStepsInterruptibly). */
export function* runPatchesSteps(ctx: AnalysisContext, inputs: readonly number[], patches: readonly Patch[], label = "patching"): Generator<void, PatchRun> {
  const c = ctx.run.config;
  const model = ctx.model;
  const C = model.cfg.dModel;
  const L = c.target_layer;
  const F = c.feature_layer;
  const reaches = F >= L; // the neuron can affect the features only if they are read at or after its layer
  const { hook, width, writes, cleanPred, outcomes, order } = patchSetup(ctx, inputs, patches);
  const N = inputs.length;
  const P = patches.length;
  const residName = `blocks.${reaches ? L : F}.hook_resid_post`;
  const later = reaches ? Array.from({ length: F - L }, (_, i) => L + 1 + i) : []; // blocks rerun for the rows
  const names = [hook, residName, ...later.flatMap((l) => [model.keyHook(l), `blocks.${l}.attn.hook_v`])];
  const weights = new Map(later.map((l) => [l, noGrad(() => model.layerWeights(l))]));
  const chunk = Math.max(1, Math.floor(ROWS_PER_BATCH / (1 + P)));
  const bar = progress(label, N);

  try {
    for (let c0 = 0; c0 < N; c0 += chunk) {
      noGrad(() => {
        const ks = order.slice(c0, c0 + chunk); // positions in `inputs` of this batch's examples
        const idx = ks.map((k) => inputs[k]!);
        const B = idx.length;
        const batch = exampleBatch(ctx.ds, idx, padIdFor(model));
        const T = batch.len;
        const { cache } = model.runWithCache(batch, names, { stopAtLayer: Math.max(L, F) + 1 });
        const A = cache.get(hook)!.data; //           [B, T, width]
        const resid = cache.get(residName)!.data; //  [B, T, C]

        // rows: the clean row of each input, then one per patch whose Δact ≠ 0
        const cleanRow = new Int32Array(B);
        const patchRow = new Int32Array(B * P).fill(-1); // -1: Δact = 0, prediction = clean
        const deltas = new Float64Array(B * P);
        let R = 0;
        for (let b = 0; b < B; b++) {
          const pos = batch.positions[b]!;
          cleanRow[b] = R++;
          patches.forEach((pt, j) => {
            const act = A[(b * T + pos) * width + pt.neuron]!;
            const v = pt.value(act, ks[b]!);
            outcomes[j]!.act[ks[b]!] = act;
            outcomes[j]!.patched[ks[b]!] = v;
            const d = reaches ? v - act : 0;
            deltas[b * P + j] = d;
            if (d !== 0) patchRow[b * P + j] = R++;
          });
        }
        const rowInput = new Int32Array(R);
        const rowPos = new Int32Array(R);
        const X0 = new Float32Array(R * C); // [R, C] resid_post(L) rows (resid_post(F) when F < L)
        for (let b = 0; b < B; b++) {
          const pos = batch.positions[b]!;
          const base = resid.subarray((b * T + pos) * C, (b * T + pos + 1) * C);
          const put = (r: number, d: number, wv: Float32Array | null): void => {
            rowInput[r] = b;
            rowPos[r] = pos;
            for (let i = 0; i < C; i++) X0[r * C + i] = wv === null ? base[i]! : base[i]! + d * wv[i]!;
          };
          put(cleanRow[b]!, 0, null);
          for (let j = 0; j < P; j++) if (patchRow[b * P + j]! >= 0) put(patchRow[b * P + j]!, deltas[b * P + j]!, writes[j]!);
        }
        // each row attends to its input's clean keys before its position, then to its own: a group of one
        let X = new Tensor(X0, [R, C]);
        const rowGroup = Int32Array.from({ length: R }, (_, r) => r);
        for (const l of later) {
          const rows = {
            pastK: cache.get(model.keyHook(l))!.data, pastV: cache.get(`blocks.${l}.attn.hook_v`)!.data, stride: T, // keys as attention uses them (rotated, for rotary models)
            rowSeq: rowInput, rowPast: rowPos, rowGroup, hookShape: [R, 1] as const,
          };
          X = model.blockRows(l, X, rows, { weights: weights.get(l)! }).resid;
        }
        const pred = predict(ctx, X.data, R);

        // direct path: the clean features plus Δact·write, for the patches that ask for it
        const directAt: Array<[b: number, j: number]> = [];
        for (let b = 0; b < B; b++) for (let j = 0; j < P; j++) if (patches[j]!.direct && deltas[b * P + j] !== 0) directAt.push([b, j]);
        const XD = new Float32Array(directAt.length * C); // [D, C]
        directAt.forEach(([b, j], r) => {
          const feats = X.data.subarray(cleanRow[b]! * C, (cleanRow[b]! + 1) * C);
          const d = deltas[b * P + j]!;
          const wv = writes[j]!;
          for (let i = 0; i < C; i++) XD[r * C + i] = feats[i]! + d * wv[i]!;
        });
        const predDirect = predict(ctx, XD, directAt.length);

        for (let b = 0; b < B; b++) {
          const k = ks[b]!;
          const clean = pred[cleanRow[b]!]!;
          cleanPred[k] = clean;
          for (let j = 0; j < P; j++) {
            const r = patchRow[b * P + j]!;
            const o = outcomes[j]!;
            o.pred[k] = r < 0 ? clean : pred[r]!;
            if (o.predDirect !== null) o.predDirect[k] = clean;
          }
        }
        directAt.forEach(([b, j], r) => void (outcomes[j]!.predDirect![ks[b]!] = predDirect[r]!));
        bar.update(c0 + B);
      });
      yield;
    }
  } finally {
    bar.stop();
  }
  return { cleanPred, outcomes };
}

/**
 * Patching at every position (`--positions all`): each patch sets the neuron at every position t of the
 * input to value(a_t, k) (scale: s·a_t; set, mean, resample: the same value everywhere), one full forward
 * per patch and batch, and the head reads the read position. Δact is the change at the read position;
 * the direct path adds only the read position's own write (other positions reach it only through
 * attention in later blocks, which is the indirect effect). Slower than runPatches: every patch is a full
 * forward, G patches × B inputs stacked into one batch of up to 256 sequences.
 */
export function runPatchesAllPositions(ctx: AnalysisContext, inputs: readonly number[], patches: readonly Patch[], label = "patching (all positions)"): PatchRun {
  return runSteps(runPatchesAllPositionsSteps(ctx, inputs, patches, label));
}

/** runPatchesAllPositions as steps: yields after each stacked forward (up to 256 sequences). */
export function* runPatchesAllPositionsSteps(ctx: AnalysisContext, inputs: readonly number[], patches: readonly Patch[], label = "patching (all positions)"): Generator<void, PatchRun> {
  const c = ctx.run.config;
  const model = ctx.model;
  const C = model.cfg.dModel;
  const { hook, width, writes, cleanPred, outcomes, order } = patchSetup(ctx, inputs, patches);
  const N = inputs.length;
  const featureName = `blocks.${c.feature_layer}.hook_resid_post`;
  const stopAt = Math.max(c.target_layer, c.feature_layer) + 1;
  const reaches = c.feature_layer >= c.target_layer;
  const P = patches.length;
  const BATCH = 32;
  /** Sequences per patched forward: G patches × B inputs stacked into one batch. */
  const ROWS = 256;
  const bar = progress(label, N);
  try {
    for (let k0 = 0; k0 < N; k0 += BATCH) {
      const ks = order.slice(k0, k0 + BATCH); // positions in `inputs` of this batch's examples
      const B = ks.length;
      const batch = exampleBatch(ctx.ds, ks.map((k) => inputs[k]!), padIdFor(model));
      const T = batch.len;
      const readRows = (feats: Float32Array, rows: number): Float32Array => {
        const X = new Float32Array(rows * C); // [rows, C] the features at each row's read position
        for (let r = 0; r < rows; r++) {
          const pos = batch.positions[r % B]!;
          X.set(feats.subarray((r * T + pos) * C, (r * T + pos + 1) * C), r * C);
        }
        return X;
      };
      const { A, cleanX } = noGrad(() => {
        const clean = model.runWithCache(batch, [hook, featureName], { stopAtLayer: stopAt }).cache;
        const A = clean.get(hook)!.data; // [B, T, width]
        const cleanX = readRows(clean.get(featureName)!.data, B); // [B, C]
        const cleanP = predict(ctx, cleanX, B);
        ks.forEach((k, b) => void (cleanPred[k] = cleanP[b]!));
        return { A, cleanX };
      });
      const G = Math.max(1, Math.floor(ROWS / B));
      for (let j0 = 0; j0 < P; j0 += G) {
        const js = Array.from({ length: Math.min(G, P - j0) }, (_, g) => j0 + g); // this forward's patches
        noGrad(() => {
          const R = js.length * B; // row r = g·B + b: patch js[g] on input ks[b]
          const ids = new Int32Array(R * T);
          const mask = new Uint8Array(R * T);
          for (let g = 0; g < js.length; g++) {
            ids.set(batch.ids, g * B * T);
            mask.set(batch.attentionMask, g * B * T);
          }
          const patch: Hook = [hook, (a) => {
            const out = a.clone();
            for (let r = 0; r < R; r++) {
              const pt = patches[js[Math.floor(r / B)]!]!;
              const k = ks[r % B]!;
              for (let t = 0; t < T; t++) {
                const at = (r * T + t) * width + pt.neuron;
                out.data[at] = pt.value(a.data[at]!, k);
              }
            }
            return out;
          }];
          const feats = model.runWithCache({ ids, batch: R, len: T, attentionMask: mask }, [featureName], { stopAtLayer: stopAt, hooks: [patch] }).cache.get(featureName)!.data;
          const pred = predict(ctx, readRows(feats, R), R);
          const XD = new Float32Array(R * C); // the direct path: clean features + Δact·write at the read position
          for (let r = 0; r < R; r++) {
            const j = js[Math.floor(r / B)]!;
            const b = r % B;
            const k = ks[b]!;
            const o = outcomes[j]!;
            const act = A[(b * T + batch.positions[b]!) * width + patches[j]!.neuron]!;
            const v = patches[j]!.value(act, k);
            o.act[k] = act;
            o.patched[k] = v;
            o.pred[k] = pred[r]!;
            const d = reaches ? v - act : 0;
            for (let i = 0; i < C; i++) XD[r * C + i] = cleanX[b * C + i]! + d * writes[j]![i]!;
          }
          if (js.some((j) => patches[j]!.direct)) {
            const pd = predict(ctx, XD, R);
            for (let r = 0; r < R; r++) {
              const o = outcomes[js[Math.floor(r / B)]!]!;
              if (o.predDirect !== null) o.predDirect[ks[r % B]!] = pd[r]!;
            }
          }
        });
        yield; // a turn of the event loop after each stacked forward
      }
      bar.update(k0 + B);
    }
  } finally {
    bar.stop();
  }
  return { cleanPred, outcomes };
}

/**
 * The naive reference for one input: the whole forward pass with a hook that sets the neuron at the
 * read position, then the head. `patchedAct` is read back by a cache hook placed after the patch.
 */
export function patchedReference(ctx: AnalysisContext, input: number, neuron: number, value: (act: number) => number): { act: number; patchedAct: number; pred: number } {
  const c = ctx.run.config;
  const hook = targetHook(runTarget(c));
  const width = targetWidth(ctx);
  const batch = exampleBatch(ctx.ds, [input], padIdFor(ctx.model));
  const pos = batch.positions[0]!;
  const at = pos * width + neuron; // [1, T, width]
  let act = NaN;
  const patch: Hook = [hook, (a) => {
    const out = a.clone();
    act = a.data[at]!;
    out.data[at] = value(act);
    return out;
  }];
  const featureName = `blocks.${c.feature_layer}.hook_resid_post`;
  const { cache } = noGrad(() => ctx.model.runWithCache(batch, [hook, featureName], { stopAtLayer: Math.max(c.target_layer, c.feature_layer) + 1, hooks: [patch] }));
  const C = ctx.model.cfg.dModel;
  const feats = cache.get(featureName)!.data.slice(pos * C, (pos + 1) * C);
  const pred = noGrad(() => predict(ctx, feats, 1))[0]!;
  return { act, patchedAct: cache.get(hook)!.data[at]!, pred };
}

// ---------------------------------------------------------------------------------------------
// The analysis

export interface SettingSummary {
  label: string;
  kind: "scale" | "set" | "zero" | "mean" | "resample";
  /** The factor (scale) or value (set, mean); null for zero and resample. */
  param: number | null;
  mean_act_after: number;
  mean_delta_act: number;
  mean_delta_pred: number;
  mean_abs_delta_pred: number;
  mean_delta_pred_direct: number;
  /** Δpred on Δact across the inputs within this setting; null when Δact does not vary. */
  slope: number | null;
}

export interface FitSummary extends LinearFit {
  pearson_r: number;
}

export interface PatchingSummary {
  target: {
    layer: number; neuron: number; layer_type: string; hook: string; feature_layer: number;
    head_type: string; freeze_mode: string; d_model: number; width: number;
  };
  inputs: {
    n_used: number; n_dataset: number; selection: string; from_split: Record<SplitName, number>;
    /** Dataset indices of the inputs, in the order of sensitivity.values. */
    indices: number[];
    /** For each input, the dataset index of the other input whose dataset target "resample" sets. */
    resample_sources: number[];
    clean_activation: { mean: number; std: number; min: number; max: number };
    /** Pearson r of the clean prediction with the clean activation (the model's own neuron). */
    clean_prediction_r: number;
    /** Pearson r of the clean activation with the dataset's target (1 for a frozen run; lower if fine-tuning changed the neuron). */
    dataset_target_r: number;
  };
  scales: number[];
  set_values: number[];
  /** The value of mean ablation: the dataset's training-split mean. */
  mean_value: number;
  settings: SettingSummary[];
  /** Labels of the settings that are the zero / mean / resample ablations. */
  ablations: { zero: string; mean: string; resample: string };
  fit: FitSummary | null;
  fit_bootstrap: { n_resamples: number; slope_ci95: [number, number] | null; note: string };
  ideal: { slope: 1; slope_minus_ideal: number | null; ci_contains_ideal: boolean | null; ci_contains_zero: boolean | null };
  sensitivity: {
    /** Per-input slope of Δpred on Δact over that input's settings; null where Δact did not vary. */
    values: Array<number | null>;
    n_defined: number; mean: number | null; std: number | null; median: number | null; q05: number | null; q95: number | null; frac_positive: number | null;
  };
  controls: {
    k: number; neurons: number[];
    /** Each control's pooled scale-sweep slope; null when its Δact did not vary. */
    slopes: Array<number | null>;
    /** The target's slope on the same scale sweep. */
    target_scale_slope: number | null;
    n_defined: number;
    /** % of defined controls with |slope| below the target's (ties count half). */
    percentile_abs: number | null;
    mean: number | null; std: number | null;
    /** (target − mean)/std of the controls. */
    z: number | null;
  };
  direct: {
    fit: LinearFit | null;
    total_slope: number | null;
    direct_slope: number | null;
    /** total − direct: the part carried through later blocks. */
    indirect_slope: number | null;
    /** direct / total; null when total ≈ 0. */
    direct_share: number | null;
    /** std·w·W_out[n, :] for a linear regression head (the exact direct slope); else null. */
    analytic_slope: number | null;
  };
  /** Up to 2000 (Δact, Δpred) pairs, evenly subsampled, for the scatter. */
  points: Array<[number, number]>;
  /** Where the neuron was patched for the numbers above: only the read position, or every position. */
  positions: "read" | "all";
  /** With --positions both: the same analysis with the neuron patched at every position. */
  all_positions: {
    fit: FitSummary | null; fit_bootstrap: PatchingSummary["fit_bootstrap"]; controls: PatchingSummary["controls"];
    direct: PatchingSummary["direct"]; settings: SettingSummary[];
  } | null;
  notes: string[];
}

function round6(x: number): number {
  return Number(x.toPrecision(6));
}

function summaryStats(xs: readonly number[]): { mean: number | null; std: number | null; median: number | null; q05: number | null; q95: number | null } {
  if (xs.length === 0) return { mean: null, std: null, median: null, q05: null, q95: null };
  const sorted = Float64Array.from(xs).sort();
  const m = xs.reduce((a, b) => a + b, 0) / xs.length;
  const sd = Math.sqrt(xs.reduce((a, b) => a + (b - m) ** 2, 0) / xs.length);
  return { mean: m, std: sd, median: quantileSorted(sorted, 0.5), q05: quantileSorted(sorted, 0.05), q95: quantileSorted(sorted, 0.95) };
}

function checkList(name: string, xs: readonly number[]): void {
  if (xs.length === 0) throw new SelfreportError(`${name} must list at least one number`);
  const bad = xs.find((x) => !Number.isFinite(x));
  if (bad !== undefined) throw new SelfreportError(`${name}: ${bad} is not a finite number`);
}

export function patchingAnalysis(ctx: AnalysisContext, opts: PatchingOptions = {}): PatchingSummary {
  return runSteps(patchingAnalysisSteps(ctx, opts));
}

/**
 * patchingAnalysis, stopping with Interrupted on SIGINT/SIGTERM (with the CLI's handlers) between
 * batches; `stopped()` is the Interrupted message. Nothing is written here (the CLI writes the result).
 */
export function patchingAnalysisInterruptibly(ctx: AnalysisContext, opts: PatchingOptions, stopped: () => string): Promise<PatchingSummary> {
  return runStepsInterruptibly(patchingAnalysisSteps(ctx, opts), stopped);
}

/** patchingAnalysis as steps: yields between batches of patches and bootstrap resamples. */
export function* patchingAnalysisSteps(ctx: AnalysisContext, opts: PatchingOptions = {}): Generator<void, PatchingSummary> {
  const positions = opts.positions ?? PATCHING_DEFAULTS.positions;
  if (!PATCH_POSITIONS.includes(positions)) throw new SelfreportError(`--positions must be one of ${PATCH_POSITIONS.join(", ")}, got ${String(positions)}`);
  if (positions === "both") {
    const read = yield* patchingAnalysisSteps(ctx, { ...opts, positions: "read" });
    const all = yield* patchingAnalysisSteps(ctx, { ...opts, positions: "all" });
    return {
      ...read,
      all_positions: { fit: all.fit, fit_bootstrap: all.fit_bootstrap, controls: all.controls, direct: all.direct, settings: all.settings },
    };
  }
  const c = ctx.run.config;
  const ds = ctx.ds;
  const nInputs = opts.nInputs ?? PATCHING_DEFAULTS.nInputs;
  const scales = opts.scales ?? [...PATCHING_DEFAULTS.scales];
  const q = ds.meta.stats.quantiles;
  const setValues = opts.setValues ?? [ds.meta.stats.min, q["q25"]!, q["q50"]!, q["q75"]!, ds.meta.stats.max];
  const k = opts.controls ?? PATCHING_DEFAULTS.controls;
  const seed = opts.seed ?? PATCHING_DEFAULTS.seed;
  const nBoot = opts.bootstrap ?? PATCHING_DEFAULTS.bootstrap;
  const width = targetWidth(ctx);
  const n = c.target_neuron;
  if (!Number.isInteger(nInputs) || nInputs < 3) throw new SelfreportError(`--n-inputs must be an integer ≥ 3, got ${nInputs}`);
  checkList("--scales", scales);
  checkList("--set-values", setValues);
  if (!Number.isInteger(k) || k < 0 || k > width - 1) throw new SelfreportError(`--controls must be an integer in 0..${width - 1} (the other ${c.layer_type === "mlp_post" ? "neurons" : "dimensions"} of layer ${c.target_layer}), got ${k}`);
  if (n < 0 || n >= width) throw new SelfreportError(`the run's target neuron ${n} is out of range for the model (0..${width - 1})`);
  const notes: string[] = [];

  const { indices: inputs, counts } = selectInputs(ds, nInputs);
  const N = inputs.length;
  if (N < 3) throw new SelfreportError(`the dataset has only ${N} examples; patching needs at least 3`);

  // target settings; the values set, the mean and the resampled values all come from the dataset
  const rng = new Rng(seed);
  const meanValue = ds.meta.stats.mean;
  const sources = Int32Array.from({ length: N }, (_, i) => (i + 1 + rng.int(N - 1)) % N); // another input, never i itself
  interface Setting { label: string; kind: SettingSummary["kind"]; param: number | null; value: (a: number, k: number) => number }
  const settings: Setting[] = [
    ...scales.map((s): Setting => ({ label: `scale ×${s}`, kind: "scale", param: s, value: (a) => s * a })),
    ...setValues.map((v): Setting => ({ label: `set ${round6(v)}`, kind: "set", param: v, value: () => v })),
  ];
  const zeroLabel = scales.includes(0) ? `scale ×0` : "zero";
  if (!scales.includes(0)) settings.push({ label: "zero", kind: "zero", param: null, value: () => 0 });
  settings.push({ label: "mean", kind: "mean", param: meanValue, value: () => meanValue });
  settings.push({ label: "resample", kind: "resample", param: null, value: (_a, i) => ds.targets[inputs[sources[i]!]!]! });

  // controls: k other neurons of the layer, the scale sweep only
  const perm = Array.from(rng.fork().permutation(width)).filter((m) => m !== n);
  const controls = perm.slice(0, k).sort((a, b) => a - b);
  const patches: Patch[] = [
    ...settings.map((s) => ({ neuron: n, value: s.value, direct: true })),
    ...controls.flatMap((m) => scales.map((s) => ({ neuron: m, value: (a: number) => s * a }))),
  ];
  const { cleanPred, outcomes } = positions === "all" ? yield* runPatchesAllPositionsSteps(ctx, inputs, patches) : yield* runPatchesSteps(ctx, inputs, patches);
  const targetAct = outcomes[0]!.act; // the clean activation of the target in ctx.model

  // the activation scale below which a spread of Δact is float noise
  const actScale = ds.meta.stats.std > 0 ? ds.meta.stats.std : 1;
  const minSxx = (count: number): number => count * (1e-6 * actScale) ** 2;

  // per setting, pooled, per input
  const S = settings.length;
  const allX: number[] = [];
  const allY: number[] = [];
  const allYd: number[] = [];
  const perInput: Moments[] = Array.from({ length: N }, () => emptyMoments());
  const settingSummaries = settings.map((s, j): SettingSummary => {
    const o = outcomes[j]!;
    const dx = Array.from({ length: N }, (_, i) => o.patched[i]! - o.act[i]!);
    const dy = Array.from({ length: N }, (_, i) => o.pred[i]! - cleanPred[i]!);
    const dyd = Array.from({ length: N }, (_, i) => o.predDirect![i]! - cleanPred[i]!);
    for (let i = 0; i < N; i++) {
      allX.push(dx[i]!);
      allY.push(dy[i]!);
      allYd.push(dyd[i]!);
      addPair(perInput[i]!, dx[i]!, dy[i]!);
    }
    const avg = (xs: ArrayLike<number>): number => Array.from(xs).reduce((a, b) => a + b, 0) / N;
    return {
      label: s.label, kind: s.kind, param: s.param,
      mean_act_after: avg(o.patched), mean_delta_act: avg(dx), mean_delta_pred: avg(dy),
      mean_abs_delta_pred: avg(dy.map(Math.abs)), mean_delta_pred_direct: avg(dyd),
      slope: linearFit(dx, dy, minSxx(N))?.slope ?? null,
    };
  });
  const lf = linearFit(allX, allY, minSxx(allX.length));
  const fit: FitSummary | null = lf === null ? null : { ...lf, pearson_r: pearson(allX, allY) };
  if (fit === null) notes.push("Δact did not vary across the settings: no fit (is the neuron constant on these inputs?)");

  // bootstrap over inputs (the pairs of one input are not independent, so the t interval is optimistic)
  const bootRng = new Rng(seed + 1);
  const boot: number[] = [];
  for (let b = 0; b < nBoot; b++) {
    const m = emptyMoments();
    for (let i = 0; i < N; i++) addMoments(m, perInput[bootRng.int(N)]!);
    const s = slopeOf(m, minSxx(m.n));
    if (s !== null) boot.push(s);
    if (b % 50 === 49) yield;
  }
  const bootSorted = Float64Array.from(boot).sort();
  const bootCi: [number, number] | null = boot.length >= 2 ? [quantileSorted(bootSorted, 0.025), quantileSorted(bootSorted, 0.975)] : null;

  const ci = fit?.slope_ci95 ?? null;
  const sens = perInput.map((m) => slopeOf(m, minSxx(m.n)));
  const sensDefined = sens.filter((s): s is number => s !== null);
  const sensStats = summaryStats(sensDefined);

  // controls vs the target on the scale sweep
  const scaleSlope = (neuronOutcomes: PatchOutcome[]): number | null => {
    const x: number[] = [];
    const y: number[] = [];
    for (const o of neuronOutcomes) for (let i = 0; i < N; i++) {
      x.push(o.patched[i]! - o.act[i]!);
      y.push(o.pred[i]! - cleanPred[i]!);
    }
    return linearFit(x, y, minSxx(x.length))?.slope ?? null;
  };
  const targetScaleSlope = scaleSlope(outcomes.slice(0, scales.length));
  const controlSlopes = controls.map((_, i) => scaleSlope(outcomes.slice(S + i * scales.length, S + (i + 1) * scales.length)));
  const definedControls = controlSlopes.filter((s): s is number => s !== null);
  const cStats = summaryStats(definedControls);
  let percentile: number | null = null;
  if (targetScaleSlope !== null && definedControls.length > 0) {
    const t = Math.abs(targetScaleSlope);
    const below = definedControls.reduce((acc, s) => acc + (Math.abs(s) < t ? 1 : Math.abs(s) === t ? 0.5 : 0), 0);
    percentile = (100 * below) / definedControls.length;
  }
  if (k > 0 && definedControls.length < k) notes.push(`${k - definedControls.length} control neuron(s) had no spread of Δact on the scale sweep (activation ≈ 0 on every input): slope undefined, left out`);

  // direct vs total
  const dfit = linearFit(allX, allYd, minSxx(allX.length));
  const totalSlope = fit?.slope ?? null;
  const directSlope = dfit?.slope ?? null;
  const head = ctx.run.head;
  let analytic: number | null = null;
  if (ctx.run.headType === "regression" && c.head_config.hidden_dim === null) {
    const w = head.get("output.weight")!.data;
    const wv = writeVector(ctx, n);
    let d = 0;
    for (let i = 0; i < wv.length; i++) d += w[i]! * wv[i]!;
    analytic = c.feature_layer >= c.target_layer ? d * c.activation_std : 0;
  }
  if (c.feature_layer < c.target_layer) notes.push(`the head reads layer ${c.feature_layer}, before the target layer ${c.target_layer}: the neuron cannot affect the prediction (every effect is 0)`);
  if (c.feature_layer === c.target_layer) notes.push("the head reads the target layer's own resid_post: nothing is downstream, so the total effect is the direct effect");
  if (c.freeze_mode !== "frozen") notes.push(`${c.freeze_mode} run: the patched model is the fine-tuned one; set values and the mean come from the dataset, i.e. from the base model's neuron`);
  if (ctx.run.headType !== "regression") notes.push(`${ctx.run.headType} head: the prediction Σ p_i·centre_i saturates at the outer bin centres, so the relation is not linear far from the data`);

  // points for the scatter, evenly subsampled
  const stride = Math.max(1, Math.ceil(allX.length / MAX_POINTS));
  const points: Array<[number, number]> = [];
  for (let i = 0; i < allX.length; i += stride) points.push([round6(allX[i]!), round6(allY[i]!)]);

  const cleanSorted = Float64Array.from(targetAct).sort();
  const ts = summaryStats(Array.from(targetAct));
  return {
    target: {
      layer: c.target_layer, neuron: n, layer_type: c.layer_type, hook: targetHook(runTarget(c)), feature_layer: c.feature_layer,
      head_type: ctx.run.headType, freeze_mode: c.freeze_mode, d_model: ctx.model.cfg.dModel, width,
    },
    inputs: {
      n_used: N, n_dataset: ds.meta.n, selection: "test split first, then validation, then train; evenly spaced within a split", from_split: counts,
      indices: inputs, resample_sources: Array.from(sources, (j) => inputs[j]!),
      clean_activation: { mean: ts.mean!, std: ts.std!, min: cleanSorted[0]!, max: cleanSorted[N - 1]! },
      clean_prediction_r: pearson(cleanPred, targetAct),
      dataset_target_r: pearson(targetAct, inputs.map((i) => ds.targets[i]!)),
    },
    scales, set_values: setValues, mean_value: meanValue,
    settings: settingSummaries,
    ablations: { zero: zeroLabel, mean: "mean", resample: "resample" },
    fit,
    fit_bootstrap: { n_resamples: nBoot, slope_ci95: bootCi, note: "percentile interval of the pooled slope over inputs resampled with replacement (all settings of an input move together)" },
    ideal: {
      slope: 1,
      slope_minus_ideal: totalSlope === null ? null : totalSlope - 1,
      ci_contains_ideal: ci === null ? null : ci[0] <= 1 && 1 <= ci[1],
      ci_contains_zero: ci === null ? null : ci[0] <= 0 && 0 <= ci[1],
    },
    sensitivity: { values: sens, n_defined: sensDefined.length, ...sensStats, frac_positive: sensDefined.length === 0 ? null : sensDefined.filter((s) => s > 0).length / sensDefined.length },
    controls: {
      k, neurons: controls, slopes: controlSlopes, target_scale_slope: targetScaleSlope, n_defined: definedControls.length,
      percentile_abs: percentile, mean: cStats.mean, std: cStats.std,
      z: targetScaleSlope !== null && cStats.std !== null && cStats.std > 0 ? (targetScaleSlope - cStats.mean!) / cStats.std : null,
    },
    direct: {
      fit: dfit, total_slope: totalSlope, direct_slope: directSlope,
      indirect_slope: totalSlope !== null && directSlope !== null ? totalSlope - directSlope : null,
      direct_share: totalSlope !== null && directSlope !== null && Math.abs(totalSlope) > 1e-12 ? directSlope / totalSlope : null,
      analytic_slope: analytic,
    },
    points,
    positions,
    all_positions: null,
    notes,
  };
}

// ---------------------------------------------------------------------------------------------
// Plots

/** SVGs by name: Δact vs Δpred scatter with the fit, per-input sensitivity, control slopes, direct vs total. */
export async function patchingPlots(s: PatchingSummary): Promise<Record<string, string>> {
  const t = s.target;
  const who = t.layer_type === "mlp_post" ? `L${t.layer}N${t.neuron}` : `mlp_out[${t.neuron}] of layer ${t.layer}`;
  const plots: Record<string, string> = {};
  const f = s.fit;
  plots["delta_scatter"] = await renderSvg(scatter({
    title: `Patching ${who}: change in prediction vs change in activation`,
    subtitle: f === null ? "no fit" : `R² ${f.r2 === null ? "n/a" : f.r2.toFixed(3)}, slope 95% CI ${f.slope_ci95 == null ? "n/a" : ciText(f.slope_ci95)}; ideal slope 1`,
    points: s.points.map(([x, y]) => ({ x, y })),
    ...(f === null ? {} : { fitLine: { slope: f.slope, intercept: f.intercept } }),
    xLabel: "Δ activation (patched − clean)", yLabel: "Δ prediction (activation units)",
  }));
  const sens = s.sensitivity.values.filter((v): v is number => v !== null);
  plots["sensitivity"] = await renderSvg(histogram({
    title: `Per-input sensitivity to ${who}`, values: sens, bins: 30, markValue: 1, markLabel: "ideal (1)", clipQuantile: 0.02,
    xLabel: "per-input slope of Δprediction on Δactivation",
    subtitle: s.sensitivity.median === null ? undefined : `median ${s.sensitivity.median.toFixed(3)}`,
  }));
  const ctl = s.controls.slopes.filter((v): v is number => v !== null);
  if (s.controls.k > 0) {
    plots["control_slopes"] = await renderSvg(histogram({
      title: `Scale-sweep slopes: ${s.controls.k} random neurons of layer ${t.layer} vs the target`,
      values: ctl, bins: 20,
      ...(s.controls.target_scale_slope === null ? {} : { markValue: s.controls.target_scale_slope, markLabel: who }),
      ...(s.controls.percentile_abs === null ? {} : { subtitle: `${who}'s |slope| is above ${s.controls.percentile_abs.toFixed(0)}% of the controls` }),
      xLabel: "slope of Δprediction on Δactivation",
    }));
  }
  const d = s.direct;
  plots["direct_vs_total"] = await renderSvg(barChart({
    title: `Direct vs total effect of ${who}`,
    categories: ["total", "direct", "indirect", "ideal"],
    values: [d.total_slope ?? NaN, d.direct_slope ?? NaN, d.indirect_slope ?? NaN, 1],
    yLabel: "slope Δprediction / Δactivation",
    subtitle: `direct = the W_out write alone; indirect = total − direct${d.direct_share === null ? "" : `; direct share ${(100 * d.direct_share).toFixed(1)}%`}`,
  }));
  return plots;
}
