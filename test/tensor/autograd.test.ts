/**
 * The autograd of src/tensor/tensor.ts: accumulation, graph shapes (reuse, diamonds), grad mode,
 * retained and freed gradients, repeated backward, deep graphs, and the NaN and shape errors.
 * Expected gradients are worked by hand.
 */
import { describe, it, before, afterEach } from "node:test";
import assert from "node:assert/strict";
import {
  Tensor, tensor, scalar, zeros, ones, full, availableBackends, setBackend,
  backward, noGrad, withGrad, isGradEnabled, setNanCheck, NanError, ShapeError,
  add, mul, sub, div, scale, addScalar, square, exp, log, sqrt, sum, mean, matmul, reshape, concat,
  softmax, attnScores, causalAttention,
} from "../../src/tensor/index.ts";
import { assertClose, assertExact } from "./gradcheck.ts";

const TOL = { atol: 1e-6, rtol: 1e-6 };

for (const backend of availableBackends()) {
  describe(`backend ${backend.name}`, () => {
    before(() => setBackend(backend.name));
    afterEach(() => setNanCheck(false));

    describe("accumulation and graph shapes", () => {
      it("a tensor used twice accumulates both contributions: d(Σ x·x)/dx = 2x", () => {
        const x = tensor([1, -2, 3.5], [3], true);
        backward(sum(mul(x, x)));
        assertExact("dx", x.grad!, [2, -4, 7]);
      });

      it("a diamond x → (u = 2x, v = x²) → w = u + v → Σ w·u gives 8x + 6x²", () => {
        const x = tensor([0.5, -1, 2], [3], true);
        const u = scale(x, 2);
        const v = square(x);
        const w = add(u, v);
        backward(sum(mul(w, u))); // Σ (2x + x²)·2x = Σ 4x² + 2x³
        assertClose("dx", x.grad!, [0.5, -1, 2].map((a) => 8 * a + 6 * a * a), TOL);
      });

      it("a matmul diamond: Σ (x·W)·(x·W) with x used on both sides", () => {
        const x = tensor([1, 2, 3, 4], [2, 2], true);
        const W = tensor([1, 0, 0, 1], [2, 2], true); // identity: loss = Σ x², dx = 2x, dW = 2xᵀx
        const y = matmul(x, W);
        backward(sum(mul(y, y)));
        assertClose("dx", x.grad!, [2, 4, 6, 8], TOL);
        assertClose("dW", W.grad!, [2 * (1 + 9), 2 * (2 + 12), 2 * (2 + 12), 2 * (4 + 16)], TOL);
      });

      it("gradients passed on unchanged (reshape, add) are adopted by at most one input, never shared", () => {
        const c = tensor([1, 2, 3, 4, 5, 6], [6]);
        const x = tensor([0, 0, 0, 0, 0, 0], [2, 3], true);
        const y = reshape(x, [6]);
        backward(sum(mul(add(y, y), c))); // d/dx = 2c
        assertExact("dx of add(y, y), y = reshape(x)", x.grad!, [2, 4, 6, 8, 10, 12]);
        const a = tensor([1, 1, 1, 1, 1, 1], [6], true);
        const b = tensor([2, 2, 2, 2, 2, 2], [6], true);
        backward(sum(mul(add(a, b), c)));
        assert.notEqual(a.grad, b.grad, "a and b share one gradient buffer");
        a.grad![0] = 100;
        assertExact("db after writing into da", b.grad!, [1, 2, 3, 4, 5, 6]);
        const d = tensor([3, 3, 3, 3, 3, 3], [6], true);
        backward(sum(mul(sub(d, d), c)));
        assertExact("d(d − d)/dd", d.grad!, [0, 0, 0, 0, 0, 0]);
      });

      it("pooled gradient buffers (≥ 4096 elements) give the same gradients on every pass, and a retained gradient keeps its own buffer", () => {
        const n = 5000;
        const xs = Float32Array.from({ length: n }, (_, i) => Math.sin(i));
        const ws = Float32Array.from({ length: n }, (_, i) => Math.cos(i));
        const x = new Tensor(xs.slice(), [50, 100], true);
        const w = new Tensor(ws.slice(), [n], true);
        let kept: Tensor | null = null;
        const pass = (): void => {
          const h = mul(reshape(x, [n]), w); //    x ⊙ w
          const y = add(h, square(h)).retainGrad(); // h + h²
          kept = y;
          backward(sum(mul(y, reshape(x, [n])))); // Σ (h + h²)·x
        };
        pass();
        const dx1 = x.grad!.slice();
        const dw1 = w.grad!.slice();
        // by hand: L = Σ x·(xw + x²w²): dL/dx = 2xw + 3x²w², dL/dw = x² + 2x³w; dL/dy = x
        assertClose("dx", dx1, Array.from(xs, (v, i) => 2 * v * ws[i]! + 3 * v * v * ws[i]! * ws[i]!), TOL);
        assertClose("dw", dw1, Array.from(xs, (v, i) => v * v + 2 * v * v * v * ws[i]!), TOL);
        assertExact("retained dy", kept!.grad!, xs);
        x.grad = null;
        w.grad = null;
        pass(); // the same graph again, now from freshly dropped gradients
        assertExact("dx on a second pass", x.grad!, dx1);
        assertExact("dw on a second pass", w.grad!, dw1);
        assertExact("retained dy on a second pass", kept!.grad!, xs);
        assert.notEqual(x.grad, w.grad);
        assert.notEqual(kept!.grad, x.grad);
      });

      it("a leaf without requiresGrad gets no gradient, and ops on such leaves record nothing", () => {
        const x = tensor([1, 2], [2], true);
        const c = tensor([3, 4], [2]);
        const y = mul(x, c);
        backward(sum(y));
        assert.equal(c.grad, null);
        assertExact("dx", x.grad!, [3, 4]);
        const z = add(c, c);
        assert.equal(z.node, null);
        assert.equal(z.requiresGrad, false);
      });

      it("detach() stops the gradient", () => {
        const x = tensor([2, 3], [2], true);
        backward(sum(mul(x, x.detach()))); // d(x·stop(x))/dx = stop(x)
        assertExact("dx", x.grad!, [2, 3]);
      });

      it("the records name their op and inputs", () => {
        const x = tensor([1, 2], [2], true);
        const y = exp(x);
        assert.equal(y.node?.op, "exp");
        assert.equal(y.node?.inputs[0], x);
        assert.equal(String(y), "Tensor[2] (exp)");
      });
    });

    describe("grad mode", () => {
      it("noGrad records nothing: node null, requiresGrad false", () => {
        const x = tensor([1, 2], [2], true);
        const y = noGrad(() => mul(x, x));
        assert.equal(y.node, null);
        assert.equal(y.requiresGrad, false);
        assert.throws(() => backward(sum(y)), /backward: .* does not require a gradient/);
        assert.equal(isGradEnabled(), true);
      });

      it("noGrad restores the mode after a throw, and nests with withGrad", () => {
        assert.throws(() => noGrad(() => {
          assert.equal(isGradEnabled(), false);
          throw new Error("boom");
        }), /boom/);
        assert.equal(isGradEnabled(), true);
        const x = tensor([3], [1], true);
        noGrad(() => {
          const inner = withGrad(() => mul(x, x));
          assert.equal(inner.node?.op, "mul");
          assert.equal(isGradEnabled(), false);
          assert.throws(() => withGrad(() => { throw new Error("inner"); }), /inner/);
          assert.equal(isGradEnabled(), false);
        });
        assert.equal(isGradEnabled(), true);
        assert.notEqual(mul(x, x).node, null);
      });
    });

    describe("retained and freed gradients", () => {
      it("retainGrad keeps an intermediate's gradient while other intermediates are freed", () => {
        const x = tensor([0.5, -1], [2], true);
        const y = scale(x, 2).retainGrad();
        const z = exp(y);
        const loss = sum(z);
        backward(loss);
        assertClose("dy", y.grad!, [Math.exp(1), Math.exp(-2)], TOL);
        assert.equal(z.grad, null, "z's gradient should be freed");
        assert.equal(loss.grad, null, "the root's gradient should be freed");
        assertClose("dx", x.grad!, [2 * Math.exp(1), 2 * Math.exp(-2)], TOL);
      });

      it("backward twice on the same graph accumulates into the leaves", () => {
        const x = tensor([1, 2, 3], [3], true);
        const loss = sum(mul(x, x));
        backward(loss);
        backward(loss);
        assertExact("dx", x.grad!, [4, 8, 12]);
      });

      it("backward twice with a retained intermediate: leaves get 2× one pass, the retained grad 2× (as PyTorch)", () => {
        // Each pass must propagate only its own gradient: a retained grad left over from the first pass
        // must not flow down again in the second.
        const x = tensor([1, 2, 3], [3], true);
        const y = scale(x, 2).retainGrad(); // dy = 1, dx = 2 per pass
        const loss = sum(y);
        backward(loss);
        backward(loss);
        assertExact("dy after two passes", y.grad!, [2, 2, 2]);
        assertExact("dx after two passes", x.grad!, [4, 4, 4]);
      });

      it("a leaf root accumulates gradRoot into its own grad", () => {
        const x = tensor([1, 2], [2], true);
        backward(x, Float32Array.of(3, 4));
        assertExact("dx", x.grad!, [3, 4]);
      });

      it("backward on a non-scalar without gradRoot throws a clear error; a wrong-sized gradRoot too", () => {
        const x = tensor([1, 2, 3], [3], true);
        const y = mul(x, x);
        assert.throws(() => backward(y), (e: Error) => {
          assert.ok(e instanceof ShapeError);
          assert.match(e.message, /backward: root has shape \[3\]; pass gradRoot for a non-scalar root/);
          return true;
        });
        assert.throws(() => backward(y, new Float32Array(2)), /backward: gradRoot has 2 elements, root has shape \[3\]/);
        backward(y, Float32Array.of(1, 1, 1));
        assertExact("dx", x.grad!, [2, 4, 6]);
      });

      it("a deep chain of 20 000 ops does not overflow the stack", () => {
        const x = tensor([0.5, 1], [2], true);
        let y: Tensor = x;
        for (let i = 0; i < 20000; i++) y = i % 2 === 0 ? addScalar(y, 1e-4) : scale(y, 1);
        backward(sum(y));
        assertExact("dx", x.grad!, [1, 1]);
      });

      it("a wide fan-in (concat of 5 000 tensors) and a long reshape chain", () => {
        const parts = Array.from({ length: 5000 }, (_, i) => tensor([i], [1], true));
        const c = concat(parts, 0);
        backward(sum(mul(c, c)));
        assert.equal(parts[4999]!.grad![0], 2 * 4999);
        let r: Tensor = tensor([1, 2, 3, 4, 5, 6], [6], true);
        const leaf = r;
        for (let i = 0; i < 20000; i++) r = reshape(r, i % 2 === 0 ? [2, 3] : [6]);
        backward(sum(r));
        assertExact("d leaf", leaf.grad!, [1, 1, 1, 1, 1, 1]);
      });
    });

    describe("errors", () => {
      it("the NaN check names the op that produced the non-finite value", () => {
        setNanCheck(true);
        const x = tensor([1, -1], [2], true);
        assert.throws(() => log(x), (e: Error) => {
          assert.ok(e instanceof NanError);
          assert.match(e.message, /^log: produced NaN at flat index 1 of output \[2\] \(inputs \[2\]\)/);
          return true;
        });
        assert.throws(() => div(ones([1]), zeros([1])), /^NanError: div: produced Infinity at flat index 0 of output \[1\] \(inputs \[1\], \[1\]\)/);
      });

      it("the NaN check names the op whose backward produced a non-finite gradient", () => {
        setNanCheck(true);
        const x = tensor([0, 4], [2], true);
        const y = sqrt(x); // forward fine, d sqrt/dx at 0 is Infinity
        assert.throws(() => backward(sum(y)), /^NanError: backward of sqrt: produced a non-finite gradient for input \[2\]/);
      });

      it("the NaN check allows -Infinity in masked attention scores and the patterns made from them", () => {
        setNanCheck(true);
        const q = tensor(Float32Array.from({ length: 2 * 3 * 1 * 2 }, (_, i) => Math.sin(i)), [2, 3, 1, 2], true);
        const mask = Uint8Array.of(0, 1, 1, 1, 1, 1); // batch 0 row 0 sees only a padded key: all masked
        const s = attnScores(q, q, mask);
        const p = softmax(s);
        backward(sum(mul(p, p)));
        assert.ok(q.grad!.every(Number.isFinite));
        const z = causalAttention(q, q, q, mask);
        assert.ok(z.data.every(Number.isFinite));
      });

      it("the NaN check is off by default: log of a negative is NaN, not an error", () => {
        assert.ok(Number.isNaN(log(tensor([-1])).data[0]!));
      });

      it("shape errors name the op and both shapes", () => {
        assert.throws(() => sub(full([2, 3], 1), full([2], 1)), /^ShapeError: sub: shapes \[2, 3\] and \[2\] cannot be broadcast together$/);
        assert.throws(() => matmul(zeros([3, 4]), zeros([5, 6])), /^ShapeError: matmul: cannot multiply \[3, 4\] by \[5, 6\]/);
        assert.throws(() => new Tensor(new Float32Array(5), [2, 3]), /^ShapeError: Tensor: data has 5 elements but shape \[2, 3\] needs 6$/);
        assert.throws(() => scalar(1).param() && tensor([1, 2]).item(), /item\(\): tensor has shape \[2\], not one element/);
        assert.throws(() => mean(zeros([2, 2]), 5), /^ShapeError: mean: axis 5 is out of range for shape \[2, 2\]$/);
      });
    });
  });
}
