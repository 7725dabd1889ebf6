/**
 * Neural-network kernels, each a tight loop over rows of the last axis with its backward beside it:
 * LayerNorm (in TransformerLens's two hookable steps), GELU (gelu_new), softmax, log-softmax,
 * cross-entropy, MSE and dropout.
 */
import { Tensor, ShapeError, record, gradOf, shapeStr, emptyF32, isGradEnabled } from "../tensor.ts";
import type { Rng } from "../random.ts";
import { getBackend } from "../backend/index.ts";

function lastDim(op: string, x: Tensor): [rows: number, C: number] {
  if (x.ndim < 1) throw new ShapeError(`${op}: input must have at least one dim, got ${shapeStr(x.shape)}`);
  const C = x.shape[x.ndim - 1]!;
  return [C === 0 ? 0 : x.size / C, C];
}

// ---------------------------------------------------------------------------------------------
// LayerNorm = lnScale → lnNormalize → affineLast, so that hook_scale and hook_normalized
// (TransformerLens's names) sit between real ops and can be read or replaced.

/** scale = sqrt(mean((x - mean(x))²) + eps) over the last axis: [..., C] → [..., 1]. */
export function lnScale(x: Tensor, eps: number): Tensor {
  const [rows, C] = lastDim("lnScale", x);
  const X = x.data;
  const out = new Float32Array(rows);
  const mu = new Float32Array(rows);
  getBackend().lnScaleRows(X, rows, C, eps, out, mu);
  return record("lnScale", new Tensor(out, [...x.shape.slice(0, -1), 1]), [x], (g) => {
    getBackend().lnScaleBackwardRows(g, X, rows, C, out, mu, gradOf(x)); // d scale / d x_c = (x_c − mean) / (C · scale)
  });
}

/** (x - mean(x)) / scale over the last axis, with scale [..., 1] from lnScale. */
export function lnNormalize(x: Tensor, scale: Tensor): Tensor {
  const [rows, C] = lastDim("lnNormalize", x);
  if (scale.size !== rows) throw new ShapeError(`lnNormalize: scale ${shapeStr(scale.shape)} does not match input ${shapeStr(x.shape)}`);
  const X = x.data;
  const S = scale.data;
  const out = emptyF32(x.size);
  getBackend().lnNormalizeRows(X, rows, C, S, out);
  return record("lnNormalize", new Tensor(out, x.shape), [x, scale], (g) => {
    getBackend().lnNormalizeBackwardRows(g, out, rows, C, S, x.requiresGrad ? gradOf(x) : null, scale.requiresGrad ? gradOf(scale) : null);
  });
}

/** x · w + b with w, b [C] broadcast over the last axis of x [..., C]. */
export function affineLast(x: Tensor, w: Tensor, b: Tensor | null): Tensor {
  const [rows, C] = lastDim("affineLast", x);
  if (w.size !== C || (b !== null && b.size !== C)) {
    throw new ShapeError(`affineLast: weight ${shapeStr(w.shape)}${b ? ` / bias ${shapeStr(b.shape)}` : ""} do not match last dim of ${shapeStr(x.shape)}`);
  }
  const X = x.data;
  const W = w.data;
  const out = emptyF32(x.size);
  getBackend().affineRows(X, rows, C, W, b === null ? null : b.data, out);
  return record("affineLast", new Tensor(out, x.shape), b === null ? [x, w] : [x, w, b], (g) => {
    const gb = b !== null && b.requiresGrad ? gradOf(b) : null;
    getBackend().affineBackwardRows(g, X, rows, C, W, x.requiresGrad ? gradOf(x) : null, w.requiresGrad ? gradOf(w) : null, gb);
  });
}

/**
 * Full LayerNorm over the last axis as one op, for when nobody hooks its scale: affine((x - mean) /
 * sqrt(var + eps)) = affineLast(lnNormalize(x, lnScale(x, eps)), w, b), with the same bits, forward and
 * backward. One pass per row instead of three, and x̂ is not kept: the backward recomputes it.
 */
export function layerNorm(x: Tensor, w: Tensor, b: Tensor | null, eps: number): Tensor {
  const [rows, C] = lastDim("layerNorm", x);
  if (w.size !== C || (b !== null && b.size !== C)) {
    throw new ShapeError(`layerNorm: weight ${shapeStr(w.shape)}${b ? ` / bias ${shapeStr(b.shape)}` : ""} do not match last dim of ${shapeStr(x.shape)}`);
  }
  const X = x.data;
  const W = w.data;
  const out = emptyF32(x.size); //            [..., C]
  const scale = new Float32Array(rows); //    [rows]
  const mean = new Float32Array(rows); //     [rows]
  getBackend().layerNormRows(X, rows, C, eps, W, b === null ? null : b.data, out, scale, mean);
  return record("layerNorm", new Tensor(out, x.shape), b === null ? [x, w] : [x, w, b], (g) => {
    // the three ops' backwards in the order autograd runs them (affineLast, lnNormalize, lnScale), x̂ recomputed
    const gw = w.requiresGrad ? gradOf(w) : null;
    const gb = b !== null && b.requiresGrad ? gradOf(b) : null;
    getBackend().layerNormBackwardRows(g, X, rows, C, scale, mean, W, x.requiresGrad ? gradOf(x) : null, gw, gb);
  });
}

// ---------------------------------------------------------------------------------------------
// Activations

/**
 * GPT-2's GELU (`gelu_new`): 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))). The loops are the
 * backend's (native: vectorised; js: Math.tanh), forward and backward.
 */
export function geluNew(x: Tensor): Tensor {
  const X = x.data;
  const n = X.length;
  const out = emptyF32(n);
  getBackend().geluForward(X, n, out);
  return record("geluNew", new Tensor(out, x.shape), [x], (g) => {
    getBackend().geluBackward(X, g, n, gradOf(x));
  });
}

/**
 * geluNew written over x's own buffer (the same bits as geluNew), for a fresh activation that nobody
 * else holds, outside autograd: it spares a new output buffer, whose first writes cost more than the
 * GELU itself. Throws if x would need a gradient.
 */
export function geluNewInPlace(x: Tensor): Tensor {
  if (isGradEnabled() && x.requiresGrad) throw new Error("geluNewInPlace: x requires a gradient; use geluNew, which keeps its input for the backward pass");
  getBackend().geluForward(x.data, x.size, x.data);
  return x;
}

// ---------------------------------------------------------------------------------------------
// Softmax family (last axis). -Infinity entries get probability 0; an all -Infinity row gives zeros.

export function softmax(x: Tensor): Tensor {
  const [rows, C] = lastDim("softmax", x);
  const out = emptyF32(x.size);
  getBackend().softmaxRows(x.data, rows, C, out);
  return record("softmax", new Tensor(out, x.shape), [x], (g) => getBackend().softmaxBackwardRows(g, out, rows, C, gradOf(x)));
}

export function logSoftmax(x: Tensor): Tensor {
  const [rows, C] = lastDim("logSoftmax", x);
  const X = x.data;
  const lse = new Float32Array(rows);
  getBackend().logSumExpRows(X, rows, C, lse);
  const out = new Float32Array(x.size);
  for (let r = 0; r < rows; r++) {
    const o = r * C;
    const l = lse[r]!;
    for (let c = 0; c < C; c++) out[o + c] = X[o + c]! - l;
  }
  return record("logSoftmax", new Tensor(out, x.shape), [x], (g) => {
    // gx = g - softmax · Σg
    const gx = gradOf(x);
    const sums = new Float32Array(rows);
    for (let r = 0; r < rows; r++) {
      let s = 0;
      for (let c = 0; c < C; c++) s += g[r * C + c]!;
      sums[r] = s;
    }
    const soft = X.slice(0, rows * C);
    getBackend().softmaxScaleRows(soft, rows, C, lse, sums);
    for (let i = 0; i < rows * C; i++) gx[i]! += g[i]! - soft[i]!;
  });
}

export interface CrossEntropyOptions {
  /** Targets equal to this are skipped (e.g. padding); the mean is over the rest. */
  ignoreIndex?: number;
}

/** Checks the targets of a cross-entropy and counts those not ignored. */
export function checkTargets(op: string, targets: ArrayLike<number>, rows: number, V: number, ignoreIndex: number | undefined): number {
  if (targets.length !== rows) throw new ShapeError(`${op}: ${targets.length} targets for ${rows} rows`);
  let count = 0;
  for (let r = 0; r < rows; r++) {
    const t = targets[r]!;
    if (t === ignoreIndex) continue;
    if (!Number.isInteger(t) || t < 0 || t >= V) throw new ShapeError(`${op}: target ${t} at row ${r} is out of range for ${V} classes`);
    count++;
  }
  return count;
}

/**
 * Mean cross-entropy of logits [N, V] (or [..., V]) against integer targets (one per row).
 * Fused: the backward recomputes the softmax from the saved log-sum-exp instead of storing [N, V].
 */
export function crossEntropy(logits: Tensor, targets: ArrayLike<number>, opts: CrossEntropyOptions = {}): Tensor {
  const [rows, V] = lastDim("crossEntropy", logits);
  if (targets.length !== rows) throw new ShapeError(`crossEntropy: ${targets.length} targets for ${rows} rows of logits ${shapeStr(logits.shape)}`);
  const count = checkTargets("crossEntropy", targets, rows, V, opts.ignoreIndex);
  const X = logits.data;
  const lse = new Float32Array(rows);
  getBackend().logSumExpRows(X, rows, V, lse);
  let total = 0;
  for (let r = 0; r < rows; r++) {
    const t = targets[r]!;
    if (t !== opts.ignoreIndex) total += lse[r]! - X[r * V + t]!;
  }
  const loss = count === 0 ? 0 : total / count;
  return record("crossEntropy", new Tensor(Float32Array.of(loss), []), [logits], (g) => {
    if (count === 0) return;
    const k = g[0]! / count;
    const scale = new Float32Array(rows);
    for (let r = 0; r < rows; r++) scale[r] = targets[r] === opts.ignoreIndex ? 0 : k;
    const soft = X.slice(0, rows * V); // k · softmax, then − k at each target
    getBackend().softmaxScaleRows(soft, rows, V, lse, scale);
    for (let r = 0; r < rows; r++) if (scale[r] !== 0) soft[r * V + targets[r]!]! -= k;
    const gx = gradOf(logits);
    for (let i = 0; i < soft.length; i++) gx[i]! += soft[i]!;
  });
}

/** Mean squared error between two tensors of the same shape. */
export function mse(pred: Tensor, target: Tensor): Tensor {
  if (pred.size !== target.size) throw new ShapeError(`mse: prediction ${shapeStr(pred.shape)} and target ${shapeStr(target.shape)} differ in size`);
  const n = pred.size;
  const P = pred.data;
  const T = target.data;
  let s = 0;
  for (let i = 0; i < n; i++) {
    const d = P[i]! - T[i]!;
    s += d * d;
  }
  return record("mse", new Tensor(Float32Array.of(n === 0 ? 0 : s / n), []), [pred, target], (g) => {
    const k = (2 * g[0]!) / n;
    const gp = pred.requiresGrad ? gradOf(pred) : null;
    const gt = target.requiresGrad ? gradOf(target) : null;
    for (let i = 0; i < n; i++) {
      const d = k * (P[i]! - T[i]!);
      if (gp) gp[i]! += d;
      if (gt) gt[i]! -= d;
    }
  });
}

/** Inverted dropout: zeroes each element with probability p and scales the rest by 1/(1-p). */
export function dropout(x: Tensor, p: number, rng: Rng, training = true): Tensor {
  if (!(p >= 0 && p < 1)) throw new RangeError(`dropout: p must be in [0, 1), got ${p}`);
  if (!training || p === 0) return x;
  const n = x.size;
  const keep = 1 / (1 - p);
  const mask = new Float32Array(n);
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    mask[i] = rng.uniform() >= p ? keep : 0;
    out[i] = x.data[i]! * mask[i]!;
  }
  return record("dropout", new Tensor(out, x.shape), [x], (g) => {
    const gx = gradOf(x);
    for (let i = 0; i < n; i++) gx[i]! += g[i]! * mask[i]!;
  });
}
