/**
 * The model's configuration, in TransformerLens's vocabulary, and its conversion from and to
 * a Hugging Face GPT-2 `config.json`.
 */
import { SelfreportError } from "../errors.ts";

export interface ModelConfig {
  /** Number of transformer blocks (HF n_layer). */
  nLayers: number;
  /** Residual stream width (HF n_embd). */
  dModel: number;
  /** Attention heads per block (HF n_head). */
  nHeads: number;
  /** Width of one head: dModel / nHeads. */
  dHead: number;
  /** MLP hidden width (HF n_inner, default 4·dModel). */
  dMlp: number;
  /** Maximum sequence length (HF n_positions). */
  nCtx: number;
  /** Vocabulary size (HF vocab_size). */
  dVocab: number;
  /** LayerNorm epsilon (HF layer_norm_epsilon). */
  lnEps: number;
  /** MLP non-linearity; GPT-2 uses the tanh approximation of GELU. */
  actFn: "gelu_new";
  /** Whether the unembedding is W_Eᵀ (GPT-2's tie_word_embeddings). */
  tiedEmbeddings: boolean;
}

/** The Hugging Face GPT-2 config fields selfreport reads and writes. */
export interface HfGpt2Config {
  model_type?: string;
  architectures?: string[];
  n_layer: number;
  n_head: number;
  n_embd: number;
  n_positions?: number;
  n_ctx?: number;
  n_inner?: number | null;
  vocab_size: number;
  layer_norm_epsilon?: number;
  activation_function?: string;
  tie_word_embeddings?: boolean;
  bos_token_id?: number;
  eos_token_id?: number;
  [key: string]: unknown;
}

const GELU_TANH_NAMES = new Set(["gelu_new", "gelu_pytorch_tanh", "gelu_fast"]);

function positiveInt(json: Record<string, unknown>, key: string, file: string): number {
  const v = json[key];
  if (typeof v !== "number" || !Number.isInteger(v) || v <= 0) {
    throw new SelfreportError(`${file}: "${key}" must be a positive integer, got ${JSON.stringify(v)}`);
  }
  return v;
}

/** Reads a Hugging Face GPT-2 config.json object (already parsed). `file` names it in errors. */
export function configFromHf(json: Record<string, unknown>, file = "config.json"): ModelConfig {
  const modelType = json["model_type"];
  const archs = json["architectures"];
  if (modelType !== undefined && modelType !== "gpt2") {
    throw new SelfreportError(`${file}: model_type "${String(modelType)}" is not supported; selfreport runs the GPT-2 architecture (model_type "gpt2")`);
  }
  if (Array.isArray(archs) && archs.length > 0 && !archs.some((a) => typeof a === "string" && a.startsWith("GPT2"))) {
    throw new SelfreportError(`${file}: architecture ${JSON.stringify(archs)} is not supported; expected GPT2LMHeadModel (GPT-2 architecture)`);
  }
  const nLayers = positiveInt(json, "n_layer", file);
  const nHeads = positiveInt(json, "n_head", file);
  const dModel = positiveInt(json, "n_embd", file);
  const dVocab = positiveInt(json, "vocab_size", file);
  const nCtx = json["n_positions"] !== undefined ? positiveInt(json, "n_positions", file) : positiveInt(json, "n_ctx", file);
  const inner = json["n_inner"];
  const dMlp = inner === undefined || inner === null ? 4 * dModel : positiveInt(json, "n_inner", file);
  if (dModel % nHeads !== 0) {
    throw new SelfreportError(`${file}: n_embd ${dModel} is not divisible by n_head ${nHeads}`);
  }
  const act = json["activation_function"] ?? "gelu_new";
  if (typeof act !== "string" || !GELU_TANH_NAMES.has(act)) {
    throw new SelfreportError(`${file}: activation_function ${JSON.stringify(act)} is not supported; expected "gelu_new" (GPT-2's tanh-approximated GELU)`);
  }
  const eps = json["layer_norm_epsilon"] ?? 1e-5;
  if (typeof eps !== "number" || !(eps > 0)) throw new SelfreportError(`${file}: layer_norm_epsilon must be a positive number, got ${JSON.stringify(eps)}`);
  const tie = json["tie_word_embeddings"];
  return {
    nLayers,
    dModel,
    nHeads,
    dHead: dModel / nHeads,
    dMlp,
    nCtx,
    dVocab,
    lnEps: eps,
    actFn: "gelu_new",
    tiedEmbeddings: tie === undefined ? true : tie === true,
  };
}

export function configToHf(cfg: ModelConfig, extra: Record<string, unknown> = {}): HfGpt2Config {
  return {
    model_type: "gpt2",
    architectures: ["GPT2LMHeadModel"],
    n_layer: cfg.nLayers,
    n_head: cfg.nHeads,
    n_embd: cfg.dModel,
    n_positions: cfg.nCtx,
    n_ctx: cfg.nCtx,
    n_inner: cfg.dMlp === 4 * cfg.dModel ? null : cfg.dMlp,
    vocab_size: cfg.dVocab,
    layer_norm_epsilon: cfg.lnEps,
    activation_function: cfg.actFn,
    tie_word_embeddings: cfg.tiedEmbeddings,
    bos_token_id: 50256,
    eos_token_id: 50256,
    ...extra,
  };
}

/** A config from the few numbers a user chooses (pretraining, tests). */
export function makeConfig(o: { nLayers: number; dModel: number; nHeads: number; nCtx: number; dVocab?: number; dMlp?: number }): ModelConfig {
  for (const [k, v] of Object.entries(o)) {
    if (v !== undefined && (!Number.isInteger(v) || v <= 0)) throw new SelfreportError(`model size: ${k} must be a positive integer, got ${v}`);
  }
  if (o.dModel % o.nHeads !== 0) {
    throw new SelfreportError(`model size: d_model ${o.dModel} is not divisible by ${o.nHeads} heads (d_head would be ${(o.dModel / o.nHeads).toFixed(2)})`);
  }
  return {
    nLayers: o.nLayers,
    dModel: o.dModel,
    nHeads: o.nHeads,
    dHead: o.dModel / o.nHeads,
    dMlp: o.dMlp ?? 4 * o.dModel,
    nCtx: o.nCtx,
    dVocab: o.dVocab ?? 50257,
    lnEps: 1e-5,
    actFn: "gelu_new",
    tiedEmbeddings: true,
  };
}
