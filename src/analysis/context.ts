/**
 * What every analysis starts from: a run directory and its dataset, read from files only
 * (analyses never import the trainer). Checks that the dataset belongs to the run.
 */
import { existsSync, mkdirSync, renameSync, rmSync, statSync } from "node:fs";
import { basename, dirname, join, resolve } from "node:path";
import { randomBytes } from "node:crypto";
import type { HookedTransformer } from "../model/transformer.ts";
import { SelfreportError } from "../errors.ts";
import { makeFolders } from "../io/paths.ts";
import { writeJsonAtomic, writeFileAtomic } from "../io/atomic.ts";
import { checkOutput, fileSha256, realPath } from "../io/outputs.ts";
import { splitIndices, padIdForVocab, checkDatasetFitsModel, type Dataset, type SplitName } from "../selfreport/dataset.ts";
import { readRun, readRunDataset, checkDatasetMatchesRun, datasetCommandFor, loadRunModel, loadBaseModel, type Run } from "../selfreport/run.ts";

export interface AnalysisContext {
  run: Run;
  /** The model the predictor runs on (fine-tuned for unfrozen/partial runs). */
  model: HookedTransformer;
  /** The base model the run started from (the same object as `model` for frozen runs). */
  baseModel: HookedTransformer;
  ds: Dataset;
  datasetPath: string;
}

export { checkDatasetMatchesRun };

/**
 * Throws when `datasetPath` is the run's own dataset (the path in its config.json, relative to the run
 * folder or absolute) and its content is no longer what the run was trained on (sha256 recorded at
 * training). Runs without a hash pass.
 */
export function checkDatasetUnchanged(run: Run, datasetPath: string): void {
  const recorded = run.config.dataset.sha256;
  if (typeof recorded !== "string" || run.config.dataset.path === "") return;
  if (!existsSync(datasetPath) || statSync(datasetPath).isDirectory()) return;
  if (realPath(datasetPath) !== realPath(resolve(run.dir, run.config.dataset.path))) return;
  const now = fileSha256(datasetPath);
  if (now !== recorded) {
    throw new SelfreportError(
      `dataset ${datasetPath} has changed since run ${run.dir} was trained on it (sha256 ${recorded.slice(0, 12)}… in its config.json, ${now.slice(0, 12)}… now); ` +
        `rebuild the run, or pass --data with the dataset it was trained on`,
    );
  }
  // a sweep job's targets are a column of the layer's targets file: that file must be unchanged too
  const column = run.config.dataset.target_column;
  if (column == null || typeof column.sha256 !== "string") return;
  const targetsPath = resolve(run.dir, column.path);
  if (!existsSync(targetsPath)) return; // reading the dataset says so, with the path
  const nowTargets = fileSha256(targetsPath);
  if (nowTargets !== column.sha256) {
    throw new SelfreportError(
      `targets file ${targetsPath} has changed since run ${run.dir} was trained on column ${column.column} of it (sha256 ${column.sha256.slice(0, 12)}… in its config.json, ${nowTargets.slice(0, 12)}… now); ` +
        `rerun the sweep job, or pass --data with a dataset of this neuron`,
    );
  }
}

export { datasetCommandFor };

/** True when the run records no dataset (imported runs) and none was given. */
export function hasNoDataset(run: Run, dataPath?: string): boolean {
  return dataPath === undefined && run.config.dataset.path === "";
}

/** The run, its models, and its dataset (`dataPath`, or the one its config.json records; see readRunDataset). */
export function loadAnalysisContext(runDir: string, dataPath?: string): AnalysisContext {
  const run = readRun(runDir);
  checkDatasetUnchanged(run, dataPath ?? resolve(run.dir, run.config.dataset.path));
  const { ds, datasetPath } = readRunDataset(run, dataPath);
  const baseModel = loadBaseModel(run);
  const model = run.config.freeze_mode === "frozen" ? baseModel : loadRunModel(run);
  checkDatasetFitsModel(ds, model, datasetPath);
  return { run, model, baseModel, ds, datasetPath };
}

/** The output rule (src/io/outputs.ts) for an analysis folder: not the run, not its dataset; an existing analysis only with --force. */
export function checkAnalysisOutput(outDir: string, runDir: string, dataPath: string | undefined, force: boolean): void {
  checkOutput(outDir, { kind: "analysis", inputs: [runDir, dataPath], force });
}

/**
 * Writes summary.json (with the run's config embedded) and the SVG plots into outDir. The folder
 * appears whole: it is built in a stage folder beside outDir and renamed into place (an existing
 * analysis, replaced with --force, is swapped out only then); a failure or a stop before the rename
 * leaves no (empty or partial) folder and the old analysis as it was.
 */
export function writeAnalysisOutput(outDir: string, analysis: string, run: Run, summary: object, plots: Record<string, string>): string[] {
  const parent = dirname(resolve(outDir));
  makeFolders(parent);
  const stage = join(parent, `.${basename(resolve(outDir))}.tmp-${process.pid}-${randomBytes(4).toString("hex")}`);
  const old = `${stage}.old`;
  try {
    mkdirSync(stage);
    for (const [name, svg] of Object.entries(plots)) writeFileAtomic(join(stage, `${name}.svg`), svg);
    writeJsonAtomic(join(stage, "summary.json"), { analysis, run_dir: resolve(run.dir), run_config: run.config, ...summary, plots: Object.keys(plots).map((p) => `${p}.svg`) });
    try {
      if (existsSync(outDir)) renameSync(outDir, old);
      renameSync(stage, outDir);
    } catch (e) {
      throw new SelfreportError(`cannot create ${outDir}: ${(e as Error).message}`, { cause: e });
    }
    rmSync(old, { recursive: true, force: true });
  } catch (e) {
    rmSync(stage, { recursive: true, force: true });
    if (existsSync(old) && !existsSync(outDir)) renameSync(old, outDir);
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
