/**
 * Running the jobs of one task, each into its own folder, atomically.
 *
 *   jobs/<job id>/            a run directory (src/selfreport/run.ts: config.json, head.safetensors, metrics.json,
 *                             train_log.jsonl), whose dataset is the sweep's examples with the job's
 *                             neuron's column of data/L{l}.targets.safetensors as targets (paths relative
 *                             to the job folder, so a sweep folder can be moved): every `selfreport
 *                             analyze`, `report` and `predict` works on it as on a run from `train`
 *     analysis/weights/, analysis/patching/   (when the sweep asks for them; where the report reads them)
 *     result.json             the job's row of the results table; written last
 *
 * A job is built in jobs/.stage-<job id>~<pid>~<host>~<random>/ and renamed to jobs/<job id>/ when complete
 * (a rename within one file system is atomic), so jobs/<job id>/ exists only for a finished job and a
 * killed worker leaves at most a stage folder, which the next run removes. When two workers finish the
 * same job (a queue redelivered it), the second rename fails and its copy is discarded: the folder,
 * and so the results table, has each job once. A job that throws is finished too: its folder holds
 * result.json with status "failed" and the error; the other jobs go on.
 *
 * Test hooks (environment): SELFREPORT_SWEEP_FAIL_JOBS=id,id makes those jobs throw;
 * SELFREPORT_SWEEP_JOB_DELAY_MS=ms waits that long inside every job before committing it.
 */
import { existsSync, readdirSync, readFileSync, renameSync, rmSync } from "node:fs";
import { join, relative } from "node:path";
import { makeFolders } from "../io/paths.ts";
import { randomBytes } from "node:crypto";
import { hostname } from "node:os";
import { Tensor } from "../tensor/index.ts";
import { loadModel } from "../model/load.ts";
import type { HookedTransformer } from "../model/transformer.ts";
import { writeJsonAtomic } from "../io/atomic.ts";
import { fileSha256 } from "../io/outputs.ts";
import { SelfreportError } from "../errors.ts";
import { pidAlive } from "../io/lock.ts";
import { readDataset, type Dataset } from "../selfreport/dataset.ts";
import { train, TRAIN_DEFAULTS, trainOptionsFrom, type TestMetrics } from "../selfreport/train.ts";
import {
  readRun, loadRunModel, writeRun, analysisDir, trainingRecordOf, RUN_FORMAT_VERSION, type DatasetRef, type FreezeMode, type RunConfig, type TrainingSettings,
} from "../selfreport/run.ts";
import type { ActivationStats } from "../selfreport/stats.ts";
import { modelDigitTokens } from "../selfreport/predictor.ts";
import { weightsAnalysis, weightsPlots } from "../analysis/weights.ts";
import { patchingAnalysis, patchingPlots } from "../analysis/patching.ts";
import { writeAnalysisOutput, type AnalysisContext } from "../analysis/context.ts";
import { examplesPath, featureLayerOf, layerTargetsPath, neuronDataset, readLayerTargets, readSweepFeatures, type LayerTargets } from "./data.ts";
import { trainMultiHead, ridgeMultiHead, type NeuronFit } from "./multihead.ts";
import { ridgeBasis, RIDGE_GRID_TEXT, type RidgeBasis } from "../selfreport/ridge.ts";
import { jobsOfTask, type JobSpec, type SweepManifest, type SweepSettings, type Task } from "./spec.ts";

/** One row of the results table. Numbers are null when the job failed or the analysis was not run. */
export interface JobResult {
  id: string;
  layer: number;
  neuron: number;
  head: string;
  freeze: string;
  status: "done" | "failed";
  error: string | null;
  test_r: number | null;
  test_r2: number | null;
  test_spearman: number | null;
  test_mse: number | null;
  baseline_mse: number | null;
  baseline_r2: number | null;
  val_r: number | null;
  accuracy: number | null;
  epochs_run: number | null;
  best_epoch: number | null;
  stopped_early: boolean | null;
  act_mean: number | null;
  act_std: number | null;
  act_max: number | null;
  act_frac_near_zero: number | null;
  weights_cos_w_out: number | null;
  weights_rank_w_out: number | null;
  weights_cos_w_in: number | null;
  weights_rank_w_in: number | null;
  n_in_layer: number | null;
  patching_slope: number | null;
  patching_r2: number | null;
  patching_percentile: number | null;
  trainer: "multi-output" | "single";
  seconds: number;
  worker: string;
  finished_at: string;
}

export const RESULT_FILE = "result.json";

/** A job's training settings: the sweep's, with the learning rate of its freezing mode. */
export function jobTraining(t: SweepSettings["training"], freeze: FreezeMode): TrainingSettings {
  const { lr_frozen, lr_finetune, solver: _solver, ...rest } = t;
  return { ...rest, lr: freeze === "frozen" ? lr_frozen : lr_finetune };
}

export function jobsDir(sweepDir: string): string {
  return join(sweepDir, "jobs");
}

export function jobDir(sweepDir: string, id: string): string {
  return join(jobsDir(sweepDir), id);
}

export function isJobFinished(sweepDir: string, id: string): boolean {
  return existsSync(join(jobDir(sweepDir, id), RESULT_FILE));
}

export function readJobResult(sweepDir: string, id: string): JobResult | null {
  const path = join(jobDir(sweepDir, id), RESULT_FILE);
  if (!existsSync(path)) return null;
  return JSON.parse(readFileSync(path, "utf8")) as JobResult;
}

/** Removes stage folders left by killed workers (only when no worker is running on the folder). */
export function removeStaleStages(sweepDir: string): number {
  const dir = jobsDir(sweepDir);
  if (!existsSync(dir)) return 0;
  let removed = 0;
  for (const name of readdirSync(dir)) {
    if (name.startsWith(".stage-")) {
      rmSync(join(dir, name), { recursive: true, force: true });
      removed++;
    }
  }
  return removed;
}

/** `.stage-<job id>~<pid>~<host>~<random>`: whose it is, so that the stages of dead workers can be found. */
export function stageName(id: string): string {
  return `.stage-${id}~${process.pid}~${hostname()}~${randomBytes(4).toString("hex")}`;
}

/**
 * Removes the stage folders of workers on this host that are no longer running (safe while other
 * workers run: a live worker's stages are kept, and other hosts' are never judged). Returns how many.
 */
export function removeDeadStages(sweepDir: string): number {
  const dir = jobsDir(sweepDir);
  if (!existsSync(dir)) return 0;
  let removed = 0;
  for (const name of readdirSync(dir)) {
    const m = /^\.stage-.*~(\d+)~(.*)~[0-9a-f]+$/.exec(name);
    if (m === null || m[2] !== hostname() || pidAlive(Number(m[1]))) continue;
    rmSync(join(dir, name), { recursive: true, force: true });
    removed++;
  }
  return removed;
}

/** A worker's name in results: host:pid (and thread). */
export function workerName(extra = ""): string {
  return `${hostname()}:${process.pid}${extra}`;
}

function testHookFailures(): Set<string> {
  return new Set((process.env["SELFREPORT_SWEEP_FAIL_JOBS"] ?? "").split(",").map((s) => s.trim()).filter((s) => s !== ""));
}

async function testHookDelay(): Promise<void> {
  const ms = Number(process.env["SELFREPORT_SWEEP_JOB_DELAY_MS"] ?? 0);
  if (ms > 0) await new Promise((r) => setTimeout(r, ms));
}

function emptyResult(job: JobSpec, trainer: JobResult["trainer"], worker: string): JobResult {
  return {
    id: job.id, layer: job.layer, neuron: job.neuron, head: job.head, freeze: job.freeze, status: "done", error: null,
    test_r: null, test_r2: null, test_spearman: null, test_mse: null, baseline_mse: null, baseline_r2: null, val_r: null, accuracy: null,
    epochs_run: null, best_epoch: null, stopped_early: null, act_mean: null, act_std: null, act_max: null, act_frac_near_zero: null,
    weights_cos_w_out: null, weights_rank_w_out: null, weights_cos_w_in: null, weights_rank_w_in: null, n_in_layer: null,
    patching_slope: null, patching_r2: null, patching_percentile: null, trainer, seconds: 0, worker, finished_at: "",
  };
}

function fillMetrics(r: JobResult, test: TestMetrics, validation: TestMetrics, stats: ActivationStats): void {
  r.test_r = test.pearson_r;
  r.test_r2 = test.r2;
  r.test_spearman = test.spearman_rho;
  r.test_mse = test.mse;
  r.baseline_mse = test.baseline.mse;
  r.baseline_r2 = test.baseline.r2;
  r.val_r = validation.pearson_r;
  r.accuracy = test.accuracy;
  r.act_mean = stats.mean;
  r.act_std = stats.std;
  r.act_max = stats.max;
  r.act_frac_near_zero = stats.frac_near_zero;
}

/** Runs the tasks of one sweep folder; keeps the model, examples, features and one layer's targets between tasks. */
export class JobRunner {
  private base: { model: HookedTransformer; dir: string } | null = null;
  private examples: Dataset | null = null;
  private features: Tensor | null = null;
  private layerTargets: LayerTargets | null = null;
  /** The ridge solver's eigendecomposition of the features: the same for every layer, so made once. */
  private ridge: RidgeBasis | null = null;

  constructor(readonly sweepDir: string, readonly manifest: SweepManifest, readonly worker: string) {}

  private get s() {
    return this.manifest.settings;
  }

  private baseModel(): { model: HookedTransformer; dir: string } {
    if (this.base === null) {
      const { model, dir } = loadModel(this.s.model_dir, { weights: this.s.weights });
      this.base = { model, dir };
    }
    return this.base;
  }

  private shared(layer: number): { examples: Dataset; features: Tensor; lt: LayerTargets } {
    const base = this.baseModel();
    const exPath = examplesPath(this.sweepDir);
    if (this.examples === null) this.examples = readDataset(exPath);
    if (this.features === null) {
      this.features = readSweepFeatures(this.sweepDir, featureLayerOf(this.s, base.model.cfg.nLayers), this.s.weights, this.examples.meta.n, base.model.cfg.dModel);
    }
    if (this.layerTargets === null || this.layerTargets.layer !== layer) this.layerTargets = readLayerTargets(this.sweepDir, layer, this.examples.meta.n);
    return { examples: this.examples, features: this.features, lt: this.layerTargets };
  }

  /** Runs the task's unfinished jobs; returns the results of all its jobs (finished earlier or now). */
  async runTask(task: Task): Promise<JobResult[]> {
    const jobs = jobsOfTask(task);
    const pending = jobs.filter((j) => !isJobFinished(this.sweepDir, j.id));
    if (pending.length > 0) {
      if (task.multi) await this.runMulti(task, pending);
      else for (const j of pending) await this.runSingle(j);
    }
    return jobs.map((j) => readJobResult(this.sweepDir, j.id)).filter((r): r is JobResult => r !== null);
  }

  /** Records every unfinished job of the task as failed with `error` (a task that could not start, or a crashed worker). */
  failTask(task: Task, error: string): JobResult[] {
    for (const job of jobsOfTask(task)) {
      if (isJobFinished(this.sweepDir, job.id)) continue;
      this.failed(job, this.newStage(job.id), task.multi ? "multi-output" : "single", Date.now(), new SelfreportError(error));
    }
    return jobsOfTask(task).map((j) => readJobResult(this.sweepDir, j.id)).filter((r): r is JobResult => r !== null);
  }

  private newStage(id: string): string {
    const stage = join(this.sweepDir, "jobs", stageName(id));
    makeFolders(stage);
    return stage;
  }

  /**
   * What a job's config.json records as its dataset: the sweep's examples with column k of the
   * layer's targets file, both relative to the job folder (jobs/<id>/ and its stage folder are both
   * two levels below the sweep folder).
   */
  private datasetRef(stage: string, ds: Dataset, lt: LayerTargets, neuron: number): DatasetRef {
    const column = lt.neurons.indexOf(neuron);
    if (column < 0) throw new SelfreportError(`neuron ${neuron} is not among the swept neurons of layer ${lt.layer}`);
    const targetsPath = layerTargetsPath(this.sweepDir, lt.layer);
    return {
      path: relative(stage, examplesPath(this.sweepDir)), n: ds.meta.n, layer: lt.layer, neuron, model_dir: ds.meta.model_dir,
      sha256: fileSha256(examplesPath(this.sweepDir)),
      target_column: { path: relative(stage, targetsPath), column, sha256: fileSha256(targetsPath) },
    };
  }

  /** result.json last, then the atomic rename; a job another worker finished first wins. */
  private commit(stage: string, result: JobResult): void {
    writeJsonAtomic(join(stage, RESULT_FILE), result);
    const final = jobDir(this.sweepDir, result.id);
    try {
      renameSync(stage, final);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code === "ENOTEMPTY" || code === "EEXIST") {
        rmSync(stage, { recursive: true, force: true });
        return;
      }
      throw e;
    }
  }

  private failed(job: JobSpec, stage: string, trainer: JobResult["trainer"], t0: number, e: unknown): void {
    const r = emptyResult(job, trainer, this.worker);
    r.status = "failed";
    r.error = e instanceof Error ? e.message : String(e);
    r.seconds = (Date.now() - t0) / 1000;
    r.finished_at = new Date().toISOString();
    // keep only result.json in a failed job's folder
    for (const name of readdirSync(stage)) if (name !== RESULT_FILE) rmSync(join(stage, name), { recursive: true, force: true });
    this.commit(stage, r);
  }

  private async runSingle(job: JobSpec): Promise<void> {
    const t0 = Date.now();
    const stage = this.newStage(job.id);
    try {
      if (testHookFailures().has(job.id)) throw new SelfreportError(`injected failure (SELFREPORT_SWEEP_FAIL_JOBS) in ${job.id}`);
      const { examples, features, lt } = this.shared(job.layer);
      const ds = neuronDataset(examples, lt, job.neuron);
      const s = this.s;
      const frozen = job.freeze === "frozen";
      // a fine-tuning job trains the model in place: give it its own copy
      const loaded = frozen ? this.baseModel() : (() => {
        const l = loadModel(s.model_dir, { weights: s.weights });
        return { model: l.model, dir: l.dir };
      })();
      const res = await train({
        ...TRAIN_DEFAULTS, data: examplesPath(this.sweepDir), out: stage, head: job.head, freeze: job.freeze,
        unfreezeLast: job.freeze === "partial" ? s.unfreeze_last : null, ...trainOptionsFrom(jobTraining(s.training, job.freeze)),
        hiddenDim: null, activation: null, numClasses: null, checkpointEvery: 1_000_000_000, resume: false, force: true,
        solver: frozen && job.head === "regression" ? (s.training.solver ?? "adamw") : "adamw",
      }, { dataset: ds, loaded, datasetRef: this.datasetRef(stage, ds, lt, job.neuron), ...(frozen ? { features } : {}) });
      const r = emptyResult(job, "single", this.worker);
      fillMetrics(r, res.test, res.validation, ds.meta.stats);
      r.epochs_run = res.epochsRun;
      r.best_epoch = res.bestEpoch;
      r.stopped_early = res.stoppedEarly;
      await this.analyses(stage, ds, r);
      await testHookDelay();
      r.seconds = (Date.now() - t0) / 1000;
      r.finished_at = new Date().toISOString();
      this.commit(stage, r);
    } catch (e) {
      this.failed(job, stage, "single", t0, e);
    }
  }

  private async runMulti(task: Task, pending: JobSpec[]): Promise<void> {
    const t0 = Date.now();
    const { examples, features, lt } = this.shared(task.layer);
    const s = this.s;
    const model = this.baseModel().model;
    const C = model.cfg.dModel;
    const n = examples.meta.n;
    const K = pending.length;
    const Kl = lt.neurons.length;
    const cols = pending.map((j) => {
      const k = lt.neurons.indexOf(j.neuron);
      if (k < 0) throw new SelfreportError(`neuron ${j.neuron} is not among the swept neurons of layer ${task.layer}`);
      return k;
    });
    const targets = new Float32Array(n * K);
    for (let i = 0; i < n; i++) for (let a = 0; a < K; a++) targets[i * K + a] = lt.targets[i * Kl + cols[a]!]!;
    let fits: NeuronFit[];
    const ridge = task.head === "regression" && (s.training.solver ?? "adamw") === "ridge";
    try {
      if (ridge) {
        if (this.ridge === null) {
          const split = examples.split;
          const rows = (code: number): number[] => Array.from(split.keys()).filter((i) => split[i] === code);
          this.ridge = ridgeBasis(features.data, C, rows(0), rows(1));
        }
        fits = ridgeMultiHead({ features: features.data, C, targets, K, split: examples.split, head: task.head, model }, this.ridge);
      } else {
        const digitTokens = task.head === "token" ? modelDigitTokens(this.baseModel().dir, model.cfg) : undefined;
        fits = trainMultiHead({ features: features.data, C, targets, K, split: examples.split, head: task.head, model, ...(digitTokens !== undefined ? { digitTokens } : {}) }, trainOptionsFrom(jobTraining(s.training, "frozen")));
      }
    } catch (e) {
      const msg = e instanceof Error ? e.message : String(e);
      fits = pending.map(() => ({ ok: false, error: msg }));
    }
    const trainSeconds = (Date.now() - t0) / 1000;
    const failures = testHookFailures();
    const F = featureLayerOf(s, model.cfg.nLayers);
    for (let a = 0; a < K; a++) {
      const job = pending[a]!;
      const tj = Date.now();
      const stage = this.newStage(job.id);
      try {
        const fit = fits[a]!;
        if (failures.has(job.id)) throw new SelfreportError(`injected failure (SELFREPORT_SWEEP_FAIL_JOBS) in ${job.id}`);
        if (!fit.ok) throw new SelfreportError(fit.error);
        const ds = neuronDataset(examples, lt, job.neuron);
        const headCfg = fit.headConfig;
        const P = fit.bias.length;
        const rf = fit.ridge;
        const stepsPerEpoch = Math.ceil(fit.steps / Math.max(1, fit.epochsRun));
        const config: RunConfig = {
          format_version: RUN_FORMAT_VERSION, head_type: task.head, target_layer: job.layer, target_neuron: job.neuron, layer_type: "mlp_post",
          token_pos: "last", feature_layer: F, head_config: headCfg, base_model_name: s.model_dir, base_model_dir: s.model_dir, weights: s.weights,
          // the bins the head was trained on; a regression run records the dataset's (as train() does)
          d_model: C, bin_edges: [...(task.head === "regression" ? ds.meta.bin_edges : fit.binEdges)], activation_mean: fit.stats.mean, activation_std: fit.stats.std, freeze_mode: "frozen",
          unfreeze_last: null, dataset: this.datasetRef(stage, ds, lt, job.neuron),
          training: rf !== undefined ? {
            solver: "ridge", lambda: rf.lambda, alpha: rf.alpha, val_loss: rf.valLoss, grid: RIDGE_GRID_TEXT, steps: 0, epochs_run: 0, best_epoch: 0,
            seconds: Math.round((trainSeconds / K) * 1000) / 1000, multi_output_neurons: K,
          } : {
            solver: "adamw", ...trainingRecordOf(jobTraining(s.training, "frozen")), epochs_run: fit.epochsRun, best_epoch: fit.bestEpoch,
            steps: fit.steps, seconds: Math.round((trainSeconds / K) * 1000) / 1000, multi_output_neurons: K,
          },
        };
        writeRun(stage, {
          config,
          head: new Map([["output.weight", new Tensor(fit.weight, [P, C])], ["output.bias", new Tensor(fit.bias, [P])]]),
          metrics: {
            test: fit.test, validation: fit.validation, solver: rf !== undefined ? "ridge" : "adamw",
            ...(rf !== undefined ? { ridge: { lambda: rf.lambda, alpha: rf.alpha, val_loss: rf.valLoss, grid: rf.grid } } : {}),
            epochs_run: fit.epochsRun, best_epoch: fit.bestEpoch, stopped_early: fit.stoppedEarly, seconds: trainSeconds / K,
          },
          // a ridge solve logs one record; a multi-output AdamW head once per epoch: the epoch's mean training loss and the validation loss
          trainLog: rf !== undefined
            ? [{ step: 1, epoch: 1, solver: "ridge", lambda: rf.lambda, alpha: rf.alpha, val_loss: rf.valLoss, val_r: fit.validation.pearson_r, grid: rf.grid }]
            : fit.curve.map((c) => ({ step: c.epoch * stepsPerEpoch, epoch: c.epoch, train_loss_mean: c.train, val_loss: c.val })),
        });
        const r = emptyResult(job, "multi-output", this.worker);
        fillMetrics(r, fit.test, fit.validation, fit.stats);
        r.epochs_run = fit.epochsRun;
        r.best_epoch = fit.bestEpoch;
        r.stopped_early = fit.stoppedEarly;
        await this.analyses(stage, ds, r);
        await testHookDelay();
        r.seconds = trainSeconds / K + (Date.now() - tj) / 1000;
        r.finished_at = new Date().toISOString();
        this.commit(stage, r);
      } catch (e) {
        this.failed(job, stage, "multi-output", tj, e);
      }
    }
  }

  /** The sweep's analyses on a finished run directory, with their plots (as `analyze` writes them); their key numbers go into the result row. */
  private async analyses(runDir: string, ds: Dataset, r: JobResult): Promise<void> {
    const s = this.s;
    if (s.analyses.length === 0) return;
    const run = readRun(runDir);
    const base = this.baseModel().model;
    const model = run.config.freeze_mode === "frozen" ? base : loadRunModel(run);
    const ctx: AnalysisContext = { run, model, baseModel: base, ds, datasetPath: examplesPath(this.sweepDir) };
    if (s.analyses.includes("weights")) {
      const w = weightsAnalysis(ctx, { maxExamples: s.analysis_options.weights_max_examples });
      writeAnalysisOutput(analysisDir(runDir, "weights"), "weights", run, w, await weightsPlots(w));
      const out = w.reading.W_out;
      const inn = w.reading.W_in_folded;
      r.weights_cos_w_out = out?.cosine ?? null;
      r.weights_rank_w_out = out?.rank_in_layer ?? null;
      r.weights_cos_w_in = inn?.cosine ?? null;
      r.weights_rank_w_in = inn?.rank_in_layer ?? null;
      r.n_in_layer = out?.n_in_layer ?? null;
    }
    if (s.analyses.includes("patching")) {
      const p = patchingAnalysis(ctx, { nInputs: s.analysis_options.patching_inputs, controls: s.analysis_options.patching_controls, bootstrap: 200 });
      writeAnalysisOutput(analysisDir(runDir, "patching"), "patching", run, p, await patchingPlots(p));
      r.patching_slope = p.fit?.slope ?? null;
      r.patching_r2 = p.fit?.r2 ?? null;
      r.patching_percentile = p.controls.percentile_abs;
    }
  }
}
