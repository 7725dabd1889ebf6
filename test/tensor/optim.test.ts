/**
 * src/tensor/optim.ts against updates worked by hand from the formulas (torch.optim.AdamW / SGD),
 * gradient clipping, the warm-up + cosine schedule, optimizer state round trips and a tiny
 * regression; and src/tensor/random.ts (determinism, moments, permutations).
 */
import { describe, it, before } from "node:test";
import assert from "node:assert/strict";
import {
  Tensor, tensor, availableBackends, setBackend, Rng, fillNormal,
  adamW, sgd, clipGradNorm, warmupCosine, backward, linear, mse, type Optimizer,
} from "../../src/tensor/index.ts";
import { assertClose, assertExact } from "./gradcheck.ts";

/** Sets p.grad to a copy of g (as a backward pass would have left it). */
function setGrad(p: Tensor, g: number[]): void {
  p.grad = Float32Array.from(g);
}

// g1, g2: the gradients of the two hand-worked steps.
const G1 = [0.1, -0.2, 0.3];
const G2 = [-0.5, 0.4, 0.0];

describe("AdamW", () => {
  // lr 0.1, weight decay 0.1, β1 0.9, β2 0.999, eps 1e-8; p0 = [1, -2, 0.5].
  //   m_t = β1·m + (1−β1)·g,  v_t = β2·v + (1−β2)·g²,  m̂ = m_t/(1−β1^t),  v̂ = v_t/(1−β2^t)
  //   p ← p·(1 − lr·wd) − lr·m̂/(√v̂ + eps)
  // Step 1: m̂ = g, v̂ = g², so p1 = 0.99·p0 − 0.1·g/(|g| + 1e-8):
  //   [0.99 − 0.09999999, −1.98 + 0.099999995, 0.495 − 0.0999999967] = [0.89000001, −1.880000005, 0.3950000033]
  // Step 2 (float64 evaluation of the same formulas):
  const P1 = [0.890000009999999, -1.8800000049999996, 0.3950000033333332];
  const P2 = [0.9409354264523341, -1.8978103564960367, 0.3240441810458211];
  // The same with no decay (a parameter in noDecay):
  const P2_NO_DECAY = [0.9598354265523341, -1.9366103565460366, 0.33299418107915446];
  const TOL = { atol: 2e-7, rtol: 1e-6 }; // parameters and moments are float32

  it("matches a hand-computed two-step update on a 3-element parameter", () => {
    const p = tensor([1, -2, 0.5], [3], true);
    const opt = adamW([p], { weightDecay: 0.1 });
    setGrad(p, G1);
    opt.step(0.1);
    assertClose("p after step 1", p.data, P1, TOL);
    setGrad(p, G2);
    opt.step(0.1);
    assertClose("p after step 2", p.data, P2, TOL);
    assert.equal(opt.state().step, 2);
  });

  it("noDecay parameters get no weight decay; others in the same optimizer do", () => {
    const p = tensor([1, -2, 0.5], [3], true);
    const q = tensor([1, -2, 0.5], [3], true);
    const opt = adamW([p, q], { weightDecay: 0.1, noDecay: new Set([q]) });
    for (const g of [G1, G2]) {
      setGrad(p, g);
      setGrad(q, g);
      opt.step(0.1);
    }
    assertClose("decayed p", p.data, P2, TOL);
    assertClose("noDecay q", q.data, P2_NO_DECAY, TOL);
  });

  it("parameters without a gradient are left alone; zeroGrad zeroes the rest", () => {
    const p = tensor([1, 2], [2], true);
    const q = tensor([3, 4], [2], true);
    const opt = adamW([p, q]);
    setGrad(p, [1, 1]);
    opt.step(0.1);
    assertExact("q untouched", q.data, [3, 4]);
    assert.notEqual(p.data[0], 1);
    opt.zeroGrad();
    assertExact("p.grad zeroed", p.grad!, [0, 0]);
    assert.equal(q.grad, null);
  });
});

describe("SGD", () => {
  // lr 0.1, momentum 0.9, weight decay 0.01; p0 = [1, -2, 0.5]; g' = g + wd·p, buf = μ·buf + g', p ← p − lr·buf.
  // Step 1: g' = [0.11, −0.22, 0.305], buf = g', p1 = [0.989, −1.978, 0.4695].
  // Step 2: g' = [−0.49011, 0.38022, 0.004695], buf = [−0.39111, 0.18222, 0.279195], p2 = [1.028111, −1.996222, 0.4415805].
  it("with momentum and weight decay matches a hand-computed two-step update", () => {
    const p = tensor([1, -2, 0.5], [3], true);
    const opt = sgd([p], { momentum: 0.9, weightDecay: 0.01 });
    setGrad(p, G1);
    opt.step(0.1);
    assertClose("p after step 1", p.data, [0.989, -1.978, 0.4695], { atol: 1e-7, rtol: 1e-7 });
    setGrad(p, G2);
    opt.step(0.1);
    assertClose("p after step 2", p.data, [1.028111, -1.996222, 0.4415805], { atol: 2e-7, rtol: 1e-6 });
  });

  it("without momentum is p ← p − lr·g", () => {
    const p = tensor([1, -2, 0.5], [3], true);
    const opt = sgd([p]);
    setGrad(p, G1);
    opt.step(0.5);
    assertClose("p", p.data, [0.95, -1.9, 0.35], { atol: 1e-7, rtol: 0 });
  });
});

describe("optimizer state", () => {
  /** A deterministic gradient for parameter i at step t. */
  const gradAt = (t: number, i: number, n: number): number[] => Array.from({ length: n }, (_, j) => Math.sin(1 + t * 1.3 + i * 0.7 + j * 0.37));

  const makers: Array<[string, (ps: Tensor[]) => Optimizer]> = [
    ["AdamW", (ps) => adamW(ps, { weightDecay: 0.05, noDecay: new Set([ps[1]!]) })],
    ["SGD", (ps) => sgd(ps, { momentum: 0.9, weightDecay: 0.01 })],
  ];
  for (const [name, make] of makers) {
    it(`${name}: save after 2 steps, load into a fresh optimizer, and both continue identically`, () => {
      const ps = [tensor([1, -2, 0.5], [3], true), tensor([0.1, 0.2, 0.3, 0.4], [2, 2], true)];
      const a = make(ps);
      const run = (opt: Optimizer, params: Tensor[], from: number, to: number): void => {
        for (let t = from; t < to; t++) {
          params.forEach((p, i) => setGrad(p, gradAt(t, i, p.size)));
          opt.step(0.05);
        }
      };
      run(a, ps, 0, 2);
      // A checkpoint: copies of the buffers (state() hands out the live arrays) and of the parameters.
      const st = a.state();
      const saved = { step: st.step, buffers: new Map([...st.buffers].map(([k, v]) => [k, v.slice()] as const)) };
      const savedParams = ps.map((p) => p.data.slice());
      run(a, ps, 2, 5);

      const qs = savedParams.map((d, i) => tensor(d, ps[i]!.shape, true));
      const b = make(qs);
      b.loadState(saved);
      run(b, qs, 2, 5);
      qs.forEach((q, i) => assertExact(`${name} param ${i} after resuming`, q.data, ps[i]!.data));
      assert.equal(b.state().step, 5);
    });

    it(`${name}: loading a state with a missing or wrong-sized buffer throws`, () => {
      const ps = [tensor([1, 2, 3], [3], true)];
      const opt = make([...ps, tensor([1, 2, 3, 4], [2, 2], true)]);
      const st = opt.state();
      const bad = new Map(st.buffers);
      const firstKey = [...bad.keys()][0]!;
      bad.set(firstKey, new Float32Array(2));
      assert.throws(() => opt.loadState({ step: 1, buffers: bad }), new RegExp(`"${firstKey.replace(".", "\\.")}" is missing or has the wrong size`));
      const missing = new Map(st.buffers);
      missing.delete(firstKey);
      assert.throws(() => opt.loadState({ step: 1, buffers: missing }), /is missing or has the wrong size/);
    });
  }
});

describe("clipGradNorm", () => {
  it("scales to maxNorm and returns the pre-clip norm", () => {
    const p = tensor([0, 0], [2], true);
    const q = tensor([0], [1], true);
    const r = tensor([0], [1], true); // no gradient: ignored
    setGrad(p, [3, 4]);
    setGrad(q, [12]); // global norm 13
    const norm = clipGradNorm([p, q, r], 6.5);
    assert.equal(norm, 13);
    const after = Math.hypot(...p.grad!, ...q.grad!);
    assert.ok(Math.abs(after - 6.5) < 1e-5, `norm after clipping ${after}, expected 6.5`);
    assertClose("clipped grads keep their direction", [...p.grad!, ...q.grad!], [1.5, 2, 6], { atol: 1e-6, rtol: 1e-6 });
    assert.equal(r.grad, null);
  });

  it("leaves gradients below maxNorm (or with maxNorm 0) untouched", () => {
    const p = tensor([0, 0], [2], true);
    setGrad(p, [3, 4]);
    assert.equal(clipGradNorm([p], 5.5), 5);
    assertExact("unclipped", p.grad!, [3, 4]);
    assert.equal(clipGradNorm([p], 0), 5);
    assertExact("maxNorm 0", p.grad!, [3, 4]);
  });
});

describe("warmupCosine", () => {
  // lr 1e-3, 10 warm-up steps, 110 total, final 0.1·lr = 1e-4.
  const f = warmupCosine({ lr: 1e-3, warmupSteps: 10, totalSteps: 110 });
  const TOL = { atol: 1e-12, rtol: 1e-12 };
  it("rises linearly during warm-up: lr·(step + 1)/warmup", () => {
    assertClose("step 0", [f(0)], [1e-4], TOL);
    assertClose("step 4", [f(4)], [5e-4], TOL);
    assertClose("end of warm-up (step 9)", [f(9)], [1e-3], TOL);
  });
  it("decays by a cosine from lr to lr·minRatio: peak, middle, end", () => {
    assertClose("first decay step (10)", [f(10)], [1e-3], TOL);
    assertClose("middle (step 60)", [f(60)], [1e-4 + 0.5 * 9e-4], TOL);
    assertClose("a quarter in (step 35)", [f(35)], [1e-4 + 0.5 * 9e-4 * (1 + Math.SQRT1_2)], TOL);
    assertClose("end (step 110)", [f(110)], [1e-4], TOL);
    assertClose("past the end", [f(500)], [1e-4], TOL);
    for (let s = 10; s < 110; s++) if (!(f(s + 1) <= f(s))) assert.fail(`not decreasing at step ${s}: ${f(s)} → ${f(s + 1)}`);
  });
  it("minRatio sets the floor", () => {
    const g = warmupCosine({ lr: 2, warmupSteps: 0, totalSteps: 4, minRatio: 0 });
    assertClose("g", [g(0), g(2), g(4)], [2, 1, 0], TOL);
  });
});

for (const backend of availableBackends()) {
  describe(`backend ${backend.name}: a tiny regression`, () => {
    before(() => setBackend(backend.name));
    // y = 3x + 1 on 32 points in [-1, 1], fitted by linear(x, W [1, 1], b [1]) under mse.
    const N = 32;
    const xs = Float32Array.from({ length: N }, (_, i) => -1 + (2 * i) / (N - 1));
    const x = tensor(xs, [N, 1]);
    const y = tensor(xs.map((v) => 3 * v + 1), [N, 1]);
    const fit = (makeOpt: (ps: Tensor[]) => Optimizer, steps: number, lr: (t: number) => number): [number, number, number] => {
      const W = tensor([0], [1, 1], true);
      const b = tensor([0], [1], true);
      const opt = makeOpt([W, b]);
      let loss = Infinity;
      for (let t = 0; t < steps; t++) {
        opt.zeroGrad();
        const l = mse(linear(x, W, b), y);
        loss = l.item();
        backward(l);
        opt.step(lr(t));
      }
      return [W.data[0]!, b.data[0]!, loss];
    };
    it("SGD with momentum fits y = 3x + 1 to within 1e-3", () => {
      const [w, b, loss] = fit((ps) => sgd(ps, { momentum: 0.9 }), 300, () => 0.1);
      assert.ok(Math.abs(w - 3) < 1e-3 && Math.abs(b - 1) < 1e-3, `w ${w}, b ${b}, loss ${loss}`);
    });
    it("AdamW (no decay) with warm-up + cosine fits y = 3x + 1 to within 1e-3", () => {
      const sched = warmupCosine({ lr: 0.1, warmupSteps: 20, totalSteps: 600, minRatio: 0.01 });
      const [w, b, loss] = fit((ps) => adamW(ps, { weightDecay: 0 }), 600, sched);
      assert.ok(Math.abs(w - 3) < 1e-3 && Math.abs(b - 1) < 1e-3, `w ${w}, b ${b}, loss ${loss}`);
    });
  });
}

describe("Rng", () => {
  it("the same seed gives the same sequence; different seeds differ", () => {
    const a = new Rng(42);
    const b = new Rng(42);
    const c = new Rng(43);
    const sa = Array.from({ length: 1000 }, () => a.nextU32());
    const sb = Array.from({ length: 1000 }, () => b.nextU32());
    const sc = Array.from({ length: 1000 }, () => c.nextU32());
    assert.deepEqual(sa, sb);
    assert.ok(sa.some((v, i) => v !== sc[i]), "seeds 42 and 43 gave the same sequence");
    assert.ok(sa.every((v) => Number.isInteger(v) && v >= 0 && v < 2 ** 32));
    const n1 = new Rng(7);
    const n2 = new Rng(7);
    for (let i = 0; i < 101; i++) assert.equal(n1.normal(), n2.normal());
  });

  it("normal() has mean ≈ 0 and std ≈ 1 over 1e5 samples", () => {
    const r = new Rng(1);
    const n = 100000;
    let s = 0;
    let ss = 0;
    for (let i = 0; i < n; i++) {
      const v = r.normal();
      s += v;
      ss += v * v;
    }
    const m = s / n;
    const sd = Math.sqrt(ss / n - m * m);
    // The standard error of the mean is 0.003: these bounds are over 6 standard errors wide.
    assert.ok(Math.abs(m) < 0.02, `mean ${m}`);
    assert.ok(Math.abs(sd - 1) < 0.02, `std ${sd}`);
  });

  it("uniform() is in [0, 1) with mean ≈ 1/2; int(n) covers 0..n-1", () => {
    const r = new Rng(2);
    let s = 0;
    for (let i = 0; i < 100000; i++) {
      const u = r.uniform();
      if (!(u >= 0 && u < 1)) assert.fail(`uniform() gave ${u}`);
      s += u;
    }
    assert.ok(Math.abs(s / 100000 - 0.5) < 0.01, `mean ${s / 100000}`);
    const seen = new Set<number>();
    for (let i = 0; i < 1000; i++) {
      const k = r.int(7);
      if (!(Number.isInteger(k) && k >= 0 && k < 7)) assert.fail(`int(7) gave ${k}`);
      seen.add(k);
    }
    assert.equal(seen.size, 7);
  });

  it("permutation(n) is a permutation of 0..n-1, and shuffle keeps the elements", () => {
    const r = new Rng(3);
    for (const n of [0, 1, 2, 1000]) {
      const p = r.permutation(n);
      assert.equal(p.length, n);
      assert.deepEqual([...p].sort((a, b) => a - b), Array.from({ length: n }, (_, i) => i));
    }
    const big = r.permutation(1000);
    assert.ok(big.some((v, i) => v !== i), "a permutation of 1000 was the identity");
    const xs = ["a", "b", "c", "d", "e"];
    const shuffled = r.shuffle([...xs]);
    assert.deepEqual([...shuffled].sort(), xs);
  });

  it("fork() is deterministic and independent of the parent's later draws; fillNormal scales by std", () => {
    const a = new Rng(9).fork();
    const b = new Rng(9).fork();
    assert.equal(a.nextU32(), b.nextU32());
    const out = fillNormal(new Float32Array(50000), new Rng(4), 0.5);
    const sd = Math.sqrt(out.reduce((s, v) => s + v * v, 0) / out.length);
    assert.ok(Math.abs(sd - 0.5) < 0.02, `std ${sd}`);
    assert.throws(() => new Rng(NaN), /Rng: seed must be a finite number, got NaN/);
  });
});
