/**
 * What every analysis starts from: a run directory and its dataset, read from files only
 * (analyses never import the trainer). Checks that the dataset belongs to the run.
 */
import { existsSync, renameSync, rmSync } from "node:fs";
import { randomBytes } from "node:crypto";
import { dirname, join, resolve } from "node:path";
import type { HookedTransformer } from "../model/transformer.ts";
import { SelfreportError } from "../errors.ts";
import { makeFolders } from "../io/paths.ts";
import { writeJsonAtomic, writeFileAtomic } from "../io/atomic.ts";
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

export { datasetCommandFor };

/** True when the run records no dataset (imported runs) and none was given. */
export function hasNoDataset(run: Run, dataPath?: string): boolean {
  return dataPath === undefined && run.config.dataset.path === "";
}

/** The run, its models, and its dataset (`dataPath`, or the one its config.json records; see readRunDataset). */
export function loadAnalysisContext(runDir: string, dataPath?: string): AnalysisContext {
  const run = readRun(runDir);
  const { ds, datasetPath } = readRunDataset(run, dataPath);
  const baseModel = loadBaseModel(run);
  const model = run.config.freeze_mode === "frozen" ? baseModel : loadRunModel(run);
  checkDatasetFitsModel(ds, model, datasetPath);
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
  makeFolders(dirname(resolve(dir)));
  try {
    makeFolders(dir);
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
