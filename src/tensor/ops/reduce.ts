/**
 * Reductions over one axis (or over everything): sum, mean, max.
 * An axis splits a shape into [outer, n, inner]; every kernel below works on that view.
 */
import { Tensor, ShapeError, record, gradOf, shapeStr, numel } from "../tensor.ts";

export function normAxis(op: string, shape: readonly number[], axis: number): number {
  const ax = axis < 0 ? shape.length + axis : axis;
  if (!Number.isInteger(ax) || ax < 0 || ax >= shape.length) {
    throw new ShapeError(`${op}: axis ${axis} is out of range for shape ${shapeStr(shape)}`);
  }
  return ax;
}

function split(shape: readonly number[], ax: number): [outer: number, n: number, inner: number] {
  return [numel(shape.slice(0, ax)), shape[ax]!, numel(shape.slice(ax + 1))];
}

function reducedShape(shape: readonly number[], ax: number, keepDim: boolean): number[] {
  return keepDim ? shape.map((d, i) => (i === ax ? 1 : d)) : shape.filter((_, i) => i !== ax);
}

/** Sum over `axis` (all elements when axis is undefined, giving a scalar). */
export function sum(a: Tensor, axis?: number, keepDim = false): Tensor {
  return sumScaled("sum", a, axis, keepDim, 1);
}

/** Mean over `axis` (all elements when axis is undefined). */
export function mean(a: Tensor, axis?: number, keepDim = false): Tensor {
  const n = axis === undefined ? a.size : a.shape[normAxis("mean", a.shape, axis)]!;
  return sumScaled("mean", a, axis, keepDim, 1 / n);
}

function sumScaled(op: string, a: Tensor, axis: number | undefined, keepDim: boolean, s: number): Tensor {
  const A = a.data;
  if (axis === undefined) {
    let acc = 0; // float64 accumulation
    for (let i = 0; i < A.length; i++) acc += A[i]!;
    const outShape = keepDim ? a.shape.map(() => 1) : [];
    return record(op, new Tensor(Float32Array.of(acc * s), outShape), [a], (g) => {
      const ga = gradOf(a);
      const gs = g[0]! * s;
      for (let i = 0; i < ga.length; i++) ga[i]! += gs;
    });
  }
  const ax = normAxis(op, a.shape, axis);
  const [outer, n, inner] = split(a.shape, ax);
  const out = new Float32Array(outer * inner);
  const acc = new Float64Array(inner);
  for (let o = 0; o < outer; o++) {
    acc.fill(0);
    for (let k = 0; k < n; k++) {
      const base = (o * n + k) * inner;
      for (let i = 0; i < inner; i++) acc[i]! += A[base + i]!;
    }
    for (let i = 0; i < inner; i++) out[o * inner + i] = acc[i]! * s;
  }
  return record(op, new Tensor(out, reducedShape(a.shape, ax, keepDim)), [a], (g) => {
    const ga = gradOf(a);
    for (let o = 0; o < outer; o++) {
      for (let k = 0; k < n; k++) {
        const base = (o * n + k) * inner;
        for (let i = 0; i < inner; i++) ga[base + i]! += g[o * inner + i]! * s;
      }
    }
  });
}

/** Maximum over `axis`; the gradient flows to the first maximal element. */
export function max(a: Tensor, axis: number, keepDim = false): Tensor {
  const ax = normAxis("max", a.shape, axis);
  const [outer, n, inner] = split(a.shape, ax);
  if (n === 0) throw new ShapeError(`max: axis ${axis} of shape ${shapeStr(a.shape)} is empty`);
  const A = a.data;
  const out = new Float32Array(outer * inner);
  const argmax = new Int32Array(outer * inner);
  for (let o = 0; o < outer; o++) {
    for (let i = 0; i < inner; i++) {
      let best = -Infinity;
      let bestK = 0;
      for (let k = 0; k < n; k++) {
        const v = A[(o * n + k) * inner + i]!;
        if (v > best || Number.isNaN(v)) {
          best = v;
          bestK = k;
          if (Number.isNaN(v)) break;
        }
      }
      out[o * inner + i] = best;
      argmax[o * inner + i] = bestK;
    }
  }
  return record("max", new Tensor(out, reducedShape(a.shape, ax, keepDim)), [a], (g) => {
    const ga = gradOf(a);
    for (let o = 0; o < outer; o++) {
      for (let i = 0; i < inner; i++) ga[(o * n + argmax[o * inner + i]!) * inner + i]! += g[o * inner + i]!;
    }
  });
}

/** Index of the maximum over the last axis (no gradient). */
export function argmaxLast(a: Tensor): Int32Array {
  const n = a.shape[a.ndim - 1]!;
  const rows = a.size / n;
  const out = new Int32Array(rows);
  for (let r = 0; r < rows; r++) {
    let best = -Infinity;
    let bi = 0;
    for (let k = 0; k < n; k++) {
      const v = a.data[r * n + k]!;
      if (v > best) {
        best = v;
        bi = k;
      }
    }
    out[r] = bi;
  }
  return out;
}
