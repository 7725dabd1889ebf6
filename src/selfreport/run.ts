/**
 * The run directory: the only thing training, sweeps, import, analyses and the report share. This
 * module is the only one that knows its layout; every writer goes through writeRun and every
 * reader through readRun / readRunDataset / readTrainLog / analysisDir.
 *
 *   config.json           what was trained (RunConfig: field names of the original Python tool, plus ours)
 *   head.safetensors      output.weight / output.bias [/ hidden.weight / hidden.bias], PyTorch layout
 *   finetuned/            unfrozen and partial runs: the trained base model, Hugging Face layout
 *   metrics.json          test-split metrics and the mean baseline (RunMetrics)
 *   train_log.jsonl       one line per step, per evaluation or per epoch (TrainLogRecord, each with `step`)
 *   training_curve.svg    loss curves (optional: the report draws them from train_log.jsonl otherwise)
 *   checkpoint/           the latest training checkpoint (for --resume)
 *   analysis/<name>/      summary.json + SVG plots of `selfreport analyze <name>` (weights, patching, residual)
 *
 * A run names its dataset in config.dataset: the examples file and, when the targets are not the
 * file's own (a sweep job: one examples file, the targets of many neurons in data/L{l}.targets.safetensors),
 * the targets file and the column that holds the run's neuron. readRunDataset gives back exactly
 * the examples the run was trained on.
 */
import { appendFileSync, existsSync, readFileSync, rmSync, statSync } from "node:fs";
import { join, resolve } from "node:path";
import { Tensor } from "../tensor/index.ts";
import { readSafetensors, writeSafetensors } from "../io/safetensors.ts";
import { writeFileAtomic, writeJsonAtomic } from "../io/atomic.ts";
import { loadModel } from "../model/load.ts";
import type { HookedTransformer } from "../model/transformer.ts";
import { SelfreportError } from "../errors.ts";
import { checkRunConfig, checkTargetFitsModel, isJsonObject } from "../io/schema.ts";
import { checkHeadParams, headTypeOf, type HeadConfig, type HeadParams, type HeadType, type Readout } from "./predictor.ts";
import { readDataset, readTargetsColumn, withTargets, type Dataset, type TokenPos } from "./dataset.ts";
import { runTarget, targetLabel, type LayerType, type Target } from "./target.ts";
import type { RegressionMetrics } from "./stats.ts";

export const RUN_FORMAT_VERSION = 1;
export type FreezeMode = "frozen" | "unfrozen" | "partial";
export const FREEZE_MODES: readonly FreezeMode[] = ["frozen", "unfrozen", "partial"];

/** The folder analyses of a run are written to and the report reads: RUN_DIR/analysis[/name]. */
export const ANALYSIS_DIR = "analysis";
export function analysisDir(runDir: string, name?: string): string {
  return name === undefined ? join(runDir, ANALYSIS_DIR) : join(runDir, ANALYSIS_DIR, name);
}

export const TRAIN_LOG = "train_log.jsonl";

/** The dataset a run was trained on. path "" = none recorded (an imported run). */
export interface DatasetRef {
  /** The examples file (a selfreport dataset): absolute, or relative to the run directory. */
  path: string;
  n: number;
  layer: number;
  neuron: number;
  model_dir: string;
  /**
   * When the run's targets are not the examples file's own: column `column` of the targets file
   * `path` (F32 [n, K], see readTargetsColumn; absolute or relative to the run directory) holds them.
   */
  target_column?: { path: string; column: number; /** sha256 (hex) of the targets file at training (sweep jobs) */ sha256?: string } | null;
  /**
   * sha256 (hex) of the examples file when the run was trained (absent in older runs and imports):
   * analyses refuse the recorded dataset once its content changed, and outputs never replace it.
   */
  sha256?: string;
}

/**
 * The hyper-parameters of training a head, one record in snake_case: what `train` and `sweep` take
 * (their flags are registered once, in src/cli/training-options.ts), what config.json's `training`
 * records (with the outcome, TrainingRecord) and what sweep.json's `training` holds (with one lr per
 * freezing kind). TrainOptions (src/selfreport/train.ts) is made from it by trainOptionsFrom.
 */
export interface TrainingSettings {
  /** resid_post of this layer is what the head reads; -1 = the last layer. */
  feature_layer: number;
  epochs: number;
  batch_size: number;
  /** Peak learning rate. */
  lr: number;
  /** AdamW decoupled weight decay. */
  weight_decay: number;
  /** Warm-up steps. */
  warmup: number;
  /** Global gradient-norm clip (0 = off). */
  grad_clip: number;
  /** Epochs without validation improvement before stopping. */
  patience: number;
  seed: number;
}

/** config.json's `training`: the settings (the feature layer is recorded resolved, as feature_layer) and how training went. Imported runs record none of it. */
export interface TrainingRecord extends Omit<TrainingSettings, "feature_layer"> {
  epochs_run: number;
  best_epoch: number;
  steps: number;
  seconds: number;
  /** Set when the head was trained with others as one multi-output head (a sweep): how many. */
  multi_output_neurons?: number;
  /** How the head was fitted: "adamw" (the training loop) or "ridge" (closed form; frozen linear regression heads). */
  solver?: "adamw" | "ridge";
  /** Ridge: the chosen penalty λ, its α (λ = α · mean eigenvalue of the feature covariance), its validation loss, the grid searched. */
  lambda?: number;
  alpha?: number;
  val_loss?: number;
  grid?: string;
}

/** The settings as config.json's `training` records them (feature_layer is the config's own field, resolved). */
export function trainingRecordOf(t: TrainingSettings): Omit<TrainingSettings, "feature_layer"> {
  const { feature_layer: _resolvedElsewhere, ...rest } = t;
  return rest;
}

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
  dataset: DatasetRef;
  training: Partial<TrainingRecord>;
  /** Set for runs imported from the Python tool. */
  imported?: { from: string; notes: string[] };
}

/** One split's metrics in metrics.json: the regression metrics plus bin accuracy and the mean baseline. */
export interface TestMetrics extends RegressionMetrics {
  /** Bin accuracy (classification and token heads): argmax class equals the target's bin. */
  accuracy: number | null;
  baseline: { description: string; mse: number; mae: number; r2: number };
}

/** metrics.json. */
export interface RunMetrics {
  test: TestMetrics;
  validation: TestMetrics;
  /** How the head was fitted (see TrainingRecord.solver). */
  solver?: "adamw" | "ridge";
  /** Ridge: the chosen penalty, its validation loss (standardised MSE) and the whole grid. */
  ridge?: { lambda: number; alpha: number; val_loss: number; grid: Array<{ alpha: number; lambda: number; val_loss: number }> };
  epochs_run: number;
  best_epoch: number;
  stopped_early: boolean;
  seconds: number;
}

/**
 * One line of train_log.jsonl. Every record has `step` (optimizer steps so far) and `epoch` (1-based):
 * a training step's loss, a validation, (multi-output heads, which log per epoch) the epoch's mean
 * training loss with the validation loss, or the one record of a ridge solve.
 */
export type TrainLogRecord =
  | { step: number; epoch: number; loss: number; lr: number }
  | { step: number; epoch: number; val_loss: number; val_r: number }
  | { step: number; epoch: number; train_loss_mean: number; val_loss: number }
  | { step: number; epoch: number; solver: "ridge"; lambda: number; alpha: number; val_loss: number; val_r: number; grid: Array<{ alpha: number; lambda: number; val_loss: number }> };

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
  if (!existsSync(path)) {
    if (existsSync(join(dir, "sweep.json"))) {
      throw new SelfreportError(`${dir} is a sweep folder, not a run directory: its runs are ${join(dir, "jobs", "<job id>")}; \`selfreport report --sweep ${dir} --out FILE.html\` reports the whole sweep`);
    }
    throw new SelfreportError(`${dir} is not a run directory: config.json is missing`);
  }
  let cfg: RunConfig;
  try {
    cfg = JSON.parse(readFileSync(path, "utf8")) as RunConfig;
  } catch (e) {
    throw new SelfreportError(`${path}: not valid JSON (${(e as Error).message})`);
  }
  if (!isJsonObject(cfg)) throw new SelfreportError(`${path}: expected a JSON object (a run's config)`);
  if (cfg.format_version === undefined) throw new SelfreportError(`${path}: no format_version; is this a run from the Python tool? Import it with \`selfreport import-pt\``);
  if (cfg.format_version !== RUN_FORMAT_VERSION) {
    throw new SelfreportError(`${path}: run format_version ${String(cfg.format_version)} is unknown to this selfreport (which reads version ${RUN_FORMAT_VERSION})`);
  }
  checkRunConfig(cfg as unknown as Record<string, unknown>, path);
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

/** A run directory: its config and head, checked against each other. */
export function readRun(dir: string): Run {
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

/** The same as readRun. */
export const loadRun = readRun;

/** The base model the run started from (processed as during training). */
export function loadBaseModel(run: Run): HookedTransformer {
  const c = run.config;
  const where = existsSync(join(c.base_model_dir, "config.json")) ? c.base_model_dir : c.base_model_name;
  const model = loadModel(where, { weights: c.weights }).model;
  checkTargetFitsModel(c, model.cfg, join(run.dir, "config.json"));
  return model;
}

/** The model the predictor runs on: the fine-tuned one for unfrozen/partial runs, else the base model. */
export function loadRunModel(run: Run): HookedTransformer {
  if (run.config.freeze_mode === "frozen") return loadBaseModel(run);
  const ft = join(run.dir, "finetuned");
  if (!existsSync(join(ft, "model.safetensors"))) throw new SelfreportError(`${run.dir}: a run with freeze_mode ${run.config.freeze_mode} needs finetuned/model.safetensors, which is missing`);
  // The fine-tuned weights were saved already processed, and config.json says so: loaded as saved.
  const model = loadModel(ft, { weights: run.config.weights }).model;
  checkTargetFitsModel(run.config, model.cfg, join(run.dir, "config.json"));
  return model;
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

export interface RunFiles {
  config: RunConfig;
  head: HeadParams;
  /** Metadata of head.safetensors. */
  headMetadata?: Record<string, string>;
  metrics?: RunMetrics;
  /** The whole training log (omit when it was appended step by step with appendTrainLog). */
  trainLog?: readonly TrainLogRecord[];
  /** training_curve.svg. */
  trainingCurveSvg?: string;
}

/**
 * Writes a run directory, each file atomically and config.json last: a directory with config.json
 * is a complete run. The fine-tuned model (finetuned/) is saved by the caller before this.
 */
export function writeRun(dir: string, f: RunFiles): void {
  const c = f.config;
  if (c.format_version !== RUN_FORMAT_VERSION) throw new SelfreportError(`writeRun: format_version ${c.format_version}, expected ${RUN_FORMAT_VERSION}`);
  checkHeadParams(c.head_config, f.head, join(dir, "head.safetensors"));
  writeHead(dir, f.head, f.headMetadata ?? {});
  if (f.metrics !== undefined) writeJsonAtomic(join(dir, "metrics.json"), f.metrics);
  if (f.trainLog !== undefined) writeFileAtomic(join(dir, TRAIN_LOG), f.trainLog.map((r) => JSON.stringify(r) + "\n").join(""));
  if (f.trainingCurveSvg !== undefined) writeFileAtomic(join(dir, "training_curve.svg"), f.trainingCurveSvg);
  writeRunConfig(dir, c);
}

/** Appends one record to train_log.jsonl (training logs step by step, so a resumed run keeps its log). */
export function appendTrainLog(dir: string, rec: TrainLogRecord): void {
  appendFileSync(join(dir, TRAIN_LOG), JSON.stringify(rec) + "\n");
}

export function removeTrainLog(dir: string): void {
  rmSync(join(dir, TRAIN_LOG), { force: true });
}

/** train_log.jsonl: its records (each has a numeric step) and how many lines were not records. null when there is no log. */
export function readTrainLog(dir: string): { records: Array<Record<string, unknown> & { step: number }>; bad: number } | null {
  const path = join(dir, TRAIN_LOG);
  if (!existsSync(path)) return null;
  const records: Array<Record<string, unknown> & { step: number }> = [];
  let bad = 0;
  for (const line of readFileSync(path, "utf8").split("\n")) {
    if (line.trim() === "") continue;
    let rec: unknown;
    try {
      rec = JSON.parse(line);
    } catch {
      bad++;
      continue;
    }
    if (typeof rec !== "object" || rec === null || Array.isArray(rec) || typeof (rec as Record<string, unknown>)["step"] !== "number") {
      bad++;
      continue;
    }
    records.push(rec as Record<string, unknown> & { step: number });
  }
  return { records, bad };
}

/** Throws unless the dataset was built for the run's model, layer, neuron and hook. */
export function checkDatasetMatchesRun(run: Run, ds: Dataset, datasetPath: string): void {
  const c = run.config;
  const m = ds.meta;
  const problems: string[] = [];
  if (m.layer !== c.target_layer) problems.push(`layer ${m.layer} ≠ run's ${c.target_layer}`);
  if (m.neuron !== c.target_neuron) problems.push(`neuron ${m.neuron} ≠ run's ${c.target_neuron}`);
  if (m.layer_type !== c.layer_type) problems.push(`layer_type ${m.layer_type} ≠ run's ${c.layer_type}`);
  if (m.token_pos !== c.token_pos) problems.push(`token_pos ${JSON.stringify(m.token_pos)} ≠ run's ${JSON.stringify(c.token_pos)}`);
  if (resolve(m.model_dir) !== resolve(c.dataset.model_dir)) problems.push(`model ${m.model_dir} ≠ run's ${c.dataset.model_dir}`);
  if (problems.length > 0) throw new SelfreportError(`dataset ${datasetPath} does not belong to run ${run.dir}: ${problems.join("; ")}`);
}

/** The `selfreport dataset` command that builds a dataset for the run's model, target and read position, written to `out`. */
export function datasetCommandFor(run: Run, out = "FILE"): string {
  const c = run.config;
  return `selfreport dataset --model ${c.base_model_dir} --layer ${c.target_layer} --neuron ${c.target_neuron}` +
    `${c.layer_type === "mlp_out" ? " --layer-type mlp_out" : ""}${c.token_pos === "last" ? "" : ` --token-pos ${c.token_pos}`} --weights ${c.weights} --out ${out}`;
}

/**
 * The run's examples with its targets: `dataPath` (a dataset built for the run's target) when given,
 * else the dataset recorded in config.json (with its target column, for a sweep job). Checked to
 * belong to the run.
 */
export function readRunDataset(run: Run, dataPath?: string): { ds: Dataset; datasetPath: string } {
  const c = run.config;
  const ref = c.dataset;
  if (dataPath === undefined && ref.path === "") {
    throw new SelfreportError(`run ${run.dir} has no dataset (it was imported); build one with \`${datasetCommandFor(run)}\` and pass --data FILE`);
  }
  // a recorded path is relative to the run directory (sweep jobs) or absolute (train)
  const datasetPath = dataPath ?? resolve(run.dir, ref.path);
  if (!existsSync(datasetPath) || statSync(datasetPath).isDirectory()) {
    throw new SelfreportError(`dataset ${datasetPath} not found${dataPath === undefined ? " (the path recorded in the run's config.json); pass --data FILE" : ""}`);
  }
  let ds = readDataset(datasetPath);
  let described = datasetPath;
  if (dataPath === undefined && ref.target_column != null) {
    const target: Target = runTarget(c);
    const targetsPath = resolve(run.dir, ref.target_column.path);
    ds = withTargets(ds, target, readTargetsColumn(targetsPath, target, ref.target_column.column, ds.meta.n));
    described = `${datasetPath} with ${targetLabel(target)} from column ${ref.target_column.column} of ${targetsPath}`;
  }
  checkDatasetMatchesRun(run, ds, described);
  return { ds, datasetPath };
}

export function absolute(path: string): string {
  return resolve(path);
}
