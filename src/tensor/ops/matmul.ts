/**
 * Matrix products, all through the active Backend's sgemm (OpenBLAS or the TypeScript fallback).
 *
 *   matmul(a, b, {transA, transB})
 *     a: [..., M, K]  (with transA: [..., K, M])
 *     b: [K, N]       (with transB: [N, K]), shared by every batch entry, or batched like a
 *     → [..., M, N]
 *   linear(x, W, bias): x [..., in] · W [in, out] + bias [out]   (TransformerLens's right-multiplied layout)
 */
import { Tensor, ShapeError, record, gradOf, gradForProduct, shapeStr, numel, emptyF32 } from "../tensor.ts";
import { getBackend } from "../backend/index.ts";

export interface MatmulOptions {
  transA?: boolean;
  transB?: boolean;
}

/**
 * C_i = op(A_i) · op(B_i) (+ beta · C_i) for i < batch, where the i-th matrix of X starts at i·strideX.
 * A stride of 0 reuses one matrix for every i. Leading dimensions follow from the transposes.
 */
export function gemm(
  transA: boolean, transB: boolean, M: number, N: number, K: number,
  A: Float32Array, strideA: number, B: Float32Array, strideB: number,
  beta: number, C: Float32Array, strideC: number, batch: number, alpha = 1,
): void {
  if (batch === 0 || M === 0 || N === 0) return;
  const lda = transA ? M : K;
  const ldb = transB ? K : N;
  const be = getBackend();
  if (batch === 1) be.sgemm(transA, transB, M, N, K, alpha, A, lda, B, ldb, beta, C, N);
  else be.sgemmStridedBatched(transA, transB, M, N, K, alpha, A, lda, strideA, B, ldb, strideB, beta, C, N, strideC, batch);
}

export function matmul(a: Tensor, b: Tensor, opts: MatmulOptions = {}): Tensor {
  const transA = opts.transA ?? false;
  const transB = opts.transB ?? false;
  if (a.ndim < 2 || b.ndim < 2) {
    throw new ShapeError(`matmul: both inputs need at least 2 dims, got ${shapeStr(a.shape)} and ${shapeStr(b.shape)}`);
  }
  const aRows = a.shape[a.ndim - 2]!;
  const aCols = a.shape[a.ndim - 1]!;
  const [M, K] = transA ? [aCols, aRows] : [aRows, aCols];
  const bRows = b.shape[b.ndim - 2]!;
  const bCols = b.shape[b.ndim - 1]!;
  const [Kb, N] = transB ? [bCols, bRows] : [bRows, bCols];
  const batchShape = a.shape.slice(0, -2);
  const batch = numel(batchShape);
  const bBatched = b.ndim > 2;
  if (Kb !== K || (bBatched && (b.ndim !== a.ndim || b.shape.slice(0, -2).some((d, i) => d !== batchShape[i])))) {
    throw new ShapeError(
      `matmul: cannot multiply ${shapeStr(a.shape)}${transA ? "ᵀ" : ""} by ${shapeStr(b.shape)}${transB ? "ᵀ" : ""}` +
        ` (inner dims ${K} and ${Kb}${bBatched ? ", batch dims must match" : ""})`,
    );
  }
  const out = K > 0 ? emptyF32(batch * M * N) : new Float32Array(batch * M * N); // a beta-0 product over K > 0 writes every entry
  const A = a.data;
  const B = b.data;
  const sA = M * K;
  const sB = bBatched ? K * N : 0;
  // A shared 2-D right operand with an untransposed left one is one big product: [batch·M, K]·[K, N].
  const flat = !bBatched && !transA;
  if (flat) gemm(false, transB, batch * M, N, K, A, 0, B, 0, 0, out, 0, 1);
  else gemm(transA, transB, M, N, K, A, sA, B, sB, 0, out, M * N, batch);

  return record("matmul", new Tensor(out, [...batchShape, M, N]), [a, b], (g) => {
    // g: [batch, M, N]
    if (a.requiresGrad) {
      // dA += …, or = when a has no gradient yet (a product over N > 0 writes every entry of it)
      const [ga, beta] = N > 0 && M > 0 ? gradForProduct(a) : [gradOf(a), 1 as const];
      if (flat) {
        // dA[batch·M, K] += g · op(B)ᵀ
        gemm(false, !transB, batch * M, K, N, g, 0, B, 0, beta, ga, 0, 1);
      } else if (!transA) {
        gemm(false, !transB, M, K, N, g, M * N, B, sB, beta, ga, sA, batch);
      } else {
        // A_i is [K, M]: dA_i = op(B_i) · g_iᵀ → [K, M]
        gemm(transB, true, K, M, N, B, sB, g, M * N, beta, ga, sA, batch);
      }
    }
    if (b.requiresGrad) {
      const gb = gradOf(b);
      if (flat) {
        if (!transB) gemm(true, false, K, N, batch * M, A, 0, g, 0, 1, gb, 0, 1); // dB[K,N] += Aᵀ·g
        else gemm(true, false, N, K, batch * M, g, 0, A, 0, 1, gb, 0, 1); // dB[N,K] += gᵀ·A
      } else if (!transB) {
        // dB_i[K, N] += op(A_i)ᵀ · g_i
        gemm(!transA, false, K, N, M, A, sA, g, M * N, 1, gb, sB, batch);
      } else {
        // dB_i[N, K] += g_iᵀ · op(A_i)
        gemm(true, transA, N, K, M, g, M * N, A, sA, 1, gb, sB, batch);
      }
    }
  });
}

/**
 * x [..., in] · W [in, out] + bias [out] → [..., out], with the bias fused into the product. Its
 * backward reads x, W and the output's gradient, never the output itself (the model's residual adds
 * write over the output: addInPlace).
 */
export function linear(x: Tensor, W: Tensor, bias: Tensor | null): Tensor {
  if (W.ndim !== 2) throw new ShapeError(`linear: weight must be [in, out], got ${shapeStr(W.shape)}`);
  const [I, O] = [W.shape[0]!, W.shape[1]!];
  if (x.shape[x.ndim - 1] !== I) throw new ShapeError(`linear: input ${shapeStr(x.shape)} does not end in ${I} (weight ${shapeStr(W.shape)})`);
  if (bias !== null && (bias.ndim !== 1 || bias.shape[0] !== O)) {
    throw new ShapeError(`linear: bias ${shapeStr(bias.shape)} does not match weight ${shapeStr(W.shape)}, expected [${O}]`);
  }
  const rows = x.size / I;
  const out = bias !== null || I > 0 ? emptyF32(rows * O) : new Float32Array(rows * O); // the bias rows, or a beta-0 product over I > 0, fill it
  if (bias !== null && rows > 0) fillRows(out, bias.data, rows);
  gemm(false, false, rows, O, I, x.data, 0, W.data, 0, bias === null ? 0 : 1, out, 0, 1);
  const inputs = bias === null ? [x, W] : [x, W, bias];
  return record("linear", new Tensor(out, [...x.shape.slice(0, -1), O]), inputs, (g) => {
    if (x.requiresGrad && I > 0) { // dx += g · Wᵀ (or = when x has no gradient yet)
      const [gx, beta] = O > 0 ? gradForProduct(x) : [gradOf(x), 1 as const];
      gemm(false, true, rows, I, O, g, 0, W.data, 0, beta, gx, 0, 1);
    }
    if (W.requiresGrad) gemm(true, false, I, O, rows, x.data, 0, g, 0, 1, gradOf(W), 0, 1); // dW += xᵀ · g
    if (bias !== null && bias.requiresGrad) { // db += 1ᵀ · g, the column sums of g [rows, O], as a [1, rows]·[rows, O] product
      gemm(false, false, 1, O, rows, new Float32Array(rows).fill(1), 0, g, 0, 1, gradOf(bias), 0, 1);
    }
  });
}

/** Zeros, as gatherRuns's index for repeating one row (grown when a call needs more). */
let zeroIndex = new Int32Array(0);

/** out[r, :] = row for r < rows: gatherRuns with every run starting at 0 (on all BLAS threads natively). */
function fillRows(out: Float32Array, row: Float32Array, rows: number): void {
  if (zeroIndex.length < rows) zeroIndex = new Int32Array(rows);
  getBackend().gatherRuns(row, zeroIndex.subarray(0, rows), row.length, out);
}
