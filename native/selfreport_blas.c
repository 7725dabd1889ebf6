/*
 * selfreport_blas: a plain C Node-API addon exposing OpenBLAS's cblas_sgemm, row-major.
 *
 *   sgemm(transA, transB, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc)
 *   sgemmStridedBatched(transA, transB, M, N, K, alpha, A, lda, strideA,
 *                       B, ldb, strideB, beta, C, ldc, strideC, batch)
 *   openblasInfo() -> { config: string, numThreads: number }
 *   logSumExpRows(X, rows, cols, out)        out[r] = log Σ_c exp(X[r, c])
 *   softmaxScaleRows(X, rows, cols, lse, scale)  X[r, c] ← scale[r] · exp(X[r, c] − lse[r]) in place
 *   causalAttentionForward / causalAttentionBackward  fused causal attention per (batch, head)
 *                                            (attention_kernels.h; see src/tensor/backend/types.ts)
 *
 * The two row kernels carry softmax / cross-entropy over GPT-2's 50257-token vocabulary, where
 * a scalar exp per element costs more than the matrix products around it. They use a
 * vectorisable expf (Cephes's range reduction and polynomial, relative error < 2e-7) instead
 * of libm's; the TypeScript backend uses Math.exp, and the two agree to float32 rounding.
 *
 * Semantics (see src/tensor/backend/types.ts):
 *   C[M, N] = alpha · op(A)[M, K] · op(B)[K, N] + beta · C[M, N]
 *   A is stored [M, K] (lda ≥ K), or [K, M] when transA (lda ≥ M); B is [K, N] (ldb ≥ N),
 *   or [N, K] when transB (ldb ≥ K); C is [M, N] (ldc ≥ N). Matrix i of a batch starts at
 *   element i·stride of its array.
 *
 * Every argument is checked before OpenBLAS sees it (types, integer ranges, leading
 * dimensions, that each Float32Array is long enough), so a bad call throws a JS TypeError
 * or RangeError naming the argument instead of reading out of bounds or making OpenBLAS's
 * xerbla print to stderr. The checks are O(1) per call.
 */
#ifndef NAPI_VERSION
#define NAPI_VERSION 8
#endif
#include <node_api.h>
#include <cblas.h>
#include <math.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#if defined(__GLIBC__)
#include <malloc.h>
#endif
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#endif

#define MAX_ARGS 17
#define MSG_LEN 512

/* Largest dimension / stride accepted: cblas_sgemm takes 32-bit ints (blasint). */
#define MAX_INT 2147483647.0

/* Throws (unless an exception is already pending) and returns false, so checks read as
 * `if (!check(...)) return NULL;`. */
static bool throw_type(napi_env env, const char* msg) {
  bool pending = false;
  napi_is_exception_pending(env, &pending);
  if (!pending) napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", msg);
  return false;
}

static bool throw_range(napi_env env, const char* msg) {
  bool pending = false;
  napi_is_exception_pending(env, &pending);
  if (!pending) napi_throw_range_error(env, "ERR_OUT_OF_RANGE", msg);
  return false;
}

static bool get_bool(napi_env env, const char* fn, napi_value v, const char* name, bool* out) {
  char msg[MSG_LEN];
  napi_valuetype t;
  if (napi_typeof(env, v, &t) != napi_ok || t != napi_boolean) {
    snprintf(msg, sizeof msg, "%s: %s must be a boolean", fn, name);
    return throw_type(env, msg);
  }
  return napi_get_value_bool(env, v, out) == napi_ok;
}

static bool get_number(napi_env env, const char* fn, napi_value v, const char* name, double* out) {
  char msg[MSG_LEN];
  napi_valuetype t;
  if (napi_typeof(env, v, &t) != napi_ok || t != napi_number) {
    snprintf(msg, sizeof msg, "%s: %s must be a number", fn, name);
    return throw_type(env, msg);
  }
  if (napi_get_value_double(env, v, out) != napi_ok) return false;
  return true;
}

/* An integer in [0, 2^31 - 1]. */
static bool get_dim(napi_env env, const char* fn, napi_value v, const char* name, int64_t* out) {
  char msg[MSG_LEN];
  double d;
  if (!get_number(env, fn, v, name, &d)) return false;
  if (!(d >= 0.0 && d <= MAX_INT) || d != (double)(int64_t)d) {
    snprintf(msg, sizeof msg, "%s: %s must be an integer in [0, 2^31 - 1], got %.17g", fn, name, d);
    return throw_range(env, msg);
  }
  *out = (int64_t)d;
  return true;
}

/* A Float32Array (any byteOffset; `data` from Node-API already points at element 0 of the view). */
static bool get_f32(napi_env env, const char* fn, napi_value v, const char* name, float** data, int64_t* length) {
  char msg[MSG_LEN];
  bool is_ta = false;
  napi_typedarray_type type;
  size_t len = 0;
  void* ptr = NULL;
  if (napi_is_typedarray(env, v, &is_ta) != napi_ok || !is_ta) {
    snprintf(msg, sizeof msg, "%s: %s must be a Float32Array", fn, name);
    return throw_type(env, msg);
  }
  if (napi_get_typedarray_info(env, v, &type, &len, &ptr, NULL, NULL) != napi_ok) return false;
  if (type != napi_float32_array) {
    snprintf(msg, sizeof msg, "%s: %s must be a Float32Array, got another typed array", fn, name);
    return throw_type(env, msg);
  }
  *data = (float*)ptr;
  *length = (int64_t)len;
  return true;
}

/* Elements spanned by a [rows, cols] matrix with row stride ld (0 when empty). */
static int64_t span(int64_t rows, int64_t cols, int64_t ld) {
  return (rows == 0 || cols == 0) ? 0 : (rows - 1) * ld + cols;
}

/* Elements spanned by `batch` matrices of `one` elements, `stride` apart. */
static int64_t batch_span(int64_t one, int64_t stride, int64_t batch) {
  return (one == 0 || batch == 0) ? 0 : (batch - 1) * stride + one;
}

/* One operand's description, for checks and messages. */
typedef struct {
  const char* name;    /* "A" */
  const char* ld_name; /* "lda" */
  const char* stride_name;
  bool trans;
  int64_t rows, cols;  /* stored shape (after accounting for the transpose) */
  int64_t ld, stride;
  float* data;
  int64_t length;
  const char* shape;   /* e.g. "[M, K]" or "[K, M] (transposed)" */
} operand;

static bool check_operand(napi_env env, const char* fn, const operand* op, int64_t batch, bool batched) {
  char msg[MSG_LEN];
  int64_t min_ld = op->cols > 1 ? op->cols : 1;
  if (op->ld < min_ld) {
    snprintf(msg, sizeof msg, "%s: %s = %lld must be >= max(1, %lld): %s is stored %s = [%lld, %lld]",
             fn, op->ld_name, (long long)op->ld, (long long)op->cols, op->name, op->shape,
             (long long)op->rows, (long long)op->cols);
    return throw_range(env, msg);
  }
  int64_t one = span(op->rows, op->cols, op->ld);
  int64_t need = batched ? batch_span(one, op->stride, batch) : one;
  if (op->length < need) {
    if (batched) {
      snprintf(msg, sizeof msg,
               "%s: %s is too short: %lld matrices stored %s = [%lld, %lld] with %s = %lld, %s = %lld "
               "need %lld elements, the Float32Array has %lld",
               fn, op->name, (long long)batch, op->shape, (long long)op->rows, (long long)op->cols,
               op->ld_name, (long long)op->ld, op->stride_name, (long long)op->stride,
               (long long)need, (long long)op->length);
    } else {
      snprintf(msg, sizeof msg,
               "%s: %s is too short: stored %s = [%lld, %lld] with %s = %lld needs %lld elements, "
               "the Float32Array has %lld",
               fn, op->name, op->shape, (long long)op->rows, (long long)op->cols,
               op->ld_name, (long long)op->ld, (long long)need, (long long)op->length);
    }
    return throw_range(env, msg);
  }
  return true;
}

/* Parsed arguments of either entry point. */
typedef struct {
  bool trans_a, trans_b;
  int64_t M, N, K, batch;
  double alpha, beta;
  operand A, B, C;
} gemm_args;

/*
 * Parses and checks the arguments. `batched` selects the 17-argument form:
 *   (transA, transB, M, N, K, alpha, A, lda, strideA, B, ldb, strideB, beta, C, ldc, strideC, batch)
 * otherwise the 13-argument form:
 *   (transA, transB, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc)
 */
static bool parse_args(napi_env env, napi_callback_info info, bool batched, gemm_args* g) {
  const char* fn = batched ? "sgemmStridedBatched" : "sgemm";
  const size_t expected = batched ? 17 : 13;
  char msg[MSG_LEN];
  size_t argc = MAX_ARGS;
  napi_value argv[MAX_ARGS];
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok) return false;
  if (argc != expected) {
    snprintf(msg, sizeof msg, "%s: expected %zu arguments, got %zu", fn, expected, argc);
    return throw_type(env, msg);
  }
  memset(g, 0, sizeof *g);
  /* Argument positions: the batched form inserts a stride after each leading dimension. */
  const size_t iA = 6, ilda = 7;
  const size_t iB = batched ? 9 : 8, ildb = iB + 1;
  const size_t ibeta = batched ? 12 : 10;
  const size_t iC = ibeta + 1, ildc = iC + 1;

  if (!get_bool(env, fn, argv[0], "transA", &g->trans_a)) return false;
  if (!get_bool(env, fn, argv[1], "transB", &g->trans_b)) return false;
  if (!get_dim(env, fn, argv[2], "M", &g->M)) return false;
  if (!get_dim(env, fn, argv[3], "N", &g->N)) return false;
  if (!get_dim(env, fn, argv[4], "K", &g->K)) return false;
  if (!get_number(env, fn, argv[5], "alpha", &g->alpha)) return false;
  if (!get_number(env, fn, argv[ibeta], "beta", &g->beta)) return false;
  g->batch = 1;
  if (batched && !get_dim(env, fn, argv[16], "batch", &g->batch)) return false;

  operand* A = &g->A;
  A->name = "A"; A->ld_name = "lda"; A->stride_name = "strideA"; A->trans = g->trans_a;
  A->rows = g->trans_a ? g->K : g->M;
  A->cols = g->trans_a ? g->M : g->K;
  A->shape = g->trans_a ? "[K, M] (transA)" : "[M, K]";
  if (!get_f32(env, fn, argv[iA], "A", &A->data, &A->length)) return false;
  if (!get_dim(env, fn, argv[ilda], "lda", &A->ld)) return false;
  if (batched && !get_dim(env, fn, argv[ilda + 1], "strideA", &A->stride)) return false;

  operand* B = &g->B;
  B->name = "B"; B->ld_name = "ldb"; B->stride_name = "strideB"; B->trans = g->trans_b;
  B->rows = g->trans_b ? g->N : g->K;
  B->cols = g->trans_b ? g->K : g->N;
  B->shape = g->trans_b ? "[N, K] (transB)" : "[K, N]";
  if (!get_f32(env, fn, argv[iB], "B", &B->data, &B->length)) return false;
  if (!get_dim(env, fn, argv[ildb], "ldb", &B->ld)) return false;
  if (batched && !get_dim(env, fn, argv[ildb + 1], "strideB", &B->stride)) return false;

  operand* C = &g->C;
  C->name = "C"; C->ld_name = "ldc"; C->stride_name = "strideC"; C->trans = false;
  C->rows = g->M;
  C->cols = g->N;
  C->shape = "[M, N]";
  if (!get_f32(env, fn, argv[iC], "C", &C->data, &C->length)) return false;
  if (!get_dim(env, fn, argv[ildc], "ldc", &C->ld)) return false;
  if (batched && !get_dim(env, fn, argv[ildc + 1], "strideC", &C->stride)) return false;

  return check_operand(env, fn, A, g->batch, batched) &&
         check_operand(env, fn, B, g->batch, batched) &&
         check_operand(env, fn, C, g->batch, batched);
}

static void run_sgemm(const gemm_args* g, const float* a, const float* b, float* c) {
  /* Leading dimensions are passed as checked (≥ max(1, cols)), so OpenBLAS never calls xerbla. */
  cblas_sgemm(CblasRowMajor, g->trans_a ? CblasTrans : CblasNoTrans, g->trans_b ? CblasTrans : CblasNoTrans,
              (blasint)g->M, (blasint)g->N, (blasint)g->K, (float)g->alpha,
              a, (blasint)g->A.ld, b, (blasint)g->B.ld, (float)g->beta, c, (blasint)g->C.ld);
}

static napi_value sgemm(napi_env env, napi_callback_info info) {
  gemm_args g;
  if (!parse_args(env, info, false, &g)) return NULL;
  if (g.M == 0 || g.N == 0) return NULL;
  run_sgemm(&g, g.A.data, g.B.data, g.C.data);
  return NULL;
}

static napi_value sgemm_strided_batched(napi_env env, napi_callback_info info) {
  gemm_args g;
  if (!parse_args(env, info, true, &g)) return NULL;
  if (g.M == 0 || g.N == 0) return NULL;
  for (int64_t i = 0; i < g.batch; i++) {
    run_sgemm(&g, g.A.data + i * g.A.stride, g.B.data + i * g.B.stride, g.C.data + i * g.C.stride);
  }
  return NULL;
}


/* ---------------------------------------------------------------------------------------------
 * Row kernels: log-sum-exp and scaled softmax over the last axis.
 * ------------------------------------------------------------------------------------------- */

/* Row kernels (native/row_kernels.h), compiled for baseline SIMD and, on x86-64, for AVX2+FMA;
 * the AVX2 copy is picked at run time when the CPU has it (about 5x faster than SSE2). */
#define RK_W 4
#define RK_NAME(f) f##_base
#include "row_kernels.h"
#include "attention_kernels.h"
#undef RK_W
#undef RK_NAME
#define MK_NAME(f) f##_base
#include "multihead_kernels.h"
#undef MK_NAME

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#pragma GCC push_options
#pragma GCC target("avx2,fma")
#define RK_W 8
#define RK_NAME(f) f##_avx2
#include "row_kernels.h"
#include "attention_kernels.h"
#undef RK_W
#undef RK_NAME
#pragma GCC pop_options
/* The multi-output head kernels: float64 loops, so AVX2 without FMA (no contraction: -std=c11 keeps
 * each operation rounded) and AVX-512F, twice as wide again (about 4x the SSE2 build's AdamW). */
#pragma GCC push_options
#pragma GCC target("avx2")
#define MK_NAME(f) f##_avx2
#include "multihead_kernels.h"
#undef MK_NAME
#pragma GCC pop_options
#pragma GCC push_options
#pragma GCC target("avx512f")
#define MK_NAME(f) f##_avx512
#include "multihead_kernels.h"
#undef MK_NAME
#pragma GCC pop_options
/* Chosen once at load: AVX2 when the CPU has it, unless SELFREPORT_SIMD=base (to test the base path);
 * AVX-512F for the multi-output head kernels when the CPU has it, unless SELFREPORT_SIMD=base or avx2. */
static bool use_avx2 = false;
static bool use_avx512 = false;
static void choose_simd(void) {
  const char* want = getenv("SELFREPORT_SIMD");
  use_avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && !(want && strcmp(want, "base") == 0);
  use_avx512 = use_avx2 && __builtin_cpu_supports("avx512f") && !(want && strcmp(want, "avx2") == 0);
}
#define DISPATCH(f, ...) (use_avx2 ? f##_avx2(__VA_ARGS__) : f##_base(__VA_ARGS__))
#define DISPATCH_MK(f, ...) (use_avx512 ? f##_avx512(__VA_ARGS__) : use_avx2 ? f##_avx2(__VA_ARGS__) : f##_base(__VA_ARGS__))
#else
static const bool use_avx2 = false;
static const bool use_avx512 = false;
static void choose_simd(void) {}
#define DISPATCH(f, ...) f##_base(__VA_ARGS__)
#define DISPATCH_MK(f, ...) f##_base(__VA_ARGS__)
#endif

/*
 * Elementwise kernels over whole parameter sets (AdamW, gradient clipping) split their range over
 * OpenBLAS's thread count (OPENBLAS_NUM_THREADS; at most 8), each thread taking one contiguous part
 * of at least MIN_PER_THREAD elements. Every element is computed the same way whichever thread does
 * it, so the result does not depend on the split.
 */
#define MIN_PER_THREAD (1 << 16)
#define MAX_THREADS 8
typedef void (*range_fn)(void* ctx, int64_t begin, int64_t end);
typedef struct { range_fn fn; void* ctx; int64_t begin, end; } range_job;

static void* run_range_job(void* arg) {
  range_job* j = (range_job*)arg;
  j->fn(j->ctx, j->begin, j->end);
  return NULL;
}

/* Splits [0, n) into up to `threads` parts of at least MIN_PER_THREAD / cost units each (cost: elements per unit). */
static void parallel_units(int64_t n, int64_t cost, range_fn fn, void* ctx) {
  int64_t threads = openblas_get_num_threads();
  if (threads > MAX_THREADS) threads = MAX_THREADS;
  if (cost < 1) cost = 1;
  if (threads > n * cost / MIN_PER_THREAD) threads = n * cost / MIN_PER_THREAD;
  if (threads > n) threads = n;
  if (threads <= 1) { fn(ctx, 0, n); return; }
  range_job jobs[MAX_THREADS];
  pthread_t ids[MAX_THREADS];
  bool started[MAX_THREADS] = {false};
  const int64_t per = (n + threads - 1) / threads;
  for (int64_t t = 0; t < threads; t++) {
    jobs[t] = (range_job){fn, ctx, t * per, (t + 1) * per < n ? (t + 1) * per : n};
  }
  for (int64_t t = 1; t < threads; t++) started[t] = pthread_create(&ids[t], NULL, run_range_job, &jobs[t]) == 0;
  fn(ctx, jobs[0].begin, jobs[0].end);
  for (int64_t t = 1; t < threads; t++) {
    if (started[t]) pthread_join(ids[t], NULL);
    else fn(ctx, jobs[t].begin, jobs[t].end); /* no thread: do its part here */
  }
}

static void parallel_range(int64_t n, range_fn fn, void* ctx) { parallel_units(n, 1, fn, ctx); }

/*
 * The row kernels, split the same way: by whole rows (each row is computed exactly as in one
 * thread), and GELU by blocks of 8 elements, so only the last part has a tail shorter than a
 * vector, as in one thread. affine_bwd sums over rows into GW and GB, so it stays in one thread.
 */
enum row_kind { RK_LSE, RK_SOFTMAX_SCALE, RK_GELU_FWD, RK_GELU_BWD, RK_LN_SCALE, RK_LN_NORMALIZE, RK_AFFINE, RK_LN_SCALE_BWD, RK_LN_NORMALIZE_BWD, RK_SOFTMAX, RK_SOFTMAX_BWD, RK_LAYER_NORM };
typedef struct {
  enum row_kind kind;
  int64_t cols, n;
  const float *a, *b, *c, *d;
  float *o1, *o2, *o3;
  float eps;
} row_job;

#define ROWS(p, r) ((p) ? (p) + (r) * c->cols : NULL)
static void row_range(void* arg, int64_t r0, int64_t r1) {
  const row_job* c = (const row_job*)arg;
  const int64_t k = r1 - r0, C = c->cols;
  switch (c->kind) {
    case RK_LSE: DISPATCH(lse_rows, c->a + r0 * C, k, C, c->o1 + r0); break;
    case RK_SOFTMAX_SCALE: DISPATCH(softmax_scale, c->o1 + r0 * C, k, C, c->a + r0, c->b + r0); break;
    case RK_GELU_FWD: {
      const int64_t i0 = r0 * 8, i1 = r1 * 8 < c->n ? r1 * 8 : c->n;
      DISPATCH(gelu_fwd, c->a + i0, i1 - i0, c->o1 + i0);
      break;
    }
    case RK_GELU_BWD: {
      const int64_t i0 = r0 * 8, i1 = r1 * 8 < c->n ? r1 * 8 : c->n;
      DISPATCH(gelu_bwd, c->a + i0, c->b + i0, i1 - i0, c->o1 + i0);
      break;
    }
    case RK_LN_SCALE: DISPATCH(ln_scale, c->a + r0 * C, k, C, c->eps, c->o1 + r0, c->o2 + r0); break;
    case RK_LN_NORMALIZE: DISPATCH(ln_normalize, c->a + r0 * C, k, C, c->b + r0, c->o1 + r0 * C); break;
    case RK_AFFINE: DISPATCH(affine, c->a + r0 * C, k, C, c->b, c->c, c->o1 + r0 * C); break;
    case RK_LN_SCALE_BWD: DISPATCH(ln_scale_bwd, c->a + r0, c->b + r0 * C, k, C, c->c + r0, c->d + r0, c->o1 + r0 * C); break;
    case RK_LN_NORMALIZE_BWD: DISPATCH(ln_normalize_bwd, c->a + r0 * C, c->b + r0 * C, k, C, c->c + r0, ROWS(c->o1, r0), c->o2 ? c->o2 + r0 : NULL); break;
    case RK_SOFTMAX: DISPATCH(softmax_rows, c->a + r0 * C, k, C, c->o1 + r0 * C); break;
    case RK_SOFTMAX_BWD: DISPATCH(softmax_bwd_rows, c->a + r0 * C, c->b + r0 * C, k, C, c->o1 + r0 * C); break;
    case RK_LAYER_NORM: DISPATCH(layer_norm, c->a + r0 * C, k, C, c->eps, c->b, c->c, c->o1 + r0 * C, c->o2 + r0, c->o3 + r0); break;
  }
}
#undef ROWS

static void run_rows(row_job job, int64_t rows) { parallel_units(rows, job.cols, row_range, &job); }
static void run_gelu(row_job job) { job.cols = 8; parallel_units((job.n + 7) / 8, 8, row_range, &job); }

static bool get_rows(napi_env env, const char* fn, napi_value* argv, float** X, int64_t* rows, int64_t* cols) {
  int64_t len;
  char msg[MSG_LEN];
  if (!get_f32(env, fn, argv[0], "X", X, &len)) return false;
  if (!get_dim(env, fn, argv[1], "rows", rows)) return false;
  if (!get_dim(env, fn, argv[2], "cols", cols)) return false;
  if (*rows * *cols > len) {
    snprintf(msg, sizeof msg, "%s: X has %lld elements, fewer than rows·cols = %lld", fn, (long long)len, (long long)(*rows * *cols));
    return throw_range(env, msg);
  }
  return true;
}

/* A Float32Array argument `name` with at least `rows` elements (`dim` names that count in the message). */
static bool get_vector(napi_env env, const char* fn, napi_value v, const char* name, int64_t rows, const char* dim, float** data) {
  int64_t len;
  char msg[MSG_LEN];
  if (!get_f32(env, fn, v, name, data, &len)) return false;
  if (len < rows) {
    snprintf(msg, sizeof msg, "%s: %s has %lld elements, fewer than %s = %lld", fn, name, (long long)len, dim, (long long)rows);
    return throw_range(env, msg);
  }
  return true;
}

static napi_value log_sum_exp_rows(napi_env env, napi_callback_info info) {
  const char* fn = "logSumExpRows";
  size_t argc = 4;
  napi_value argv[4];
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok) return NULL;
  if (argc != 4) { throw_type(env, "logSumExpRows(X, rows, cols, out) takes 4 arguments"); return NULL; }
  float *X, *out;
  int64_t rows, cols;
  if (!get_rows(env, fn, argv, &X, &rows, &cols)) return NULL;
  if (!get_vector(env, fn, argv[3], "out", rows, "rows", &out)) return NULL;
  run_rows((row_job){.kind = RK_LSE, .cols = cols, .a = X, .o1 = out}, rows);
  return NULL;
}

static napi_value softmax_scale_rows(napi_env env, napi_callback_info info) {
  const char* fn = "softmaxScaleRows";
  size_t argc = 5;
  napi_value argv[5];
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok) return NULL;
  if (argc != 5) { throw_type(env, "softmaxScaleRows(X, rows, cols, lse, scale) takes 5 arguments"); return NULL; }
  float *X, *lse, *scale;
  int64_t rows, cols;
  if (!get_rows(env, fn, argv, &X, &rows, &cols)) return NULL;
  if (!get_vector(env, fn, argv[3], "lse", rows, "rows", &lse)) return NULL;
  if (!get_vector(env, fn, argv[4], "scale", rows, "rows", &scale)) return NULL;
  run_rows((row_job){.kind = RK_SOFTMAX_SCALE, .cols = cols, .a = lse, .b = scale, .o1 = X}, rows);
  return NULL;
}

/* geluForward(X, n, Y): Y[i] = gelu_new(X[i]) for i < n. */
static napi_value gelu_forward(napi_env env, napi_callback_info info) {
  const char* fn = "geluForward";
  size_t argc = 3;
  napi_value argv[3];
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok) return NULL;
  if (argc != 3) { throw_type(env, "geluForward(X, n, Y) takes 3 arguments"); return NULL; }
  float *X, *Y;
  int64_t n;
  if (!get_dim(env, fn, argv[1], "n", &n)) return NULL;
  if (!get_vector(env, fn, argv[0], "X", n, "n", &X)) return NULL;
  if (!get_vector(env, fn, argv[2], "Y", n, "n", &Y)) return NULL;
  run_gelu((row_job){.kind = RK_GELU_FWD, .n = n, .a = X, .o1 = Y});
  return NULL;
}

/* geluBackward(X, G, n, DX): DX[i] += G[i]·gelu_new'(X[i]) for i < n. */
static napi_value gelu_backward(napi_env env, napi_callback_info info) {
  const char* fn = "geluBackward";
  size_t argc = 4;
  napi_value argv[4];
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok) return NULL;
  if (argc != 4) { throw_type(env, "geluBackward(X, G, n, DX) takes 4 arguments"); return NULL; }
  float *X, *G, *DX;
  int64_t n;
  if (!get_dim(env, fn, argv[2], "n", &n)) return NULL;
  if (!get_vector(env, fn, argv[0], "X", n, "n", &X)) return NULL;
  if (!get_vector(env, fn, argv[1], "G", n, "n", &G)) return NULL;
  if (!get_vector(env, fn, argv[3], "DX", n, "n", &DX)) return NULL;
  run_gelu((row_job){.kind = RK_GELU_BWD, .n = n, .a = X, .b = G, .o1 = DX});
  return NULL;
}

/* An optional Float32Array: null/undefined gives NULL; otherwise as get_vector. */
static bool get_optional_vector(napi_env env, const char* fn, napi_value v, const char* name, int64_t n, const char* dim, float** data) {
  napi_valuetype t;
  if (napi_typeof(env, v, &t) != napi_ok) return false;
  if (t == napi_null || t == napi_undefined) { *data = NULL; return true; }
  return get_vector(env, fn, v, name, n, dim, data);
}

/* lnScaleRows(X, rows, cols, eps, scale, mean): per-row mean and √(var + eps). */
static napi_value ln_scale_rows(napi_env env, napi_callback_info info) {
  const char* fn = "lnScaleRows";
  size_t argc = 6;
  napi_value argv[6];
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok) return NULL;
  if (argc != 6) { throw_type(env, "lnScaleRows(X, rows, cols, eps, scale, mean) takes 6 arguments"); return NULL; }
  float *X, *scale, *mean;
  int64_t rows, cols;
  double eps;
  if (!get_rows(env, fn, argv, &X, &rows, &cols)) return NULL;
  if (!get_number(env, fn, argv[3], "eps", &eps)) return NULL;
  if (!get_vector(env, fn, argv[4], "scale", rows, "rows", &scale)) return NULL;
  if (!get_vector(env, fn, argv[5], "mean", rows, "rows", &mean)) return NULL;
  run_rows((row_job){.kind = RK_LN_SCALE, .cols = cols, .a = X, .o1 = scale, .o2 = mean, .eps = (float)eps}, rows);
  return NULL;
}

/* lnNormalizeRows(X, rows, cols, S, out): out = (x − mean(x)) / S[r]. */
static napi_value ln_normalize_rows(napi_env env, napi_callback_info info) {
  const char* fn = "lnNormalizeRows";
  size_t argc = 5;
  napi_value argv[5];
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok) return NULL;
  if (argc != 5) { throw_type(env, "lnNormalizeRows(X, rows, cols, S, out) takes 5 arguments"); return NULL; }
  float *X, *S, *out;
  int64_t rows, cols;
  if (!get_rows(env, fn, argv, &X, &rows, &cols)) return NULL;
  if (!get_vector(env, fn, argv[3], "S", rows, "rows", &S)) return NULL;
  if (!get_vector(env, fn, argv[4], "out", rows * cols, "rows·cols", &out)) return NULL;
  run_rows((row_job){.kind = RK_LN_NORMALIZE, .cols = cols, .a = X, .b = S, .o1 = out}, rows);
  return NULL;
}

/* affineRows(X, rows, cols, w, b | null, out): out = x·w + b over the last axis. */
static napi_value affine_rows(napi_env env, napi_callback_info info) {
  const char* fn = "affineRows";
  size_t argc = 6;
  napi_value argv[6];
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok) return NULL;
  if (argc != 6) { throw_type(env, "affineRows(X, rows, cols, w, b, out) takes 6 arguments"); return NULL; }
  float *X, *w, *b, *out;
  int64_t rows, cols;
  if (!get_rows(env, fn, argv, &X, &rows, &cols)) return NULL;
  if (!get_vector(env, fn, argv[3], "w", cols, "cols", &w)) return NULL;
  if (!get_optional_vector(env, fn, argv[4], "b", cols, "cols", &b)) return NULL;
  if (!get_vector(env, fn, argv[5], "out", rows * cols, "rows·cols", &out)) return NULL;
  run_rows((row_job){.kind = RK_AFFINE, .cols = cols, .a = X, .b = w, .c = b, .o1 = out}, rows);
  return NULL;
}

/* layerNormRows(X, rows, cols, eps, w, b | null, out, scale, mean): lnScaleRows, lnNormalizeRows and affineRows per row. */
static napi_value layer_norm_rows(napi_env env, napi_callback_info info) {
  const char* fn = "layerNormRows";
  size_t argc = 9;
  napi_value argv[9];
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok) return NULL;
  if (argc != 9) { throw_type(env, "layerNormRows(X, rows, cols, eps, w, b, out, scale, mean) takes 9 arguments"); return NULL; }
  float *X, *w, *b, *out, *scale, *mean;
  int64_t rows, cols;
  double eps;
  if (!get_rows(env, fn, argv, &X, &rows, &cols)) return NULL;
  if (!get_number(env, fn, argv[3], "eps", &eps)) return NULL;
  if (!get_vector(env, fn, argv[4], "w", cols, "cols", &w)) return NULL;
  if (!get_optional_vector(env, fn, argv[5], "b", cols, "cols", &b)) return NULL;
  if (!get_vector(env, fn, argv[6], "out", rows * cols, "rows·cols", &out)) return NULL;
  if (!get_vector(env, fn, argv[7], "scale", rows, "rows", &scale)) return NULL;
  if (!get_vector(env, fn, argv[8], "mean", rows, "rows", &mean)) return NULL;
  run_rows((row_job){.kind = RK_LAYER_NORM, .cols = cols, .a = X, .b = w, .c = b, .o1 = out, .o2 = scale, .o3 = mean, .eps = (float)eps}, rows);
  return NULL;
}

/* layerNormBackwardRows(G, X, rows, cols, scale, mean, w, GX | null, GW | null, GB | null): layerNormRows's
 * backward (row_kernels.h layer_norm_bwd), in one thread: its GW and GB sum over rows in order. */
static napi_value layer_norm_backward_rows(napi_env env, napi_callback_info info) {
  const char* fn = "layerNormBackwardRows";
  size_t argc = 10;
  napi_value argv[10];
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok) return NULL;
  if (argc != 10) { throw_type(env, "layerNormBackwardRows(G, X, rows, cols, scale, mean, w, GX, GW, GB) takes 10 arguments"); return NULL; }
  float *G, *X, *scale, *mean, *w, *GX, *GW, *GB;
  int64_t rows, cols;
  if (!get_dim(env, fn, argv[2], "rows", &rows)) return NULL;
  if (!get_dim(env, fn, argv[3], "cols", &cols)) return NULL;
  if (!get_vector(env, fn, argv[0], "G", rows * cols, "rows·cols", &G)) return NULL;
  if (!get_vector(env, fn, argv[1], "X", rows * cols, "rows·cols", &X)) return NULL;
  if (!get_vector(env, fn, argv[4], "scale", rows, "rows", &scale)) return NULL;
  if (!get_vector(env, fn, argv[5], "mean", rows, "rows", &mean)) return NULL;
  if (!get_vector(env, fn, argv[6], "w", cols, "cols", &w)) return NULL;
  if (!get_optional_vector(env, fn, argv[7], "GX", rows * cols, "rows·cols", &GX)) return NULL;
  if (!get_optional_vector(env, fn, argv[8], "GW", cols, "cols", &GW)) return NULL;
  if (!get_optional_vector(env, fn, argv[9], "GB", cols, "cols", &GB)) return NULL;
  float* scratch = (float*)malloc((size_t)(2 * (cols > 0 ? cols : 1)) * sizeof(float));
  if (!scratch) { throw_range(env, "layerNormBackwardRows: out of memory for two scratch rows"); return NULL; }
  DISPATCH(layer_norm_bwd, G, X, rows, cols, scale, mean, w, GX, GW, GB, scratch, scratch + cols);
  free(scratch);
  return NULL;
}

/* lnScaleBackwardRows(G, X, rows, cols, scale, mean, GX): GX[r] += G[r]/(cols·scale[r])·(X[r] − mean[r]). */
static napi_value ln_scale_backward_rows(napi_env env, napi_callback_info info) {
  const char* fn = "lnScaleBackwardRows";
  size_t argc = 7;
  napi_value argv[7];
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok) return NULL;
  if (argc != 7) { throw_type(env, "lnScaleBackwardRows(G, X, rows, cols, scale, mean, GX) takes 7 arguments"); return NULL; }
  float *G, *X, *scale, *mean, *GX;
  int64_t rows, cols;
  if (!get_dim(env, fn, argv[2], "rows", &rows)) return NULL;
  if (!get_dim(env, fn, argv[3], "cols", &cols)) return NULL;
  if (!get_vector(env, fn, argv[0], "G", rows, "rows", &G)) return NULL;
  if (!get_vector(env, fn, argv[1], "X", rows * cols, "rows·cols", &X)) return NULL;
  if (!get_vector(env, fn, argv[4], "scale", rows, "rows", &scale)) return NULL;
  if (!get_vector(env, fn, argv[5], "mean", rows, "rows", &mean)) return NULL;
  if (!get_vector(env, fn, argv[6], "GX", rows * cols, "rows·cols", &GX)) return NULL;
  run_rows((row_job){.kind = RK_LN_SCALE_BWD, .cols = cols, .a = G, .b = X, .c = scale, .d = mean, .o1 = GX}, rows);
  return NULL;
}

/* lnNormalizeBackwardRows(G, Y, rows, cols, S, GX | null, GS | null). */
static napi_value ln_normalize_backward_rows(napi_env env, napi_callback_info info) {
  const char* fn = "lnNormalizeBackwardRows";
  size_t argc = 7;
  napi_value argv[7];
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok) return NULL;
  if (argc != 7) { throw_type(env, "lnNormalizeBackwardRows(G, Y, rows, cols, S, GX, GS) takes 7 arguments"); return NULL; }
  float *G, *Y, *S, *GX, *GS;
  int64_t rows, cols;
  if (!get_dim(env, fn, argv[2], "rows", &rows)) return NULL;
  if (!get_dim(env, fn, argv[3], "cols", &cols)) return NULL;
  if (!get_vector(env, fn, argv[0], "G", rows * cols, "rows·cols", &G)) return NULL;
  if (!get_vector(env, fn, argv[1], "Y", rows * cols, "rows·cols", &Y)) return NULL;
  if (!get_vector(env, fn, argv[4], "S", rows, "rows", &S)) return NULL;
  if (!get_optional_vector(env, fn, argv[5], "GX", rows * cols, "rows·cols", &GX)) return NULL;
  if (!get_optional_vector(env, fn, argv[6], "GS", rows, "rows", &GS)) return NULL;
  run_rows((row_job){.kind = RK_LN_NORMALIZE_BWD, .cols = cols, .a = G, .b = Y, .c = S, .o1 = GX, .o2 = GS}, rows);
  return NULL;
}

/* affineBackwardRows(G, X, rows, cols, w, GX | null, GW | null, GB | null). */
static napi_value affine_backward_rows(napi_env env, napi_callback_info info) {
  const char* fn = "affineBackwardRows";
  size_t argc = 8;
  napi_value argv[8];
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok) return NULL;
  if (argc != 8) { throw_type(env, "affineBackwardRows(G, X, rows, cols, w, GX, GW, GB) takes 8 arguments"); return NULL; }
  float *G, *X, *w, *GX, *GW, *GB;
  int64_t rows, cols;
  if (!get_dim(env, fn, argv[2], "rows", &rows)) return NULL;
  if (!get_dim(env, fn, argv[3], "cols", &cols)) return NULL;
  if (!get_vector(env, fn, argv[0], "G", rows * cols, "rows·cols", &G)) return NULL;
  if (!get_vector(env, fn, argv[1], "X", rows * cols, "rows·cols", &X)) return NULL;
  if (!get_vector(env, fn, argv[4], "w", cols, "cols", &w)) return NULL;
  if (!get_optional_vector(env, fn, argv[5], "GX", rows * cols, "rows·cols", &GX)) return NULL;
  if (!get_optional_vector(env, fn, argv[6], "GW", cols, "cols", &GW)) return NULL;
  if (!get_optional_vector(env, fn, argv[7], "GB", cols, "cols", &GB)) return NULL;
  DISPATCH(affine_bwd, G, X, rows, cols, w, GX, GW, GB);
  return NULL;
}

/* softmaxRows(X, rows, cols, Y): Y[r] = softmax(X[r]), max subtracted (Y may be X). */
static napi_value softmax_rows(napi_env env, napi_callback_info info) {
  const char* fn = "softmaxRows";
  size_t argc = 4;
  napi_value argv[4];
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok) return NULL;
  if (argc != 4) { throw_type(env, "softmaxRows(X, rows, cols, Y) takes 4 arguments"); return NULL; }
  float *X, *Y;
  int64_t rows, cols;
  if (!get_rows(env, fn, argv, &X, &rows, &cols)) return NULL;
  if (!get_vector(env, fn, argv[3], "Y", rows * cols, "rows·cols", &Y)) return NULL;
  run_rows((row_job){.kind = RK_SOFTMAX, .cols = cols, .a = X, .o1 = Y}, rows);
  return NULL;
}

/* softmaxBackwardRows(G, Y, rows, cols, DX): DX[r] += Y[r] ⊙ (G[r] − G[r]·Y[r]). */
static napi_value softmax_backward_rows(napi_env env, napi_callback_info info) {
  const char* fn = "softmaxBackwardRows";
  size_t argc = 5;
  napi_value argv[5];
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok) return NULL;
  if (argc != 5) { throw_type(env, "softmaxBackwardRows(G, Y, rows, cols, DX) takes 5 arguments"); return NULL; }
  float *G, *Y, *DX;
  int64_t rows, cols;
  if (!get_dim(env, fn, argv[2], "rows", &rows)) return NULL;
  if (!get_dim(env, fn, argv[3], "cols", &cols)) return NULL;
  if (!get_vector(env, fn, argv[0], "G", rows * cols, "rows·cols", &G)) return NULL;
  if (!get_vector(env, fn, argv[1], "Y", rows * cols, "rows·cols", &Y)) return NULL;
  if (!get_vector(env, fn, argv[4], "DX", rows * cols, "rows·cols", &DX)) return NULL;
  run_rows((row_job){.kind = RK_SOFTMAX_BWD, .cols = cols, .a = G, .b = Y, .o1 = DX}, rows);
  return NULL;
}

/*
 * adamwUpdate(P, G, M, V, n, lr, beta1, beta2, eps, shrink, bc1, bc2): one AdamW step over n
 * elements, each in double in exactly the order of the JS backend's loop (and stored to float32
 * at the same points), so both backends give the same bits:
 *   M = β1·M + (1−β1)·g;  V = β2·V + (1−β2)·g·g;  P = P·shrink − lr·(M/bc1) / (√(V/bc2) + eps)
 */
typedef struct { float *P, *M, *V; const float* G; double lr, b1, b2, eps, shrink, bc1, bc2; } adamw_ctx;

/* Compiled for AVX-512F, AVX2 and the baseline, chosen at load time (GCC target_clones): the loop is
 * bound by its double divisions and square root, which the wider units run 2-4x faster. Every build
 * computes each element with the same IEEE operations in the same order (no contraction under
 * -std=c11), so the bits do not depend on the build. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
__attribute__((target_clones("avx512f", "avx2", "default")))
#endif
static void adamw_range(void* arg, int64_t begin, int64_t end) {
  const adamw_ctx* c = (const adamw_ctx*)arg;
  float* restrict P = c->P;
  float* restrict M = c->M;
  float* restrict V = c->V;
  const float* restrict G = c->G;
  const double lr = c->lr, b1 = c->b1, b2 = c->b2, eps = c->eps, shrink = c->shrink, bc1 = c->bc1, bc2 = c->bc2;
  for (int64_t i = begin; i < end; i++) {
    const double g = G[i];
    M[i] = (float)(b1 * (double)M[i] + (1.0 - b1) * g);
    V[i] = (float)(b2 * (double)V[i] + (1.0 - b2) * g * g);
    const double mh = (double)M[i] / bc1;
    const double vh = (double)V[i] / bc2;
    P[i] = (float)((double)P[i] * shrink - (lr * mh) / (sqrt(vh) + eps));
  }
}

static void adamw_update(float* P, const float* G, float* M, float* V, int64_t n,
                         double lr, double b1, double b2, double eps, double shrink, double bc1, double bc2) {
  adamw_ctx c = {P, M, V, G, lr, b1, b2, eps, shrink, bc1, bc2};
  parallel_range(n, adamw_range, &c);
}

/* scaleInPlace(X, n, k): X[i] = (float)(X[i]·k) with the product in double (gradient clipping). */
typedef struct { float* X; double k; } scale_ctx;

static void scale_range(void* arg, int64_t begin, int64_t end) {
  const scale_ctx* c = (const scale_ctx*)arg;
  float* X = c->X;
  const double k = c->k;
  for (int64_t i = begin; i < end; i++) X[i] = (float)((double)X[i] * k);
}

static napi_value scale_in_place(napi_env env, napi_callback_info info) {
  const char* fn = "scaleInPlace";
  size_t argc = 3;
  napi_value argv[3];
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok) return NULL;
  if (argc != 3) { throw_type(env, "scaleInPlace(X, n, k) takes 3 arguments"); return NULL; }
  float* X;
  int64_t n;
  double k;
  if (!get_dim(env, fn, argv[1], "n", &n)) return NULL;
  if (!get_vector(env, fn, argv[0], "X", n, "n", &X)) return NULL;
  if (!get_number(env, fn, argv[2], "k", &k)) return NULL;
  scale_ctx c = {X, k};
  parallel_range(n, scale_range, &c);
  return NULL;
}

/*
 * addInto(Y, X, n): Y[i] += X[i] for i < n, a float32 sum (the JS loop's double sum of two floats
 * rounds to the same float, so both backends give the same bits). Gradient accumulation and the
 * residual adds that write over their input.
 */
typedef struct { float* Y; const float* X; } add_ctx;

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
__attribute__((target_clones("avx512f", "avx2", "default")))
#endif
static void add_range(void* arg, int64_t begin, int64_t end) {
  const add_ctx* c = (const add_ctx*)arg;
  float* Y = c->Y;
  const float* X = c->X;
  for (int64_t i = begin; i < end; i++) Y[i] += X[i];
}

static napi_value add_into(napi_env env, napi_callback_info info) {
  const char* fn = "addInto";
  size_t argc = 3;
  napi_value argv[3];
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok) return NULL;
  if (argc != 3) { throw_type(env, "addInto(Y, X, n) takes 3 arguments"); return NULL; }
  float *Y, *X;
  int64_t n;
  if (!get_dim(env, fn, argv[2], "n", &n)) return NULL;
  if (!get_vector(env, fn, argv[0], "Y", n, "n", &Y)) return NULL;
  if (!get_vector(env, fn, argv[1], "X", n, "n", &X)) return NULL;
  add_ctx c = {Y, X};
  parallel_range(n, add_range, &c);
  return NULL;
}

/*
 * gatherRuns(A, index, run, out): out[r·run + j] = A[index[r] + j] for r < index.length, j < run (a
 * permutation's runs gathered in output order; a bias row repeated over the rows of a product's
 * output, with every index 0). Threads split the runs; each run is one memcpy.
 */
typedef struct { const float* A; const int32_t* index; int64_t run; float* out; } gather_ctx;

static void gather_runs_range(void* arg, int64_t r0, int64_t r1) {
  const gather_ctx* c = (const gather_ctx*)arg;
  for (int64_t r = r0; r < r1; r++) memcpy(c->out + r * c->run, c->A + c->index[r], (size_t)c->run * sizeof(float));
}

/* index: an Int32Array whose runs of `run` all lie inside an array of `len` elements, else a RangeError. */
static bool get_run_index(napi_env env, const char* fn, napi_value v, int64_t run, int64_t len, const char* into, const int32_t** index, int64_t* runs) {
  char msg[MSG_LEN];
  bool is_typed;
  napi_typedarray_type type;
  void* data;
  size_t n;
  if (napi_is_typedarray(env, v, &is_typed) != napi_ok) return false;
  if (is_typed && napi_get_typedarray_info(env, v, &type, &n, &data, NULL, NULL) != napi_ok) return false;
  if (!is_typed || type != napi_int32_array) {
    snprintf(msg, sizeof msg, "%s: index must be an Int32Array", fn);
    return throw_type(env, msg);
  }
  const int32_t* idx = data;
  for (size_t r = 0; r < n; r++) {
    if (idx[r] < 0 || (int64_t)idx[r] + run > len) {
      snprintf(msg, sizeof msg, "%s: index[%lld] = %d puts a run of %lld outside %s's %lld elements", fn, (long long)r, idx[r], (long long)run, into, (long long)len);
      return throw_range(env, msg);
    }
  }
  *index = idx;
  *runs = (int64_t)n;
  return true;
}

static napi_value gather_runs(napi_env env, napi_callback_info info) {
  const char* fn = "gatherRuns";
  size_t argc = 4;
  napi_value argv[4];
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok) return NULL;
  if (argc != 4) { throw_type(env, "gatherRuns(A, index, run, out) takes 4 arguments"); return NULL; }
  int64_t run, lenA, runs;
  float *A, *out;
  const int32_t* index;
  if (!get_dim(env, fn, argv[2], "run", &run)) return NULL;
  if (!get_f32(env, fn, argv[0], "A", &A, &lenA)) return NULL;
  if (!get_run_index(env, fn, argv[1], run, lenA, "A", &index, &runs)) return NULL;
  if (!get_vector(env, fn, argv[3], "out", runs * run, "index.length·run", &out)) return NULL;
  gather_ctx c = {A, index, run, out};
  parallel_units(runs, run, gather_runs_range, &c);
  return NULL;
}

/*
 * scatterAddRuns(G, index, run, GA): GA[index[r] + j] += G[r·run + j] for r < index.length, j < run
 * (a permutation's backward; an embedding's, with index = id·d). Threads split the columns j, so each
 * element's additions happen in the order of r in one thread, as in the JS loop, even when two runs
 * land on the same place (a repeated token id).
 */
typedef struct { const float* G; const int32_t* index; int64_t runs, run; float* GA; } scatter_ctx;

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
__attribute__((target_clones("avx512f", "avx2", "default")))
#endif
static void scatter_cols(void* arg, int64_t j0, int64_t j1) {
  const scatter_ctx* c = (const scatter_ctx*)arg;
  for (int64_t r = 0; r < c->runs; r++) {
    float* d = c->GA + c->index[r];
    const float* g = c->G + r * c->run;
    for (int64_t j = j0; j < j1; j++) d[j] += g[j];
  }
}

static napi_value scatter_add_runs(napi_env env, napi_callback_info info) {
  const char* fn = "scatterAddRuns";
  size_t argc = 4;
  napi_value argv[4];
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok) return NULL;
  if (argc != 4) { throw_type(env, "scatterAddRuns(G, index, run, GA) takes 4 arguments"); return NULL; }
  int64_t run, lenGA, runs;
  float *G, *GA;
  const int32_t* index;
  if (!get_dim(env, fn, argv[2], "run", &run)) return NULL;
  if (!get_f32(env, fn, argv[3], "GA", &GA, &lenGA)) return NULL;
  if (!get_run_index(env, fn, argv[1], run, lenGA, "GA", &index, &runs)) return NULL;
  if (!get_vector(env, fn, argv[0], "G", runs * run, "index.length·run", &G)) return NULL;
  scatter_ctx c = {G, index, runs, run, GA};
  parallel_units(run, (int64_t)runs, scatter_cols, &c);
  return NULL;
}

static napi_value adamw_update_js(napi_env env, napi_callback_info info) {
  const char* fn = "adamwUpdate";
  size_t argc = 12;
  napi_value argv[12];
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok) return NULL;
  if (argc != 12) { throw_type(env, "adamwUpdate(P, G, M, V, n, lr, beta1, beta2, eps, shrink, bc1, bc2) takes 12 arguments"); return NULL; }
  float *P, *G, *M, *V;
  int64_t n;
  if (!get_dim(env, fn, argv[4], "n", &n)) return NULL;
  if (!get_vector(env, fn, argv[0], "P", n, "n", &P)) return NULL;
  if (!get_vector(env, fn, argv[1], "G", n, "n", &G)) return NULL;
  if (!get_vector(env, fn, argv[2], "M", n, "n", &M)) return NULL;
  if (!get_vector(env, fn, argv[3], "V", n, "n", &V)) return NULL;
  double h[7];
  static const char* names[7] = {"lr", "beta1", "beta2", "eps", "shrink", "bc1", "bc2"};
  for (int i = 0; i < 7; i++) if (!get_number(env, fn, argv[5 + i], names[i], &h[i])) return NULL;
  adamw_update(P, G, M, V, n, h[0], h[1], h[2], h[3], h[4], h[5], h[6]);
  return NULL;
}

/* sumSquares(X, n) = Σ X[i]² over i < n, accumulated in double. */
static napi_value sum_squares(napi_env env, napi_callback_info info) {
  const char* fn = "sumSquares";
  size_t argc = 2;
  napi_value argv[2];
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok) return NULL;
  if (argc != 2) { throw_type(env, "sumSquares(X, n) takes 2 arguments"); return NULL; }
  float* X;
  int64_t n;
  if (!get_dim(env, fn, argv[1], "n", &n)) return NULL;
  if (!get_vector(env, fn, argv[0], "X", n, "n", &X)) return NULL;
  double s = 0.0;
  for (int64_t i = 0; i < n; i++) s += (double)X[i] * (double)X[i];
  napi_value out;
  if (napi_create_double(env, s, &out) != napi_ok) return NULL;
  return out;
}

/*
 * Threads for the multi-output head kernels: their blocks (neurons) are independent, so a call splits
 * its blocks into contiguous ranges, one per thread, and gives the same bits however it splits. As many
 * threads as SELFREPORT_KERNEL_THREADS says, else as OpenBLAS uses (OPENBLAS_NUM_THREADS, else the
 * cores; `--workers N>1` sets it to 1), at most
 * MK_MAX_THREADS, and one when the work is small (below MK_MIN_WORK elements per thread).
 */
#define MK_MAX_THREADS 16
#define MK_MIN_WORK 65536
typedef void (*range_fn)(void* ctx, int64_t a0, int64_t a1);
typedef struct { range_fn fn; void* ctx; int64_t a0, a1; } range_task;
static void* run_range_task(void* p) {
  range_task* t = p;
  t->fn(t->ctx, t->a0, t->a1);
  return NULL;
}
static void parallel_blocks(range_fn fn, void* ctx, int64_t blocks, int64_t work_per_block) {
  const char* want = getenv("SELFREPORT_KERNEL_THREADS");
  int64_t nt = want && atoi(want) > 0 ? atoi(want) : openblas_get_num_threads();
  if (nt > MK_MAX_THREADS) nt = MK_MAX_THREADS;
  if (nt > blocks) nt = blocks;
  const int64_t by_work = blocks * work_per_block / MK_MIN_WORK;
  if (nt > by_work) nt = by_work;
  if (nt <= 1) { fn(ctx, 0, blocks); return; }
  pthread_t th[MK_MAX_THREADS];
  range_task task[MK_MAX_THREADS];
  bool started[MK_MAX_THREADS] = {false};
  for (int64_t i = 1; i < nt; i++) {
    task[i] = (range_task){fn, ctx, blocks * i / nt, blocks * (i + 1) / nt};
    started[i] = pthread_create(&th[i], NULL, run_range_task, &task[i]) == 0;
  }
  fn(ctx, 0, blocks / nt);
  for (int64_t i = 1; i < nt; i++) {
    if (started[i]) pthread_join(th[i], NULL);
    else run_range_task(&task[i]); /* no thread to be had: do its share here */
  }
}

typedef struct {
  float *W; const float* GW; float *MW, *VW; int64_t wsize;
  float* B; const float* GB; float *MB, *VB; int64_t bsize;
  double maxNorm, lr, b1, b2, eps, shrink, bc1, bc2;
} clip_adamw_ctx;
static void clip_adamw_range(void* p, int64_t a0, int64_t a1) {
  const clip_adamw_ctx* c = p;
  DISPATCH_MK(clip_adamw_blocks, c->W, c->GW, c->MW, c->VW, c->wsize, c->B, c->GB, c->MB, c->VB, c->bsize, a0, a1,
              c->maxNorm, c->lr, c->b1, c->b2, c->eps, c->shrink, c->bc1, c->bc2);
}

typedef struct {
  float* Out; int64_t rows, blocks, P; const float* bias; const int32_t* labels;
  double kc; bool grad; double *loss, *acc; float *lse, *scale;
} ce_ctx;
static void ce_range(void* p, int64_t a0, int64_t a1) {
  const ce_ctx* c = p;
  DISPATCH(ce_blocks, c->Out, c->rows, c->blocks, c->P, a0, a1, c->bias, c->labels, c->kc, c->grad, c->loss, c->acc, c->lse, c->scale);
}

/*
 * clipAdamwBlocks(W, GW, MW, VW, wsize, B, GB, MB, VB, bsize, blocks, maxNorm, lr, beta1, beta2, eps,
 * shrink, bc1, bc2): per block, clip by the block's own gradient norm, then AdamW (multihead_kernels.h).
 */
static napi_value clip_adamw_blocks_js(napi_env env, napi_callback_info info) {
  const char* fn = "clipAdamwBlocks";
  size_t argc = 19;
  napi_value argv[19];
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok) return NULL;
  if (argc != 19) { throw_type(env, "clipAdamwBlocks(W, GW, MW, VW, wsize, B, GB, MB, VB, bsize, blocks, maxNorm, lr, beta1, beta2, eps, shrink, bc1, bc2) takes 19 arguments"); return NULL; }
  int64_t wsize, bsize, blocks;
  if (!get_dim(env, fn, argv[4], "wsize", &wsize)) return NULL;
  if (!get_dim(env, fn, argv[9], "bsize", &bsize)) return NULL;
  if (!get_dim(env, fn, argv[10], "blocks", &blocks)) return NULL;
  float *W, *GW, *MW, *VW, *B, *GB, *MB, *VB;
  const int64_t nw = blocks * wsize, nb = blocks * bsize;
  if (!get_vector(env, fn, argv[0], "W", nw, "blocks·wsize", &W)) return NULL;
  if (!get_vector(env, fn, argv[1], "GW", nw, "blocks·wsize", &GW)) return NULL;
  if (!get_vector(env, fn, argv[2], "MW", nw, "blocks·wsize", &MW)) return NULL;
  if (!get_vector(env, fn, argv[3], "VW", nw, "blocks·wsize", &VW)) return NULL;
  if (!get_vector(env, fn, argv[5], "B", nb, "blocks·bsize", &B)) return NULL;
  if (!get_vector(env, fn, argv[6], "GB", nb, "blocks·bsize", &GB)) return NULL;
  if (!get_vector(env, fn, argv[7], "MB", nb, "blocks·bsize", &MB)) return NULL;
  if (!get_vector(env, fn, argv[8], "VB", nb, "blocks·bsize", &VB)) return NULL;
  double h[8];
  static const char* names[8] = {"maxNorm", "lr", "beta1", "beta2", "eps", "shrink", "bc1", "bc2"};
  for (int i = 0; i < 8; i++) if (!get_number(env, fn, argv[11 + i], names[i], &h[i])) return NULL;
  clip_adamw_ctx ctx = {W, GW, MW, VW, wsize, B, GB, MB, VB, bsize, h[0], h[1], h[2], h[3], h[4], h[5], h[6], h[7]};
  parallel_blocks(clip_adamw_range, &ctx, blocks, wsize + bsize);
  return NULL;
}

/*
 * crossEntropyBlocks(Out, rows, blocks, P, bias, labels, kc, loss, dB): the multi-output bin heads'
 * loss (row_kernels.h ce_blocks); dB null: the loss only (Out gets the bias and stays logits).
 */
static napi_value cross_entropy_blocks_js(napi_env env, napi_callback_info info) {
  const char* fn = "crossEntropyBlocks";
  size_t argc = 9;
  napi_value argv[9];
  char msg[MSG_LEN];
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok) return NULL;
  if (argc != 9) { throw_type(env, "crossEntropyBlocks(Out, rows, blocks, P, bias, labels, kc, loss, dB) takes 9 arguments"); return NULL; }
  int64_t rows, blocks, P;
  if (!get_dim(env, fn, argv[1], "rows", &rows)) return NULL;
  if (!get_dim(env, fn, argv[2], "blocks", &blocks)) return NULL;
  if (!get_dim(env, fn, argv[3], "P", &P)) return NULL;
  if (P < 1) { throw_range(env, "crossEntropyBlocks: P must be at least 1, got 0"); return NULL; }
  float *Out, *bias, *dB = NULL;
  if (!get_vector(env, fn, argv[0], "Out", rows * blocks * P, "rows·blocks·P", &Out)) return NULL;
  if (!get_vector(env, fn, argv[4], "bias", blocks * P, "blocks·P", &bias)) return NULL;
  bool is_typed;
  napi_typedarray_type type;
  void* data;
  size_t n;
  if (napi_is_typedarray(env, argv[5], &is_typed) != napi_ok) return NULL;
  if (is_typed && napi_get_typedarray_info(env, argv[5], &type, &n, &data, NULL, NULL) != napi_ok) return NULL;
  if (!is_typed || type != napi_int32_array) { throw_type(env, "crossEntropyBlocks: labels must be an Int32Array"); return NULL; }
  if ((int64_t)n < rows * blocks) {
    snprintf(msg, sizeof msg, "%s: labels has %lld elements, fewer than rows·blocks = %lld", fn, (long long)n, (long long)(rows * blocks));
    throw_range(env, msg);
    return NULL;
  }
  const int32_t* labels = data;
  for (int64_t i = 0; i < rows * blocks; i++) {
    if (labels[i] < 0 || labels[i] >= P) {
      snprintf(msg, sizeof msg, "%s: labels[%lld] = %d is not a class in [0, %lld)", fn, (long long)i, labels[i], (long long)P);
      throw_range(env, msg);
      return NULL;
    }
  }
  double kc;
  if (!get_number(env, fn, argv[6], "kc", &kc)) return NULL;
  if (napi_is_typedarray(env, argv[7], &is_typed) != napi_ok) return NULL;
  if (is_typed && napi_get_typedarray_info(env, argv[7], &type, &n, &data, NULL, NULL) != napi_ok) return NULL;
  if (!is_typed || type != napi_float64_array) { throw_type(env, "crossEntropyBlocks: loss must be a Float64Array"); return NULL; }
  if ((int64_t)n < blocks) {
    snprintf(msg, sizeof msg, "%s: loss has %lld elements, fewer than blocks = %lld", fn, (long long)n, (long long)blocks);
    throw_range(env, msg);
    return NULL;
  }
  double* loss = data;
  napi_valuetype t;
  if (napi_typeof(env, argv[8], &t) != napi_ok) return NULL;
  const bool grad = t != napi_null;
  if (grad && !get_vector(env, fn, argv[8], "dB", blocks * P, "blocks·P", &dB)) return NULL;
  double* acc = grad ? malloc((size_t)(blocks * P + 1) * sizeof(double)) : NULL;
  float* scratch = malloc((size_t)(2 * blocks + 1) * sizeof(float));
  if ((grad && acc == NULL) || scratch == NULL) { free(acc); free(scratch); throw_range(env, "crossEntropyBlocks: out of memory"); return NULL; }
  ce_ctx ctx = {Out, rows, blocks, P, bias, labels, kc, grad, loss, acc, scratch, scratch + blocks};
  parallel_blocks(ce_range, &ctx, blocks, rows * P);
  if (grad) for (int64_t j = 0; j < blocks * P; j++) dB[j] = (float)acc[j];
  free(acc);
  free(scratch);
  return NULL;
}

/*
 * Fused causal attention (attention_kernels.h). The B·H (batch, head) pairs are split over threads as
 * the row kernels are (parallel_units, OpenBLAS's thread count); each pair writes only its own rows of
 * Z, dQ, dK, dV (its head's columns) and its own [T, T] block of P, and is computed the same way in any
 * thread, so the result has the same bits whatever the thread count. Each thread allocates its scratch.
 */
typedef struct {
  const float *Q, *K, *V, *dZ;
  const uint8_t* mask;
  float *P, *Z, *dQ, *dK, *dV;
  int64_t T, H, Dh;
  float scale;
  bool backward;
  volatile int failed;
} attn_job;

static void attn_range(void* arg, int64_t p0, int64_t p1) {
  attn_job* c = (attn_job*)arg;
  const int64_t T = c->T, H = c->H, Dh = c->Dh, ld = H * Dh;
  const int64_t Tp = (T + 15) / 16 * 16; /* at least each build's rounding of T (8 or 16 keys) */
  /* Enough for either pair kernel (attention_kernels.h; AK_R ≤ 7 rows): tiles, scores, dS, packed rows. */
  const size_t n = (size_t)(Dh * Tp + 8 * Tp + T * T + 3 * T * Dh + 8 * T);
  float* scratch = malloc((n + 1) * sizeof(float));
  if (scratch == NULL) { c->failed = 1; return; }
  for (int64_t p = p0; p < p1; p++) {
    const int64_t b = p / H, h = p % H, off = b * T * ld + h * Dh;
    float* Pp = c->P != NULL ? c->P + p * T * T : NULL;
    if (!c->backward) {
      DISPATCH(attn_fwd_pair, c->Q + off, c->K + off, c->V + off, T, ld, Dh, c->scale, c->mask ? c->mask + b * T : NULL, Pp, c->Z + off, scratch);
    } else {
      DISPATCH(attn_bwd_pair, c->dZ + off, c->Q + off, c->K + off, c->V + off, Pp, T, ld, Dh, c->scale,
               c->dQ ? c->dQ + off : NULL, c->dK ? c->dK + off : NULL, c->dV ? c->dV + off : NULL, scratch);
    }
  }
  free(scratch);
}

/* B, T, H, Dh (arguments first..first+3) and B·T·H·Dh, B·H·T·T, checked against overflow. */
static bool get_attn_dims(napi_env env, const char* fn, napi_value* argv, int64_t* B, int64_t* T, int64_t* H, int64_t* Dh) {
  if (!get_dim(env, fn, argv[0], "B", B)) return false;
  if (!get_dim(env, fn, argv[1], "T", T)) return false;
  if (!get_dim(env, fn, argv[2], "H", H)) return false;
  if (!get_dim(env, fn, argv[3], "Dh", Dh)) return false;
  const double qkv = (double)*B * (double)*T * (double)*H * (double)*Dh, p = (double)*B * (double)*H * (double)*T * (double)*T;
  if (qkv > 9.0e15 || p > 9.0e15) {
    char msg[MSG_LEN];
    snprintf(msg, sizeof msg, "%s: B·T·H·Dh = %.17g or B·H·T·T = %.17g is too large", fn, qkv, p);
    return throw_range(env, msg);
  }
  return true;
}

/* causalAttentionForward(Q, K, V, B, T, H, Dh, scale, keyMask | null, P | null, Z): see Backend. */
static napi_value causal_attention_forward(napi_env env, napi_callback_info info) {
  const char* fn = "causalAttentionForward";
  size_t argc = 11;
  napi_value argv[11];
  char msg[MSG_LEN];
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok) return NULL;
  if (argc != 11) { throw_type(env, "causalAttentionForward(Q, K, V, B, T, H, Dh, scale, keyMask, P, Z) takes 11 arguments"); return NULL; }
  int64_t B, T, H, Dh;
  if (!get_attn_dims(env, fn, argv + 3, &B, &T, &H, &Dh)) return NULL;
  const int64_t n = B * T * H * Dh, np = B * H * T * T;
  float *Q, *K, *V, *P, *Z;
  double scale;
  if (!get_vector(env, fn, argv[0], "Q", n, "B·T·H·Dh", &Q)) return NULL;
  if (!get_vector(env, fn, argv[1], "K", n, "B·T·H·Dh", &K)) return NULL;
  if (!get_vector(env, fn, argv[2], "V", n, "B·T·H·Dh", &V)) return NULL;
  if (!get_number(env, fn, argv[7], "scale", &scale)) return NULL;
  const uint8_t* mask = NULL;
  napi_valuetype t;
  if (napi_typeof(env, argv[8], &t) != napi_ok) return NULL;
  if (t != napi_null) {
    bool is_typed = false;
    napi_typedarray_type type;
    size_t len = 0;
    void* data = NULL;
    if (napi_is_typedarray(env, argv[8], &is_typed) != napi_ok) return NULL;
    if (is_typed && napi_get_typedarray_info(env, argv[8], &type, &len, &data, NULL, NULL) != napi_ok) return NULL;
    if (!is_typed || type != napi_uint8_array) { throw_type(env, "causalAttentionForward: keyMask must be a Uint8Array or null"); return NULL; }
    if ((int64_t)len < B * T) {
      snprintf(msg, sizeof msg, "%s: keyMask has %lld elements, fewer than B·T = %lld", fn, (long long)len, (long long)(B * T));
      throw_range(env, msg);
      return NULL;
    }
    mask = data;
  }
  if (!get_optional_vector(env, fn, argv[9], "P", np, "B·H·T·T", &P)) return NULL;
  if (!get_vector(env, fn, argv[10], "Z", n, "B·T·H·Dh", &Z)) return NULL;
  attn_job job = {.Q = Q, .K = K, .V = V, .mask = mask, .P = P, .Z = Z, .T = T, .H = H, .Dh = Dh, .scale = (float)scale, .backward = false, .failed = 0};
  parallel_units(B * H, T * T * (Dh + 1), attn_range, &job);
  if (job.failed) throw_range(env, "causalAttentionForward: out of memory for the scratch tiles");
  return NULL;
}

/* causalAttentionBackward(dZ, Q, K, V, P, B, T, H, Dh, scale, dQ | null, dK | null, dV | null): see Backend. */
static napi_value causal_attention_backward(napi_env env, napi_callback_info info) {
  const char* fn = "causalAttentionBackward";
  size_t argc = 13;
  napi_value argv[13];
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok) return NULL;
  if (argc != 13) { throw_type(env, "causalAttentionBackward(dZ, Q, K, V, P, B, T, H, Dh, scale, dQ, dK, dV) takes 13 arguments"); return NULL; }
  int64_t B, T, H, Dh;
  if (!get_attn_dims(env, fn, argv + 5, &B, &T, &H, &Dh)) return NULL;
  const int64_t n = B * T * H * Dh, np = B * H * T * T;
  float *dZ, *Q, *K, *V, *P, *dQ, *dK, *dV;
  double scale;
  if (!get_vector(env, fn, argv[0], "dZ", n, "B·T·H·Dh", &dZ)) return NULL;
  if (!get_vector(env, fn, argv[1], "Q", n, "B·T·H·Dh", &Q)) return NULL;
  if (!get_vector(env, fn, argv[2], "K", n, "B·T·H·Dh", &K)) return NULL;
  if (!get_vector(env, fn, argv[3], "V", n, "B·T·H·Dh", &V)) return NULL;
  if (!get_vector(env, fn, argv[4], "P", np, "B·H·T·T", &P)) return NULL;
  if (!get_number(env, fn, argv[9], "scale", &scale)) return NULL;
  if (!get_optional_vector(env, fn, argv[10], "dQ", n, "B·T·H·Dh", &dQ)) return NULL;
  if (!get_optional_vector(env, fn, argv[11], "dK", n, "B·T·H·Dh", &dK)) return NULL;
  if (!get_optional_vector(env, fn, argv[12], "dV", n, "B·T·H·Dh", &dV)) return NULL;
  if (dQ == NULL && dK == NULL && dV == NULL) return NULL;
  attn_job job = {.Q = Q, .K = K, .V = V, .dZ = dZ, .P = P, .dQ = dQ, .dK = dK, .dV = dV, .T = T, .H = H, .Dh = Dh, .scale = (float)scale, .backward = true, .failed = 0};
  parallel_units(B * H, T * T * (Dh + 1), attn_range, &job);
  if (job.failed) throw_range(env, "causalAttentionBackward: out of memory for the scratch tiles");
  return NULL;
}

/*
 * Keep freed heap memory for reuse (glibc only). Every op returns a fresh Float32Array, which Node
 * allocates with calloc; by default glibc serves large ones (above 128 KB, rising to 32 MB) with a
 * fresh mmap and gives freed heap tops back to the OS (trim), so each forward touches hundreds of
 * megabytes of new pages: one page fault per 4 KB, which on a virtual machine costs more than the
 * arithmetic (a [1024, 50257] logits buffer: ~1.4 s of faults vs 36 ms reused, measured on a loaded
 * 2-core VM). With mmap off and trimming off, freed buffers stay in the heap and the next op reuses
 * them, like a buffer pool that the garbage collector fills. The cost: the process keeps its peak
 * heap (RSS does not shrink after a big step). SELFREPORT_KEEP_MEMORY=0 keeps glibc's defaults.
 */
static const char* keep_memory = "off";
static void choose_malloc(void) {
#if defined(__GLIBC__)
  const char* want = getenv("SELFREPORT_KEEP_MEMORY");
  if (want && strcmp(want, "0") == 0) return;
  /* mmap still serves an allocation when the heap cannot grow (glibc falls back to it). */
  if (mallopt(M_MMAP_MAX, 0) == 1 && mallopt(M_TRIM_THRESHOLD, INT32_MAX) == 1) keep_memory = "on";
#endif
}

/* { config: openblas_get_config(), numThreads: openblas_get_num_threads() }, for bench headers. */
static napi_value openblas_info(napi_env env, napi_callback_info info) {
  (void)info;
  napi_value obj, config, threads, simd;
  if (napi_create_object(env, &obj) != napi_ok) return NULL;
  if (napi_create_string_utf8(env, openblas_get_config(), NAPI_AUTO_LENGTH, &config) != napi_ok) return NULL;
  if (napi_create_int32(env, openblas_get_num_threads(), &threads) != napi_ok) return NULL;
  napi_set_named_property(env, obj, "config", config);
  napi_set_named_property(env, obj, "numThreads", threads);
  if (napi_create_string_utf8(env, use_avx2 ? "avx2" : "base", NAPI_AUTO_LENGTH, &simd) != napi_ok) return NULL;
  napi_set_named_property(env, obj, "rowKernels", simd);
  napi_value mk;
  if (napi_create_string_utf8(env, use_avx512 ? "avx512" : use_avx2 ? "avx2" : "base", NAPI_AUTO_LENGTH, &mk) != napi_ok) return NULL;
  napi_set_named_property(env, obj, "multiheadKernels", mk);
  napi_value keep;
  if (napi_create_string_utf8(env, keep_memory, NAPI_AUTO_LENGTH, &keep) != napi_ok) return NULL;
  napi_set_named_property(env, obj, "keepMemory", keep);
  return obj;
}

NAPI_MODULE_INIT() {
  choose_simd();
  choose_malloc();
  napi_property_descriptor props[] = {
    {"sgemm", NULL, sgemm, NULL, NULL, NULL, napi_enumerable, NULL},
    {"sgemmStridedBatched", NULL, sgemm_strided_batched, NULL, NULL, NULL, napi_enumerable, NULL},
    {"openblasInfo", NULL, openblas_info, NULL, NULL, NULL, napi_enumerable, NULL},
    {"logSumExpRows", NULL, log_sum_exp_rows, NULL, NULL, NULL, napi_enumerable, NULL},
    {"softmaxScaleRows", NULL, softmax_scale_rows, NULL, NULL, NULL, napi_enumerable, NULL},
    {"geluForward", NULL, gelu_forward, NULL, NULL, NULL, napi_enumerable, NULL},
    {"geluBackward", NULL, gelu_backward, NULL, NULL, NULL, napi_enumerable, NULL},
    {"lnScaleRows", NULL, ln_scale_rows, NULL, NULL, NULL, napi_enumerable, NULL},
    {"lnNormalizeRows", NULL, ln_normalize_rows, NULL, NULL, NULL, napi_enumerable, NULL},
    {"affineRows", NULL, affine_rows, NULL, NULL, NULL, napi_enumerable, NULL},
    {"layerNormRows", NULL, layer_norm_rows, NULL, NULL, NULL, napi_enumerable, NULL},
    {"layerNormBackwardRows", NULL, layer_norm_backward_rows, NULL, NULL, NULL, napi_enumerable, NULL},
    {"lnScaleBackwardRows", NULL, ln_scale_backward_rows, NULL, NULL, NULL, napi_enumerable, NULL},
    {"lnNormalizeBackwardRows", NULL, ln_normalize_backward_rows, NULL, NULL, NULL, napi_enumerable, NULL},
    {"affineBackwardRows", NULL, affine_backward_rows, NULL, NULL, NULL, napi_enumerable, NULL},
    {"softmaxRows", NULL, softmax_rows, NULL, NULL, NULL, napi_enumerable, NULL},
    {"softmaxBackwardRows", NULL, softmax_backward_rows, NULL, NULL, NULL, napi_enumerable, NULL},
    {"adamwUpdate", NULL, adamw_update_js, NULL, NULL, NULL, napi_enumerable, NULL},
    {"sumSquares", NULL, sum_squares, NULL, NULL, NULL, napi_enumerable, NULL},
    {"clipAdamwBlocks", NULL, clip_adamw_blocks_js, NULL, NULL, NULL, napi_enumerable, NULL},
    {"crossEntropyBlocks", NULL, cross_entropy_blocks_js, NULL, NULL, NULL, napi_enumerable, NULL},
    {"scaleInPlace", NULL, scale_in_place, NULL, NULL, NULL, napi_enumerable, NULL},
    {"addInto", NULL, add_into, NULL, NULL, NULL, napi_enumerable, NULL},
    {"scatterAddRuns", NULL, scatter_add_runs, NULL, NULL, NULL, napi_enumerable, NULL},
    {"gatherRuns", NULL, gather_runs, NULL, NULL, NULL, napi_enumerable, NULL},
    {"causalAttentionForward", NULL, causal_attention_forward, NULL, NULL, NULL, napi_enumerable, NULL},
    {"causalAttentionBackward", NULL, causal_attention_backward, NULL, NULL, NULL, napi_enumerable, NULL},
  };
  if (napi_define_properties(env, exports, sizeof props / sizeof props[0], props) != napi_ok) return NULL;
  return exports;
}
