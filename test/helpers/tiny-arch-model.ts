/**
 * Tiny random Llama-family (LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM) and GPT-NeoX
 * models written exactly as Hugging Face lays them out on disk, for the architecture tests.
 *
 *   makeTinyLlamaModel(dir, opts) → { dir, config, weights }
 *     config.json        HF field names (architectures, model_type, num_hidden_layers, hidden_size,
 *                        num_attention_heads, num_key_value_heads, intermediate_size, vocab_size,
 *                        max_position_embeddings, rms_norm_eps, rope_theta, hidden_act "silu",
 *                        tie_word_embeddings, rope_scaling null)
 *     model.safetensors  `model.embed_tokens.weight` [V, C], `model.layers.{l}.input_layernorm.weight`,
 *                        `…self_attn.{q,k,v,o}_proj.weight` (nn.Linear [out, in]), q/k/v biases when
 *                        `qkvBias` (Qwen2), `…post_attention_layernorm.weight`,
 *                        `…mlp.{gate,up,down}_proj.weight`, `model.norm.weight`, `lm_head.weight` when untied
 *     or, with `shards: n`, model-0000i-of-0000n.safetensors + model.safetensors.index.json (weight_map).
 *   makeTinyNeoxModel(dir, opts) → { dir, config, weights }
 *     config.json        GPTNeoXForCausalLM fields (rotary_pct, rotary_emb_base, use_parallel_residual,
 *                        layer_norm_eps, hidden_act "gelu", tie_word_embeddings false)
 *     model.safetensors  `gpt_neox.embed_in.weight`, `gpt_neox.layers.{l}.{input,post_attention}_layernorm.{weight,bias}`,
 *                        `…attention.query_key_value.{weight,bias}` [3C, C] rows in (head, q|k|v, d_head) order,
 *                        `…attention.dense.{weight,bias}`, `…mlp.dense_h_to_4h.*`, `…mlp.dense_4h_to_h.*`,
 *                        `gpt_neox.final_layer_norm.*`, `embed_out.weight`, and the buffers
 *                        `…attention.rotary_emb.inv_freq` HF files may carry.
 *
 * Weights are scaled so activations are O(1) in a 16-wide model, norms get w ~ U(0.5, 1.5) (and
 * b ~ N(0, 0.2²) for LayerNorm) so that weight processing has something to fold. `weights` holds
 * every parameter under its HF key (no buffers).
 */
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { writeHfSafetensors, roundTo, type FileDtype, type HfTensor } from "./tiny-model.ts";
import { mulberry32, randn } from "./rng.ts";

export interface TinyArchModel {
  dir: string;
  config: Record<string, unknown>;
  weights: Map<string, HfTensor>;
}

export interface TinyLlamaOptions {
  architecture?: "LlamaForCausalLM" | "MistralForCausalLM" | "Qwen2ForCausalLM";
  nLayers?: number;
  dModel?: number;
  nHeads?: number;
  nKvHeads?: number;
  dMlp?: number;
  dVocab?: number;
  nCtx?: number;
  seed?: number;
  tied?: boolean;
  /** q/k/v biases (Qwen2 has them). */
  qkvBias?: boolean;
  ropeTheta?: number;
  eps?: number;
  /** Write this many shards and model.safetensors.index.json instead of model.safetensors. */
  shards?: number;
  /** Extra config.json fields. */
  extraConfig?: Record<string, unknown>;
  /** The file's dtype; `weights` hold the values as stored (rounded). */
  dtype?: FileDtype;
}

export interface TinyNeoxOptions {
  nLayers?: number;
  dModel?: number;
  nHeads?: number;
  dMlp?: number;
  dVocab?: number;
  nCtx?: number;
  seed?: number;
  rotaryPct?: number;
  rotaryBase?: number;
  parallel?: boolean;
  eps?: number;
  buffers?: boolean;
}

function filler(seed: number): { weights: Map<string, HfTensor>; normal: (k: string, shape: number[], std: number) => void; uniform: (k: string, shape: number[], lo: number, hi: number) => void } {
  const rng = mulberry32(seed);
  const weights = new Map<string, HfTensor>();
  const size = (shape: number[]): number => shape.reduce((a, b) => a * b, 1);
  return {
    weights,
    normal: (k, shape, std) => {
      const data = new Float32Array(size(shape));
      for (let i = 0; i < data.length; i++) data[i] = std * randn(rng);
      weights.set(k, { shape, data });
    },
    uniform: (k, shape, lo, hi) => {
      const data = new Float32Array(size(shape));
      for (let i = 0; i < data.length; i++) data[i] = lo + (hi - lo) * rng();
      weights.set(k, { shape, data });
    },
  };
}

function writeWeights(dir: string, weights: Map<string, HfTensor>, shards: number, extra: Map<string, HfTensor> = new Map(), dtype: FileDtype = "F32"): void {
  if (dtype !== "F32") for (const [k, t] of weights) weights.set(k, { shape: t.shape, data: roundTo(dtype, t.data) });
  const all = new Map([...weights, ...extra]);
  if (shards <= 1) {
    writeHfSafetensors(join(dir, "model.safetensors"), all, dtype);
    return;
  }
  const keys = [...all.keys()];
  const per = Math.ceil(keys.length / shards);
  const weightMap: Record<string, string> = {};
  for (let s = 0; s < shards; s++) {
    const file = `model-${String(s + 1).padStart(5, "0")}-of-${String(shards).padStart(5, "0")}.safetensors`;
    const part = new Map(keys.slice(s * per, (s + 1) * per).map((k) => [k, all.get(k)!] as const));
    for (const k of part.keys()) weightMap[k] = file;
    writeHfSafetensors(join(dir, file), part, dtype);
  }
  writeFileSync(join(dir, "model.safetensors.index.json"), JSON.stringify({ metadata: { total_size: 0 }, weight_map: weightMap }, null, 2));
}

export function makeTinyLlamaModel(dir: string, opts: TinyLlamaOptions = {}): TinyArchModel {
  const arch = opts.architecture ?? "LlamaForCausalLM";
  const L = opts.nLayers ?? 2;
  const C = opts.dModel ?? 16;
  const H = opts.nHeads ?? 4;
  const Hkv = opts.nKvHeads ?? H;
  const M = opts.dMlp ?? 24;
  const V = opts.dVocab ?? 40;
  const nCtx = opts.nCtx ?? 32;
  const tied = opts.tied ?? false;
  const Dh = C / H;
  const { weights, normal, uniform } = filler(opts.seed ?? 0);
  const inStd = (n: number): number => 1 / Math.sqrt(n);
  normal("model.embed_tokens.weight", [V, C], 1);
  for (let l = 0; l < L; l++) {
    const h = `model.layers.${l}`;
    uniform(`${h}.input_layernorm.weight`, [C], 0.5, 1.5);
    normal(`${h}.self_attn.q_proj.weight`, [H * Dh, C], 1.5 * inStd(C));
    normal(`${h}.self_attn.k_proj.weight`, [Hkv * Dh, C], 1.5 * inStd(C));
    normal(`${h}.self_attn.v_proj.weight`, [Hkv * Dh, C], inStd(C));
    if (opts.qkvBias === true) {
      normal(`${h}.self_attn.q_proj.bias`, [H * Dh], 0.3);
      normal(`${h}.self_attn.k_proj.bias`, [Hkv * Dh], 0.3);
      normal(`${h}.self_attn.v_proj.bias`, [Hkv * Dh], 0.3);
    }
    normal(`${h}.self_attn.o_proj.weight`, [C, H * Dh], inStd(C));
    uniform(`${h}.post_attention_layernorm.weight`, [C], 0.5, 1.5);
    normal(`${h}.mlp.gate_proj.weight`, [M, C], 1.5 * inStd(C));
    normal(`${h}.mlp.up_proj.weight`, [M, C], inStd(C));
    normal(`${h}.mlp.down_proj.weight`, [C, M], inStd(M));
  }
  uniform("model.norm.weight", [C], 0.5, 1.5);
  if (!tied) normal("lm_head.weight", [V, C], 0.5);
  const modelType = { LlamaForCausalLM: "llama", MistralForCausalLM: "mistral", Qwen2ForCausalLM: "qwen2" }[arch];
  const config: Record<string, unknown> = {
    architectures: [arch],
    model_type: modelType,
    attention_dropout: 0,
    bos_token_id: 1,
    eos_token_id: 2,
    hidden_act: "silu",
    hidden_size: C,
    initializer_range: 0.02,
    intermediate_size: M,
    max_position_embeddings: nCtx,
    num_attention_heads: H,
    num_hidden_layers: L,
    num_key_value_heads: Hkv,
    rms_norm_eps: opts.eps ?? 1e-6,
    rope_scaling: null,
    rope_theta: opts.ropeTheta ?? 10000,
    tie_word_embeddings: tied,
    torch_dtype: { F32: "float32", F16: "float16", BF16: "bfloat16" }[opts.dtype ?? "F32"],
    vocab_size: V,
    ...(arch === "Qwen2ForCausalLM" ? { use_sliding_window: false, sliding_window: nCtx, max_window_layers: L } : {}),
    ...(arch === "MistralForCausalLM" ? { sliding_window: 4096 } : {}),
    ...opts.extraConfig,
  };
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, "config.json"), JSON.stringify(config, null, 2) + "\n");
  writeWeights(dir, weights, opts.shards ?? 1, new Map(), opts.dtype ?? "F32");
  return { dir, config, weights };
}

export function makeTinyNeoxModel(dir: string, opts: TinyNeoxOptions = {}): TinyArchModel {
  const L = opts.nLayers ?? 2;
  const C = opts.dModel ?? 16;
  const H = opts.nHeads ?? 2;
  const M = opts.dMlp ?? 4 * C;
  const V = opts.dVocab ?? 40;
  const nCtx = opts.nCtx ?? 32;
  const pct = opts.rotaryPct ?? 0.25;
  const base = opts.rotaryBase ?? 10000;
  const { weights, normal, uniform } = filler(opts.seed ?? 0);
  const inStd = (n: number): number => 1 / Math.sqrt(n);
  normal("gpt_neox.embed_in.weight", [V, C], 1);
  for (let l = 0; l < L; l++) {
    const h = `gpt_neox.layers.${l}`;
    uniform(`${h}.input_layernorm.weight`, [C], 0.5, 1.5);
    normal(`${h}.input_layernorm.bias`, [C], 0.2);
    uniform(`${h}.post_attention_layernorm.weight`, [C], 0.5, 1.5);
    normal(`${h}.post_attention_layernorm.bias`, [C], 0.2);
    normal(`${h}.attention.query_key_value.weight`, [3 * C, C], 1.5 * inStd(C));
    normal(`${h}.attention.query_key_value.bias`, [3 * C], 0.2);
    normal(`${h}.attention.dense.weight`, [C, C], inStd(C));
    normal(`${h}.attention.dense.bias`, [C], 0.1);
    normal(`${h}.mlp.dense_h_to_4h.weight`, [M, C], inStd(C));
    normal(`${h}.mlp.dense_h_to_4h.bias`, [M], 0.3);
    normal(`${h}.mlp.dense_4h_to_h.weight`, [C, M], inStd(M));
    normal(`${h}.mlp.dense_4h_to_h.bias`, [C], 0.1);
  }
  uniform("gpt_neox.final_layer_norm.weight", [C], 0.5, 1.5);
  normal("gpt_neox.final_layer_norm.bias", [C], 0.2);
  normal("embed_out.weight", [V, C], 0.5);
  const config: Record<string, unknown> = {
    architectures: ["GPTNeoXForCausalLM"],
    model_type: "gpt_neox",
    bos_token_id: 0,
    eos_token_id: 0,
    hidden_act: "gelu",
    hidden_size: C,
    initializer_range: 0.02,
    intermediate_size: M,
    layer_norm_eps: opts.eps ?? 1e-5,
    max_position_embeddings: nCtx,
    num_attention_heads: H,
    num_hidden_layers: L,
    rotary_emb_base: base,
    rotary_pct: pct,
    tie_word_embeddings: false,
    torch_dtype: "float32",
    use_parallel_residual: opts.parallel ?? true,
    vocab_size: V,
  };
  const extra = new Map<string, HfTensor>();
  if (opts.buffers ?? true) {
    const rot = Math.floor((C / H) * pct);
    const inv = new Float32Array(rot / 2);
    for (let i = 0; i < rot / 2; i++) inv[i] = 1 / base ** ((2 * i) / rot);
    for (let l = 0; l < L; l++) extra.set(`gpt_neox.layers.${l}.attention.rotary_emb.inv_freq`, { shape: [rot / 2], data: inv });
  }
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, "config.json"), JSON.stringify(config, null, 2) + "\n");
  writeWeights(dir, weights, 1, extra);
  return { dir, config, weights };
}

/**
 * A character-level SentencePiece-style tokenizer.json (Llama 2's layout: Prepend "▁" + Replace
 * " " → "▁", BPE without merges, byte fallback) written into `dir`: <unk> <s> </s>, the 256 byte
 * pieces, then "▁", the lower-case letters, punctuation, and the digits last, so that the digit
 * tokens are nowhere near GPT-2's 15–24. Returns its vocabulary size and the ids of "0"…"9".
 */
export function writeCharTokenizer(dir: string): { vocabSize: number; digitIds: number[] } {
  const vocab: Record<string, number> = { "<unk>": 0, "<s>": 1, "</s>": 2 };
  for (let b = 0; b < 256; b++) vocab[`<0x${b.toString(16).toUpperCase().padStart(2, "0")}>`] = 3 + b;
  let next = 259;
  for (const c of ["▁", ..."abcdefghijklmnopqrstuvwxyz", ...".,;:!?'-", ..."0123456789"]) vocab[c] = next++;
  const special = (id: number, content: string): Record<string, unknown> => ({ id, content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true });
  const json = {
    version: "1.0", truncation: null, padding: null,
    added_tokens: [special(0, "<unk>"), special(1, "<s>"), special(2, "</s>")],
    normalizer: { type: "Sequence", normalizers: [{ type: "Prepend", prepend: "▁" }, { type: "Replace", pattern: { String: " " }, content: "▁" }] },
    pre_tokenizer: null,
    post_processor: {
      type: "TemplateProcessing",
      single: [{ SpecialToken: { id: "<s>", type_id: 0 } }, { Sequence: { id: "A", type_id: 0 } }],
      pair: [{ SpecialToken: { id: "<s>", type_id: 0 } }, { Sequence: { id: "A", type_id: 0 } }, { SpecialToken: { id: "<s>", type_id: 1 } }, { Sequence: { id: "B", type_id: 1 } }],
      special_tokens: { "<s>": { id: "<s>", ids: [1], tokens: ["<s>"] } },
    },
    decoder: { type: "Sequence", decoders: [{ type: "Replace", pattern: { String: "▁" }, content: " " }, { type: "ByteFallback" }, { type: "Fuse" }, { type: "Strip", content: " ", start: 1, stop: 0 }] },
    model: { type: "BPE", dropout: null, unk_token: "<unk>", continuing_subword_prefix: null, end_of_word_suffix: null, fuse_unk: true, byte_fallback: true, vocab, merges: [] },
  };
  writeFileSync(join(dir, "tokenizer.json"), JSON.stringify(json));
  return { vocabSize: next, digitIds: [..."0123456789"].map((d) => vocab[d]!) };
}
