/**
 * The run directory: the only thing training and analysis share.
 *
 *   config.json           what was trained (field names of the original Python tool, plus ours)
 *   head.safetensors      output.weight / output.bias [/ hidden.weight / hidden.bias], PyTorch layout
 *   finetuned/            unfrozen and partial runs: the trained base model, Hugging Face layout
 *   metrics.json          test-split metrics and the mean baseline
 *   train_log.jsonl       one line per step (and per evaluation)
 *   training_curve.svg    loss curves
 *   checkpoint/           the latest training checkpoint (for --resume)
 */
import { existsSync, readFileSync, rmSync } from "node:fs";
import { join, resolve } from "node:path";
import { Tensor } from "../tensor/index.ts";
import { readSafetensors, writeSafetensors } from "../io/safetensors.ts";
import { writeJsonAtomic } from "../io/atomic.ts";
import { loadModel } from "../model/load.ts";
import type { HookedTransformer } from "../model/transformer.ts";
import { SelfreportError } from "../errors.ts";
import { checkHeadParams, headTypeOf, type HeadConfig, type HeadParams, type HeadType, type Readout } from "./predictor.ts";
import type { LayerType, TokenPos } from "./dataset.ts";

export const RUN_FORMAT_VERSION = 1;
export type FreezeMode = "frozen" | "unfrozen" | "partial";
export const FREEZE_MODES: readonly FreezeMode[] = ["frozen", "unfrozen", "partial"];

export interface RunConfig {
  format_version: number;
  head_type: HeadType;
  target_layer: number;
  target_neuron: number;
  layer_type: LayerType;
  token_pos: TokenPos;
  feature_layer: number;
  head_config: HeadConfig;
  base_model_name: string;
  base_model_dir: string;
  /** Weight processing of the base model during training ("tl" = TransformerLens defaults). */
  weights: "raw" | "tl";
  d_model: number;
  bin_edges: number[];
  activation_mean: number;
  activation_std: number;
  freeze_mode: FreezeMode;
  unfreeze_last: number | null;
  /** sha256: hex digest of the dataset file when the run was trained (absent in older runs and imports). */
  dataset: { path: string; n: number; layer: number; neuron: number; model_dir: string; sha256?: string };
  training: Record<string, number | string | boolean | null>;
  /** Set for runs imported from the Python tool. */
  imported?: { from: string; notes: string[] };
}

export interface Run {
  dir: string;
  config: RunConfig;
  head: HeadParams;
  headType: HeadType;
  readout: Readout;
}

export function readRunConfig(dir: string): RunConfig {
  const path = join(dir, "config.json");
  if (!existsSync(dir)) throw new SelfreportError(`run directory ${dir} does not exist`);
  if (!existsSync(path)) throw new SelfreportError(`${dir} is not a run directory: config.json is missing`);
  let cfg: RunConfig;
  try {
    cfg = JSON.parse(readFileSync(path, "utf8")) as RunConfig;
  } catch (e) {
    throw new SelfreportError(`${path}: not valid JSON (${(e as Error).message})`);
  }
  if (cfg.format_version === undefined) throw new SelfreportError(`${path}: no format_version; is this a run from the Python tool? Import it with \`selfreport import-pt\``);
  if (cfg.format_version !== RUN_FORMAT_VERSION) {
    throw new SelfreportError(`${path}: run format_version ${String(cfg.format_version)} is unknown to this selfreport (which reads version ${RUN_FORMAT_VERSION})`);
  }
  for (const key of ["head_type", "target_layer", "target_neuron", "layer_type", "feature_layer", "head_config", "bin_edges", "activation_mean", "activation_std", "freeze_mode"] as const) {
    if (cfg[key] === undefined) throw new SelfreportError(`${path}: field "${key}" is missing`);
  }
  return cfg;
}

export function readHead(dir: string, cfg: HeadConfig): HeadParams {
  const path = join(dir, "head.safetensors");
  if (!existsSync(path)) throw new SelfreportError(`${dir}: head.safetensors is missing`);
  const head: HeadParams = new Map();
  for (const [k, t] of readSafetensors(path).tensors) {
    if (!(t.data instanceof Float32Array)) throw new SelfreportError(`${path}: head tensor "${k}" is not floating point`);
    head.set(k, new Tensor(t.data, t.shape));
  }
  checkHeadParams(cfg, head, path);
  return head;
}

export function loadRun(dir: string): Run {
  const config = readRunConfig(dir);
  const head = readHead(dir, config.head_config);
  const headType = headTypeOf(config.head_config);
  if (headType !== config.head_type) throw new SelfreportError(`${dir}/config.json: head_type "${config.head_type}" disagrees with head_config.class_name "${config.head_config.class_name}"`);
  return {
    dir,
    config,
    head,
    headType,
    readout: { activationMean: config.activation_mean, activationStd: config.activation_std, binEdges: config.bin_edges },
  };
}

/** The base model the run started from (processed as during training). */
export function loadBaseModel(run: Run): HookedTransformer {
  const c = run.config;
  const where = existsSync(join(c.base_model_dir, "config.json")) ? c.base_model_dir : c.base_model_name;
  return loadModel(where, { weights: c.weights }).model;
}

/** The model the predictor runs on: the fine-tuned one for unfrozen/partial runs, else the base model. */
export function loadRunModel(run: Run): HookedTransformer {
  if (run.config.freeze_mode === "frozen") return loadBaseModel(run);
  const ft = join(run.dir, "finetuned");
  if (!existsSync(join(ft, "model.safetensors"))) throw new SelfreportError(`${run.dir}: a run with freeze_mode ${run.config.freeze_mode} needs finetuned/model.safetensors, which is missing`);
  // The fine-tuned weights were saved already processed, and config.json says so: loaded as saved.
  return loadModel(ft, { weights: run.config.weights }).model;
}

export function finetunedDir(runDir: string): string {
  return join(runDir, "finetuned");
}

/**
 * Everything a run folder holds (analyses and report of the run included), config.json first so that
 * an interrupted removal leaves a folder that is no complete run. Used by --force before a new run.
 */
export const RUN_ENTRIES = ["config.json", "head.safetensors", "finetuned", "metrics.json", "train_log.jsonl", "training_curve.svg", "checkpoint", "checkpoint.old", "analysis", "report.html"];

export function removeRunFiles(dir: string): void {
  for (const e of RUN_ENTRIES) rmSync(join(dir, e), { recursive: true, force: true });
}

export function writeRunConfig(dir: string, cfg: RunConfig): void {
  writeJsonAtomic(join(dir, "config.json"), cfg);
}

export function writeHead(dir: string, head: HeadParams, metadata: Record<string, string> = {}): void {
  const tensors: Record<string, { dtype: "F32"; shape: number[]; data: Float32Array }> = {};
  for (const [k, t] of head) tensors[k] = { dtype: "F32", shape: [...t.shape], data: t.data };
  writeSafetensors(join(dir, "head.safetensors"), tensors, metadata);
}

export function absolute(path: string): string {
  return resolve(path);
}
