/**
 * Every op of src/tensor/ops/ against an independent float64 reference (gradcheck.ts): the float32
 * forward, and the analytic gradient against central differences, on awkward shapes (scalars,
 * size-1 dims, odd sizes, a [45, 65]), on every available matmul backend.
 */
import { describe, it, before } from "node:test";
import assert from "node:assert/strict";
import {
  Tensor, tensor, availableBackends, setBackend, getBackend, Rng,
  add, sub, mul, div, affineScalar, scale, addScalar, neg, exp, log, tanh, sqrt, square, relu, sigmoid,
  sum, mean, max, argmaxLast,
  reshape, permute, transpose, slice, indexSelect, selectPositions, gatherLast, concat, embedding,
  matmul, linear,
  lnScale, lnNormalize, affineLast, layerNorm, geluNew, geluNewInPlace, addInPlace, noGrad, softmax, logSoftmax, crossEntropy, mse, dropout,
  backward, ShapeError,
} from "../../src/tensor/index.ts";
import { mulberry32 } from "../helpers/rng.ts";
import {
  gradcheck, assertClose, assertExact, numelOf, randArray, awayFromZero, positive, randInts, range,
  refBinary, refBroadcastShape, refMap, refGelu, refReduce, refPermute, refIndexSelect, refMatmul,
  refLayerNorm, refLnScale, refSoftmax, refLogSoftmax, refCrossEntropy,
  type GradInput, type Rand,
} from "./gradcheck.ts";

const EPS_LN = 1e-5;

function input(name: string, shape: readonly number[], data: Float32Array, requiresGrad = true): GradInput {
  return { name, shape, data, requiresGrad };
}

function randInput(rng: Rand, name: string, shape: readonly number[], requiresGrad = true): GradInput {
  return input(name, shape, randArray(rng, numelOf(shape)), requiresGrad);
}

const fmt = (s: readonly number[]): string => `[${s.join(", ")}]`;

for (const backend of availableBackends()) {
  describe(`backend ${backend.name}`, () => {
    before(() => setBackend(backend.name));

    it("runs on the backend it names", () => {
      assert.equal(getBackend().name, backend.name);
    });

    // -----------------------------------------------------------------------------------------
    describe("elementwise: broadcasting binary ops", () => {
      const pairs: Array<[readonly number[], readonly number[]]> = [
        [[2, 3, 4], [4]],
        [[2, 1, 4], [3, 1]],
        [[2, 3, 4], []],
        [[], [3, 5]],
        [[4], [2, 3, 4]],
        [[3, 5, 7], [3, 5, 7]],
        [[3, 1, 5], [1, 4, 1]],
        [[1], [3]],
        [[45, 65], [65]],
        [[45, 1], [1, 65]],
        [[2, 3, 4], [1, 3, 1]],
      ];
      const kinds = [
        { name: "add", op: add, f: (x: number, y: number) => x + y },
        { name: "sub", op: sub, f: (x: number, y: number) => x - y },
        { name: "mul", op: mul, f: (x: number, y: number) => x * y },
        { name: "div", op: div, f: (x: number, y: number) => x / y },
      ];
      for (const k of kinds) {
        for (const [sa, sb] of pairs) {
          it(`${k.name} ${fmt(sa)} with ${fmt(sb)}`, () => {
            const rng = mulberry32(11 + sa.length * 7 + sb.length);
            const b = k.name === "div" ? awayFromZero(rng, numelOf(sb)) : randArray(rng, numelOf(sb));
            gradcheck({
              name: `${k.name} ${fmt(sa)} ${fmt(sb)}`,
              inputs: [randInput(rng, "a", sa), input("b", sb, b)],
              op: ([x, y]) => k.op(x!, y!),
              ref: ([x, y]) => refBinary(k.f, x!, sa, y!, sb),
              outShape: refBroadcastShape(sa, sb),
            });
          });
        }
        it(`${k.name}: only the input that requires a gradient gets one`, () => {
          const rng = mulberry32(5);
          const sa = [2, 3, 4];
          const sb = [3, 1];
          const b = k.name === "div" ? awayFromZero(rng, 3) : randArray(rng, 3);
          for (const [ga, gb] of [[true, false], [false, true]] as const) {
            gradcheck({
              name: `${k.name} requiresGrad a=${ga} b=${gb}`,
              inputs: [randInput(rng, "a", sa, ga), input("b", sb, b, gb)],
              op: ([x, y]) => k.op(x!, y!),
              ref: ([x, y]) => refBinary(k.f, x!, sa, y!, sb),
            });
          }
        });
      }

      it("incompatible shapes throw a ShapeError naming the op and both shapes", () => {
        assert.throws(() => add(tensor(new Float32Array(6), [2, 3]), tensor(new Float32Array(4), [4])), (e: Error) => {
          assert.ok(e instanceof ShapeError);
          assert.match(e.message, /^add: .*\[2, 3\].*\[4\]/);
          return true;
        });
        assert.throws(() => mul(tensor(new Float32Array(6), [3, 2]), tensor(new Float32Array(3), [3])), /^ShapeError: mul: shapes \[3, 2\] and \[3\]/);
      });
    });

    // -----------------------------------------------------------------------------------------
    describe("elementwise: unary and scalar ops", () => {
      const sig = (v: number): number => 1 / (1 + Math.exp(-v));
      const unaries: Array<{ name: string; op: (t: Tensor) => Tensor; f: (v: number) => number; data: (rng: Rand, n: number) => Float32Array }> = [
        { name: "exp", op: exp, f: Math.exp, data: randArray },
        { name: "log", op: log, f: Math.log, data: (r, n) => positive(r, n, 0.3) },
        { name: "tanh", op: tanh, f: Math.tanh, data: (r, n) => randArray(r, n, 1.5) },
        { name: "sqrt", op: sqrt, f: Math.sqrt, data: (r, n) => positive(r, n, 0.3) },
        { name: "square", op: square, f: (v) => v * v, data: randArray },
        { name: "relu", op: relu, f: (v) => Math.max(v, 0), data: (r, n) => awayFromZero(r, n, 0.01) },
        { name: "sigmoid", op: sigmoid, f: sig, data: (r, n) => randArray(r, n, 3) },
        { name: "affineScalar(·, -1.5, 0.25)", op: (t) => affineScalar(t, -1.5, 0.25), f: (v) => v * -1.5 + 0.25, data: randArray },
        { name: "scale(·, 3)", op: (t) => scale(t, 3), f: (v) => 3 * v, data: randArray },
        { name: "addScalar(·, -2)", op: (t) => addScalar(t, -2), f: (v) => v - 2, data: randArray },
        { name: "neg", op: neg, f: (v) => -v, data: randArray },
        { name: "geluNew", op: geluNew, f: refGelu, data: (r, n) => randArray(r, n, 3) },
      ];
      const shapes: Array<readonly number[]> = [[], [1], [3, 5, 7], [45, 65]];
      for (const u of unaries) {
        for (const shape of shapes) {
          it(`${u.name} ${fmt(shape)}`, () => {
            const rng = mulberry32(21 + shape.length);
            gradcheck({
              name: `${u.name} ${fmt(shape)}`,
              inputs: [input("x", shape, u.data(rng, numelOf(shape)))],
              op: ([x]) => u.op(x!),
              ref: ([x]) => refMap(x!, u.f),
              outShape: shape,
            });
          });
        }
      }
      it("unary ops on an input without requiresGrad record nothing", () => {
        const x = tensor([0.5, 1.5]);
        for (const u of unaries) assert.equal(u.op(x).node, null, u.name);
      });
      it("geluNew matches GPT-2's gelu_new at hand-worked points", () => {
        // 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))): gelu(0) = 0, gelu(1) ≈ 0.841192, gelu(-1) ≈ -0.158808
        assertClose("geluNew", geluNew(tensor([0, 1, -1, 3])).data, [0, 0.8411919906082768, -0.15880800939172324, 2.996362607918227], { atol: 1e-6, rtol: 1e-6 });
      });
    });

    // -----------------------------------------------------------------------------------------
    describe("reductions", () => {
      const shapes: Array<readonly number[]> = [[3, 5, 7], [1, 4, 1], [45, 65], [6]];
      for (const kind of ["sum", "mean", "max"] as const) {
        const op = (x: Tensor, axis: number, keepDim: boolean): Tensor =>
          kind === "sum" ? sum(x, axis, keepDim) : kind === "mean" ? mean(x, axis, keepDim) : max(x, axis, keepDim);
        for (const shape of shapes) {
          const axes = [...range(0, shape.length), -1];
          for (const axis of axes) {
            for (const keepDim of [false, true]) {
              const ax = axis < 0 ? shape.length + axis : axis;
              const outShape = keepDim ? shape.map((d, i) => (i === ax ? 1 : d)) : shape.filter((_, i) => i !== ax);
              it(`${kind} ${fmt(shape)} axis ${axis}${keepDim ? " keepDim" : ""}`, () => {
                const rng = mulberry32(31 + ax);
                gradcheck({
                  name: `${kind} ${fmt(shape)} axis ${axis} keepDim=${keepDim}`,
                  inputs: [randInput(rng, "x", shape)], // continuous values: no ties for max
                  op: ([x]) => op(x!, axis, keepDim),
                  ref: ([x]) => refReduce(kind, x!, shape, axis),
                  outShape,
                });
              });
            }
          }
        }
      }
      for (const kind of ["sum", "mean"] as const) {
        for (const shape of [[3, 5, 7], [1], [45, 65]] as const) {
          for (const keepDim of [false, true]) {
            it(`${kind} over all of ${fmt(shape)}${keepDim ? " keepDim" : ""}`, () => {
              const rng = mulberry32(41);
              gradcheck({
                name: `${kind} all ${fmt(shape)}`,
                inputs: [randInput(rng, "x", shape)],
                op: ([x]) => (kind === "sum" ? sum(x!, undefined, keepDim) : mean(x!, undefined, keepDim)),
                ref: ([x]) => refReduce(kind, x!, shape),
                outShape: keepDim ? shape.map(() => 1) : [],
              });
            });
          }
        }
      }
      it("max sends the gradient of a tie to the first maximal element", () => {
        const x = tensor([1, 3, 3, -1, 2, 2], [2, 3], true);
        const m = max(x, 1);
        assertExact("max forward", m.data, [3, 2]);
        backward(m, Float32Array.of(10, 20));
        assertExact("max grad", x.grad!, [0, 10, 0, 0, 20, 0], x.shape);
      });
      it("argmaxLast picks the first maximum of each row", () => {
        assertExact("argmaxLast", argmaxLast(tensor([1, 3, 3, -1, -2, -1], [2, 3])), [1, 0]);
      });
      it("an out-of-range axis throws a ShapeError naming the op and the shape", () => {
        assert.throws(() => sum(tensor(new Float32Array(6), [2, 3]), 2), /sum: axis 2 is out of range for shape \[2, 3\]/);
        assert.throws(() => max(tensor(new Float32Array(6), [2, 3]), -3), /max: axis -3 is out of range for shape \[2, 3\]/);
      });
    });

    // -----------------------------------------------------------------------------------------
    describe("data movement", () => {
      it("reshape [3, 5, 7] → [5, -1] and → [105]", () => {
        const rng = mulberry32(51);
        for (const target of [[5, -1], [105], [1, 3, 35, 1]]) {
          gradcheck({
            name: `reshape ${fmt(target)}`,
            inputs: [randInput(rng, "x", [3, 5, 7])],
            op: ([x]) => reshape(x!, target),
            ref: ([x]) => x!.slice(),
            outShape: target.map((d) => (d === -1 ? 21 : d)),
          });
        }
        assert.throws(() => reshape(tensor(new Float32Array(6), [2, 3]), [4, -1]), /reshape: cannot reshape \[2, 3\] into \[4, -1\]/);
        assert.throws(() => reshape(tensor(new Float32Array(6), [2, 3]), [4, 2]), /reshape: cannot reshape \[2, 3\]/);
      });

      const perms: Array<[readonly number[], readonly number[]]> = [
        [[3, 5, 7], [2, 0, 1]],
        [[3, 5, 7], [1, 0, 2]],
        [[3, 5, 7], [0, 1, 2]],
        [[2, 3, 1, 4], [3, 1, 0, 2]],
        [[45, 65], [1, 0]],
      ];
      for (const [shape, perm] of perms) {
        it(`permute ${fmt(shape)} by ${fmt(perm)}`, () => {
          const rng = mulberry32(61);
          gradcheck({
            name: `permute ${fmt(shape)} ${fmt(perm)}`,
            inputs: [randInput(rng, "x", shape)],
            op: ([x]) => permute(x!, perm),
            ref: ([x]) => refPermute(x!, shape, perm),
            outShape: perm.map((p) => shape[p]!),
          });
        });
      }
      it("transpose: default last two axes, and axes 0 and 2", () => {
        const rng = mulberry32(62);
        const shape = [3, 5, 7];
        gradcheck({ name: "transpose()", inputs: [randInput(rng, "x", shape)], op: ([x]) => transpose(x!), ref: ([x]) => refPermute(x!, shape, [0, 2, 1]), outShape: [3, 7, 5] });
        gradcheck({ name: "transpose(0, 2)", inputs: [randInput(rng, "x", shape)], op: ([x]) => transpose(x!, 0, 2), ref: ([x]) => refPermute(x!, shape, [2, 1, 0]), outShape: [7, 5, 3] });
        assert.throws(() => permute(tensor(new Float32Array(6), [2, 3]), [0, 0]), /permute: \[0, 0\] is not a permutation/);
      });

      const slices: Array<[number, number, number]> = [[0, 1, 3], [1, 0, 5], [-1, 6, 7], [2, 2, 5], [1, 2, 2]];
      for (const [axis, start, end] of slices) {
        it(`slice [3, 5, 7] axis ${axis} [${start}, ${end})`, () => {
          const rng = mulberry32(71);
          const shape = [3, 5, 7];
          gradcheck({
            name: `slice axis ${axis} [${start}, ${end})`,
            inputs: [randInput(rng, "x", shape)],
            op: ([x]) => slice(x!, axis, start, end),
            ref: ([x]) => refIndexSelect(x!, shape, axis, range(start, end)),
          });
        });
      }
      it("slice out of bounds throws", () => {
        assert.throws(() => slice(tensor(new Float32Array(6), [2, 3]), 1, 2, 4), /slice: range \[2, 4\) is out of bounds for axis 1 of size 3/);
      });

      const selects: Array<[number, number[]]> = [[1, [0, 4, 4, 2, 0]], [0, [2, 2, 2]], [-1, [6, 0, 3, 6]]];
      for (const [axis, idx] of selects) {
        it(`indexSelect [3, 5, 7] axis ${axis} with repeated indices ${fmt(idx)}`, () => {
          const rng = mulberry32(81);
          const shape = [3, 5, 7];
          gradcheck({
            name: `indexSelect axis ${axis} ${fmt(idx)}`,
            inputs: [randInput(rng, "x", shape)],
            op: ([x]) => indexSelect(x!, axis, idx),
            ref: ([x]) => refIndexSelect(x!, shape, axis, idx),
          });
        });
      }
      it("indexSelect with an out-of-range index throws", () => {
        assert.throws(() => indexSelect(tensor(new Float32Array(6), [2, 3]), 1, [0, 3]), /indexSelect: index 3 is out of range for axis 1 of size 3/);
      });

      it("selectPositions on [3, 5, 7] and on [4, 6]", () => {
        const rng = mulberry32(91);
        const pos = [4, 0, 4];
        gradcheck({
          name: "selectPositions [3, 5, 7]",
          inputs: [randInput(rng, "x", [3, 5, 7])],
          op: ([x]) => selectPositions(x!, pos),
          ref: ([x]) => {
            const out = new Float64Array(3 * 7);
            for (let b = 0; b < 3; b++) for (let c = 0; c < 7; c++) out[b * 7 + c] = x![(b * 5 + pos[b]!) * 7 + c]!;
            return out;
          },
          outShape: [3, 7],
        });
        const pos2 = [5, 1, 1, 0];
        gradcheck({
          name: "selectPositions [4, 6]",
          inputs: [randInput(rng, "x", [4, 6])],
          op: ([x]) => selectPositions(x!, pos2),
          ref: ([x]) => Float64Array.from(pos2, (p, b) => x![b * 6 + p]!),
          outShape: [4],
        });
        assert.throws(() => selectPositions(tensor(new Float32Array(6), [2, 3]), [0]), /selectPositions: 1 positions for a batch of 2/);
      });

      it("gatherLast [3, 5, 7] with a [3, 5, 4] index (repeats)", () => {
        const rng = mulberry32(101);
        const idx = randInts(rng, 3 * 5 * 4, 7);
        idx[0] = idx[1]!; // a guaranteed repeat within a row
        gradcheck({
          name: "gatherLast",
          inputs: [randInput(rng, "x", [3, 5, 7])],
          op: ([x]) => gatherLast(x!, idx, [3, 5, 4]),
          ref: ([x]) => Float64Array.from(idx, (k, f) => x![Math.floor(f / 4) * 7 + k]!),
          outShape: [3, 5, 4],
        });
      });

      it("gatherLast rejects an index whose leading dims differ from the input's, even with the same row count", () => {
        const a = tensor(new Float32Array(3 * 5 * 7), [3, 5, 7]);
        assert.throws(() => gatherLast(a, new Int32Array(5 * 3 * 4), [5, 3, 4]), /gatherLast: index shape \[5, 3, 4\] does not match input \[3, 5, 7\] outside the last axis/);
        assert.throws(() => gatherLast(a, new Int32Array(15 * 4), [15, 4]), /gatherLast: index shape \[15, 4\] does not match input \[3, 5, 7\]/);
        assert.throws(() => gatherLast(a, Int32Array.of(7), [1, 1, 1]), /gatherLast: index shape \[1, 1, 1\] does not match/);
        assert.throws(() => gatherLast(tensor(new Float32Array(7), [1, 7]), Int32Array.of(7), [1, 1]), /gatherLast: index 7 out of range for last axis of size 7/);
      });

      for (const axis of [0, 1, 2, -1]) {
        it(`concat three tensors along axis ${axis} (the middle one without requiresGrad)`, () => {
          const rng = mulberry32(111);
          const ax = axis < 0 ? 3 + axis : axis;
          const shapes = [2, 1, 3].map((m) => [2, 3, 4].map((d, i) => (i === ax ? m : d)));
          gradcheck({
            name: `concat axis ${axis}`,
            inputs: shapes.map((s, i) => randInput(rng, `t${i}`, s, i !== 1)),
            op: (ts) => concat(ts, axis),
            ref: (xs) => {
              const outShape = [2, 3, 4].map((d, i) => (i === ax ? 6 : d));
              const outer = numelOf(outShape.slice(0, ax));
              const inner = numelOf(outShape.slice(ax + 1));
              const out = new Float64Array(numelOf(outShape));
              let off = 0;
              xs.forEach((x, t) => {
                const m = shapes[t]![ax]!;
                for (let o = 0; o < outer; o++) for (let j = 0; j < m * inner; j++) out[(o * 6 + off) * inner + j] = x[o * m * inner + j]!;
                off += m;
              });
              return out;
            },
            outShape: [2, 3, 4].map((d, i) => (i === ax ? 6 : d)),
          });
        });
      }
      it("concat with mismatched shapes throws naming every shape", () => {
        assert.throws(() => concat([tensor(new Float32Array(6), [2, 3]), tensor(new Float32Array(4), [1, 4])], 0), /concat: shapes \[2, 3\], \[1, 4\] differ outside axis 0/);
      });

      it("embedding [11, 6] looked up by [2, 5] ids with repeats", () => {
        const rng = mulberry32(121);
        const ids = Int32Array.from([3, 3, 0, 10, 3, 7, 0, 0, 10, 5]);
        gradcheck({
          name: "embedding",
          inputs: [randInput(rng, "W", [11, 6])],
          op: ([W]) => embedding(W!, ids, [2, 5]),
          ref: ([W]) => refIndexSelect(W!, [11, 6], 0, ids),
          outShape: [2, 5, 6],
        });
        assert.throws(() => embedding(tensor(new Float32Array(6), [2, 3]), Int32Array.of(2), [1]), /embedding: token id 2 is out of range for a vocabulary of 2/);
      });
    });

    // -----------------------------------------------------------------------------------------
    describe("matmul and linear", () => {
      // [a's op shape batch dims, M, K, N, b batched?]
      const cases: Array<{ batch: number[]; M: number; K: number; N: number; bBatched: boolean }> = [
        { batch: [], M: 5, K: 7, N: 3, bBatched: false },
        { batch: [], M: 1, K: 1, N: 1, bBatched: false },
        { batch: [], M: 1, K: 9, N: 6, bBatched: false },
        { batch: [], M: 45, K: 65, N: 33, bBatched: false },
        { batch: [2, 3], M: 5, K: 7, N: 3, bBatched: false },
        { batch: [2, 3], M: 5, K: 7, N: 3, bBatched: true },
        { batch: [4], M: 1, K: 5, N: 1, bBatched: true },
        { batch: [1], M: 3, K: 4, N: 2, bBatched: false },
      ];
      for (const c of cases) {
        for (const transA of [false, true]) {
          for (const transB of [false, true]) {
            const aShape = [...c.batch, ...(transA ? [c.K, c.M] : [c.M, c.K])];
            const bShape = [...(c.bBatched ? c.batch : []), ...(transB ? [c.N, c.K] : [c.K, c.N])];
            it(`matmul ${fmt(aShape)}${transA ? "ᵀ" : ""} · ${fmt(bShape)}${transB ? "ᵀ" : ""}`, () => {
              const rng = mulberry32(131 + c.M + c.K);
              gradcheck({
                name: `matmul ${fmt(aShape)} transA=${transA} ${fmt(bShape)} transB=${transB}`,
                inputs: [randInput(rng, "a", aShape), randInput(rng, "b", bShape)],
                op: ([a, b]) => matmul(a!, b!, { transA, transB }),
                ref: ([a, b]) => refMatmul(a!, aShape, b!, bShape, transA, transB),
                outShape: [...c.batch, c.M, c.N],
              });
            });
          }
        }
      }
      it("matmul with only one operand requiring a gradient", () => {
        const rng = mulberry32(141);
        for (const [ga, gb] of [[true, false], [false, true]] as const) {
          for (const transA of [false, true]) {
            const aShape = transA ? [2, 4, 3] : [2, 3, 4];
            gradcheck({
              name: `matmul requiresGrad a=${ga} b=${gb} transA=${transA}`,
              inputs: [randInput(rng, "a", aShape, ga), randInput(rng, "b", [4, 5], gb)],
              op: ([a, b]) => matmul(a!, b!, { transA }),
              ref: ([a, b]) => refMatmul(a!, aShape, b!, [4, 5], transA, false),
            });
          }
        }
      });
      it("matmul with the same tensor on both sides: x·xᵀ, and batched xᵀ·x", () => {
        const rng = mulberry32(142);
        gradcheck({
          name: "x·xᵀ",
          inputs: [randInput(rng, "x", [5, 7])],
          op: ([x]) => matmul(x!, x!, { transB: true }),
          ref: ([x]) => refMatmul(x!, [5, 7], x!, [5, 7], false, true),
          outShape: [5, 5],
        });
        gradcheck({
          name: "batched xᵀ·x",
          inputs: [randInput(rng, "x", [2, 5, 3])],
          op: ([x]) => matmul(x!, x!, { transA: true }),
          ref: ([x]) => refMatmul(x!, [2, 5, 3], x!, [2, 5, 3], true, false),
          outShape: [2, 3, 3],
        });
      });
      it("matmul shape errors name the op and both shapes", () => {
        const a = tensor(new Float32Array(6), [2, 3]);
        assert.throws(() => matmul(a, tensor(new Float32Array(20), [4, 5])), /^ShapeError: matmul: cannot multiply \[2, 3\] by \[4, 5\] \(inner dims 3 and 4\)/);
        assert.throws(() => matmul(tensor(new Float32Array(12), [2, 2, 3]), tensor(new Float32Array(9), [3, 3, 1])), /matmul: cannot multiply \[2, 2, 3\] by \[3, 3, 1\].*batch dims must match/);
        assert.throws(() => matmul(tensor(new Float32Array(3), [3]), a), /matmul: both inputs need at least 2 dims, got \[3\] and \[2, 3\]/);
      });

      for (const [xShape, I, O] of [[[2, 3, 5], 5, 4], [[45, 65], 65, 33], [[1, 1], 1, 1], [[7], 7, 3]] as const) {
        for (const withBias of [true, false]) {
          it(`linear ${fmt(xShape)} · [${I}, ${O}]${withBias ? " + bias" : ""}`, () => {
            const rng = mulberry32(151 + I);
            const rows = numelOf(xShape) / I;
            const inputs = [randInput(rng, "x", xShape), randInput(rng, "W", [I, O])];
            if (withBias) inputs.push(randInput(rng, "bias", [O]));
            gradcheck({
              name: `linear ${fmt(xShape)} bias=${withBias}`,
              inputs,
              op: ([x, W, b]) => linear(x!, W!, b ?? null),
              ref: ([x, W, b]) => {
                const out = refMatmul(x!, [rows, I], W!, [I, O], false, false);
                if (b) for (let r = 0; r < rows; r++) for (let o = 0; o < O; o++) out[r * O + o]! += b[o]!;
                return out;
              },
              outShape: [...xShape.slice(0, -1), O],
            });
          });
        }
      }
      it("linear without gradients on W and bias", () => {
        const rng = mulberry32(161);
        gradcheck({
          name: "linear x-only",
          inputs: [randInput(rng, "x", [3, 4]), randInput(rng, "W", [4, 2], false), randInput(rng, "bias", [2], false)],
          op: ([x, W, b]) => linear(x!, W!, b!),
          ref: ([x, W, b]) => {
            const out = refMatmul(x!, [3, 4], W!, [4, 2], false, false);
            for (let i = 0; i < out.length; i++) out[i]! += b![i % 2]!;
            return out;
          },
        });
      });
      it("linear shape errors", () => {
        const W = tensor(new Float32Array(12), [4, 3]);
        assert.throws(() => linear(tensor(new Float32Array(6), [2, 3]), W, null), /linear: input \[2, 3\] does not end in 4 \(weight \[4, 3\]\)/);
        assert.throws(() => linear(tensor(new Float32Array(8), [2, 4]), W, tensor(new Float32Array(4), [4])), /linear: bias \[4\] does not match weight \[4, 3\], expected \[3\]/);
      });
    });

    // -----------------------------------------------------------------------------------------
    describe("LayerNorm", () => {
      const shapes: Array<readonly number[]> = [[3, 5, 7], [45, 65], [4, 1], [1, 9]];
      for (const shape of shapes) {
        const C = shape[shape.length - 1]!;
        const data = (rng: Rand): Float32Array => randArray(rng, numelOf(shape)).map((v, i) => 2.5 * v + (i % C) * 0.3 - 1); // offset and spread: mean removal matters
        it(`lnScale → lnNormalize → affineLast equals the float64 LayerNorm on ${fmt(shape)}, as one composite`, () => {
          const rng = mulberry32(171 + C);
          const w = positive(rng, C, 0.5);
          gradcheck({
            name: `LayerNorm composite ${fmt(shape)}`,
            inputs: [input("x", shape, data(rng)), input("w", [C], w), randInput(rng, "b", [C])],
            op: ([x, w, b]) => affineLast(lnNormalize(x!, lnScale(x!, EPS_LN)), w!, b!),
            ref: ([x, w, b]) => refLayerNorm(x!, C, w!, b!, EPS_LN),
            outShape: shape,
          });
        });
        it(`layerNorm (no bias) ${fmt(shape)}`, () => {
          const rng = mulberry32(172 + C);
          gradcheck({
            name: `layerNorm ${fmt(shape)}`,
            inputs: [input("x", shape, data(rng)), randInput(rng, "w", [C])],
            op: ([x, w]) => layerNorm(x!, w!, null, EPS_LN),
            ref: ([x, w]) => refLayerNorm(x!, C, w!, null, EPS_LN),
          });
        });
        it(`lnScale alone ${fmt(shape)}`, () => {
          const rng = mulberry32(173 + C);
          gradcheck({
            name: `lnScale ${fmt(shape)}`,
            inputs: [input("x", shape, data(rng))],
            op: ([x]) => lnScale(x!, EPS_LN),
            ref: ([x]) => refLnScale(x!, C, EPS_LN),
            outShape: [...shape.slice(0, -1), 1],
          });
        });
        it(`lnNormalize alone, scale an independent input, ${fmt(shape)}`, () => {
          const rng = mulberry32(174 + C);
          const sShape = [...shape.slice(0, -1), 1];
          gradcheck({
            name: `lnNormalize ${fmt(shape)}`,
            inputs: [input("x", shape, data(rng)), input("scale", sShape, positive(rng, numelOf(sShape), 0.5))],
            op: ([x, s]) => lnNormalize(x!, s!),
            ref: ([x, s]) => {
              const out = new Float64Array(x!.length);
              for (let r = 0; r < x!.length / C; r++) {
                let m = 0;
                for (let c = 0; c < C; c++) m += x![r * C + c]!;
                m /= C;
                for (let c = 0; c < C; c++) out[r * C + c] = (x![r * C + c]! - m) / s![r]!;
              }
              return out;
            },
          });
        });
      }
      it("layerNorm as one op equals lnScale → lnNormalize → affineLast bit for bit, forward and every gradient", () => {
        const rng = mulberry32(185);
        const shape = [3, 37, 48]; // rows split over threads; 48 and 37 are not multiples of the vector width
        const C = 48;
        const xs = randArray(rng, numelOf(shape)).map((v, i) => 3 * v + (i % C) * 0.1 - 2);
        const ws = positive(rng, C, 0.5);
        const bs = randArray(rng, C);
        const gOut = randArray(rng, numelOf(shape));
        for (const withBias of [true, false]) {
          for (const xGrad of [true, false]) {
            const make = (): [Tensor, Tensor, Tensor] => [new Tensor(xs.slice(), shape, xGrad), new Tensor(ws.slice(), [C], true), new Tensor(bs.slice(), [C], true)];
            const [x1, w1, b1] = make();
            const [x2, w2, b2] = make();
            const fused = layerNorm(x1, w1, withBias ? b1 : null, EPS_LN);
            const chain = affineLast(lnNormalize(x2, lnScale(x2, EPS_LN)), w2, withBias ? b2 : null);
            const what = `${withBias ? "with" : "without"} bias, x ${xGrad ? "" : "not "}requiring a gradient`;
            assertExact(`layerNorm ${what}`, fused.data, chain.data, shape);
            backward(fused, gOut);
            backward(chain, gOut);
            if (xGrad) assertExact(`dx ${what}`, x1.grad!, x2.grad!, shape);
            else assert.equal(x1.grad, null);
            assertExact(`dw ${what}`, w1.grad!, w2.grad!, [C]);
            if (withBias) assertExact(`db ${what}`, b1.grad!, b2.grad!, [C]);
          }
        }
      });
      it("geluNewInPlace and addInPlace give geluNew's and add's bits over their input's buffer, outside autograd only", () => {
        const rng = mulberry32(186);
        const xs = randArray(rng, 5 * 37, 3);
        const x = new Tensor(xs.slice(), [5, 37]);
        const want = geluNew(new Tensor(xs.slice(), [5, 37])).data;
        const y = geluNewInPlace(x);
        assert.equal(y, x);
        assertExact("geluNewInPlace", y.data, want, [5, 37]);
        const a = new Tensor(randArray(rng, 6), [2, 3]), b = new Tensor(randArray(rng, 6), [2, 3]);
        const sum = add(a, b).data;
        assertExact("addInPlace", addInPlace(a, b).data, sum, [2, 3]);
        const w = new Tensor(randArray(rng, 6), [2, 3], true);
        assert.throws(() => geluNewInPlace(w), /geluNewInPlace: x requires a gradient; use geluNew/);
        // recorded like add: the same gradients into both inputs, in separate buffers
        const p = new Tensor(randArray(rng, 6), [2, 3], true), q = new Tensor(randArray(rng, 6), [2, 3], true);
        const gOut = randArray(rng, 6);
        backward(addInPlace(p, q), gOut);
        assertExact("d/dp of addInPlace", p.grad!, gOut, [2, 3]);
        assertExact("d/dq of addInPlace", q.grad!, gOut, [2, 3]);
        assert.notEqual(p.grad, q.grad);
        assert.throws(() => addInPlace(a, new Tensor(new Float32Array(3), [3])), /addInPlace: shapes \[2, 3\] and \[3\] differ/);
        assert.equal(noGrad(() => geluNewInPlace(w)), w); // under noGrad nothing is recorded, so it may
      });
      it("layerNorm's shape errors name the op and the shapes", () => {
        const x = tensor(new Float32Array(6), [2, 3]);
        assert.throws(() => layerNorm(x, tensor(new Float32Array(4), [4]), null, EPS_LN), /layerNorm: weight \[4\] do not match last dim of \[2, 3\]/);
        assert.throws(() => layerNorm(x, tensor(new Float32Array(3), [3]), tensor(new Float32Array(2), [2]), EPS_LN), /layerNorm: weight \[3\] \/ bias \[2\] do not match last dim of \[2, 3\]/);
      });
      it("affineLast with and without bias, and with x not requiring a gradient", () => {
        const rng = mulberry32(181);
        const shape = [2, 3, 5];
        const ref = ([x, w, b]: Float64Array[]): Float64Array => x!.map((v, i) => v * w![i % 5]! + (b ? b[i % 5]! : 0));
        gradcheck({ name: "affineLast bias", inputs: [randInput(rng, "x", shape), randInput(rng, "w", [5]), randInput(rng, "b", [5])], op: ([x, w, b]) => affineLast(x!, w!, b!), ref });
        gradcheck({ name: "affineLast no bias", inputs: [randInput(rng, "x", shape), randInput(rng, "w", [5])], op: ([x, w]) => affineLast(x!, w!, null), ref });
        gradcheck({ name: "affineLast params only", inputs: [randInput(rng, "x", shape, false), randInput(rng, "w", [5]), randInput(rng, "b", [5])], op: ([x, w, b]) => affineLast(x!, w!, b!), ref });
      });
      it("LayerNorm output rows have mean 0 and variance var/(var + eps) before the affine", () => {
        const rng = mulberry32(182);
        const x = tensor(randArray(rng, 4 * 16, 3), [4, 16]);
        const y = lnNormalize(x, lnScale(x, EPS_LN));
        for (let r = 0; r < 4; r++) {
          const row = Array.from(y.data.subarray(r * 16, r * 16 + 16));
          const m = row.reduce((s, v) => s + v, 0) / 16;
          const v = row.reduce((s, u) => s + (u - m) ** 2, 0) / 16;
          assert.ok(Math.abs(m) < 1e-6 && Math.abs(v - 1) < 1e-5, `row ${r}: mean ${m}, variance ${v}`);
        }
      });
    });

    // -----------------------------------------------------------------------------------------
    describe("softmax family, cross-entropy, mse, dropout", () => {
      for (const shape of [[3, 5, 7], [45, 65], [4, 1], [1]] as const) {
        const C = shape[shape.length - 1]!;
        it(`softmax ${fmt(shape)}`, () => {
          const rng = mulberry32(191 + C);
          gradcheck({ name: `softmax ${fmt(shape)}`, inputs: [input("x", shape, randArray(rng, numelOf(shape), 2))], op: ([x]) => softmax(x!), ref: ([x]) => refSoftmax(x!, C), outShape: shape });
        });
        it(`logSoftmax ${fmt(shape)}`, () => {
          const rng = mulberry32(192 + C);
          gradcheck({ name: `logSoftmax ${fmt(shape)}`, inputs: [input("x", shape, randArray(rng, numelOf(shape), 2))], op: ([x]) => logSoftmax(x!), ref: ([x]) => refLogSoftmax(x!, C), outShape: shape });
        });
      }
      it("softmax: -Infinity gets probability 0, an all -Infinity row gives zeros, huge logits stay finite", () => {
        const x = tensor([0, -Infinity, 1, -Infinity, -Infinity, -Infinity, 1000, 999, -1000], [3, 3], true);
        const y = softmax(x);
        const e = Math.E;
        assertClose("softmax masked", y.data, [1 / (1 + e), 0, e / (1 + e), 0, 0, 0, e / (1 + e), 1 / (1 + e), 0], { atol: 1e-7, rtol: 1e-6 });
        backward(y, Float32Array.from({ length: 9 }, (_, i) => i + 1));
        assert.ok(x.grad!.every(Number.isFinite), `softmax grad not finite: ${x.grad}`);
        assert.equal(x.grad![1], 0);
        assert.deepEqual([...x.grad!.subarray(3, 6)], [0, 0, 0]);
        const ls = logSoftmax(tensor([1000, 999, -1000], [1, 3]));
        assertClose("logSoftmax of huge logits", ls.data, [-Math.log(1 + 1 / e), -1 - Math.log(1 + 1 / e), -2000 - Math.log(1 + 1 / e)], { atol: 1e-4, rtol: 1e-6 });
      });

      it("crossEntropy [6, 9] and [2, 3, 9] logits, with and without ignoreIndex", () => {
        const rng = mulberry32(201);
        for (const shape of [[6, 9], [2, 3, 9]] as const) {
          const rows = numelOf(shape) / 9;
          const targets = randInts(rng, rows, 9);
          gradcheck({
            name: `crossEntropy ${fmt(shape)}`,
            inputs: [input("logits", shape, randArray(rng, numelOf(shape), 2))],
            op: ([x]) => crossEntropy(x!, targets),
            ref: ([x]) => refCrossEntropy(x!, 9, targets),
            outShape: [],
          });
          const withIgnored = Int32Array.from(targets, (t, i) => (i % 3 === 1 ? -100 : t));
          gradcheck({
            name: `crossEntropy ${fmt(shape)} ignoreIndex -100`,
            inputs: [input("logits", shape, randArray(rng, numelOf(shape), 2))],
            op: ([x]) => crossEntropy(x!, withIgnored, { ignoreIndex: -100 }),
            ref: ([x]) => refCrossEntropy(x!, 9, withIgnored, -100),
          });
        }
      });
      it("crossEntropy: every row ignored gives 0 and a zero gradient; bad targets throw", () => {
        const x = tensor([1, 2, 3, 4], [2, 2], true);
        const l = crossEntropy(x, [7, 7], { ignoreIndex: 7 });
        assert.equal(l.item(), 0);
        backward(l);
        assert.ok(x.grad === null || x.grad.every((v) => v === 0), `grad ${x.grad}`);
        assert.throws(() => crossEntropy(x, [0, 2]), /crossEntropy: target 2 at row 1 is out of range for 2 classes/);
        assert.throws(() => crossEntropy(x, [0]), /crossEntropy: 1 targets for 2 rows of logits \[2, 2\]/);
      });
      it("crossEntropy of uniform logits is log V", () => {
        assertClose("log V", [crossEntropy(tensor(new Float32Array(2 * 50), [2, 50]), [3, 49]).item()], [Math.log(50)], { atol: 1e-6, rtol: 1e-6 });
      });

      it("mse [3, 5, 7], both sides requiring gradients, and target fixed", () => {
        const rng = mulberry32(211);
        const ref = ([p, t]: Float64Array[]): Float64Array => Float64Array.of(p!.reduce((s, v, i) => s + (v - t![i]!) ** 2, 0) / p!.length);
        gradcheck({ name: "mse", inputs: [randInput(rng, "pred", [3, 5, 7]), randInput(rng, "target", [3, 5, 7])], op: ([p, t]) => mse(p!, t!), ref, outShape: [] });
        gradcheck({ name: "mse fixed target", inputs: [randInput(rng, "pred", [45, 1]), randInput(rng, "target", [45, 1], false)], op: ([p, t]) => mse(p!, t!), ref });
      });

      it("dropout with a fixed mask through the Rng", () => {
        const rng = mulberry32(221);
        for (const p of [0.3, 0.9]) {
          const seed = 77;
          gradcheck({
            name: `dropout p=${p}`,
            inputs: [randInput(rng, "x", [3, 5, 7])],
            op: ([x]) => dropout(x!, p, new Rng(seed)),
            ref: ([x]) => {
              const r = new Rng(seed); // the same stream: one uniform per element, kept when ≥ p
              return x!.map((v) => (r.uniform() >= p ? v / (1 - p) : 0));
            },
          });
        }
      });
      it("dropout: the kept fraction is about 1 - p; p = 0 and eval mode return the input; p ≥ 1 throws", () => {
        const x = tensor(new Float32Array(20000).fill(1), [20000], true);
        const y = dropout(x, 0.25, new Rng(3));
        const kept = y.data.reduce((s, v) => s + (v !== 0 ? 1 : 0), 0) / 20000;
        assert.ok(Math.abs(kept - 0.75) < 0.02, `kept fraction ${kept}`);
        assert.ok(y.data.every((v) => v === 0 || Math.abs(v - 4 / 3) < 1e-6));
        assert.equal(dropout(x, 0, new Rng(3)), x);
        assert.equal(dropout(x, 0.5, new Rng(3), false), x);
        assert.throws(() => dropout(x, 1, new Rng(3)), /dropout: p must be in \[0, 1\), got 1/);
      });
    });
  });
}
