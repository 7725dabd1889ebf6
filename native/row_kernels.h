/*
 * Row kernels of selfreport_blas.c, written once over a vector of RK_W float32 lanes (GCC/Clang
 * vector extensions) and included once per instruction set: RK_W = 4 for baseline SSE2/NEON,
 * RK_W = 8 under `#pragma GCC target("avx2,fma")`. RK_NAME(f) gives each copy its own names.
 *
 * exp: x = n·ln2 + r with |r| ≤ ln2/2, e^r by Cephes's degree-6 polynomial, 2^n by writing the
 * exponent bits. Lanes below -87.34 (incl. -inf) give 0; NaN lanes give NaN.
 */
typedef float RK_NAME(vf) __attribute__((vector_size(RK_W * 4)));
typedef int32_t RK_NAME(vi) __attribute__((vector_size(RK_W * 4)));
#define VF RK_NAME(vf)
#define VI RK_NAME(vi)

static inline __attribute__((always_inline)) VF RK_NAME(splat)(float v) {
  VF r;
  for (int j = 0; j < RK_W; j++) r[j] = v;
  return r;
}

static inline __attribute__((always_inline)) VF RK_NAME(vexp)(VF x) {
  const VF hi = RK_NAME(splat)(88.3762626647949f), lo = RK_NAME(splat)(-87.3365478515625f);
  VI keep = (x >= lo) | (x != x);                    /* all-ones where the result is not 0 */
  VI big = x > hi;
  x = (VF)(((VI)x & ~big) | ((VI)hi & big));         /* min(x, hi), NaN kept */
  VI small = x < lo;
  x = (VF)(((VI)x & ~small) | ((VI)lo & small));     /* max(x, lo) */
  /* n = round(x / ln2) by truncating a positive number (x ≥ -87.34 keeps it positive). */
  VI ni = __builtin_convertvector(x * RK_NAME(splat)(1.44269504088896341f) + RK_NAME(splat)(127.5f), VI) - 127;
  VF n = __builtin_convertvector(ni, VF);
  VF r = x - n * RK_NAME(splat)(0.693359375f);
  r = r - n * RK_NAME(splat)(-2.12194440e-4f);
  VF p = RK_NAME(splat)(1.9875691500e-4f);
  p = p * r + RK_NAME(splat)(1.3981999507e-3f);
  p = p * r + RK_NAME(splat)(8.3334519073e-3f);
  p = p * r + RK_NAME(splat)(4.1665795894e-2f);
  p = p * r + RK_NAME(splat)(1.6666665459e-1f);
  p = p * r + RK_NAME(splat)(5.0000001201e-1f);
  p = p * r * r + r + RK_NAME(splat)(1.0f);
  VF two = (VF)((ni + 127) << 23);
  return (VF)((VI)(p * two) & keep);
}

static inline __attribute__((always_inline)) VF RK_NAME(load)(const float* p) { VF v; memcpy(&v, p, sizeof v); return v; }

/* The last n < RK_W values of a row, padded with `fill`. */
static inline __attribute__((always_inline)) VF RK_NAME(tail)(const float* p, int64_t n, float fill) {
  VF v = RK_NAME(splat)(fill);
  for (int64_t j = 0; j < n; j++) v[j] = p[j];
  return v;
}

/*
 * softmax_rows: Y[r] = softmax(X[r]) with the row maximum subtracted first, so huge logits stay exact
 * (Y may be X). A row of -inf gives zeros. softmax_bwd_rows: DX[r] += Y[r] ⊙ (G[r] − Σ G[r]·Y[r]).
 */
static inline __attribute__((always_inline)) float RK_NAME(row_max)(const float* x, int64_t cols) {
  const float ninf = -__builtin_inff();
  const int64_t body = cols - cols % RK_W;
  VF mv = RK_NAME(splat)(ninf);
  for (int64_t c = 0; c < body; c += RK_W) {
    VF v = RK_NAME(load)(x + c);
    VI gt = v > mv;
    mv = (VF)(((VI)v & gt) | ((VI)mv & ~gt));
  }
  float m = ninf;
  for (int j = 0; j < RK_W; j++) m = mv[j] > m ? mv[j] : m;
  for (int64_t c = body; c < cols; c++) m = x[c] > m ? x[c] : m;
  return m;
}

static void RK_NAME(lse_rows)(const float* X, int64_t rows, int64_t cols, float* out) {
  const float ninf = -__builtin_inff();
  const int64_t body = cols - cols % RK_W;
  for (int64_t r = 0; r < rows; r++) {
    const float* x = X + r * cols;
    const float m = RK_NAME(row_max)(x, cols);
    if (m == ninf) { out[r] = m; continue; }
    const VF mm = RK_NAME(splat)(m);
    VF sv = RK_NAME(splat)(0.0f);
    for (int64_t c = 0; c < body; c += RK_W) sv += RK_NAME(vexp)(RK_NAME(load)(x + c) - mm);
    if (body < cols) sv += RK_NAME(vexp)(RK_NAME(tail)(x + body, cols - body, ninf) - mm);
    double s = 0.0;
    for (int j = 0; j < RK_W; j++) s += sv[j];
    out[r] = m + (float)log(s);
  }
}

static void RK_NAME(softmax_scale)(float* X, int64_t rows, int64_t cols, const float* lse, const float* scale) {
  const int64_t body = cols - cols % RK_W;
  for (int64_t r = 0; r < rows; r++) {
    float* x = X + r * cols;
    if (scale[r] == 0.0f) { memset(x, 0, (size_t)cols * sizeof(float)); continue; }
    const VF l = RK_NAME(splat)(lse[r]), k = RK_NAME(splat)(scale[r]);
    for (int64_t c = 0; c < body; c += RK_W) {
      VF v = k * RK_NAME(vexp)(RK_NAME(load)(x + c) - l);
      memcpy(x + c, &v, sizeof v);
    }
    if (body < cols) {
      VF t = k * RK_NAME(vexp)(RK_NAME(tail)(x + body, cols - body, 0.0f) - l);
      for (int64_t j = 0; j < cols - body; j++) x[body + j] = t[j];
    }
  }
}

/* y[0..n) = exp(x − m) / Σ exp(x − m) given the row maximum m of x[0..n) (not −∞); y may be x.
 * softmax_rows and the fused attention kernel (attention_kernels.h) share it. */
static inline __attribute__((always_inline)) void RK_NAME(softmax_from_max)(const float* x, int64_t n, float m, float* y) {
  const float ninf = -__builtin_inff();
  const int64_t body = n - n % RK_W;
  const VF mm = RK_NAME(splat)(m);
  VF sv = RK_NAME(splat)(0.0f);
  for (int64_t c = 0; c < body; c += RK_W) {
    VF e = RK_NAME(vexp)(RK_NAME(load)(x + c) - mm);
    memcpy(y + c, &e, sizeof e);
    sv += e;
  }
  if (body < n) {
    VF e = RK_NAME(vexp)(RK_NAME(tail)(x + body, n - body, ninf) - mm); /* padding lanes give 0 */
    for (int64_t j = 0; j < n - body; j++) y[body + j] = e[j];
    sv += e;
  }
  double s = 0.0;
  for (int j = 0; j < RK_W; j++) s += sv[j];
  const float inv = (float)(1.0 / s);
  const VF iv = RK_NAME(splat)(inv);
  for (int64_t c = 0; c < body; c += RK_W) {
    VF v = RK_NAME(load)(y + c) * iv;
    memcpy(y + c, &v, sizeof v);
  }
  for (int64_t c = body; c < n; c++) y[c] *= inv;
}

static void RK_NAME(softmax_rows)(const float* X, int64_t rows, int64_t cols, float* Y) {
  const float ninf = -__builtin_inff();
  for (int64_t r = 0; r < rows; r++) {
    const float* x = X + r * cols;
    float* y = Y + r * cols;
    const float m = RK_NAME(row_max)(x, cols);
    if (m == ninf) { memset(y, 0, (size_t)cols * sizeof(float)); continue; }
    RK_NAME(softmax_from_max)(x, cols, m, y);
  }
}

/* Σ a[c]·b[c] over c < n, rounded to float: vector lanes over the first n − n % RK_W, their sum in
 * double, then the tail in double (softmax's backward and the attention kernel's dS). */
static inline float RK_NAME(dot_rows)(const float* a, const float* b, int64_t n) {
  const int64_t body = n - n % RK_W;
  VF acc = RK_NAME(splat)(0.0f);
  for (int64_t c = 0; c < body; c += RK_W) acc += RK_NAME(load)(a + c) * RK_NAME(load)(b + c);
  double dot = 0.0;
  for (int j = 0; j < RK_W; j++) dot += acc[j];
  for (int64_t c = body; c < n; c++) dot += (double)a[c] * (double)b[c];
  return (float)dot;
}

static void RK_NAME(softmax_bwd_rows)(const float* G, const float* Y, int64_t rows, int64_t cols, float* DX) {
  const int64_t body = cols - cols % RK_W;
  for (int64_t r = 0; r < rows; r++) {
    const float* g = G + r * cols;
    const float* y = Y + r * cols;
    float* dx = DX + r * cols;
    const float d = RK_NAME(dot_rows)(g, y, cols);
    const VF dd = RK_NAME(splat)(d);
    for (int64_t c = 0; c < body; c += RK_W) {
      VF v = RK_NAME(load)(dx + c) + RK_NAME(load)(y + c) * (RK_NAME(load)(g + c) - dd);
      memcpy(dx + c, &v, sizeof v);
    }
    for (int64_t c = body; c < cols; c++) dx[c] += y[c] * (g[c] - d);
  }
}

/*
 * GPT-2's GELU, gelu_new(x) = ½·x·(1 + tanh(u)), u = √(2/π)·(x + 0.044715·x³), computed as
 * x·σ(2u) with σ(z) = 1/(1 + e^{−z}) through vexp: ½(1 + tanh u) = σ(2u) exactly, and this form has
 * no cancellation where tanh u ≈ −1 (x ≲ −3, where 1 + tanh u would lose most of its digits).
 * Derivative: σ + 2x·σ(1 − σ)·√(2/π)·(1 + 3·0.044715·x²). The tail (< RK_W values) uses libm's expf.
 */
#define RK_GELU_K 0.7978845608028654f
#define RK_GELU_C 0.044715f

/* σ(2u) for u = √(2/π)·(x + 0.044715·x³) */
static inline __attribute__((always_inline)) VF RK_NAME(gelu_sig)(VF x) {
  const VF k2 = RK_NAME(splat)(-2.0f * RK_GELU_K), c = RK_NAME(splat)(RK_GELU_C), one = RK_NAME(splat)(1.0f);
  return one / (one + RK_NAME(vexp)(k2 * (x + c * x * x * x)));
}

static inline float RK_NAME(gelu_sig1)(float x) {
  return 1.0f / (1.0f + expf(-2.0f * RK_GELU_K * (x + RK_GELU_C * x * x * x)));
}

static void RK_NAME(gelu_fwd)(const float* X, int64_t n, float* Y) {
  const int64_t body = n - n % RK_W;
  for (int64_t i = 0; i < body; i += RK_W) {
    VF x = RK_NAME(load)(X + i);
    VF y = x * RK_NAME(gelu_sig)(x);
    memcpy(Y + i, &y, sizeof y);
  }
  for (int64_t i = body; i < n; i++) Y[i] = X[i] * RK_NAME(gelu_sig1)(X[i]);
}

/* DX += G · gelu_new'(X) */
static void RK_NAME(gelu_bwd)(const float* X, const float* G, int64_t n, float* DX) {
  const VF k2 = RK_NAME(splat)(2.0f * RK_GELU_K), c3 = RK_NAME(splat)(3.0f * RK_GELU_C), one = RK_NAME(splat)(1.0f);
  const int64_t body = n - n % RK_W;
  for (int64_t i = 0; i < body; i += RK_W) {
    VF x = RK_NAME(load)(X + i);
    VF s = RK_NAME(gelu_sig)(x);
    VF d = RK_NAME(load)(DX + i) + RK_NAME(load)(G + i) * (s + x * s * (one - s) * k2 * (one + c3 * x * x));
    memcpy(DX + i, &d, sizeof d);
  }
  for (int64_t i = body; i < n; i++) {
    float x = X[i], s = RK_NAME(gelu_sig1)(x);
    DX[i] += G[i] * (s + x * s * (1.0f - s) * 2.0f * RK_GELU_K * (1.0f + 3.0f * RK_GELU_C * x * x));
  }
}

#undef RK_GELU_K
#undef RK_GELU_C

/*
 * LayerNorm forward, in TransformerLens's three hookable steps (see src/tensor/ops/nn.ts):
 *   ln_scale      mean[r] = Σ x / C;  scale[r] = √(Σ (x − mean)² / C + eps)   (two passes)
 *   ln_normalize  out = (x − mean) / S[r], the mean recomputed (S may be a replaced hook value)
 *   affine        out = x·w + b (b may be NULL)
 * Sums run in RK_W float lanes and are combined in double.
 */
static inline double RK_NAME(row_sum)(const float* x, int64_t C) {
  const int64_t body = C - C % RK_W;
  VF acc = RK_NAME(splat)(0.0f);
  for (int64_t c = 0; c < body; c += RK_W) acc += RK_NAME(load)(x + c);
  double s = 0.0;
  for (int j = 0; j < RK_W; j++) s += acc[j];
  for (int64_t c = body; c < C; c++) s += x[c];
  return s;
}

static void RK_NAME(ln_scale)(const float* X, int64_t rows, int64_t C, float eps, float* scale, float* mean) {
  const int64_t body = C - C % RK_W;
  for (int64_t r = 0; r < rows; r++) {
    const float* x = X + r * C;
    const float m = (float)(RK_NAME(row_sum)(x, C) / (double)C);
    const VF mm = RK_NAME(splat)(m);
    VF acc = RK_NAME(splat)(0.0f);
    for (int64_t c = 0; c < body; c += RK_W) {
      VF d = RK_NAME(load)(x + c) - mm;
      acc += d * d;
    }
    double v = 0.0;
    for (int j = 0; j < RK_W; j++) v += acc[j];
    for (int64_t c = body; c < C; c++) v += (double)(x[c] - m) * (double)(x[c] - m);
    mean[r] = m;
    scale[r] = (float)sqrt(v / (double)C + (double)eps);
  }
}

static void RK_NAME(ln_normalize)(const float* X, int64_t rows, int64_t C, const float* S, float* out) {
  const int64_t body = C - C % RK_W;
  for (int64_t r = 0; r < rows; r++) {
    const float* x = X + r * C;
    float* y = out + r * C;
    const float m = (float)(RK_NAME(row_sum)(x, C) / (double)C);
    const float inv = 1.0f / S[r];
    const VF mm = RK_NAME(splat)(m), iv = RK_NAME(splat)(inv);
    for (int64_t c = 0; c < body; c += RK_W) {
      VF v = (RK_NAME(load)(x + c) - mm) * iv;
      memcpy(y + c, &v, sizeof v);
    }
    for (int64_t c = body; c < C; c++) y[c] = (x[c] - m) * inv;
  }
}

static void RK_NAME(affine)(const float* X, int64_t rows, int64_t C, const float* w, const float* b, float* out) {
  const int64_t body = C - C % RK_W;
  for (int64_t r = 0; r < rows; r++) {
    const float* x = X + r * C;
    float* y = out + r * C;
    for (int64_t c = 0; c < body; c += RK_W) {
      VF v = RK_NAME(load)(x + c) * RK_NAME(load)(w + c);
      if (b) v += RK_NAME(load)(b + c);
      memcpy(y + c, &v, sizeof v);
    }
    for (int64_t c = body; c < C; c++) y[c] = x[c] * w[c] + (b ? b[c] : 0.0f);
  }
}

/*
 * layer_norm: LayerNorm of each row while it sits in cache: ln_scale, ln_normalize and affine on that
 * row, in that order, so the same bits as the three kernels one after another (affine in place on out).
 */
static void RK_NAME(layer_norm)(const float* X, int64_t rows, int64_t C, float eps, const float* w, const float* b, float* out, float* scale, float* mean) {
  for (int64_t r = 0; r < rows; r++) {
    const float* x = X + r * C;
    float* y = out + r * C;
    RK_NAME(ln_scale)(x, 1, C, eps, scale + r, mean + r);
    RK_NAME(ln_normalize)(x, 1, C, scale + r, y);
    RK_NAME(affine)(y, 1, C, w, b, y);
  }
}

/*
 * LayerNorm backward, one kernel per forward step (each adds into its gradients, as every backward does):
 *   ln_scale_bwd      GX[r] += G[r] / (C·scale[r]) · (X[r] − mean[r])
 *   ln_normalize_bwd  GX[r] += (G[r] − mean(G[r])) / S[r];  GS[r] −= (G[r]·Y[r]) / S[r]   (Y = forward output)
 *   affine_bwd        GX[r] += G[r]·w;  GW += Σ_r G[r]·X[r];  GB += Σ_r G[r]
 * Any of GX, GS, GW, GB may be NULL (that input needs no gradient).
 */
static void RK_NAME(ln_scale_bwd)(const float* G, const float* X, int64_t rows, int64_t C, const float* scale, const float* mean, float* GX) {
  const int64_t body = C - C % RK_W;
  for (int64_t r = 0; r < rows; r++) {
    const float* x = X + r * C;
    float* gx = GX + r * C;
    const float k = G[r] / ((float)C * scale[r]), m = mean[r];
    const VF kk = RK_NAME(splat)(k), mm = RK_NAME(splat)(m);
    for (int64_t c = 0; c < body; c += RK_W) {
      VF v = RK_NAME(load)(gx + c) + kk * (RK_NAME(load)(x + c) - mm);
      memcpy(gx + c, &v, sizeof v);
    }
    for (int64_t c = body; c < C; c++) gx[c] += k * (x[c] - m);
  }
}

static void RK_NAME(ln_normalize_bwd)(const float* G, const float* Y, int64_t rows, int64_t C, const float* S, float* GX, float* GS) {
  const int64_t body = C - C % RK_W;
  for (int64_t r = 0; r < rows; r++) {
    const float* g = G + r * C;
    const float* y = Y + r * C;
    const float inv = 1.0f / S[r];
    if (GS) {
      VF acc = RK_NAME(splat)(0.0f);
      for (int64_t c = 0; c < body; c += RK_W) acc += RK_NAME(load)(g + c) * RK_NAME(load)(y + c);
      double gy = 0.0;
      for (int j = 0; j < RK_W; j++) gy += acc[j];
      for (int64_t c = body; c < C; c++) gy += (double)g[c] * (double)y[c];
      GS[r] -= (float)gy * inv;
    }
    if (GX) {
      const float gm = (float)(RK_NAME(row_sum)(g, C) / (double)C);
      const VF gmv = RK_NAME(splat)(gm), iv = RK_NAME(splat)(inv);
      float* gx = GX + r * C;
      for (int64_t c = 0; c < body; c += RK_W) {
        VF v = RK_NAME(load)(gx + c) + (RK_NAME(load)(g + c) - gmv) * iv;
        memcpy(gx + c, &v, sizeof v);
      }
      for (int64_t c = body; c < C; c++) gx[c] += (g[c] - gm) * inv;
    }
  }
}

static void RK_NAME(affine_bwd)(const float* G, const float* X, int64_t rows, int64_t C, const float* w, float* GX, float* GW, float* GB) {
  const int64_t body = C - C % RK_W;
  for (int64_t r = 0; r < rows; r++) {
    const float* g = G + r * C;
    const float* x = X + r * C;
    float* gx = GX ? GX + r * C : NULL;
    for (int64_t c = 0; c < body; c += RK_W) {
      const VF gv = RK_NAME(load)(g + c);
      if (gx) { VF v = RK_NAME(load)(gx + c) + gv * RK_NAME(load)(w + c); memcpy(gx + c, &v, sizeof v); }
      if (GW) { VF v = RK_NAME(load)(GW + c) + gv * RK_NAME(load)(x + c); memcpy(GW + c, &v, sizeof v); }
      if (GB) { VF v = RK_NAME(load)(GB + c) + gv; memcpy(GB + c, &v, sizeof v); }
    }
    for (int64_t c = body; c < C; c++) {
      if (gx) gx[c] += g[c] * w[c];
      if (GW) GW[c] += g[c] * x[c];
      if (GB) GB[c] += g[c];
    }
  }
}

/*
 * layer_norm_bwd: layer_norm's backward row by row while the row is in cache, as the three ops'
 * backwards run one after another (affine_bwd, ln_normalize_bwd, ln_scale_bwd) on x̂ recomputed by
 * ln_normalize: the same bits. GW and GB sum over rows in row order, so it runs in one thread. Any of
 * GX, GW, GB may be NULL; xhat and ghat are scratch rows of C floats.
 */
static void RK_NAME(layer_norm_bwd)(const float* G, const float* X, int64_t rows, int64_t C, const float* scale, const float* mean, const float* w,
                                    float* GX, float* GW, float* GB, float* xhat, float* ghat) {
  for (int64_t r = 0; r < rows; r++) {
    const float* g = G + r * C;
    const float* x = X + r * C;
    RK_NAME(ln_normalize)(x, 1, C, scale + r, xhat);
    if (GX) memset(ghat, 0, (size_t)C * sizeof(float));
    RK_NAME(affine_bwd)(g, xhat, 1, C, w, GX ? ghat : NULL, GW, GB);
    if (!GX) continue;
    float gs = 0.0f;
    RK_NAME(ln_normalize_bwd)(ghat, xhat, 1, C, scale + r, GX + r * C, &gs);
    RK_NAME(ln_scale_bwd)(&gs, x, 1, C, scale + r, mean + r, GX + r * C);
  }
}

/*
 * ce_blocks: cross-entropy of the multi-output bin heads (src/sweep/multihead.ts) over Out [rows,
 * blocks·P], block a of row r being neuron a's P logits before the bias; this call does blocks
 * [a0, a1) (blocks are independent: any split gives the same bits). Per row, as the single trainer's
 * ops one after the other: Out += bias (float32), lse of each block (lse_rows), loss[a] = Σ_r lse −
 * logit[label] in float64; with grad, each block becomes float32(kc)·softmax (softmax_scale) with
 * float32(· − kc) at the label, and dBacc[j] = Σ_r dOut[r, j] summed in float64 over r in order.
 * lse and scale: scratch of `blocks` floats.
 */
static void RK_NAME(ce_blocks)(float* Out, int64_t rows, int64_t blocks, int64_t P, int64_t a0, int64_t a1, const float* bias, const int32_t* labels,
                               double kc, bool grad, double* loss, double* dBacc, float* lse, float* scale) {
  const int64_t KP = blocks * P, j0 = a0 * P, j1 = a1 * P, nb = a1 - a0;
  for (int64_t a = a0; a < a1; a++) { loss[a] = 0.0; scale[a] = (float)kc; }
  if (grad) for (int64_t j = j0; j < j1; j++) dBacc[j] = 0.0;
  for (int64_t r = 0; r < rows; r++) {
    float* x = Out + r * KP;
    const int32_t* lab = labels + r * blocks;
    for (int64_t j = j0; j < j1; j++) x[j] = x[j] + bias[j];
    RK_NAME(lse_rows)(x + j0, nb, P, lse + a0);
    for (int64_t a = a0; a < a1; a++) loss[a] += (double)lse[a] - (double)x[a * P + lab[a]];
    if (!grad) continue;
    RK_NAME(softmax_scale)(x + j0, nb, P, lse + a0, scale + a0);
    for (int64_t a = a0; a < a1; a++) x[a * P + lab[a]] = (float)((double)x[a * P + lab[a]] - kc);
    for (int64_t j = j0; j < j1; j++) dBacc[j] += (double)x[j];
  }
}

#undef VF
#undef VI
