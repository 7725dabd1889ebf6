/**
 * The backends' fused causal attention kernels (causalAttentionForward / causalAttentionBackward, used by
 * causalAttention in src/tensor/ops/attention.ts) on a GPT-2-like head size: the native kernel against
 * the js backend's float64 loops (forward, pattern and all three gradients, which are added into), the
 * exact zeros of the pattern (above the diagonal, padded keys, a query that sees no key), z without a
 * pattern to keep, a backward for only some of q, k, v, the same bits with 1, 2 and 3 threads and with the base SIMD build, and the
 * argument errors.
 */
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { availableBackends } from "../../src/tensor/backend/index.ts";
import { jsBackend } from "../../src/tensor/backend/js.ts";
import { loadNativeBackend } from "../../src/tensor/backend/native.ts";
import type { Backend } from "../../src/tensor/backend/types.ts";
import { mulberry32, randn } from "../helpers/rng.ts";
import { assertClose, assertExact } from "./gradcheck.ts";
import { runNativeChild } from "../helpers/native-child.ts";

/** B = 2, T = 37 (not a multiple of 8 or 16), H = 3, Dh = 64: GPT-2's head size. */
const [B, T, H, Dh] = [2, 37, 3, 64];
const scale = 1 / Math.sqrt(Dh);
const N = B * T * H * Dh;
const NP = B * H * T * T;

/** Batch 0: its last five keys padded; batch 1: its first three (its queries 0, 1 and 2 see no key). */
const keyMask = Uint8Array.from({ length: B * T }, (_, i) => (i < T ? (i >= T - 5 ? 0 : 1) : i - T < 3 ? 0 : 1));

function rand(seed: number, n: number, std = 1): Float32Array {
  const rng = mulberry32(seed);
  return Float32Array.from({ length: n }, () => randn(rng) * std);
}

// Scores of a few units before the scale, so the softmax is neither flat nor one-hot.
const Q = rand(1, N, 1.5);
const K = rand(2, N, 1.5);
const V = rand(3, N);
const dZ = rand(4, N);
/** What dQ, dK, dV hold before the backward (it adds into them). */
const G0 = [rand(5, N, 0.1), rand(6, N, 0.1), rand(7, N, 0.1)] as const;

interface Run {
  P: Float32Array;
  Z: Float32Array;
  grads: [Float32Array | null, Float32Array | null, Float32Array | null];
}

function run(be: Backend, mask: Uint8Array | null, want: [boolean, boolean, boolean] = [true, true, true]): Run {
  const P = new Float32Array(NP).fill(NaN); // every entry must be written
  const Z = new Float32Array(N).fill(NaN);
  be.causalAttentionForward(Q, K, V, B, T, H, Dh, scale, mask, P, Z);
  const grads = want.map((w, i) => (w ? G0[i]!.slice() : null)) as Run["grads"];
  be.causalAttentionBackward(dZ, Q, K, V, P, B, T, H, Dh, scale, ...grads);
  return { P, Z, grads };
}

const atP = (i: number): string => {
  const j = i % T, q = Math.floor(i / T) % T, h = Math.floor(i / (T * T)) % H, b = Math.floor(i / (H * T * T));
  return `P[b ${b}, h ${h}, query ${q}, key ${j}]`;
};

for (const be of availableBackends()) {
  describe(`fused attention kernels, backend ${be.name}`, () => {
    it("P is exactly 0 above the diagonal, on padded keys and on queries that see no key; live rows sum to 1; such queries get z = 0", () => {
      const { P, Z } = run(be, keyMask);
      for (let b = 0; b < B; b++) {
        for (let h = 0; h < H; h++) {
          for (let i = 0; i < T; i++) {
            let sum = 0;
            let live = false;
            for (let j = 0; j < T; j++) {
              const w = P[((b * H + h) * T + i) * T + j]!;
              if (j <= i && keyMask[b * T + j] === 1) live = true;
              else if (w !== 0) assert.fail(`${atP(((b * H + h) * T + i) * T + j)} = ${w}, expected exactly 0`);
              sum += w;
            }
            if (live && !(Math.abs(sum - 1) < 1e-5)) assert.fail(`row b ${b} h ${h} query ${i} sums to ${sum}`);
            if (!live) {
              const z = Z.subarray((b * T + i) * H * Dh + h * Dh, (b * T + i) * H * Dh + (h + 1) * Dh);
              assertExact(`z[b ${b}, query ${i}, h ${h}] of a query that sees no key`, z, new Float32Array(Dh));
            }
          }
        }
      }
    });

    it("without a pattern to keep (P null, as under noGrad) z has the same bits", () => {
      for (const mask of [keyMask, null]) {
        const { Z } = run(be, mask);
        const Z2 = new Float32Array(N).fill(NaN);
        be.causalAttentionForward(Q, K, V, B, T, H, Dh, scale, mask, null, Z2);
        assertExact(`z without P, ${mask === null ? "no mask" : "padding"}`, Z2, Z, [B, T, H, Dh]);
      }
    });

    it("a backward for only some of q, k, v gives the same bits as the full one for those, and leaves the others alone", () => {
      const full = run(be, keyMask);
      for (const want of [[true, false, false], [false, true, false], [false, false, true], [true, true, false]] as [boolean, boolean, boolean][]) {
        const part = run(be, keyMask, want);
        for (let g = 0; g < 3; g++) {
          if (want[g]) assertExact(`${["dQ", "dK", "dV"][g]} with only ${want} wanted`, part.grads[g]!, full.grads[g]!);
          else assert.equal(part.grads[g], null);
        }
      }
    });

    it("argument errors name the argument", () => {
      const f = (n: number): Float32Array => new Float32Array(n);
      assert.throws(() => be.causalAttentionForward(f(N), f(N - 1), f(N), B, T, H, Dh, scale, null, f(NP), f(N)), /causalAttentionForward: K has \d+ elements, fewer than B·T·H·Dh = \d+/);
      assert.throws(() => be.causalAttentionForward(f(N), f(N), f(N), B, T, H, Dh, scale, null, f(NP - 1), f(N)), /causalAttentionForward: P has \d+ elements, fewer than B·H·T·T = \d+/);
      assert.throws(() => be.causalAttentionForward(f(N), f(N), f(N), B, T, H, Dh, scale, new Uint8Array(3), f(NP), f(N)), /causalAttentionForward: keyMask has 3 elements, fewer than B·T = 74/);
      assert.throws(() => be.causalAttentionForward(f(N), f(N), f(N), B, 1.5, H, Dh, scale, null, f(NP), f(N)), /causalAttentionForward: T must be an integer in \[0, 2\^31 - 1\], got 1.5/);
      assert.throws(() => be.causalAttentionBackward(f(N), f(N), f(N), f(N), f(NP), B, T, H, Dh, scale, null, f(2), null), /causalAttentionBackward: dK has 2 elements, fewer than B·T·H·Dh = \d+/);
    });
  });
}

describe("fused attention kernels, native against the js backend's float64 loops", () => {
  const loaded = loadNativeBackend();
  const skip = loaded.ok ? false : `no native backend: ${loaded.reason}`;
  it("agree on z, the pattern and dq, dk, dv (added into) at T 37, Dh 64, with and without padding", { skip }, () => {
    if (!loaded.ok) return;
    for (const mask of [keyMask, null]) {
      const nat = run(loaded.backend, mask);
      const ref = run(jsBackend, mask);
      const tag = mask === null ? "no mask" : "padding";
      assertClose(`P, ${tag}`, nat.P, ref.P, { atol: 1e-7, rtol: 1e-5 }, atP);
      assertClose(`z, ${tag}`, nat.Z, ref.Z, { atol: 1e-6, rtol: 1e-5 }, [B, T, H, Dh]);
      for (let g = 0; g < 3; g++) assertClose(`${["dq", "dk", "dv"][g]}, ${tag}`, nat.grads[g]!, ref.grads[g]!, { atol: 1e-6, rtol: 1e-5 }, [B, T, H, Dh]);
    }
  });

  it("give the same bits with 1, 2 and 3 threads (OPENBLAS_NUM_THREADS) and the base build (SELFREPORT_SIMD=base) agrees to float32 rounding", { skip }, async () => {
    if (!loaded.ok) return;
    // B·H = 2·7 = 14 pairs of T 130: enough work to split; prints every output's bits.
    const script = `
      let s = 11;
      const rnd = (n) => Float32Array.from({ length: n }, () => { s = (Math.imul(s, 1664525) + 1013904223) >>> 0; return (s / 2 ** 32 - 0.5) * 4; });
      const [B, T, H, Dh] = [2, 130, 7, 64], n = B * T * H * Dh;
      const Q = rnd(n), K = rnd(n), V = rnd(n), G = rnd(n), P = new Float32Array(B * H * T * T), Z = new Float32Array(n);
      const mask = Uint8Array.from({ length: B * T }, (_, i) => (i % 17 === 3 ? 0 : 1));
      be.causalAttentionForward(Q, K, V, B, T, H, Dh, 0.125, mask, P, Z);
      const dQ = new Float32Array(n), dK = new Float32Array(n), dV = new Float32Array(n);
      be.causalAttentionBackward(G, Q, K, V, P, B, T, H, Dh, 0.125, dQ, dK, dV);
      process.stdout.write(JSON.stringify([P, Z, dQ, dK, dV].map((a) => Array.from(a))));`;
    const outputs = ["1", "2", "3"].map((threads) => runNativeChild(script, { OPENBLAS_NUM_THREADS: threads, SELFREPORT_SIMD: undefined }));
    assert.ok(outputs[1] === outputs[0], "2 threads gave other bits than 1");
    assert.ok(outputs[2] === outputs[0], "3 threads gave other bits than 1");
    const base = JSON.parse(runNativeChild(script, { SELFREPORT_SIMD: "base" })) as number[][];
    const def = JSON.parse(outputs[0]!) as number[][];
    ["P", "z", "dq", "dk", "dv"].forEach((name, i) => assertClose(`base build vs default build: ${name}`, base[i]!, def[i]!, { atol: 1e-6, rtol: 1e-5 }));
  });
});
