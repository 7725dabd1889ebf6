/**
 * Next-token loss straight from the final residual stream: mean cross-entropy of
 * logits = x · W (+ b) against targets, without ever holding the [N, V] logits.
 *
 * With GPT-2's 50257-token vocabulary the logits of a 16 × 128 batch are 400 MB; this op works
 * through `chunkRows` rows at a time (forward: product, log-sum-exp; backward: recompute the
 * product, softmax − one-hot, two products into dx and dW), so memory stays at one chunk and the
 * time is four sgemms plus two row kernels per chunk. The forward keeps only the log-sum-exp
 * of each row. Same numbers as crossEntropy(linear(x, W, b), targets), checked in the tests.
 */
import { Tensor, ShapeError, record, gradOf, shapeStr } from "../tensor.ts";
import { getBackend } from "../backend/index.ts";
import { gemm } from "./matmul.ts";
import { checkTargets } from "./nn.ts";

export interface UnembedLossOptions {
  /**
   * How W is stored: "in_out" = [C, V] (TransformerLens's W_U), "out_in" = [V, C] (a tied
   * embedding W_E, used as its transpose). Default "in_out".
   */
  layout?: "in_out" | "out_in";
  /** Unembedding bias [V], or null. */
  bias?: Tensor | null;
  /** Targets equal to this are skipped; the mean is over the rest. */
  ignoreIndex?: number;
  /** Rows per chunk (default 256: 51 MB of logits at V = 50257). */
  chunkRows?: number;
}

/** x [N, C], W [C, V] or [V, C] → scalar mean cross-entropy against targets (N of them). */
export function unembedCrossEntropy(x: Tensor, W: Tensor, targets: ArrayLike<number>, opts: UnembedLossOptions = {}): Tensor {
  const layout = opts.layout ?? "in_out";
  const bias = opts.bias ?? null;
  const chunk = opts.chunkRows ?? 256;
  if (x.ndim !== 2) throw new ShapeError(`unembedCrossEntropy: x must be [N, C], got ${shapeStr(x.shape)}`);
  const [N, C] = x.shape as [number, number];
  const V = layout === "in_out" ? W.shape[1]! : W.shape[0]!;
  const wantW = layout === "in_out" ? [C, V] : [V, C];
  if (W.ndim !== 2 || W.shape[0] !== wantW[0] || W.shape[1] !== wantW[1]) {
    const want = layout === "in_out" ? `[${C}, vocab]` : `[vocab, ${C}]`;
    throw new ShapeError(`unembedCrossEntropy: W must be ${want} (layout ${layout}) for x ${shapeStr(x.shape)}, got ${shapeStr(W.shape)}`);
  }
  if (bias && (bias.ndim !== 1 || bias.shape[0] !== V)) {
    throw new ShapeError(`unembedCrossEntropy: bias must be [${V}], got ${shapeStr(bias.shape)}`);
  }
  if (!(Number.isInteger(chunk) && chunk > 0)) throw new RangeError(`unembedCrossEntropy: chunkRows must be a positive integer, got ${chunk}`);
  const count = checkTargets("unembedCrossEntropy", targets, N, V, opts.ignoreIndex);
  const be = getBackend();
  const X = x.data;
  const buf = new Float32Array(Math.min(chunk, N) * V); // [R, V] logits of one chunk

  /** buf[0..R) ← x[r0..r0+R) · W + b */
  const logitsOf = (r0: number, R: number): void => {
    const xs = X.subarray(r0 * C, (r0 + R) * C);
    if (layout === "in_out") gemm(false, false, R, V, C, xs, 0, W.data, 0, 0, buf, 0, 1);
    else gemm(false, true, R, V, C, xs, 0, W.data, 0, 0, buf, 0, 1);
    if (bias) {
      const b = bias.data;
      for (let r = 0; r < R; r++) for (let v = 0; v < V; v++) buf[r * V + v]! += b[v]!;
    }
  };

  const lse = new Float32Array(N);
  let total = 0;
  for (let r0 = 0; r0 < N; r0 += chunk) {
    const R = Math.min(chunk, N - r0);
    logitsOf(r0, R);
    const l = lse.subarray(r0, r0 + R);
    be.logSumExpRows(buf, R, V, l);
    for (let r = 0; r < R; r++) {
      const t = targets[r0 + r]!;
      if (t !== opts.ignoreIndex) total += l[r]! - buf[r * V + t]!;
    }
  }
  const loss = count === 0 ? 0 : total / count;
  const inputs = bias ? [x, W, bias] : [x, W];

  return record("unembedCrossEntropy", new Tensor(Float32Array.of(loss), []), inputs, (g) => {
    if (count === 0) return;
    const k = g[0]! / count;
    const gx = x.requiresGrad ? gradOf(x) : null;
    const gW = W.requiresGrad ? gradOf(W) : null;
    const gb = bias?.requiresGrad ? gradOf(bias) : null;
    const scale = new Float32Array(Math.min(chunk, N));
    for (let r0 = 0; r0 < N; r0 += chunk) {
      const R = Math.min(chunk, N - r0);
      logitsOf(r0, R);
      for (let r = 0; r < R; r++) scale[r] = targets[r0 + r] === opts.ignoreIndex ? 0 : k;
      be.softmaxScaleRows(buf, R, V, lse.subarray(r0, r0 + R), scale); // buf = dlogits [R, V]
      for (let r = 0; r < R; r++) if (scale[r] !== 0) buf[r * V + targets[r0 + r]!]! -= k;
      const xs = X.subarray(r0 * C, (r0 + R) * C);
      if (gx) {
        const gxs = gx.subarray(r0 * C, (r0 + R) * C); // += dlogits · Wᵀ
        if (layout === "in_out") gemm(false, true, R, C, V, buf, 0, W.data, 0, 1, gxs, 0, 1);
        else gemm(false, false, R, C, V, buf, 0, W.data, 0, 1, gxs, 0, 1);
      }
      if (gW) {
        if (layout === "in_out") gemm(true, false, C, V, R, xs, 0, buf, 0, 1, gW, 0, 1); // += xᵀ · dlogits
        else gemm(true, false, V, C, R, buf, 0, xs, 0, 1, gW, 0, 1); //                   += dlogitsᵀ · x
      }
      if (gb) for (let r = 0; r < R; r++) for (let v = 0; v < V; v++) gb[v]! += buf[r * V + v]!;
    }
  });
}
