/**
 * Kernels for the Llama and GPT-NeoX blocks, each a plain loop with its backward beside it:
 * RMSNorm in TransformerLens's two hookable steps (rmsScale → divByScale), SiLU, exact GELU and
 * rotary position embeddings (rotate-half layout, as Hugging Face's Llama and GPT-NeoX and
 * TransformerLens with rotary_adjacent_pairs false).
 */
import { Tensor, ShapeError, record, gradOf, shapeStr } from "../tensor.ts";

function lastDim(op: string, x: Tensor): [rows: number, C: number] {
  if (x.ndim < 1) throw new ShapeError(`${op}: input must have at least one dim, got ${shapeStr(x.shape)}`);
  const C = x.shape[x.ndim - 1]!;
  return [C === 0 ? 0 : x.size / C, C];
}

/** RMSNorm's scale sqrt(mean(x²) + eps) over the last axis: [..., C] → [..., 1] (no centring). */
export function rmsScale(x: Tensor, eps: number): Tensor {
  const [rows, C] = lastDim("rmsScale", x);
  const X = x.data;
  const out = new Float32Array(rows);
  for (let r = 0; r < rows; r++) {
    let s = 0;
    for (let c = 0; c < C; c++) s += X[r * C + c]! * X[r * C + c]!;
    out[r] = Math.sqrt(s / C + eps);
  }
  return record("rmsScale", new Tensor(out, [...x.shape.slice(0, -1), 1]), [x], (g) => {
    const gx = gradOf(x); // d scale / d x_c = x_c / (C · scale)
    for (let r = 0; r < rows; r++) {
      const k = g[r]! / (C * out[r]!);
      for (let c = 0; c < C; c++) gx[r * C + c]! += k * X[r * C + c]!;
    }
  });
}

/** x / scale with x [..., C] and scale [..., 1] (one divisor per row). */
export function divByScale(x: Tensor, scale: Tensor): Tensor {
  const [rows, C] = lastDim("divByScale", x);
  if (scale.size !== rows) throw new ShapeError(`divByScale: scale ${shapeStr(scale.shape)} does not match input ${shapeStr(x.shape)}`);
  const X = x.data;
  const S = scale.data;
  const out = new Float32Array(x.size);
  for (let r = 0; r < rows; r++) {
    const inv = 1 / S[r]!;
    for (let c = 0; c < C; c++) out[r * C + c] = X[r * C + c]! * inv;
  }
  return record("divByScale", new Tensor(out, x.shape), [x, scale], (g) => {
    const gx = x.requiresGrad ? gradOf(x) : null;
    const gs = scale.requiresGrad ? gradOf(scale) : null;
    for (let r = 0; r < rows; r++) {
      const inv = 1 / S[r]!;
      let acc = 0;
      for (let c = 0; c < C; c++) {
        if (gx) gx[r * C + c]! += g[r * C + c]! * inv;
        acc += g[r * C + c]! * out[r * C + c]!;
      }
      if (gs) gs[r]! -= acc * inv; // d(x/s)/ds = −x/s² = −out/s
    }
  });
}

/** SiLU (swish): x·σ(x), elementwise. */
export function silu(x: Tensor): Tensor {
  const X = x.data;
  const out = new Float32Array(X.length);
  for (let i = 0; i < X.length; i++) out[i] = X[i]! / (1 + Math.exp(-X[i]!));
  return record("silu", new Tensor(out, x.shape), [x], (g) => {
    const gx = gradOf(x);
    for (let i = 0; i < X.length; i++) {
      const s = 1 / (1 + Math.exp(-X[i]!));
      gx[i]! += g[i]! * s * (1 + X[i]! * (1 - s));
    }
  });
}

/** SiLU-gated product silu(gate)·up, elementwise (a Llama MLP's hook_post before b_in), in one pass. */
export function siluMul(gate: Tensor, up: Tensor): Tensor {
  if (gate.size !== up.size || gate.shape.some((d, i) => d !== up.shape[i])) throw new ShapeError(`siluMul: gate ${shapeStr(gate.shape)} and up ${shapeStr(up.shape)} differ`);
  const G = gate.data;
  const U = up.data;
  const out = new Float32Array(G.length);
  for (let i = 0; i < G.length; i++) out[i] = (G[i]! / (1 + Math.exp(-G[i]!))) * U[i]!;
  return record("siluMul", new Tensor(out, gate.shape), [gate, up], (g) => {
    const gg = gate.requiresGrad ? gradOf(gate) : null;
    const gu = up.requiresGrad ? gradOf(up) : null;
    for (let i = 0; i < G.length; i++) {
      const x = G[i]!;
      const s = 1 / (1 + Math.exp(-x));
      if (gg) gg[i]! += g[i]! * U[i]! * s * (1 + x * (1 - s));
      if (gu) gu[i]! += g[i]! * x * s;
    }
  });
}

/**
 * erf(x) to about 1e-15 in float64: the Maclaurin series for |x| < 2.5, the Laplace continued
 * fraction of erfc beyond (JavaScript has no Math.erf).
 */
export function erf(x: number): number {
  const a = Math.abs(x);
  if (a < 2.5) {
    let term = a;
    let sum = a;
    const x2 = a * a;
    for (let n = 1; n < 200; n++) {
      term *= -x2 / n;
      const add = term / (2 * n + 1);
      sum += add;
      if (Math.abs(add) < 1e-17 * Math.abs(sum)) break;
    }
    return Math.sign(x) * (2 / Math.sqrt(Math.PI)) * sum;
  }
  // erfc(a) = exp(−a²)/√π · 1/(a + (1/2)/(a + 1/(a + (3/2)/(a + 2/(a + …)))))
  let f = a;
  for (let k = 60; k >= 1; k--) f = a + k / 2 / f;
  const erfc = Math.exp(-a * a) / Math.sqrt(Math.PI) / f;
  return Math.sign(x) * (1 - erfc);
}

/** Exact GELU, x·Φ(x) = 0.5·x·(1 + erf(x/√2)) (PyTorch's default, GPT-NeoX's "gelu"). */
export function geluExact(x: Tensor): Tensor {
  const X = x.data;
  const out = new Float32Array(X.length);
  for (let i = 0; i < X.length; i++) out[i] = 0.5 * X[i]! * (1 + erf(X[i]! / Math.SQRT2));
  return record("geluExact", new Tensor(out, x.shape), [x], (g) => {
    const gx = gradOf(x);
    const k = 1 / Math.sqrt(2 * Math.PI);
    for (let i = 0; i < X.length; i++) {
      const v = X[i]!;
      gx[i]! += g[i]! * (0.5 * (1 + erf(v / Math.SQRT2)) + v * k * Math.exp(-0.5 * v * v));
    }
  });
}

/**
 * cos and sin of the rotary angles [positions, rotaryDim/2] for positions 0..n-1: angle(p, i) =
 * p / base^(2i/rotaryDim), computed in float64 (as Hugging Face's inv_freq, then rounded once).
 */
export class RotaryTable {
  readonly rotaryDim: number;
  readonly base: number;
  private cos = new Float32Array(0);
  private sin = new Float32Array(0);
  private n = 0;

  constructor(rotaryDim: number, base: number) {
    this.rotaryDim = rotaryDim;
    this.base = base;
  }

  /** Makes sure positions 0..n-1 are in the table (grown by doubling; a long context costs nothing until used). */
  ensure(n: number): void {
    if (n <= this.n) return;
    const cap = Math.max(n, 2 * this.n, 64);
    const half = this.rotaryDim / 2;
    const cos = new Float32Array(cap * half);
    const sin = new Float32Array(cap * half);
    for (let i = 0; i < half; i++) {
      const invFreq = 1 / this.base ** ((2 * i) / this.rotaryDim);
      for (let p = 0; p < cap; p++) {
        cos[p * half + i] = Math.cos(p * invFreq);
        sin[p * half + i] = Math.sin(p * invFreq);
      }
    }
    this.cos = cos;
    this.sin = sin;
    this.n = cap;
  }

  cosAt(p: number, i: number): number { return this.cos[p * (this.rotaryDim / 2) + i]!; }
  sinAt(p: number, i: number): number { return this.sin[p * (this.rotaryDim / 2) + i]!; }
}

/**
 * Rotary position embedding of x [B, T, H, Dh] (queries or keys): for each row (b, t) at position
 * positions[b·T + t], the first rotaryDim dimensions of every head are rotated in rotate-half pairs
 * (i, i + rotaryDim/2) by angle(p, i); the rest pass through. Linear, so the backward is the inverse rotation.
 */
export function rotary(x: Tensor, positions: Int32Array, table: RotaryTable): Tensor {
  if (x.ndim !== 4) throw new ShapeError(`rotary: expected [batch, pos, head, d_head], got ${shapeStr(x.shape)}`);
  const [B, T, H, Dh] = x.shape as [number, number, number, number];
  const R = table.rotaryDim;
  const half = R / 2;
  if (R > Dh) throw new ShapeError(`rotary: rotary_dim ${R} exceeds d_head ${Dh}`);
  if (positions.length !== B * T) throw new ShapeError(`rotary: ${positions.length} positions for ${B}·${T} rows`);
  let maxPos = 0;
  for (let i = 0; i < positions.length; i++) maxPos = Math.max(maxPos, positions[i]!);
  table.ensure(maxPos + 1);
  const X = x.data;
  const out = X.slice();
  const rotate = (src: Float32Array, dst: Float32Array, sign: number): void => {
    for (let r = 0; r < B * T; r++) {
      const p = positions[r]!;
      for (let h = 0; h < H; h++) {
        const o = (r * H + h) * Dh;
        for (let i = 0; i < half; i++) {
          const c = table.cosAt(p, i);
          const s = sign * table.sinAt(p, i);
          const a = src[o + i]!;
          const b = src[o + i + half]!;
          dst[o + i] = a * c - b * s;
          dst[o + i + half] = b * c + a * s;
        }
      }
    }
  };
  rotate(X, out, 1);
  return record("rotary", new Tensor(out, x.shape), [x], (g) => {
    const gx = gradOf(x);
    const back = g.slice();
    rotate(g, back, -1);
    for (let i = 0; i < back.length; i++) gx[i]! += back[i]!;
  });
}
