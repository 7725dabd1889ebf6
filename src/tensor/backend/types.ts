/**
 * The one seam between selfreport's tensor engine and the hardware: dense matrix products, and
 * the two row kernels of softmax over a large vocabulary (exp-bound, not memory-bound).
 * Everything else (elementwise kernels, reductions, attention bookkeeping) is plain TypeScript.
 *
 * Conventions (as in BLAS, but row-major only):
 *   C[M, N] = alpha · op(A)[M, K] · op(B)[K, N] + beta · C[M, N]
 *   op(A) = A            when transA is false: A is stored [M, K] with row stride lda (lda ≥ K)
 *   op(A) = Aᵀ           when transA is true:  A is stored [K, M] with row stride lda (lda ≥ M)
 *   op(B) likewise: B is [K, N] (ldb ≥ N), or with transB [N, K] (ldb ≥ K).
 *   C is [M, N] with row stride ldc (ldc ≥ N).
 * A, B and C are Float32Array views (use subarray for offsets); C must not overlap A or B.
 */
export interface Backend {
  readonly name: "native" | "js";
  sgemm(
    transA: boolean, transB: boolean, M: number, N: number, K: number, alpha: number,
    A: Float32Array, lda: number, B: Float32Array, ldb: number,
    beta: number, C: Float32Array, ldc: number,
  ): void;
  /**
   * `batch` independent sgemms in one call; matrix i of A starts at element i·strideA of A
   * (likewise B and C). Used for per-(batch, head) attention products, where one native call
   * instead of B·H calls matters.
   */
  sgemmStridedBatched(
    transA: boolean, transB: boolean, M: number, N: number, K: number, alpha: number,
    A: Float32Array, lda: number, strideA: number,
    B: Float32Array, ldb: number, strideB: number,
    beta: number, C: Float32Array, ldc: number, strideC: number,
    batch: number,
  ): void;
  /** out[r] = log Σ_c exp(X[r, c]) for X [rows, cols]; −Infinity for a row of −Infinity. */
  logSumExpRows(X: Float32Array, rows: number, cols: number, out: Float32Array): void;
  /** In place: X[r, c] ← scale[r] · exp(X[r, c] − lse[r]) (a softmax times a per-row scale). */
  softmaxScaleRows(X: Float32Array, rows: number, cols: number, lse: Float32Array, scale: Float32Array): void;
  /** Y[i] = gelu_new(X[i]) = ½·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))) for i < n. */
  geluForward(X: Float32Array, n: number, Y: Float32Array): void;
  /** DX[i] += G[i]·gelu_new'(X[i]) for i < n (adds, as every backward does). */
  geluBackward(X: Float32Array, G: Float32Array, n: number, DX: Float32Array): void;
  /** LayerNorm statistics of X [rows, cols]: mean[r] and scale[r] = √(mean((x − mean)²) + eps). */
  lnScaleRows(X: Float32Array, rows: number, cols: number, eps: number, scale: Float32Array, mean: Float32Array): void;
  /** out[r, c] = (X[r, c] − mean of row r) / S[r]. */
  lnNormalizeRows(X: Float32Array, rows: number, cols: number, S: Float32Array, out: Float32Array): void;
  /** out[r, c] = X[r, c]·w[c] + b[c] (b null: no bias). */
  affineRows(X: Float32Array, rows: number, cols: number, w: Float32Array, b: Float32Array | null, out: Float32Array): void;
}
