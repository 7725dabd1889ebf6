/**
 * Training an ActivationPredictor from a dataset into a run directory.
 *
 *   frozen    only the head trains, on cached residual features (one forward pass per window, once)
 *   unfrozen  the head stays at its seeded initialisation; the base model trains to write what it reads
 *   partial   the last K blocks up to the feature layer (+ ln_final) and the head train
 *
 * AdamW with linear warm-up + cosine decay, validation every epoch, early stopping on validation
 * loss (the best weights are kept), a JSONL log of every step, checkpoints every N steps and on
 * Ctrl-C, and --resume that continues exactly where the checkpoint left off.
 *
 * A frozen linear regression head is solved exactly instead (solver "ridge", the default there;
 * src/selfreport/ridge.ts): closed-form ridge on the cached features with the penalty chosen on the
 * validation split. It writes the same run directory (head, metrics, one train_log record for the solve).
 */
import { existsSync, rmSync } from "node:fs";
import { join, resolve } from "node:path";
import {
  Tensor, Rng, noGrad, indexSelect, mse, crossEntropy, backward, adamW, clipGradNorm, warmupCosine, argmaxLast,
} from "../tensor/index.ts";
import { loadModel, saveModel } from "../model/load.ts";
import type { HookedTransformer } from "../model/transformer.ts";
import { saveCheckpoint, loadCheckpoint, CHECKPOINT_VERSION } from "../io/checkpoint.ts";
import { checkOutput, fileSha256, registerRunOfDataset } from "../io/outputs.ts";
import { withOutputFolder, keepCheckpoint, truncateLogToStep } from "../io/folder.ts";
import { lineChart, renderSvg } from "../report/charts.ts";
import { progress, info } from "../util/progress.ts";
import { interruptibleSection, interruptSignal, Interrupted, yieldToEventLoop } from "../util/interrupt.ts";
import { SelfreportError } from "../errors.ts";
import { expectFolderPath } from "../io/paths.ts";
import { readDataset, splitIndices, exampleBatch, padIdForVocab, checkDatasetFitsModel, type Dataset } from "./dataset.ts";
import { cachedFeatures } from "./features.ts";
import {
  makeHeadConfig, modelDigitTokens, initHead, headForward, predictionsFromOutput, readFeatures,
  type HeadType, type HeadConfig, type HeadParams, type HiddenActivation, type Readout,
} from "./predictor.ts";
import { quantileBinEdges, binOf, regressionMetrics } from "./stats.ts";
import { ridgeBasis, ridgeFit, ridgeApplies, defaultSolver, SOLVERS, RIDGE_GRID_TEXT, type Solver } from "./ridge.ts";
import {
  RUN_FORMAT_VERSION, FREEZE_MODES, writeRun, appendTrainLog, removeTrainLog, removeRunFiles, finetunedDir, trainingRecordOf,
  type DatasetRef, type FreezeMode, type RunConfig, type TestMetrics, type TrainingSettings, type TrainLogRecord,
} from "./run.ts";

export type { TestMetrics } from "./run.ts";

export interface TrainOptions {
  data: string;
  out: string;
  head: HeadType;
  freeze: FreezeMode;
  unfreezeLast: number | null;
  /** -1 = last layer. */
  featureLayer: number;
  epochs: number;
  batchSize: number;
  lr: number;
  weightDecay: number;
  /** Warm-up steps. */
  warmup: number;
  gradClip: number;
  seed: number;
  /** Epochs without validation improvement before stopping. */
  patience: number;
  hiddenDim: number | null;
  activation: HiddenActivation | null;
  dropout: number;
  numClasses: number | null;
  checkpointEvery: number;
  resume: boolean;
  force: boolean;
  /** Use this model directory instead of the dataset's (must be the same model). */
  model?: string;
  /** "ridge" (closed form; frozen linear regression only) or "adamw"; default: defaultSolver(options). */
  solver?: Solver;
}

/** The training defaults (the learning rate's depends on the freezing mode: defaultLr). */
export const TRAINING_DEFAULTS: Readonly<Omit<TrainingSettings, "lr">> = {
  feature_layer: -1, epochs: 20, batch_size: 64, weight_decay: 0.01, warmup: 50, grad_clip: 1.0, patience: 3, seed: 0,
};

/** TrainOptions' hyper-parameters from the snake_case settings record. */
export function trainOptionsFrom(t: TrainingSettings): Pick<TrainOptions, "featureLayer" | "epochs" | "batchSize" | "lr" | "weightDecay" | "warmup" | "gradClip" | "patience" | "seed"> {
  return {
    featureLayer: t.feature_layer, epochs: t.epochs, batchSize: t.batch_size, lr: t.lr, weightDecay: t.weight_decay, warmup: t.warmup,
    gradClip: t.grad_clip, patience: t.patience, seed: t.seed,
  };
}

/** The snake_case settings record of TrainOptions' hyper-parameters (the inverse of trainOptionsFrom). */
export function trainingSettingsOf(o: TrainOptions): TrainingSettings {
  return {
    feature_layer: o.featureLayer, epochs: o.epochs, batch_size: o.batchSize, lr: o.lr, weight_decay: o.weightDecay, warmup: o.warmup,
    grad_clip: o.gradClip, patience: o.patience, seed: o.seed,
  };
}

/** The same defaults under TrainOptions' names. */
export const TRAIN_DEFAULTS = {
  freeze: "frozen" as FreezeMode, ...trainOptionsFrom({ ...TRAINING_DEFAULTS, lr: 1e-3 }), dropout: 0, checkpointEvery: 500,
};

/** Learning-rate defaults differ by mode: fine-tuning a whole model wants a much smaller step. */
export function defaultLr(freeze: FreezeMode): number {
  return freeze === "frozen" ? 1e-3 : 1e-4;
}

export interface TrainResult {
  runDir: string;
  test: TestMetrics;
  validation: TestMetrics;
  epochsRun: number;
  bestEpoch: number;
  stoppedEarly: boolean;
  seconds: number;
  /** Set when the ridge solver fitted the head: the chosen penalty and its validation MSE (standardised). */
  ridge?: { lambda: number; alpha: number; valLoss: number };
}

interface TrainState {
  version: number;
  step: number;
  epoch: number;
  stepInEpoch: number;
  bestValLoss: number;
  bestEpoch: number;
  badEpochs: number;
  curve: Array<{ step: number; epoch: number; train?: number; val?: number; val_r?: number }>;
  seconds: number;
  fingerprint: string;
  /** sha256 of the dataset file (absent in older checkpoints and for in-memory datasets). */
  datasetSha256?: string;
}

/**
 * Inputs already in memory, for callers that train many runs on one dataset (the sweep): each one
 * given replaces the corresponding read from disk in prepare(). `loaded.model` is trained in place
 * when the mode is not frozen, so pass a fresh model for those.
 */
export interface TrainInputs {
  dataset?: Dataset;
  /** Frozen mode: the feature cache [n, d_model] for `dataset`. */
  features?: Tensor;
  loaded?: { model: HookedTransformer; dir: string };
  /** What config.json records as the dataset (default: the file `data` with its own targets). */
  datasetRef?: DatasetRef;
}

/** Everything the training loop needs about one example set. */
interface Prepared {
  ds: Dataset;
  model: HookedTransformer;
  modelDir: string;
  featureLayer: number;
  headCfg: HeadConfig;
  readout: Readout;
  /** regression: standardised targets; bin heads: class indices. */
  labels: Float32Array;
  classes: Int32Array;
  features: Tensor | null;
  train: number[];
  val: number[];
  test: number[];
}

function validateOptions(o: TrainOptions): void {
  if (o.solver !== undefined && !SOLVERS.includes(o.solver)) throw new SelfreportError(`--solver must be one of ${SOLVERS.join(", ")}; got "${String(o.solver)}"`);
  if (o.solver === "ridge") {
    const why = ridgeApplies(o);
    if (why !== null) throw new SelfreportError(why);
  }
  if (!FREEZE_MODES.includes(o.freeze)) throw new SelfreportError(`--freeze must be one of ${FREEZE_MODES.join(", ")}; got "${String(o.freeze)}"`);
  if (o.freeze === "partial" && (o.unfreezeLast === null || !Number.isInteger(o.unfreezeLast) || o.unfreezeLast < 1)) {
    throw new SelfreportError(`--freeze partial needs --unfreeze-last K (a positive number of blocks), got ${String(o.unfreezeLast)}`);
  }
  if (o.freeze !== "partial" && o.unfreezeLast !== null) throw new SelfreportError(`--unfreeze-last only applies to --freeze partial (got --freeze ${o.freeze})`);
  const pos: Array<[string, number]> = [["--epochs", o.epochs], ["--batch-size", o.batchSize], ["--checkpoint-every", o.checkpointEvery]];
  for (const [k, v] of pos) if (!Number.isInteger(v) || v < 1) throw new SelfreportError(`${k} must be a positive integer, got ${v}`);
  if (!(o.lr > 0)) throw new SelfreportError(`--lr must be positive, got ${o.lr}`);
  if (!Number.isInteger(o.warmup) || o.warmup < 0) throw new SelfreportError(`--warmup must be a non-negative integer (steps), got ${o.warmup}`);
  if (!Number.isInteger(o.patience) || o.patience < 1) throw new SelfreportError(`--patience must be a positive integer, got ${o.patience}`);
  if (o.resume && o.force) throw new SelfreportError("--resume and --force contradict each other: --resume continues the run in --out, --force starts it over; pass one of them");
  if (o.activation !== null && o.hiddenDim === null) throw new SelfreportError(`--activation ${o.activation} needs --hidden-dim N: the activation is the hidden layer's, and without --hidden-dim the head has none`);
  expectFolderPath(o.out, "--out", "a run directory");
}

function prepare(o: TrainOptions, inputs: TrainInputs = {}): Prepared {
  const ds = inputs.dataset ?? readDataset(o.data);
  const meta = ds.meta;
  const modelDir = o.model ?? meta.model_dir;
  const { model, dir } = inputs.loaded ?? loadModel(modelDir, { weights: meta.weights });
  if (o.model !== undefined && resolve(dir) !== resolve(meta.model_dir)) {
    throw new SelfreportError(`dataset ${o.data} was built from model ${meta.model_dir}, not ${dir}; rebuild the dataset for this model or drop --model`);
  }
  checkDatasetFitsModel(ds, model, o.data);
  const featureLayer = o.featureLayer === -1 ? model.cfg.nLayers - 1 : o.featureLayer;
  model.checkLayer(featureLayer, "--feature-layer");
  if (o.freeze === "partial" && o.unfreezeLast! > featureLayer + 1) {
    throw new SelfreportError(`--unfreeze-last ${o.unfreezeLast} is more than the ${featureLayer + 1} blocks up to the feature layer ${featureLayer}`);
  }
  const headCfg = makeHeadConfig(o.head, {
    inputDim: model.cfg.dModel, dropout: o.dropout, hiddenDim: o.hiddenDim, activation: o.activation, numClasses: o.numClasses ?? undefined,
    ...(o.head === "token" ? { digitTokens: modelDigitTokens(dir, model.cfg) } : {}),
  });
  const train = splitIndices(ds, "train");
  const val = splitIndices(ds, "validation");
  const test = splitIndices(ds, "test");
  if (train.length === 0 || val.length === 0 || test.length === 0) {
    throw new SelfreportError(`dataset ${o.data} has ${train.length}/${val.length}/${test.length} train/validation/test examples; every split needs at least one`);
  }
  const trainTargets = Float64Array.from(train, (i) => ds.targets[i]!);
  const numBins = headCfg.num_classes ?? meta.num_bins;
  const binEdges = numBins === meta.num_bins ? meta.bin_edges : quantileBinEdges(trainTargets, numBins);
  const { mean, std } = meta.stats;
  if (!(std > 0)) throw new SelfreportError(`the target activation is constant (${mean}) on the training split: nothing to predict; choose another neuron`);
  const labels = new Float32Array(meta.n);
  const classes = new Int32Array(meta.n);
  for (let i = 0; i < meta.n; i++) {
    labels[i] = (ds.targets[i]! - mean) / std;
    classes[i] = binOf(ds.targets[i]!, binEdges);
  }
  const features = o.freeze === "frozen" ? (inputs.features ?? cachedFeatures(model, dir, ds, o.data, featureLayer, meta.weights)) : null;
  return { ds, model, modelDir: dir, featureLayer, headCfg, readout: { activationMean: mean, activationStd: std, binEdges }, labels, classes, features, train, val, test };
}

/** The model parameters that train in this mode (the head's are handled separately). */
function trainableModelParams(model: HookedTransformer, freeze: FreezeMode, unfreezeLast: number | null, featureLayer: number, weights: string): Tensor[] {
  if (freeze === "frozen") return [];
  const firstBlock = freeze === "unfrozen" ? 0 : featureLayer - unfreezeLast! + 1;
  const out: Tensor[] = [];
  for (const [name, t] of model.params) {
    // TransformerLens-processed LayerNorms are pure normalisation (no weights), as in TransformerLens.
    if (weights === "tl" && /ln(1|2|_final)\.(w|b)$/.test(name)) continue;
    if (name.startsWith("unembed.")) continue; // never on the predictor's path
    const m = /^blocks\.(\d+)\./.exec(name);
    if (m) {
      const l = Number(m[1]);
      if (l >= firstBlock && l <= featureLayer) out.push(t);
    } else if (name.startsWith("ln_final.")) out.push(t);
    else if (freeze === "unfrozen") out.push(t); // embeddings
  }
  return out;
}

/** Head output for a batch of example indices (cached features when frozen). */
function forwardBatch(p: Prepared, head: HeadParams, idx: readonly number[], training: boolean, rng: Rng): Tensor {
  let feats: Tensor;
  if (p.features !== null) feats = indexSelect(p.features, 0, idx);
  else {
    const b = exampleBatch(p.ds, idx, padIdForVocab(p.model.cfg.dVocab));
    feats = readFeatures(p.model, b, b.positions, p.featureLayer);
  }
  return headForward(p.headCfg, head, feats, p.model, { training, rng });
}

function lossOf(type: HeadType, out: Tensor, p: Prepared, idx: readonly number[]): Tensor {
  if (type === "regression") return mse(out, new Tensor(Float32Array.from(idx, (i) => p.labels[i]!), [idx.length]));
  return crossEntropy(out, Int32Array.from(idx, (i) => p.classes[i]!));
}

/** Loss, predictions (activation units) and bin accuracy over a split, in eval mode. */
function evaluate(type: HeadType, p: Prepared, head: HeadParams, idx: readonly number[], bs = 128): { loss: number; pred: Float32Array; accuracy: number | null } {
  const pred = new Float32Array(idx.length);
  let lossSum = 0;
  let correct = 0;
  noGrad(() => {
    for (let s = 0; s < idx.length; s += bs) {
      const chunk = idx.slice(s, s + bs);
      const out = forwardBatch(p, head, chunk, false, new Rng(0));
      lossSum += lossOf(type, out, p, chunk).item() * chunk.length;
      pred.set(predictionsFromOutput(type, out, p.readout), s);
      if (type !== "regression") {
        const am = argmaxLast(out);
        chunk.forEach((i, k) => void (am[k] === p.classes[i] && correct++));
      }
    }
  });
  return { loss: lossSum / idx.length, pred, accuracy: type === "regression" ? null : correct / idx.length };
}

function testMetrics(type: HeadType, p: Prepared, head: HeadParams, idx: readonly number[]): TestMetrics {
  const ev = evaluate(type, p, head, idx);
  const target = Float64Array.from(idx, (i) => p.ds.targets[i]!);
  const m = regressionMetrics(ev.pred, target);
  const base = regressionMetrics(new Float64Array(idx.length).fill(p.readout.activationMean), target);
  return { ...m, accuracy: ev.accuracy, baseline: { description: "always predict the training mean", mse: base.mse, mae: base.mae, r2: base.r2 } };
}

export async function train(o: TrainOptions, inputs: TrainInputs = {}): Promise<TrainResult> {
  validateOptions(o);
  const solver = o.solver ?? defaultSolver(o);
  if (solver === "ridge" && o.resume) {
    throw new SelfreportError(`--resume continues an AdamW run; the ridge solver (the default for a frozen linear regression head) solves in one step and has no checkpoint. Pass --solver adamw to resume an AdamW run`);
  }
  const out = o.out;
  const ckDir = join(out, "checkpoint");
  const existed = checkOutput(out, { kind: "run", inputs: [inputs.dataset === undefined ? o.data : undefined, o.model], force: o.force, resume: o.resume, resumeHint: true }).exists;
  if (o.resume && !existsSync(join(ckDir, "state.json")) && !existsSync(join(`${ckDir}.old`, "state.json"))) throw new SelfreportError(`--resume: no checkpoint in ${ckDir}`);
  const p = prepare(o, inputs);
  if (o.freeze !== "frozen" && !["vocab.json", "tokenizer.json"].some((f) => existsSync(join(p.modelDir, f)))) {
    throw new SelfreportError(`${p.modelDir}: no tokenizer files (vocab.json + merges.txt or tokenizer.json); --freeze ${o.freeze} saves them beside the fine-tuned model`);
  }
  // the dataset's content, recorded in config.json: analyses refuse a dataset changed since
  const datasetSha256 = inputs.dataset === undefined ? fileSha256(o.data) : null;
  // one writer at a time; a failure removes what this run created, except a checkpoint to --resume from
  return withOutputFolder(out, async (folder) => {
    if (existed && o.force && !o.resume) {
      removeRunFiles(out); // the old run (with its analyses and report) goes as a whole
      folder.markStart();
    }
    const r = solver === "ridge" ? await trainRidge(o, p, inputs, datasetSha256) : await trainAdamw(o, p, inputs, datasetSha256);
    if (inputs.dataset === undefined) registerRunOfDataset(o.data, out);
    return r;
  }, { keepOnFailure: keepCheckpoint });
}

/** The AdamW loop into the locked run folder `o.out` (checkpoints, --resume, early stopping). */
async function trainAdamw(o: TrainOptions, p: Prepared, inputs: TrainInputs, datasetSha256: string | null): Promise<TrainResult> {
  const out = o.out;
  const ckDir = join(out, "checkpoint");
  const meta = p.ds.meta;
  const type = o.head;
  const fingerprint = JSON.stringify({ data: resolve(o.data), n: meta.n, layer: meta.layer, neuron: meta.neuron, model: p.modelDir, head: type, freeze: o.freeze, unfreezeLast: o.unfreezeLast, featureLayer: p.featureLayer });

  const head = initHead(p.headCfg, o.seed, p.model);
  const headTrains = o.freeze !== "unfrozen";
  const modelParams = trainableModelParams(p.model, o.freeze, o.unfreezeLast, p.featureLayer, meta.weights);
  for (const t of modelParams) t.requiresGrad = true;
  const headParams = [...head.values()];
  for (const t of headParams) t.requiresGrad = headTrains;
  const trainable = [...(headTrains ? headParams : []), ...modelParams];
  const named = new Map<string, Tensor>([
    ...[...head].map(([k, t]) => [`head.${k}`, t] as [string, Tensor]),
    ...[...p.model.params].filter(([, t]) => modelParams.includes(t)).map(([k, t]) => [`model.${k}`, t] as [string, Tensor]),
  ]);
  const noDecay = new Set(trainable.filter((t) => t.ndim < 2));
  const opt = adamW(trainable, { weightDecay: o.weightDecay, noDecay });
  const stepsPerEpoch = Math.ceil(p.train.length / o.batchSize);
  const totalSteps = stepsPerEpoch * o.epochs;
  const schedule = warmupCosine({ lr: o.lr, warmupSteps: Math.min(o.warmup, Math.floor(totalSteps / 2)), totalSteps, minRatio: 0.1 });

  let state: TrainState = { version: CHECKPOINT_VERSION, step: 0, epoch: 0, stepInEpoch: 0, bestValLoss: Infinity, bestEpoch: -1, badEpochs: 0, curve: [], seconds: 0, fingerprint, ...(datasetSha256 !== null ? { datasetSha256 } : {}) };
  let best = new Map<string, Float32Array>([...named].map(([k, t]) => [k, t.data.slice()]));
  if (o.resume) {
    const ck = loadCheckpoint<TrainState>(ckDir);
    if (ck === null) throw new SelfreportError(`--resume: no checkpoint in ${ckDir}`);
    if (ck.state.fingerprint !== fingerprint) {
      throw new SelfreportError(`--resume: the checkpoint in ${ckDir} was made with other settings or another dataset (${ck.state.fingerprint}); start a new run or pass the same options`);
    }
    if (ck.state.datasetSha256 !== undefined && datasetSha256 !== null && ck.state.datasetSha256 !== datasetSha256) {
      throw new SelfreportError(`--resume: dataset ${o.data} has changed since the checkpoint in ${ckDir} was written (sha256 ${ck.state.datasetSha256.slice(0, 12)}… then, ${datasetSha256.slice(0, 12)}… now); start a new run`);
    }
    for (const [k, t] of named) {
      const src = ck.params.get(k);
      if (!src || src.data.length !== t.size) throw new SelfreportError(`--resume: checkpoint lacks "${k}" or it has the wrong size`);
      t.data.set(src.data);
      const b = ck.params.get(`best.${k}`);
      if (b) best.get(k)!.set(b.data);
    }
    opt.loadState(ck.optimizer);
    state = ck.state;
    // the steps after the checkpoint ran before the kill and run again: their log lines go
    truncateLogToStep(join(out, "train_log.jsonl"), state.step);
    // JSON has no Infinity: a checkpoint written before the first validation stores bestValLoss as null
    if (typeof state.bestValLoss !== "number") state.bestValLoss = Infinity;
    info(`resuming at epoch ${state.epoch + 1}, step ${state.step} of ${totalSteps}`);
  } else {
    removeTrainLog(out);
    rmSync(ckDir, { recursive: true, force: true });
  }
  const log = (rec: TrainLogRecord): void => appendTrainLog(out, rec);

  const t0 = Date.now();
  const checkpoint = (): void => {
    const params = new Map<string, { shape: readonly number[]; data: Float32Array }>();
    for (const [k, t] of named) {
      params.set(k, { shape: t.shape, data: t.data });
      params.set(`best.${k}`, { shape: t.shape, data: best.get(k)! });
    }
    saveCheckpoint<TrainState>(ckDir, { params, optimizer: opt.state(), state: { ...state, seconds: state.seconds + (Date.now() - t0) / 1000 } });
  };

  info(`training ${type} head, ${o.freeze}${o.freeze === "partial" ? ` (last ${o.unfreezeLast} blocks)` : ""}: ${p.train.length}/${p.val.length}/${p.test.length} train/val/test examples, ${trainable.reduce((s, t) => s + t.size, 0).toLocaleString("en-US")} trainable parameters`);
  const bar = progress("train", totalSteps, ["epoch", "loss", "val"], { start: state.step });
  const section = interruptibleSection();
  let stoppedEarly = false;
  // A checkpoint is written only for weights known to give a finite loss: the one due after step s
  // is written at the start of step s + 1, once that step's loss is checked, so the checkpoint left
  // behind by a diverging run never holds the weights that diverged (resuming them would fail again).
  let lastGoodStep: number | null = o.resume ? state.step : null;
  let due = false;
  let ema = NaN;
  try {
    while (state.epoch < o.epochs) {
      const order = new Rng(o.seed * 7919 + state.epoch).shuffle([...p.train]);
      while (state.stepInEpoch < stepsPerEpoch) {
        const idx = order.slice(state.stepInEpoch * o.batchSize, (state.stepInEpoch + 1) * o.batchSize);
        const lr = schedule(state.step);
        const outT = forwardBatch(p, head, idx, true, new Rng(o.seed * 104729 + state.step));
        const loss = lossOf(type, outT, p, idx);
        const lv = loss.item();
        if (!Number.isFinite(lv)) {
          const kept = lastGoodStep === null ? "no checkpoint was written before it; lower --lr and start again" : `the last good checkpoint (step ${lastGoodStep}) is in ${ckDir}; lower --lr and --resume`;
          throw new SelfreportError(`loss became ${lv} at step ${state.step + 1} (epoch ${state.epoch + 1}); ${kept}`);
        }
        if (due) {
          checkpoint();
          lastGoodStep = state.step;
          due = false;
        }
        opt.zeroGrad();
        backward(loss);
        if (o.gradClip > 0) clipGradNorm(trainable, o.gradClip);
        opt.step(lr);
        state.step++;
        state.stepInEpoch++;
        ema = Number.isNaN(ema) ? lv : 0.9 * ema + 0.1 * lv;
        log({ step: state.step, epoch: state.epoch + 1, loss: lv, lr });
        state.curve.push({ step: state.step, epoch: state.epoch + 1, train: lv });
        bar.update(state.step, { epoch: `${state.epoch + 1}/${o.epochs}`, loss: ema.toFixed(4), val: Number.isFinite(state.bestValLoss) ? state.bestValLoss.toFixed(4) : "-" });
        if (state.step % o.checkpointEvery === 0) due = true;
        // a turn of the event loop so that a SIGINT/SIGTERM handler can run at all (the loop is synchronous)
        await yieldToEventLoop();
        const signal = interruptSignal();
        if (signal !== null) {
          checkpoint();
          throw new Interrupted(signal, `training stopped at step ${state.step} of ${totalSteps}; checkpoint saved in ${ckDir}`, { resume: "--resume" });
        }
      }
      // end of epoch: validate, early-stop bookkeeping
      const ev = evaluate(type, p, head, p.val);
      const valR = regressionMetrics(ev.pred, Float64Array.from(p.val, (i) => p.ds.targets[i]!)).pearson_r;
      state.curve.push({ step: state.step, epoch: state.epoch + 1, val: ev.loss, val_r: valR });
      log({ step: state.step, epoch: state.epoch + 1, val_loss: ev.loss, val_r: valR });
      if (ev.loss < state.bestValLoss - 1e-6) {
        state.bestValLoss = ev.loss;
        state.bestEpoch = state.epoch + 1;
        state.badEpochs = 0;
        best = new Map([...named].map(([k, t]) => [k, t.data.slice()]));
      } else state.badEpochs++;
      state.epoch++;
      state.stepInEpoch = 0;
      due = true;
      if (Number.isFinite(ev.loss)) {
        checkpoint();
        lastGoodStep = state.step;
        due = false;
      }
      if (state.badEpochs >= o.patience) {
        stoppedEarly = state.epoch < o.epochs;
        break;
      }
    }
  } finally {
    bar.stop();
    section.end();
  }
  // restore the best weights (by validation loss)
  for (const [k, t] of named) t.data.set(best.get(k)!);
  const test = testMetrics(type, p, head, p.test);
  const validation = testMetrics(type, p, head, p.val);
  const seconds = state.seconds + (Date.now() - t0) / 1000;

  // ---- write the run directory (each file atomically, config.json last)
  for (const t of [...headParams, ...modelParams]) t.requiresGrad = false;
  if (o.freeze !== "frozen") {
    // saved as trained (already processed): loading gives back exactly this model
    saveModel(p.model, finetunedDir(out), { dtype: "F32", processed: meta.weights, tokenizerFrom: p.modelDir, extraConfig: { selfreport: { finetuned_from: p.modelDir, weights: meta.weights, freeze_mode: o.freeze } } });
  }
  const config = runConfig(o, p, inputs, datasetSha256, {
    solver: "adamw", ...trainingRecordOf(trainingSettingsOf(o)), epochs_run: state.epoch, best_epoch: state.bestEpoch, steps: state.step, seconds: Math.round(seconds * 10) / 10,
  });
  const points = state.curve.flatMap((c) => [
    ...(c.train !== undefined ? [{ x: c.step, y: c.train, series: "train (per step)" }] : []),
    ...(c.val !== undefined ? [{ x: c.step, y: c.val, series: "validation (per epoch)" }] : []),
  ]);
  const curveSvg = await renderSvg(lineChart({ title: `Training loss (${type} head, ${o.freeze})`, x: "step", y: type === "regression" ? "MSE (standardised)" : "cross-entropy", series: "series", data: points }));
  writeRun(out, {
    config, head, metrics: { test, validation, solver: "adamw", epochs_run: state.epoch, best_epoch: state.bestEpoch, stopped_early: stoppedEarly, seconds }, trainingCurveSvg: curveSvg,
  });
  rmSync(ckDir, { recursive: true, force: true });
  return { runDir: out, test, validation, epochsRun: state.epoch, bestEpoch: state.bestEpoch, stoppedEarly, seconds };
}

/** config.json of a finished run; `training` records how the head was fitted. */
function runConfig(o: TrainOptions, p: Prepared, inputs: TrainInputs, datasetSha256: string | null, training: RunConfig["training"]): RunConfig {
  const meta = p.ds.meta;
  return {
    format_version: RUN_FORMAT_VERSION,
    head_type: o.head,
    target_layer: meta.layer,
    target_neuron: meta.neuron,
    layer_type: meta.layer_type,
    token_pos: meta.token_pos,
    feature_layer: p.featureLayer,
    head_config: p.headCfg,
    base_model_name: meta.model_name,
    base_model_dir: resolve(p.modelDir),
    weights: meta.weights,
    d_model: p.model.cfg.dModel,
    bin_edges: [...p.readout.binEdges],
    activation_mean: p.readout.activationMean,
    activation_std: p.readout.activationStd,
    freeze_mode: o.freeze,
    unfreeze_last: o.unfreezeLast,
    dataset: {
      ...(inputs.datasetRef ?? { path: resolve(o.data), n: meta.n, layer: meta.layer, neuron: meta.neuron, model_dir: meta.model_dir }),
      ...(datasetSha256 !== null ? { sha256: datasetSha256 } : {}),
    },
    training,
  };
}

/**
 * The ridge solver (frozen linear regression): one closed-form solve on the cached features, λ from
 * the grid by validation MSE. Writes the run directory as the AdamW path does: head.safetensors
 * (output.weight [1, C], output.bias [1] in standardised target units), metrics.json, one
 * train_log.jsonl record for the solve, a validation-loss-against-λ chart, config.json last.
 */
async function trainRidge(o: TrainOptions, p: Prepared, inputs: TrainInputs, datasetSha256: string | null): Promise<TrainResult> {
  const out = o.out;
  removeTrainLog(out);
  rmSync(join(out, "checkpoint"), { recursive: true, force: true });
  const t0 = Date.now();
  const C = p.model.cfg.dModel;
  info(`solving a ridge regression head, frozen: ${p.train.length}/${p.val.length}/${p.test.length} train/val/test examples, ${RIDGE_GRID_TEXT}`);
  const basis = ridgeBasis(p.features!.data, C, p.train, p.val);
  const fit = ridgeFit(basis, p.labels, 1);
  const head: HeadParams = new Map([
    ["output.weight", new Tensor(Float32Array.from(fit.W), [1, C])],
    ["output.bias", new Tensor(Float32Array.from(fit.b), [1])],
  ]);
  const test = testMetrics("regression", p, head, p.test);
  const validation = testMetrics("regression", p, head, p.val);
  const seconds = (Date.now() - t0) / 1000;
  const lambda = fit.lambda[0]!;
  const alpha = fit.alpha[0]!;
  const grid = Array.from(basis.lambdas, (l, g) => ({ alpha: basis.alphas[g]!, lambda: l, val_loss: fit.gridValLoss[g]! }));
  const curveSvg = await renderSvg(lineChart({
    title: `Ridge: validation loss against the penalty (chosen λ = ${lambda.toExponential(3)}, α = ${alpha.toExponential(1)})`,
    x: "log10 α (λ = α · mean eigenvalue of the feature covariance)", y: "MSE (standardised)", series: "series",
    data: grid.map((g) => ({ x: Math.log10(g.alpha), y: g.val_loss, series: "validation" })),
  }));
  writeRun(out, {
    config: runConfig(o, p, inputs, datasetSha256, {
      solver: "ridge", lambda, alpha, val_loss: fit.valLoss[0]!, grid: RIDGE_GRID_TEXT, steps: 0, epochs_run: 0, best_epoch: 0, seconds: Math.round(seconds * 1000) / 1000,
    }),
    head,
    metrics: { test, validation, solver: "ridge", ridge: { lambda, alpha, val_loss: fit.valLoss[0]!, grid }, epochs_run: 0, best_epoch: 0, stopped_early: false, seconds },
    trainLog: [{ step: 1, epoch: 1, solver: "ridge", lambda, alpha, val_loss: fit.valLoss[0]!, val_r: validation.pearson_r, grid }],
    trainingCurveSvg: curveSvg,
  });
  return { runDir: out, test, validation, epochsRun: 0, bestEpoch: 0, stoppedEarly: false, seconds, ridge: { lambda, alpha, valLoss: fit.valLoss[0]! } };
}
