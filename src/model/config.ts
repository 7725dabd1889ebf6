/**
 * The model's configuration, in TransformerLens's vocabulary, and its conversion from and to
 * a Hugging Face `config.json`: GPT-2 (`GPT2LMHeadModel`), the Llama family (`LlamaForCausalLM`,
 * `MistralForCausalLM`, `Qwen2ForCausalLM`) and GPT-NeoX (`GPTNeoXForCausalLM`, Pythia).
 *
 * A GPT-2 config leaves the architecture fields (architecture … parallelAttnMlp) unset; `blockSpec`
 * gives every field with GPT-2's values filled in, so code reads one shape for every family.
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
  /** MLP non-linearity: GPT-2's tanh-approximated GELU, SiLU (Llama family, gated), exact GELU (NeoX). */
  actFn: ActFn;
  /** Whether the unembedding is W_Eᵀ (GPT-2's tie_word_embeddings). */
  tiedEmbeddings: boolean;
  // ---- architecture fields (TransformerLens's HookedTransformerConfig names); unset = GPT-2 ----
  /** The block family; unset = "gpt2". */
  architecture?: Architecture;
  /** The Hugging Face class named in config.json's `architectures` (e.g. "Qwen2ForCausalLM"). */
  hfArchitecture?: string;
  /** TL normalization_type: "LN" (LayerNorm with w and b) or "RMS" (RMSNorm, w only). */
  normalizationType?: "LN" | "RMS";
  /** TL positional_embedding_type: "standard" (learned W_pos) or "rotary" (no W_pos; q and k rotated). */
  positionalEmbeddingType?: "standard" | "rotary";
  /** TL rotary_dim: how many leading dimensions of each head are rotated (rotate-half layout). */
  rotaryDim?: number;
  /** TL rotary_base (HF rope_theta / rotary_emb_base). */
  rotaryBase?: number;
  /** TL n_key_value_heads: set only for grouped-query attention (fewer K/V heads than query heads). */
  nKeyValueHeads?: number;
  /** TL gated_mlp: post = act(x·W_gate)·(x·W_in) + b_in. */
  gatedMlp?: boolean;
  /** TL parallel_attn_mlp: attention and MLP both read resid_pre (no resid_mid). */
  parallelAttnMlp?: boolean;
  /** The config.json this config was read from (non-GPT-2 families), written back by configToHf. */
  hfConfig?: Record<string, unknown>;
}

export type ActFn = "gelu_new" | "silu" | "gelu";
export type Architecture = "gpt2" | "llama" | "neox";

/** Every architecture field of a config, GPT-2's values filled in where unset. */
export interface BlockSpec {
  architecture: Architecture;
  normalizationType: "LN" | "RMS";
  positionalEmbeddingType: "standard" | "rotary";
  rotaryDim: number;
  rotaryBase: number;
  /** K/V heads: nKeyValueHeads, or nHeads without grouped-query attention. */
  nKvHeads: number;
  /** Whether K/V weights are stored per K/V head under TL's GQA names (_W_K, _W_V, _b_K, _b_V). */
  gqa: boolean;
  gatedMlp: boolean;
  parallelAttnMlp: boolean;
}

export function blockSpec(cfg: ModelConfig): BlockSpec {
  const nKv = cfg.nKeyValueHeads ?? cfg.nHeads;
  return {
    architecture: cfg.architecture ?? "gpt2",
    normalizationType: cfg.normalizationType ?? "LN",
    positionalEmbeddingType: cfg.positionalEmbeddingType ?? "standard",
    rotaryDim: cfg.rotaryDim ?? 0,
    rotaryBase: cfg.rotaryBase ?? 10000,
    nKvHeads: nKv,
    gqa: cfg.nKeyValueHeads !== undefined,
    gatedMlp: cfg.gatedMlp ?? false,
    parallelAttnMlp: cfg.parallelAttnMlp ?? false,
  };
}

/** The Hugging Face classes selfreport runs, by family. */
export const SUPPORTED_ARCHITECTURES: Readonly<Record<string, { architecture: Architecture; modelType: string }>> = {
  GPT2LMHeadModel: { architecture: "gpt2", modelType: "gpt2" },
  LlamaForCausalLM: { architecture: "llama", modelType: "llama" },
  MistralForCausalLM: { architecture: "llama", modelType: "mistral" },
  Qwen2ForCausalLM: { architecture: "llama", modelType: "qwen2" },
  GPTNeoXForCausalLM: { architecture: "neox", modelType: "gpt_neox" },
};

function supportedList(): string {
  return Object.entries(SUPPORTED_ARCHITECTURES).map(([a, { modelType }]) => `${a} (model_type "${modelType}")`).join(", ");
}

/** The family a config.json describes, from `architectures` (or `model_type` when that is absent); one error for anything else. */
export function architectureOf(json: Record<string, unknown>, file = "config.json"): { architecture: Architecture; hfArchitecture: string } {
  const archs = json["architectures"];
  const modelType = json["model_type"];
  if (Array.isArray(archs) && archs.length > 0) {
    for (const a of archs) {
      if (typeof a !== "string") continue;
      const known = SUPPORTED_ARCHITECTURES[a] ?? (a.startsWith("GPT2") ? SUPPORTED_ARCHITECTURES["GPT2LMHeadModel"]! : undefined);
      if (known === undefined) continue;
      if (modelType !== undefined && modelType !== known.modelType) {
        throw new SelfreportError(`${file}: model_type ${JSON.stringify(modelType)} does not match architecture ${a} (model_type "${known.modelType}"); selfreport runs ${supportedList()}`);
      }
      return { architecture: known.architecture, hfArchitecture: known.architecture === "gpt2" ? "GPT2LMHeadModel" : a };
    }
    throw new SelfreportError(`${file}: architecture ${JSON.stringify(archs)} is not supported; selfreport runs ${supportedList()}`);
  }
  if (modelType === undefined || modelType === "gpt2") return { architecture: "gpt2", hfArchitecture: "GPT2LMHeadModel" };
  const byType = Object.entries(SUPPORTED_ARCHITECTURES).find(([, v]) => v.modelType === modelType);
  if (byType !== undefined) return { architecture: byType[1].architecture, hfArchitecture: byType[0] };
  throw new SelfreportError(`${file}: model_type ${JSON.stringify(modelType)} is not supported; selfreport runs ${supportedList()}`);
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

/**
 * Reads a Hugging Face config.json object (already parsed): GPT-2, the Llama family or GPT-NeoX
 * (see SUPPORTED_ARCHITECTURES). `file` names it in errors.
 */
export function configFromHf(json: Record<string, unknown>, file = "config.json"): ModelConfig {
  const { architecture, hfArchitecture } = architectureOf(json, file);
  if (architecture === "llama") return llamaConfigFromHf(json, file, hfArchitecture);
  if (architecture === "neox") return neoxConfigFromHf(json, file, hfArchitecture);
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
  if ((cfg.architecture ?? "gpt2") !== "gpt2") {
    if (cfg.hfConfig === undefined) throw new SelfreportError(`save: a ${cfg.architecture} model needs the config.json it was read from`);
    return { ...(cfg.hfConfig as HfGpt2Config), tie_word_embeddings: cfg.tiedEmbeddings, ...extra };
  }
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

function positiveNumber(json: Record<string, unknown>, key: string, file: string, fallback?: number): number {
  const v = json[key] ?? fallback;
  if (typeof v !== "number" || !(v > 0) || !Number.isFinite(v)) throw new SelfreportError(`${file}: "${key}" must be a positive number, got ${JSON.stringify(json[key])}`);
  return v;
}

/** rope_scaling must be absent, null or {"rope_type"|"type": "default"}: selfreport runs plain rotary only. */
function checkPlainRope(json: Record<string, unknown>, file: string): void {
  const rs = json["rope_scaling"];
  if (rs === undefined || rs === null) return;
  const kind = typeof rs === "object" && !Array.isArray(rs) ? ((rs as Record<string, unknown>)["rope_type"] ?? (rs as Record<string, unknown>)["type"]) : undefined;
  if (kind === "default") return;
  throw new SelfreportError(`${file}: rope_scaling ${JSON.stringify(rs)} is not supported; selfreport runs plain rotary embeddings only (rope_scaling null or {"rope_type": "default"})`);
}

/** LlamaForCausalLM / MistralForCausalLM / Qwen2ForCausalLM, as TransformerLens configures them. */
function llamaConfigFromHf(json: Record<string, unknown>, file: string, hfArchitecture: string): ModelConfig {
  const nLayers = positiveInt(json, "num_hidden_layers", file);
  const nHeads = positiveInt(json, "num_attention_heads", file);
  const dModel = positiveInt(json, "hidden_size", file);
  const dMlp = positiveInt(json, "intermediate_size", file);
  const dVocab = positiveInt(json, "vocab_size", file);
  const nKv = json["num_key_value_heads"] === undefined || json["num_key_value_heads"] === null ? nHeads : positiveInt(json, "num_key_value_heads", file);
  if (nHeads % nKv !== 0) throw new SelfreportError(`${file}: num_attention_heads ${nHeads} is not a multiple of num_key_value_heads ${nKv}`);
  const dHead = json["head_dim"] === undefined || json["head_dim"] === null ? dModel / nHeads : positiveInt(json, "head_dim", file);
  if (!Number.isInteger(dHead)) throw new SelfreportError(`${file}: hidden_size ${dModel} is not divisible by num_attention_heads ${nHeads}`);
  if (dHead % 2 !== 0) throw new SelfreportError(`${file}: the head dimension ${dHead} is odd; rotary embeddings need an even one`);
  const act = json["hidden_act"] ?? "silu";
  if (act !== "silu") throw new SelfreportError(`${file}: hidden_act ${JSON.stringify(act)} is not supported for ${hfArchitecture}; expected "silu"`);
  checkPlainRope(json, file);
  if (json["mlp_bias"] === true) throw new SelfreportError(`${file}: mlp_bias true is not supported (TransformerLens's gated MLP has no gate/up biases)`);
  if (json["use_sliding_window"] === true) throw new SelfreportError(`${file}: use_sliding_window true is not supported; selfreport runs full causal attention`);
  let nCtx = positiveInt(json, "max_position_embeddings", file);
  // Mistral's sliding window: attention never reaches further back than sliding_window tokens, so a
  // context no longer than the window is exact.
  const window = json["sliding_window"];
  if (hfArchitecture === "MistralForCausalLM" && typeof window === "number" && window > 0) nCtx = Math.min(nCtx, window);
  const eps = positiveNumber(json, "rms_norm_eps", file, 1e-6);
  const tie = json["tie_word_embeddings"];
  return {
    nLayers, dModel, nHeads, dHead, dMlp, nCtx, dVocab, lnEps: eps, actFn: "silu",
    tiedEmbeddings: tie === true,
    architecture: "llama",
    hfArchitecture,
    normalizationType: "RMS",
    positionalEmbeddingType: "rotary",
    rotaryDim: dHead,
    rotaryBase: positiveNumber(json, "rope_theta", file, 10000),
    // TransformerLens sets n_key_value_heads (GQA names _W_K …) always for Mistral and Qwen2, for Llama only when fewer than the heads
    ...(nKv !== nHeads || hfArchitecture !== "LlamaForCausalLM" ? { nKeyValueHeads: nKv } : {}),
    gatedMlp: true,
    parallelAttnMlp: false,
    hfConfig: { ...json },
  };
}

/** GPTNeoXForCausalLM (Pythia), as TransformerLens configures it. */
function neoxConfigFromHf(json: Record<string, unknown>, file: string, hfArchitecture: string): ModelConfig {
  const nLayers = positiveInt(json, "num_hidden_layers", file);
  const nHeads = positiveInt(json, "num_attention_heads", file);
  const dModel = positiveInt(json, "hidden_size", file);
  const dMlp = positiveInt(json, "intermediate_size", file);
  const dVocab = positiveInt(json, "vocab_size", file);
  const nCtx = positiveInt(json, "max_position_embeddings", file);
  if (dModel % nHeads !== 0) throw new SelfreportError(`${file}: hidden_size ${dModel} is not divisible by num_attention_heads ${nHeads}`);
  const dHead = dModel / nHeads;
  const act = json["hidden_act"] ?? "gelu";
  if (act !== "gelu") throw new SelfreportError(`${file}: hidden_act ${JSON.stringify(act)} is not supported for ${hfArchitecture}; expected "gelu" (exact GELU)`);
  const pct = json["rotary_pct"] ?? json["partial_rotary_factor"] ?? 1;
  if (typeof pct !== "number" || !(pct > 0 && pct <= 1)) throw new SelfreportError(`${file}: rotary_pct must be a number in (0, 1], got ${JSON.stringify(pct)}`);
  const rotaryDim = Math.floor(dHead * pct); // HF: int(head_size * rotary_pct)
  if (rotaryDim < 2 || rotaryDim % 2 !== 0) throw new SelfreportError(`${file}: rotary_pct ${pct} gives ${rotaryDim} rotary dimensions of a ${dHead}-wide head; expected an even number ≥ 2`);
  checkPlainRope(json, file);
  if (json["attention_bias"] === false) throw new SelfreportError(`${file}: attention_bias false is not supported; GPT-NeoX checkpoints carry attention biases`);
  const eps = positiveNumber(json, "layer_norm_eps", file, 1e-5);
  return {
    nLayers, dModel, nHeads, dHead, dMlp, nCtx, dVocab, lnEps: eps, actFn: "gelu",
    tiedEmbeddings: json["tie_word_embeddings"] === true,
    architecture: "neox",
    hfArchitecture,
    normalizationType: "LN",
    positionalEmbeddingType: "rotary",
    rotaryDim,
    rotaryBase: positiveNumber(json, "rotary_emb_base", file, json["rope_theta"] as number | undefined ?? 10000),
    gatedMlp: false,
    parallelAttnMlp: json["use_parallel_residual"] !== false,
    hfConfig: { ...json },
  };
}
