/**
 * Loading and saving models in the Hugging Face directory layout:
 *   config.json, model.safetensors (or shards listed by model.safetensors.index.json), and
 *   vocab.json + merges.txt (or tokenizer.json).
 * GPT-2, the Llama family and GPT-NeoX load and save (see config.ts, hf.ts).
 * Local files only: a name is resolved in the local Hugging Face cache, never downloaded.
 */
import { existsSync, readFileSync, copyFileSync } from "node:fs";
import { makeFolders } from "../io/paths.ts";
import { join } from "node:path";
import { SelfreportError } from "../errors.ts";
import { checkFiniteTensor } from "../io/schema.ts";
import { readSafetensorsHeader, readSafetensorsTensor, writeSafetensors } from "../io/safetensors.ts";
import { writeJsonAtomic } from "../io/atomic.ts";
import { blockSpec, configFromHf, configToHf, type ModelConfig } from "./config.ts";
import { loadTokenizer, type Tokenizer } from "./tokenizer.ts";
import { hfToParams, paramsToHf, type RawTensor } from "./hf.ts";
import { processWeightsInPlace, type WeightProcessing } from "./process.ts";
import { HookedTransformer } from "./transformer.ts";
import { resolveModelDir } from "./resolve.ts";

export interface LoadOptions {
  /**
   * "tl" (default): TransformerLens's default processing; "raw": exactly the file. A directory whose
   * config.json says its weights are already processed (`selfreport.weights_processed: "tl"`, written by
   * saveModel's `processed` option) is loaded as it is either way: processing is not idempotent for
   * weights trained after processing (their writing weights are no longer centred).
   */
  weights?: WeightProcessing;
}

export interface LoadedModel {
  model: HookedTransformer;
  /** The directory the model was read from. */
  dir: string;
  weights: WeightProcessing;
}

export function readModelConfig(dir: string): ModelConfig {
  const path = join(dir, "config.json");
  if (!existsSync(path)) throw new SelfreportError(`${dir}: config.json not found (a model directory needs config.json and model.safetensors)`);
  let json: unknown;
  try {
    json = JSON.parse(readFileSync(path, "utf8"));
  } catch (e) {
    throw new SelfreportError(`${path}: not valid JSON (${(e as Error).message})`);
  }
  if (typeof json !== "object" || json === null || Array.isArray(json)) throw new SelfreportError(`${path}: expected a JSON object`);
  return configFromHf(json as Record<string, unknown>, path);
}

/** The safetensors files of a model directory: model.safetensors, or the shards its index.json lists. */
export function weightFiles(dir: string): { files: string[]; source: string } {
  const single = join(dir, "model.safetensors");
  if (existsSync(single)) return { files: [single], source: single };
  const indexPath = join(dir, "model.safetensors.index.json");
  if (existsSync(indexPath)) {
    let index: unknown;
    try {
      index = JSON.parse(readFileSync(indexPath, "utf8"));
    } catch (e) {
      throw new SelfreportError(`${indexPath}: not valid JSON (${(e as Error).message})`);
    }
    const map = typeof index === "object" && index !== null ? (index as { weight_map?: unknown }).weight_map : undefined;
    if (typeof map !== "object" || map === null || Array.isArray(map)) throw new SelfreportError(`${indexPath}: expected an object with a "weight_map" object (tensor name → shard file)`);
    const shards = [...new Set(Object.values(map as Record<string, unknown>))];
    for (const f of shards) {
      if (typeof f !== "string" || f.includes("/") || f.includes("\\")) throw new SelfreportError(`${indexPath}: weight_map values must be shard file names in the same folder, got ${JSON.stringify(f)}`);
      if (!existsSync(join(dir, f))) throw new SelfreportError(`${indexPath}: shard ${f} is listed but not found in ${dir}`);
    }
    return { files: (shards as string[]).sort().map((f) => join(dir, f)), source: indexPath };
  }
  const hint = existsSync(join(dir, "pytorch_model.bin")) ? " (only pytorch_model.bin is present: convert it to model.safetensors with Hugging Face's transformers, as docs/gpt2.md shows)" : "";
  throw new SelfreportError(`${dir}: model.safetensors not found (nor model.safetensors.index.json with its shards)${hint}`);
}

/**
 * The raw (unprocessed) parameters of a model directory (one file or every shard), read lazily: the
 * headers now, each tensor's data (converted to float32, checked finite) when its `data` is read,
 * from the file, every time. hfToParams reads each once and keeps only what it turns it into, so a
 * model is never held twice in memory while it loads.
 */
export function readHfParams(dir: string, cfg: ModelConfig): Map<string, RawTensor> {
  const raw = new Map<string, RawTensor>();
  for (const path of weightFiles(dir).files) {
    const header = readSafetensorsHeader(path);
    for (const [k, e] of header.tensors) {
      if (e.dtype === "I32" || e.dtype === "I64") throw new SelfreportError(`${path}: tensor "${k}" has integer dtype ${e.dtype}; model weights are floating point`);
      if (raw.has(k)) throw new SelfreportError(`${path}: tensor "${k}" is also in another shard`);
      raw.set(k, {
        shape: [...e.shape],
        get data(): Float32Array {
          const data = readSafetensorsTensor(path, header, k) as Float32Array;
          checkFiniteTensor(data, path, k, "tensor");
          return data;
        },
      });
    }
  }
  void cfg;
  return raw;
}

/**
 * The tokenizer of a model directory: GPT-2's (vocab.json + merges.txt, or its tokenizer.json) for
 * GPT-2 models. The Llama family and GPT-NeoX ship other tokenizer.json tokenizers, not read yet:
 * one clear error, so callers can ask for token ids instead.
 */
export function loadModelTokenizer(dir: string, cfg: ModelConfig = readModelConfig(dir)): Tokenizer {
  if (blockSpec(cfg).architecture !== "gpt2") {
    throw new SelfreportError(`${dir}: tokenizer.json tokenizers are not supported yet (this is a ${cfg.hfArchitecture ?? cfg.architecture} model); give token ids instead`);
  }
  return loadTokenizer(dir);
}

/** Loads a model from a directory or a name (see resolveModelDir). */
export function loadModel(nameOrDir: string, opts: LoadOptions = {}): LoadedModel {
  const weights = opts.weights ?? "tl";
  if (weights !== "raw" && weights !== "tl") throw new SelfreportError(`--weights must be "raw" or "tl", got "${String(weights)}"`);
  const dir = resolveModelDir(nameOrDir);
  const cfg = readModelConfig(dir);
  const params = hfToParams(readHfParams(dir, cfg), cfg, weightFiles(dir).source);
  // the parameters are this function's own: processed in place, so the model is never held twice
  const processed = processWeightsInPlace(params, cfg, savedProcessing(dir) === "tl" ? "raw" : weights);
  return { model: new HookedTransformer(processed.cfg, processed.params), dir, weights };
}

/**
 * The processing a saved directory's weights already have, from config.json's `selfreport` record:
 * `weights_processed`, or, for fine-tuned models saved by selfreport before that field existed (they
 * carry `finetuned_from`), `weights` (the trainer always saved the weights it trained, processed).
 */
export function savedProcessing(dir: string): WeightProcessing | null {
  const json = JSON.parse(readFileSync(join(dir, "config.json"), "utf8")) as { selfreport?: { weights_processed?: unknown; finetuned_from?: unknown; weights?: unknown } };
  const rec = json.selfreport;
  if (typeof rec !== "object" || rec === null) return null;
  const v = rec.weights_processed ?? (rec.finetuned_from !== undefined ? rec.weights : undefined);
  return v === "tl" || v === "raw" ? v : null;
}

export interface SaveOptions {
  dtype?: "F32" | "F16";
  /** The processing the model's weights already have: recorded in config.json so that loadModel loads them as they are. */
  processed?: WeightProcessing;
  /** Copy vocab.json + merges.txt (or tokenizer.json) from this model directory. */
  tokenizerFrom?: string;
  /** Extra fields for config.json (e.g. how the model was made). */
  extraConfig?: Record<string, unknown>;
}

/** Writes config.json + model.safetensors (+ tokenizer files), each atomically. */
export function saveModel(model: HookedTransformer, dir: string, opts: SaveOptions = {}): void {
  makeFolders(dir);
  const dtype = opts.dtype ?? "F32";
  const hf = paramsToHf(model.params, model.cfg);
  const tensors: Record<string, { dtype: "F32" | "F16"; shape: number[]; data: Float32Array }> = {};
  for (const [k, t] of hf) tensors[k] = { dtype, shape: [...t.shape], data: t.data };
  writeSafetensors(join(dir, "model.safetensors"), tensors, { format: "pt" });
  const extra = opts.extraConfig ?? {};
  const record = opts.processed === undefined ? extra : { ...extra, selfreport: { ...(extra["selfreport"] as Record<string, unknown> | undefined), weights_processed: opts.processed } };
  writeJsonAtomic(join(dir, "config.json"), configToHf(model.cfg, record));
  if (opts.tokenizerFrom !== undefined && opts.tokenizerFrom !== dir) {
    const files = ["vocab.json", "merges.txt", "tokenizer.json"].filter((f) => existsSync(join(opts.tokenizerFrom!, f)));
    if (files.length === 0) throw new SelfreportError(`${opts.tokenizerFrom}: no tokenizer files (vocab.json + merges.txt or tokenizer.json) to copy`);
    for (const f of files) copyFileSync(join(opts.tokenizerFrom, f), join(dir, f));
  }
}
