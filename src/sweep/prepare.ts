/**
 * Opening a sweep folder: checks the request against the model (before any computation), refuses a
 * folder made with other settings (unless --force, which clears the sweep's files and starts over),
 * writes sweep.json, prepares the shared data (data.ts) and lists the jobs still to run.
 */
import { existsSync, readdirSync, rmSync } from "node:fs";
import { join, resolve } from "node:path";
import { SelfreportError } from "../errors.ts";
import { checkOutput, isScratchEntry } from "../io/outputs.ts";
import { resolveModelDir } from "../model/resolve.ts";
import { loadModel, readModelConfig } from "../model/load.ts";
import { loadTokenizer } from "../model/tokenizer.ts";
import { loadCorpus } from "../data/corpus.ts";
import { modelFingerprint, featureCachePath } from "../selfreport/features.ts";
import { info } from "../util/progress.ts";
import { prepareSweepData, examplesPath, layerTargetsPath } from "./data.ts";
import { jobsDir, readJobResult, removeStaleStages, removeDeadStages, isJobFinished } from "./jobs.ts";
import { ensureDir } from "../io/atomic.ts";
import { lockFolder, type FolderLock } from "../io/lock.ts";
import {
  SWEEP_FORMAT, SWEEP_VERSION, allJobs, checkLayers, manifestPath, neuronSpecText, neuronsOfRanges, readManifest, settingsDifferences, writeManifest,
  type AnalysisName, type JobSpec, type NeuronSpec, type SweepManifest, type SweepSettings,
} from "./spec.ts";
import type { HeadType } from "../selfreport/predictor.ts";
import type { FreezeMode } from "../selfreport/run.ts";

export interface SweepRequest {
  model: string;
  weights: "raw" | "tl";
  layers: number[];
  neurons: NeuronSpec;
  heads: HeadType[];
  freeze: FreezeMode[];
  unfreezeLast: number | null;
  analyses: AnalysisName[];
  corpus: string;
  n: number;
  maxLen: number;
  dataSeed: number;
  training: SweepSettings["training"];
  analysisOptions: SweepSettings["analysis_options"];
  groupSize: number;
  out: string;
  force: boolean;
}

/** Files and folders of a sweep (what --force removes; nothing else in the folder is touched). */
const SWEEP_ENTRIES = ["sweep.json", "data", "jobs", "results.json", "results.csv", "plots"];

/** The settings record of a request, checked against the model's sizes. */
export function settingsFor(req: SweepRequest): SweepSettings {
  const modelDir = resolve(resolveModelDir(req.model));
  const cfg = readModelConfig(modelDir);
  checkLayers(req.layers, cfg.nLayers);
  if (req.neurons.kind === "ranges") neuronsOfRanges(req.neurons, cfg.dMlp);
  else if (req.neurons.k > cfg.dMlp) throw new SelfreportError(`--neurons top-variance:${req.neurons.k} asks for more neurons than a layer has (${cfg.dMlp})`);
  const F = req.training.feature_layer === -1 ? cfg.nLayers - 1 : req.training.feature_layer;
  if (F < 0 || F >= cfg.nLayers) throw new SelfreportError(`--feature-layer ${req.training.feature_layer} is out of range: the model has ${cfg.nLayers} layers (0..${cfg.nLayers - 1}, or -1 for the last)`);
  const partial = req.freeze.includes("partial");
  if (partial && (req.unfreezeLast === null || req.unfreezeLast < 1 || req.unfreezeLast > F + 1)) {
    throw new SelfreportError(`--freeze partial needs --unfreeze-last K with 1 ≤ K ≤ ${F + 1} (the blocks up to the feature layer ${F}), got ${String(req.unfreezeLast)}`);
  }
  if (!Number.isInteger(req.groupSize) || req.groupSize < 1) throw new SelfreportError(`--group-size must be a positive integer, got ${req.groupSize}`);
  return {
    format: SWEEP_FORMAT, version: SWEEP_VERSION, model_dir: modelDir, model_fingerprint: modelFingerprint(modelDir), weights: req.weights,
    layers: [...req.layers].sort((a, b) => a - b), neurons: neuronSpecText(req.neurons), heads: [...req.heads], freeze: [...req.freeze],
    unfreeze_last: partial ? req.unfreezeLast : null, analyses: [...req.analyses],
    data: { corpus: req.corpus === "brown" ? "brown" : resolve(req.corpus), n: req.n, max_len: req.maxLen, seed: req.dataSeed },
    training: { ...req.training }, analysis_options: { ...req.analysisOptions }, group_size: req.groupSize,
  };
}

/**
 * Makes `out` the sweep folder of `settings`: new, or the same settings (resume). Refuses a folder
 * of other settings, or a non-empty folder that is not a sweep, unless `force`.
 */
export function openSweepFolder(out: string, settings: SweepSettings, force: boolean): SweepManifest {
  // the same settings resume; other settings are refused below unless --force; never another kind of folder
  checkOutput(out, { kind: "sweep", inputs: [settings.model_dir, settings.data.corpus === "brown" ? undefined : settings.data.corpus], force, resume: true });
  const existing = existsSync(manifestPath(out)) ? (() => {
    try {
      return readManifest(out);
    } catch (e) {
      if (force) return null;
      throw e;
    }
  })() : null;
  if (existing !== null) {
    const diffs = settingsDifferences(existing.settings, settings);
    if (diffs.length === 0) return existing;
    if (!force) {
      const shown = diffs.slice(0, 4).join("; ") + (diffs.length > 4 ? `; and ${diffs.length - 4} more` : "");
      throw new SelfreportError(`${out} holds a sweep made with other settings (${shown}); re-run with the same options to resume it, choose another --out, or pass --force to delete its results and start over`);
    }
  } else if (existsSync(out) && readdirSync(out).some((f) => !isScratchEntry(f)) && !force) {
    const ours = readdirSync(out).every((f) => SWEEP_ENTRIES.includes(f) || isScratchEntry(f));
    if (!ours) throw new SelfreportError(`--out ${out} exists and is not a sweep folder (no sweep.json); choose an empty or new folder, or pass --force`);
  }
  if (force) for (const e of SWEEP_ENTRIES) rmSync(join(out, e), { recursive: true, force: true });
  const manifest: SweepManifest = { settings, neurons_by_layer: null, created: new Date().toISOString() };
  writeManifest(out, manifest);
  return manifest;
}

export interface OpenedSweep {
  manifest: SweepManifest & { neurons_by_layer: Record<string, number[]> };
  jobs: JobSpec[];
  pending: JobSpec[];
  /** Releases the sweep folder's lock (taken by openSweep; also released on process exit). */
  release: () => void;
}

/**
 * Everything before the jobs run: settings, folder, shared data, job list. `retryFailed` deletes
 * failed jobs' folders so they run again; `cleanStages` removes folders of jobs a killed worker
 * left half-done (only safe when no worker is running on the folder).
 */
export function openSweep(req: SweepRequest, o: { retryFailed: boolean; cleanStages: boolean }): OpenedSweep {
  const settings = settingsFor(req);
  checkOutput(req.out, { kind: "sweep", inputs: [settings.model_dir, settings.data.corpus === "brown" ? undefined : settings.data.corpus], force: req.force, resume: true });
  // one sweep command per folder (queue workers write only their own stage folders and rename them)
  const created = !existsSync(req.out);
  ensureDir(req.out);
  let lock: FolderLock;
  try {
    lock = lockFolder(req.out);
  } catch (e) {
    if (created) rmSync(req.out, { recursive: true, force: true });
    throw e;
  }
  try {
    return { ...openLockedSweep(req, settings, o), release: lock.release };
  } catch (e) {
    lock.release();
    if (created && readdirSync(req.out).length === 0) rmSync(req.out, { recursive: true, force: true });
    throw e;
  }
}

function openLockedSweep(req: SweepRequest, settings: SweepSettings, o: { retryFailed: boolean; cleanStages: boolean }): Omit<OpenedSweep, "release"> {
  const manifest = openSweepFolder(req.out, settings, req.force);
  const F = settings.training.feature_layer === -1 ? readModelConfig(settings.model_dir).nLayers - 1 : settings.training.feature_layer;
  const dataMissing = !existsSync(examplesPath(req.out)) || !existsSync(featureCachePath(examplesPath(req.out), F, settings.weights)) ||
    settings.layers.some((l) => !existsSync(layerTargetsPath(req.out, l)));
  if (dataMissing || manifest.neurons_by_layer === null || settings.layers.some((l) => manifest.neurons_by_layer![String(l)] === undefined)) {
    const { model } = loadModel(settings.model_dir, { weights: settings.weights });
    const prepared = prepareSweepData(settings, req.out, model, () => ({ tok: loadTokenizer(settings.model_dir), docs: loadCorpus(settings.data.corpus).documents }), req.neurons);
    manifest.neurons_by_layer = prepared.neuronsByLayer;
    writeManifest(req.out, manifest);
  }
  const m = manifest as OpenedSweep["manifest"];
  const jobs = allJobs(settings, m.neurons_by_layer);
  // stage folders of stopped workers: all of them when no queue worker can be running, else those of dead processes on this host
  const n = o.cleanStages ? removeStaleStages(req.out) : removeDeadStages(req.out);
  if (n > 0) info(`removed ${n} half-done job folder(s) left by a stopped worker`);
  if (o.retryFailed) {
    for (const j of jobs) if (readJobResult(req.out, j.id)?.status === "failed") rmSync(join(jobsDir(req.out), j.id), { recursive: true, force: true });
  }
  const pending = jobs.filter((j) => !isJobFinished(req.out, j.id));
  return { manifest: m, jobs, pending };
}
