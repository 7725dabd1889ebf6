/**
 * Frozen heads for K neurons of one layer, trained together as one multi-output head: regression,
 * classification or token heads without a hidden layer.
 *
 * Every neuron's head reads the same cached features X [n, C] (the token head: ln_final(X), computed
 * once) and sees the same batches (the single trainer's shuffle depends only on the seed and the
 * epoch), so with P outputs per neuron (1 for regression, the number of bins otherwise) one step for
 * all K neurons is
 *   Out  [B, K·P] = X_b [B, C] · Wᵀ [C, K·P] + b     (one sgemm; neuron k's outputs are columns k·P … k·P+P−1)
 *   dW   [K·P, C] = dOutᵀ [K·P, B] · X_b [B, C]      (one sgemm)
 * and everything else is per neuron, written to repeat the single trainer (src/selfreport/train.ts,
 * frozen, no hidden layer, no dropout) operation for operation:
 *   init            initHead(config, seed, model): the same rows for every neuron
 *   labels          regression: (a − mean)/std with the training split's population mean/std, as float32;
 *                   bins: binOf(a, quantile edges of the neuron's training split), as prepare() does
 *   loss            regression: mse (float64 sum of float32 differences, rounded to float32), dOut = (2/B)·(out − y);
 *                   bins: crossEntropy on the rows Out[b, k·P … k·P+P−1] as [B·K, P] (the backend's
 *                   log-sum-exp and scaled softmax, so the same kernels as the single trainer)
 *   clipping        the global norm over the neuron's (W rows, bias), clipGradNorm's formula
 *   AdamW           torch.optim.AdamW as src/tensor/optim.ts (bias without decay), float32 state
 *   schedule        warmupCosine with warm-up min(warmup, ⌊total/2⌋) and minRatio 0.1
 *   early stopping  validation loss per epoch (chunks of 128, as evaluate()), best weights kept,
 *                   stop after `patience` epochs without improvement by 1e-6
 *   metrics         predictions as predictionsFromOutput (regression: out·std + mean; bins: Σ softmax·centre),
 *                   bin accuracy as argmaxLast, regressionMetrics, the mean baseline
 * A neuron that stops leaves the active set: the matrices are compacted so later steps cost only
 * the neurons still training. The sgemm's summation order differs from the single trainer's
 * [B, C]·[C, P] product, so results agree to float32 rounding (test/sweep/multihead.test.ts checks
 * r to 1e-4), not bit for bit.
 */
import { Rng, Tensor, getBackend, noGrad, warmupCosine } from "../tensor/index.ts";
import { SelfreportError } from "../errors.ts";
import type { HookedTransformer } from "../model/transformer.ts";
import { initHead, makeHeadConfig, type HeadConfig, type HeadType } from "../selfreport/predictor.ts";
import { activationStats, binCentres, binOf, quantileBinEdges, regressionMetrics, type ActivationStats } from "../selfreport/stats.ts";
import type { TestMetrics, TrainOptions } from "../selfreport/train.ts";
import { ridgeBasis, ridgeFit, type RidgeBasis } from "../selfreport/ridge.ts";

/** The single-neuron trainer's options that the multi-output trainer shares (same meaning, same math). */
export type MultiHeadOptions = Pick<TrainOptions, "epochs" | "batchSize" | "lr" | "weightDecay" | "warmup" | "gradClip" | "seed" | "patience">;

export interface MultiHeadInput {
  /** Cached residual features [n, C]. */
  features: Float32Array;
  C: number;
  /** Target activations [n, K], column k = neuron k. */
  targets: Float32Array;
  K: number;
  /** [n] 0 train, 1 validation, 2 test. */
  split: Int32Array;
  /** The head of every neuron (default regression). */
  head?: HeadType;
  /** Classification: the number of quantile bins (default 10, as the single trainer). */
  numClasses?: number | null;
  /** The token head's base model: its final LayerNorm and digit unembedding. */
  model?: HookedTransformer | null;
  /** The token head's ten digit tokens (modelDigitTokens of the base model; default GPT-2's 15–24). */
  digitTokens?: readonly number[];
  /** Called after every epoch with the number of neurons still training. */
  onEpoch?: (epoch: number, active: number) => void;
}

export interface NeuronFitOk {
  ok: true;
  /** The head's config (the same for every neuron). */
  headConfig: HeadConfig;
  /** output.weight [P, C] and output.bias [P] of the best epoch (regression: standardised units). */
  weight: Float32Array;
  bias: Float32Array;
  stats: ActivationStats;
  /** The quantile bin edges of the neuron's training split (numBins + 1; the run's bin_edges). */
  binEdges: number[];
  test: TestMetrics;
  validation: TestMetrics;
  epochsRun: number;
  bestEpoch: number;
  stoppedEarly: boolean;
  steps: number;
  /** Per epoch: mean training loss and validation loss (standardised MSE, or cross-entropy). */
  curve: Array<{ epoch: number; train: number; val: number }>;
  /** Set when the ridge solver fitted the head (no epochs): the chosen penalty and its validation MSE. */
  ridge?: { lambda: number; alpha: number; valLoss: number; grid: Array<{ alpha: number; lambda: number; val_loss: number }> };
}

export type NeuronFit = NeuronFitOk | { ok: false; error: string };

const B1 = 0.9;
const B2 = 0.999;
const EPS = 1e-8;
const EVAL_CHUNK = 128;
/** The dataset builder's default number of bins (DEFAULT num_bins), which the token head needs. */
const DEFAULT_BINS = 10;

function indicesOf(split: Int32Array, code: number): number[] {
  const out: number[] = [];
  for (let i = 0; i < split.length; i++) if (split[i] === code) out.push(i);
  return out;
}

/** Rows idx of X [n, C] into out [idx.length, C]. */
function gatherRows(X: Float32Array, C: number, idx: readonly number[], out: Float32Array): void {
  for (let r = 0; r < idx.length; r++) out.set(X.subarray(idx[r]! * C, (idx[r]! + 1) * C), r * C);
}

/** What the loss reads per example and neuron: standardised targets, or class indices. */
type Labels = { kind: "regression"; Y: Float32Array } | { kind: "bins"; classes: Int32Array; centres: number[][] };

/**
 * Per-neuron loss of Out [rows, Ka·P] against the labels of examples idx (neuron of column block a
 * = ids[a]), as the single trainer's loss op computes it; with `dB`, Out is replaced by dLoss/dOut and
 * dB by its column sums. Regression: Out holds the outputs with their bias, and dB is left to the
 * caller. Bins: Out holds X·Wᵀ without the bias, which crossEntropyBlocks adds (bias add, log-sum-exp,
 * loss, softmax gradient and bias gradient in one pass over each row, the same kernels as the single
 * trainer's crossEntropy); `lab` [rows·Ka] is its scratch for the labels.
 */
function lossAndGrad(
  Out: Float32Array, idx: readonly number[], ids: readonly number[], K: number, P: number, labels: Labels, lossOut: Float64Array,
  bias: Float32Array, dB: Float32Array | null, lab: Int32Array,
): void {
  const rows = idx.length;
  const Ka = ids.length;
  if (labels.kind === "regression") {
    const Y = labels.Y;
    for (let a = 0; a < Ka; a++) {
      const k = ids[a]!;
      let sse = 0;
      for (let r = 0; r < rows; r++) {
        const d = Out[r * Ka + a]! - Y[idx[r]! * K + k]!;
        sse += d * d;
      }
      lossOut[a] = Math.fround(sse / rows);
    }
    if (dB === null) return;
    const kf = 2 / rows;
    for (let r = 0; r < rows; r++) {
      const o = r * Ka;
      const yo = idx[r]! * K;
      for (let a = 0; a < Ka; a++) Out[o + a] = kf * (Out[o + a]! - Y[yo + ids[a]!]!);
    }
    return;
  }
  // cross-entropy over each [rows·Ka] row of P logits (crossEntropy in src/tensor/ops/nn.ts)
  const cls = labels.classes;
  for (let r = 0; r < rows; r++) {
    const co = idx[r]! * K;
    const o = r * Ka;
    for (let a = 0; a < Ka; a++) lab[o + a] = cls[co + ids[a]!]!;
  }
  getBackend().crossEntropyBlocks(Out, rows, Ka, P, bias, lab, 1 / rows, lossOut, dB);
  for (let a = 0; a < Ka; a++) lossOut[a] = Math.fround(lossOut[a]! / rows);
}

/** Trains K frozen heads together; result k is what `train()` gives for neuron k alone. */
export function trainMultiHead(input: MultiHeadInput, o: MultiHeadOptions): NeuronFit[] {
  const { C, targets: A, K, split } = input;
  const type = input.head ?? "regression";
  const n = split.length;
  if (input.features.length !== n * C) throw new SelfreportError(`multi-output head: features have ${input.features.length} values, expected n·C = ${n}·${C}`);
  if (A.length !== n * K) throw new SelfreportError(`multi-output head: targets have ${A.length} values, expected n·K = ${n}·${K}`);
  const model = input.model ?? null;
  if (type === "token" && model === null) throw new SelfreportError("multi-output head: the token head needs the base model (its final LayerNorm and unembedding)");
  const train = indicesOf(split, 0);
  const val = indicesOf(split, 1);
  const test = indicesOf(split, 2);
  if (train.length === 0 || val.length === 0 || test.length === 0) {
    throw new SelfreportError(`the dataset has ${train.length}/${val.length}/${test.length} train/validation/test examples; every split needs at least one`);
  }
  const headCfg = makeHeadConfig(type, {
    inputDim: C, ...(type === "classification" && input.numClasses != null ? { numClasses: input.numClasses } : {}), ...(input.digitTokens !== undefined ? { digitTokens: input.digitTokens } : {}),
  });
  const P = type === "regression" ? 1 : headCfg.num_classes!;
  const numBins = type === "regression" ? DEFAULT_BINS : P;
  // the token head reads ln_final(features): one row-wise LayerNorm, the same values per row as per batch
  const X = type === "token" ? noGrad(() => model!.lnFinal(new Tensor(input.features, [n, C])).data) : input.features;
  const be = getBackend();
  const sgemm = be.sgemm;
  const results: NeuronFit[] = new Array<NeuronFit>(K);

  // ---- per-neuron statistics, bin edges and labels [n, K]
  const stats: ActivationStats[] = [];
  const edges: number[][] = [];
  const Y = type === "regression" ? new Float32Array(n * K) : null;
  const classes = type === "regression" ? null : new Int32Array(n * K);
  const col = new Float32Array(train.length);
  const usable: number[] = [];
  for (let k = 0; k < K; k++) {
    train.forEach((i, j) => (col[j] = A[i * K + k]!));
    const s = activationStats(col);
    const e = quantileBinEdges(col, numBins);
    stats.push(s);
    edges.push(e);
    if (!(s.std > 0)) {
      results[k] = { ok: false, error: `the target activation is constant (${s.mean}) on the training split: nothing to predict; choose another neuron` };
      continue;
    }
    usable.push(k);
    if (Y !== null) for (let i = 0; i < n; i++) Y[i * K + k] = (A[i * K + k]! - s.mean) / s.std;
    else for (let i = 0; i < n; i++) classes![i * K + k] = binOf(A[i * K + k]!, e);
  }
  const labels: Labels = Y !== null ? { kind: "regression", Y } : { kind: "bins", classes: classes!, centres: edges.map(binCentres) };

  // ---- state of the active neurons, packed: rows r·P … r·P+P−1 belong to neuron ids[r]
  const init = initHead(headCfg, o.seed, model);
  const w0 = init.get("output.weight")!.data; // [P, C]
  const b0 = init.get("output.bias")!.data; //   [P]
  const PC = P * C;
  let ids = usable.slice();
  let Ka = ids.length;
  let W = new Float32Array(Ka * PC);
  let bias = new Float32Array(Ka * P);
  for (let r = 0; r < Ka; r++) {
    W.set(w0, r * PC);
    bias.set(b0, r * P);
  }
  let mW = new Float32Array(Ka * PC);
  let vW = new Float32Array(Ka * PC);
  let mB = new Float32Array(Ka * P);
  let vB = new Float32Array(Ka * P);
  const bestW = new Float32Array(K * PC);
  const bestB = new Float32Array(K * P);
  for (const k of ids) {
    bestW.set(w0, k * PC);
    bestB.set(b0, k * P);
  }
  const bestVal = new Float64Array(K).fill(Infinity);
  const bestEpoch = new Int32Array(K).fill(-1);
  const badEpochs = new Int32Array(K);
  const curve: Array<Array<{ epoch: number; train: number; val: number }>> = Array.from({ length: K }, () => []);
  const failed = new Map<number, string>();
  /** How training ended, for each neuron that finished it. */
  const ended = new Map<number, { epochsRun: number; stoppedEarly: boolean; steps: number }>();

  const bs = o.batchSize;
  const maxRows = Math.max(bs, EVAL_CHUNK);
  const stepsPerEpoch = Math.ceil(train.length / bs);
  const totalSteps = stepsPerEpoch * o.epochs;
  const schedule = warmupCosine({ lr: o.lr, warmupSteps: Math.min(o.warmup, Math.floor(totalSteps / 2)), totalSteps, minRatio: 0.1 });
  const Xb = new Float32Array(maxRows * C);
  let Out = new Float32Array(maxRows * Ka * P);
  let dW = new Float32Array(Ka * PC);
  let dB = new Float32Array(Ka * P);
  const lab = new Int32Array(P > 1 ? maxRows * Ka : 0); // labels of a batch [rows, Ka ≤ its first Ka]
  let stepLoss = new Float64Array(Ka);
  const lossSum = new Float64Array(K);
  let step = 0;
  let epoch = 0;

  /** Keeps the neurons that pass `keep`, in order. */
  const compact = (keep: (k: number) => boolean): void => {
    let w = 0;
    for (let r = 0; r < Ka; r++) {
      if (!keep(ids[r]!)) continue;
      if (w !== r) {
        for (const m of [W, mW, vW]) m.copyWithin(w * PC, r * PC, (r + 1) * PC);
        for (const m of [bias, mB, vB]) m.copyWithin(w * P, r * P, (r + 1) * P);
        ids[w] = ids[r]!;
      }
      w++;
    }
    Ka = w;
    ids = ids.slice(0, Ka);
    W = W.slice(0, Ka * PC);
    mW = mW.slice(0, Ka * PC);
    vW = vW.slice(0, Ka * PC);
    bias = bias.slice(0, Ka * P);
    mB = mB.slice(0, Ka * P);
    vB = vB.slice(0, Ka * P);
    Out = new Float32Array(maxRows * Ka * P);
    dW = new Float32Array(Ka * PC);
    dB = new Float32Array(Ka * P);
    stepLoss = new Float64Array(Ka);
  };

  /**
   * Out [rows, Ka·P] = X_rows · Wᵀ + b, each element rounded to float32 as matmul then add; bin heads
   * leave + b to the loss (crossEntropyBlocks adds it, in the same float32 rounding).
   */
  const forward = (idx: readonly number[]): void => {
    const rows = idx.length;
    const KP = Ka * P;
    gatherRows(X, C, idx, Xb);
    sgemm(false, true, rows, KP, C, 1, Xb, C, W, C, 0, Out, KP);
    if (P > 1) return;
    for (let r = 0; r < rows; r++) {
      const o2 = r * KP;
      for (let j = 0; j < KP; j++) Out[o2 + j] = Out[o2 + j]! + bias[j]!;
    }
  };

  while (epoch < o.epochs && Ka > 0) {
    const order = new Rng(o.seed * 7919 + epoch).shuffle([...train]);
    lossSum.fill(0);
    for (let s = 0; s < stepsPerEpoch && Ka > 0; s++) {
      const idx = order.slice(s * bs, (s + 1) * bs);
      const Bn = idx.length;
      const KP = Ka * P;
      const lr = schedule(step);
      forward(idx);
      lossAndGrad(Out, idx, ids, K, P, labels, stepLoss, bias, dB, lab); // Out now holds dOut (bins: and dB its column sums)
      let anyFailed = false;
      for (let a = 0; a < Ka; a++) {
        const k = ids[a]!;
        const loss = stepLoss[a]!;
        if (!Number.isFinite(loss)) {
          failed.set(k, `loss became ${loss} at step ${step} (epoch ${epoch + 1}); lower the learning rate`);
          anyFailed = true;
        }
        lossSum[k]! += loss;
      }
      // dW [Ka·P, C] = dOutᵀ · X_b; db = column sums of dOut
      sgemm(true, false, KP, C, Bn, 1, Out, KP, Xb, C, 0, dW, C);
      if (P === 1) {
        for (let j = 0; j < KP; j++) {
          let sb = 0;
          for (let r = 0; r < Bn; r++) sb += Out[r * KP + j]!;
          dB[j] = sb;
        }
      }
      // per neuron: clip by its own gradient norm, then the update train() applies, element for element
      // (t = step + 1 for every active neuron; weights decay, biases do not): one fused kernel
      const t = step + 1;
      be.clipAdamwBlocks(W, dW, mW, vW, PC, bias, dB, mB, vB, P, Ka, o.gradClip, lr, B1, B2, EPS, 1 - lr * o.weightDecay, 1 - Math.pow(B1, t), 1 - Math.pow(B2, t));
      step++;
      if (anyFailed) compact((k) => !failed.has(k));
    }
    if (Ka === 0) break;
    // ---- end of epoch: validation loss per neuron (chunks as evaluate())
    const valLoss = new Float64Array(Ka);
    for (let s = 0; s < val.length; s += EVAL_CHUNK) {
      const chunk = val.slice(s, s + EVAL_CHUNK);
      forward(chunk);
      lossAndGrad(Out, chunk, ids, K, P, labels, stepLoss, bias, null, lab);
      for (let a = 0; a < Ka; a++) valLoss[a]! += stepLoss[a]! * chunk.length;
    }
    epoch++;
    const stopped = new Set<number>();
    for (let a = 0; a < Ka; a++) {
      const k = ids[a]!;
      const vl = valLoss[a]! / val.length;
      curve[k]!.push({ epoch, train: lossSum[k]! / stepsPerEpoch, val: vl });
      if (vl < bestVal[k]! - 1e-6) {
        bestVal[k] = vl;
        bestEpoch[k] = epoch;
        badEpochs[k] = 0;
        bestW.set(W.subarray(a * PC, (a + 1) * PC), k * PC);
        bestB.set(bias.subarray(a * P, (a + 1) * P), k * P);
      } else badEpochs[k]!++;
      if (badEpochs[k]! >= o.patience) stopped.add(k);
    }
    for (const k of stopped) ended.set(k, { epochsRun: epoch, stoppedEarly: epoch < o.epochs, steps: step });
    if (stopped.size > 0) compact((k) => !stopped.has(k));
    input.onEpoch?.(epoch, Ka);
  }
  for (const k of ids) ended.set(k, { epochsRun: epoch, stoppedEarly: false, steps: step });
  for (const [k, error] of failed) results[k] = { ok: false, error };

  // ---- metrics with the best weights, all finished neurons at once
  const done = usable.filter((k) => !failed.has(k));
  const best = { W: bestW, b: bestB, P };
  const testM = splitMetrics(X, C, A, K, test, done, best, labels, stats);
  const valM = splitMetrics(X, C, A, K, val, done, best, labels, stats);
  for (const k of done) {
    const e = ended.get(k)!;
    results[k] = {
      ok: true, headConfig: headCfg, weight: bestW.slice(k * PC, (k + 1) * PC), bias: bestB.slice(k * P, (k + 1) * P), stats: stats[k]!, binEdges: edges[k]!,
      test: testM.get(k)!, validation: valM.get(k)!, epochsRun: e.epochsRun, bestEpoch: bestEpoch[k]!, stoppedEarly: e.stoppedEarly, steps: e.steps, curve: curve[k]!,
    };
  }
  return results;
}

/**
 * Test metrics of neurons `ks` (best weights) on the examples idx, as testMetrics() in the trainer:
 * predictions in chunks of EVAL_CHUNK rows (a [rows, K·P] block at a time, never [m, K·P]).
 */
function splitMetrics(
  X: Float32Array, C: number, A: Float32Array, K: number, idx: readonly number[], ks: readonly number[],
  best: { W: Float32Array; b: Float32Array; P: number }, labels: Labels, stats: readonly ActivationStats[],
): Map<number, TestMetrics> {
  const out = new Map<number, TestMetrics>();
  if (ks.length === 0) return out;
  const { P } = best;
  const PC = P * C;
  const Kd = ks.length;
  const KP = Kd * P;
  const Wd = new Float32Array(Kd * PC);
  const bd = new Float32Array(KP);
  ks.forEach((k, a) => {
    Wd.set(best.W.subarray(k * PC, (k + 1) * PC), a * PC);
    bd.set(best.b.subarray(k * P, (k + 1) * P), a * P);
  });
  const m = idx.length;
  const pred = new Float32Array(Kd * m); // [Kd, m]
  const correct = new Int32Array(Kd);
  const be = getBackend();
  const Xs = new Float32Array(EVAL_CHUNK * C);
  const Out = new Float32Array(EVAL_CHUNK * KP);
  for (let s = 0; s < m; s += EVAL_CHUNK) {
    const chunk = idx.slice(s, s + EVAL_CHUNK);
    const rows = chunk.length;
    gatherRows(X, C, chunk, Xs);
    be.sgemm(false, true, rows, KP, C, 1, Xs, C, Wd, C, 0, Out, KP);
    for (let r = 0; r < rows; r++) for (let j = 0; j < KP; j++) Out[r * KP + j] = Out[r * KP + j]! + bd[j]!;
    if (labels.kind === "regression") {
      ks.forEach((k, a) => {
        const st = stats[k]!;
        for (let r = 0; r < rows; r++) pred[a * m + s + r] = Out[r * KP + a]! * st.std + st.mean;
      });
      continue;
    }
    // bin accuracy on the logits (argmaxLast: the first maximum), then predictions Σ softmax·centre
    ks.forEach((k, a) => {
      for (let r = 0; r < rows; r++) {
        const o = r * KP + a * P;
        let bestV = -Infinity;
        let bi = 0;
        for (let c = 0; c < P; c++) {
          if (Out[o + c]! > bestV) {
            bestV = Out[o + c]!;
            bi = c;
          }
        }
        if (bi === labels.classes[chunk[r]! * K + k]) correct[a]!++;
      }
    });
    be.softmaxRows(Out, rows * Kd, P, Out);
    ks.forEach((k, a) => {
      const centres = labels.centres[k]!;
      for (let r = 0; r < rows; r++) {
        const o = r * KP + a * P;
        let sum = 0;
        for (let c = 0; c < P; c++) sum += Out[o + c]! * centres[c]!;
        pred[a * m + s + r] = sum;
      }
    });
  }
  const target = new Float64Array(m);
  ks.forEach((k, a) => {
    const st = stats[k]!;
    for (let r = 0; r < m; r++) target[r] = A[idx[r]! * K + k]!;
    const met = regressionMetrics(pred.subarray(a * m, (a + 1) * m), target);
    const base = regressionMetrics(new Float64Array(m).fill(st.mean), target);
    out.set(k, {
      ...met, accuracy: labels.kind === "regression" ? null : correct[a]! / m,
      baseline: { description: "always predict the training mean", mse: base.mse, mae: base.mae, r2: base.r2 },
    });
  });
  return out;
}

/**
 * Ridge heads (src/selfreport/ridge.ts) for K neurons of one layer at once: frozen linear regression,
 * result k is what train() with solver "ridge" gives for neuron k alone (the same labels, the same
 * solve, λ chosen per neuron). `basis` (ridgeBasis of the same features and splits) may be passed in to
 * share its eigendecomposition between layers; it is computed here otherwise.
 */
export function ridgeMultiHead(input: MultiHeadInput, basis?: RidgeBasis): NeuronFit[] {
  const { C, targets: A, K, split } = input;
  const type = input.head ?? "regression";
  if (type !== "regression") throw new SelfreportError(`the ridge solver fits linear regression heads only, not ${type} heads`);
  const n = split.length;
  if (input.features.length !== n * C) throw new SelfreportError(`multi-output head: features have ${input.features.length} values, expected n·C = ${n}·${C}`);
  if (A.length !== n * K) throw new SelfreportError(`multi-output head: targets have ${A.length} values, expected n·K = ${n}·${K}`);
  const train = indicesOf(split, 0);
  const val = indicesOf(split, 1);
  const test = indicesOf(split, 2);
  if (train.length === 0 || val.length === 0 || test.length === 0) {
    throw new SelfreportError(`the dataset has ${train.length}/${val.length}/${test.length} train/validation/test examples; every split needs at least one`);
  }
  const headCfg = makeHeadConfig("regression", { inputDim: C });
  const results: NeuronFit[] = new Array<NeuronFit>(K);
  const stats: ActivationStats[] = [];
  const edges: number[][] = [];
  const col = new Float32Array(train.length);
  const usable: number[] = [];
  for (let k = 0; k < K; k++) {
    train.forEach((i, j) => (col[j] = A[i * K + k]!));
    const s = activationStats(col);
    stats.push(s);
    edges.push(quantileBinEdges(col, DEFAULT_BINS));
    if (!(s.std > 0)) {
      results[k] = { ok: false, error: `the target activation is constant (${s.mean}) on the training split: nothing to predict; choose another neuron` };
      continue;
    }
    usable.push(k);
  }
  if (usable.length === 0) return results;
  // standardised labels of the usable neurons [n, Ku], float32 as prepare() makes them
  const Ku = usable.length;
  const Y = new Float32Array(n * Ku);
  usable.forEach((k, a) => {
    const s = stats[k]!;
    for (let i = 0; i < n; i++) Y[i * Ku + a] = (A[i * K + k]! - s.mean) / s.std;
  });
  const b = basis ?? ridgeBasis(input.features, C, train, val);
  if (b.C !== C || b.train.length !== train.length || b.val.length !== val.length) throw new SelfreportError("ridge: the basis passed in was made from other features or splits");
  const fit = ridgeFit(b, Y, Ku);
  const W = new Float32Array(K * C);
  const bias = new Float32Array(K);
  usable.forEach((k, a) => {
    for (let c = 0; c < C; c++) W[k * C + c] = fit.W[a * C + c]!;
    bias[k] = fit.b[a]!;
  });
  // splitMetrics reads only the kind of regression labels (predictions = out·std + mean)
  const labels: Labels = { kind: "regression", Y: new Float32Array(0) };
  const best = { W, b: bias, P: 1 };
  const testM = splitMetrics(input.features, C, A, K, test, usable, best, labels, stats);
  const valM = splitMetrics(input.features, C, A, K, val, usable, best, labels, stats);
  usable.forEach((k, a) => {
    const grid = Array.from(b.lambdas, (l, g) => ({ alpha: b.alphas[g]!, lambda: l, val_loss: fit.gridValLoss[g * Ku + a]! }));
    results[k] = {
      ok: true, headConfig: headCfg, weight: W.slice(k * C, (k + 1) * C), bias: bias.slice(k, k + 1), stats: stats[k]!, binEdges: edges[k]!,
      test: testM.get(k)!, validation: valM.get(k)!, epochsRun: 0, bestEpoch: 0, stoppedEarly: false, steps: 0, curve: [],
      ridge: { lambda: fit.lambda[a]!, alpha: fit.alpha[a]!, valLoss: fit.valLoss[a]!, grid },
    };
  });
  return results;
}
