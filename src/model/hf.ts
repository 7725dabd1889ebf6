/**
 * The one place where Hugging Face's checkpoint layouts meet TransformerLens's names: GPT-2 (below),
 * the Llama family and GPT-NeoX (llamaToParams, neoxToParams, as TransformerLens's
 * convert_llama_weights / convert_qwen2_weights / convert_neox_weights).
 *
 * Hugging Face GPT-2 (`GPT2LMHeadModel`, keys with or without the `transformer.` prefix) stores
 * Conv1D weights as [in, out], so they are already right-multiplied like TransformerLens's; the
 * conversion only splits c_attn [C, 3C] into per-head W_Q/W_K/W_V [H, C, Dh] and reshapes c_proj
 * [H·Dh, C] into W_O [H, Dh, C]. `attn.bias` / `attn.masked_bias` are causal-mask buffers, ignored.
 */
import { Tensor } from "../tensor/index.ts";
import { SelfreportError } from "../errors.ts";
import { blockSpec, type ModelConfig } from "./config.ts";
import { paramShapes } from "./transformer.ts";

/** A flat [rows, cols] array as a Float32Array with its shape, as read from a safetensors file. */
export interface RawTensor {
  shape: readonly number[];
  data: Float32Array;
}

const IGNORED = /^h\.\d+\.attn\.(bias|masked_bias)$/;

/** Strips the `transformer.` prefix (and leaves `lm_head.*` alone). */
export function normaliseHfKey(key: string): string {
  return key.startsWith("transformer.") ? key.slice("transformer.".length) : key;
}

/**
 * Converts a Hugging Face GPT-2 state dict to TransformerLens-named parameters.
 * Every expected key must be present with the right shape; unknown keys are refused by name.
 */
export function hfToParams(raw: ReadonlyMap<string, RawTensor>, cfg: ModelConfig, source = "model.safetensors"): Map<string, Tensor> {
  const arch = blockSpec(cfg).architecture;
  if (arch === "llama") return llamaToParams(raw, cfg, source);
  if (arch === "neox") return neoxToParams(raw, cfg, source);
  const { nLayers, dModel: C, nHeads: H, dHead: Dh, dMlp: M, dVocab: V, nCtx } = cfg;
  const sd = new Map<string, RawTensor>();
  for (const [k, t] of raw) {
    const key = normaliseHfKey(k);
    if (IGNORED.test(key)) continue;
    sd.set(key, t);
  }
  const used = new Set<string>();
  const take = (key: string, shape: readonly number[]): Float32Array => {
    const t = sd.get(key);
    if (t === undefined) throw new SelfreportError(`${source}: tensor "${key}" is missing (expected shape [${shape.join(", ")}] for this config)`);
    if (t.shape.length !== shape.length || t.shape.some((d, i) => d !== shape[i])) {
      throw new SelfreportError(`${source}: tensor "${key}" has shape [${t.shape.join(", ")}], but config.json implies [${shape.join(", ")}]`);
    }
    used.add(key);
    return t.data;
  };

  const params = new Map<string, Tensor>();
  const put = (name: string, shape: number[], data: Float32Array): void => void params.set(name, new Tensor(data, shape));
  put("embed.W_E", [V, C], take("wte.weight", [V, C]).slice());
  put("pos_embed.W_pos", [nCtx, C], take("wpe.weight", [nCtx, C]).slice());
  for (let l = 0; l < nLayers; l++) {
    const h = `h.${l}`;
    const p = `blocks.${l}`;
    put(`${p}.ln1.w`, [C], take(`${h}.ln_1.weight`, [C]).slice());
    put(`${p}.ln1.b`, [C], take(`${h}.ln_1.bias`, [C]).slice());
    const cAttn = take(`${h}.attn.c_attn.weight`, [C, 3 * C]); // [C, 3C]: q | k | v, heads contiguous
    const cAttnB = take(`${h}.attn.c_attn.bias`, [3 * C]);
    (["Q", "K", "V"] as const).forEach((which, part) => {
      const W = new Float32Array(H * C * Dh); // [H, C, Dh]
      const b = new Float32Array(H * Dh); //     [H, Dh]
      for (let hd = 0; hd < H; hd++) {
        for (let c = 0; c < C; c++) {
          for (let d = 0; d < Dh; d++) W[(hd * C + c) * Dh + d] = cAttn[c * 3 * C + part * C + hd * Dh + d]!;
        }
        for (let d = 0; d < Dh; d++) b[hd * Dh + d] = cAttnB[part * C + hd * Dh + d]!;
      }
      put(`${p}.attn.W_${which}`, [H, C, Dh], W);
      put(`${p}.attn.b_${which}`, [H, Dh], b);
    });
    put(`${p}.attn.W_O`, [H, Dh, C], take(`${h}.attn.c_proj.weight`, [C, C]).slice()); // [H·Dh, C] is [H, Dh, C]
    put(`${p}.attn.b_O`, [C], take(`${h}.attn.c_proj.bias`, [C]).slice());
    put(`${p}.ln2.w`, [C], take(`${h}.ln_2.weight`, [C]).slice());
    put(`${p}.ln2.b`, [C], take(`${h}.ln_2.bias`, [C]).slice());
    put(`${p}.mlp.W_in`, [C, M], take(`${h}.mlp.c_fc.weight`, [C, M]).slice());
    put(`${p}.mlp.b_in`, [M], take(`${h}.mlp.c_fc.bias`, [M]).slice());
    put(`${p}.mlp.W_out`, [M, C], take(`${h}.mlp.c_proj.weight`, [M, C]).slice());
    put(`${p}.mlp.b_out`, [C], take(`${h}.mlp.c_proj.bias`, [C]).slice());
  }
  put("ln_final.w", [C], take("ln_f.weight", [C]).slice());
  put("ln_final.b", [C], take("ln_f.bias", [C]).slice());
  if (cfg.tiedEmbeddings) {
    if (sd.has("lm_head.weight")) used.add("lm_head.weight"); // a saved copy of wte
  } else {
    const lm = take("lm_head.weight", [V, C]); // [V, C] → W_U [C, V]
    const WU = new Float32Array(C * V);
    for (let v = 0; v < V; v++) for (let c = 0; c < C; c++) WU[c * V + v] = lm[v * C + c]!;
    put("unembed.W_U", [C, V], WU);
  }
  put("unembed.b_U", [V], sd.has("lm_head.bias") ? take("lm_head.bias", [V]).slice() : new Float32Array(V));

  const unknown = [...sd.keys()].filter((k) => !used.has(k));
  if (unknown.length > 0) {
    throw new SelfreportError(`${source}: unexpected tensor${unknown.length > 1 ? "s" : ""} ${unknown.slice(0, 5).map((k) => `"${k}"`).join(", ")}${unknown.length > 5 ? ` and ${unknown.length - 5} more` : ""} (is this a GPT-2 checkpoint with ${nLayers} layers?)`);
  }
  return params;
}

/**
 * TransformerLens-named parameters back to Hugging Face GPT-2 keys (no `transformer.` prefix,
 * as in the official gpt2 checkpoint). An untied unembedding is written as `lm_head.weight`,
 * a non-zero b_U as `lm_head.bias` (an extension Hugging Face ignores).
 */
export function paramsToHf(params: ReadonlyMap<string, Tensor>, cfg: ModelConfig): Map<string, RawTensor> {
  const arch = blockSpec(cfg).architecture;
  if (arch === "llama") return paramsToLlama(params, cfg);
  if (arch === "neox") return paramsToNeox(params, cfg);
  const { nLayers, dModel: C, nHeads: H, dHead: Dh, dMlp: M, dVocab: V } = cfg;
  for (const [name] of paramShapes(cfg)) if (!params.has(name)) throw new SelfreportError(`save: parameter "${name}" is missing`);
  const get = (n: string): Float32Array => params.get(n)!.data;
  const out = new Map<string, RawTensor>();
  const put = (key: string, shape: number[], data: Float32Array): void => void out.set(key, { shape, data });
  put("wte.weight", [V, C], get("embed.W_E"));
  put("wpe.weight", [cfg.nCtx, C], get("pos_embed.W_pos"));
  for (let l = 0; l < nLayers; l++) {
    const h = `h.${l}`;
    const p = `blocks.${l}`;
    put(`${h}.ln_1.weight`, [C], get(`${p}.ln1.w`));
    put(`${h}.ln_1.bias`, [C], get(`${p}.ln1.b`));
    const cAttn = new Float32Array(C * 3 * C);
    const cAttnB = new Float32Array(3 * C);
    (["Q", "K", "V"] as const).forEach((which, part) => {
      const W = get(`${p}.attn.W_${which}`);
      const b = get(`${p}.attn.b_${which}`);
      for (let hd = 0; hd < H; hd++) {
        for (let c = 0; c < C; c++) {
          for (let d = 0; d < Dh; d++) cAttn[c * 3 * C + part * C + hd * Dh + d] = W[(hd * C + c) * Dh + d]!;
        }
        for (let d = 0; d < Dh; d++) cAttnB[part * C + hd * Dh + d] = b[hd * Dh + d]!;
      }
    });
    put(`${h}.attn.c_attn.weight`, [C, 3 * C], cAttn);
    put(`${h}.attn.c_attn.bias`, [3 * C], cAttnB);
    put(`${h}.attn.c_proj.weight`, [C, C], get(`${p}.attn.W_O`));
    put(`${h}.attn.c_proj.bias`, [C], get(`${p}.attn.b_O`));
    put(`${h}.ln_2.weight`, [C], get(`${p}.ln2.w`));
    put(`${h}.ln_2.bias`, [C], get(`${p}.ln2.b`));
    put(`${h}.mlp.c_fc.weight`, [C, M], get(`${p}.mlp.W_in`));
    put(`${h}.mlp.c_fc.bias`, [M], get(`${p}.mlp.b_in`));
    put(`${h}.mlp.c_proj.weight`, [M, C], get(`${p}.mlp.W_out`));
    put(`${h}.mlp.c_proj.bias`, [C], get(`${p}.mlp.b_out`));
  }
  put("ln_f.weight", [C], get("ln_final.w"));
  put("ln_f.bias", [C], get("ln_final.b"));
  if (!cfg.tiedEmbeddings) {
    const WU = get("unembed.W_U");
    const lm = new Float32Array(V * C);
    for (let c = 0; c < C; c++) for (let v = 0; v < V; v++) lm[v * C + c] = WU[c * V + v]!;
    put("lm_head.weight", [V, C], lm);
  }
  const bU = get("unembed.b_U");
  if (bU.some((x) => x !== 0)) put("lm_head.bias", [V], bU);
  return out;
}

// ---------------------------------------------------------------------------------------------
// Llama family and GPT-NeoX. Hugging Face stores nn.Linear weights as [out, in]; TransformerLens's
// are right-multiplied ([in, out]) and split per head.

/** Reads tensors by key with shape checks, remembering which were used (the rest are refused by name). */
class StateDict {
  private readonly used = new Set<string>();
  constructor(private readonly sd: ReadonlyMap<string, RawTensor>, private readonly source: string, private readonly what: string) {}

  has(key: string): boolean {
    return this.sd.has(key);
  }

  take(key: string, shape: readonly number[]): Float32Array {
    const t = this.sd.get(key);
    if (t === undefined) throw new SelfreportError(`${this.source}: tensor "${key}" is missing (expected shape [${shape.join(", ")}] for this config)`);
    if (t.shape.length !== shape.length || t.shape.some((d, i) => d !== shape[i])) {
      throw new SelfreportError(`${this.source}: tensor "${key}" has shape [${t.shape.join(", ")}], but config.json implies [${shape.join(", ")}]`);
    }
    this.used.add(key);
    return t.data;
  }

  /** A tensor that may be absent (e.g. Qwen2's q/k/v biases, a tied lm_head copy): null when absent. */
  maybe(key: string, shape: readonly number[]): Float32Array | null {
    return this.sd.has(key) ? this.take(key, shape) : null;
  }

  ignore(pattern: RegExp): void {
    for (const k of this.sd.keys()) if (pattern.test(k)) this.used.add(k);
  }

  checkAllUsed(): void {
    const unknown = [...this.sd.keys()].filter((k) => !this.used.has(k));
    if (unknown.length > 0) {
      throw new SelfreportError(`${this.source}: unexpected tensor${unknown.length > 1 ? "s" : ""} ${unknown.slice(0, 5).map((k) => `"${k}"`).join(", ")}${unknown.length > 5 ? ` and ${unknown.length - 5} more` : ""} (is this a ${this.what} checkpoint?)`);
    }
  }
}

/** nn.Linear weight [heads·Dh, C] → TransformerLens [heads, C, Dh]: W[h, c, d] = lin[h·Dh + d, c]. */
function linearToHeads(lin: Float32Array, heads: number, C: number, Dh: number): Float32Array {
  const W = new Float32Array(heads * C * Dh);
  for (let h = 0; h < heads; h++) for (let d = 0; d < Dh; d++) {
    const row = (h * Dh + d) * C;
    for (let c = 0; c < C; c++) W[(h * C + c) * Dh + d] = lin[row + c]!;
  }
  return W;
}

/** Transpose of a row-major [rows, cols] array: nn.Linear [out, in] → TransformerLens [in, out]. */
function transpose2d(a: Float32Array, rows: number, cols: number): Float32Array {
  const out = new Float32Array(rows * cols);
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) out[c * rows + r] = a[r * cols + c]!;
  return out;
}

/** An unembedding [V, C] (lm_head / embed_out) → W_U [C, V], unless the config ties it to W_E. */
function putUnembed(sd: StateDict, params: Map<string, Tensor>, cfg: ModelConfig, key: string): void {
  const { dModel: C, dVocab: V } = cfg;
  if (cfg.tiedEmbeddings) sd.maybe(key, [V, C]); // a saved copy of the embedding
  else params.set("unembed.W_U", new Tensor(transpose2d(sd.take(key, [V, C]), V, C), [C, V]));
  const bias = sd.maybe(key.replace(/weight$/, "bias"), [V]); // selfreport's extension for a non-zero b_U
  params.set("unembed.b_U", new Tensor(bias?.slice() ?? new Float32Array(V), [V]));
}

/** TransformerLens [heads, C, Dh] → nn.Linear weight [heads·Dh, C] (inverse of linearToHeads). */
function headsToLinear(W: Float32Array, heads: number, C: number, Dh: number): Float32Array {
  const lin = new Float32Array(heads * Dh * C);
  for (let h = 0; h < heads; h++) for (let d = 0; d < Dh; d++) {
    const row = (h * Dh + d) * C;
    for (let c = 0; c < C; c++) lin[row + c] = W[(h * C + c) * Dh + d]!;
  }
  return lin;
}

const nonZero = (a: Float32Array): boolean => a.some((x) => x !== 0);

function checkParams(params: ReadonlyMap<string, Tensor>, cfg: ModelConfig): (n: string) => Float32Array {
  for (const [name] of paramShapes(cfg)) if (!params.has(name)) throw new SelfreportError(`save: parameter "${name}" is missing`);
  return (n) => params.get(n)!.data;
}

/**
 * TransformerLens names → Llama-family keys (inverse of llamaToParams). Biases are written only
 * where the architecture has them (Qwen2's q/k/v) or they are non-zero: a non-zero b_O as
 * o_proj.bias, b_out as mlp.down_proj.bias, b_in as mlp.b_in and b_U as lm_head.bias — selfreport's
 * extensions (weights processed or trained by selfreport), read back by llamaToParams and ignored by
 * Hugging Face.
 */
function paramsToLlama(params: ReadonlyMap<string, Tensor>, cfg: ModelConfig): Map<string, RawTensor> {
  const { nLayers, dModel: C, nHeads: H, dHead: Dh, dMlp: M, dVocab: V } = cfg;
  const spec = blockSpec(cfg);
  const Hkv = spec.nKvHeads;
  const kv = spec.gqa ? "_" : "";
  const get = checkParams(params, cfg);
  const qwen = cfg.hfArchitecture === "Qwen2ForCausalLM";
  const out = new Map<string, RawTensor>();
  const put = (key: string, shape: number[], data: Float32Array): void => void out.set(key, { shape, data });
  put("model.embed_tokens.weight", [V, C], get("embed.W_E"));
  for (let l = 0; l < nLayers; l++) {
    const h = `model.layers.${l}`;
    const p = `blocks.${l}`;
    put(`${h}.input_layernorm.weight`, [C], get(`${p}.ln1.w`));
    put(`${h}.self_attn.q_proj.weight`, [H * Dh, C], headsToLinear(get(`${p}.attn.W_Q`), H, C, Dh));
    put(`${h}.self_attn.k_proj.weight`, [Hkv * Dh, C], headsToLinear(get(`${p}.attn.${kv}W_K`), Hkv, C, Dh));
    put(`${h}.self_attn.v_proj.weight`, [Hkv * Dh, C], headsToLinear(get(`${p}.attn.${kv}W_V`), Hkv, C, Dh));
    for (const [which, name, n] of [["q", "b_Q", H], ["k", `${kv}b_K`, Hkv], ["v", `${kv}b_V`, Hkv]] as const) {
      const b = get(`${p}.attn.${name}`);
      if (qwen || nonZero(b)) put(`${h}.self_attn.${which}_proj.bias`, [n * Dh], b);
    }
    put(`${h}.self_attn.o_proj.weight`, [C, H * Dh], transpose2d(get(`${p}.attn.W_O`), H * Dh, C));
    if (nonZero(get(`${p}.attn.b_O`))) put(`${h}.self_attn.o_proj.bias`, [C], get(`${p}.attn.b_O`));
    put(`${h}.post_attention_layernorm.weight`, [C], get(`${p}.ln2.w`));
    put(`${h}.mlp.gate_proj.weight`, [M, C], transpose2d(get(`${p}.mlp.W_gate`), C, M));
    put(`${h}.mlp.up_proj.weight`, [M, C], transpose2d(get(`${p}.mlp.W_in`), C, M));
    put(`${h}.mlp.down_proj.weight`, [C, M], transpose2d(get(`${p}.mlp.W_out`), M, C));
    if (nonZero(get(`${p}.mlp.b_in`))) put(`${h}.mlp.b_in`, [M], get(`${p}.mlp.b_in`));
    if (nonZero(get(`${p}.mlp.b_out`))) put(`${h}.mlp.down_proj.bias`, [C], get(`${p}.mlp.b_out`));
  }
  put("model.norm.weight", [C], get("ln_final.w"));
  if (!cfg.tiedEmbeddings) put("lm_head.weight", [V, C], transpose2d(get("unembed.W_U"), C, V));
  if (nonZero(get("unembed.b_U"))) put("lm_head.bias", [V], get("unembed.b_U"));
  return out;
}

/** TransformerLens names → GPT-NeoX keys (inverse of neoxToParams); a non-zero b_U as embed_out.bias (selfreport's extension). */
function paramsToNeox(params: ReadonlyMap<string, Tensor>, cfg: ModelConfig): Map<string, RawTensor> {
  const { nLayers, dModel: C, nHeads: H, dHead: Dh, dMlp: M, dVocab: V } = cfg;
  const get = checkParams(params, cfg);
  const out = new Map<string, RawTensor>();
  const put = (key: string, shape: number[], data: Float32Array): void => void out.set(key, { shape, data });
  put("gpt_neox.embed_in.weight", [V, C], get("embed.W_E"));
  for (let l = 0; l < nLayers; l++) {
    const h = `gpt_neox.layers.${l}`;
    const p = `blocks.${l}`;
    put(`${h}.input_layernorm.weight`, [C], get(`${p}.ln1.w`));
    put(`${h}.input_layernorm.bias`, [C], get(`${p}.ln1.b`));
    const qkv = new Float32Array(3 * H * Dh * C);
    const qkvB = new Float32Array(3 * H * Dh);
    (["Q", "K", "V"] as const).forEach((which, part) => {
      const W = get(`${p}.attn.W_${which}`);
      const b = get(`${p}.attn.b_${which}`);
      for (let hd = 0; hd < H; hd++) for (let d = 0; d < Dh; d++) {
        const row = (hd * 3 + part) * Dh + d;
        for (let c = 0; c < C; c++) qkv[row * C + c] = W[(hd * C + c) * Dh + d]!;
        qkvB[row] = b[hd * Dh + d]!;
      }
    });
    put(`${h}.attention.query_key_value.weight`, [3 * H * Dh, C], qkv);
    put(`${h}.attention.query_key_value.bias`, [3 * H * Dh], qkvB);
    put(`${h}.attention.dense.weight`, [C, H * Dh], transpose2d(get(`${p}.attn.W_O`), H * Dh, C));
    put(`${h}.attention.dense.bias`, [C], get(`${p}.attn.b_O`));
    put(`${h}.post_attention_layernorm.weight`, [C], get(`${p}.ln2.w`));
    put(`${h}.post_attention_layernorm.bias`, [C], get(`${p}.ln2.b`));
    put(`${h}.mlp.dense_h_to_4h.weight`, [M, C], transpose2d(get(`${p}.mlp.W_in`), C, M));
    put(`${h}.mlp.dense_h_to_4h.bias`, [M], get(`${p}.mlp.b_in`));
    put(`${h}.mlp.dense_4h_to_h.weight`, [C, M], transpose2d(get(`${p}.mlp.W_out`), M, C));
    put(`${h}.mlp.dense_4h_to_h.bias`, [C], get(`${p}.mlp.b_out`));
  }
  put("gpt_neox.final_layer_norm.weight", [C], get("ln_final.w"));
  put("gpt_neox.final_layer_norm.bias", [C], get("ln_final.b"));
  if (!cfg.tiedEmbeddings) put("embed_out.weight", [V, C], transpose2d(get("unembed.W_U"), C, V));
  else put("embed_out.weight", [V, C], get("embed.W_E"));
  if (nonZero(get("unembed.b_U"))) put("embed_out.bias", [V], get("unembed.b_U"));
  return out;
}

/**
 * LlamaForCausalLM / MistralForCausalLM / Qwen2ForCausalLM (keys `model.…`, `lm_head.weight`) →
 * TransformerLens names. q/k/v/o biases are read when the file has them (Qwen2: q, k, v) and are
 * zero otherwise; the gated MLP's b_in and b_out are zero (TransformerLens's GatedMLP).
 */
export function llamaToParams(raw: ReadonlyMap<string, RawTensor>, cfg: ModelConfig, source = "model.safetensors"): Map<string, Tensor> {
  const { nLayers, dModel: C, nHeads: H, dHead: Dh, dMlp: M, dVocab: V } = cfg;
  const spec = blockSpec(cfg);
  const Hkv = spec.nKvHeads;
  const kv = spec.gqa ? "_" : "";
  const sd = new StateDict(raw, source, `${cfg.hfArchitecture ?? "Llama"} with ${nLayers} layers`);
  sd.ignore(/^model\.layers\.\d+\.self_attn\.rotary_emb\.inv_freq$/);
  const params = new Map<string, Tensor>();
  const put = (name: string, shape: number[], data: Float32Array): void => void params.set(name, new Tensor(data, shape));
  const zerosOf = (n: number): Float32Array => new Float32Array(n);
  put("embed.W_E", [V, C], sd.take("model.embed_tokens.weight", [V, C]).slice());
  for (let l = 0; l < nLayers; l++) {
    const h = `model.layers.${l}`;
    const p = `blocks.${l}`;
    put(`${p}.ln1.w`, [C], sd.take(`${h}.input_layernorm.weight`, [C]).slice());
    put(`${p}.attn.W_Q`, [H, C, Dh], linearToHeads(sd.take(`${h}.self_attn.q_proj.weight`, [H * Dh, C]), H, C, Dh));
    put(`${p}.attn.${kv}W_K`, [Hkv, C, Dh], linearToHeads(sd.take(`${h}.self_attn.k_proj.weight`, [Hkv * Dh, C]), Hkv, C, Dh));
    put(`${p}.attn.${kv}W_V`, [Hkv, C, Dh], linearToHeads(sd.take(`${h}.self_attn.v_proj.weight`, [Hkv * Dh, C]), Hkv, C, Dh));
    put(`${p}.attn.b_Q`, [H, Dh], sd.maybe(`${h}.self_attn.q_proj.bias`, [H * Dh])?.slice() ?? zerosOf(H * Dh));
    put(`${p}.attn.${kv}b_K`, [Hkv, Dh], sd.maybe(`${h}.self_attn.k_proj.bias`, [Hkv * Dh])?.slice() ?? zerosOf(Hkv * Dh));
    put(`${p}.attn.${kv}b_V`, [Hkv, Dh], sd.maybe(`${h}.self_attn.v_proj.bias`, [Hkv * Dh])?.slice() ?? zerosOf(Hkv * Dh));
    // o_proj [C, H·Dh] → W_O [H, Dh, C] = its transpose [H·Dh, C]
    put(`${p}.attn.W_O`, [H, Dh, C], transpose2d(sd.take(`${h}.self_attn.o_proj.weight`, [C, H * Dh]), C, H * Dh));
    put(`${p}.attn.b_O`, [C], sd.maybe(`${h}.self_attn.o_proj.bias`, [C])?.slice() ?? zerosOf(C));
    put(`${p}.ln2.w`, [C], sd.take(`${h}.post_attention_layernorm.weight`, [C]).slice());
    put(`${p}.mlp.W_in`, [C, M], transpose2d(sd.take(`${h}.mlp.up_proj.weight`, [M, C]), M, C));
    put(`${p}.mlp.W_gate`, [C, M], transpose2d(sd.take(`${h}.mlp.gate_proj.weight`, [M, C]), M, C));
    put(`${p}.mlp.b_in`, [M], sd.maybe(`${h}.mlp.b_in`, [M])?.slice() ?? zerosOf(M)); // selfreport's extension (see paramsToLlama)
    put(`${p}.mlp.W_out`, [M, C], transpose2d(sd.take(`${h}.mlp.down_proj.weight`, [C, M]), C, M));
    put(`${p}.mlp.b_out`, [C], sd.maybe(`${h}.mlp.down_proj.bias`, [C])?.slice() ?? zerosOf(C));
  }
  put("ln_final.w", [C], sd.take("model.norm.weight", [C]).slice());
  putUnembed(sd, params, cfg, "lm_head.weight");
  sd.checkAllUsed();
  return params;
}

/**
 * GPTNeoXForCausalLM (keys `gpt_neox.…`, `embed_out.weight`) → TransformerLens names. The fused
 * query_key_value weight [3·C, C] has its rows in (head, q|k|v, d_head) order.
 */
export function neoxToParams(raw: ReadonlyMap<string, RawTensor>, cfg: ModelConfig, source = "model.safetensors"): Map<string, Tensor> {
  const { nLayers, dModel: C, nHeads: H, dHead: Dh, dMlp: M, dVocab: V } = cfg;
  const sd = new StateDict(raw, source, `GPTNeoXForCausalLM with ${nLayers} layers`);
  sd.ignore(/^gpt_neox\.layers\.\d+\.attention\.(bias|masked_bias|rotary_emb\.inv_freq)$/);
  const params = new Map<string, Tensor>();
  const put = (name: string, shape: number[], data: Float32Array): void => void params.set(name, new Tensor(data, shape));
  put("embed.W_E", [V, C], sd.take("gpt_neox.embed_in.weight", [V, C]).slice());
  for (let l = 0; l < nLayers; l++) {
    const h = `gpt_neox.layers.${l}`;
    const p = `blocks.${l}`;
    put(`${p}.ln1.w`, [C], sd.take(`${h}.input_layernorm.weight`, [C]).slice());
    put(`${p}.ln1.b`, [C], sd.take(`${h}.input_layernorm.bias`, [C]).slice());
    const qkv = sd.take(`${h}.attention.query_key_value.weight`, [3 * H * Dh, C]);
    const qkvB = sd.take(`${h}.attention.query_key_value.bias`, [3 * H * Dh]);
    (["Q", "K", "V"] as const).forEach((which, part) => {
      const W = new Float32Array(H * C * Dh); // [H, C, Dh]
      const b = new Float32Array(H * Dh); //     [H, Dh]
      for (let hd = 0; hd < H; hd++) for (let d = 0; d < Dh; d++) {
        const row = (hd * 3 + part) * Dh + d;
        for (let c = 0; c < C; c++) W[(hd * C + c) * Dh + d] = qkv[row * C + c]!;
        b[hd * Dh + d] = qkvB[row]!;
      }
      put(`${p}.attn.W_${which}`, [H, C, Dh], W);
      put(`${p}.attn.b_${which}`, [H, Dh], b);
    });
    put(`${p}.attn.W_O`, [H, Dh, C], transpose2d(sd.take(`${h}.attention.dense.weight`, [C, H * Dh]), C, H * Dh));
    put(`${p}.attn.b_O`, [C], sd.take(`${h}.attention.dense.bias`, [C]).slice());
    put(`${p}.ln2.w`, [C], sd.take(`${h}.post_attention_layernorm.weight`, [C]).slice());
    put(`${p}.ln2.b`, [C], sd.take(`${h}.post_attention_layernorm.bias`, [C]).slice());
    put(`${p}.mlp.W_in`, [C, M], transpose2d(sd.take(`${h}.mlp.dense_h_to_4h.weight`, [M, C]), M, C));
    put(`${p}.mlp.b_in`, [M], sd.take(`${h}.mlp.dense_h_to_4h.bias`, [M]).slice());
    put(`${p}.mlp.W_out`, [M, C], transpose2d(sd.take(`${h}.mlp.dense_4h_to_h.weight`, [C, M]), C, M));
    put(`${p}.mlp.b_out`, [C], sd.take(`${h}.mlp.dense_4h_to_h.bias`, [C]).slice());
  }
  put("ln_final.w", [C], sd.take("gpt_neox.final_layer_norm.weight", [C]).slice());
  put("ln_final.b", [C], sd.take("gpt_neox.final_layer_norm.bias", [C]).slice());
  putUnembed(sd, params, cfg, "embed_out.weight");
  sd.checkAllUsed();
  return params;
}
