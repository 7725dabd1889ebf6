/*
 * Kernels of the multi-output frozen heads (src/sweep/multihead.ts), written as plain loops and
 * included once per instruction set (MK_NAME(f) gives each copy its own name): the baseline build,
 * and on x86-64 AVX2 and AVX-512F builds that GCC vectorises 4 and 8 float64 lanes wide. Every
 * operation is an IEEE float64 operation rounded to float32 where the JS backend rounds, in the same
 * order per element, so all builds and the JS backend give the same bits (sums of squares excepted:
 * their order may differ, as sumSquares's).
 */

/* Σ x[i]² in float64. */
static double MK_NAME(sum_sq)(const float* x, int64_t n) {
  double s = 0.0;
  for (int64_t i = 0; i < n; i++) s += (double)x[i] * (double)x[i];
  return s;
}

/* adamwUpdate's step over n elements with the gradient g = float32(G[i]·f) (f = 1: G itself, exactly). */
static void MK_NAME(adamw_scaled)(float* restrict P, const float* restrict G, float* restrict M, float* restrict V, int64_t n, double f,
                                  double lr, double b1, double b2, double eps, double shrink, double bc1, double bc2) {
  for (int64_t i = 0; i < n; i++) {
    const double g = (double)(float)((double)G[i] * f);
    const float m = (float)(b1 * (double)M[i] + (1.0 - b1) * g);
    const float v = (float)(b2 * (double)V[i] + (1.0 - b2) * g * g);
    M[i] = m;
    V[i] = v;
    const double mh = (double)m / bc1;
    const double vh = (double)v / bc2;
    P[i] = (float)((double)P[i] * shrink - (lr * mh) / (sqrt(vh) + eps));
  }
}

/*
 * clipAdamwBlocks: for each block a < blocks, a weight block of wsize elements (W, GW, MW, VW from
 * a·wsize) and a bias block of bsize (from a·bsize): clip the block's gradient by its own global norm
 * √(Σ GW² + Σ GB²) to maxNorm (clipGradNorm: × maxNorm/(norm + 1e-6) when norm > maxNorm; maxNorm ≤ 0:
 * no clipping), then one AdamW step, the weights with `shrink` (decay), the bias without. GW, GB are
 * left as they were.
 */
static void MK_NAME(clip_adamw_blocks)(float* W, const float* GW, float* MW, float* VW, int64_t wsize,
                                       float* Bv, const float* GB, float* MB, float* VB, int64_t bsize, int64_t a0, int64_t a1, double maxNorm,
                                       double lr, double b1, double b2, double eps, double shrink, double bc1, double bc2) {
  for (int64_t a = a0; a < a1; a++) {
    const int64_t ow = a * wsize, ob = a * bsize;
    double f = 1.0;
    if (maxNorm > 0) {
      const double norm = sqrt(MK_NAME(sum_sq)(GW + ow, wsize) + MK_NAME(sum_sq)(GB + ob, bsize));
      if (norm > maxNorm) f = maxNorm / (norm + 1e-6);
    }
    MK_NAME(adamw_scaled)(W + ow, GW + ow, MW + ow, VW + ow, wsize, f, lr, b1, b2, eps, shrink, bc1, bc2);
    MK_NAME(adamw_scaled)(Bv + ob, GB + ob, MB + ob, VB + ob, bsize, f, lr, b1, b2, eps, 1.0, bc1, bc2);
  }
}
