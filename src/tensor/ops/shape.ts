/**
 * Ops that move data without arithmetic: reshape, permute/transpose, slice, index-select,
 * gather, concat and embedding lookup. Their backward scatters the gradient back.
 */
import { Tensor, ShapeError, record, gradOf, passGrad, shapeStr, numel, emptyF32 } from "../tensor.ts";
import { normAxis } from "./reduce.ts";
import { getBackend } from "../backend/index.ts";

/** Same data, new shape (one dimension may be -1). Shares the storage: no copy. */
export function reshape(a: Tensor, shape: readonly number[]): Tensor {
  const free = shape.indexOf(-1);
  let target = [...shape];
  if (free >= 0) {
    const known = numel(shape.filter((_, i) => i !== free));
    if (known === 0 || a.size % known !== 0) throw new ShapeError(`reshape: cannot reshape ${shapeStr(a.shape)} into ${shapeStr(shape)}`);
    target[free] = a.size / known;
  }
  if (numel(target) !== a.size) throw new ShapeError(`reshape: cannot reshape ${shapeStr(a.shape)} (${a.size} elements) into ${shapeStr(shape)}`);
  target = target.map((d) => d);
  return record("reshape", new Tensor(a.data, target), [a], (g, owned) => void passGrad(a, g, owned));
}

/** Reorders the axes: output axis i is input axis perm[i]. Copies. */
export function permute(a: Tensor, perm: readonly number[]): Tensor {
  const n = a.ndim;
  if (perm.length !== n || [...perm].sort((x, y) => x - y).some((p, i) => p !== i)) {
    throw new ShapeError(`permute: ${shapeStr(perm)} is not a permutation of the ${n} axes of ${shapeStr(a.shape)}`);
  }
  const outShape = perm.map((p) => a.shape[p]!);
  const inStrides = stridesOf(a.shape);
  const stridesInOutOrder = perm.map((p) => inStrides[p]!);
  // Trailing axes that stay in place move as contiguous runs (e.g. d_head in [H, C, Dh] → [C, H, Dh]).
  let k = n;
  let run = 1;
  while (k > 0 && perm[k - 1] === k - 1) run *= a.shape[--k]!;
  const index = permuteIndex(a.shape, perm, outShape.slice(0, k), stridesInOutOrder.slice(0, k)); // out run r → its input offset
  const out = emptyF32(a.size);
  if (a.size > 0) getBackend().gatherRuns(a.data, index, run, out);
  return record("permute", new Tensor(out, outShape), [a], (g) => getBackend().scatterAddRuns(g, index, run, gradOf(a)));
}

/** Swaps two axes. */
export function transpose(a: Tensor, axis0 = -2, axis1 = -1): Tensor {
  const x = normAxis("transpose", a.shape, axis0);
  const y = normAxis("transpose", a.shape, axis1);
  const perm = a.shape.map((_, i) => i);
  perm[x] = y;
  perm[y] = x;
  return permute(a, perm);
}

export function stridesOf(shape: readonly number[]): number[] {
  const s = new Array<number>(shape.length);
  let acc = 1;
  for (let i = shape.length - 1; i >= 0; i--) {
    s[i] = acc;
    acc *= shape[i]!;
  }
  return s;
}

/** Permutation index maps are reused across calls (a model permutes the same weight shapes every step). */
const permuteCache = new Map<string, Int32Array>();

function permuteIndex(inShape: readonly number[], perm: readonly number[], outShape: readonly number[], strides: readonly number[]): Int32Array {
  const key = `${inShape.join(",")}|${perm.join(",")}|${outShape.length}`;
  let index = permuteCache.get(key);
  if (index === undefined) {
    index = gatherIndex(outShape, strides);
    if (permuteCache.size > 64) permuteCache.clear();
    permuteCache.set(key, index);
  }
  return index;
}

/** For each flat index over `shape`, the offset Σ counter[d]·strides[d]. */
function gatherIndex(shape: readonly number[], strides: readonly number[]): Int32Array {
  const total = numel(shape);
  const index = new Int32Array(total);
  const n = shape.length;
  const counter = new Array<number>(n).fill(0);
  let off = 0;
  for (let flat = 0; flat < total; flat++) {
    index[flat] = off;
    for (let d = n - 1; d >= 0; d--) {
      counter[d]!++;
      off += strides[d]!;
      if (counter[d]! < shape[d]!) break;
      off -= strides[d]! * counter[d]!;
      counter[d] = 0;
    }
  }
  return index;
}

/** Elements start..end-1 along `axis`. */
export function slice(a: Tensor, axis: number, start: number, end: number): Tensor {
  const ax = normAxis("slice", a.shape, axis);
  const n = a.shape[ax]!;
  if (!Number.isInteger(start) || !Number.isInteger(end) || start < 0 || end > n || start > end) {
    throw new ShapeError(`slice: range [${start}, ${end}) is out of bounds for axis ${axis} of size ${n} (shape ${shapeStr(a.shape)})`);
  }
  const outer = numel(a.shape.slice(0, ax));
  const inner = numel(a.shape.slice(ax + 1));
  const m = end - start;
  const outShape = a.shape.map((d, i) => (i === ax ? m : d));
  const out = new Float32Array(outer * m * inner);
  const A = a.data;
  for (let o = 0; o < outer; o++) {
    out.set(A.subarray((o * n + start) * inner, (o * n + end) * inner), o * m * inner);
  }
  return record("slice", new Tensor(out, outShape), [a], (g) => {
    const ga = gradOf(a);
    for (let o = 0; o < outer; o++) {
      const src = o * m * inner;
      const dst = (o * n + start) * inner;
      for (let i = 0; i < m * inner; i++) ga[dst + i]! += g[src + i]!;
    }
  });
}

/** Picks entries `indices` along `axis` (indices may repeat; gradients accumulate). */
export function indexSelect(a: Tensor, axis: number, indices: ArrayLike<number>): Tensor {
  const ax = normAxis("indexSelect", a.shape, axis);
  const n = a.shape[ax]!;
  const outer = numel(a.shape.slice(0, ax));
  const inner = numel(a.shape.slice(ax + 1));
  const m = indices.length;
  for (let j = 0; j < m; j++) {
    const idx = indices[j]!;
    if (!Number.isInteger(idx) || idx < 0 || idx >= n) {
      throw new ShapeError(`indexSelect: index ${idx} is out of range for axis ${axis} of size ${n} (shape ${shapeStr(a.shape)})`);
    }
  }
  const outShape = a.shape.map((d, i) => (i === ax ? m : d));
  const out = new Float32Array(outer * m * inner);
  const A = a.data;
  for (let o = 0; o < outer; o++) {
    for (let j = 0; j < m; j++) {
      const src = (o * n + indices[j]!) * inner;
      out.set(A.subarray(src, src + inner), (o * m + j) * inner);
    }
  }
  return record("indexSelect", new Tensor(out, outShape), [a], (g) => {
    const ga = gradOf(a);
    for (let o = 0; o < outer; o++) {
      for (let j = 0; j < m; j++) {
        const dst = (o * n + indices[j]!) * inner;
        const src = (o * m + j) * inner;
        for (let i = 0; i < inner; i++) ga[dst + i]! += g[src + i]!;
      }
    }
  });
}

/**
 * Per-row pick along axis 1 of a [B, T, ...] tensor: out[b] = a[b, positions[b]], giving [B, ...].
 * This is how a head reads the residual stream at each example's own read position.
 */
export function selectPositions(a: Tensor, positions: ArrayLike<number>): Tensor {
  if (a.ndim < 2) throw new ShapeError(`selectPositions: input must be at least [batch, pos], got ${shapeStr(a.shape)}`);
  const [B, T] = [a.shape[0]!, a.shape[1]!];
  if (positions.length !== B) throw new ShapeError(`selectPositions: ${positions.length} positions for a batch of ${B}`);
  const inner = numel(a.shape.slice(2));
  const out = new Float32Array(B * inner);
  for (let b = 0; b < B; b++) {
    const p = positions[b]!;
    if (!Number.isInteger(p) || p < 0 || p >= T) throw new ShapeError(`selectPositions: position ${p} is out of range for ${T} positions`);
    out.set(a.data.subarray((b * T + p) * inner, (b * T + p + 1) * inner), b * inner);
  }
  return record("selectPositions", new Tensor(out, [B, ...a.shape.slice(2)]), [a], (g) => {
    const ga = gradOf(a);
    for (let b = 0; b < B; b++) {
      const dst = (b * T + positions[b]!) * inner;
      for (let i = 0; i < inner; i++) ga[dst + i]! += g[b * inner + i]!;
    }
  });
}

/** torch.gather along the last axis: out[..., j] = a[..., index[..., j]]. */
export function gatherLast(a: Tensor, index: Int32Array, indexShape: readonly number[]): Tensor {
  const n = a.shape[a.ndim - 1]!;
  const rows = a.size / n;
  const m = indexShape[indexShape.length - 1]!;
  if (indexShape.length !== a.ndim || indexShape.some((d, i) => i < a.ndim - 1 && d !== a.shape[i]) || index.length !== rows * m) {
    throw new ShapeError(`gatherLast: index shape ${shapeStr(indexShape)} does not match input ${shapeStr(a.shape)} outside the last axis`);
  }
  const out = new Float32Array(rows * m);
  for (let r = 0; r < rows; r++) {
    for (let j = 0; j < m; j++) {
      const k = index[r * m + j]!;
      if (k < 0 || k >= n) throw new ShapeError(`gatherLast: index ${k} out of range for last axis of size ${n}`);
      out[r * m + j] = a.data[r * n + k]!;
    }
  }
  return record("gatherLast", new Tensor(out, indexShape), [a], (g) => {
    const ga = gradOf(a);
    for (let r = 0; r < rows; r++) for (let j = 0; j < m; j++) ga[r * n + index[r * m + j]!]! += g[r * m + j]!;
  });
}

/** Joins tensors along `axis`; all other dims must agree. */
export function concat(tensors: readonly Tensor[], axis: number): Tensor {
  if (tensors.length === 0) throw new ShapeError("concat: needs at least one tensor");
  const first = tensors[0]!;
  const ax = normAxis("concat", first.shape, axis);
  for (const t of tensors) {
    if (t.ndim !== first.ndim || t.shape.some((d, i) => i !== ax && d !== first.shape[i])) {
      throw new ShapeError(`concat: shapes ${tensors.map((x) => shapeStr(x.shape)).join(", ")} differ outside axis ${axis}`);
    }
  }
  const outer = numel(first.shape.slice(0, ax));
  const inner = numel(first.shape.slice(ax + 1));
  const sizes = tensors.map((t) => t.shape[ax]!);
  const total = sizes.reduce((x, y) => x + y, 0);
  const out = new Float32Array(outer * total * inner);
  let offset = 0;
  tensors.forEach((t, ti) => {
    const m = sizes[ti]!;
    for (let o = 0; o < outer; o++) out.set(t.data.subarray(o * m * inner, (o + 1) * m * inner), (o * total + offset) * inner);
    offset += m;
  });
  const outShape = first.shape.map((d, i) => (i === ax ? total : d));
  return record("concat", new Tensor(out, outShape), tensors, (g) => {
    let off = 0;
    tensors.forEach((t, ti) => {
      const m = sizes[ti]!;
      if (t.requiresGrad) {
        const gt = gradOf(t);
        for (let o = 0; o < outer; o++) {
          const src = (o * total + off) * inner;
          const dst = o * m * inner;
          for (let i = 0; i < m * inner; i++) gt[dst + i]! += g[src + i]!;
        }
      }
      off += m;
    });
  });
}

/** Rows of `weight` [V, C] for each id: output shape [...idsShape, C]. */
export function embedding(weight: Tensor, ids: Int32Array, idsShape: readonly number[]): Tensor {
  if (weight.ndim !== 2) throw new ShapeError(`embedding: weight must be [vocab, d], got ${shapeStr(weight.shape)}`);
  if (numel(idsShape) !== ids.length) throw new ShapeError(`embedding: ${ids.length} ids do not fill shape ${shapeStr(idsShape)}`);
  const [V, C] = [weight.shape[0]!, weight.shape[1]!];
  for (const id of ids) if (id < 0 || id >= V) throw new ShapeError(`embedding: token id ${id} is out of range for a vocabulary of ${V}`);
  // where each id's row starts in weight; Int32 like a permute's index, so a weight of 2^31 or more
  // elements (8 GiB) gets gatherRuns's RangeError instead of a result
  const rowStarts = Int32Array.from(ids, (id) => id * C);
  const out = emptyF32(ids.length * C);
  getBackend().gatherRuns(weight.data, rowStarts, C, out);
  return record("embedding", new Tensor(out, [...idsShape, C]), [weight], (g) => {
    getBackend().scatterAddRuns(g, rowStarts, C, gradOf(weight)); // gw[id·C + c] += g[i·C + c], in the order of i
  });
}
