/*
 * Fused causal attention of selfreport_blas.c (src/tensor/ops/attention.ts causalAttention), included
 * right after row_kernels.h with the same RK_W / RK_NAME (it uses that copy's vector type, splat, load
 * and vexp). One call of attn_fwd_pair / attn_bwd_pair does one (batch, head) pair; Q, K, V, Z and their
 * gradients point at the pair's (b, 0, h, 0) element with row stride ld = H·Dh, P at its [T, T] block.
 *
 * The products are register-blocked AK_R query rows × AK_V vectors, every element a plain sum in
 * order (over d for scores, over keys for z and the gradients), so the blocking, the thread split and
 * the position of the pair give the same bits. Only keys j ≤ i are computed: the causal half is skipped.
 *   scores  S[i, j] = Σ_d Q[i, d]·kT[d, j]       kT: K transposed into a [Dh, Tp] tile (Tp = T rounded up)
 *   z       Z[i, :] = Σ_{j ≤ i} P[i, j]·V[j, :]
 *   dP      dP[i, j] = Σ_d dZ[i, d]·vT[d, j]
 *   dS      scale · P[i, j]·(dP[i, j] − Σ_j' P[i, j']·dP[i, j'])
 *   dQ += dS·K,  dK += dSᵀ·Q,  dV += Pᵀ·dZ
 * On x86-64 the AVX2 copy uses fused multiply-adds (the base copy multiplies, then adds).
 */
#define VF RK_NAME(vf)
#if RK_W == 8 && defined(__x86_64__)
#define AK_FMA(a, b, c) ((VF)_mm256_fmadd_ps((__m256)(a), (__m256)(b), (__m256)(c)))
#define AK_SPLAT(x) ((VF)_mm256_set1_ps(x)) /* one vbroadcastss (splat's lane loop compiles to inserts) */
#elif RK_W == 4 && defined(__x86_64__)
#define AK_FMA(a, b, c) ((a) * (b) + (c))
#define AK_SPLAT(x) ((VF)_mm_set1_ps(x))
#else
#define AK_FMA(a, b, c) ((a) * (b) + (c))
#define AK_SPLAT(x) RK_NAME(splat)(x)
#endif
#define AK_R 6 /* rows per register block: 6 × AK_V = 12 accumulators cover the FMA latency */
#define AK_V 2 /* vectors per register block */
#define AK_TILE (AK_V * RK_W)

/* C[r, 0 .. AK_TILE) = Σ_d X[r·ldx + d]·YT[d·ldt + 0 .. AK_TILE) for r < nr. */
static inline __attribute__((always_inline)) void RK_NAME(ak_nt_block)(const int nr, const float* X, int64_t ldx, const float* YT, int64_t ldt, int64_t Dh, float* C, int64_t ldc) {
  VF acc[AK_R][AK_V];
  for (int r = 0; r < nr; r++) for (int v = 0; v < AK_V; v++) acc[r][v] = RK_NAME(splat)(0.0f);
  for (int64_t d = 0; d < Dh; d++) {
    VF y[AK_V];
    for (int v = 0; v < AK_V; v++) y[v] = RK_NAME(load)(YT + d * ldt + v * RK_W);
    for (int r = 0; r < nr; r++) {
      const VF x = AK_SPLAT(X[r * ldx + d]);
      for (int v = 0; v < AK_V; v++) acc[r][v] = AK_FMA(x, y[v], acc[r][v]);
    }
  }
  for (int r = 0; r < nr; r++) for (int v = 0; v < AK_V; v++) memcpy(C + r * ldc + v * RK_W, &acc[r][v], sizeof(VF));
}

/*
 * O[r, 0 .. nv·RK_W) (=, or += when add) Σ_{c0 ≤ c < c1} A[r·ar + c·ac]·Y[c·ldy + 0 .. nv·RK_W) for r < nr.
 * A is read row-major (ar = lda, ac = 1) or transposed (ar = 1, ac = lda).
 */
static inline __attribute__((always_inline)) void RK_NAME(ak_nn_block)(const int nr, const int nv, const float* A, int64_t ar, int64_t ac, int64_t c0, int64_t c1,
                                                                       const float* Y, int64_t ldy, float* O, int64_t ldo, bool add) {
  VF acc[AK_R][AK_V];
  for (int r = 0; r < nr; r++) for (int v = 0; v < nv; v++) acc[r][v] = RK_NAME(splat)(0.0f);
  for (int64_t c = c0; c < c1; c++) {
    VF y[AK_V];
    for (int v = 0; v < nv; v++) y[v] = RK_NAME(load)(Y + c * ldy + v * RK_W);
    for (int r = 0; r < nr; r++) {
      const VF a = AK_SPLAT(A[r * ar + c * ac]);
      for (int v = 0; v < nv; v++) acc[r][v] = AK_FMA(a, y[v], acc[r][v]);
    }
  }
  for (int r = 0; r < nr; r++) {
    for (int v = 0; v < nv; v++) {
      float* o = O + r * ldo + v * RK_W;
      VF out = acc[r][v];
      if (add) out += RK_NAME(load)(o);
      memcpy(o, &out, sizeof out);
    }
  }
}

/* ak_nn_block over all Dh columns: blocks of AK_V vectors, one vector, then the last Dh % RK_W columns scalar. */
static inline __attribute__((always_inline)) void RK_NAME(ak_nn_rows)(const int nr, const float* A, int64_t ar, int64_t ac, int64_t c0, int64_t c1,
                                                                      const float* Y, int64_t ldy, int64_t Dh, float* O, int64_t ldo, bool add) {
  int64_t d = 0;
  for (; d + AK_TILE <= Dh; d += AK_TILE) RK_NAME(ak_nn_block)(nr, AK_V, A, ar, ac, c0, c1, Y + d, ldy, O + d, ldo, add);
  for (; d + RK_W <= Dh; d += RK_W) RK_NAME(ak_nn_block)(nr, 1, A, ar, ac, c0, c1, Y + d, ldy, O + d, ldo, add);
  for (; d < Dh; d++) {
    for (int r = 0; r < nr; r++) {
      float acc = 0.0f;
      for (int64_t c = c0; c < c1; c++) acc += A[r * ar + c * ac] * Y[c * ldy + d];
      O[r * ldo + d] = add ? O[r * ldo + d] + acc : acc;
    }
  }
}

/* Calls CALL(n) with n = nr as a constant (1 ≤ nr ≤ AK_R), so the register blocks unroll. */
#define AK_ROWS(nr, CALL) \
  switch (nr) { \
    case 6: CALL(6); break; case 5: CALL(5); break; case 4: CALL(4); break; \
    case 3: CALL(3); break; case 2: CALL(2); break; default: CALL(1); break; \
  }

/*
 * kT[d, j] = K[j·ld + d] for j < T, 0 for T ≤ j < Tp. K's rows are read whole (reading a column would
 * touch T lines H·Dh floats apart, which share a few cache sets); AVX2 moves 8×8 blocks in registers.
 */
static void RK_NAME(ak_transpose)(const float* K, int64_t T, int64_t ld, int64_t Dh, int64_t Tp, float* kT) {
  int64_t j0 = 0;
#if RK_W == 8 && defined(__x86_64__)
  const int64_t dbody = Dh - Dh % 8;
  for (; j0 + 8 <= T; j0 += 8) {
    for (int64_t d0 = 0; d0 < dbody; d0 += 8) {
      __m256 r0 = _mm256_loadu_ps(K + (j0 + 0) * ld + d0), r1 = _mm256_loadu_ps(K + (j0 + 1) * ld + d0);
      __m256 r2 = _mm256_loadu_ps(K + (j0 + 2) * ld + d0), r3 = _mm256_loadu_ps(K + (j0 + 3) * ld + d0);
      __m256 r4 = _mm256_loadu_ps(K + (j0 + 4) * ld + d0), r5 = _mm256_loadu_ps(K + (j0 + 5) * ld + d0);
      __m256 r6 = _mm256_loadu_ps(K + (j0 + 6) * ld + d0), r7 = _mm256_loadu_ps(K + (j0 + 7) * ld + d0);
      __m256 t0 = _mm256_unpacklo_ps(r0, r1), t1 = _mm256_unpackhi_ps(r0, r1);
      __m256 t2 = _mm256_unpacklo_ps(r2, r3), t3 = _mm256_unpackhi_ps(r2, r3);
      __m256 t4 = _mm256_unpacklo_ps(r4, r5), t5 = _mm256_unpackhi_ps(r4, r5);
      __m256 t6 = _mm256_unpacklo_ps(r6, r7), t7 = _mm256_unpackhi_ps(r6, r7);
      __m256 u0 = _mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(1, 0, 1, 0)), u1 = _mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(3, 2, 3, 2));
      __m256 u2 = _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(1, 0, 1, 0)), u3 = _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(3, 2, 3, 2));
      __m256 u4 = _mm256_shuffle_ps(t4, t6, _MM_SHUFFLE(1, 0, 1, 0)), u5 = _mm256_shuffle_ps(t4, t6, _MM_SHUFFLE(3, 2, 3, 2));
      __m256 u6 = _mm256_shuffle_ps(t5, t7, _MM_SHUFFLE(1, 0, 1, 0)), u7 = _mm256_shuffle_ps(t5, t7, _MM_SHUFFLE(3, 2, 3, 2));
      float* o = kT + d0 * Tp + j0;
      _mm256_storeu_ps(o + 0 * Tp, _mm256_permute2f128_ps(u0, u4, 0x20));
      _mm256_storeu_ps(o + 1 * Tp, _mm256_permute2f128_ps(u1, u5, 0x20));
      _mm256_storeu_ps(o + 2 * Tp, _mm256_permute2f128_ps(u2, u6, 0x20));
      _mm256_storeu_ps(o + 3 * Tp, _mm256_permute2f128_ps(u3, u7, 0x20));
      _mm256_storeu_ps(o + 4 * Tp, _mm256_permute2f128_ps(u0, u4, 0x31));
      _mm256_storeu_ps(o + 5 * Tp, _mm256_permute2f128_ps(u1, u5, 0x31));
      _mm256_storeu_ps(o + 6 * Tp, _mm256_permute2f128_ps(u2, u6, 0x31));
      _mm256_storeu_ps(o + 7 * Tp, _mm256_permute2f128_ps(u3, u7, 0x31));
    }
    for (int64_t j = j0; j < j0 + 8; j++) for (int64_t d = dbody; d < Dh; d++) kT[d * Tp + j] = K[j * ld + d];
  }
#endif
  for (int64_t j = j0; j < T; j++) for (int64_t d = 0; d < Dh; d++) kT[d * Tp + j] = K[j * ld + d];
  for (int64_t d = 0; d < Dh; d++) for (int64_t j = T; j < Tp; j++) kT[d * Tp + j] = 0.0f;
}

/* dst [T, Dh] = src's T rows of Dh (row stride ld): the rows a product walks through, packed so that
 * they do not share the few cache sets that rows H·Dh floats apart fall in. */
static void RK_NAME(ak_pack)(const float* src, int64_t T, int64_t ld, int64_t Dh, float* dst) {
  for (int64_t j = 0; j < T; j++) memcpy(dst + j * Dh, src + j * ld, (size_t)Dh * sizeof(float));
}

/*
 * One (b, h) pair's forward. mask: the batch's [T] key mask or NULL. P NULL: the pattern is not kept (each
 * block's rows live in scratch). scratch: at least Dh·Tp + (AK_R + 1)·Tp + T·Dh + AK_R·T floats (Tp: T
 * rounded up to 16), for kT [Dh, Tp], S [AK_R, Tp], madd [Tp] (0 for a visible key, −∞ for a padded one),
 * V packed [T, Dh] and a block of pattern rows [AK_R, T].
 */
static void RK_NAME(attn_fwd_pair)(const float* Q, const float* K, const float* V, int64_t T, int64_t ld, int64_t Dh, float scale, const uint8_t* mask,
                                   float* P, float* Z, float* scratch) {
  const float ninf = -__builtin_inff();
  const int64_t Tp = (T + AK_TILE - 1) / AK_TILE * AK_TILE;
  float* kT = scratch;
  float* S = kT + Dh * Tp;
  float* madd = S + AK_R * Tp;
  float* Vp = madd + Tp;
  float* Pbuf = Vp + T * Dh;
  RK_NAME(ak_transpose)(K, T, ld, Dh, Tp, kT);
  RK_NAME(ak_pack)(V, T, ld, Dh, Vp);
  for (int64_t j = 0; j < Tp; j++) madd[j] = j < T && (mask == NULL || mask[j] != 0) ? 0.0f : ninf;
  const VF sc = RK_NAME(splat)(scale);
  for (int64_t i0 = 0; i0 < T; i0 += AK_R) {
    const int nr = (int)(T - i0 < AK_R ? T - i0 : AK_R);
    const int64_t n_keys = i0 + nr; /* keys any row of the block may see */
    for (int64_t j0 = 0; j0 < n_keys; j0 += AK_TILE) {
#define AK_SCORES(n) RK_NAME(ak_nt_block)(n, Q + i0 * ld, ld, kT + j0, Tp, Dh, S + j0, Tp)
      AK_ROWS(nr, AK_SCORES)
#undef AK_SCORES
    }
    float* Pblk = P != NULL ? P + i0 * T : Pbuf; /* the block's rows of the pattern [nr, T] */
    for (int r = 0; r < nr; r++) {
      const int64_t i = i0 + r, n = i + 1;
      const int64_t body = n - n % RK_W;
      float* s = S + r * Tp;
      float* p = Pblk + r * T;
      /* x = scale·s + madd over keys 0..i, into p; the row maximum. */
      VF mv = RK_NAME(splat)(ninf);
      for (int64_t j = 0; j < body; j += RK_W) {
        VF x = RK_NAME(load)(s + j) * sc + RK_NAME(load)(madd + j);
        memcpy(p + j, &x, sizeof x);
        mv = (VF)(((RK_NAME(vi))x & (x > mv)) | ((RK_NAME(vi))mv & ~(x > mv)));
      }
      float m = ninf;
      for (int w = 0; w < RK_W; w++) m = mv[w] > m ? mv[w] : m;
      for (int64_t j = body; j < n; j++) {
        p[j] = s[j] * scale + madd[j];
        m = p[j] > m ? p[j] : m;
      }
      if (m == ninf) { memset(p, 0, (size_t)T * sizeof(float)); continue; }
      RK_NAME(softmax_from_max)(p, n, m, p); /* row_kernels.h, in place */
      for (int64_t j = n; j < T; j++) p[j] = 0.0f;
    }
    /* Z rows of the block: P's entries above the diagonal are 0, so every row may run to the block's last key. */
#define AK_Z(n) RK_NAME(ak_nn_rows)(n, Pblk, T, 1, 0, n_keys, Vp, Dh, Dh, Z + i0 * ld, ld, false)
    AK_ROWS(nr, AK_Z)
#undef AK_Z
  }
}

/*
 * One (b, h) pair's backward; dQ, dK, dV may be NULL (not wanted) and are added into. scratch: at least
 * Dh·Tp + AK_R·Tp + T·T + 3·T·Dh floats (Tp: T rounded up to 16), for vT [Dh, Tp], S [AK_R, Tp], dS [T, T]
 * and Q, K, dZ packed [T, Dh].
 */
static void RK_NAME(attn_bwd_pair)(const float* dZ, const float* Q, const float* K, const float* V, const float* P, int64_t T, int64_t ld, int64_t Dh, float scale,
                                   float* dQ, float* dK, float* dV, float* scratch) {
  const int64_t Tp = (T + AK_TILE - 1) / AK_TILE * AK_TILE;
  float* vT = scratch;
  float* S = vT + Dh * Tp;
  float* dS = S + AK_R * Tp;
  float* Qp = dS + T * T;
  float* Kp = Qp + T * Dh;
  float* dZp = Kp + T * Dh;
  RK_NAME(ak_pack)(dZ, T, ld, Dh, dZp);
  if (dQ != NULL || dK != NULL) {
    RK_NAME(ak_transpose)(V, T, ld, Dh, Tp, vT);
    if (dQ != NULL) RK_NAME(ak_pack)(K, T, ld, Dh, Kp);
    if (dK != NULL) RK_NAME(ak_pack)(Q, T, ld, Dh, Qp);
    const VF sc = RK_NAME(splat)(scale);
    for (int64_t i0 = 0; i0 < T; i0 += AK_R) {
      const int nr = (int)(T - i0 < AK_R ? T - i0 : AK_R);
      const int64_t n_keys = i0 + nr;
      for (int64_t j0 = 0; j0 < n_keys; j0 += AK_TILE) {
#define AK_DP(n) RK_NAME(ak_nt_block)(n, dZp + i0 * Dh, Dh, vT + j0, Tp, Dh, S + j0, Tp)
        AK_ROWS(nr, AK_DP)
#undef AK_DP
      }
      for (int r = 0; r < nr; r++) {
        const int64_t i = i0 + r, n = i + 1;
        const int64_t body = n - n % RK_W;
        const float* dp = S + r * Tp;
        const float* p = P + i * T;
        float* ds = dS + i * T;
        const float dt = RK_NAME(dot_rows)(dp, p, n);
        const VF dd = RK_NAME(splat)(dt);
        for (int64_t j = 0; j < body; j += RK_W) {
          VF v = sc * (RK_NAME(load)(p + j) * (RK_NAME(load)(dp + j) - dd));
          memcpy(ds + j, &v, sizeof v);
        }
        for (int64_t j = body; j < n; j++) ds[j] = scale * (p[j] * (dp[j] - dt));
        for (int64_t j = n; j < T; j++) ds[j] = 0.0f;
      }
      if (dQ != NULL) {
#define AK_DQ(n) RK_NAME(ak_nn_rows)(n, dS + i0 * T, T, 1, 0, n_keys, Kp, Dh, Dh, dQ + i0 * ld, ld, true)
        AK_ROWS(nr, AK_DQ)
#undef AK_DQ
      }
    }
    if (dK != NULL) {
      /* dK[j] += Σ_{i ≥ j} dS[i, j]·Q[i]: dS read transposed; entries with i < j are 0. */
      for (int64_t j0 = 0; j0 < T; j0 += AK_R) {
        const int nr = (int)(T - j0 < AK_R ? T - j0 : AK_R);
#define AK_DK(n) RK_NAME(ak_nn_rows)(n, dS + j0, 1, T, j0, T, Qp, Dh, Dh, dK + j0 * ld, ld, true)
        AK_ROWS(nr, AK_DK)
#undef AK_DK
      }
    }
  }
  if (dV != NULL) {
    for (int64_t j0 = 0; j0 < T; j0 += AK_R) {
      const int nr = (int)(T - j0 < AK_R ? T - j0 : AK_R);
#define AK_DV(n) RK_NAME(ak_nn_rows)(n, P + j0, 1, T, j0, T, dZp, Dh, Dh, dV + j0 * ld, ld, true)
      AK_ROWS(nr, AK_DV)
#undef AK_DV
    }
  }
}

#undef AK_ROWS
#undef AK_TILE
#undef AK_V
#undef AK_R
#undef AK_FMA
#undef AK_SPLAT
#undef VF
