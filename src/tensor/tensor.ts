/**
 * The Tensor and its reverse-mode autograd.
 *
 * A Tensor is a Float32Array in row-major order plus a shape. Ops are plain functions
 * (see ops/*.ts) that compute their output eagerly and, when gradients are being recorded,
 * attach a `GradNode`: the op's name, its inputs, and a closure that *adds* the output's
 * gradient into the inputs' gradients (llm.c style). `backward(loss)` sorts the graph
 * reachable from the loss topologically and walks it in reverse, exactly as micrograd does.
 *
 * Gradients are recorded only when grad mode is on (the default) and at least one input
 * requires a gradient; `noGrad(fn)` turns recording off for inference, caching and analyses.
 */

import { Buffer } from "node:buffer";
import { getBackend } from "./backend/index.ts";

export type Shape = readonly number[];

export interface GradNode {
  readonly op: string;
  readonly inputs: readonly Tensor[];
  /**
   * Adds d(loss)/d(input) into input.grad for every input that requires a gradient. `owned`: nothing
   * else will read gradOut afterwards, so one input may adopt the buffer itself (passGrad).
   */
  readonly backward: (gradOut: Float32Array, owned: boolean) => void;
}

export class Tensor {
  readonly data: Float32Array;
  readonly shape: readonly number[];
  /** d(loss)/d(this), same length as data; allocated on first use in backward. */
  grad: Float32Array | null = null;
  requiresGrad: boolean;
  /** How this tensor was made, when recorded; null for leaves and for untracked results. */
  node: GradNode | null = null;
  /** Keep `grad` on a non-leaf tensor after backward (PyTorch's retain_grad). */
  retainsGrad = false;

  constructor(data: Float32Array, shape: Shape, requiresGrad = false) {
    const n = numel(shape);
    if (data.length !== n) {
      throw new ShapeError(`Tensor: data has ${data.length} elements but shape [${shape.join(", ")}] needs ${n}`);
    }
    for (const d of shape) {
      if (!Number.isInteger(d) || d < 0) throw new ShapeError(`Tensor: invalid shape [${shape.join(", ")}]`);
    }
    this.data = data;
    this.shape = Object.freeze([...shape]);
    this.requiresGrad = requiresGrad;
  }

  get size(): number {
    return this.data.length;
  }

  get ndim(): number {
    return this.shape.length;
  }

  /** The single value of a one-element tensor. */
  item(): number {
    if (this.data.length !== 1) throw new ShapeError(`item(): tensor has shape [${this.shape.join(", ")}], not one element`);
    return this.data[0]!;
  }

  /** Marks the tensor as a trainable leaf (returns this, for chaining). */
  param(): this {
    this.requiresGrad = true;
    return this;
  }

  retainGrad(): this {
    this.retainsGrad = true;
    return this;
  }

  /** A new leaf with the same values that no gradient flows through. */
  detach(): Tensor {
    return new Tensor(this.data, this.shape, false);
  }

  clone(): Tensor {
    return new Tensor(this.data.slice(), this.shape, false);
  }

  toString(): string {
    return `Tensor[${this.shape.join(", ")}]${this.node ? ` (${this.node.op})` : ""}`;
  }

  // -------------------------------------------------------------------------------------------
  // Reading values (copies, outside autograd): get, slice, toArray, argmax, topk.

  /** The value at one index per axis (negative counts from the end): `logits.get(0, -1, 42)`. */
  get(...index: number[]): number {
    if (index.length !== this.shape.length) {
      throw new ShapeError(`get(${index.join(", ")}): tensor has shape ${shapeStr(this.shape)}, give ${this.shape.length} indices, got ${index.length}`);
    }
    let flat = 0;
    for (let a = 0; a < index.length; a++) flat = flat * this.shape[a]! + checkIndex(`get(${index.join(", ")})`, index[a]!, a, this.shape);
    return this.data[flat]!;
  }

  /**
   * A copy of part of the tensor, one spec per leading axis (missing ones take the whole axis):
   * a number picks one index and drops the axis, `null` keeps the axis whole, `[start, end]` keeps
   * start..end-1 (end omitted: to the end; negatives count from the end). PyTorch's `t[0, :, 2:5]`
   * is `t.slice(0, null, [2, 5])`. No gradient flows through the copy.
   */
  slice(...specs: SliceSpec[]): Tensor {
    const what = `slice(${specs.map(specStr).join(", ")})`;
    if (specs.length > this.shape.length) throw new ShapeError(`${what}: tensor has shape ${shapeStr(this.shape)}, at most ${this.shape.length} specs, got ${specs.length}`);
    const starts: number[] = [];
    const counts: number[] = [];
    const outShape: number[] = [];
    this.shape.forEach((dim, a) => {
      const spec = a < specs.length ? specs[a] : null;
      if (spec === null || spec === undefined) {
        starts.push(0); counts.push(dim); outShape.push(dim);
      } else if (typeof spec === "number") {
        starts.push(checkIndex(what, spec, a, this.shape)); counts.push(1);
      } else {
        const [s0, e0] = spec;
        const start = s0 < 0 ? s0 + dim : s0;
        const end = e0 === undefined ? dim : e0 < 0 ? e0 + dim : e0;
        if (!Number.isInteger(start) || !Number.isInteger(end) || start < 0 || end > dim || start > end) {
          throw new ShapeError(`${what}: range [${s0}, ${e0 ?? ""}] does not fit axis ${a} of shape ${shapeStr(this.shape)} (size ${dim})`);
        }
        starts.push(start); counts.push(end - start); outShape.push(end - start);
      }
    });
    const out = new Float32Array(numel(counts));
    const strides = new Array<number>(this.shape.length).fill(1);
    for (let a = this.shape.length - 2; a >= 0; a--) strides[a] = strides[a + 1]! * this.shape[a + 1]!;
    // Copy the innermost axis as a run; walk the outer axes as an odometer.
    const nd = this.shape.length;
    if (nd === 0) return new Tensor(Float32Array.of(this.data[0]!), [], false);
    const inner = counts[nd - 1]!;
    const outer = inner === 0 ? 0 : out.length / inner;
    const pos = new Array<number>(nd - 1).fill(0);
    for (let r = 0; r < outer; r++) {
      let src = starts[nd - 1]!;
      for (let a = 0; a < nd - 1; a++) src += (starts[a]! + pos[a]!) * strides[a]!;
      out.set(this.data.subarray(src, src + inner), r * inner);
      for (let a = nd - 2; a >= 0; a--) {
        if (++pos[a]! < counts[a]!) break;
        pos[a] = 0;
      }
    }
    return new Tensor(out, outShape, false);
  }

  /** The values as nested arrays (a number for a 0-d tensor), like PyTorch's tolist(). */
  toArray(): NestedNumbers {
    const build = (axis: number, offset: number): NestedNumbers => {
      if (axis === this.shape.length) return this.data[offset]!;
      const n = this.shape[axis]!;
      const step = numel(this.shape.slice(axis + 1));
      return Array.from({ length: n }, (_, i) => build(axis + 1, offset + i * step));
    };
    return build(0, 0);
  }

  /** Index of the largest value along `axis` (default the last; lowest index on ties), that axis removed. */
  argmax(axis = -1): Tensor {
    const ax = normAxisOf("argmax", this.shape, axis);
    return this.topk(1, ax).indices.squeezeAxis(ax);
  }

  /** The k largest values along `axis` (default the last) in descending order, and their indices (lowest first on ties). */
  topk(k: number, axis = -1): { values: Tensor; indices: Tensor } {
    const ax = normAxisOf("topk", this.shape, axis);
    const n = this.shape[ax]!;
    if (!Number.isInteger(k) || k < 1 || k > n) throw new ShapeError(`topk(${k}): k must be 1..${n} (axis ${ax} of shape ${shapeStr(this.shape)})`);
    const inner = numel(this.shape.slice(ax + 1));
    const outer = numel(this.shape.slice(0, ax));
    const outShape = this.shape.map((d, a) => (a === ax ? k : d));
    const values = new Float32Array(outer * k * inner);
    const indices = new Float32Array(outer * k * inner);
    // Per row, keep the best k seen so far sorted (insertion): O(n·k), linear for argmax.
    const bestV = new Float64Array(k);
    const bestI = new Int32Array(k);
    for (let o = 0; o < outer; o++) {
      for (let i = 0; i < inner; i++) {
        const base = o * n * inner + i;
        let have = 0;
        for (let j = 0; j < n; j++) {
          const v = this.data[base + j * inner]!;
          if (have === k && !(v > bestV[k - 1]!)) continue; // ties keep the lower index
          let p = have < k ? have++ : k - 1;
          while (p > 0 && v > bestV[p - 1]!) {
            bestV[p] = bestV[p - 1]!;
            bestI[p] = bestI[p - 1]!;
            p--;
          }
          bestV[p] = v;
          bestI[p] = j;
        }
        for (let j = 0; j < k; j++) {
          values[o * k * inner + j * inner + i] = bestV[j]!;
          indices[o * k * inner + j * inner + i] = bestI[j]!;
        }
      }
    }
    return { values: new Tensor(values, outShape, false), indices: new Tensor(indices, outShape, false) };
  }

  /** The same values without axis `axis` (which must have size 1). */
  private squeezeAxis(axis: number): Tensor {
    return new Tensor(this.data, this.shape.filter((_, a) => a !== axis), false);
  }
}

/** One axis of Tensor.slice: an index (drops the axis), null (the whole axis), or [start, end). */
export type SliceSpec = number | null | readonly [number, number?];

/** Tensor.toArray's result: nested arrays of numbers, one level per axis. */
export type NestedNumbers = number | NestedNumbers[];

function specStr(s: SliceSpec): string {
  return s === null ? "null" : typeof s === "number" ? String(s) : `[${s.join(", ")}]`;
}

function checkIndex(what: string, i: number, axis: number, shape: Shape): number {
  const dim = shape[axis]!;
  const j = i < 0 ? i + dim : i;
  if (!Number.isInteger(i) || j < 0 || j >= dim) {
    throw new ShapeError(`${what}: index ${i} is out of range for axis ${axis} of shape ${shapeStr(shape)} (size ${dim})`);
  }
  return j;
}

function normAxisOf(op: string, shape: Shape, axis: number): number {
  const a = axis < 0 ? axis + shape.length : axis;
  if (!Number.isInteger(axis) || a < 0 || a >= shape.length) throw new ShapeError(`${op}: axis ${axis} is out of range for shape ${shapeStr(shape)}`);
  return a;
}

export class ShapeError extends Error {
  override name = "ShapeError";
}

export class NanError extends Error {
  override name = "NanError";
}

export function numel(shape: Shape): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

export function shapeStr(shape: Shape): string {
  return `[${shape.join(", ")}]`;
}

export function sameShape(a: Shape, b: Shape): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** Throws a ShapeError naming the op and both shapes unless `t` has exactly `expected` (-1 matches any size). */
export function assertShape(op: string, what: string, t: Tensor, expected: Shape): void {
  const ok = t.shape.length === expected.length && expected.every((d, i) => d === -1 || d === t.shape[i]);
  if (!ok) throw new ShapeError(`${op}: ${what} has shape ${shapeStr(t.shape)}, expected ${shapeStr(expected.map((d) => (d === -1 ? "*" : d)) as unknown as number[])}`);
}

// ---------------------------------------------------------------------------------------------
// Grad mode

let gradEnabled = true;

export function isGradEnabled(): boolean {
  return gradEnabled;
}

/** Runs fn with gradient recording off (inference, caching, analyses). Restores the mode even on throw. */
export function noGrad<T>(fn: () => T): T {
  const prev = gradEnabled;
  gradEnabled = false;
  try {
    return fn();
  } finally {
    gradEnabled = prev;
  }
}

/** Runs fn with gradient recording on, e.g. for a gradient-based analysis inside a noGrad scope. */
export function withGrad<T>(fn: () => T): T {
  const prev = gradEnabled;
  gradEnabled = true;
  try {
    return fn();
  } finally {
    gradEnabled = prev;
  }
}

// ---------------------------------------------------------------------------------------------
// Opt-in NaN / Inf detection: SELFREPORT_CHECK_NAN=1 or setNanCheck(true).

let nanCheck = process.env["SELFREPORT_CHECK_NAN"] === "1";

export function setNanCheck(on: boolean): void {
  nanCheck = on;
}

function firstNonFinite(a: Float32Array): number {
  for (let i = 0; i < a.length; i++) if (!Number.isFinite(a[i]!)) return i;
  return -1;
}

// ---------------------------------------------------------------------------------------------
// Recording

/**
 * Called by every op after computing `out`. Attaches the gradient node when recording is on
 * and an input requires a gradient; runs the NaN check when enabled. Returns `out`.
 */
export function record(op: string, out: Tensor, inputs: readonly Tensor[], backward: (gradOut: Float32Array, owned: boolean) => void): Tensor {
  if (nanCheck) {
    const i = firstNonFinite(out.data);
    if (i >= 0) {
      // -Infinity is legitimate in masked attention scores.
      if (!(op === "attnScores" && out.data[i] === -Infinity && firstNonFinite(out.data.map((v) => (v === -Infinity ? 0 : v))) < 0)) {
        throw new NanError(`${op}: produced ${out.data[i]} at flat index ${i} of output ${shapeStr(out.shape)} (inputs ${inputs.map((t) => shapeStr(t.shape)).join(", ")})`);
      }
    }
  }
  if (gradEnabled && inputs.some((t) => t.requiresGrad)) {
    out.requiresGrad = true;
    out.node = { op, inputs, backward };
  }
  return out;
}

/** The gradient buffer of `t`, allocated (zeros) on first use. Ops call this from their backward. */
export function gradOf(t: Tensor): Float32Array {
  if (t.grad === null) t.grad = takePooled(t.data.length)?.fill(0) ?? new Float32Array(t.data.length);
  return t.grad;
}

/**
 * Gradient buffers of intermediates whose backward has run, by length, for reuse later in the same
 * backward pass (see backward): a warm buffer instead of fresh memory, and far fewer allocations for
 * the garbage collector. Null outside backward.
 */
let gradPool: Map<number, Float32Array[]> | null = null;
/** At most this many spare buffers of one length are kept. */
const GRAD_POOL_DEPTH = 4;

function takePooled(n: number): Float32Array | undefined {
  return gradPool?.get(n)?.pop();
}

function givePooled(buf: Float32Array): void {
  if (gradPool === null || buf.length < UNINIT_MIN) return;
  const list = gradPool.get(buf.length);
  if (list === undefined) gradPool.set(buf.length, [buf]);
  else if (list.length < GRAD_POOL_DEPTH) list.push(buf);
}

/**
 * For a backward that can either overwrite or add (a product with beta 0 or 1): t's gradient buffer
 * and the beta to write it with. A tensor without a gradient yet gets an uninitialised buffer and
 * beta 0 (the product writes every entry), which saves zero-filling it first.
 */
export function gradForProduct(t: Tensor): [grad: Float32Array, beta: 0 | 1] {
  if (t.grad !== null) return [t.grad, 1];
  t.grad = takePooled(t.data.length) ?? emptyF32(t.data.length);
  return [t.grad, 0];
}

/**
 * Adds `g` (same length) into t's gradient: a copy of g when t has none yet (instead of zeros, then
 * an add), else an elementwise add. For ops whose gradient passes through unchanged (add, reshape).
 */
export function addGrad(t: Tensor, g: Float32Array): void {
  if (t.grad !== null) addInto(t.grad, g);
  else {
    const buf = takePooled(g.length);
    if (buf === undefined) t.grad = g.slice();
    else (t.grad = buf).set(g);
  }
}

/**
 * Passes g on to t unchanged (reshape, add): when the op owns g (see GradNode.backward) and t has no
 * gradient yet, g becomes t's gradient without a copy; else addGrad. Returns whether t adopted g: at
 * most one input of a node may (the others get copies), so two tensors never share a gradient buffer.
 */
export function passGrad(t: Tensor, g: Float32Array, owned: boolean): boolean {
  if (owned && t.grad === null) {
    t.grad = g;
    return true;
  }
  addGrad(t, g);
  return false;
}

/** dst[i] += src[i] for every i of src (a small function of its own, so it stays monomorphic and fast). */
export function addInto(dst: Float32Array, src: Float32Array): void {
  if (src.length >= UNINIT_MIN) getBackend().addInto(dst, src, src.length); // vectorised, on all BLAS threads natively
  else for (let i = 0; i < src.length; i++) dst[i]! += src[i]!;
}

/**
 * Reverse-mode differentiation from `root` (normally a scalar loss). `gradRoot` defaults to ones.
 * Adds into the `.grad` of every leaf that requires a gradient (so zero them between steps);
 * intermediate gradients are freed afterwards unless the tensor called retainGrad().
 */
export function backward(root: Tensor, gradRoot?: Float32Array): void {
  if (!root.requiresGrad) throw new Error(`backward: ${root.toString()} does not require a gradient (was it computed under noGrad, or from tensors without requiresGrad?)`);
  if (gradRoot === undefined && root.size !== 1) {
    throw new ShapeError(`backward: root has shape ${shapeStr(root.shape)}; pass gradRoot for a non-scalar root`);
  }
  if (gradRoot !== undefined && gradRoot.length !== root.size) {
    throw new ShapeError(`backward: gradRoot has ${gradRoot.length} elements, root has shape ${shapeStr(root.shape)}`);
  }
  const order = topoSort(root);
  // A retained grad from an earlier pass must not flow again: set it aside, propagate only
  // this pass's gradient, then add the earlier value back (PyTorch accumulates the same way).
  const earlier = new Map<Tensor, Float32Array>();
  for (const t of order) {
    if (t.grad !== null) { earlier.set(t, t.grad); t.grad = null; }
  }
  const g = gradOf(root);
  if (gradRoot) for (let i = 0; i < g.length; i++) g[i]! += gradRoot[i]!;
  else g[0]! += 1;

  // An intermediate's gradient is dead once its node's backward has run (nothing else holds it: ops
  // read gradOut only while they run): it goes to the pool for the next gradient of its length.
  const outerPool = gradPool;
  gradPool = new Map();
  try {
    for (let i = order.length - 1; i >= 0; i--) {
      const t = order[i]!;
      const node = t.node!;
      const g = t.grad;
      if (g !== null) {
        node.backward(g, !t.retainsGrad);
        if (nanCheck) {
          for (const inp of node.inputs) {
            if (inp.grad !== null && firstNonFinite(inp.grad) >= 0) {
              throw new NanError(`backward of ${node.op}: produced a non-finite gradient for input ${shapeStr(inp.shape)}`);
            }
          }
        }
      }
      if (!t.retainsGrad) {
        if (g !== null && !node.inputs.some((inp) => inp.grad === g)) givePooled(g); // unless an input adopted it
        t.grad = null;
      } else restoreEarlier(t, earlier);
    }
  } finally {
    gradPool = outerPool;
  }
}

/** A retained gradient from an earlier pass gets this pass's gradient added (PyTorch accumulates the same way). */
function restoreEarlier(t: Tensor, earlier: Map<Tensor, Float32Array>): void {
  const before = earlier.get(t);
  if (before === undefined) return;
  if (t.grad !== null) addInto(before, t.grad);
  t.grad = before;
}

/** Non-leaf tensors reachable from root, inputs before outputs. */
function topoSort(root: Tensor): Tensor[] {
  const order: Tensor[] = [];
  const seen = new Set<Tensor>();
  // Iterative DFS (graphs of deep models would overflow a recursive one).
  const stack: Array<[Tensor, number]> = [[root, 0]];
  seen.add(root);
  while (stack.length > 0) {
    const top = stack[stack.length - 1]!;
    const [t, next] = top;
    const inputs = t.node ? t.node.inputs : [];
    if (next < inputs.length) {
      top[1] = next + 1;
      const child = inputs[next]!;
      if (!seen.has(child) && child.node !== null) {
        seen.add(child);
        stack.push([child, 0]);
      }
    } else {
      stack.pop();
      if (t.node !== null) order.push(t);
    }
  }
  return order;
}

// ---------------------------------------------------------------------------------------------
// Creation

export function tensor(values: ArrayLike<number>, shape?: Shape, requiresGrad = false): Tensor {
  const data = values instanceof Float32Array ? values : Float32Array.from(values);
  return new Tensor(data, shape ?? [data.length], requiresGrad);
}

export function scalar(v: number): Tensor {
  return new Tensor(Float32Array.of(v), [], false);
}

/** Below this many elements a fresh buffer is simply zeroed (the saving is too small to matter). */
const UNINIT_MIN = 4096;

/**
 * A Float32Array of n elements whose contents are unspecified (reused heap memory, not zeroed), for
 * an op's output that the op then writes in full. Skips the memset of `new Float32Array(n)`, which
 * on big outputs costs as much as a simple kernel. Small sizes are zeroed arrays.
 */
export function emptyF32(n: number): Float32Array {
  if (n < UNINIT_MIN) return new Float32Array(n);
  const bytes = Buffer.allocUnsafeSlow(n * 4); // its own ArrayBuffer at offset 0, not the shared pool
  return new Float32Array(bytes.buffer, bytes.byteOffset, n);
}

export function zeros(shape: Shape, requiresGrad = false): Tensor {
  return new Tensor(new Float32Array(numel(shape)), shape, requiresGrad);
}

export function ones(shape: Shape, requiresGrad = false): Tensor {
  return full(shape, 1, requiresGrad);
}

export function full(shape: Shape, value: number, requiresGrad = false): Tensor {
  return new Tensor(new Float32Array(numel(shape)).fill(value), shape, requiresGrad);
}
