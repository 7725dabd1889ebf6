/**
 * src/tensor/ops/attention.ts: attnScores, attnApply and the fused causalAttention against a float64
 * reference with causal and key-padding masks (gradients by central differences), the fused op
 * against the two-op form (to float32 rounding), and the masking guarantees, on every available backend.
 * The fused kernels themselves: attention-kernel.test.ts.
 */
import { describe, it, before } from "node:test";
import assert from "node:assert/strict";
import {
  Tensor, tensor, availableBackends, setBackend, backward, attnScores, attnApply, causalAttention, softmax,
} from "../../src/tensor/index.ts";
import { mulberry32 } from "../helpers/rng.ts";
import {
  gradcheck, assertExact, assertClose, randArray, refScores, refApply, refAttention, attends, numelOf, type AttnDims, type Rand,
} from "./gradcheck.ts";

interface AttnCase {
  label: string;
  d: AttnDims;
  mask: Uint8Array | null;
}

/** Batch 0 right-padded (last two keys), batch 1 left-padded (first two: its rows 0 and 1 see no key). */
function paddingMask(B: number, T: number): Uint8Array {
  const m = new Uint8Array(B * T).fill(1);
  for (let t = 0; t < T; t++) {
    if (t >= T - 2) m[t] = 0;
    if (B > 1 && t < 2) m[T + t] = 0;
  }
  return m;
}

const CASES: AttnCase[] = [
  { label: "B2 T5 H3 Dh4, no mask", d: { B: 2, T: 5, H: 3, Dh: 4 }, mask: null },
  { label: "B2 T5 H3 Dh4, right and left padding", d: { B: 2, T: 5, H: 3, Dh: 4 }, mask: paddingMask(2, 5) },
  { label: "B1 T1 H1 Dh1", d: { B: 1, T: 1, H: 1, Dh: 1 }, mask: null },
  { label: "B3 T7 H2 Dh3, padding", d: { B: 3, T: 7, H: 2, Dh: 3 }, mask: paddingMask(3, 7) },
  { label: "B1 T9 H1 Dh8, every key but the first padded", d: { B: 1, T: 9, H: 1, Dh: 8 }, mask: Uint8Array.from({ length: 9 }, (_, i) => (i === 0 ? 1 : 0)) },
];

const shapeOf = (d: AttnDims): number[] => [d.B, d.T, d.H, d.Dh];

function qkv(rng: Rand, d: AttnDims): [Float32Array, Float32Array, Float32Array] {
  const n = numelOf(shapeOf(d));
  return [randArray(rng, n), randArray(rng, n), randArray(rng, n)];
}

/** Fresh leaves q, k, v (all requiring gradients) from the given data. */
function leaves(d: AttnDims, data: Float32Array[]): Tensor[] {
  return data.map((x) => tensor(x.slice(), shapeOf(d), true));
}

for (const backend of availableBackends()) {
  describe(`backend ${backend.name}`, () => {
    before(() => setBackend(backend.name));

    describe("gradient checks against the float64 reference", () => {
      for (const c of CASES) {
        const qShape = shapeOf(c.d);
        const { B, T, H } = c.d;
        it(`attnScores ${c.label}`, () => {
          const rng = mulberry32(301 + T);
          const [q, k] = qkv(rng, c.d);
          gradcheck({
            name: `attnScores ${c.label}`,
            inputs: [{ name: "q", shape: qShape, data: q }, { name: "k", shape: qShape, data: k }],
            op: ([q, k]) => attnScores(q!, k!, c.mask),
            ref: ([q, k]) => refScores(q!, k!, c.d, c.mask),
            outShape: [B, H, T, T],
          });
        });
        it(`attnApply ${c.label}`, () => {
          const rng = mulberry32(302 + T);
          const pShape = [B, H, T, T];
          gradcheck({
            name: `attnApply ${c.label}`,
            inputs: [{ name: "pattern", shape: pShape, data: randArray(rng, numelOf(pShape)) }, { name: "v", shape: qShape, data: randArray(rng, numelOf(qShape)) }],
            op: ([p, v]) => attnApply(p!, v!),
            ref: ([p, v]) => refApply(p!, v!, c.d),
            outShape: qShape,
          });
        });
        it(`causalAttention ${c.label}`, () => {
          const rng = mulberry32(303 + T);
          const [q, k, v] = qkv(rng, c.d);
          gradcheck({
            name: `causalAttention ${c.label}`,
            inputs: [{ name: "q", shape: qShape, data: q }, { name: "k", shape: qShape, data: k }, { name: "v", shape: qShape, data: v }],
            op: ([q, k, v]) => causalAttention(q!, k!, v!, c.mask),
            ref: ([q, k, v]) => refAttention(q!, k!, v!, c.d, c.mask),
            outShape: qShape,
          });
        });
        it(`attnScores → softmax → attnApply ${c.label}`, () => {
          const rng = mulberry32(304 + T);
          const [q, k, v] = qkv(rng, c.d);
          gradcheck({
            name: `two-op attention ${c.label}`,
            inputs: [{ name: "q", shape: qShape, data: q }, { name: "k", shape: qShape, data: k }, { name: "v", shape: qShape, data: v }],
            op: ([q, k, v]) => attnApply(softmax(attnScores(q!, k!, c.mask)), v!),
            ref: ([q, k, v]) => refAttention(q!, k!, v!, c.d, c.mask),
          });
        });
      }

      it("self-attention with one tensor as q, k and v (gradients from three roles accumulate)", () => {
        const c = CASES[1]!;
        const qShape = shapeOf(c.d);
        const rng = mulberry32(306);
        gradcheck({
          name: "causalAttention(x, x, x)",
          inputs: [{ name: "x", shape: qShape, data: randArray(rng, numelOf(qShape)) }],
          op: ([x]) => causalAttention(x!, x!, x!, c.mask),
          ref: ([x]) => refAttention(x!, x!, x!, c.d, c.mask),
        });
        gradcheck({
          name: "attnApply(softmax(attnScores(x, x)), x)",
          inputs: [{ name: "x", shape: qShape, data: randArray(rng, numelOf(qShape)) }],
          op: ([x]) => attnApply(softmax(attnScores(x!, x!, c.mask)), x!),
          ref: ([x]) => refAttention(x!, x!, x!, c.d, c.mask),
        });
      });

      it("causalAttention with only some inputs requiring gradients", () => {
        const c = CASES[1]!;
        const qShape = shapeOf(c.d);
        for (const which of [[false, false, true], [true, false, false], [false, true, false]]) {
          const rng = mulberry32(305);
          const [q, k, v] = qkv(rng, c.d);
          gradcheck({
            name: `causalAttention requiresGrad q=${which[0]} k=${which[1]} v=${which[2]}`,
            inputs: [
              { name: "q", shape: qShape, data: q, requiresGrad: which[0]! },
              { name: "k", shape: qShape, data: k, requiresGrad: which[1]! },
              { name: "v", shape: qShape, data: v, requiresGrad: which[2]! },
            ],
            op: ([q, k, v]) => causalAttention(q!, k!, v!, c.mask),
            ref: ([q, k, v]) => refAttention(q!, k!, v!, c.d, c.mask),
          });
        }
      });
    });

    // The fused op runs the backend's causalAttention kernels (only keys j ≤ i, its own summation
    // order; natively with fused multiply-adds), the two-op form batched sgemms over the full square:
    // the same sums in other orders, so they agree to float32 rounding, not bit for bit.
    describe("fused vs two-op", () => {
      const tol = { atol: 1e-6, rtol: 1e-6 };
      for (const c of CASES) {
        it(`agree to float32 rounding (1e-6), forward and every gradient: ${c.label}`, () => {
          const rng = mulberry32(401 + c.d.T);
          const data = qkv(rng, c.d);
          const R = randArray(rng, numelOf(shapeOf(c.d)));
          const [q1, k1, v1] = leaves(c.d, data);
          const [q2, k2, v2] = leaves(c.d, data);
          const fused = causalAttention(q1!, k1!, v1!, c.mask);
          const twoOp = attnApply(softmax(attnScores(q2!, k2!, c.mask)), v2!);
          assertClose("z", fused.data, twoOp.data, tol, fused.shape);
          backward(fused, R);
          backward(twoOp, R);
          assertClose("dq", q1!.grad!, q2!.grad!, tol, q1!.shape);
          assertClose("dk", k1!.grad!, k2!.grad!, tol, k1!.shape);
          assertClose("dv", v1!.grad!, v2!.grad!, tol, v1!.shape);
        });
      }
    });

    describe("masking", () => {
      const d: AttnDims = { B: 2, T: 6, H: 2, Dh: 3 };
      const mask = paddingMask(d.B, d.T); // batch 0: keys 4, 5 padded; batch 1: keys 0, 1 padded
      const { B, T, H } = d;

      it("a padded key gets exactly zero attention weight; a future key too; live rows sum to 1", () => {
        const [q, k] = leaves(d, qkv(mulberry32(501), d));
        const p = softmax(attnScores(q!, k!, mask)).data; // [B, H, T, T]
        for (let b = 0; b < B; b++) {
          for (let h = 0; h < H; h++) {
            for (let i = 0; i < T; i++) {
              let s = 0;
              let live = false;
              for (let j = 0; j < T; j++) {
                const w = p[((b * H + h) * T + i) * T + j]!;
                if (attends(b, i, j, T, mask)) live = true;
                else if (w !== 0) assert.fail(`weight of masked key: b ${b} h ${h} query ${i} key ${j} = ${w}`);
                s += w;
              }
              if (live && !(Math.abs(s - 1) < 1e-6)) assert.fail(`row b ${b} h ${h} query ${i} sums to ${s}`);
            }
          }
        }
      });

      it("an all-masked row gives zeros, not NaN, in the pattern, the output and the gradients", () => {
        const [q, k, v] = leaves(d, qkv(mulberry32(502), d));
        const z = causalAttention(q!, k!, v!, mask);
        assert.ok(z.data.every(Number.isFinite), "causalAttention output has a non-finite value");
        // Batch 1, queries 0 and 1 see only padded keys.
        for (const i of [0, 1]) {
          const row = z.data.subarray((1 * T + i) * H * d.Dh, (1 * T + i + 1) * H * d.Dh);
          assertExact(`z[1, ${i}]`, row, new Float32Array(row.length));
        }
        const p = softmax(attnScores(q!, k!, mask));
        assert.ok(p.data.every(Number.isFinite), "pattern has a non-finite value");
        backward(z, randArray(mulberry32(503), z.size));
        for (const t of [q!, k!, v!]) assert.ok(t.grad!.every(Number.isFinite), "non-finite gradient");
        // No query attends anything from those rows, so their q gradient is exactly zero.
        for (const i of [0, 1]) {
          const gq = q!.grad!.subarray((1 * T + i) * H * d.Dh, (1 * T + i + 1) * H * d.Dh);
          assertExact(`dq[1, ${i}]`, gq, new Float32Array(gq.length));
        }
      });

      it("changing the inputs at padded positions does not change the outputs of non-padded rows", () => {
        const rng = mulberry32(504);
        const data = qkv(rng, d);
        const changed = data.map((x) => {
          const y = x.slice();
          const row = H * d.Dh;
          for (let b = 0; b < B; b++) for (let t = 0; t < T; t++) if (mask[b * T + t] === 0) for (let e = 0; e < row; e++) y[(b * T + t) * row + e] = 100 * randArray(rng, 1)[0]!;
          return y;
        });
        for (const form of ["fused", "two-op"] as const) {
          const run = (xs: Float32Array[]): Tensor => {
            const [q, k, v] = leaves(d, xs);
            return form === "fused" ? causalAttention(q!, k!, v!, mask) : attnApply(softmax(attnScores(q!, k!, mask)), v!);
          };
          const z0 = run(data);
          const z1 = run(changed);
          const row = H * d.Dh;
          for (let b = 0; b < B; b++) {
            for (let t = 0; t < T; t++) {
              if (mask[b * T + t] === 0) continue;
              const o = (b * T + t) * row;
              assertExact(`${form}: z[${b}, ${t}] after changing padded inputs`, z1.data.subarray(o, o + row), z0.data.subarray(o, o + row));
            }
          }
        }
      });

      it("shape errors name the op and the shapes", () => {
        const q = tensor(new Float32Array(2 * 3 * 1 * 4), [2, 3, 1, 4]);
        const k = tensor(new Float32Array(2 * 3 * 2 * 2), [2, 3, 2, 2]);
        assert.throws(() => attnScores(q, k), /^ShapeError: attnScores: q \[2, 3, 1, 4\] and \[2, 3, 2, 2\] must have the same shape/);
        assert.throws(() => causalAttention(q, q, q, new Uint8Array(5)), /causalAttention: keyMask has 5 entries, expected batch·pos = 6/);
        assert.throws(() => causalAttention(tensor(new Float32Array(6), [2, 3]), q, q), /causalAttention: q must be \[batch, pos, head, d_head\], got \[2, 3\]/);
        assert.throws(() => attnApply(tensor(new Float32Array(18), [2, 1, 3, 3]), k), /attnApply: pattern \[2, 1, 3, 3\] does not match v \[2, 3, 2, 2\], expected \[2, 2, 3, 3\]/);
      });
    });
  });
}
