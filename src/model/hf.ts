/**
 * The one place where Hugging Face's GPT-2 layout meets TransformerLens's.
 *
 * Hugging Face GPT-2 (`GPT2LMHeadModel`, keys with or without the `transformer.` prefix) stores
 * Conv1D weights as [in, out], so they are already right-multiplied like TransformerLens's; the
 * conversion only splits c_attn [C, 3C] into per-head W_Q/W_K/W_V [H, C, Dh] and reshapes c_proj
 * [H·Dh, C] into W_O [H, Dh, C]. `attn.bias` / `attn.masked_bias` are causal-mask buffers, ignored.
 */
import { Tensor } from "../tensor/index.ts";
import { SelfreportError } from "../errors.ts";
import type { ModelConfig } from "./config.ts";
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
