/**
 * Causal self-attention, in the [batch, pos, head, d_head] layout TransformerLens uses for q, k, v and z.
 *
 *   attnScores(q, k, keyMask)   q, k [B, T, H, Dh] → scores [B, H, Tq, Tk] = q·kᵀ/√Dh, masked to -∞
 *   attnApply(pattern, v)       pattern [B, H, Tq, Tk], v [B, T, H, Dh] → z [B, T, H, Dh]
 *   causalAttention(q, k, v, keyMask)  the same three steps (scores → softmax → z) as one op
 *
 * The two-op form exists so that hook_attn_scores and hook_pattern can be read and replaced: per (b, h)
 * its products are strided sub-matrices (row stride H·Dh), done as one batched sgemm per b over the
 * full T×T square. The fused op, used when nobody is hooking them, is one backend kernel forward
 * (causalAttentionForward: scores, mask, softmax and z per (b, h), only keys j ≤ i, split over threads
 * natively) and one backward (causalAttentionBackward); it keeps only the pattern, and only when a backward
 * may follow (under noGrad or without inputs requiring grad it keeps nothing).
 * The two forms agree to float32 rounding, not bit for bit (their sums run in different orders).
 *
 * keyMask (optional) is [B, T] with 1 for real tokens and 0 for padding: padded keys get -∞.
 */
import { Tensor, ShapeError, record, gradOf, shapeStr, emptyF32, isGradEnabled } from "../tensor.ts";
import { getBackend } from "../backend/index.ts";

interface Dims {
  B: number;
  T: number;
  H: number;
  Dh: number;
}

function qkvDims(op: string, q: Tensor, others: Tensor[], keyMask: Uint8Array | null): Dims {
  if (q.ndim !== 4) throw new ShapeError(`${op}: q must be [batch, pos, head, d_head], got ${shapeStr(q.shape)}`);
  const [B, T, H, Dh] = q.shape as [number, number, number, number];
  for (const t of others) {
    if (t.ndim !== 4 || t.shape.some((d, i) => d !== q.shape[i])) {
      throw new ShapeError(`${op}: q ${shapeStr(q.shape)} and ${shapeStr(t.shape)} must have the same shape`);
    }
  }
  if (keyMask !== null && keyMask.length !== B * T) throw new ShapeError(`${op}: keyMask has ${keyMask.length} entries, expected batch·pos = ${B * T}`);
  return { B, T, H, Dh };
}

// ---------------------------------------------------------------------------------------------
// Kernels

/** S[b,h] = scale · Q[b,:,h,:] · K[b,:,h,:]ᵀ, then -∞ above the diagonal and on padded keys. */
function scoresForward(Q: Float32Array, K: Float32Array, S: Float32Array, d: Dims, keyMask: Uint8Array | null): void {
  const { B, T, H, Dh } = d;
  const be = getBackend();
  const ld = H * Dh;
  const scale = 1 / Math.sqrt(Dh);
  for (let b = 0; b < B; b++) {
    const off = b * T * ld;
    be.sgemmStridedBatched(false, true, T, T, Dh, scale, Q.subarray(off), ld, Dh, K.subarray(off), ld, Dh, 0, S.subarray(b * H * T * T), T, T * T, H);
  }
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < H; h++) {
      const base = (b * H + h) * T * T;
      for (let i = 0; i < T; i++) {
        const row = base + i * T;
        for (let j = i + 1; j < T; j++) S[row + j] = -Infinity;
        if (keyMask !== null) for (let j = 0; j <= i; j++) if (keyMask[b * T + j] === 0) S[row + j] = -Infinity;
      }
    }
  }
}

/** dQ += scale·dS·K, dK += scale·dSᵀ·Q (dS already zero where masked). */
function scoresBackward(dS: Float32Array, Q: Float32Array, K: Float32Array, dQ: Float32Array | null, dK: Float32Array | null, d: Dims): void {
  const { B, T, H, Dh } = d;
  const be = getBackend();
  const ld = H * Dh;
  const scale = 1 / Math.sqrt(Dh);
  for (let b = 0; b < B; b++) {
    const off = b * T * ld;
    const dSb = dS.subarray(b * H * T * T);
    if (dQ) be.sgemmStridedBatched(false, false, T, Dh, T, scale, dSb, T, T * T, K.subarray(off), ld, Dh, 1, dQ.subarray(off), ld, Dh, H);
    if (dK) be.sgemmStridedBatched(true, false, T, Dh, T, scale, dSb, T, T * T, Q.subarray(off), ld, Dh, 1, dK.subarray(off), ld, Dh, H);
  }
}

/** Z[b,:,h,:] = P[b,h] · V[b,:,h,:]. */
function applyForward(P: Float32Array, V: Float32Array, Z: Float32Array, d: Dims): void {
  const { B, T, H, Dh } = d;
  const be = getBackend();
  const ld = H * Dh;
  for (let b = 0; b < B; b++) {
    const off = b * T * ld;
    be.sgemmStridedBatched(false, false, T, Dh, T, 1, P.subarray(b * H * T * T), T, T * T, V.subarray(off), ld, Dh, 0, Z.subarray(off), ld, Dh, H);
  }
}

/** dP = dZ·Vᵀ (overwrites), dV += Pᵀ·dZ. */
function applyBackward(dZ: Float32Array, P: Float32Array, V: Float32Array, dP: Float32Array | null, dV: Float32Array | null, d: Dims): void {
  const { B, T, H, Dh } = d;
  const be = getBackend();
  const ld = H * Dh;
  for (let b = 0; b < B; b++) {
    const off = b * T * ld;
    const pOff = b * H * T * T;
    if (dP) be.sgemmStridedBatched(false, true, T, T, Dh, 1, dZ.subarray(off), ld, Dh, V.subarray(off), ld, Dh, 0, dP.subarray(pOff), T, T * T, H);
    if (dV) be.sgemmStridedBatched(true, false, T, Dh, T, 1, P.subarray(pOff), T, T * T, dZ.subarray(off), ld, Dh, 1, dV.subarray(off), ld, Dh, H);
  }
}

/** Zeroes gradient entries where the scores were masked (the forward value there is a constant -∞). */
function zeroMasked(dS: Float32Array, S: Float32Array): void {
  for (let i = 0; i < S.length; i++) if (S[i] === -Infinity) dS[i] = 0;
}

// ---------------------------------------------------------------------------------------------
// Ops

export function attnScores(q: Tensor, k: Tensor, keyMask: Uint8Array | null = null): Tensor {
  const d = qkvDims("attnScores", q, [k], keyMask);
  const { B, T, H } = d;
  const S = emptyF32(B * H * T * T); // written in full: the product (beta 0), then the mask
  scoresForward(q.data, k.data, S, d, keyMask);
  return record("attnScores", new Tensor(S, [B, H, T, T]), [q, k], (g) => {
    const dS = g.slice();
    zeroMasked(dS, S);
    scoresBackward(dS, q.data, k.data, q.requiresGrad ? gradOf(q) : null, k.requiresGrad ? gradOf(k) : null, d);
  });
}

export function attnApply(pattern: Tensor, v: Tensor): Tensor {
  const d = qkvDims("attnApply", v, [], null);
  const { B, T, H } = d;
  if (pattern.ndim !== 4 || pattern.shape[0] !== B || pattern.shape[1] !== H || pattern.shape[2] !== T || pattern.shape[3] !== T) {
    throw new ShapeError(`attnApply: pattern ${shapeStr(pattern.shape)} does not match v ${shapeStr(v.shape)}, expected [${B}, ${H}, ${T}, ${T}]`);
  }
  const Z = emptyF32(v.size); // beta-0 products write every entry
  applyForward(pattern.data, v.data, Z, d);
  return record("attnApply", new Tensor(Z, v.shape), [pattern, v], (g) => {
    applyBackward(g, pattern.data, v.data, null, v.requiresGrad ? gradOf(v) : null, d);
    if (pattern.requiresGrad) {
      const dP = emptyF32(pattern.size); // overwritten by applyBackward
      applyBackward(g, pattern.data, v.data, dP, null, d);
      const gp = gradOf(pattern);
      for (let i = 0; i < dP.length; i++) gp[i]! += dP[i]!;
    }
  });
}

/** scores → softmax → z in one op (the backend's fused kernels); keeps only the pattern for the backward pass. */
export function causalAttention(q: Tensor, k: Tensor, v: Tensor, keyMask: Uint8Array | null = null): Tensor {
  const d = qkvDims("causalAttention", q, [k, v], keyMask);
  const { B, T, H, Dh } = d;
  const scale = 1 / Math.sqrt(Dh);
  const be = getBackend();
  // The pattern [B, H, T, T] (written in full, 0 on masked keys) only when a backward may follow.
  const P = isGradEnabled() && (q.requiresGrad || k.requiresGrad || v.requiresGrad) ? emptyF32(B * H * T * T) : null;
  const Z = emptyF32(v.size); // [B, T, H, Dh], written in full
  be.causalAttentionForward(q.data, k.data, v.data, B, T, H, Dh, scale, keyMask, P, Z);
  return record("causalAttention", new Tensor(Z, v.shape), [q, k, v], (g) => {
    if (P === null) throw new Error("causalAttention: backward without the pattern (recorded with gradients off)");
    be.causalAttentionBackward(g, q.data, k.data, v.data, P, B, T, H, Dh, scale,
      q.requiresGrad ? gradOf(q) : null, k.requiresGrad ? gradOf(k) : null, v.requiresGrad ? gradOf(v) : null);
  });
}
