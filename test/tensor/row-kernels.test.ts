/**
 * The backends' row kernels (log-sum-exp, softmax and its backward, softmax times a per-row scale,
 * GELU, LayerNorm's forward steps, the AdamW update, the sum of squares) against float64 references,
 * on widths that are and are not multiples of the SIMD width, with rows of −Infinity, huge and tiny
 * logits, a zero scale; and the argument errors.
 */
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { availableBackends } from "../../src/tensor/backend/index.ts";
import { composedLaterKernels } from "../../src/tensor/backend/native.ts";
import { mulberry32, randn } from "../helpers/rng.ts";
import { assertClose } from "./gradcheck.ts";
import { runNativeChild } from "../helpers/native-child.ts";

function refLse(X: Float32Array, rows: number, cols: number): Float64Array {
  const out = new Float64Array(rows);
  for (let r = 0; r < rows; r++) {
    let m = -Infinity;
    for (let c = 0; c < cols; c++) m = Math.max(m, X[r * cols + c]!);
    if (m === -Infinity) { out[r] = -Infinity; continue; }
    let s = 0;
    for (let c = 0; c < cols; c++) s += Math.exp(X[r * cols + c]! - m);
    out[r] = m + Math.log(s);
  }
  return out;
}

const f32 = (n: number): Float32Array => new Float32Array(n);

function randRows(seed: number, rows: number, cols: number, std: number): Float32Array {
  const rng = mulberry32(seed);
  return Float32Array.from({ length: rows * cols }, () => randn(rng) * std);
}

for (const backend of availableBackends()) {
  describe(`row kernels, backend ${backend.name}`, () => {
    it("logSumExpRows matches float64 on widths 1, 3, 7, 8, 9, 31, 1000 and logits up to ±80", () => {
      for (const cols of [1, 3, 7, 8, 9, 31, 1000]) {
        for (const std of [0.1, 5, 30]) {
          const rows = 5;
          const X = randRows(cols * 7 + std, rows, cols, std);
          const out = new Float32Array(rows);
          backend.logSumExpRows(X, rows, cols, out);
          assertClose(`lse cols ${cols} std ${std}`, out, refLse(X, rows, cols), { atol: 1e-5, rtol: 2e-6 });
        }
      }
    });

    it("logSumExpRows: −Infinity entries are skipped, an all −Infinity row gives −Infinity, huge values do not overflow", () => {
      const X = Float32Array.from([
        0, -Infinity, 0, -Infinity, 0, 0, 0, 0, 0, 0, //     8 zeros → log 8
        -Infinity, -Infinity, -Infinity, -Infinity, -Infinity, -Infinity, -Infinity, -Infinity, -Infinity, -Infinity,
        1e30, 1e30, -1e30, 0, 0, 0, 0, 0, 0, 0, //          1e30 + log 2
        -100, -100, -100, -100, -100, -100, -100, -100, -100, -100, // −100 + log 10
      ]);
      const out = new Float32Array(4);
      backend.logSumExpRows(X, 4, 10, out);
      assert.ok(Math.abs(out[0]! - Math.log(8)) < 1e-6, `row 0: ${out[0]}`);
      assert.equal(out[1], -Infinity);
      assert.equal(out[2], Math.fround(1e30));
      assert.ok(Math.abs(out[3]! - (-100 + Math.log(10))) < 1e-4, `row 3: ${out[3]}`);
    });

    it("logSumExpRows propagates NaN", () => {
      const X = Float32Array.from([1, 2, Number.NaN, 4, 5, 6, 7, 8, 9]);
      const out = new Float32Array(1);
      backend.logSumExpRows(X, 1, 9, out);
      assert.ok(Number.isNaN(out[0]), `got ${out[0]}`);
    });

    it("softmaxScaleRows gives scale · softmax, sums to the scale per row; scale 0 zeroes the row", () => {
      for (const cols of [1, 5, 8, 13, 300]) {
        const rows = 4;
        const X = randRows(cols, rows, cols, 4);
        const lse = new Float32Array(rows);
        backend.logSumExpRows(X, rows, cols, lse);
        const scale = Float32Array.from([1, 0.5, 0, -2]);
        const ref = new Float64Array(rows * cols);
        const lse64 = refLse(X, rows, cols);
        for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) ref[r * cols + c] = scale[r]! * Math.exp(X[r * cols + c]! - lse64[r]!);
        const Y = X.slice();
        backend.softmaxScaleRows(Y, rows, cols, lse, scale);
        assertClose(`softmaxScale cols ${cols}`, Y, ref, { atol: 1e-7, rtol: 1e-5 });
        for (let r = 0; r < rows; r++) {
          let s = 0;
          for (let c = 0; c < cols; c++) s += Y[r * cols + c]!;
          assert.ok(Math.abs(s - scale[r]!) < 1e-5, `row ${r} sums to ${s}, expected ${scale[r]}`);
        }
        for (let c = 0; c < cols; c++) assert.equal(Y[2 * cols + c], 0);
      }
    });

    it("softmaxScaleRows: −Infinity logits become exactly 0; elements past rows·cols are untouched", () => {
      const X = Float32Array.from([0, -Infinity, 0, -Infinity, 0, 0, 0, 0, 0, 0, 42]);
      const lse = Float32Array.of(Math.log(8));
      backend.softmaxScaleRows(X, 1, 10, lse, Float32Array.of(1));
      assert.equal(X[1], 0);
      assert.equal(X[3], 0);
      assert.ok(Math.abs(X[0]! - 0.125) < 1e-7, `X[0] = ${X[0]}`);
      assert.equal(X[10], 42);
    });

    it("geluForward / geluBackward match float64 gelu_new and its derivative, tails and extremes included", () => {
      const K = Math.sqrt(2 / Math.PI), Cc = 0.044715;
      const ref = (x: number): number => 0.5 * x * (1 + Math.tanh(K * (x + Cc * x ** 3)));
      const dref = (x: number): number => {
        const t = Math.tanh(K * (x + Cc * x ** 3));
        return 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * K * (1 + 3 * Cc * x * x);
      };
      for (const n of [1, 7, 8, 9, 1000]) {
        const X = randRows(n + 11, 1, n, 3);
        if (n === 1000) X.set([0, -0, 1e-8, -1e-8, 30, -30, 100, -100, 1e6, -1e6, 10.5, -10.5]);
        const Y = new Float32Array(n);
        backend.geluForward(X, n, Y);
        assertClose(`gelu n ${n}`, Y, Float64Array.from(X, ref), { atol: 2e-7, rtol: 2e-6 });
        const G = randRows(n + 13, 1, n, 1);
        const D0 = randRows(n + 17, 1, n, 1);
        const D = D0.slice();
        backend.geluBackward(X, G, n, D);
        assertClose(`gelu' n ${n}`, D, Float64Array.from(X, (x, i) => D0[i]! + G[i]! * dref(x)), { atol: 2e-6, rtol: 2e-6 });
      }
      const Y = new Float32Array(9);
      backend.geluForward(Float32Array.from([Number.NaN, 1, 1, 1, 1, 1, 1, 1, Number.NaN]), 9, Y);
      assert.ok(Number.isNaN(Y[0]) && Number.isNaN(Y[8]), `NaN in, NaN out: ${Y[0]}, ${Y[8]}`);
      assert.throws(() => backend.geluForward(new Float32Array(3), 4, new Float32Array(4)), /geluForward: X has 3 elements, fewer than n = 4/);
      assert.throws(() => backend.geluBackward(new Float32Array(4), new Float32Array(4), 4, new Float32Array(2)), /geluBackward: DX has 2 elements, fewer than n = 4/);
    });

    it("lnScaleRows / lnNormalizeRows / affineRows match float64 LayerNorm on widths 1, 7, 8, 9, 768, with a large offset", () => {
      for (const cols of [1, 7, 8, 9, 768]) {
        const rows = 3;
        const X = randRows(cols + 29, rows, cols, 2);
        for (let c = 0; c < cols; c++) X[2 * cols + c]! += 100; // row 2: mean far from 0
        const eps = 1e-5;
        const mean64 = new Float64Array(rows), scale64 = new Float64Array(rows);
        for (let r = 0; r < rows; r++) {
          let m = 0;
          for (let c = 0; c < cols; c++) m += X[r * cols + c]!;
          m /= cols;
          let v = 0;
          for (let c = 0; c < cols; c++) v += (X[r * cols + c]! - m) ** 2;
          mean64[r] = m;
          scale64[r] = Math.sqrt(v / cols + eps);
        }
        const scale = new Float32Array(rows), mean = new Float32Array(rows);
        backend.lnScaleRows(X, rows, cols, eps, scale, mean);
        assertClose(`ln mean cols ${cols}`, mean, mean64, { atol: 1e-5, rtol: 1e-6 });
        assertClose(`ln scale cols ${cols}`, scale, scale64, { atol: 1e-5, rtol: 1e-4 });
        const out = new Float32Array(rows * cols);
        backend.lnNormalizeRows(X, rows, cols, scale, out);
        const norm64 = Float64Array.from(X, (x, i) => (x - mean64[Math.floor(i / cols)]!) / scale[Math.floor(i / cols)]!);
        assertClose(`ln normalize cols ${cols}`, out, norm64, { atol: 2e-5, rtol: 1e-5 });
        const w = randRows(cols + 31, 1, cols, 1), b = randRows(cols + 37, 1, cols, 1);
        const y = new Float32Array(rows * cols), y0 = new Float32Array(rows * cols);
        backend.affineRows(out, rows, cols, w, b, y);
        backend.affineRows(out, rows, cols, w, null, y0);
        assertClose(`affine cols ${cols}`, y, Float64Array.from(out, (v, i) => v * w[i % cols]! + b[i % cols]!), { atol: 1e-6, rtol: 1e-6 });
        assertClose(`affine no bias cols ${cols}`, y0, Float64Array.from(out, (v, i) => v * w[i % cols]!), { atol: 1e-6, rtol: 1e-6 });
      }
      const X = new Float32Array(6);
      assert.throws(() => backend.lnScaleRows(X, 2, 3, 1e-5, new Float32Array(1), new Float32Array(2)), /lnScaleRows: scale has 1 elements, fewer than rows = 2/);
      assert.throws(() => backend.lnNormalizeRows(X, 2, 3, new Float32Array(2), new Float32Array(5)), /lnNormalizeRows: out has 5 elements, fewer than rows·cols = 6/);
      assert.throws(() => backend.affineRows(X, 2, 3, new Float32Array(3), new Float32Array(2), new Float32Array(6)), /affineRows: b has 2 elements, fewer than cols = 3/);
      assert.throws(() => backend.affineRows(X, 2, 4, new Float32Array(4), null, new Float32Array(8)), /affineRows: X has 6 elements, fewer than rows·cols = 8/);
    });

    it("softmaxRows matches float64 softmax (max subtracted) on widths 1, 3, 8, 9, 31, 128, 1000, in place too", () => {
      for (const cols of [1, 3, 8, 9, 31, 128, 1000]) {
        for (const std of [0.1, 5, 30]) {
          const rows = 4;
          const X = randRows(cols * 11 + std, rows, cols, std);
          const lse = refLse(X, rows, cols);
          const ref = Float64Array.from(X, (x, i) => Math.exp(x - lse[Math.floor(i / cols)]!));
          const Y = new Float32Array(rows * cols);
          backend.softmaxRows(X, rows, cols, Y);
          assertClose(`softmax cols ${cols} std ${std}`, Y, ref, { atol: 1e-7, rtol: 2e-6 });
          backend.softmaxRows(X, rows, cols, X); // in place: Y = X
          assert.deepEqual(X, Y);
        }
      }
    });

    it("softmaxRows: −Infinity gives exactly 0, an all −Infinity row gives zeros, logits of 1e4 and 1e30 keep their precision", () => {
      const X = Float32Array.from([
        0, -Infinity, 0, -Infinity, 0, 0, 0, 0, 0, //                      7 zeros share 1
        -Infinity, -Infinity, -Infinity, -Infinity, -Infinity, -Infinity, -Infinity, -Infinity, -Infinity,
        1e4, 1e4 - 1, 1e4 - 2, -Infinity, -Infinity, -Infinity, -Infinity, -Infinity, 1e4 - 3, // a shift of 1e4 changes nothing
        1e30, 1e30, -1e30, 0, 0, 0, 0, 0, 0,
      ]);
      const Y = new Float32Array(X.length);
      backend.softmaxRows(X, 4, 9, Y);
      for (const c of [0, 2, 4, 5, 6, 7, 8]) assert.ok(Math.abs(Y[c]! - 1 / 7) < 1e-7, `row 0 col ${c}: ${Y[c]}`);
      assert.equal(Y[1], 0);
      assert.deepEqual([...Y.subarray(9, 18)], new Array(9).fill(0));
      const z = 1 + Math.exp(-1) + Math.exp(-2) + Math.exp(-3);
      for (const [c, k] of [[18, 0], [19, 1], [20, 2], [26, 3]] as const) {
        assert.ok(Math.abs(Y[c]! - Math.exp(-k) / z) < 1e-7, `row 2 col ${c}: ${Y[c]} vs ${Math.exp(-k) / z}`);
      }
      assert.equal(Y[21], 0);
      assert.equal(Y[27], 0.5);
      assert.equal(Y[28], 0.5);
      assert.equal(Y[29], 0);
    });

    it("softmaxBackwardRows adds y ⊙ (g − g·y) and matches a finite difference of Σ g·softmax", () => {
      for (const cols of [1, 7, 8, 9, 128]) {
        const rows = 3;
        const X = randRows(cols + 3, rows, cols, 2), G = randRows(cols + 5, rows, cols, 1);
        const Y = new Float32Array(rows * cols);
        backend.softmaxRows(X, rows, cols, Y);
        const DX = new Float32Array(rows * cols).fill(0.25); // adds to what is there
        backend.softmaxBackwardRows(G, Y, rows, cols, DX);
        const ref = new Float64Array(rows * cols);
        for (let r = 0; r < rows; r++) {
          const f = (x: Float64Array): number => { // Σ_c g_c·softmax(x)_c in float64
            const m = Math.max(...x);
            const e = x.map((v) => Math.exp(v - m));
            const s = e.reduce((a, b) => a + b, 0);
            return e.reduce((a, v, c) => a + G[r * cols + c]! * (v / s), 0);
          };
          const x = Float64Array.from(X.subarray(r * cols, (r + 1) * cols));
          for (let c = 0; c < cols; c++) {
            const h = 1e-6, xp = x.slice(), xm = x.slice();
            xp[c]! += h;
            xm[c]! -= h;
            ref[r * cols + c] = 0.25 + (f(xp) - f(xm)) / (2 * h);
          }
        }
        assertClose(`softmax backward cols ${cols}`, DX, ref, { atol: 1e-5, rtol: 1e-4 });
      }
      assert.throws(() => backend.softmaxBackwardRows(new Float32Array(6), new Float32Array(6), 2, 3, new Float32Array(5)), /softmaxBackwardRows: DX has 5 elements, fewer than rows·cols = 6/);
      assert.throws(() => backend.softmaxRows(new Float32Array(6), 2, 3, new Float32Array(4)), /softmaxRows: Y has 4 elements, fewer than rows·cols = 6/);
    });

    it("adamwUpdate gives the same bits as the float64 formula, step by step; sumSquares is Σ x² in float64", () => {
      const n = 1037; // not a multiple of any vector width
      const P = randRows(1, 1, n, 1), M = new Float32Array(n), V = new Float32Array(n);
      const P64 = Float32Array.from(P), M64 = new Float32Array(n), V64 = new Float32Array(n);
      const [lr, b1, b2, eps, wd] = [1e-3, 0.9, 0.999, 1e-8, 0.01];
      for (let t = 1; t <= 3; t++) {
        const G = randRows(10 + t, 1, n, t === 2 ? 1e-6 : 3); // a step of tiny gradients too
        const bc1 = 1 - b1 ** t, bc2 = 1 - b2 ** t;
        backend.adamwUpdate(P, G, M, V, n, lr, b1, b2, eps, 1 - lr * wd, bc1, bc2);
        for (let i = 0; i < n; i++) { // the definition, rounded to float32 where the state is stored
          M64[i] = b1 * M64[i]! + (1 - b1) * G[i]!;
          V64[i] = b2 * V64[i]! + (1 - b2) * G[i]! * G[i]!;
          P64[i] = P64[i]! * (1 - lr * wd) - (lr * (M64[i]! / bc1)) / (Math.sqrt(V64[i]! / bc2) + eps);
        }
        assert.deepEqual(M, M64, `m after step ${t}`);
        assert.deepEqual(V, V64, `v after step ${t}`);
        assert.deepEqual(P, P64, `p after step ${t}`);
      }
      const X = randRows(77, 1, n, 2);
      let ss = 0;
      for (const x of X) ss += x * x;
      assert.ok(Math.abs(backend.sumSquares(X, n) - ss) <= 1e-12 * ss, `sumSquares ${backend.sumSquares(X, n)} vs ${ss}`);
      assert.equal(backend.sumSquares(X, 0), 0);
      assert.throws(() => backend.adamwUpdate(P, new Float32Array(3), M, V, n, lr, b1, b2, eps, 1, 1, 1), /adamwUpdate: G has 3 elements, fewer than n = 1037/);
      assert.throws(() => backend.sumSquares(X, n + 1), /sumSquares: X has 1037 elements, fewer than n = 1038/);
    });

    it("adamwUpdate and scaleInPlace over 300 007 elements (split across threads natively) give the float64 formula's bits", () => {
      const n = 300_007; // above the native backend's threshold for splitting (2^16 per thread), odd
      const P = randRows(3, 1, n, 1), M = randRows(4, 1, n, 0.1), V = randRows(5, 1, n, 0.1).map((x) => x * x);
      const G = randRows(6, 1, n, 2);
      const [P64, M64, V64] = [Float32Array.from(P), Float32Array.from(M), Float32Array.from(V)];
      const [lr, b1, b2, eps, wd, t] = [3e-4, 0.9, 0.95, 1e-8, 0.1, 7];
      const bc1 = 1 - b1 ** t, bc2 = 1 - b2 ** t;
      backend.adamwUpdate(P, G, M, V, n, lr, b1, b2, eps, 1 - lr * wd, bc1, bc2);
      for (let i = 0; i < n; i++) {
        M64[i] = b1 * M64[i]! + (1 - b1) * G[i]!;
        V64[i] = b2 * V64[i]! + (1 - b2) * G[i]! * G[i]!;
        P64[i] = P64[i]! * (1 - lr * wd) - (lr * (M64[i]! / bc1)) / (Math.sqrt(V64[i]! / bc2) + eps);
      }
      assert.deepEqual(M, M64);
      assert.deepEqual(V, V64);
      assert.deepEqual(P, P64);
      const k = 0.123456789012345; // not a float32: the product is taken in float64
      const X = randRows(7, 1, n + 5, 3), X64 = Float32Array.from(X);
      backend.scaleInPlace(X, n, k);
      for (let i = 0; i < n; i++) X64[i] = X64[i]! * k;
      assert.deepEqual(X, X64, "scaleInPlace; the 5 elements past n stay as they were");
      assert.throws(() => backend.scaleInPlace(X, n + 6, k), /scaleInPlace: X has 300012 elements, fewer than n = 300013/);
    });

    it("addInto over 300 007 elements (split across threads natively) gives the float32 sums; the elements past n stay", () => {
      const n = 300_007;
      const Y = randRows(8, 1, n + 5, 3), X = randRows(9, 1, n + 5, 1e-3); // small addends: the sum rounds
      const Y32 = Float32Array.from(Y);
      for (let i = 0; i < n; i++) Y32[i] = Math.fround(Y32[i]! + X[i]!);
      backend.addInto(Y, X, n);
      assert.deepEqual(Y, Y32);
      assert.throws(() => backend.addInto(Y, new Float32Array(3), n), /addInto: X has 3 elements, fewer than n = 300007/);
    });

    it("gatherRuns copies each run from where its index says, long runs (split over threads natively), short ones and one row repeated", () => {
      for (const [run, runs] of [[70, 40_000], [3, 50_000]] as const) {
        const A = randRows(12, 1, 5000, 1);
        const index = Int32Array.from({ length: runs }, (_, r) => (r * 7919) % (5000 - run + 1));
        const out = new Float32Array(runs * run + 2).fill(9);
        backend.gatherRuns(A, index, run, out);
        const want = new Float32Array(runs * run + 2).fill(9);
        for (let r = 0; r < runs; r++) for (let j = 0; j < run; j++) want[r * run + j] = A[index[r]! + j]!;
        assert.deepEqual(out, want, `run ${run}; the 2 elements past index.length·run stay`);
      }
      const row = randRows(13, 1, 768, 1), rows = new Float32Array(100 * 768);
      backend.gatherRuns(row, new Int32Array(100), 768, rows);
      for (let r = 0; r < 100; r++) assert.deepEqual(rows.subarray(r * 768, (r + 1) * 768), row);
      assert.throws(() => backend.gatherRuns(row, Int32Array.of(0, 1), 768, rows), /gatherRuns: index\[1\] = 1 puts a run of 768 outside A's 768 elements/);
      assert.throws(() => backend.gatherRuns(row, new Int32Array(101), 768, rows), /gatherRuns: out has 76800 elements, fewer than index.length·run = 77568/);
    });

    it("scatterAddRuns adds each run where its index says, in the order of the runs when runs land on the same place", () => {
      // 40 000 runs of 70 (an embedding's backward with repeated ids: 5 rows receive 8 000 runs each), split over threads natively
      const [run, runs, rows] = [70, 40_000, 5];
      const G = randRows(10, 1, runs * run, 1);
      const index = Int32Array.from({ length: runs }, (_, r) => ((r * 7) % rows) * run);
      const GA = randRows(11, 1, rows * run + 3, 1);
      const want = Float32Array.from(GA);
      for (let r = 0; r < runs; r++) for (let j = 0; j < run; j++) want[index[r]! + j] = Math.fround(want[index[r]! + j]! + G[r * run + j]!);
      backend.scatterAddRuns(G, index, run, GA);
      assert.deepEqual(GA, want);
      assert.throws(() => backend.scatterAddRuns(G, Int32Array.of(0, rows * run - 66), run, GA), /scatterAddRuns: index\[1\] = 284 puts a run of 70 outside GA's 353 elements/);
      assert.throws(() => backend.scatterAddRuns(G, Int32Array.of(-1), run, GA), /scatterAddRuns: index\[0\] = -1 puts a run of 70 outside GA's 353 elements/);
      assert.throws(() => backend.scatterAddRuns(new Float32Array(10), index, run, GA), /scatterAddRuns: G has 10 elements, fewer than index.length·run = 2800000/);
      assert.throws(() => backend.scatterAddRuns(G, Array.from(index) as unknown as Int32Array, run, GA), /scatterAddRuns: index must be an Int32Array/);
    });

    it("clipAdamwBlocks: per block, clipping by the block's own norm then AdamW, the same bits as the definition", () => {
      const [wsize, bsize, blocks] = [1037, 7, 4]; // not multiples of any vector width
      const [lr, b1, b2, eps, wd, maxNorm] = [1e-3, 0.9, 0.999, 1e-8, 0.01, 1];
      // gradients on a grid of 2^-12, so Σ g² is exact in float64 whatever the summation order
      const grid = (seed: number, n: number, scale: number): Float32Array => {
        const rng = mulberry32(seed);
        return Float32Array.from({ length: n }, () => Math.round(randn(rng) * scale * 4096) / 4096);
      };
      const W = randRows(5, 1, blocks * wsize, 1), B = randRows(6, 1, blocks * bsize, 1);
      const [MW, VW, MB, VB] = [new Float32Array(blocks * wsize), new Float32Array(blocks * wsize), new Float32Array(blocks * bsize), new Float32Array(blocks * bsize)];
      const ref = { W: Float32Array.from(W), B: Float32Array.from(B), MW: Float32Array.from(MW), VW: Float32Array.from(VW), MB: Float32Array.from(MB), VB: Float32Array.from(VB) };
      const step = (P: Float32Array, G: Float32Array, M: Float32Array, V: Float32Array, o: number, n: number, f: number, shrink: number, bc1: number, bc2: number): void => {
        for (let i = o; i < o + n; i++) {
          const g = Math.fround(G[i]! * f);
          M[i] = b1 * M[i]! + (1 - b1) * g;
          V[i] = b2 * V[i]! + (1 - b2) * g * g;
          P[i] = P[i]! * shrink - (lr * (M[i]! / bc1)) / (Math.sqrt(V[i]! / bc2) + eps);
        }
      };
      for (let t = 1; t <= 3; t++) {
        // block norms ≈ scale·√1044: 0.65 (not clipped), 9.7 and 1.6 (clipped), 0
        const scales = [0.02, 0.3, 0.05, 0];
        const GW = new Float32Array(blocks * wsize), GB = new Float32Array(blocks * bsize);
        scales.forEach((sc, a) => {
          GW.set(grid(100 * t + a, wsize, sc), a * wsize);
          GB.set(grid(200 * t + a, bsize, sc), a * bsize);
        });
        const [GW0, GB0] = [Float32Array.from(GW), Float32Array.from(GB)];
        const bc1 = 1 - b1 ** t, bc2 = 1 - b2 ** t;
        const clip = t === 3 ? 0 : maxNorm; // the last step without clipping
        backend.clipAdamwBlocks(W, GW, MW, VW, wsize, B, GB, MB, VB, bsize, blocks, clip, lr, b1, b2, eps, 1 - lr * wd, bc1, bc2);
        let clipped = 0;
        for (let a = 0; a < blocks; a++) {
          let ss = 0;
          for (let i = a * wsize; i < (a + 1) * wsize; i++) ss += GW[i]! * GW[i]!;
          for (let i = a * bsize; i < (a + 1) * bsize; i++) ss += GB[i]! * GB[i]!;
          const norm = Math.sqrt(ss);
          const f = clip > 0 && norm > clip ? clip / (norm + 1e-6) : 1;
          if (f !== 1) clipped++;
          step(ref.W, GW, ref.MW, ref.VW, a * wsize, wsize, f, 1 - lr * wd, bc1, bc2);
          step(ref.B, GB, ref.MB, ref.VB, a * bsize, bsize, f, 1, bc1, bc2);
        }
        assert.equal(clipped, t === 3 ? 0 : 2, `clipped blocks at step ${t}`);
        assert.deepEqual(GW, GW0, "GW unchanged");
        assert.deepEqual(GB, GB0, "GB unchanged");
        for (const [name, got, want] of [["W", W, ref.W], ["B", B, ref.B], ["MW", MW, ref.MW], ["VW", VW, ref.VW], ["MB", MB, ref.MB], ["VB", VB, ref.VB]] as const) {
          assert.deepEqual(got, want, `${name} after step ${t}`);
        }
      }
      const f = (n: number): Float32Array => new Float32Array(n);
      assert.throws(() => backend.clipAdamwBlocks(f(10), f(9), f(10), f(10), 5, f(2), f(2), f(2), f(2), 1, 2, 1, lr, b1, b2, eps, 1, 1, 1), /clipAdamwBlocks: GW has 9 elements, fewer than blocks·wsize = 10/);
      assert.throws(() => backend.clipAdamwBlocks(f(10), f(10), f(10), f(10), 5, f(2), f(2), f(2), f(1), 1, 2, 1, lr, b1, b2, eps, 1, 1, 1), /clipAdamwBlocks: VB has 1 elements, fewer than blocks·bsize = 2/);
    });

    it("crossEntropyBlocks: bias, loss, softmax gradient and bias gradient per block, the same bits as the separate kernels", () => {
      for (const [rows, blocks, P] of [[5, 7, 10], [3, 4, 3], [2, 3, 17]] as const) {
        const KP = blocks * P;
        const X = randRows(rows * 31 + P, rows, KP, 3);
        const bias = randRows(P, 1, KP, 1);
        const rng = mulberry32(rows + blocks);
        const labels = Int32Array.from({ length: rows * blocks }, () => Math.floor(rng() * P));
        const kc = 1 / rows;
        // the reference: bias add, logSumExpRows and softmaxScaleRows over all rows·blocks rows, then the loops
        const ref = Float32Array.from(X);
        for (let r = 0; r < rows; r++) for (let j = 0; j < KP; j++) ref[r * KP + j] = ref[r * KP + j]! + bias[j]!;
        const lse = new Float32Array(rows * blocks);
        backend.logSumExpRows(ref, rows * blocks, P, lse);
        const refLoss = new Float64Array(blocks);
        for (let a = 0; a < blocks; a++) for (let r = 0; r < rows; r++) refLoss[a]! += lse[r * blocks + a]! - ref[r * KP + a * P + labels[r * blocks + a]!]!;
        const logits = Float32Array.from(ref);
        backend.softmaxScaleRows(ref, rows * blocks, P, lse, new Float32Array(rows * blocks).fill(kc));
        for (let r = 0; r < rows; r++) for (let a = 0; a < blocks; a++) ref[r * KP + a * P + labels[r * blocks + a]!]! -= kc;
        const refDB = new Float32Array(KP);
        for (let j = 0; j < KP; j++) {
          let sb = 0;
          for (let r = 0; r < rows; r++) sb += ref[r * KP + j]!;
          refDB[j] = sb;
        }
        const Out = Float32Array.from(X), loss = new Float64Array(blocks), dB = new Float32Array(KP);
        backend.crossEntropyBlocks(Out, rows, blocks, P, bias, labels, kc, loss, dB);
        assert.deepEqual(Out, ref, `dOut ${rows}×${blocks}×${P}`);
        assert.deepEqual(loss, refLoss, `loss ${rows}×${blocks}×${P}`);
        assert.deepEqual(dB, refDB, `dB ${rows}×${blocks}×${P}`);
        // the loss alone: Out keeps the logits (with the bias)
        const Out2 = Float32Array.from(X), loss2 = new Float64Array(blocks);
        backend.crossEntropyBlocks(Out2, rows, blocks, P, bias, labels, kc, loss2, null);
        assert.deepEqual(Out2, logits);
        assert.deepEqual(loss2, refLoss);
        // a cross-check of the definition: block 0 of row 0
        let m = -Infinity, se = 0;
        for (let c = 0; c < P; c++) m = Math.max(m, logits[c]!);
        for (let c = 0; c < P; c++) se += Math.exp(logits[c]! - m);
        assert.ok(Math.abs(Out[labels[0]!]! - kc * (Math.exp(logits[labels[0]!]! - m) / se - 1)) < 1e-6);
      }
      const f = (n: number): Float32Array => new Float32Array(n);
      assert.throws(() => backend.crossEntropyBlocks(f(6), 2, 1, 3, f(3), Int32Array.from([0, 3]), 0.5, new Float64Array(1), null), /crossEntropyBlocks: labels\[1\] = 3 is not a class in \[0, 3\)/);
      assert.throws(() => backend.crossEntropyBlocks(f(6), 2, 1, 3, f(3), Int32Array.from([0]), 0.5, new Float64Array(1), null), /crossEntropyBlocks: labels has 1 elements, fewer than rows·blocks = 2/);
      assert.throws(() => backend.crossEntropyBlocks(f(5), 2, 1, 3, f(3), Int32Array.from([0, 1]), 0.5, new Float64Array(1), null), /crossEntropyBlocks: Out has 5 elements, fewer than rows·blocks·P = 6/);
      assert.throws(() => backend.crossEntropyBlocks(f(6), 2, 1, 3, f(3), Int32Array.from([0, 1]), 0.5, new Float64Array(1), f(2)), /crossEntropyBlocks: dB has 2 elements, fewer than blocks·P = 3/);
    });

    it("clipAdamwBlocks and crossEntropyBlocks give the same bits on 1, 2 and 3 threads (SELFREPORT_KERNEL_THREADS)", () => {
      const [blocks, wsize, bsize, rows, P] = [331, 2000, 10, 64, 10]; // enough work to split 3 ways (≥ 65 536 elements a thread)
      const run = (threads: string): Float32Array[] => {
        const saved = process.env.SELFREPORT_KERNEL_THREADS;
        process.env.SELFREPORT_KERNEL_THREADS = threads;
        try {
          const W = randRows(1, 1, blocks * wsize, 1), B = randRows(2, 1, blocks * bsize, 1);
          const [MW, VW, MB, VB] = [randRows(3, 1, blocks * wsize, 0.01), new Float32Array(blocks * wsize).fill(1e-4), f32(blocks * bsize), f32(blocks * bsize)];
          const GW = randRows(4, 1, blocks * wsize, 0.05), GB = randRows(5, 1, blocks * bsize, 0.05);
          backend.clipAdamwBlocks(W, GW, MW, VW, wsize, B, GB, MB, VB, bsize, blocks, 1, 1e-3, 0.9, 0.999, 1e-8, 1 - 1e-5, 0.19, 0.002);
          const Out = randRows(6, rows, blocks * P, 2), dB = f32(blocks * P), loss = new Float64Array(blocks);
          const rng = mulberry32(7);
          const labels = Int32Array.from({ length: rows * blocks }, () => Math.floor(rng() * P));
          backend.crossEntropyBlocks(Out, rows, blocks, P, randRows(8, 1, blocks * P, 1), labels, 1 / rows, loss, dB);
          return [W, B, MW, VW, MB, VB, Out, dB, new Float32Array(loss)];
        } finally {
          if (saved === undefined) delete process.env.SELFREPORT_KERNEL_THREADS;
          else process.env.SELFREPORT_KERNEL_THREADS = saved;
        }
      };
      const one = run("1");
      for (const t of ["2", "3"]) run(t).forEach((got, i) => assert.deepEqual(got, one[i], `output ${i} on ${t} threads`));
    });

    it("an addon built before clipAdamwBlocks and crossEntropyBlocks gets them composed from its older kernels, with the same bits", () => {
      const composed = composedLaterKernels(backend);
      const [blocks, wsize, bsize, rows, P] = [5, 301, 3, 4, 6];
      const grid = (seed: number, n: number, sc: number): Float32Array => randRows(seed, 1, n, sc).map((g) => Math.round(g * 4096) / 4096);
      const state = (): Float32Array[] => [randRows(1, 1, blocks * wsize, 1), randRows(2, 1, blocks * bsize, 1), f32(blocks * wsize), f32(blocks * wsize), f32(blocks * bsize), f32(blocks * bsize)];
      const [a, b] = [state(), state()];
      for (let t = 1; t <= 2; t++) {
        const GW = grid(10 + t, blocks * wsize, 0.1), GB = grid(20 + t, blocks * bsize, 0.1); // norms ≈ 1.7: clipped to 1
        const [W, B, MW, VW, MB, VB] = a as [Float32Array, Float32Array, Float32Array, Float32Array, Float32Array, Float32Array];
        backend.clipAdamwBlocks(W, GW, MW, VW, wsize, B, GB, MB, VB, bsize, blocks, 1, 1e-3, 0.9, 0.999, 1e-8, 1 - 1e-5, 1 - 0.9 ** t, 1 - 0.999 ** t);
        const [W2, B2, MW2, VW2, MB2, VB2] = b as [Float32Array, Float32Array, Float32Array, Float32Array, Float32Array, Float32Array];
        composed.clipAdamwBlocks(W2, GW, MW2, VW2, wsize, B2, GB, MB2, VB2, bsize, blocks, 1, 1e-3, 0.9, 0.999, 1e-8, 1 - 1e-5, 1 - 0.9 ** t, 1 - 0.999 ** t);
      }
      b.forEach((got, i) => assert.deepEqual(got, a[i], `clipAdamwBlocks output ${i}`));
      const X = randRows(3, rows, blocks * P, 2), bias = randRows(4, 1, blocks * P, 1);
      const labels = Int32Array.from({ length: rows * blocks }, (_, i) => (i * 7) % P);
      const [O1, O2] = [Float32Array.from(X), Float32Array.from(X)];
      const [l1, l2, d1, d2] = [new Float64Array(blocks), new Float64Array(blocks), f32(blocks * P), f32(blocks * P)];
      backend.crossEntropyBlocks(O1, rows, blocks, P, bias, labels, 1 / rows, l1, d1);
      composed.crossEntropyBlocks(O2, rows, blocks, P, bias, labels, 1 / rows, l2, d2);
      assert.deepEqual([O2, l2, d2], [O1, l1, d1]);
      assert.throws(() => composed.crossEntropyBlocks(O2, rows, blocks, P, bias, labels.subarray(1), 1, l2, d2), /crossEntropyBlocks: labels has 19 elements, fewer than rows·blocks = 20/);
      assert.throws(() => composed.clipAdamwBlocks(f32(3), f32(3), f32(3), f32(3), 1, f32(3), f32(3), f32(3), f32(2), 1, 3, 1, 1, 0.9, 0.999, 1e-8, 1, 1, 1), /clipAdamwBlocks: VB has 2 elements, fewer than blocks·bsize = 3/);
    });

    it("layerNormRows equals lnScaleRows, lnNormalizeRows and affineRows in place, bit for bit, and so does the composed fallback", () => {
      const [rows, cols] = [67, 45]; // split over threads; 45 is not a multiple of the vector width
      const X = randRows(31, rows, cols, 3).map((v, i) => v + (i % cols) * 0.05);
      const w = randRows(32, 1, cols, 1), b = randRows(33, 1, cols, 1);
      for (const bias of [b, null]) {
        const [s1, m1, o1] = [f32(rows), f32(rows), f32(rows * cols)];
        backend.lnScaleRows(X, rows, cols, 1e-5, s1, m1);
        backend.lnNormalizeRows(X, rows, cols, s1, o1);
        backend.affineRows(o1, rows, cols, w, bias, o1);
        for (const impl of [backend, composedLaterKernels(backend)]) {
          const [s2, m2, o2] = [f32(rows), f32(rows), f32(rows * cols)];
          impl.layerNormRows(X, rows, cols, 1e-5, w, bias, o2, s2, m2);
          assert.deepEqual([o2, s2, m2], [o1, s1, m1], `layerNormRows ${impl === backend ? "" : "composed "}${bias === null ? "without" : "with"} bias`);
        }
      }
      // the backward: the four calls it fuses, with and without each gradient
      const [S, Mn] = [f32(rows), f32(rows)];
      backend.lnScaleRows(X, rows, cols, 1e-5, S, Mn);
      const G = randRows(34, rows, cols, 1);
      const start = (): Float32Array[] => [randRows(35, rows, cols, 1), randRows(36, 1, cols, 1), randRows(37, 1, cols, 1)]; // gradients already holding values: the kernels add
      for (const want of [[true, true, true], [false, true, true], [true, false, false], [false, false, true]] as const) {
        const [gx1, gw1, gb1] = start();
        const xHat = f32(rows * cols), gHat = f32(rows * cols), gs = f32(rows);
        backend.lnNormalizeRows(X, rows, cols, S, xHat);
        backend.affineBackwardRows(G, xHat, rows, cols, w, want[0] ? gHat : null, want[1] ? gw1! : null, want[2] ? gb1! : null);
        if (want[0]) {
          backend.lnNormalizeBackwardRows(gHat, xHat, rows, cols, S, gx1!, gs);
          backend.lnScaleBackwardRows(gs, X, rows, cols, S, Mn, gx1!);
        }
        for (const impl of [backend, composedLaterKernels(backend)]) {
          const [gx2, gw2, gb2] = start();
          impl.layerNormBackwardRows(G, X, rows, cols, S, Mn, w, want[0] ? gx2! : null, want[1] ? gw2! : null, want[2] ? gb2! : null);
          assert.deepEqual([gx2, gw2, gb2], [gx1, gw1, gb1], `layerNormBackwardRows ${impl === backend ? "" : "composed "}wanting GX ${want[0]}, GW ${want[1]}, GB ${want[2]}`);
        }
      }
      assert.throws(() => backend.layerNormBackwardRows(G, X, rows, cols, S, Mn, w, f32(5), null, null), /layerNormBackwardRows: GX has 5 elements, fewer than rows·cols = 3015/);
      assert.throws(() => backend.layerNormRows(X, rows, cols, 1e-5, f32(cols - 1), null, f32(rows * cols), f32(rows), f32(rows)), /layerNormRows: w has 44 elements, fewer than cols = 45/);
      assert.throws(() => backend.layerNormRows(X, rows, cols, 1e-5, w, null, f32(rows * cols), f32(rows), f32(rows - 1)), /layerNormRows: mean has 66 elements, fewer than rows = 67/);
    });

    it("bad arguments get one clear error", () => {
      const X = new Float32Array(6);
      assert.throws(() => backend.logSumExpRows(X, 2, 4, new Float32Array(2)), /logSumExpRows: X has 6 elements, fewer than rows·cols = 8/);
      assert.throws(() => backend.logSumExpRows(X, 2, 3, new Float32Array(1)), /logSumExpRows: out has 1 elements, fewer than rows = 2/);
      assert.throws(() => backend.logSumExpRows(X, -1, 3, new Float32Array(1)), /logSumExpRows: rows/);
      assert.throws(() => backend.softmaxScaleRows(X, 2, 3, new Float32Array(2), new Float32Array(1)), /softmaxScaleRows: scale has 1 elements, fewer than rows = 2/);
      assert.throws(() => backend.softmaxScaleRows(new Float64Array(6) as unknown as Float32Array, 2, 3, new Float32Array(2), new Float32Array(2)), /softmaxScaleRows: X must be a Float32Array/);
      const f = (n: number): Float32Array => new Float32Array(n);
      assert.throws(() => backend.lnScaleBackwardRows(f(2), X, 2, 3, f(2), f(2), f(5)), /lnScaleBackwardRows: GX has 5 elements, fewer than rows·cols = 6/);
      assert.throws(() => backend.lnNormalizeBackwardRows(f(6), f(6), 2, 3, f(1), null, null), /lnNormalizeBackwardRows: S has 1 elements, fewer than rows = 2/);
      assert.throws(() => backend.lnNormalizeBackwardRows(f(6), f(6), 2, 3, f(2), f(6), f(1)), /lnNormalizeBackwardRows: GS has 1 elements, fewer than rows = 2/);
      assert.throws(() => backend.affineBackwardRows(f(6), X, 2, 3, f(3), null, f(2), null), /affineBackwardRows: GW has 2 elements, fewer than cols = 3/);
      assert.throws(() => backend.affineBackwardRows(f(5), X, 2, 3, f(3), f(6), null, null), /affineBackwardRows: G has 5 elements, fewer than rows·cols = 6/);
    });
  });
}

for (const simd of ["base", "avx2"] as const) {
  describe(`row kernels, native ${simd} build (SELFREPORT_SIMD=${simd})`, () => {
    it(`SELFREPORT_SIMD=${simd} selects the ${simd} build of the kernels, which passes the same checks`, async () => {
      const { loadNativeBackend } = await import("../../src/tensor/backend/native.ts");
      const loaded = loadNativeBackend();
      if (!loaded.ok) return; // no addon on this machine: the js backend is the only one, tested above
      if (process.env.SELFREPORT_SIMD !== undefined) {
        if (process.env.SELFREPORT_SIMD === "base") assert.equal(loaded.info.rowKernels, "base");
        if (loaded.info.multiheadKernels !== "js") assert.equal(loaded.info.multiheadKernels, process.env.SELFREPORT_SIMD === "base" ? "base" : loaded.info.rowKernels);
        return;
      }
      if (simd === "avx2" && loaded.info.rowKernels !== "avx2") return; // no AVX2 here: nothing narrower than the default to force
      const { spawnSync } = await import("node:child_process");
      const { fileURLToPath } = await import("node:url");
      const env: NodeJS.ProcessEnv = { ...process.env, SELFREPORT_SIMD: simd, SELFREPORT_BACKEND: "native" };
      delete env.NODE_TEST_CONTEXT; // else the child reports to this runner instead of printing TAP
      const r = spawnSync(process.execPath, ["--test", "--test-reporter=tap", fileURLToPath(import.meta.url)], {
        env,
        encoding: "utf8",
      });
      assert.equal(r.status, 0, `${simd} build failed:\n${r.stdout}\n${r.stderr}`);
      assert.match(r.stdout, /# fail 0/);
    });
  });
}

describe("row kernels, native, split across threads", () => {
  it("give the same bits with 1, 2 and 3 threads (OPENBLAS_NUM_THREADS) on sizes that split unevenly", async () => {
    const { loadNativeBackend } = await import("../../src/tensor/backend/native.ts");
    if (!loadNativeBackend().ok) return; // no addon: nothing is split
    // Every row kernel once, on 1001 rows of 333 (333 333 elements: several parts of 2^16), GELU on
    // 333 333 + 5 elements; prints a checksum of every output's bits.
    const script = `
      let s = 7;
      const rnd = (n, k = 3) => Float32Array.from({ length: n }, () => { s = (Math.imul(s, 1664525) + 1013904223) >>> 0; return (s / 2 ** 32 - 0.5) * k; });
      const [R, C] = [1001, 333], N = R * C + 5;
      const X = rnd(R * C), G = rnd(R * C), w = rnd(C), b = rnd(C), gr = rnd(R);
      const outs = [];
      const f = (n) => { const a = new Float32Array(n); outs.push(a); return a; };
      const acc = (n, v = 0.5) => { const a = new Float32Array(n).fill(v); outs.push(a); return a; };
      be.logSumExpRows(X, R, C, f(R));
      const P = Float32Array.from(X); outs.push(P); be.softmaxScaleRows(P, R, C, outs[0], rnd(R));
      const XG = rnd(N), GG = rnd(N);
      be.geluForward(XG, N, f(N)); be.geluBackward(XG, GG, N, acc(N));
      const scale = f(R), mean = f(R); be.lnScaleRows(X, R, C, 1e-5, scale, mean);
      const Y = f(R * C); be.lnNormalizeRows(X, R, C, scale, Y);
      be.affineRows(Y, R, C, w, b, f(R * C));
      be.lnScaleBackwardRows(gr, X, R, C, scale, mean, acc(R * C));
      be.lnNormalizeBackwardRows(G, Y, R, C, scale, acc(R * C), acc(R));
      const SM = f(R * C); be.softmaxRows(X, R, C, SM);
      be.softmaxBackwardRows(G, SM, R, C, acc(R * C));
      const sums = outs.map((a) => { let h = 0; for (const u of new Uint32Array(a.buffer)) h = (Math.imul(h, 31) + u) >>> 0; return h; });
      console.log(JSON.stringify(sums));`;
    const sums = ["1", "2", "3"].map((threads) => JSON.parse(runNativeChild(script, { OPENBLAS_NUM_THREADS: threads }).trim()) as number[]);
    assert.deepEqual(sums[1], sums[0], "2 threads vs 1");
    assert.deepEqual(sums[2], sums[0], "3 threads vs 1");
  });
});
