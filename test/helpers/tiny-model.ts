/**
 * A tiny random GPT-2 written exactly as Hugging Face lays it out on disk, for model tests.
 *
 *   makeTinyHfModel(dir, opts) → { dir, config, weights }
 *
 * writes, into `dir`:
 *   config.json        HF field names (model_type, architectures, n_layer, n_head, n_embd, n_positions,
 *                      n_ctx, n_inner, vocab_size, layer_norm_epsilon, activation_function, tie_word_embeddings)
 *   model.safetensors  HF keys (`wte.weight`, `h.{l}.attn.c_attn.weight` …, optionally prefixed with
 *                      `transformer.`), Conv1D weights [in, out], plus the causal-mask buffers
 *                      `h.{l}.attn.bias` [1, 1, nCtx, nCtx] and `h.{l}.attn.masked_bias` [] that
 *                      HF files carry; `lm_head.weight` [V, C] when untied (or `lmHeadCopy`)
 *   vocab.json + merges.txt   GPT-2's tokenizer, when `tokenizer` (default: dVocab is 50257)
 *
 * Options (all optional):
 *   nLayers 2, dModel 16, nHeads 2, nCtx 16, dMlp 4·dModel, dVocab 64 (fast numerical tests that do not
 *   tokenize; pass 50257 for a model that goes with GPT-2's tokenizer), seed 0, tied true,
 *   dtype "F32" | "F16" | "BF16" (the file's dtype), prefix false (`transformer.` on every key but lm_head),
 *   buffers true (write attn.bias / attn.masked_bias), lmHeadCopy false (write lm_head.weight = wte even
 *   when tied, as some exports do), lnEps 1e-5.
 *
 * The weights are not GPT-2's initialisation: they are scaled so that activations are O(1) in a
 * 16-wide model (attention patterns far from uniform, GELU used on both sides of 0), and every
 * LayerNorm gets w ~ U(0.5, 1.5), b ~ N(0, 0.2²) so that weight processing really has something to fold.
 *
 * `weights` holds every parameter under its HF key without prefix (no buffers), with the values *as
 * stored* (rounded to F16/BF16 when the file is), so a reference computed from them is exact.
 */
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { writeSafetensors, type WritableTensor } from "../../src/io/safetensors.ts";
import { writeTokenizerFiles } from "../../src/model/tokenizer.ts";
import { mulberry32, randn } from "./rng.ts";

export type FileDtype = "F32" | "F16" | "BF16";

export interface TinyHfOptions {
  nLayers?: number;
  dModel?: number;
  nHeads?: number;
  nCtx?: number;
  dMlp?: number;
  dVocab?: number;
  seed?: number;
  tied?: boolean;
  dtype?: FileDtype;
  prefix?: boolean;
  buffers?: boolean;
  lmHeadCopy?: boolean;
  tokenizer?: boolean;
  lnEps?: number;
}

/** One HF tensor: shape and row-major values. */
export interface HfTensor {
  shape: number[];
  data: Float32Array;
}

export interface TinyHfModel {
  dir: string;
  /** The config.json object as written. */
  config: Record<string, unknown>;
  /** Parameters under HF keys without the `transformer.` prefix, values as stored in the file. */
  weights: Map<string, HfTensor>;
}

/** The HF GPT-2 config.json for these sizes. */
export function hfConfig(o: { nLayers: number; dModel: number; nHeads: number; nCtx: number; dMlp: number; dVocab: number; tied: boolean; lnEps: number }): Record<string, unknown> {
  return {
    activation_function: "gelu_new",
    architectures: ["GPT2LMHeadModel"],
    attn_pdrop: 0.1,
    bos_token_id: 50256,
    embd_pdrop: 0.1,
    eos_token_id: 50256,
    initializer_range: 0.02,
    layer_norm_epsilon: o.lnEps,
    model_type: "gpt2",
    n_ctx: o.nCtx,
    n_embd: o.dModel,
    n_head: o.nHeads,
    n_inner: o.dMlp === 4 * o.dModel ? null : o.dMlp,
    n_layer: o.nLayers,
    n_positions: o.nCtx,
    resid_pdrop: 0.1,
    tie_word_embeddings: o.tied,
    torch_dtype: "float32",
    transformers_version: "4.40.0",
    vocab_size: o.dVocab,
  };
}

export function makeTinyHfModel(dir: string, opts: TinyHfOptions = {}): TinyHfModel {
  const nLayers = opts.nLayers ?? 2;
  const dModel = opts.dModel ?? 16;
  const nHeads = opts.nHeads ?? 2;
  const nCtx = opts.nCtx ?? 16;
  const dMlp = opts.dMlp ?? 4 * dModel;
  const dVocab = opts.dVocab ?? 64;
  const tied = opts.tied ?? true;
  const dtype = opts.dtype ?? "F32";
  const lnEps = opts.lnEps ?? 1e-5;
  const tokenizer = opts.tokenizer ?? dVocab === 50257;
  if (tokenizer && dVocab !== 50257) throw new Error(`makeTinyHfModel: GPT-2's tokenizer needs dVocab 50257, got ${dVocab}`);
  const rng = mulberry32(opts.seed ?? 0);
  const C = dModel;
  const M = dMlp;

  const weights = new Map<string, HfTensor>();
  const normal = (key: string, shape: number[], std: number, mean = 0): void => {
    const n = shape.reduce((a, b) => a * b, 1);
    const data = new Float32Array(n);
    for (let i = 0; i < n; i++) data[i] = mean + std * randn(rng);
    weights.set(key, { shape, data: roundTo(dtype, data) });
  };
  const uniform = (key: string, shape: number[], lo: number, hi: number): void => {
    const n = shape.reduce((a, b) => a * b, 1);
    const data = new Float32Array(n);
    for (let i = 0; i < n; i++) data[i] = lo + (hi - lo) * rng();
    weights.set(key, { shape, data: roundTo(dtype, data) });
  };
  const inStd = (fanIn: number): number => 1 / Math.sqrt(fanIn);

  normal("wte.weight", [dVocab, C], 0.5); //        [V, C]
  normal("wpe.weight", [nCtx, C], 0.3); //          [nCtx, C]
  for (let l = 0; l < nLayers; l++) {
    const h = `h.${l}`;
    uniform(`${h}.ln_1.weight`, [C], 0.5, 1.5);
    normal(`${h}.ln_1.bias`, [C], 0.2);
    normal(`${h}.attn.c_attn.weight`, [C, 3 * C], 1.5 * inStd(C)); // [C, 3C] = q | k | v
    normal(`${h}.attn.c_attn.bias`, [3 * C], 0.2);
    normal(`${h}.attn.c_proj.weight`, [C, C], inStd(C)); //          [H·Dh, C]
    normal(`${h}.attn.c_proj.bias`, [C], 0.1);
    uniform(`${h}.ln_2.weight`, [C], 0.5, 1.5);
    normal(`${h}.ln_2.bias`, [C], 0.2);
    normal(`${h}.mlp.c_fc.weight`, [C, M], inStd(C)); //             [C, M]
    normal(`${h}.mlp.c_fc.bias`, [M], 0.3);
    normal(`${h}.mlp.c_proj.weight`, [M, C], inStd(M)); //           [M, C]
    normal(`${h}.mlp.c_proj.bias`, [C], 0.1);
  }
  uniform("ln_f.weight", [C], 0.5, 1.5);
  normal("ln_f.bias", [C], 0.2);
  if (!tied) normal("lm_head.weight", [dVocab, C], 0.5); //            [V, C]

  const config = hfConfig({ nLayers, dModel, nHeads, nCtx, dMlp, dVocab, tied, lnEps });
  if (dtype !== "F32") config["torch_dtype"] = dtype === "F16" ? "float16" : "bfloat16";

  const file = new Map<string, HfTensor>();
  const key = (k: string): string => (opts.prefix === true && !k.startsWith("lm_head.") ? `transformer.${k}` : k);
  for (const [k, t] of weights) file.set(key(k), t);
  if (tied && opts.lmHeadCopy === true) file.set("lm_head.weight", weights.get("wte.weight")!);
  if (opts.buffers ?? true) {
    const mask = new Float32Array(nCtx * nCtx); // [1, 1, nCtx, nCtx], lower triangular ones
    for (let i = 0; i < nCtx; i++) for (let j = 0; j <= i; j++) mask[i * nCtx + j] = 1;
    for (let l = 0; l < nLayers; l++) {
      file.set(key(`h.${l}.attn.bias`), { shape: [1, 1, nCtx, nCtx], data: mask });
      file.set(key(`h.${l}.attn.masked_bias`), { shape: [], data: Float32Array.of(-1e4) });
    }
  }

  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, "config.json"), JSON.stringify(config, null, 2) + "\n");
  writeHfSafetensors(join(dir, "model.safetensors"), file, dtype);
  if (tokenizer) writeTokenizerFiles(dir);
  return { dir, config, weights };
}

/** Writes HF tensors as a safetensors file of one float dtype (BF16 by hand: writeSafetensors has no BF16). */
export function writeHfSafetensors(path: string, tensors: ReadonlyMap<string, HfTensor>, dtype: FileDtype = "F32"): void {
  if (dtype !== "BF16") {
    const record: Record<string, WritableTensor> = {};
    for (const [k, t] of tensors) record[k] = { dtype, shape: t.shape, data: t.data };
    writeSafetensors(path, record, { format: "pt" });
    return;
  }
  const header: Record<string, unknown> = { __metadata__: { format: "pt" } };
  const chunks: Uint8Array[] = [];
  let offset = 0;
  for (const [k, t] of tensors) {
    const bytes = new Uint8Array(t.data.length * 2);
    const view = new DataView(bytes.buffer);
    for (let i = 0; i < t.data.length; i++) view.setUint16(2 * i, bf16Bits(t.data[i]!), true);
    header[k] = { dtype: "BF16", shape: t.shape, data_offsets: [offset, offset + bytes.length] };
    chunks.push(bytes);
    offset += bytes.length;
  }
  let json = JSON.stringify(header);
  while ((8 + json.length) % 8 !== 0) json += " ";
  const head = new Uint8Array(8);
  new DataView(head.buffer).setBigUint64(0, BigInt(json.length), true);
  writeFileSync(path, Buffer.concat([head, Buffer.from(json, "utf8"), ...chunks]));
}

// ---------------------------------------------------------------------------------------------
// Rounding to the file's dtype (round to nearest, ties to even), written here so that the tests do
// not rely on the reader they check.

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/** The bfloat16 bits of a float32 value. */
export function bf16Bits(x: number): number {
  f32[0] = x;
  const bits = u32[0]!;
  return ((bits + 0x7fff + ((bits >>> 16) & 1)) >>> 16) & 0xffff;
}

/** x rounded to the nearest IEEE half-precision value (finite inputs within the half range). */
export function roundF16(x: number): number {
  if (x === 0 || !Number.isFinite(x)) return x;
  const a = Math.abs(x);
  // Spacing of halves around a: 2^(e-10) for normal halves (e ≥ -14), 2^-24 for subnormals.
  let e = Math.floor(Math.log2(a));
  if (2 ** e > a) e -= 1; // Math.log2 may round up just below a power of two
  else if (2 ** (e + 1) <= a) e += 1;
  const ulp = 2 ** (Math.max(e, -14) - 10);
  const q = a / ulp;
  let r = Math.round(q);
  if (Math.abs(q - Math.trunc(q) - 0.5) < 1e-12 && r % 2 !== 0) r -= 1; // ties to even
  return Math.sign(x) * r * ulp;
}

export function roundTo(dtype: FileDtype, data: Float32Array): Float32Array {
  if (dtype === "F32") return data;
  const out = new Float32Array(data.length);
  for (let i = 0; i < data.length; i++) {
    if (dtype === "F16") out[i] = roundF16(data[i]!);
    else {
      u32[0] = bf16Bits(data[i]!) << 16;
      out[i] = f32[0]!;
    }
  }
  return out;
}
