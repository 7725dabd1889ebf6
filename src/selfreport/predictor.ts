/**
 * The ActivationPredictor: a base model plus a head that reads the residual stream
 * (`blocks.{feature_layer}.hook_resid_post` at the read position) and predicts the target activation.
 *
 * Heads (state-dict names and PyTorch nn.Linear layout [out, in], as the original Python tool):
 *   regression      [hidden.weight/bias →] output.weight [1, d] / output.bias [1];
 *                   predicts the standardised target z = (a − mean)/std; prediction = z·std + mean.
 *   classification  [hidden →] output.weight [K, d] / output.bias [K]: logits over K quantile bins;
 *                   prediction = Σ_i p_i · centre_i.
 *   token           the model's own final LayerNorm, then output.weight [10, d] / output.bias [10]
 *                   initialised from the unembedding columns of GPT-2's digit tokens "0"…"9"
 *                   (ids 15…24, never ASCII 48…57): the model answers with a digit; digit d means
 *                   "the activation is in quantile bin d" (10 bins), and the prediction is the
 *                   expected bin centre Σ_d p_d · centre_d, exactly as the classification head.
 *
 * This file is shared by the trainer and the analyses (they never import the trainer).
 */
import {
  Tensor, Rng, add, matmul, linear, affineScalar, relu, geluNew, tanh, dropout, reshape, softmax, selectPositions, noGrad, ShapeError,
} from "../tensor/index.ts";
import type { HookedTransformer, TokenBatch } from "../model/transformer.ts";
import type { Hook } from "../model/hooks.ts";
import { SelfreportError } from "../errors.ts";
import { blockSpec, type ModelConfig } from "../model/config.ts";
import { hasTokenizerFiles } from "../model/load.ts";
import { loadTokenizer } from "../model/tokenizer.ts";
import { digitTokenIds } from "../model/tokenizer-json.ts";
import { binCentres } from "./stats.ts";
import { checkFiniteTensor } from "../io/schema.ts";

export type HeadType = "regression" | "classification" | "token";
export const HEAD_TYPES: readonly HeadType[] = ["regression", "classification", "token"];
export type HiddenActivation = "relu" | "gelu" | "tanh";

/** GPT-2's token ids for the digits "0"…"9". */
export const GPT2_DIGIT_TOKENS: readonly number[] = [15, 16, 17, 18, 19, 20, 21, 22, 23, 24];
/** The ASCII codes an older version of the Python tool used by mistake. */
export const ASCII_DIGIT_CODES: readonly number[] = [48, 49, 50, 51, 52, 53, 54, 55, 56, 57];

export interface HeadConfig {
  class_name: "RegressionHead" | "ClassificationHead" | "TokenHead";
  input_dim: number;
  dropout: number;
  hidden_dim: number | null;
  activation: HiddenActivation | null;
  num_classes: number | null;
  digit_tokens: number[] | null;
}

const CLASS_NAMES: Record<HeadType, HeadConfig["class_name"]> = {
  regression: "RegressionHead",
  classification: "ClassificationHead",
  token: "TokenHead",
};

/** The class name selfreport stores for a head type. */
export function headClassName(type: HeadType): HeadConfig["class_name"] {
  return CLASS_NAMES[type];
}

export function headTypeOf(cfg: HeadConfig): HeadType {
  const t = (Object.keys(CLASS_NAMES) as HeadType[]).find((k) => CLASS_NAMES[k] === cfg.class_name);
  if (t === undefined) throw new SelfreportError(`unknown head class_name "${cfg.class_name}"; expected one of ${Object.values(CLASS_NAMES).join(", ")}`);
  return t;
}

/**
 * The ten token ids a token head answers with, "0"…"9", found in the model's vocabulary
 * (digitTokenIds of its tokenizer); a GPT-2 model saved without tokenizer files (tests, `init`)
 * has GPT-2's vocabulary, so its digits are 15–24. Other families need their tokenizer.
 */
export function modelDigitTokens(dir: string, cfg: ModelConfig): number[] {
  if (hasTokenizerFiles(dir)) return digitTokenIds(loadTokenizer(dir));
  if (blockSpec(cfg).architecture === "gpt2") return [...GPT2_DIGIT_TOKENS];
  throw new SelfreportError(`${dir}: a token head answers with the model's digit tokens, found in its tokenizer, but the folder has no tokenizer.json`);
}

export function makeHeadConfig(type: HeadType, o: { inputDim: number; dropout?: number; hiddenDim?: number | null; activation?: HiddenActivation | null; numClasses?: number; digitTokens?: readonly number[] }): HeadConfig {
  if (!HEAD_TYPES.includes(type)) throw new SelfreportError(`unknown head "${String(type)}"; expected one of ${HEAD_TYPES.join(", ")}`);
  const dropoutP = o.dropout ?? 0;
  if (!(dropoutP >= 0 && dropoutP < 1)) throw new SelfreportError(`--dropout must be in [0, 1), got ${dropoutP}`);
  const hidden = o.hiddenDim ?? null;
  if (hidden !== null && (!Number.isInteger(hidden) || hidden < 1)) throw new SelfreportError(`--hidden-dim must be a positive integer, got ${hidden}`);
  if (type === "token" && hidden !== null) throw new SelfreportError("the token head reads through the model's own unembedding and has no hidden layer; drop --hidden-dim");
  const numClasses = type === "regression" ? null : type === "token" ? 10 : (o.numClasses ?? 10);
  if (type === "token" && o.numClasses !== undefined && o.numClasses !== 10) {
    throw new SelfreportError(`the token head answers with the 10 digit tokens, so it needs exactly 10 bins; got --num-classes ${o.numClasses}`);
  }
  if (numClasses !== null && (!Number.isInteger(numClasses) || numClasses < 2)) throw new SelfreportError(`--num-classes must be an integer ≥ 2, got ${numClasses}`);
  return {
    class_name: CLASS_NAMES[type],
    input_dim: o.inputDim,
    dropout: dropoutP,
    hidden_dim: hidden,
    activation: hidden === null ? null : (o.activation ?? "relu"),
    num_classes: numClasses,
    digit_tokens: type === "token" ? [...(o.digitTokens ?? GPT2_DIGIT_TOKENS)] : null,
  };
}

export type HeadParams = Map<string, Tensor>;

/** Expected shapes of a head's tensors, by state-dict name. */
export function headShapes(cfg: HeadConfig): Array<[string, number[]]> {
  const type = headTypeOf(cfg);
  const out = type === "regression" ? 1 : cfg.num_classes!;
  const shapes: Array<[string, number[]]> = [];
  let inDim = cfg.input_dim;
  if (cfg.hidden_dim !== null) {
    shapes.push(["hidden.weight", [cfg.hidden_dim, inDim]], ["hidden.bias", [cfg.hidden_dim]]);
    inDim = cfg.hidden_dim;
  }
  shapes.push(["output.weight", [out, inDim]], ["output.bias", [out]]);
  return shapes;
}

/**
 * A head's initial weights: PyTorch nn.Linear's default U(−1/√in, 1/√in) from the seed for
 * regression and classification; the model's digit unembedding columns for the token head.
 */
export function initHead(cfg: HeadConfig, seed: number, model: HookedTransformer | null): HeadParams {
  const type = headTypeOf(cfg);
  const rng = new Rng(seed);
  const params: HeadParams = new Map();
  if (type === "token") {
    if (model === null) throw new Error("initHead: the token head needs the model");
    const digits = cfg.digit_tokens!;
    const { dModel: C, dVocab: V } = model.cfg;
    const WU = model.W_U.data; // [C, V]
    const W = new Float32Array(10 * C);
    digits.forEach((id, d) => {
      if (id < 0 || id >= V) throw new SelfreportError(`digit token id ${id} is out of range for the vocabulary (${V})`);
      for (let c = 0; c < C; c++) W[d * C + c] = WU[c * V + id]!;
    });
    params.set("output.weight", new Tensor(W, [10, C]));
    params.set("output.bias", new Tensor(Float32Array.from(digits, (id) => model.b_U.data[id]!), [10]));
    return params;
  }
  for (const [name, shape] of headShapes(cfg)) {
    const fanIn = name.startsWith("hidden") ? cfg.input_dim : (cfg.hidden_dim ?? cfg.input_dim);
    const bound = 1 / Math.sqrt(fanIn);
    const t = new Tensor(new Float32Array(shape.reduce((a, b) => a * b, 1)), shape);
    for (let i = 0; i < t.size; i++) t.data[i] = (rng.uniform() * 2 - 1) * bound;
    params.set(name, t);
  }
  return params;
}

export function checkHeadParams(cfg: HeadConfig, params: HeadParams, source: string): void {
  for (const [name, shape] of headShapes(cfg)) {
    const t = params.get(name);
    if (t === undefined) throw new SelfreportError(`${source}: head tensor "${name}" is missing (expected [${shape.join(", ")}])`);
    if (t.ndim !== shape.length || t.shape.some((d, i) => d !== shape[i])) {
      throw new SelfreportError(`${source}: head tensor "${name}" has shape [${t.shape.join(", ")}], expected [${shape.join(", ")}] for this head_config`);
    }
    checkFiniteTensor(t.data, source, name, "head tensor");
  }
}

export interface HeadRunOptions {
  training?: boolean;
  rng?: Rng;
}

/** nn.Linear: x [B, in] · Wᵀ + b with W [out, in]. */
function torchLinear(x: Tensor, W: Tensor, b: Tensor): Tensor {
  return add(matmul(x, W, { transB: true }), b);
}

/**
 * The head's raw output for features [B, C] read from the residual stream:
 * regression → [B] (standardised units), classification/token → logits [B, K].
 */
export function headForward(cfg: HeadConfig, params: HeadParams, features: Tensor, model: HookedTransformer | null, opts: HeadRunOptions = {}): Tensor {
  if (features.ndim !== 2 || features.shape[1] !== cfg.input_dim) {
    throw new ShapeError(`head: features have shape [${features.shape.join(", ")}], expected [batch, ${cfg.input_dim}]`);
  }
  const type = headTypeOf(cfg);
  let x = features;
  if (type === "token") {
    if (model === null) throw new Error("headForward: the token head needs the model (its final LayerNorm)");
    x = model.lnFinal(x);
  }
  const training = opts.training ?? false;
  if (cfg.hidden_dim !== null) {
    x = torchLinear(x, params.get("hidden.weight")!, params.get("hidden.bias")!);
    x = cfg.activation === "gelu" ? geluNew(x) : cfg.activation === "tanh" ? tanh(x) : relu(x);
  }
  if (cfg.dropout > 0 && training) x = dropout(x, cfg.dropout, opts.rng ?? new Rng(0), true);
  const out = torchLinear(x, params.get("output.weight")!, params.get("output.bias")!);
  return type === "regression" ? reshape(out, [features.shape[0]!]) : out;
}

/** What a head's output means in activation units. */
export interface Readout {
  activationMean: number;
  activationStd: number;
  binEdges: readonly number[];
}

/** Predicted activations [B] from a head's raw output. */
export function predictionsFromOutput(type: HeadType, out: Tensor, r: Readout): Float32Array {
  const B = out.shape[0]!;
  const pred = new Float32Array(B);
  if (type === "regression") {
    for (let b = 0; b < B; b++) pred[b] = out.data[b]! * r.activationStd + r.activationMean;
    return pred;
  }
  const centres = binCentres(r.binEdges);
  const K = out.shape[1]!;
  if (K !== centres.length) throw new SelfreportError(`head has ${K} classes but the run has ${centres.length} bins`);
  const p = noGrad(() => softmax(out)).data;
  for (let b = 0; b < B; b++) {
    let s = 0;
    for (let k = 0; k < K; k++) s += p[b * K + k]! * centres[k]!;
    pred[b] = s;
  }
  return pred;
}

/**
 * The differentiable prediction [B] in activation units (Σ p·centre for the bin heads), for
 * gradient-based analyses.
 */
export function predictionTensor(type: HeadType, out: Tensor, r: Readout): Tensor {
  if (type === "regression") {
    return affineScalar(out, r.activationStd, r.activationMean);
  }
  const centres = binCentres(r.binEdges);
  const p = softmax(out); // [B, K]
  return reshape(linear(p, new Tensor(Float32Array.from(centres), [centres.length, 1]), null), [out.shape[0]!]);
}

/** Residual-stream features at each example's read position: resid_post of featureLayer → [B, C]. */
export function readFeatures(model: HookedTransformer, batch: TokenBatch, positions: ArrayLike<number>, featureLayer: number, hooks: readonly Hook[] = []): Tensor {
  const { resid } = model.forward(batch, { stopAtLayer: featureLayer + 1, hooks });
  return selectPositions(resid, positions);
}
