/**
 * Predictor heads: shapes, the read-out in activation units on hand-worked cases, the token head's
 * initialisation from the unembedding columns of GPT-2's digit tokens (checked against W_U
 * directly), gradients of the prediction against float64 central differences, and config errors.
 */
import { test, after } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Tensor, Rng } from "../../src/tensor/index.ts";
import { loadModel } from "../../src/model/load.ts";
import { SelfreportError } from "../../src/errors.ts";
import {
  makeHeadConfig, initHead, headForward, headShapes, checkHeadParams, predictionsFromOutput, predictionTensor, headTypeOf,
  GPT2_DIGIT_TOKENS, type HeadParams, type HeadType, type Readout, type HeadConfig,
} from "../../src/selfreport/predictor.ts";
import { makeTinyHfModel } from "../helpers/tiny-model.ts";
import { mulberry32 } from "../helpers/rng.ts";
import { gradcheck, randArray, refLayerNorm, refMatmul, refSoftmax, assertExact } from "../tensor/gradcheck.ts";

const root = mkdtempSync(join(tmpdir(), "selfreport-predictor-"));
after(() => rmSync(root, { recursive: true, force: true }));

const C = 8;
makeTinyHfModel(join(root, "untied"), { dModel: C, nHeads: 2, dVocab: 64, tied: false, seed: 5 });
makeTinyHfModel(join(root, "tied"), { dModel: C, nHeads: 2, dVocab: 64, tied: true, seed: 6 });
const untied = loadModel(join(root, "untied"), { weights: "raw" }).model;
const tied = loadModel(join(root, "tied"), { weights: "raw" }).model;
// a non-zero unembedding bias, so the bias initialisation is checked too
for (let v = 0; v < 64; v++) untied.b_U.data[v] = (v - 30) / 64;

const rng = mulberry32(77);

test("headShapes and headForward output shapes for every head type, with and without a hidden layer", () => {
  const x = new Tensor(randArray(rng, 5 * C), [5, C]);
  const cases: Array<[HeadType, number | null, number[]]> = [
    ["regression", null, [5]], ["regression", 6, [5]], ["classification", null, [5, 7]], ["classification", 6, [5, 7]], ["token", null, [5, 10]],
  ];
  for (const [type, hidden, shape] of cases) {
    const cfg = makeHeadConfig(type, { inputDim: C, hiddenDim: hidden, numClasses: type === "classification" ? 7 : undefined });
    const head = initHead(cfg, 1, untied);
    checkHeadParams(cfg, head, "test");
    for (const [name, s] of headShapes(cfg)) assert.deepEqual(head.get(name)!.shape, s, `${type} ${name}`);
    assert.deepEqual(headForward(cfg, head, x, untied).shape, shape, `${type} hidden ${hidden}`);
  }
  const reg = makeHeadConfig("regression", { inputDim: C, hiddenDim: 6 });
  assert.deepEqual(headShapes(reg), [["hidden.weight", [6, C]], ["hidden.bias", [6]], ["output.weight", [1, 6]], ["output.bias", [1]]]);
  assert.equal(reg.activation, "relu", "default hidden activation");
  assert.throws(() => headForward(reg, initHead(reg, 0, null), new Tensor(new Float32Array(2 * 5), [2, 5]), null), /features have shape \[2, 5\], expected \[batch, 8\]/);
});

test("regression and classification init: nn.Linear's U(−1/√fan_in, 1/√fan_in), seeded", () => {
  const cfg = makeHeadConfig("regression", { inputDim: C, hiddenDim: 4 });
  const a = initHead(cfg, 3, null);
  const b = initHead(cfg, 3, null);
  const c = initHead(cfg, 4, null);
  for (const [k, t] of a) {
    assertExact(`same seed ${k}`, t.data, b.get(k)!.data);
    const bound = 1 / Math.sqrt(k.startsWith("hidden") ? C : 4);
    for (const v of t.data) assert.ok(Math.abs(v) <= bound, `${k}: ${v} outside ±${bound}`);
  }
  assert.notDeepEqual(Array.from(a.get("output.weight")!.data), Array.from(c.get("output.weight")!.data));
});

test("token head init: rows are the W_U columns of ids 15–24 (not the ASCII codes 48–57), bias b_U[15..24]", () => {
  const cfg = makeHeadConfig("token", { inputDim: C });
  assert.deepEqual(cfg.digit_tokens, [15, 16, 17, 18, 19, 20, 21, 22, 23, 24]);
  assert.deepEqual([...GPT2_DIGIT_TOKENS], cfg.digit_tokens);
  assert.equal(cfg.num_classes, 10);
  const WU = untied.p("unembed.W_U").data; // [C, V], straight from the parameter map
  const head = initHead(cfg, 0, untied);
  const W = head.get("output.weight")!.data; // [10, C]
  const bias = head.get("output.bias")!.data;
  for (let d = 0; d < 10; d++) {
    for (let c = 0; c < C; c++) {
      assert.equal(W[d * C + c], WU[c * 64 + 15 + d], `row ${d}, column ${c}`);
      assert.notEqual(W[d * C + c], WU[c * 64 + 48 + d], `row ${d} must not be ASCII column ${48 + d}`);
    }
    assert.equal(bias[d], (15 + d - 30) / 64, `bias ${d}`);
  }
  // tied embeddings: W_U = W_Eᵀ, so row d is W_E[15 + d]
  const WE = tied.p("embed.W_E").data; // [V, C]
  const th = initHead(cfg, 0, tied).get("output.weight")!.data;
  for (let d = 0; d < 10; d++) for (let c = 0; c < C; c++) assert.equal(th[d * C + c], WE[(15 + d) * C + c]);
  // a vocabulary without the digit ids is refused
  assert.throws(() => initHead({ ...cfg, digit_tokens: [15, 16, 17, 18, 19, 20, 21, 22, 23, 99] }, 0, untied), /digit token id 99 is out of range for the vocabulary \(64\)/);
});

test("regression prediction = z·std + mean", () => {
  const r: Readout = { activationMean: 0.5, activationStd: 2, binEdges: [] };
  const out = new Tensor(Float32Array.of(-1, 0, 0.25), [3]);
  assert.deepEqual(Array.from(predictionsFromOutput("regression", out, r)), [-1.5, 0.5, 1]);
  assert.deepEqual(Array.from(predictionTensor("regression", out, r).data), [-1.5, 0.5, 1]);
});

test("classification prediction = Σ p_i·centre_i on a hand-worked case", () => {
  // edges 0, 1, 2, 4 → centres 0.5, 1.5, 3; logits log(1, 2, 3) → p = (1/6, 2/6, 3/6)
  // prediction = 0.5/6 + 1.5·2/6 + 3·3/6 = 12.5/6; uniform logits → (0.5 + 1.5 + 3)/3 = 5/3
  const r: Readout = { activationMean: 0, activationStd: 1, binEdges: [0, 1, 2, 4] };
  const out = new Tensor(Float32Array.of(0, Math.log(2), Math.log(3), 7, 7, 7), [2, 3]);
  const p = predictionsFromOutput("classification", out, r);
  assert.ok(Math.abs(p[0]! - 12.5 / 6) < 1e-6, `${p[0]}`);
  assert.ok(Math.abs(p[1]! - 5 / 3) < 1e-6, `${p[1]}`);
  const t = predictionTensor("classification", out, r).data;
  assert.ok(Math.abs(t[0]! - p[0]!) < 1e-6 && Math.abs(t[1]! - p[1]!) < 1e-6);
  assert.throws(() => predictionsFromOutput("classification", out, { ...r, binEdges: [0, 1, 2] }), /head has 3 classes but the run has 2 bins/);
});

// ---- gradients of the prediction (activation units) against float64 central differences

const B = 3;
const H = 4;
const lnW = Float64Array.from(untied.p("ln_final.w").data);
const lnB = Float64Array.from(untied.p("ln_final.b").data);

/** x [B, in] · Wᵀ + b, W [out, in], in float64. */
function refLinear(x: Float64Array, inDim: number, W: Float64Array, b: Float64Array): Float64Array {
  const out = b.length;
  const y = refMatmul(x, [x.length / inDim, inDim], W, [out, inDim], false, true);
  for (let i = 0; i < y.length; i++) y[i]! += b[i % out]!;
  return y;
}

function refExpected(logits: Float64Array, centres: number[]): Float64Array {
  const K = centres.length;
  const p = refSoftmax(logits, K);
  return Float64Array.from({ length: logits.length / K }, (_, b) => centres.reduce((s, c, k) => s + p[b * K + k]! * c, 0));
}

function centresOf(edges: number[]): number[] {
  return edges.slice(0, -1).map((e, i) => (e + edges[i + 1]!) / 2);
}

function checkHeadGradient(name: string, cfg: HeadConfig, readout: Readout, ref: (xs: Float64Array[]) => Float64Array): void {
  const type = headTypeOf(cfg);
  const shapes = headShapes(cfg);
  const init = initHead(cfg, 9, untied);
  gradcheck({
    name,
    inputs: [
      { name: "features", shape: [B, C], data: randArray(rng, B * C) },
      ...shapes.map(([k, s]) => ({ name: k, shape: s, data: type === "token" ? init.get(k)!.data.map((v) => v * 4) : randArray(rng, init.get(k)!.size, 0.7) })),
    ],
    op: (xs) => {
      const params: HeadParams = new Map(shapes.map(([k], i) => [k, xs[i + 1]!]));
      return predictionTensor(type, headForward(cfg, params, xs[0]!, untied), readout);
    },
    ref,
    outShape: [B],
  });
}

test("gradient of a regression head's prediction (tanh hidden layer) matches central differences", () => {
  const cfg = makeHeadConfig("regression", { inputDim: C, hiddenDim: H, activation: "tanh" });
  const r: Readout = { activationMean: 0.3, activationStd: 1.7, binEdges: [] };
  checkHeadGradient("regression head", cfg, r, ([x, Wh, bh, Wo, bo]) => {
    const h = refLinear(x!, C, Wh!, bh!).map(Math.tanh);
    return refLinear(h, H, Wo!, bo!).map((z) => z * 1.7 + 0.3);
  });
});

test("gradient of a classification head's expected bin centre (gelu hidden layer) matches central differences", () => {
  const cfg = makeHeadConfig("classification", { inputDim: C, hiddenDim: H, activation: "gelu", numClasses: 4 });
  const edges = [-1, 0, 0.5, 2, 5];
  const gelu = (v: number): number => 0.5 * v * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (v + 0.044715 * v ** 3)));
  checkHeadGradient("classification head", cfg, { activationMean: 0, activationStd: 1, binEdges: edges }, ([x, Wh, bh, Wo, bo]) => {
    const h = refLinear(x!, C, Wh!, bh!).map(gelu);
    return refExpected(refLinear(h, H, Wo!, bo!), centresOf(edges));
  });
});

test("gradient of a token head's prediction (through ln_final) matches central differences", () => {
  const cfg = makeHeadConfig("token", { inputDim: C });
  const edges = Array.from({ length: 11 }, (_, i) => i * i * 0.1);
  checkHeadGradient("token head", cfg, { activationMean: 0, activationStd: 1, binEdges: edges }, ([x, Wo, bo]) => {
    const n = refLayerNorm(x!, C, lnW, lnB, untied.cfg.lnEps);
    return refExpected(refLinear(n, C, Wo!, bo!), centresOf(edges));
  });
});

test("dropout acts only in training mode", () => {
  const cfg = makeHeadConfig("regression", { inputDim: C, dropout: 0.5 });
  const head = initHead(cfg, 2, null);
  const x = new Tensor(randArray(rng, 16 * C), [16, C]);
  const evalA = headForward(cfg, head, x, null).data;
  const evalB = headForward(cfg, head, x, null, { training: false, rng: new Rng(5) }).data;
  assertExact("eval ignores dropout", evalA, evalB);
  const trainOut = headForward(cfg, head, x, null, { training: true, rng: new Rng(5) }).data;
  assert.ok(trainOut.some((v, i) => v !== evalA[i]), "training mode drops features");
});

function throwsExactly(fn: () => unknown, message: string): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof SelfreportError, `not a SelfreportError: ${String(e)}`);
    assert.equal(e.message, message);
    return true;
  });
}

test("head config errors: token head with bins ≠ 10 or a hidden layer, bad dropout, unknown head", () => {
  throwsExactly(() => makeHeadConfig("token", { inputDim: C, numClasses: 5 }), "the token head answers with the 10 digit tokens, so it needs exactly 10 bins; got --num-classes 5");
  throwsExactly(() => makeHeadConfig("token", { inputDim: C, hiddenDim: 4 }), "the token head reads through the model's own unembedding and has no hidden layer; drop --hidden-dim");
  throwsExactly(() => makeHeadConfig("regression", { inputDim: C, dropout: 1 }), "--dropout must be in [0, 1), got 1");
  throwsExactly(() => makeHeadConfig("regression", { inputDim: C, dropout: -0.1 }), "--dropout must be in [0, 1), got -0.1");
  throwsExactly(() => makeHeadConfig("regression", { inputDim: C, dropout: NaN }), "--dropout must be in [0, 1), got NaN");
  throwsExactly(() => makeHeadConfig("regression", { inputDim: C, hiddenDim: 0 }), "--hidden-dim must be a positive integer, got 0");
  throwsExactly(() => makeHeadConfig("classification", { inputDim: C, numClasses: 1 }), "--num-classes must be an integer ≥ 2, got 1");
  throwsExactly(() => makeHeadConfig("ridge" as HeadType, { inputDim: C }), 'unknown head "ridge"; expected one of regression, classification, token');
  const cfg = makeHeadConfig("regression", { inputDim: C });
  throwsExactly(() => headTypeOf({ ...cfg, class_name: "LinearHead" as HeadConfig["class_name"] }), 'unknown head class_name "LinearHead"; expected one of RegressionHead, ClassificationHead, TokenHead');
  const head = initHead(cfg, 0, null);
  head.set("output.weight", new Tensor(new Float32Array(2 * C), [2, C]));
  throwsExactly(() => checkHeadParams(cfg, head, "h.safetensors"), `h.safetensors: head tensor "output.weight" has shape [2, ${C}], expected [1, ${C}] for this head_config`);
  head.set("output.weight", new Tensor(new Float32Array(C), [1, C]));
  head.delete("output.bias");
  throwsExactly(() => checkHeadParams(cfg, head, "h.safetensors"), 'h.safetensors: head tensor "output.bias" is missing (expected [1])');
});
