/**
 * What a sweep is: the parsed command-line lists (layers, neurons, heads, freezing modes,
 * analyses), the settings record that identifies a sweep folder, and the job list.
 *
 * A sweep folder holds one settings record (sweep.json). Re-running the same command on the
 * folder resumes it; running another command on it is refused (unless --force, which starts the
 * folder over), so results made with different settings never mix.
 *
 *   one job  = (layer, neuron, head, freezing)        → jobs/<job id>/ (a run directory + result.json)
 *   one task = what a worker runs at once: one job, or up to `group_size` frozen jobs of one layer
 *              and one head trained together as one multi-output head (src/sweep/multihead.ts)
 */
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { createHash } from "node:crypto";
import { SelfreportError } from "../errors.ts";
import { writeJsonAtomic } from "../io/atomic.ts";
import { HEAD_TYPES, type HeadType } from "../selfreport/predictor.ts";
import { FREEZE_MODES, type FreezeMode, type TrainingSettings } from "../selfreport/run.ts";
import type { Solver } from "../selfreport/ridge.ts";

export const SWEEP_FORMAT = "selfreport-sweep";
export const SWEEP_VERSION = 1;
export const ANALYSES = ["weights", "patching"] as const;
export type AnalysisName = (typeof ANALYSES)[number];

// ---------------------------------------------------------------------------------------------
// Parsing the lists

/** An inclusive neuron range, as written ("5" is 5-5). */
export interface NeuronRange {
  lo: number;
  hi: number;
  text: string;
}

/** `0-63,100,200-210` (explicit ranges) or `top-variance:K` (the K neurons of highest training-split variance, per layer). */
export type NeuronSpec = { kind: "ranges"; ranges: NeuronRange[] } | { kind: "top-variance"; k: number };

function nonNegativeInt(text: string, what: string, whole: string): number {
  if (!/^\d+$/.test(text)) throw new SelfreportError(`${what}: "${text}" is not a non-negative integer (in "${whole}")`);
  return Number(text);
}

/** Parses --neurons; overlapping ranges are an error (each neuron would be swept twice). */
export function parseNeuronSpec(value: string): NeuronSpec {
  const v = value.trim();
  const tv = /^top-variance:(.*)$/.exec(v);
  if (tv) {
    const k = nonNegativeInt(tv[1]!.trim(), "--neurons top-variance:K", value);
    if (k < 1) throw new SelfreportError(`--neurons top-variance:K needs K ≥ 1, got "${value}"`);
    return { kind: "top-variance", k };
  }
  const parts = v.split(",").map((s) => s.trim());
  if (v === "" || parts.some((p) => p === "")) throw new SelfreportError(`--neurons must be ranges like 0-63,100 or top-variance:K, got "${value}"`);
  const ranges = parts.map((p): NeuronRange => {
    const m = /^(\S+?)-(\S+)$/.exec(p);
    const lo = nonNegativeInt(m ? m[1]! : p, "--neurons", value);
    const hi = m ? nonNegativeInt(m[2]!, "--neurons", value) : lo;
    if (hi < lo) throw new SelfreportError(`--neurons: range "${p}" ends before it starts (in "${value}")`);
    return { lo, hi, text: p };
  });
  const sorted = [...ranges].sort((a, b) => a.lo - b.lo);
  for (let i = 1; i < sorted.length; i++) {
    if (sorted[i]!.lo <= sorted[i - 1]!.hi) {
      throw new SelfreportError(`--neurons: ranges "${sorted[i - 1]!.text}" and "${sorted[i]!.text}" overlap (in "${value}"); list each neuron once`);
    }
  }
  return { kind: "ranges", ranges };
}

export function neuronSpecText(s: NeuronSpec): string {
  return s.kind === "top-variance" ? `top-variance:${s.k}` : s.ranges.map((r) => r.text).join(",");
}

/** The explicit neurons of a ranges spec, ascending, checked against the layer width dMlp. */
export function neuronsOfRanges(s: NeuronSpec & { kind: "ranges" }, dMlp: number): number[] {
  const out: number[] = [];
  for (const r of [...s.ranges].sort((a, b) => a.lo - b.lo)) {
    if (r.hi >= dMlp) throw new SelfreportError(`--neurons: "${r.text}" is out of range: the model's layers have ${dMlp} MLP neurons (0..${dMlp - 1})`);
    for (let n = r.lo; n <= r.hi; n++) out.push(n);
  }
  return out;
}

/** Parses --layers: `2,3` or `0-11`; no repeats. Range against the model is checked by checkLayers. */
export function parseLayers(value: string): number[] {
  return parseIntList(value, "--layers");
}

function parseIntList(value: string, name: string): number[] {
  const parts = value.split(",").map((s) => s.trim());
  if (value.trim() === "" || parts.some((p) => p === "")) throw new SelfreportError(`${name} must be a comma-separated list like 2,3 or 0-11, got "${value}"`);
  const out: number[] = [];
  for (const p of parts) {
    const m = /^(\S+?)-(\S+)$/.exec(p);
    const lo = nonNegativeInt(m ? m[1]! : p, name, value);
    const hi = m ? nonNegativeInt(m[2]!, name, value) : lo;
    if (hi < lo) throw new SelfreportError(`${name}: range "${p}" ends before it starts (in "${value}")`);
    for (let x = lo; x <= hi; x++) {
      if (out.includes(x)) throw new SelfreportError(`${name}: ${x} is listed twice (in "${value}")`);
      out.push(x);
    }
  }
  return out.sort((a, b) => a - b);
}

export function checkLayers(layers: readonly number[], nLayers: number): void {
  for (const l of layers) if (l >= nLayers) throw new SelfreportError(`--layers: layer ${l} is out of range: the model has ${nLayers} layers (0..${nLayers - 1})`);
}

/** A comma-separated list of distinct choices. */
export function parseChoiceList<T extends string>(name: string, choices: readonly T[]): (value: string) => T[] {
  return (value: string): T[] => {
    const parts = value.split(",").map((s) => s.trim());
    if (value.trim() === "" || parts.some((p) => p === "")) throw new SelfreportError(`${name} must be a comma-separated list of ${choices.join(", ")}; got "${value}"`);
    const out: T[] = [];
    for (const p of parts) {
      if (!(choices as readonly string[]).includes(p)) throw new SelfreportError(`${name}: "${p}" is not one of ${choices.join(", ")} (in "${value}")`);
      if ((out as string[]).includes(p)) throw new SelfreportError(`${name}: "${p}" is listed twice (in "${value}")`);
      out.push(p as T);
    }
    return out;
  };
}

export const parseHeads = parseChoiceList<HeadType>("--heads", HEAD_TYPES);
export const parseFreezeModes = parseChoiceList<FreezeMode>("--freeze", FREEZE_MODES);

/** --analyses: `weights,patching`, or `none`. */
export function parseAnalyses(value: string): AnalysisName[] {
  if (value.trim() === "none") return [];
  return parseChoiceList<AnalysisName>("--analyses", ANALYSES)(value);
}

// ---------------------------------------------------------------------------------------------
// Settings: everything that changes a job's result (and nothing that does not, e.g. --workers)

export interface SweepSettings {
  format: typeof SWEEP_FORMAT;
  version: number;
  /** The model directory as resolved, and a fingerprint of its weights file (path:size:mtime). */
  model_dir: string;
  model_fingerprint: string;
  weights: "raw" | "tl";
  layers: number[];
  /** As given: "0-63" or "top-variance:32". */
  neurons: string;
  heads: HeadType[];
  freeze: FreezeMode[];
  /** For --freeze partial. */
  unfreeze_last: number | null;
  analyses: AnalysisName[];
  data: { corpus: string; n: number; max_len: number; seed: number };
  /**
   * The training settings (src/selfreport/run.ts), with one learning rate for frozen heads and one for
   * fine-tuning, and how frozen regression heads are fitted (other heads and modes always train with
   * AdamW; absent in sweeps made before the ridge solver = "adamw").
   */
  training: Omit<TrainingSettings, "lr"> & { lr_frozen: number; lr_finetune: number; solver?: Solver };
  analysis_options: { weights_max_examples: number; patching_inputs: number; patching_controls: number };
  /** Frozen jobs of one layer and head are trained together in tasks of at most this many neurons. */
  group_size: number;
}

/** sweep.json's training record: the training settings with lr as the frozen heads' rate, plus the fine-tuning rate and the solver (keys in the order sweep.json has always had). */
export function sweepTraining(t: TrainingSettings, lrFinetune: number, solver: Solver): SweepSettings["training"] {
  return {
    feature_layer: t.feature_layer, epochs: t.epochs, batch_size: t.batch_size, lr_frozen: t.lr, lr_finetune: lrFinetune,
    weight_decay: t.weight_decay, warmup: t.warmup, grad_clip: t.grad_clip, patience: t.patience, seed: t.seed, solver,
  };
}

/** sweep.json: the settings and, once the data are built, the neurons chosen in each layer. */
export interface SweepManifest {
  settings: SweepSettings;
  /** Layer → neurons, ascending. Set after the data are prepared (top-variance needs the activations). */
  neurons_by_layer: Record<string, number[]> | null;
  created: string;
}

export function manifestPath(sweepDir: string): string {
  return join(sweepDir, "sweep.json");
}

export function readManifest(sweepDir: string): SweepManifest | null {
  const path = manifestPath(sweepDir);
  if (!existsSync(path)) return null;
  let m: SweepManifest;
  try {
    m = JSON.parse(readFileSync(path, "utf8")) as SweepManifest;
  } catch (e) {
    throw new SelfreportError(`${path}: not valid JSON (${(e as Error).message}); pass --force to start the sweep folder over`);
  }
  if (typeof m !== "object" || m === null || m.settings?.format !== SWEEP_FORMAT) throw new SelfreportError(`${path} is not a selfreport sweep manifest; choose another --out`);
  if (m.settings.version !== SWEEP_VERSION) throw new SelfreportError(`${path}: sweep version ${m.settings.version} is not supported (expected ${SWEEP_VERSION})`);
  return m;
}

export function writeManifest(sweepDir: string, m: SweepManifest): void {
  writeJsonAtomic(manifestPath(sweepDir), m);
}

/** Setting paths whose values differ ("heads: [regression] ≠ [regression,token]"), for the refusal message. */
export function settingsDifferences(a: SweepSettings, b: SweepSettings): string[] {
  const flat = (o: unknown, prefix: string, out: Map<string, string>): Map<string, string> => {
    if (typeof o === "object" && o !== null && !Array.isArray(o)) {
      for (const [k, v] of Object.entries(o)) flat(v, prefix === "" ? k : `${prefix}.${k}`, out);
    } else out.set(prefix, JSON.stringify(o));
    return out;
  };
  const fa = flat(a, "", new Map());
  const fb = flat(b, "", new Map());
  const keys = [...new Set([...fa.keys(), ...fb.keys()])];
  return keys.filter((k) => fa.get(k) !== fb.get(k)).map((k) => `${k}: ${fa.get(k) ?? "(unset)"} ≠ ${fb.get(k) ?? "(unset)"}`);
}

/** A short stable id of the settings (queue job ids, worker logs). */
export function settingsHash(s: SweepSettings): string {
  return createHash("sha256").update(JSON.stringify(s)).digest("hex").slice(0, 12);
}

// ---------------------------------------------------------------------------------------------
// Jobs and tasks

export interface JobSpec {
  id: string;
  layer: number;
  neuron: number;
  head: HeadType;
  freeze: FreezeMode;
}

export function jobId(layer: number, neuron: number, head: HeadType, freeze: FreezeMode): string {
  return `L${layer}-N${neuron}-${head}-${freeze}`;
}

/** Every job of the sweep, layer-major, then head, freezing, neuron. */
export function allJobs(s: SweepSettings, neuronsByLayer: Record<string, number[]>): JobSpec[] {
  const jobs: JobSpec[] = [];
  for (const layer of s.layers) {
    const neurons = neuronsByLayer[String(layer)];
    if (neurons === undefined) throw new SelfreportError(`sweep manifest has no neuron list for layer ${layer}`);
    for (const head of s.heads) for (const freeze of s.freeze) for (const neuron of neurons) jobs.push({ id: jobId(layer, neuron, head, freeze), layer, neuron, head, freeze });
  }
  return jobs;
}

/** What one worker runs at once. `multi` tasks train their jobs together (frozen heads). */
export interface Task {
  id: string;
  layer: number;
  head: HeadType;
  freeze: FreezeMode;
  neurons: number[];
  multi: boolean;
}

/** Frozen heads (a sweep's heads have no hidden layer) train together; fine-tuning jobs alone. */
export function isMultiOutput(_head: HeadType, freeze: FreezeMode): boolean {
  return freeze === "frozen";
}

/**
 * Groups jobs into tasks: frozen jobs of a layer and head in chunks of at most groupSize (and, when
 * minTasks is given, into at least that many chunks so every worker gets one), every other job
 * alone. Task ids name the first and last neuron, so the same jobs make the same ids.
 */
export function makeTasks(jobs: readonly JobSpec[], groupSize: number, minTasks = 1): Task[] {
  const tasks: Task[] = [];
  const groups = new Map<string, JobSpec[]>();
  for (const j of jobs) {
    if (isMultiOutput(j.head, j.freeze)) {
      const key = `L${j.layer}-${j.head}`;
      const g = groups.get(key);
      if (g) g.push(j);
      else groups.set(key, [j]);
    } else tasks.push({ id: j.id, layer: j.layer, head: j.head, freeze: j.freeze, neurons: [j.neuron], multi: false });
  }
  const multi: Task[] = [];
  const perGroupChunks = Math.max(1, Math.ceil(minTasks / Math.max(1, groups.size)));
  for (const g of groups.values()) {
    const size = Math.max(1, Math.min(groupSize, Math.ceil(g.length / perGroupChunks)));
    for (let s = 0; s < g.length; s += size) {
      const chunk = g.slice(s, s + size);
      const first = chunk[0]!;
      const last = chunk[chunk.length - 1]!;
      multi.push({ id: `L${first.layer}-N${first.neuron}_${last.neuron}-${first.head}-frozen-multi`, layer: first.layer, head: first.head, freeze: "frozen", neurons: chunk.map((j) => j.neuron), multi: true });
    }
  }
  // multi-output tasks first (the bulk of a typical sweep), then the rest by layer
  return [...multi, ...tasks.sort((a, b) => a.layer - b.layer)];
}

export function jobsOfTask(t: Task): JobSpec[] {
  return t.neurons.map((neuron) => ({ id: jobId(t.layer, neuron, t.head, t.freeze), layer: t.layer, neuron, head: t.head, freeze: t.freeze }));
}
