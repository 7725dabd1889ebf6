/**
 * Test helpers for the tensor engine, in the llm.c / micrograd style:
 *
 *   assertClose(what, got, ref, tol, shape?)   every element within atol + rtol·|ref|; prints the worst
 *   gradcheck(case)                            an op's float32 forward against a float64 reference, and its
 *                                              analytic gradient against central differences of that reference
 *   ref*                                       the float64 references themselves: plain loops on Float64Array,
 *                                              written from the definitions, sharing no code with src/tensor/
 *
 * Glossary for the references: B batch, T positions, H heads, Dh head size, C channels (last axis),
 * V classes, M/N/K matrix dims (op(A) [M, K] · op(B) [K, N]).
 */
import assert from "node:assert/strict";
import { Tensor, backward } from "../../src/tensor/index.ts";
import { mulberry32, randn } from "../helpers/rng.ts";

export type Rand = () => number;

// ---------------------------------------------------------------------------------------------
// Random inputs

export function numelOf(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

/** N(0, std²) values, float32. */
export function randArray(rng: Rand, n: number, std = 1): Float32Array {
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = randn(rng) * std;
  return out;
}

/** Values with |x| ≥ margin (kept away from a kink or pole at 0), random sign. */
export function awayFromZero(rng: Rand, n: number, margin = 0.5): Float32Array {
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = Math.sign(randn(rng) || 1) * (margin + Math.abs(randn(rng)));
  return out;
}

/** Positive values in [lo, lo + |N(0,1)|]. */
export function positive(rng: Rand, n: number, lo = 0.5): Float32Array {
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = lo + Math.abs(randn(rng));
  return out;
}

/** Random integers in [0, n). */
export function randInts(rng: Rand, count: number, n: number): Int32Array {
  const out = new Int32Array(count);
  for (let i = 0; i < count; i++) out[i] = Math.floor(rng() * n);
  return out;
}

// ---------------------------------------------------------------------------------------------
// Comparison

export interface Tol {
  atol: number;
  rtol: number;
}

/** "[i, j, k]" for a flat index into shape (or the flat index when no shape is given). */
export function where(flat: number, shape?: readonly number[]): string {
  if (shape === undefined || numelOf(shape) === 0) return `flat ${flat}`;
  const idx = new Array<number>(shape.length);
  let r = flat;
  for (let d = shape.length - 1; d >= 0; d--) {
    idx[d] = r % shape[d]!;
    r = Math.floor(r / shape[d]!);
  }
  return `[${idx.join(", ")}] (flat ${flat})`;
}

/**
 * Asserts |got − ref| ≤ atol + rtol·|ref| everywhere (NaN never passes; equal infinities do).
 * The message, built only on failure, names the worst element by its ratio to the allowance, at its
 * multi-index in shape `at` (or as `at(i)` names it).
 */
export function assertClose(
  what: string, got: ArrayLike<number>, ref: ArrayLike<number>, tol: Tol, at?: readonly number[] | ((i: number) => string),
): void {
  if (got.length !== ref.length) assert.fail(`${what}: ${got.length} values, reference has ${ref.length}`);
  let worst = -1;
  let worstRatio = 1; // only ratios above 1 fail
  for (let i = 0; i < ref.length; i++) {
    const g = got[i]!;
    const r = ref[i]!;
    if (g === r) continue; // covers equal infinities
    const ratio = Math.abs(g - r) / (tol.atol + tol.rtol * Math.abs(r));
    if (!(ratio <= worstRatio)) {
      worstRatio = Number.isNaN(ratio) ? Infinity : ratio;
      worst = i;
    }
  }
  if (worst >= 0) {
    const g = got[worst]!;
    const r = ref[worst]!;
    assert.fail(
      `${what}: worst difference at ${typeof at === "function" ? at(worst) : where(worst, at)}: got ${g}, reference ${r}, |diff| ${Math.abs(g - r).toExponential(3)}` +
        ` > ${tol.atol} + ${tol.rtol}·|ref| (${worstRatio.toFixed(1)}× the allowance)`,
    );
  }
}

/** Asserts two arrays are identical element by element (=== , so 0 and -0 agree); names the first mismatch. */
export function assertExact(what: string, got: ArrayLike<number>, ref: ArrayLike<number>, shape?: readonly number[]): void {
  if (got.length !== ref.length) assert.fail(`${what}: ${got.length} values, expected ${ref.length}`);
  for (let i = 0; i < ref.length; i++) {
    if (got[i] !== ref[i] && !(Number.isNaN(got[i]!) && Number.isNaN(ref[i]!))) {
      assert.fail(`${what}: first difference at ${where(i, shape)}: ${got[i]} vs ${ref[i]}`);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Gradient check

export interface GradInput {
  name: string;
  shape: readonly number[];
  data: Float32Array;
  /** Default true. Inputs with false must end up with no gradient at all. */
  requiresGrad?: boolean;
}

export interface GradCase {
  name: string;
  inputs: GradInput[];
  /** The engine op (or composite of ops) under test, on fresh leaf tensors. */
  op: (xs: Tensor[]) => Tensor;
  /** Independent float64 forward of the same function, on float64 copies of the inputs. */
  ref: (xs: Float64Array[]) => Float64Array;
  /** Expected output shape (checked when given). */
  outShape?: readonly number[];
  /** Forward tolerance (default 1e-5 + 1e-4·|ref|). */
  fwd?: Tol;
  /** Gradient tolerance, float32 analytic vs float64 numeric (default 1e-4 + 1e-3·|ref|). */
  grad?: Tol;
  /** Central-difference step in float64 (default 1e-6). */
  eps?: number;
  /** Elements per input checked one by one; larger inputs get a random sample (all are covered by a directional check). */
  maxChecks?: number;
  seed?: number;
}

/**
 * (a) the op's float32 forward against the float64 reference;
 * (b) with a random upstream gradient R (loss = Σ out ⊙ R, i.e. backward(out, R)), every input's
 *     analytic gradient against central differences of Σ ref(x) ⊙ R, elementwise (sampled for large
 *     inputs) and along one random direction covering every element;
 * (c) each gradient has its tensor's size; inputs with requiresGrad = false get none; and a second
 *     pass on leaves whose gradients start as random G0 leaves G0 + the same gradient (llm.c: backward
 *     *adds* into gradients, so an op that overwrites fails).
 * Outputs the reference makes non-finite (masked attention scores) are constants: they keep their R in
 * the backward pass (which must ignore it) and are left out of the numeric loss.
 */
export function gradcheck(c: GradCase): void {
  const rng = mulberry32(c.seed ?? 1234);
  const fwdTol = c.fwd ?? { atol: 1e-5, rtol: 1e-4 };
  const gradTol = c.grad ?? { atol: 1e-4, rtol: 1e-3 };
  const eps = c.eps ?? 1e-6;
  const maxChecks = c.maxChecks ?? 300;

  for (const inp of c.inputs) {
    if (inp.data.length !== numelOf(inp.shape)) assert.fail(`${c.name}: input ${inp.name} has ${inp.data.length} values for shape [${inp.shape.join(", ")}]`);
  }
  const makeLeaves = (): Tensor[] => c.inputs.map((inp) => new Tensor(inp.data.slice(), inp.shape, inp.requiresGrad ?? true));
  const leaves = makeLeaves();
  const x64 = c.inputs.map((inp) => Float64Array.from(inp.data));

  // (a) forward
  const out = c.op(leaves);
  const ref = c.ref(x64);
  if (c.outShape !== undefined && (out.shape.length !== c.outShape.length || out.shape.some((d, i) => d !== c.outShape![i]))) {
    assert.fail(`${c.name}: output shape [${out.shape.join(", ")}], expected [${c.outShape.join(", ")}]`);
  }
  assertClose(`${c.name}: forward`, out.data, ref, fwdTol, out.shape);

  const anyGrad = c.inputs.some((inp) => inp.requiresGrad ?? true);
  if (!anyGrad) {
    if (out.node !== null) assert.fail(`${c.name}: no input requires a gradient, yet the output recorded ${out.node.op}`);
    return;
  }

  // (b) backward with a random upstream gradient
  const R = randArray(rng, out.size);
  backward(out, R);
  const live = Uint8Array.from(ref, (v) => (Number.isFinite(v) ? 1 : 0));
  const objective = (xs: Float64Array[]): number => {
    const y = c.ref(xs);
    let s = 0;
    for (let i = 0; i < y.length; i++) if (live[i] === 1) s += y[i]! * R[i]!;
    return s;
  };

  // (c) again on fresh leaves whose gradients start as junk G0: the op must add into them.
  const seeded = makeLeaves();
  const G0 = seeded.map((t) => (t.requiresGrad ? randArray(rng, t.size) : null));
  seeded.forEach((t, k) => {
    if (G0[k]) t.grad = G0[k]!.slice();
  });
  backward(c.op(seeded), R);

  c.inputs.forEach((inp, k) => {
    const leaf = leaves[k]!;
    if (!(inp.requiresGrad ?? true)) {
      if (leaf.grad !== null) assert.fail(`${c.name}: input ${inp.name} has requiresGrad = false but received a gradient`);
      return;
    }
    const grad = leaf.grad;
    if (grad === null) return assert.fail(`${c.name}: input ${inp.name} requires a gradient but got none`);
    if (grad.length !== leaf.size) assert.fail(`${c.name}: gradient of ${inp.name} has ${grad.length} values, the tensor has ${leaf.size}`);
    const g0 = G0[k]!;
    const added = Float64Array.from(seeded[k]!.grad!, (v, i) => v - g0[i]!);
    assertClose(`${c.name}: d/d${inp.name} added into an existing gradient (minus that gradient) vs into none`, added, grad, { atol: 1e-6, rtol: 1e-5 }, inp.shape);

    const x = x64[k]!;
    const numeric = (i: number): number => {
      const keep = x[i]!;
      x[i] = keep + eps;
      const fp = objective(x64);
      x[i] = keep - eps;
      const fm = objective(x64);
      x[i] = keep;
      return (fp - fm) / (2 * eps);
    };
    const idx = sampleIndices(rng, x.length, maxChecks);
    const got = new Float64Array(idx.length);
    const num = new Float64Array(idx.length);
    idx.forEach((i, j) => {
      got[j] = grad[i]!;
      num[j] = numeric(i);
    });
    assertClose(`${c.name}: d/d${inp.name}`, got, num, gradTol, (j) => where(idx[j]!, inp.shape));

    // Directional derivative along a random direction d: Σ grad·d vs (f(x + εd) − f(x − εd)) / 2ε.
    const d = randArray(rng, x.length);
    const keep = x.slice();
    for (let i = 0; i < x.length; i++) x[i] = keep[i]! + eps * d[i]!;
    const fp = objective(x64);
    for (let i = 0; i < x.length; i++) x[i] = keep[i]! - eps * d[i]!;
    const fm = objective(x64);
    x.set(keep);
    let analytic = 0;
    let scale = 0;
    for (let i = 0; i < x.length; i++) {
      analytic += grad[i]! * d[i]!;
      scale += Math.abs(grad[i]! * d[i]!);
    }
    const dirNum = (fp - fm) / (2 * eps);
    const allowed = gradTol.atol * Math.sqrt(Math.max(1, x.length)) + gradTol.rtol * Math.max(Math.abs(dirNum), scale / Math.sqrt(Math.max(1, x.length)));
    if (!(Math.abs(analytic - dirNum) <= allowed)) {
      assert.fail(`${c.name}: directional derivative along a random direction for ${inp.name}: analytic ${analytic}, numeric ${dirNum}, |diff| ${Math.abs(analytic - dirNum).toExponential(3)} > ${allowed.toExponential(3)}`);
    }
  });
}

/** All of 0..n-1 when n ≤ max; else first, last and a random sample, max in all. */
function sampleIndices(rng: Rand, n: number, max: number): number[] {
  if (n <= max) return Array.from({ length: n }, (_, i) => i);
  const picked = new Set<number>([0, n - 1]);
  while (picked.size < max) picked.add(Math.floor(rng() * n));
  return [...picked].sort((a, b) => a - b);
}

// ---------------------------------------------------------------------------------------------
// Float64 references: elementwise and broadcasting

/** numpy broadcasting of two shapes (throws on a mismatch). */
export function refBroadcastShape(a: readonly number[], b: readonly number[]): number[] {
  const n = Math.max(a.length, b.length);
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    const da = i - (n - a.length) >= 0 ? a[i - (n - a.length)]! : 1;
    const db = i - (n - b.length) >= 0 ? b[i - (n - b.length)]! : 1;
    if (da !== db && da !== 1 && db !== 1) throw new Error(`reference: cannot broadcast [${a}] and [${b}]`);
    out.push(Math.max(da, db));
  }
  return out;
}

/** The flat index into `inShape` read at each flat index of `outShape` (by explicit multi-indices). */
function refReadIndex(outShape: readonly number[], inShape: readonly number[], flat: number): number {
  const off = outShape.length - inShape.length;
  let r = flat;
  let idx = 0;
  let stride = 1;
  for (let d = outShape.length - 1; d >= 0; d--) {
    const i = r % outShape[d]!;
    r = Math.floor(r / outShape[d]!);
    const di = d - off;
    if (di >= 0) {
      if (inShape[di]! !== 1) idx += i * stride;
      stride *= inShape[di]!;
    }
  }
  return idx;
}

export function refBinary(
  f: (x: number, y: number) => number, a: Float64Array, aShape: readonly number[], b: Float64Array, bShape: readonly number[],
): Float64Array {
  const outShape = refBroadcastShape(aShape, bShape);
  const out = new Float64Array(numelOf(outShape));
  for (let i = 0; i < out.length; i++) out[i] = f(a[refReadIndex(outShape, aShape, i)]!, b[refReadIndex(outShape, bShape, i)]!);
  return out;
}

export function refMap(x: Float64Array, f: (v: number) => number): Float64Array {
  return x.map(f);
}

/** GPT-2's gelu_new, float64. */
export function refGelu(v: number): number {
  return 0.5 * v * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (v + 0.044715 * v * v * v)));
}

// ---------------------------------------------------------------------------------------------
// Reductions and data movement

/** Sum / mean / max over `axis` of x [shape] (all elements when axis is undefined). */
export function refReduce(kind: "sum" | "mean" | "max", x: Float64Array, shape: readonly number[], axis?: number): Float64Array {
  if (axis === undefined) {
    let s = kind === "max" ? -Infinity : 0;
    for (const v of x) s = kind === "max" ? Math.max(s, v) : s + v;
    return Float64Array.of(kind === "mean" ? s / x.length : s);
  }
  const ax = axis < 0 ? shape.length + axis : axis;
  const outer = numelOf(shape.slice(0, ax));
  const n = shape[ax]!;
  const inner = numelOf(shape.slice(ax + 1));
  const out = new Float64Array(outer * inner).fill(kind === "max" ? -Infinity : 0);
  for (let o = 0; o < outer; o++) {
    for (let k = 0; k < n; k++) {
      for (let i = 0; i < inner; i++) {
        const v = x[(o * n + k) * inner + i]!;
        const j = o * inner + i;
        out[j] = kind === "max" ? Math.max(out[j]!, v) : out[j]! + v;
      }
    }
  }
  if (kind === "mean") for (let j = 0; j < out.length; j++) out[j]! /= n;
  return out;
}

/** out[i0, i1, ...] = x[index along each axis], output axis d = input axis perm[d]. */
export function refPermute(x: Float64Array, shape: readonly number[], perm: readonly number[]): Float64Array {
  const outShape = perm.map((p) => shape[p]!);
  const inStrides = shape.map((_, d) => numelOf(shape.slice(d + 1)));
  const out = new Float64Array(x.length);
  for (let flat = 0; flat < out.length; flat++) {
    let r = flat;
    let src = 0;
    for (let d = outShape.length - 1; d >= 0; d--) {
      const i = r % outShape[d]!;
      r = Math.floor(r / outShape[d]!);
      src += i * inStrides[perm[d]!]!;
    }
    out[flat] = x[src]!;
  }
  return out;
}

/** Entries `indices` along `axis` of x [shape] (slice = consecutive indices). */
export function refIndexSelect(x: Float64Array, shape: readonly number[], axis: number, indices: ArrayLike<number>): Float64Array {
  const ax = axis < 0 ? shape.length + axis : axis;
  const outer = numelOf(shape.slice(0, ax));
  const n = shape[ax]!;
  const inner = numelOf(shape.slice(ax + 1));
  const m = indices.length;
  const out = new Float64Array(outer * m * inner);
  for (let o = 0; o < outer; o++) {
    for (let j = 0; j < m; j++) {
      for (let i = 0; i < inner; i++) out[(o * m + j) * inner + i] = x[(o * n + indices[j]!) * inner + i]!;
    }
  }
  return out;
}

export function range(start: number, end: number): number[] {
  return Array.from({ length: end - start }, (_, i) => start + i);
}

// ---------------------------------------------------------------------------------------------
// Matrix products

/**
 * op(A_i) · op(B_i) for every batch entry i of a [..., M, K] (transA: [..., K, M]);
 * b is [K, N] (transB: [N, K]), shared, or batched like a.
 */
export function refMatmul(
  a: Float64Array, aShape: readonly number[], b: Float64Array, bShape: readonly number[], transA: boolean, transB: boolean,
): Float64Array {
  const [ar, ac] = [aShape[aShape.length - 2]!, aShape[aShape.length - 1]!];
  const [br, bc] = [bShape[bShape.length - 2]!, bShape[bShape.length - 1]!];
  const [M, K] = transA ? [ac, ar] : [ar, ac];
  const N = transB ? br : bc;
  const batch = numelOf(aShape.slice(0, -2));
  const bBatched = bShape.length > 2;
  const out = new Float64Array(batch * M * N);
  for (let t = 0; t < batch; t++) {
    const aOff = t * M * K;
    const bOff = bBatched ? t * K * N : 0;
    for (let i = 0; i < M; i++) {
      for (let j = 0; j < N; j++) {
        let s = 0;
        for (let p = 0; p < K; p++) {
          const av = transA ? a[aOff + p * M + i]! : a[aOff + i * K + p]!;
          const bv = transB ? b[bOff + j * K + p]! : b[bOff + p * N + j]!;
          s += av * bv;
        }
        out[(t * M + i) * N + j] = s;
      }
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Neural-network kernels (rows of the last axis)

/** LayerNorm over rows of C: (x − mean) / sqrt(var + eps) · w + b (b may be null). */
export function refLayerNorm(x: Float64Array, C: number, w: Float64Array, b: Float64Array | null, eps: number): Float64Array {
  const out = new Float64Array(x.length);
  for (let o = 0; o < x.length; o += C) {
    let m = 0;
    for (let c = 0; c < C; c++) m += x[o + c]!;
    m /= C;
    let v = 0;
    for (let c = 0; c < C; c++) v += (x[o + c]! - m) ** 2;
    const s = Math.sqrt(v / C + eps);
    for (let c = 0; c < C; c++) out[o + c] = ((x[o + c]! - m) / s) * w[c]! + (b === null ? 0 : b[c]!);
  }
  return out;
}

/** sqrt(var + eps) per row: [rows]. */
export function refLnScale(x: Float64Array, C: number, eps: number): Float64Array {
  const out = new Float64Array(x.length / C);
  for (let r = 0; r < out.length; r++) {
    let m = 0;
    for (let c = 0; c < C; c++) m += x[r * C + c]!;
    m /= C;
    let v = 0;
    for (let c = 0; c < C; c++) v += (x[r * C + c]! - m) ** 2;
    out[r] = Math.sqrt(v / C + eps);
  }
  return out;
}

/** Softmax over rows of C; -Infinity gets 0, an all -Infinity row gives zeros. */
export function refSoftmax(x: Float64Array, C: number): Float64Array {
  const out = new Float64Array(x.length);
  for (let o = 0; o < x.length; o += C) {
    let m = -Infinity;
    for (let c = 0; c < C; c++) m = Math.max(m, x[o + c]!);
    if (m === -Infinity) continue;
    let s = 0;
    for (let c = 0; c < C; c++) s += Math.exp(x[o + c]! - m);
    for (let c = 0; c < C; c++) out[o + c] = Math.exp(x[o + c]! - m) / s;
  }
  return out;
}

export function refLogSoftmax(x: Float64Array, C: number): Float64Array {
  const out = new Float64Array(x.length);
  for (let o = 0; o < x.length; o += C) {
    let m = -Infinity;
    for (let c = 0; c < C; c++) m = Math.max(m, x[o + c]!);
    let s = 0;
    for (let c = 0; c < C; c++) s += Math.exp(x[o + c]! - m);
    const lse = m + Math.log(s);
    for (let c = 0; c < C; c++) out[o + c] = x[o + c]! - lse;
  }
  return out;
}

/** Mean over rows whose target ≠ ignoreIndex of −log softmax(x)[target]; 0 when every row is ignored. */
export function refCrossEntropy(x: Float64Array, V: number, targets: ArrayLike<number>, ignoreIndex?: number): Float64Array {
  const lsm = refLogSoftmax(x, V);
  let s = 0;
  let n = 0;
  for (let r = 0; r < targets.length; r++) {
    if (targets[r] === ignoreIndex) continue;
    s -= lsm[r * V + targets[r]!]!;
    n++;
  }
  return Float64Array.of(n === 0 ? 0 : s / n);
}

// ---------------------------------------------------------------------------------------------
// Attention, [B, T, H, Dh] layout

export interface AttnDims {
  B: number;
  T: number;
  H: number;
  Dh: number;
}

/** True when query i may attend to key j in batch b: causal and (no mask or mask[b, j] = 1). */
export function attends(b: number, i: number, j: number, T: number, keyMask: Uint8Array | null): boolean {
  return j <= i && (keyMask === null || keyMask[b * T + j] === 1);
}

/** scores [B, H, T, T] = q·k/√Dh, -Infinity where masked. */
export function refScores(q: Float64Array, k: Float64Array, d: AttnDims, keyMask: Uint8Array | null): Float64Array {
  const { B, T, H, Dh } = d;
  const out = new Float64Array(B * H * T * T);
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < H; h++) {
      for (let i = 0; i < T; i++) {
        for (let j = 0; j < T; j++) {
          let s = -Infinity;
          if (attends(b, i, j, T, keyMask)) {
            s = 0;
            for (let e = 0; e < Dh; e++) s += q[((b * T + i) * H + h) * Dh + e]! * k[((b * T + j) * H + h) * Dh + e]!;
            s /= Math.sqrt(Dh);
          }
          out[((b * H + h) * T + i) * T + j] = s;
        }
      }
    }
  }
  return out;
}

/** z [B, T, H, Dh] with z[b, i, h] = Σ_j pattern[b, h, i, j] · v[b, j, h]. */
export function refApply(pattern: Float64Array, v: Float64Array, d: AttnDims): Float64Array {
  const { B, T, H, Dh } = d;
  const out = new Float64Array(B * T * H * Dh);
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < H; h++) {
      for (let i = 0; i < T; i++) {
        for (let e = 0; e < Dh; e++) {
          let s = 0;
          for (let j = 0; j < T; j++) s += pattern[((b * H + h) * T + i) * T + j]! * v[((b * T + j) * H + h) * Dh + e]!;
          out[((b * T + i) * H + h) * Dh + e] = s;
        }
      }
    }
  }
  return out;
}

/** Causal self-attention with a key-padding mask: softmax over the allowed keys, zeros for a row with none. */
export function refAttention(q: Float64Array, k: Float64Array, v: Float64Array, d: AttnDims, keyMask: Uint8Array | null): Float64Array {
  return refApply(refSoftmax(refScores(q, k, d, keyMask), d.T), v, d);
}
