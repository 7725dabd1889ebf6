/**
 * Frozen regression heads for K neurons of one layer, trained together as one multi-output head.
 *
 * Every neuron's head reads the same cached features X [n, C] and sees the same batches (the
 * single trainer's shuffle depends only on the seed and the epoch), so one step for all K neurons is
 *   Out  [B, K] = X_b [B, C] · Wᵀ [C, K] + b        (one sgemm)
 *   dW   [K, C] = dOutᵀ [K, B] · X_b [B, C]         (one sgemm)
 * and everything else is per neuron, written to repeat the single trainer (src/selfreport/train.ts,
 * frozen regression, no hidden layer, no dropout) operation for operation:
 *   init            initHead(RegressionHead, seed): the same row for every neuron
 *   labels          (a − mean)/std with the training split's population mean/std, stored as float32
 *   loss            mse: float64 sum of float32 differences, rounded to float32; dOut = (2/B)·(out − y)
 *   clipping        the global norm over (W row, bias), clipGradNorm's formula
 *   AdamW           torch.optim.AdamW as src/tensor/optim.ts (bias without decay), float32 state
 *   schedule        warmupCosine with warm-up min(warmup, ⌊total/2⌋) and minRatio 0.1
 *   early stopping  validation loss per epoch (chunks of 128, as evaluate()), best weights kept,
 *                   stop after `patience` epochs without improvement by 1e-6
 *   metrics         predictions out·std + mean as float32, regressionMetrics, the mean baseline
 * A neuron that stops leaves the active set: the matrices are compacted so later steps cost only
 * the neurons still training. The sgemm's summation order differs from the single trainer's
 * [B, C]·[C, 1] product, so results agree to float32 rounding (test/sweep/multihead.test.ts checks
 * r to 1e-4), not bit for bit.
 */
import { Rng, getBackend, warmupCosine } from "../tensor/index.ts";
import { SelfreportError } from "../errors.ts";
import { initHead, makeHeadConfig } from "../selfreport/predictor.ts";
import { activationStats, regressionMetrics, type ActivationStats } from "../selfreport/stats.ts";
import type { TestMetrics, TrainOptions } from "../selfreport/train.ts";

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
  /** Called after every epoch with the number of neurons still training. */
  onEpoch?: (epoch: number, active: number) => void;
}

export interface NeuronFitOk {
  ok: true;
  /** output.weight [C] and output.bias of the best epoch (standardised units). */
  weight: Float32Array;
  bias: number;
  stats: ActivationStats;
  test: TestMetrics;
  validation: TestMetrics;
  epochsRun: number;
  bestEpoch: number;
  stoppedEarly: boolean;
  steps: number;
  /** Per epoch: mean training loss and validation loss (standardised MSE). */
  curve: Array<{ epoch: number; train: number; val: number }>;
}

export type NeuronFit = NeuronFitOk | { ok: false; error: string };

const B1 = 0.9;
const B2 = 0.999;
const EPS = 1e-8;
const EVAL_CHUNK = 128;

function indicesOf(split: Int32Array, code: number): number[] {
  const out: number[] = [];
  for (let i = 0; i < split.length; i++) if (split[i] === code) out.push(i);
  return out;
}

/** Rows idx of X [n, C] into out [idx.length, C]. */
function gatherRows(X: Float32Array, C: number, idx: readonly number[], out: Float32Array): void {
  for (let r = 0; r < idx.length; r++) out.set(X.subarray(idx[r]! * C, (idx[r]! + 1) * C), r * C);
}

/** Trains K frozen regression heads together; result k is what `train()` gives for neuron k alone. */
export function trainMultiHead(input: MultiHeadInput, o: MultiHeadOptions): NeuronFit[] {
  const { features: X, C, targets: A, K, split } = input;
  const n = split.length;
  if (X.length !== n * C) throw new SelfreportError(`multi-output head: features have ${X.length} values, expected n·C = ${n}·${C}`);
  if (A.length !== n * K) throw new SelfreportError(`multi-output head: targets have ${A.length} values, expected n·K = ${n}·${K}`);
  const train = indicesOf(split, 0);
  const val = indicesOf(split, 1);
  const test = indicesOf(split, 2);
  if (train.length === 0 || val.length === 0 || test.length === 0) {
    throw new SelfreportError(`the dataset has ${train.length}/${val.length}/${test.length} train/validation/test examples; every split needs at least one`);
  }
  const sgemm = getBackend().sgemm;
  const results: NeuronFit[] = new Array<NeuronFit>(K);

  // ---- per-neuron statistics and standardised labels Y [n, K]
  const stats: ActivationStats[] = [];
  const Y = new Float32Array(n * K);
  const col = new Float64Array(train.length);
  const usable: number[] = [];
  for (let k = 0; k < K; k++) {
    train.forEach((i, j) => (col[j] = A[i * K + k]!));
    const s = activationStats(Float32Array.from(col));
    stats.push(s);
    if (!(s.std > 0)) {
      results[k] = { ok: false, error: `the target activation is constant (${s.mean}) on the training split: nothing to predict; choose another neuron` };
      continue;
    }
    usable.push(k);
    for (let i = 0; i < n; i++) Y[i * K + k] = (A[i * K + k]! - s.mean) / s.std;
  }

  // ---- state of the active neurons, packed: row r belongs to neuron ids[r]
  const init = initHead(makeHeadConfig("regression", { inputDim: C }), o.seed, null);
  const w0 = init.get("output.weight")!.data; // [1, C]
  const b0 = init.get("output.bias")!.data[0]!;
  let ids = usable.slice();
  let Ka = ids.length;
  let W = new Float32Array(Ka * C);
  for (let r = 0; r < Ka; r++) W.set(w0, r * C);
  let bias = new Float32Array(Ka).fill(b0);
  let mW = new Float32Array(Ka * C);
  let vW = new Float32Array(Ka * C);
  let mB = new Float32Array(Ka);
  let vB = new Float32Array(Ka);
  const bestW = new Float32Array(K * C);
  const bestB = new Float32Array(K);
  for (const k of ids) {
    bestW.set(w0, k * C);
    bestB[k] = b0;
  }
  const bestVal = new Float64Array(K).fill(Infinity);
  const bestEpoch = new Int32Array(K).fill(-1);
  const badEpochs = new Int32Array(K);
  const curve: Array<Array<{ epoch: number; train: number; val: number }>> = Array.from({ length: K }, () => []);
  const failed = new Map<number, string>();
  /** How training ended, for each neuron that finished it. */
  const ended = new Map<number, { epochsRun: number; stoppedEarly: boolean; steps: number }>();

  const bs = o.batchSize;
  const stepsPerEpoch = Math.ceil(train.length / bs);
  const totalSteps = stepsPerEpoch * o.epochs;
  const schedule = warmupCosine({ lr: o.lr, warmupSteps: Math.min(o.warmup, Math.floor(totalSteps / 2)), totalSteps, minRatio: 0.1 });
  const Xb = new Float32Array(Math.max(bs, EVAL_CHUNK) * C);
  let Out = new Float32Array(Math.max(bs, EVAL_CHUNK) * Ka);
  let dW = new Float32Array(Ka * C);
  let dB = new Float32Array(Ka);
  const lossSum = new Float64Array(K);
  let step = 0;
  let epoch = 0;

  /** Keeps the rows whose neuron passes `keep`, in order. */
  const compact = (keep: (k: number) => boolean): void => {
    let w = 0;
    for (let r = 0; r < Ka; r++) {
      if (!keep(ids[r]!)) continue;
      if (w !== r) {
        W.copyWithin(w * C, r * C, (r + 1) * C);
        mW.copyWithin(w * C, r * C, (r + 1) * C);
        vW.copyWithin(w * C, r * C, (r + 1) * C);
        bias[w] = bias[r]!;
        mB[w] = mB[r]!;
        vB[w] = vB[r]!;
        ids[w] = ids[r]!;
      }
      w++;
    }
    Ka = w;
    ids = ids.slice(0, Ka);
    W = W.slice(0, Ka * C);
    mW = mW.slice(0, Ka * C);
    vW = vW.slice(0, Ka * C);
    bias = bias.slice(0, Ka);
    mB = mB.slice(0, Ka);
    vB = vB.slice(0, Ka);
    Out = new Float32Array(Math.max(bs, EVAL_CHUNK) * Ka);
    dW = new Float32Array(Ka * C);
    dB = new Float32Array(Ka);
  };

  /** Out [rows, Ka] = X_rows · Wᵀ + b, each element rounded to float32 as matmul then add. */
  const forward = (idx: readonly number[]): void => {
    const rows = idx.length;
    gatherRows(X, C, idx, Xb);
    sgemm(false, true, rows, Ka, C, 1, Xb, C, W, C, 0, Out, Ka);
    for (let r = 0; r < rows; r++) {
      const o2 = r * Ka;
      for (let a = 0; a < Ka; a++) Out[o2 + a] = Out[o2 + a]! + bias[a]!;
    }
  };

  while (epoch < o.epochs && Ka > 0) {
    const order = new Rng(o.seed * 7919 + epoch).shuffle([...train]);
    lossSum.fill(0);
    for (let s = 0; s < stepsPerEpoch && Ka > 0; s++) {
      const idx = order.slice(s * bs, (s + 1) * bs);
      const Bn = idx.length;
      const lr = schedule(step);
      forward(idx);
      // loss per neuron, and dOut in place of Out
      const kf = 2 / Bn;
      let anyFailed = false;
      for (let a = 0; a < Ka; a++) {
        const k = ids[a]!;
        let sse = 0;
        for (let r = 0; r < Bn; r++) {
          const d = Out[r * Ka + a]! - Y[idx[r]! * K + k]!;
          sse += d * d;
        }
        const loss = Math.fround(sse / Bn);
        if (!Number.isFinite(loss)) {
          failed.set(k, `loss became ${loss} at step ${step} (epoch ${epoch + 1}); lower the learning rate`);
          anyFailed = true;
        }
        lossSum[k]! += loss;
      }
      for (let r = 0; r < Bn; r++) {
        const o2 = r * Ka;
        const yo = idx[r]! * K;
        for (let a = 0; a < Ka; a++) Out[o2 + a] = kf * (Out[o2 + a]! - Y[yo + ids[a]!]!);
      }
      // dW [Ka, C] = dOutᵀ · X_b; db = column sums of dOut
      sgemm(true, false, Ka, C, Bn, 1, Out, Ka, Xb, C, 0, dW, C);
      for (let a = 0; a < Ka; a++) {
        let sb = 0;
        for (let r = 0; r < Bn; r++) sb += Out[r * Ka + a]!;
        dB[a] = sb;
      }
      // per neuron: clip by its own gradient norm; then AdamW over all of them (t = step + 1 for every active neuron)
      if (o.gradClip > 0) {
        for (let a = 0; a < Ka; a++) {
          const base = a * C;
          let ss = 0;
          for (let c = 0; c < C; c++) ss += dW[base + c]! * dW[base + c]!;
          ss += dB[a]! * dB[a]!;
          const norm = Math.sqrt(ss);
          if (norm > o.gradClip) {
            const f = o.gradClip / (norm + 1e-6);
            for (let c = 0; c < C; c++) dW[base + c]! *= f;
            dB[a]! *= f;
          }
        }
      }
      const t = step + 1;
      const bc1 = 1 - Math.pow(B1, t);
      const bc2 = 1 - Math.pow(B2, t);
      const be = getBackend(); // the update train() applies, element for element (weights decay, biases do not)
      be.adamwUpdate(W, dW, mW, vW, Ka * C, lr, B1, B2, EPS, 1 - lr * o.weightDecay, bc1, bc2);
      be.adamwUpdate(bias, dB, mB, vB, Ka, lr, B1, B2, EPS, 1, bc1, bc2);
      step++;
      if (anyFailed) compact((k) => !failed.has(k));
    }
    if (Ka === 0) break;
    // ---- end of epoch: validation loss per neuron (chunks as evaluate())
    const valLoss = new Float64Array(Ka);
    for (let s = 0; s < val.length; s += EVAL_CHUNK) {
      const chunk = val.slice(s, s + EVAL_CHUNK);
      forward(chunk);
      for (let a = 0; a < Ka; a++) {
        const k = ids[a]!;
        let sse = 0;
        for (let r = 0; r < chunk.length; r++) {
          const d = Out[r * Ka + a]! - Y[chunk[r]! * K + k]!;
          sse += d * d;
        }
        valLoss[a]! += Math.fround(sse / chunk.length) * chunk.length;
      }
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
        bestW.set(W.subarray(a * C, (a + 1) * C), k * C);
        bestB[k] = bias[a]!;
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
  const testM = splitMetrics(X, C, A, K, test, done, bestW, bestB, stats);
  const valM = splitMetrics(X, C, A, K, val, done, bestW, bestB, stats);
  for (const k of done) {
    const e = ended.get(k)!;
    results[k] = {
      ok: true, weight: bestW.slice(k * C, (k + 1) * C), bias: bestB[k]!, stats: stats[k]!, test: testM.get(k)!, validation: valM.get(k)!,
      epochsRun: e.epochsRun, bestEpoch: bestEpoch[k]!, stoppedEarly: e.stoppedEarly, steps: e.steps, curve: curve[k]!,
    };
  }
  return results;
}

/** Test metrics of neurons `ks` (best weights) on the examples idx, as testMetrics() in the trainer. */
function splitMetrics(X: Float32Array, C: number, A: Float32Array, K: number, idx: readonly number[], ks: readonly number[], bestW: Float32Array, bestB: Float32Array, stats: readonly ActivationStats[]): Map<number, TestMetrics> {
  const out = new Map<number, TestMetrics>();
  if (ks.length === 0) return out;
  const Kd = ks.length;
  const Wd = new Float32Array(Kd * C);
  ks.forEach((k, a) => Wd.set(bestW.subarray(k * C, (k + 1) * C), a * C));
  const m = idx.length;
  const Xs = new Float32Array(m * C);
  gatherRows(X, C, idx, Xs);
  const Out = new Float32Array(m * Kd); // [m, Kd]
  getBackend().sgemm(false, true, m, Kd, C, 1, Xs, C, Wd, C, 0, Out, Kd);
  const pred = new Float32Array(m);
  const target = new Float64Array(m);
  ks.forEach((k, a) => {
    const s = stats[k]!;
    for (let r = 0; r < m; r++) {
      const o = Math.fround(Out[r * Kd + a]! + bestB[k]!);
      pred[r] = o * s.std + s.mean;
      target[r] = A[idx[r]! * K + k]!;
    }
    const met = regressionMetrics(pred, target);
    const base = regressionMetrics(new Float64Array(m).fill(s.mean), target);
    out.set(k, { ...met, accuracy: null, baseline: { description: "always predict the training mean", mse: base.mse, mae: base.mae, r2: base.r2 } });
  });
  return out;
}
