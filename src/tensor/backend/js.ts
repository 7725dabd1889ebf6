/**
 * The pure TypeScript backend: a cache-blocked sgemm in the GotoBLAS/BLIS layout, for machines
 * where the OpenBLAS addon cannot be built. About 1–2 % of OpenBLAS's speed; correct everywhere.
 *
 * Loop nest (C[M, N] += alpha · op(A)[M, K] · op(B)[K, N], after C is scaled by beta once):
 *   for jc in N by NC:                 B block [KC, NC] packed once per (jc, pc), stays in L2/L3
 *     for pc in K by KC:
 *       pack op(B)[pc:pc+kc, jc:jc+nc] into NR-wide micro-panels      packB [nc/NR][kc][NR]
 *       for ic in M by MC:
 *         pack op(A)[ic:ic+mc, pc:pc+kc] into MR-tall micro-panels     packA [mc/MR][kc][MR]
 *         for jr in nc by NR, ir in mc by MR:
 *           MR×NR register block: kc rank-1 updates from two contiguous micro-panels
 * Partial micro-panels are zero-padded, so the kernel always runs a full MR×NR block and only
 * the write-back looks at the edge. Accumulation is in JS numbers (float64) within one KC block,
 * rounded to float32 when added into C, so results are at least as accurate as BLAS's.
 *
 * No allocation per call: the two pack buffers are module-level and sized once.
 * sgemmReference (float64 triple loop) stays beside it as documentation and as the check.
 */
import type { Backend } from "./types.ts";

/** Register block: MR rows of op(A) × NR columns of op(B) held in 16 locals. */
const MR = 4;
const NR = 4;
/** Depth of one packed block: a KC×NR micro-panel of B (4 KiB) stays in L1 across the ir loop. */
const KC = 256;
/** Rows of the packed A block: MC×KC floats = 128 KiB, in L2. */
const MC = 128;
/** Columns of the packed B block: KC×NC floats = 2 MiB, in L2/L3. */
const NC = 2048;

let packA: Float32Array | null = null; // [MC/MR][KC][MR]
let packB: Float32Array | null = null; // [NC/NR][KC][NR]
const edge = new Float64Array(MR * NR); // accumulators of a partial block, row-major [MR, NR]

// ---------------------------------------------------------------------------------------------
// Argument checks, shared in spirit (and in message wording) with native/selfreport_blas.c.
// ---------------------------------------------------------------------------------------------

function checkDim(fn: string, name: string, v: number): void {
  if (typeof v !== "number") throw new TypeError(`${fn}: ${name} must be a number`);
  if (!(Number.isInteger(v) && v >= 0 && v <= 0x7fffffff)) {
    throw new RangeError(`${fn}: ${name} must be an integer in [0, 2^31 - 1], got ${v}`);
  }
}

/**
 * Checks one operand stored as a [rows, cols] matrix with row stride ld, `batch` of them
 * `stride` elements apart (batch = 1, stride = 0 for plain sgemm).
 */
function checkOperand(
  fn: string, name: string, shape: string, arr: Float32Array, rows: number, cols: number,
  ldName: string, ld: number, strideName: string, stride: number, batch: number, batched: boolean,
): void {
  if (!(arr instanceof Float32Array)) throw new TypeError(`${fn}: ${name} must be a Float32Array`);
  checkDim(fn, ldName, ld);
  if (batched) checkDim(fn, strideName, stride);
  if (ld < Math.max(1, cols)) {
    throw new RangeError(`${fn}: ${ldName} = ${ld} must be >= max(1, ${cols}): ${name} is stored ${shape} = [${rows}, ${cols}]`);
  }
  const one = rows === 0 || cols === 0 ? 0 : (rows - 1) * ld + cols;
  const need = one === 0 || batch === 0 ? 0 : (batch - 1) * stride + one;
  if (arr.length < need) {
    throw new RangeError(batched
      ? `${fn}: ${name} is too short: ${batch} matrices stored ${shape} = [${rows}, ${cols}] with ${ldName} = ${ld}, ${strideName} = ${stride} need ${need} elements, the Float32Array has ${arr.length}`
      : `${fn}: ${name} is too short: stored ${shape} = [${rows}, ${cols}] with ${ldName} = ${ld} needs ${need} elements, the Float32Array has ${arr.length}`);
  }
}

/** Throws a TypeError/RangeError naming the bad argument; the same checks as the native addon. */
export function checkSgemmArgs(
  fn: string, batched: boolean,
  transA: boolean, transB: boolean, M: number, N: number, K: number, alpha: number,
  A: Float32Array, lda: number, strideA: number, B: Float32Array, ldb: number, strideB: number,
  beta: number, C: Float32Array, ldc: number, strideC: number, batch: number,
): void {
  if (typeof transA !== "boolean") throw new TypeError(`${fn}: transA must be a boolean`);
  if (typeof transB !== "boolean") throw new TypeError(`${fn}: transB must be a boolean`);
  checkDim(fn, "M", M);
  checkDim(fn, "N", N);
  checkDim(fn, "K", K);
  if (typeof alpha !== "number") throw new TypeError(`${fn}: alpha must be a number`);
  if (typeof beta !== "number") throw new TypeError(`${fn}: beta must be a number`);
  if (batched) checkDim(fn, "batch", batch);
  checkOperand(fn, "A", transA ? "[K, M] (transA)" : "[M, K]", A, transA ? K : M, transA ? M : K,
    "lda", lda, "strideA", strideA, batch, batched);
  checkOperand(fn, "B", transB ? "[N, K] (transB)" : "[K, N]", B, transB ? N : K, transB ? K : N,
    "ldb", ldb, "strideB", strideB, batch, batched);
  checkOperand(fn, "C", "[M, N]", C, M, N, "ldc", ldc, "strideC", strideC, batch, batched);
}

// ---------------------------------------------------------------------------------------------
// Packing
// ---------------------------------------------------------------------------------------------

/**
 * Packs op(A)[i0:i0+mc, p0:p0+kc] into dst as MR-row micro-panels: dst[(r/MR)·kc·MR + p·MR + r%MR].
 * Rows past mc are zero. A starts at element aOff; stored [M, K] (or [K, M] when transA), stride lda.
 */
function packAPanel(
  transA: boolean, A: Float32Array, aOff: number, lda: number,
  i0: number, mc: number, p0: number, kc: number, dst: Float32Array,
): void {
  let d = 0;
  for (let ir = 0; ir < mc; ir += MR) {
    const mr = Math.min(MR, mc - ir);
    if (!transA && mr === MR) {
      // Four rows of A, each contiguous in p.
      const r0 = aOff + (i0 + ir) * lda + p0;
      const r1 = r0 + lda, r2 = r1 + lda, r3 = r2 + lda;
      for (let p = 0; p < kc; p++, d += MR) {
        dst[d] = A[r0 + p]; dst[d + 1] = A[r1 + p]; dst[d + 2] = A[r2 + p]; dst[d + 3] = A[r3 + p];
      }
    } else if (transA && mr === MR) {
      // A is [K, M]: the four values for one p are contiguous.
      let s = aOff + p0 * lda + i0 + ir;
      for (let p = 0; p < kc; p++, d += MR, s += lda) {
        dst[d] = A[s]; dst[d + 1] = A[s + 1]; dst[d + 2] = A[s + 2]; dst[d + 3] = A[s + 3];
      }
    } else {
      for (let p = 0; p < kc; p++, d += MR) {
        for (let r = 0; r < MR; r++) {
          const i = i0 + ir + r;
          dst[d + r] = r < mr ? (transA ? A[aOff + (p0 + p) * lda + i] : A[aOff + i * lda + p0 + p]) : 0;
        }
      }
    }
  }
}

/**
 * Packs op(B)[p0:p0+kc, j0:j0+nc] into dst as NR-column micro-panels: dst[(c/NR)·kc·NR + p·NR + c%NR].
 * Columns past nc are zero. B starts at element bOff; stored [K, N] (or [N, K] when transB), stride ldb.
 */
function packBPanel(
  transB: boolean, B: Float32Array, bOff: number, ldb: number,
  p0: number, kc: number, j0: number, nc: number, dst: Float32Array,
): void {
  let d = 0;
  for (let jr = 0; jr < nc; jr += NR) {
    const nr = Math.min(NR, nc - jr);
    if (!transB && nr === NR) {
      // B is [K, N]: the four values for one p are contiguous.
      let s = bOff + p0 * ldb + j0 + jr;
      for (let p = 0; p < kc; p++, d += NR, s += ldb) {
        dst[d] = B[s]; dst[d + 1] = B[s + 1]; dst[d + 2] = B[s + 2]; dst[d + 3] = B[s + 3];
      }
    } else if (transB && nr === NR) {
      // B is [N, K]: four rows, each contiguous in p.
      const c0 = bOff + (j0 + jr) * ldb + p0;
      const c1 = c0 + ldb, c2 = c1 + ldb, c3 = c2 + ldb;
      for (let p = 0; p < kc; p++, d += NR) {
        dst[d] = B[c0 + p]; dst[d + 1] = B[c1 + p]; dst[d + 2] = B[c2 + p]; dst[d + 3] = B[c3 + p];
      }
    } else {
      for (let p = 0; p < kc; p++, d += NR) {
        for (let c = 0; c < NR; c++) {
          const j = j0 + jr + c;
          dst[d + c] = c < nr ? (transB ? B[bOff + j * ldb + p0 + p] : B[bOff + (p0 + p) * ldb + j]) : 0;
        }
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Micro-kernel
// ---------------------------------------------------------------------------------------------

/**
 * C[0:mr, 0:nr] += alpha · Ap · Bp, where Ap is one packed [kc][MR] micro-panel at aOff and Bp one
 * packed [kc][NR] micro-panel at bOff; C's block starts at cOff with row stride ldc.
 */
function kernel4x4(
  kc: number, Ap: Float32Array, aOff: number, Bp: Float32Array, bOff: number,
  C: Float32Array, cOff: number, ldc: number, alpha: number, mr: number, nr: number,
): void {
  let c00 = 0, c01 = 0, c02 = 0, c03 = 0;
  let c10 = 0, c11 = 0, c12 = 0, c13 = 0;
  let c20 = 0, c21 = 0, c22 = 0, c23 = 0;
  let c30 = 0, c31 = 0, c32 = 0, c33 = 0;
  let a = aOff, b = bOff;
  for (let p = 0; p < kc; p++, a += MR, b += NR) {
    const a0 = Ap[a], a1 = Ap[a + 1], a2 = Ap[a + 2], a3 = Ap[a + 3];
    const b0 = Bp[b], b1 = Bp[b + 1], b2 = Bp[b + 2], b3 = Bp[b + 3];
    c00 += a0 * b0; c01 += a0 * b1; c02 += a0 * b2; c03 += a0 * b3;
    c10 += a1 * b0; c11 += a1 * b1; c12 += a1 * b2; c13 += a1 * b3;
    c20 += a2 * b0; c21 += a2 * b1; c22 += a2 * b2; c23 += a2 * b3;
    c30 += a3 * b0; c31 += a3 * b1; c32 += a3 * b2; c33 += a3 * b3;
  }
  if (mr === MR && nr === NR) {
    let o = cOff;
    C[o] += alpha * c00; C[o + 1] += alpha * c01; C[o + 2] += alpha * c02; C[o + 3] += alpha * c03;
    o += ldc;
    C[o] += alpha * c10; C[o + 1] += alpha * c11; C[o + 2] += alpha * c12; C[o + 3] += alpha * c13;
    o += ldc;
    C[o] += alpha * c20; C[o + 1] += alpha * c21; C[o + 2] += alpha * c22; C[o + 3] += alpha * c23;
    o += ldc;
    C[o] += alpha * c30; C[o + 1] += alpha * c31; C[o + 2] += alpha * c32; C[o + 3] += alpha * c33;
    return;
  }
  edge[0] = c00; edge[1] = c01; edge[2] = c02; edge[3] = c03;
  edge[4] = c10; edge[5] = c11; edge[6] = c12; edge[7] = c13;
  edge[8] = c20; edge[9] = c21; edge[10] = c22; edge[11] = c23;
  edge[12] = c30; edge[13] = c31; edge[14] = c32; edge[15] = c33;
  for (let r = 0; r < mr; r++) {
    for (let c = 0; c < nr; c++) C[cOff + r * ldc + c] += alpha * edge[r * NR + c];
  }
}

// ---------------------------------------------------------------------------------------------
// Driver
// ---------------------------------------------------------------------------------------------

/** C[M, N] (at cOff, stride ldc) *= beta; beta = 0 writes zeros whatever C held (NaN included). */
function scaleC(M: number, N: number, beta: number, C: Float32Array, cOff: number, ldc: number): void {
  if (beta === 1) return;
  for (let i = 0; i < M; i++) {
    const row = cOff + i * ldc;
    if (beta === 0) C.fill(0, row, row + N);
    else for (let j = row; j < row + N; j++) C[j] *= beta;
  }
}

/** One checked sgemm with operands starting at element offsets aOff/bOff/cOff. */
function gemmAt(
  transA: boolean, transB: boolean, M: number, N: number, K: number, alpha: number,
  A: Float32Array, aOff: number, lda: number, B: Float32Array, bOff: number, ldb: number,
  beta: number, C: Float32Array, cOff: number, ldc: number,
): void {
  if (M === 0 || N === 0) return;
  scaleC(M, N, beta, C, cOff, ldc);
  if (K === 0 || alpha === 0) return; // as BLAS: A and B are not read
  if (packA === null) packA = new Float32Array(MC * KC);
  if (packB === null) packB = new Float32Array(KC * NC);
  const pa = packA, pb = packB;
  for (let jc = 0; jc < N; jc += NC) {
    const nc = Math.min(NC, N - jc);
    for (let pc = 0; pc < K; pc += KC) {
      const kc = Math.min(KC, K - pc);
      packBPanel(transB, B, bOff, ldb, pc, kc, jc, nc, pb);
      for (let ic = 0; ic < M; ic += MC) {
        const mc = Math.min(MC, M - ic);
        packAPanel(transA, A, aOff, lda, ic, mc, pc, kc, pa);
        for (let jr = 0; jr < nc; jr += NR) {
          const nr = Math.min(NR, nc - jr);
          for (let ir = 0; ir < mc; ir += MR) {
            const mr = Math.min(MR, mc - ir);
            kernel4x4(kc, pa, ir * kc, pb, jr * kc, C, cOff + (ic + ir) * ldc + jc + jr, ldc, alpha, mr, nr);
          }
        }
      }
    }
  }
}

/** Each of `vectors` is a Float32Array of at least n elements (n a dimension, named `nName`). */
function checkVectors(fn: string, n: number, vectors: [string, Float32Array][], nName = "n"): void {
  checkDim(fn, nName, n);
  for (const [name, v] of vectors) {
    if (!(v instanceof Float32Array)) throw new TypeError(`${fn}: ${name} must be a Float32Array`);
    if (v.length < n) throw new RangeError(`${fn}: ${name} has ${v.length} elements, fewer than ${nName} = ${n}`);
  }
}

/** clipAdamwBlocks's argument checks (shared with the native backend's composed fallback). */
export function checkClipAdamwBlocks(
  W: Float32Array, GW: Float32Array, MW: Float32Array, VW: Float32Array, wsize: number,
  B: Float32Array, GB: Float32Array, MB: Float32Array, VB: Float32Array, bsize: number, blocks: number,
): void {
  checkDim("clipAdamwBlocks", "wsize", wsize);
  checkDim("clipAdamwBlocks", "bsize", bsize);
  checkDim("clipAdamwBlocks", "blocks", blocks);
  checkVectors("clipAdamwBlocks", blocks * wsize, [["W", W], ["GW", GW], ["MW", MW], ["VW", VW]], "blocks·wsize");
  checkVectors("clipAdamwBlocks", blocks * bsize, [["B", B], ["GB", GB], ["MB", MB], ["VB", VB]], "blocks·bsize");
}

/** crossEntropyBlocks's argument checks (shared with the native backend's composed fallback). */
export function checkCrossEntropyBlocks(
  Out: Float32Array, rows: number, blocks: number, P: number, bias: Float32Array, labels: Int32Array, loss: Float64Array, dB: Float32Array | null,
): void {
  checkDim("crossEntropyBlocks", "rows", rows);
  checkDim("crossEntropyBlocks", "blocks", blocks);
  checkDim("crossEntropyBlocks", "P", P);
  if (P < 1) throw new RangeError(`crossEntropyBlocks: P must be at least 1, got ${P}`);
  checkVectors("crossEntropyBlocks", rows * blocks * P, [["Out", Out]], "rows·blocks·P");
  checkVectors("crossEntropyBlocks", blocks * P, dB === null ? [["bias", bias]] : [["bias", bias], ["dB", dB]], "blocks·P");
  if (!(labels instanceof Int32Array)) throw new TypeError("crossEntropyBlocks: labels must be an Int32Array");
  if (labels.length < rows * blocks) throw new RangeError(`crossEntropyBlocks: labels has ${labels.length} elements, fewer than rows·blocks = ${rows * blocks}`);
  for (let i = 0; i < rows * blocks; i++) {
    if (!(labels[i]! >= 0 && labels[i]! < P)) throw new RangeError(`crossEntropyBlocks: labels[${i}] = ${labels[i]} is not a class in [0, ${P})`);
  }
  if (!(loss instanceof Float64Array)) throw new TypeError("crossEntropyBlocks: loss must be a Float64Array");
  if (loss.length < blocks) throw new RangeError(`crossEntropyBlocks: loss has ${loss.length} elements, fewer than blocks = ${blocks}`);
}

function checkRows(fn: string, X: Float32Array, rows: number, cols: number, vectors: [string, Float32Array][]): void {
  if (!(X instanceof Float32Array)) throw new TypeError(`${fn}: X must be a Float32Array`);
  checkDim(fn, "rows", rows);
  checkDim(fn, "cols", cols);
  if (rows * cols > X.length) throw new RangeError(`${fn}: X has ${X.length} elements, fewer than rows·cols = ${rows * cols}`);
  checkVectors(fn, rows, vectors, "rows");
}

const GELU_K = Math.sqrt(2 / Math.PI);
const GELU_C = 0.044715;


/**
 * crossEntropyBlocks (see Backend) composed from a backend's row kernels logSumExpRows and
 * softmaxScaleRows, row by row: the js backend's own, and what a native addon built before the fused
 * kernel runs (native.ts composedLaterKernels).
 */
export function crossEntropyBlocksFrom(
  k: Pick<Backend, "logSumExpRows" | "softmaxScaleRows">,
  ...[Out, rows, blocks, P, bias, labels, kc, loss, dB]: Parameters<Backend["crossEntropyBlocks"]>
): void {
  checkCrossEntropyBlocks(Out, rows, blocks, P, bias, labels, loss, dB);
  const KP = blocks * P;
  const lse = new Float32Array(blocks);
  const scale = new Float32Array(blocks).fill(kc);
  const acc = new Float64Array(dB === null ? 0 : KP);
  loss.fill(0, 0, blocks);
  for (let r = 0; r < rows; r++) {
    const x = Out.subarray(r * KP, (r + 1) * KP);
    const o = r * blocks;
    for (let j = 0; j < KP; j++) x[j] = x[j]! + bias[j]!;
    k.logSumExpRows(x, blocks, P, lse);
    for (let a = 0; a < blocks; a++) loss[a]! += lse[a]! - x[a * P + labels[o + a]!]!;
    if (dB === null) continue;
    k.softmaxScaleRows(x, blocks, P, lse, scale);
    for (let a = 0; a < blocks; a++) x[a * P + labels[o + a]!]! -= kc;
    for (let j = 0; j < KP; j++) acc[j]! += x[j]!;
  }
  if (dB !== null) for (let j = 0; j < KP; j++) dB[j] = acc[j]!;
}

/** layerNormBackwardRows from the four kernels it fuses (the js backend's, or an older addon's). */
export function layerNormBackwardFrom(
  K: Pick<Backend, "lnNormalizeRows" | "affineBackwardRows" | "lnNormalizeBackwardRows" | "lnScaleBackwardRows">,
  G: Float32Array, X: Float32Array, rows: number, cols: number, scale: Float32Array, mean: Float32Array, w: Float32Array,
  GX: Float32Array | null, GW: Float32Array | null, GB: Float32Array | null,
): void {
  checkRows("layerNormBackwardRows", G, rows, cols, [["scale", scale], ["mean", mean]]);
  checkVectors("layerNormBackwardRows", rows * cols, GX === null ? [["X", X]] : [["X", X], ["GX", GX]], "rows·cols");
  checkVectors("layerNormBackwardRows", cols, [["w", w], ...(GW === null ? [] : [["GW", GW]] as [string, Float32Array][]), ...(GB === null ? [] : [["GB", GB]] as [string, Float32Array][])], "cols");
      const xHat = new Float32Array(rows * cols);
      K.lnNormalizeRows(X, rows, cols, scale, xHat);
      const gHat = GX === null ? null : new Float32Array(rows * cols);
      K.affineBackwardRows(G, xHat, rows, cols, w, gHat, GW, GB);
      if (gHat === null || GX === null) return;
      const gScale = new Float32Array(rows);
      K.lnNormalizeBackwardRows(gHat, xHat, rows, cols, scale, GX, gScale);
      K.lnScaleBackwardRows(gScale, X, rows, cols, scale, mean, GX);
}

/** layerNormRows from the three kernels it fuses (the js backend's, or an older addon's): the same bits. */
export function layerNormFrom(
  K: Pick<Backend, "lnScaleRows" | "lnNormalizeRows" | "affineRows">,
  X: Float32Array, rows: number, cols: number, eps: number, w: Float32Array, b: Float32Array | null, out: Float32Array, scale: Float32Array, mean: Float32Array,
): void {
  checkRows("layerNormRows", X, rows, cols, [["scale", scale], ["mean", mean]]);
  checkVectors("layerNormRows", cols, b === null ? [["w", w]] : [["w", w], ["b", b]], "cols");
  checkVectors("layerNormRows", rows * cols, [["out", out]], "rows·cols");
  K.lnScaleRows(X, rows, cols, eps, scale, mean);
  K.lnNormalizeRows(X, rows, cols, scale, out);
  K.affineRows(out, rows, cols, w, b, out);
}

/** Argument checks of causalAttentionForward / causalAttentionBackward (shared with the native backend's fallback). */
function checkAttention(fn: string, B: number, T: number, H: number, Dh: number, scale: number, qkv: [string, Float32Array][], p: [string, Float32Array][]): void {
  for (const [name, v] of [["B", B], ["T", T], ["H", H], ["Dh", Dh]] as const) checkDim(fn, name, v);
  if (typeof scale !== "number") throw new TypeError(`${fn}: scale must be a number`);
  checkVectors(fn, B * T * H * Dh, qkv, "B·T·H·Dh");
  checkVectors(fn, B * H * T * T, p, "B·H·T·T");
}

/**
 * causalAttentionForward (see Backend) in plain loops: scores and sums in float64, exp by Math.exp as
 * softmaxRows; the js backend's own and the native backend's fallback for an addon built before it.
 */
export function causalAttentionForwardJs(...[Q, K, V, B, T, H, Dh, scale, keyMask, P, Z]: Parameters<Backend["causalAttentionForward"]>): void {
  const fn = "causalAttentionForward";
  checkAttention(fn, B, T, H, Dh, scale, [["Q", Q], ["K", K], ["V", V], ["Z", Z]], P === null ? [] : [["P", P]]);
  if (keyMask !== null) {
    if (!(keyMask instanceof Uint8Array)) throw new TypeError(`${fn}: keyMask must be a Uint8Array or null`);
    if (keyMask.length < B * T) throw new RangeError(`${fn}: keyMask has ${keyMask.length} elements, fewer than B·T = ${B * T}`);
  }
  const ld = H * Dh;
  const s = new Float64Array(T); // one row of scores
  const z = new Float64Array(Dh);
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < H; h++) {
      const base = b * T * ld + h * Dh;
      const pBase = (b * H + h) * T * T;
      for (let i = 0; i < T; i++) {
        const qo = base + i * ld;
        const po = pBase + i * T;
        let m = -Infinity;
        for (let j = 0; j <= i; j++) {
          if (keyMask !== null && keyMask[b * T + j] === 0) { s[j] = -Infinity; continue; }
          const ko = base + j * ld;
          let dot = 0;
          for (let d = 0; d < Dh; d++) dot += Q[qo + d]! * K[ko + d]!;
          s[j] = Math.fround(scale * dot);
          if (s[j]! > m) m = s[j]!;
        }
        P?.fill(0, po, po + T);
        const zo = base + i * ld;
        if (m === -Infinity) { for (let d = 0; d < Dh; d++) Z[zo + d] = 0; continue; }
        let sum = 0;
        for (let j = 0; j <= i; j++) {
          const e = Math.exp(s[j]! - m);
          s[j] = e;
          sum += e;
        }
        const inv = 1 / sum;
        z.fill(0);
        for (let j = 0; j <= i; j++) {
          const w = Math.fround(s[j]! * inv);
          if (P !== null) P[po + j] = w;
          if (w === 0) continue;
          const vo = base + j * ld;
          for (let d = 0; d < Dh; d++) z[d]! += w * V[vo + d]!;
        }
        for (let d = 0; d < Dh; d++) Z[zo + d] = z[d]!;
      }
    }
  }
}

/** causalAttentionBackward (see Backend) in plain loops, sums in float64. */
export function causalAttentionBackwardJs(...[dZ, Q, K, V, P, B, T, H, Dh, scale, dQ, dK, dV]: Parameters<Backend["causalAttentionBackward"]>): void {
  const fn = "causalAttentionBackward";
  const grads: [string, Float32Array][] = [];
  for (const [name, a] of [["dQ", dQ], ["dK", dK], ["dV", dV]] as const) if (a !== null) grads.push([name, a]);
  checkAttention(fn, B, T, H, Dh, scale, [["dZ", dZ], ["Q", Q], ["K", K], ["V", V], ...grads], [["P", P]]);
  const ld = H * Dh;
  const ds = new Float64Array(T); // one row of dS
  const acc = new Float64Array(Dh);
  const dKacc = dK === null ? null : new Float64Array(T * Dh); // one head's dK sums [T, Dh]
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < H; h++) {
      const base = b * T * ld + h * Dh;
      const pBase = (b * H + h) * T * T;
      if (dV !== null) {
        for (let j = 0; j < T; j++) {
          acc.fill(0);
          for (let i = j; i < T; i++) {
            const w = P[pBase + i * T + j]!;
            if (w === 0) continue;
            const go = base + i * ld;
            for (let d = 0; d < Dh; d++) acc[d]! += w * dZ[go + d]!;
          }
          const o = base + j * ld;
          for (let d = 0; d < Dh; d++) dV[o + d]! += acc[d]!;
        }
      }
      if (dQ === null && dK === null) continue;
      dKacc?.fill(0);
      for (let i = 0; i < T; i++) {
        const go = base + i * ld;
        const po = pBase + i * T;
        let dot = 0;
        for (let j = 0; j <= i; j++) {
          const vo = base + j * ld;
          let dp = 0;
          for (let d = 0; d < Dh; d++) dp += dZ[go + d]! * V[vo + d]!;
          ds[j] = dp;
          dot += P[po + j]! * dp;
        }
        for (let j = 0; j <= i; j++) ds[j] = scale * P[po + j]! * (ds[j]! - dot);
        if (dQ !== null) {
          acc.fill(0);
          for (let j = 0; j <= i; j++) {
            if (ds[j] === 0) continue;
            const ko = base + j * ld;
            for (let d = 0; d < Dh; d++) acc[d]! += ds[j]! * K[ko + d]!;
          }
          const o = base + i * ld;
          for (let d = 0; d < Dh; d++) dQ[o + d]! += acc[d]!;
        }
        if (dKacc !== null) {
          const qo = base + i * ld;
          for (let j = 0; j <= i; j++) {
            if (ds[j] === 0) continue;
            for (let d = 0; d < Dh; d++) dKacc[j * Dh + d]! += ds[j]! * Q[qo + d]!;
          }
        }
      }
      if (dK !== null && dKacc !== null) {
        for (let j = 0; j < T; j++) for (let d = 0; d < Dh; d++) dK[base + j * ld + d]! += dKacc[j * Dh + d]!;
      }
    }
  }
}

/** The checks of gatherRuns and scatterAddRuns: `runs` [index.length·run] and every run inside `into`. */
function checkRuns(fn: string, runs: [string, Float32Array], index: Int32Array, run: number, into: [string, Float32Array]): void {
  if (!(index instanceof Int32Array)) throw new TypeError(`${fn}: index must be an Int32Array`);
  checkDim(fn, "run", run);
  checkVectors(fn, index.length * run, [runs], "index.length·run");
  if (!(into[1] instanceof Float32Array)) throw new TypeError(`${fn}: ${into[0]} must be a Float32Array`);
  for (let r = 0; r < index.length; r++) {
    if (index[r]! < 0 || index[r]! + run > into[1].length) {
      throw new RangeError(`${fn}: index[${r}] = ${index[r]} puts a run of ${run} outside ${into[0]}'s ${into[1].length} elements`);
    }
  }
}

/** The js backend's gatherRuns (also what an addon built before it runs): one copy per run when runs are long. */
export function gatherRunsJs(A: Float32Array, index: Int32Array, run: number, out: Float32Array): void {
  checkRuns("gatherRuns", ["out", out], index, run, ["A", A]);
  if (run >= 32) {
    for (let r = 0; r < index.length; r++) out.set(A.subarray(index[r]!, index[r]! + run), r * run);
    return;
  }
  for (let r = 0; r < index.length; r++) {
    const s = index[r]!;
    const o = r * run;
    for (let j = 0; j < run; j++) out[o + j] = A[s + j]!;
  }
}

/** The js backend's scatterAddRuns (also what an addon built before it runs). */
export function scatterAddRunsJs(G: Float32Array, index: Int32Array, run: number, GA: Float32Array): void {
  checkRuns("scatterAddRuns", ["G", G], index, run, ["GA", GA]);
  for (let r = 0; r < index.length; r++) {
    const s = index[r]!;
    const o = r * run;
    for (let j = 0; j < run; j++) GA[s + j]! += G[o + j]!;
  }
}

export const jsBackend: Backend = {
  name: "js",

  causalAttentionForward: causalAttentionForwardJs,
  causalAttentionBackward: causalAttentionBackwardJs,

  geluForward(X, n, Y) {
    checkVectors("geluForward", n, [["X", X], ["Y", Y]]);
    for (let i = 0; i < n; i++) {
      const v = X[i]!;
      Y[i] = 0.5 * v * (1 + Math.tanh(GELU_K * (v + GELU_C * v * v * v)));
    }
  },

  lnScaleRows(X, rows, cols, eps, scale, mean) {
    checkRows("lnScaleRows", X, rows, cols, [["scale", scale], ["mean", mean]]);
    for (let r = 0; r < rows; r++) {
      const o = r * cols;
      let m = 0;
      for (let c = 0; c < cols; c++) m += X[o + c]!;
      m /= cols;
      let v = 0;
      for (let c = 0; c < cols; c++) {
        const d = X[o + c]! - m;
        v += d * d;
      }
      mean[r] = m;
      scale[r] = Math.sqrt(v / cols + eps);
    }
  },

  lnNormalizeRows(X, rows, cols, S, out) {
    checkRows("lnNormalizeRows", X, rows, cols, [["S", S]]);
    checkVectors("lnNormalizeRows", rows * cols, [["out", out]], "rows·cols");
    for (let r = 0; r < rows; r++) {
      const o = r * cols;
      let m = 0;
      for (let c = 0; c < cols; c++) m += X[o + c]!;
      m /= cols;
      const inv = 1 / S[r]!;
      for (let c = 0; c < cols; c++) out[o + c] = (X[o + c]! - m) * inv;
    }
  },

  affineRows(X, rows, cols, w, b, out) {
    checkRows("affineRows", X, rows, cols, []);
    checkVectors("affineRows", cols, b === null ? [["w", w]] : [["w", w], ["b", b]], "cols");
    checkVectors("affineRows", rows * cols, [["out", out]], "rows·cols");
    for (let r = 0; r < rows; r++) {
      const o = r * cols;
      if (b === null) for (let c = 0; c < cols; c++) out[o + c] = X[o + c]! * w[c]!;
      else for (let c = 0; c < cols; c++) out[o + c] = X[o + c]! * w[c]! + b[c]!;
    }
  },

  layerNormRows(X, rows, cols, eps, w, b, out, scale, mean) {
    layerNormFrom(jsBackend, X, rows, cols, eps, w, b, out, scale, mean);
  },

  layerNormBackwardRows(G, X, rows, cols, scale, mean, w, GX, GW, GB) {
    layerNormBackwardFrom(jsBackend, G, X, rows, cols, scale, mean, w, GX, GW, GB);
  },

  geluBackward(X, G, n, DX) {
    checkVectors("geluBackward", n, [["X", X], ["G", G], ["DX", DX]]);
    for (let i = 0; i < n; i++) {
      const v = X[i]!;
      const t = Math.tanh(GELU_K * (v + GELU_C * v * v * v));
      const dt = (1 - t * t) * GELU_K * (1 + 3 * GELU_C * v * v);
      DX[i]! += G[i]! * (0.5 * (1 + t) + 0.5 * v * dt);
    }
  },

  logSumExpRows(X, rows, cols, out) {
    checkRows("logSumExpRows", X, rows, cols, [["out", out]]);
    for (let r = 0; r < rows; r++) {
      const o = r * cols;
      let m = -Infinity;
      for (let c = 0; c < cols; c++) if (X[o + c]! > m) m = X[o + c]!;
      if (m === -Infinity) { out[r] = m; continue; }
      let s = 0;
      for (let c = 0; c < cols; c++) s += Math.exp(X[o + c]! - m);
      out[r] = m + Math.log(s);
    }
  },

  softmaxScaleRows(X, rows, cols, lse, scale) {
    checkRows("softmaxScaleRows", X, rows, cols, [["lse", lse], ["scale", scale]]);
    for (let r = 0; r < rows; r++) {
      const o = r * cols;
      const l = lse[r]!;
      const k = scale[r]!;
      if (k === 0) { X.fill(0, o, o + cols); continue; }
      for (let c = 0; c < cols; c++) X[o + c] = k * Math.exp(X[o + c]! - l);
    }
  },

  lnScaleBackwardRows(G, X, rows, cols, scale, mean, GX) {
    checkRows("lnScaleBackwardRows", X, rows, cols, [["G", G], ["scale", scale], ["mean", mean]]);
    checkVectors("lnScaleBackwardRows", rows * cols, [["GX", GX]], "rows·cols");
    for (let r = 0; r < rows; r++) {
      const o = r * cols;
      const k = G[r]! / (cols * scale[r]!);
      const m = mean[r]!;
      for (let c = 0; c < cols; c++) GX[o + c]! += k * (X[o + c]! - m);
    }
  },

  lnNormalizeBackwardRows(G, Y, rows, cols, S, GX, GS) {
    checkVectors("lnNormalizeBackwardRows", rows * cols, GX === null ? [["G", G], ["Y", Y]] : [["G", G], ["Y", Y], ["GX", GX]], "rows·cols");
    checkVectors("lnNormalizeBackwardRows", rows, GS === null ? [["S", S]] : [["S", S], ["GS", GS]], "rows");
    for (let r = 0; r < rows; r++) {
      const o = r * cols;
      const inv = 1 / S[r]!;
      let gm = 0;
      let gy = 0;
      for (let c = 0; c < cols; c++) {
        gm += G[o + c]!;
        gy += G[o + c]! * Y[o + c]!;
      }
      gm /= cols;
      if (GX) for (let c = 0; c < cols; c++) GX[o + c]! += (G[o + c]! - gm) * inv;
      if (GS) GS[r]! -= gy * inv; // d y_c / d S = −y_c / S
    }
  },

  affineBackwardRows(G, X, rows, cols, w, GX, GW, GB) {
    checkRows("affineBackwardRows", X, rows, cols, []);
    checkVectors("affineBackwardRows", rows * cols, GX === null ? [["G", G]] : [["G", G], ["GX", GX]], "rows·cols");
    checkVectors("affineBackwardRows", cols, [["w", w], ...(GW === null ? [] : [["GW", GW]] as [string, Float32Array][]), ...(GB === null ? [] : [["GB", GB]] as [string, Float32Array][])], "cols");
    for (let r = 0; r < rows; r++) {
      const o = r * cols;
      if (GX) for (let c = 0; c < cols; c++) GX[o + c]! += G[o + c]! * w[c]!;
      if (GW) for (let c = 0; c < cols; c++) GW[c]! += G[o + c]! * X[o + c]!;
      if (GB) for (let c = 0; c < cols; c++) GB[c]! += G[o + c]!;
    }
  },

  softmaxRows(X, rows, cols, Y) {
    checkRows("softmaxRows", X, rows, cols, []);
    checkVectors("softmaxRows", rows * cols, [["Y", Y]], "rows·cols");
    for (let r = 0; r < rows; r++) {
      const o = r * cols;
      let m = -Infinity;
      for (let c = 0; c < cols; c++) if (X[o + c]! > m) m = X[o + c]!;
      if (m === -Infinity) { Y.fill(0, o, o + cols); continue; }
      let s = 0;
      for (let c = 0; c < cols; c++) {
        const e = Math.exp(X[o + c]! - m);
        Y[o + c] = e;
        s += e;
      }
      const inv = 1 / s;
      for (let c = 0; c < cols; c++) Y[o + c]! *= inv;
    }
  },

  softmaxBackwardRows(G, Y, rows, cols, DX) {
    checkVectors("softmaxBackwardRows", rows * cols, [["G", G], ["Y", Y], ["DX", DX]], "rows·cols");
    for (let r = 0; r < rows; r++) {
      const o = r * cols;
      let dot = 0;
      for (let c = 0; c < cols; c++) dot += G[o + c]! * Y[o + c]!;
      for (let c = 0; c < cols; c++) DX[o + c]! += Y[o + c]! * (G[o + c]! - dot);
    }
  },

  adamwUpdate(P, G, M, V, n, lr, beta1, beta2, eps, shrink, bc1, bc2) {
    checkVectors("adamwUpdate", n, [["P", P], ["G", G], ["M", M], ["V", V]]);
    for (let i = 0; i < n; i++) {
      const g = G[i]!;
      M[i] = beta1 * M[i]! + (1 - beta1) * g;
      V[i] = beta2 * V[i]! + (1 - beta2) * g * g;
      const mh = M[i]! / bc1;
      const vh = V[i]! / bc2;
      P[i] = P[i]! * shrink - (lr * mh) / (Math.sqrt(vh) + eps);
    }
  },

  scaleInPlace(X, n, k) {
    checkVectors("scaleInPlace", n, [["X", X]]);
    if (typeof k !== "number") throw new TypeError(`scaleInPlace: k must be a number, got ${typeof k}`);
    for (let i = 0; i < n; i++) X[i] = X[i]! * k;
  },

  addInto(Y, X, n) {
    checkVectors("addInto", n, [["Y", Y], ["X", X]]);
    for (let i = 0; i < n; i++) Y[i]! += X[i]!;
  },

  scatterAddRuns: scatterAddRunsJs,
  gatherRuns: gatherRunsJs,

  sumSquares(X, n) {
    checkVectors("sumSquares", n, [["X", X]]);
    let s = 0;
    for (let i = 0; i < n; i++) s += X[i]! * X[i]!;
    return s;
  },

  crossEntropyBlocks(Out, rows, blocks, P, bias, labels, kc, loss, dB) {
    crossEntropyBlocksFrom(jsBackend, Out, rows, blocks, P, bias, labels, kc, loss, dB);
  },

  clipAdamwBlocks(W, GW, MW, VW, wsize, B, GB, MB, VB, bsize, blocks, maxNorm, lr, beta1, beta2, eps, shrink, bc1, bc2) {
    checkClipAdamwBlocks(W, GW, MW, VW, wsize, B, GB, MB, VB, bsize, blocks);
    const step = (P: Float32Array, G: Float32Array, M: Float32Array, V: Float32Array, o: number, n: number, f: number, shr: number): void => {
      for (let i = o; i < o + n; i++) {
        const g = Math.fround(G[i]! * f);
        M[i] = beta1 * M[i]! + (1 - beta1) * g;
        V[i] = beta2 * V[i]! + (1 - beta2) * g * g;
        const mh = M[i]! / bc1;
        const vh = V[i]! / bc2;
        P[i] = P[i]! * shr - (lr * mh) / (Math.sqrt(vh) + eps);
      }
    };
    for (let a = 0; a < blocks; a++) {
      const ow = a * wsize;
      const ob = a * bsize;
      let f = 1;
      if (maxNorm > 0) {
        let sw = 0;
        for (let i = ow; i < ow + wsize; i++) sw += GW[i]! * GW[i]!;
        let sb = 0;
        for (let i = ob; i < ob + bsize; i++) sb += GB[i]! * GB[i]!;
        const norm = Math.sqrt(sw + sb);
        if (norm > maxNorm) f = maxNorm / (norm + 1e-6);
      }
      step(W, GW, MW, VW, ow, wsize, f, shrink);
      step(B, GB, MB, VB, ob, bsize, f, 1);
    }
  },

  sgemm(transA, transB, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc) {
    checkSgemmArgs("sgemm", false, transA, transB, M, N, K, alpha, A, lda, 0, B, ldb, 0, beta, C, ldc, 0, 1);
    gemmAt(transA, transB, M, N, K, alpha, A, 0, lda, B, 0, ldb, beta, C, 0, ldc);
  },

  sgemmStridedBatched(transA, transB, M, N, K, alpha, A, lda, strideA, B, ldb, strideB, beta, C, ldc, strideC, batch) {
    checkSgemmArgs("sgemmStridedBatched", true, transA, transB, M, N, K, alpha,
      A, lda, strideA, B, ldb, strideB, beta, C, ldc, strideC, batch);
    for (let i = 0; i < batch; i++) {
      gemmAt(transA, transB, M, N, K, alpha, A, i * strideA, lda, B, i * strideB, ldb, beta, C, i * strideC, ldc);
    }
  },
};

/**
 * The naive reference: C[M, N] = alpha · op(A) · op(B) + beta · C, accumulating in float64,
 * same arguments as Backend.sgemm. beta = 0 ignores C's old contents (NaN included), as BLAS does.
 * For tests and as the definition; O(M·N·K) with no blocking.
 */
export function sgemmReference(
  transA: boolean, transB: boolean, M: number, N: number, K: number, alpha: number,
  A: Float32Array, lda: number, B: Float32Array, ldb: number,
  beta: number, C: Float32Array, ldc: number,
): void {
  for (let i = 0; i < M; i++) {
    for (let j = 0; j < N; j++) {
      let acc = 0;
      for (let p = 0; p < K; p++) {
        const a = transA ? A[p * lda + i] : A[i * lda + p]; // op(A)[i, p]
        const b = transB ? B[j * ldb + p] : B[p * ldb + j]; // op(B)[p, j]
        acc += a * b;
      }
      const old = beta === 0 ? 0 : beta * C[i * ldc + j];
      C[i * ldc + j] = (alpha === 0 ? 0 : alpha * acc) + old; // alpha = 0: A, B not read, as BLAS
    }
  }
}
