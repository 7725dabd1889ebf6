/**
 * The one seam between selfreport's tensor engine and the hardware: dense matrix products, and the
 * hot loops around them (softmax rows, GELU, LayerNorm forward and backward, fused causal attention, the
 * AdamW update, the gradient norm), which the native backend runs vectorised. Everything else (shape ops, broadcasting,
 * attention bookkeeping, the remaining backward loops) is plain TypeScript over typed arrays.
 *
 * Conventions (as in BLAS, but row-major only):
 *   C[M, N] = alpha · op(A)[M, K] · op(B)[K, N] + beta · C[M, N]
 *   op(A) = A            when transA is false: A is stored [M, K] with row stride lda (lda ≥ K)
 *   op(A) = Aᵀ           when transA is true:  A is stored [K, M] with row stride lda (lda ≥ M)
 *   op(B) likewise: B is [K, N] (ldb ≥ N), or with transB [N, K] (ldb ≥ K).
 *   C is [M, N] with row stride ldc (ldc ≥ N).
 * A, B and C are Float32Array views (use subarray for offsets); C must not overlap A or B.
 *
 * The native backend runs the row kernels on large inputs in OpenBLAS's thread count (OPENBLAS_NUM_THREADS),
 * split by whole rows (GELU by blocks of 8 elements), so each value is computed as in one thread: the
 * same bits whatever the thread count. affineBackwardRows (sums over rows) stays in one thread.
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
  /**
   * LayerNorm in one call: lnScaleRows (scale, mean), lnNormalizeRows into out, then affineRows on out in
   * place, row by row while the row is in cache: the same bits as those three calls.
   */
  layerNormRows(X: Float32Array, rows: number, cols: number, eps: number, w: Float32Array, b: Float32Array | null, out: Float32Array, scale: Float32Array, mean: Float32Array): void;
  /**
   * layerNormRows's backward, adding into GX, GW, GB (null: not wanted): x̂ recomputed by lnNormalizeRows,
   * then affineBackwardRows(G, x̂ → Ĝ), lnNormalizeBackwardRows(Ĝ, x̂ → GX, GS) and lnScaleBackwardRows(GS → GX),
   * row by row: the same bits as those calls. One thread (GW, GB sum over rows in order).
   */
  layerNormBackwardRows(G: Float32Array, X: Float32Array, rows: number, cols: number, scale: Float32Array, mean: Float32Array, w: Float32Array, GX: Float32Array | null, GW: Float32Array | null, GB: Float32Array | null): void;
  /** lnScale's backward: GX[r, c] += G[r] / (cols·scale[r]) · (X[r, c] − mean[r]) (mean and scale from lnScaleRows). */
  lnScaleBackwardRows(G: Float32Array, X: Float32Array, rows: number, cols: number, scale: Float32Array, mean: Float32Array, GX: Float32Array): void;
  /**
   * lnNormalize's backward from its output Y: GX[r] += (G[r] − mean(G[r])) / S[r] and
   * GS[r] −= (Σ_c G[r, c]·Y[r, c]) / S[r]. GX or GS null: that gradient is not wanted.
   */
  lnNormalizeBackwardRows(G: Float32Array, Y: Float32Array, rows: number, cols: number, S: Float32Array, GX: Float32Array | null, GS: Float32Array | null): void;
  /** affineRows's backward: GX[r] += G[r] ⊙ w; GW += Σ_r G[r] ⊙ X[r]; GB += Σ_r G[r]. Null: not wanted. */
  affineBackwardRows(G: Float32Array, X: Float32Array, rows: number, cols: number, w: Float32Array, GX: Float32Array | null, GW: Float32Array | null, GB: Float32Array | null): void;
  /** Y[r] = softmax(X[r]) for X [rows, cols], the row maximum subtracted first; Y may be X. A row of −Infinity gives zeros. */
  softmaxRows(X: Float32Array, rows: number, cols: number, Y: Float32Array): void;
  /** Softmax backward from its output Y: DX[r] += Y[r] ⊙ (G[r] − Σ_c G[r, c]·Y[r, c]) (adds). */
  softmaxBackwardRows(G: Float32Array, Y: Float32Array, rows: number, cols: number, DX: Float32Array): void;
  /**
   * One AdamW step over n elements, in float64 per element and stored to float32 at the same points
   * on both backends (so they agree bit for bit):
   *   M ← β1·M + (1−β1)·g;  V ← β2·V + (1−β2)·g²;  P ← P·shrink − lr·(M/bc1) / (√(V/bc2) + eps)
   * with shrink = 1 − lr·weight_decay, bc1 = 1 − β1^t, bc2 = 1 − β2^t (computed by the caller).
   * The native backend splits large n over OpenBLAS's thread count (elementwise, so the same bits).
   */
  adamwUpdate(
    P: Float32Array, G: Float32Array, M: Float32Array, V: Float32Array, n: number,
    lr: number, beta1: number, beta2: number, eps: number, shrink: number, bc1: number, bc2: number,
  ): void;
  /** Σ X[i]² for i < n, accumulated in float64 (the order may differ between backends). */
  sumSquares(X: Float32Array, n: number): number;
  /**
   * Per block a < blocks of the multi-output heads (src/sweep/multihead.ts): a weight block W[a·wsize …
   * (a+1)·wsize) with its gradient GW and moments MW, VW, and a bias block B[a·bsize … (a+1)·bsize) with
   * GB, MB, VB. Clips the block's gradient by its own global norm √(Σ GW² + Σ GB²) as clipGradNorm does
   * (× maxNorm/(norm + 1e-6) when norm > maxNorm, rounded to float32; maxNorm ≤ 0: no clipping), then
   * applies adamwUpdate's step to the weights (with `shrink`) and the bias (without decay). The same bits
   * as sumSquares, the scaling and two adamwUpdate calls per block (the norm's summation order aside);
   * GW and GB are left unchanged.
   */
  clipAdamwBlocks(
    W: Float32Array, GW: Float32Array, MW: Float32Array, VW: Float32Array, wsize: number,
    B: Float32Array, GB: Float32Array, MB: Float32Array, VB: Float32Array, bsize: number, blocks: number, maxNorm: number,
    lr: number, beta1: number, beta2: number, eps: number, shrink: number, bc1: number, bc2: number,
  ): void;
  /**
   * Cross-entropy of the multi-output bin heads over Out [rows, blocks·P] (block a of row r: neuron a's P
   * logits before its bias), labels [rows, blocks] in [0, P): per row, Out += bias (float32), then
   * loss[a] = Σ_r lse(block) − logit[label] summed in float64 (loss is a sum: divide by rows). With dB
   * (not null), every block becomes its gradient for a mean over rows, float32(kc)·softmax with
   * float32(· − kc) at the label (kc = 1/rows), and dB[j] = float32(Σ_r Out[r, j]) summed in float64, r
   * in order: the same bits as logSumExpRows, softmaxScaleRows and those loops one after another.
   */
  crossEntropyBlocks(
    Out: Float32Array, rows: number, blocks: number, P: number, bias: Float32Array, labels: Int32Array, kc: number,
    loss: Float64Array, dB: Float32Array | null,
  ): void;
  /** In place: X[i] ← X[i]·k for i < n, the product in float64 rounded to float32 (same bits on both backends). */
  scaleInPlace(X: Float32Array, n: number, k: number): void;
  /** In place: Y[i] ← Y[i] + X[i] for i < n, a float32 sum (same bits on both backends). */
  addInto(Y: Float32Array, X: Float32Array, n: number): void;
  /**
   * In place: GA[index[r] + j] += G[r·run + j] for r < index.length, j < run, in the order of r for
   * each element (runs may overlap: an embedding's backward with a repeated id). Throws a RangeError
   * when a run would fall outside GA.
   */
  scatterAddRuns(G: Float32Array, index: Int32Array, run: number, GA: Float32Array): void;
  /**
   * out[r·run + j] = A[index[r] + j] for r < index.length, j < run: runs gathered in output order (a
   * permutation; a row repeated, with every index 0). Throws a RangeError when a run would fall outside A.
   */
  gatherRuns(A: Float32Array, index: Int32Array, run: number, out: Float32Array): void;
  /**
   * Fused causal self-attention forward. Q, K, V and Z are [B, T, H, Dh] (row stride H·Dh); for each
   * (b, h): S = scale·q·kᵀ over keys j ≤ i that are not padded (keyMask[b·T + j] = 1; keyMask null: none
   * padded), P[b, h, i, :] = softmax of S (row maximum subtracted first) on those keys and exactly 0 on
   * every other key, Z[b, i, h, :] = Σ_j P[b, h, i, j]·V[b, j, h, :]. P [B, H, T, T] and Z are written in
   * full; a query that sees no key gets P = 0 and Z = 0. P null: the pattern is not kept (no backward
   * will follow), Z the same. The native backend splits the (b, h) pairs over threads (the same bits
   * whatever the thread count) and skips the products above the diagonal.
   */
  causalAttentionForward(
    Q: Float32Array, K: Float32Array, V: Float32Array, B: number, T: number, H: number, Dh: number, scale: number,
    keyMask: Uint8Array | null, P: Float32Array | null, Z: Float32Array,
  ): void;
  /**
   * causalAttentionForward's backward from its P, adding into dQ, dK, dV (null: not wanted), per (b, h):
   *   dV[j] += Σ_i P[i, j]·dZ[i];  dP[i, j] = dZ[i]·V[j];  dS[i, j] = P[i, j]·(dP[i, j] − Σ_j' P[i, j']·dP[i, j'])
   *   dQ[i] += scale·Σ_j dS[i, j]·K[j];  dK[j] += scale·Σ_i dS[i, j]·Q[i]
   * Only j ≤ i is computed (P is 0 elsewhere). dQ, dK, dV may be one array (q, k, v the same tensor).
   */
  causalAttentionBackward(
    dZ: Float32Array, Q: Float32Array, K: Float32Array, V: Float32Array, P: Float32Array,
    B: number, T: number, H: number, Dh: number, scale: number,
    dQ: Float32Array | null, dK: Float32Array | null, dV: Float32Array | null,
  ): void;
}
