/**
 * unembedCrossEntropy (chunked fused unembedding + cross-entropy) against the float64 reference
 * crossEntropy(x · W + b), in both weight layouts, with a bias, with ignored rows, with chunks that
 * do not divide the rows; it must equal the unfused ops; and its shape errors.
 */
import { describe, it, before } from "node:test";
import assert from "node:assert/strict";
import {
  tensor, availableBackends, setBackend, unembedCrossEntropy, crossEntropy, linear, transpose, backward, ShapeError,
} from "../../src/tensor/index.ts";
import { mulberry32 } from "../helpers/rng.ts";
import { gradcheck, assertClose, randArray, randInts, refCrossEntropy, type GradInput } from "./gradcheck.ts";

/** float64 logits [N, V] = x [N, C] · W (+ b), W stored [C, V] (in_out) or [V, C] (out_in). */
function refLogits(x: Float64Array, W: Float64Array, b: Float64Array | null, N: number, C: number, V: number, layout: "in_out" | "out_in"): Float64Array {
  const out = new Float64Array(N * V);
  for (let n = 0; n < N; n++) {
    for (let v = 0; v < V; v++) {
      let s = b ? b[v]! : 0;
      for (let c = 0; c < C; c++) s += x[n * C + c]! * (layout === "in_out" ? W[c * V + v]! : W[v * C + c]!);
      out[n * V + v] = s;
    }
  }
  return out;
}

const N = 7, C = 5, V = 11;

for (const backend of availableBackends()) {
  describe(`unembedCrossEntropy, backend ${backend.name}`, () => {
    before(() => setBackend(backend.name));

    for (const layout of ["in_out", "out_in"] as const) {
      for (const withBias of [false, true]) {
        for (const chunkRows of [1, 3, 256]) {
          it(`gradcheck: layout ${layout}, bias ${withBias}, chunkRows ${chunkRows}, some rows ignored`, () => {
            const rng = mulberry32(chunkRows * 10 + (withBias ? 1 : 0) + (layout === "in_out" ? 100 : 200));
            const targets = Int32Array.from(randInts(rng, N, V), (t, i) => (i % 4 === 2 ? -100 : t));
            const inputs: GradInput[] = [
              { name: "x", shape: [N, C], data: randArray(rng, N * C) },
              { name: "W", shape: layout === "in_out" ? [C, V] : [V, C], data: randArray(rng, C * V, 0.7) },
            ];
            if (withBias) inputs.push({ name: "b", shape: [V], data: randArray(rng, V, 0.5) });
            gradcheck({
              name: `unembedCrossEntropy ${layout} bias=${withBias} chunk=${chunkRows}`,
              inputs,
              op: ([x, W, b]) => unembedCrossEntropy(x!, W!, targets, { layout, bias: b ?? null, ignoreIndex: -100, chunkRows }),
              ref: ([x, W, b]) => refCrossEntropy(refLogits(x!, W!, b ?? null, N, C, V, layout), V, targets, -100),
              outShape: [],
            });
          });
        }
      }
    }

    it("equals crossEntropy(linear(x, W)) in value and gradients, tied (out_in) layout", () => {
      const rng = mulberry32(9);
      const xd = randArray(rng, N * C), Wd = randArray(rng, V * C); // W [V, C], like a tied W_E
      const targets = randInts(rng, N, V);
      const x1 = tensor(xd.slice(), [N, C], true), W1 = tensor(Wd.slice(), [V, C], true);
      const x2 = tensor(xd.slice(), [N, C], true), W2 = tensor(Wd.slice(), [V, C], true);
      const fused = unembedCrossEntropy(x1, W1, targets, { layout: "out_in", chunkRows: 2 });
      const plain = crossEntropy(linear(x2, transpose(W2, 0, 1), null), targets);
      assertClose("loss", fused.data, plain.data, { atol: 1e-6, rtol: 1e-6 });
      backward(fused);
      backward(plain);
      assertClose("dx", x1.grad!, x2.grad!, { atol: 1e-6, rtol: 1e-5 });
      assertClose("dW", W1.grad!, W2.grad!, { atol: 1e-6, rtol: 1e-5 });
    });

    it("every row ignored: loss 0 and zero gradients", () => {
      const x = tensor(new Float32Array(2 * C).fill(1), [2, C], true);
      const W = tensor(new Float32Array(C * V).fill(0.5), [C, V], true);
      const l = unembedCrossEntropy(x, W, [-1, -1], { ignoreIndex: -1 });
      assert.equal(l.item(), 0);
      backward(l);
      assert.ok(x.grad === null || x.grad.every((v) => v === 0));
    });

    it("bad shapes, targets and options get one clear error", () => {
      const x = tensor(new Float32Array(2 * C), [2, C]);
      const W = tensor(new Float32Array(C * V), [C, V]);
      assert.throws(() => unembedCrossEntropy(tensor(new Float32Array(2 * C), [1, 2, C]), W, [0, 0]), /unembedCrossEntropy: x must be \[N, C\], got \[1, 2, 5\]/);
      assert.throws(() => unembedCrossEntropy(x, tensor(new Float32Array(4 * V), [4, V]), [0, 0]), ShapeError);
      assert.throws(() => unembedCrossEntropy(x, W, [0, 0], { layout: "out_in" }), /W must be \[vocab, 5\] \(layout out_in\) for x \[2, 5\], got \[5, 11\]/);
      assert.throws(() => unembedCrossEntropy(x, W, [0, 0], { bias: tensor(new Float32Array(3), [3]) }), /bias must be \[11\], got \[3\]/);
      assert.throws(() => unembedCrossEntropy(x, W, [0, 11]), /unembedCrossEntropy: target 11 at row 1 is out of range for 11 classes/);
      assert.throws(() => unembedCrossEntropy(x, W, [0]), /unembedCrossEntropy: 1 targets for 2 rows/);
      assert.throws(() => unembedCrossEntropy(x, W, [0, 0], { chunkRows: 0 }), /chunkRows must be a positive integer, got 0/);
    });
  });
}
