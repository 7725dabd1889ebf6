/**
 * What every analysis starts from: a run directory and its dataset, read from files only
 * (analyses never import the trainer). Checks that the dataset belongs to the run.
 */
import { existsSync, renameSync, rmSync } from "node:fs";
import { randomBytes } from "node:crypto";
import { dirname, join, resolve } from "node:path";
import type { HookedTransformer } from "../model/transformer.ts";
import { SelfreportError } from "../errors.ts";
import { ensureDir, writeJsonAtomic, writeFileAtomic } from "../io/atomic.ts";
import { readDataset, splitIndices, padIdForVocab, type Dataset, type SplitName } from "../selfreport/dataset.ts";
import { loadRun, loadRunModel, loadBaseModel, type Run } from "../selfreport/run.ts";

export interface AnalysisContext {
  run: Run;
  /** The model the predictor runs on (fine-tuned for unfrozen/partial runs). */
  model: HookedTransformer;
  /** The base model the run started from (the same object as `model` for frozen runs). */
  baseModel: HookedTransformer;
  ds: Dataset;
  datasetPath: string;
}

/** Throws unless the dataset was built for the run's model, layer, neuron and hook. */
export function checkDatasetMatchesRun(run: Run, ds: Dataset, datasetPath: string): void {
  const c = run.config;
  const m = ds.meta;
  const problems: string[] = [];
  if (m.layer !== c.target_layer) problems.push(`layer ${m.layer} ≠ run's ${c.target_layer}`);
  if (m.neuron !== c.target_neuron) problems.push(`neuron ${m.neuron} ≠ run's ${c.target_neuron}`);
  if (m.layer_type !== c.layer_type) problems.push(`layer_type ${m.layer_type} ≠ run's ${c.layer_type}`);
  if (resolve(m.model_dir) !== resolve(c.dataset.model_dir)) problems.push(`model ${m.model_dir} ≠ run's ${c.dataset.model_dir}`);
  if (problems.length > 0) throw new SelfreportError(`dataset ${datasetPath} does not belong to run ${run.dir}: ${problems.join("; ")}`);
}

/** The `selfreport dataset` command that builds a dataset for the run's model, target and read position, written to `out`. */
export function datasetCommandFor(run: Run, out = "FILE"): string {
  const c = run.config;
  return `selfreport dataset --model ${c.base_model_dir} --layer ${c.target_layer} --neuron ${c.target_neuron}` +
    `${c.layer_type === "mlp_out" ? " --layer-type mlp_out" : ""}${c.token_pos === "last" ? "" : ` --token-pos ${c.token_pos}`} --weights ${c.weights} --out ${out}`;
}

/** True when the run records no dataset (imported runs) and none was given. */
export function hasNoDataset(run: Run, dataPath?: string): boolean {
  return dataPath === undefined && run.config.dataset.path === "";
}

export function loadAnalysisContext(runDir: string, dataPath?: string): AnalysisContext {
  const run = loadRun(runDir);
  if (hasNoDataset(run, dataPath)) {
    throw new SelfreportError(`run ${run.dir} has no dataset (it was imported); build one with \`${datasetCommandFor(run)}\` and pass --data FILE`);
  }
  const datasetPath = dataPath ?? run.config.dataset.path;
  if (!existsSync(datasetPath)) {
    throw new SelfreportError(`dataset ${datasetPath} not found${dataPath === undefined ? " (the path recorded in the run's config.json); pass --data FILE" : ""}`);
  }
  const ds = readDataset(datasetPath);
  checkDatasetMatchesRun(run, ds, datasetPath);
  const baseModel = loadBaseModel(run);
  const model = run.config.freeze_mode === "frozen" ? baseModel : loadRunModel(run);
  return { run, model, baseModel, ds, datasetPath };
}

/**
 * Writes summary.json (with the run's config embedded) and the SVG plots into outDir, each file
 * atomically. A new outDir appears whole: the files are written into a temporary folder beside it,
 * which is then renamed to outDir; nobody sees a half-filled analysis folder (an existing outDir
 * gets its files replaced one by one, summary.json last).
 */
export function writeAnalysisOutput(outDir: string, analysis: string, run: Run, summary: object, plots: Record<string, string>): string[] {
  const fresh = !existsSync(outDir);
  const dir = fresh ? `${outDir.replace(/\/+$/, "")}.tmp-${process.pid}-${randomBytes(4).toString("hex")}` : outDir;
  ensureDir(dirname(resolve(dir)));
  try {
    ensureDir(dir);
    for (const [name, svg] of Object.entries(plots)) writeFileAtomic(join(dir, `${name}.svg`), svg);
    writeJsonAtomic(join(dir, "summary.json"), { analysis, run_dir: resolve(run.dir), run_config: run.config, ...summary, plots: Object.keys(plots).map((p) => `${p}.svg`) });
    if (fresh) {
      try {
        renameSync(dir, outDir);
      } catch (e) {
        throw new SelfreportError(`cannot create ${outDir}: ${(e as Error).message}`, { cause: e });
      }
    }
  } catch (e) {
    if (fresh) rmSync(dir, { recursive: true, force: true });
    throw e;
  }
  return [...Object.keys(plots).map((name) => join(outDir, `${name}.svg`)), join(outDir, "summary.json")];
}

/** `m` of `list`, evenly spaced (all of it when m ≥ its length). */
function evenly<T>(list: readonly T[], m: number): T[] {
  if (m >= list.length) return [...list];
  return Array.from({ length: m }, (_, i) => list[Math.floor((i * list.length) / m)]!);
}

/** Up to n example indices: the test split first (held out from training), then validation, then train; evenly spaced within a split. */
export function selectInputs(ds: Dataset, n: number): { indices: number[]; counts: Record<SplitName, number> } {
  const indices: number[] = [];
  const counts: Record<SplitName, number> = { test: 0, validation: 0, train: 0 };
  for (const split of ["test", "validation", "train"] as const) {
    const take = evenly(splitIndices(ds, split), n - indices.length);
    counts[split] = take.length;
    indices.push(...take);
  }
  return { indices, counts };
}

/** A pad id valid for the model (see padIdForVocab). */
export function padIdFor(model: HookedTransformer): number {
  return padIdForVocab(model.cfg.dVocab);
}
