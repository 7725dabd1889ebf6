/**
 * Self-report datasets: token prefixes from real text, each with the target neuron's activation
 * at the read position.
 *
 * Causal attention makes the activations at position p of a window identical to those of the
 * prefix that ends at p, so one forward pass over a window of maxLen tokens yields up to maxLen
 * examples. We sample a few positions per window from many windows of many documents, so that no
 * document dominates. Documents are assigned to train / validation / test (80/10/10, seeded), so no
 * text leaks between splits.
 *
 * File format (an open one): FILE.safetensors holds the arrays and, in its metadata, a JSON
 * `selfreport` record (model, target, statistics, bin edges); FILE.jsonl beside it holds one line
 * of readable text per example.
 *   tokens    I32 [n, maxLen]  right-padded with <|endoftext|>
 *   lengths   I32 [n]          tokens in the prefix
 *   positions I32 [n]          read position (length-1 for token_pos "last")
 *   targets   F32 [n]          the activation at the read position
 *   split     I32 [n]          0 train, 1 validation, 2 test
 *   window    I32 [n]          which source window (examples of one window share a prefix)
 */
import { checkOutput } from "../io/outputs.ts";
import { basename, dirname, join, resolve } from "node:path";
import { existsSync, renameSync, rmSync } from "node:fs";
import { Rng, noGrad } from "../tensor/index.ts";
import type { HookedTransformer } from "../model/transformer.ts";
import type { Tokenizer } from "../model/tokenizer.ts";
import { readSafetensors, writeSafetensors } from "../io/safetensors.ts";
import { writeFileAtomic } from "../io/atomic.ts";
import { SelfreportError } from "../errors.ts";
import { checkDatasetArrays, checkDatasetMeta, checkTargetFitsModel, isJsonObject } from "../io/schema.ts";
import { progress } from "../util/progress.ts";
import { runSteps, runStepsInterruptibly } from "../util/interrupt.ts";
import { activationStats, quantileBinEdges, type ActivationStats } from "./stats.ts";
import { targetHook, targetLabel, type LayerType, type Target } from "./target.ts";

export const DATASET_FORMAT = "selfreport-dataset";
export const DATASET_VERSION = 1;

export type { LayerType } from "./target.ts";
export type TokenPos = "last" | number;
export const SPLITS = ["train", "validation", "test"] as const;
export type SplitName = (typeof SPLITS)[number];

/** The target's hook name (see target.ts). */
export function targetHookName(layer: number, layerType: LayerType): string {
  return targetHook({ layer, layer_type: layerType });
}

export interface DatasetMeta {
  format: typeof DATASET_FORMAT;
  version: number;
  /** Model directory as resolved, and the name the user gave. */
  model_dir: string;
  model_name: string;
  /** Weight processing the activations were computed with ("tl" or "raw"). */
  weights: "raw" | "tl";
  layer: number;
  neuron: number;
  layer_type: LayerType;
  hook: string;
  token_pos: TokenPos;
  max_len: number;
  n: number;
  corpus: string;
  seed: number;
  balance: boolean;
  split_counts: Record<SplitName, number>;
  /** Statistics of the training split's targets. */
  stats: ActivationStats;
  /** Quantile bin edges of the training targets: num_bins + 1 values, first = min, last = max. */
  bin_edges: number[];
  num_bins: number;
}

export interface Dataset {
  meta: DatasetMeta;
  tokens: Int32Array; //    [n, maxLen]
  lengths: Int32Array; //   [n]
  positions: Int32Array; // [n]
  targets: Float32Array; // [n]
  split: Int32Array; //     [n]
  window: Int32Array; //    [n]
}

export interface BuildOptions {
  modelName: string;
  modelDir: string;
  weights: "raw" | "tl";
  layer: number;
  neuron: number;
  layerType: LayerType;
  tokenPos: TokenPos;
  n: number;
  maxLen: number;
  balance: boolean;
  seed: number;
  corpusName: string;
  /** Positions sampled per window (default 4). */
  perWindow?: number;
  /** Bins for the quantile edges (default 10). */
  numBins?: number;
  /** Shortest prefix used as an example in "last" mode (default 4 tokens). */
  minLen?: number;
}

interface Doc {
  id: string;
  text: string;
}

/** Seeded 80/10/10 assignment of documents to splits (by a hash of the id, so it is stable). */
export function documentSplit(id: string, seed: number): number {
  let h = (2166136261 ^ seed) >>> 0;
  for (let i = 0; i < id.length; i++) h = Math.imul(h ^ id.charCodeAt(i), 16777619) >>> 0;
  const u = (h % 10000) / 10000;
  return u < 0.8 ? 0 : u < 0.9 ? 1 : 2;
}

export function validateTarget(model: HookedTransformer, layer: number, neuron: number, layerType: LayerType): void {
  model.checkLayer(layer, "--layer");
  const width = layerType === "mlp_post" ? model.cfg.dMlp : model.cfg.dModel;
  if (!Number.isInteger(neuron) || neuron < 0 || neuron >= width) {
    const what = layerType === "mlp_post" ? `layer ${layer} has ${width} MLP neurons` : `the residual stream (mlp_out) has ${width} dimensions`;
    throw new SelfreportError(`--neuron ${neuron} is out of range: ${what} (0..${width - 1})`);
  }
}

/** Builds a dataset by sampling windows of real text and reading the target hook in one pass per window batch. */
export function buildDataset(model: HookedTransformer, tok: Tokenizer, docs: readonly Doc[], o: BuildOptions): Dataset {
  return runSteps(buildDatasetSteps(model, tok, docs, o));
}

/**
 * buildDataset, stopping with Interrupted on SIGINT/SIGTERM (with the CLI's handlers) between batches
 * of windows; nothing is written then (a dataset is written whole, by writeDataset).
 */
export function buildDatasetInterruptibly(model: HookedTransformer, tok: Tokenizer, docs: readonly Doc[], o: BuildOptions): Promise<Dataset> {
  const progressOf = { windows: 0, examples: 0 };
  return runStepsInterruptibly(buildDatasetSteps(model, tok, docs, o, progressOf), () => `dataset building stopped after ${progressOf.examples} examples; nothing was written (run the command again to build it)`);
}

/** buildDataset as steps: yields after each batch of windows (progressOf, when given, follows the counts). */
function* buildDatasetSteps(model: HookedTransformer, tok: Tokenizer, docs: readonly Doc[], o: BuildOptions, progressOf?: { windows: number; examples: number }): Generator<void, Dataset> {
  validateTarget(model, o.layer, o.neuron, o.layerType);
  const { maxLen, n } = o;
  if (!Number.isInteger(maxLen) || maxLen < 2 || maxLen > model.cfg.nCtx) {
    throw new SelfreportError(`--max-len ${maxLen} must be between 2 and the model's n_positions ${model.cfg.nCtx}`);
  }
  if (!Number.isInteger(n) || n < 10) throw new SelfreportError(`--n must be an integer ≥ 10, got ${n}`);
  if (o.tokenPos !== "last" && (!Number.isInteger(o.tokenPos) || o.tokenPos < 0 || o.tokenPos >= maxLen)) {
    throw new SelfreportError(`--token-pos must be "last" or an index in 0..${maxLen - 1} (below --max-len), got ${String(o.tokenPos)}`);
  }
  const perWindow = o.tokenPos === "last" ? (o.perWindow ?? 4) : 1;
  const minLen = o.tokenPos === "last" ? Math.min(o.minLen ?? 4, maxLen) : (o.tokenPos as number) + 1;
  const rng = new Rng(o.seed);
  const hook = targetHookName(o.layer, o.layerType);

  // Cut every document into windows of maxLen tokens (the last partial one kept if long enough).
  interface Win { doc: number; ids: number[] }
  const windows: Win[] = [];
  docs.forEach((d, di) => {
    const ids = tok.encode(d.text);
    for (let s = 0; s + minLen <= ids.length; s += maxLen) windows.push({ doc: di, ids: ids.slice(s, s + maxLen) });
  });
  if (windows.length === 0) throw new SelfreportError(`the corpus has no text window of at least ${minLen} tokens`);
  rng.shuffle(windows);

  // With --balance we collect a larger pool and then draw the training examples stratified by activation.
  const poolTarget = o.balance ? n * 3 : n;
  const ex = { tokens: [] as number[][], pos: [] as number[], target: [] as number[], split: [] as number[], window: [] as number[] };
  const B = 16;
  const bar = progress("dataset", Math.min(windows.length, Math.ceil(poolTarget / perWindow)), ["examples"]);
  let w = 0;
  try {
    while (w < windows.length && ex.target.length < poolTarget) {
      noGrad(() => {
        const chunk = windows.slice(w, w + B);
        const T = Math.max(...chunk.map((c) => c.ids.length));
        const ids = new Int32Array(chunk.length * T).fill(tok.eosId);
        chunk.forEach((c, b) => ids.set(c.ids, b * T));
        const { cache } = model.runWithCache({ ids, batch: chunk.length, len: T }, [hook], { stopAtLayer: o.layer + 1 });
        const A = cache.get(hook)!; // [b, T, width]
        const width = A.shape[2]!;
        chunk.forEach((c, b) => {
          const len = c.ids.length;
          let picks: Array<[length: number, pos: number]>;
          if (o.tokenPos === "last") {
            const candidates = len - minLen + 1;
            const k = Math.min(perWindow, candidates);
            const chosen = new Set<number>();
            while (chosen.size < k) chosen.add(minLen - 1 + rng.int(candidates));
            picks = [...chosen].map((p) => [p + 1, p]);
          } else {
            const p = o.tokenPos as number;
            if (len <= p) return;
            picks = [[p + 1 + rng.int(len - p), p]];
          }
          for (const [length, pos] of picks) {
            ex.tokens.push(c.ids.slice(0, length));
            ex.pos.push(pos);
            ex.target.push(A.data[(b * T + pos) * width + o.neuron]!);
            ex.split.push(documentSplit(docs[c.doc]!.id, o.seed));
            ex.window.push(w + b);
          }
        });
        w += chunk.length;
        bar.update(Math.min(w, Math.ceil(poolTarget / perWindow)), { examples: ex.target.length });
      });
      if (progressOf !== undefined) [progressOf.windows, progressOf.examples] = [w, ex.target.length];
      yield;
    }
  } finally {
    bar.stop();
  }
  if (ex.target.length < n) {
    throw new SelfreportError(`the corpus yields only ${ex.target.length} examples at --max-len ${maxLen}; ask for fewer with --n or give a larger corpus`);
  }

  // Choose the n examples: all from the pool in order, or (balance) stratified for the training split.
  let chosen: number[];
  if (!o.balance) chosen = ex.target.map((_, i) => i).slice(0, n);
  else chosen = balancedChoice(ex.target, ex.split, n, rng);

  const m = chosen.length;
  const ds: Dataset = {
    meta: undefined as unknown as DatasetMeta,
    tokens: new Int32Array(m * maxLen).fill(tok.eosId),
    lengths: new Int32Array(m),
    positions: new Int32Array(m),
    targets: new Float32Array(m),
    split: new Int32Array(m),
    window: new Int32Array(m),
  };
  chosen.forEach((src, i) => {
    ds.tokens.set(ex.tokens[src]!, i * maxLen);
    ds.lengths[i] = ex.tokens[src]!.length;
    ds.positions[i] = ex.pos[src]!;
    ds.targets[i] = ex.target[src]!;
    ds.split[i] = ex.split[src]!;
    ds.window[i] = ex.window[src]!;
  });
  const trainTargets = ds.targets.filter((_, i) => ds.split[i] === 0);
  if (trainTargets.length < 2) throw new SelfreportError(`only ${trainTargets.length} training examples: the corpus has too few documents for a train/validation/test split`);
  for (const [name, code] of [["validation", 1], ["test", 2]] as const) {
    if (!ds.split.some((s) => s === code)) {
      throw new SelfreportError(`no ${name} examples: the documents used all fell into other splits (splits are by document, 80/10/10); use a corpus with more documents or a larger --n`);
    }
  }
  const numBins = o.numBins ?? 10;
  ds.meta = {
    format: DATASET_FORMAT,
    version: DATASET_VERSION,
    model_dir: resolve(o.modelDir),
    model_name: o.modelName,
    weights: o.weights,
    layer: o.layer,
    neuron: o.neuron,
    layer_type: o.layerType,
    hook,
    token_pos: o.tokenPos,
    max_len: maxLen,
    n: m,
    corpus: o.corpusName,
    seed: o.seed,
    balance: o.balance,
    split_counts: {
      train: ds.split.filter((s) => s === 0).length,
      validation: ds.split.filter((s) => s === 1).length,
      test: ds.split.filter((s) => s === 2).length,
    },
    stats: activationStats(trainTargets),
    bin_edges: quantileBinEdges(trainTargets, numBins),
    num_bins: numBins,
  };
  return ds;
}

/**
 * Keeps the validation and test examples with their natural distribution and fills the training
 * quota from the activation deciles of the pool's training examples, decile b (0 = lowest) drawn
 * perBin·(0.5 + b/9) times: 0.5× its fair share for the lowest decile up to 1.5× for the highest, so
 * high activations of a sparse neuron are over-represented relative to the raw text. Within a decile
 * the draws are a seeded random sample, so every decile keeps its range (and the top one the tail).
 */
export function balancedChoice(targets: number[], split: number[], n: number, rng: Rng): number[] {
  const idx = targets.map((_, i) => i);
  const trainIdx = idx.filter((i) => split[i] === 0);
  const other = idx.filter((i) => split[i] !== 0);
  const otherQuota = Math.round(n * (other.length / idx.length));
  const keepOther = other.slice(0, otherQuota);
  const trainQuota = n - keepOther.length;
  const sorted = [...trainIdx].sort((a, b) => targets[a]! - targets[b]!);
  const bins = 10;
  const perBin = Math.ceil(trainQuota / bins);
  const chosen: number[] = [];
  for (let b = 0; b < bins; b++) {
    const lo = Math.floor((b * sorted.length) / bins);
    const hi = Math.floor(((b + 1) * sorted.length) / bins);
    const members = sorted.slice(lo, hi);
    if (members.length === 0) continue;
    // top deciles get more draws: bin b is drawn perBin·(0.5 + b/9) times. The draws are a seeded random
    // sample of the decile (without replacement; every member once, then at random, past its size), so each
    // decile keeps its whole range: its highest values (the tail) as well as its lowest.
    const draws = Math.round(perBin * (0.5 + b / (bins - 1)));
    const order = rng.shuffle([...members]);
    for (let k = 0; k < draws; k++) chosen.push(k < order.length ? order[k]! : members[rng.int(members.length)]!);
  }
  rng.shuffle(chosen);
  return [...chosen.slice(0, trainQuota), ...keepOther];
}

// ---------------------------------------------------------------------------------------------
// Files

export function writeDataset(path: string, ds: Dataset, textOf: (ids: number[]) => string): void {
  if (!path.endsWith(".safetensors")) throw new SelfreportError(`dataset --out must end in .safetensors, got "${path}"`);
  const n = ds.meta.n;
  const L = ds.meta.max_len;
  const lines: string[] = [];
  for (let i = 0; i < n; i++) {
    const ids = Array.from(ds.tokens.subarray(i * L, i * L + ds.lengths[i]!));
    lines.push(JSON.stringify({ i, split: SPLITS[ds.split[i]!], position: ds.positions[i], activation: ds.targets[i], text: textOf(ids) }));
  }
  // both files or neither: the text first (an older one moved aside), then the arrays; on failure the
  // new text goes and the old one comes back (the arrays are written atomically: old or new)
  const jsonl = jsonlPathFor(path);
  const aside = existsSync(jsonl) ? join(dirname(jsonl), `.${basename(jsonl)}.old-${process.pid}`) : null;
  if (aside !== null) renameSync(jsonl, aside);
  try {
    writeFileAtomic(jsonl, lines.join("\n") + "\n");
    writeDatasetArrays(path, ds);
  } catch (e) {
    rmSync(jsonl, { force: true });
    if (aside !== null) renameSync(aside, jsonl);
    throw e;
  }
  if (aside !== null) rmSync(aside, { force: true });
}

function writeDatasetArrays(path: string, ds: Dataset): void {
  const n = ds.meta.n;
  const L = ds.meta.max_len;
  writeSafetensors(path, {
    tokens: { dtype: "I32", shape: [n, L], data: ds.tokens },
    lengths: { dtype: "I32", shape: [n], data: ds.lengths },
    positions: { dtype: "I32", shape: [n], data: ds.positions },
    targets: { dtype: "F32", shape: [n], data: ds.targets },
    split: { dtype: "I32", shape: [n], data: ds.split },
    window: { dtype: "I32", shape: [n], data: ds.window },
  }, { selfreport: JSON.stringify(ds.meta) });
}

/** The output rule (src/io/outputs.ts) for both files of a dataset: D.safetensors and its text D.jsonl. */
export function checkDatasetOutput(path: string, o: { inputs: ReadonlyArray<string | undefined>; force: boolean; option?: string; replacing?: readonly string[] }): void {
  if (!path.endsWith(".safetensors")) throw new SelfreportError(`dataset --out must end in .safetensors, got "${path}"`);
  checkOutput(path, { kind: "dataset", ...o });
  checkOutput(jsonlPathFor(path), { kind: "dataset", ...o });
}

export function jsonlPathFor(path: string): string {
  return path.replace(/\.safetensors$/, ".jsonl");
}

export function readDataset(path: string): Dataset {
  if (!existsSync(path)) throw new SelfreportError(`dataset ${path} not found (build one with \`selfreport dataset\`)`);
  const { tensors, metadata } = readSafetensors(path);
  const raw = metadata["selfreport"];
  if (raw === undefined) throw new SelfreportError(`${path} is not a selfreport dataset (no "selfreport" metadata)`);
  let meta: DatasetMeta;
  try {
    meta = JSON.parse(raw) as DatasetMeta;
  } catch {
    throw new SelfreportError(`${path}: corrupt dataset metadata`);
  }
  if (!isJsonObject(meta)) throw new SelfreportError(`${path}: corrupt dataset metadata (expected a JSON object)`);
  if (meta.format !== DATASET_FORMAT) throw new SelfreportError(`${path} is not a selfreport dataset (format "${String(meta.format)}")`);
  if (meta.version !== DATASET_VERSION) throw new SelfreportError(`${path}: dataset version ${meta.version} is not supported (expected ${DATASET_VERSION})`);
  const get = <T extends Float32Array | Int32Array>(name: string, ctor: new (...a: never[]) => T, size: number): T => {
    const t = tensors.get(name);
    if (t === undefined) throw new SelfreportError(`${path}: dataset array "${name}" is missing`);
    if (!(t.data instanceof ctor) || t.data.length !== size) throw new SelfreportError(`${path}: dataset array "${name}" has the wrong type or size (expected ${size})`);
    return t.data as T;
  };
  checkDatasetMeta(meta as unknown as Record<string, unknown>, path);
  const n = meta.n;
  const ds: Dataset = {
    meta,
    tokens: get("tokens", Int32Array, n * meta.max_len),
    lengths: get("lengths", Int32Array, n),
    positions: get("positions", Int32Array, n),
    targets: get("targets", Float32Array, n),
    split: get("split", Int32Array, n),
    window: get("window", Int32Array, n),
  };
  checkDatasetArrays(ds, meta, path);
  return ds;
}

/**
 * Throws unless the dataset fits the model it is used with: its target layer and neuron exist in the
 * model, its prefixes fit the model's context and its token ids its vocabulary.
 */
export function checkDatasetFitsModel(ds: Dataset, model: HookedTransformer, path: string): void {
  const m = ds.meta;
  checkTargetFitsModel({ target_layer: m.layer, target_neuron: m.neuron, layer_type: m.layer_type }, model.cfg, path, { layer: "layer", neuron: "neuron" });
  if (m.max_len > model.cfg.nCtx) throw new SelfreportError(`${path}: field "max_len" must be at most the model's n_positions ${model.cfg.nCtx}, got ${m.max_len}`);
  const V = model.cfg.dVocab;
  for (let i = 0; i < m.n; i++) {
    for (let j = 0; j < ds.lengths[i]!; j++) {
      const id = ds.tokens[i * m.max_len + j]!;
      if (id >= V) throw new SelfreportError(`${path}: tokens[${i}][${j}] must be a token id of the model's vocabulary (0..${V - 1}), got ${id}`);
    }
  }
}

/** Column k of targets [n, K]: [n]. */
export function targetColumn(targetsNK: Float32Array, n: number, K: number, k: number): Float32Array {
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = targetsNK[i * K + k]!;
  return out;
}

/**
 * A targets file (a sweep's data/L{l}.targets.safetensors): F32 `targets` [n, K], the activations of
 * K neurons of one layer at each example; metadata `neurons` (JSON list, column k = neurons[k]) and `layer`.
 * Returns the column of `target.neuron`, checked against the metadata and the example count n.
 */
export function readTargetsColumn(path: string, target: Target, column: number, n: number): Float32Array {
  if (!existsSync(path)) throw new SelfreportError(`targets file ${path} not found`);
  const { tensors, metadata } = readSafetensors(path);
  const t = tensors.get("targets");
  if (t === undefined || !(t.data instanceof Float32Array) || t.shape.length !== 2 || t.shape[0] !== n) {
    throw new SelfreportError(`${path}: expected F32 "targets" [${n}, K] (one row per example of the dataset)`);
  }
  const K = t.shape[1]!;
  if (!Number.isInteger(column) || column < 0 || column >= K) throw new SelfreportError(`${path}: target column ${column} is out of range (the file has ${K} columns)`);
  const neurons = JSON.parse(metadata["neurons"] ?? "null") as unknown;
  if (Array.isArray(neurons) && neurons[column] !== target.neuron) {
    throw new SelfreportError(`${path}: column ${column} holds neuron ${String(neurons[column])}, not ${target.neuron}`);
  }
  if (metadata["layer"] !== undefined && Number(metadata["layer"]) !== target.layer) {
    throw new SelfreportError(`${path}: holds layer ${metadata["layer"]}, not ${target.layer}`);
  }
  return targetColumn(t.data, n, K, column);
}

/**
 * The same examples with another target: `targets` [n] are `target`'s activations at each example's
 * read position; the statistics and bin edges are those buildDataset would compute for them (training
 * split). A sweep stores one examples file and the targets of many neurons beside it (src/sweep/data.ts).
 */
export function withTargets(examples: Dataset, target: Target, targets: Float32Array): Dataset {
  const n = examples.meta.n;
  if (targets.length !== n) throw new SelfreportError(`targets for ${targetLabel(target)} have ${targets.length} values, but the dataset has ${n} examples`);
  const trainTargets = targets.filter((_, i) => examples.split[i] === 0);
  return {
    ...examples,
    targets,
    meta: {
      ...examples.meta, layer: target.layer, neuron: target.neuron, layer_type: target.layer_type, hook: targetHook(target),
      stats: activationStats(trainTargets), bin_edges: quantileBinEdges(trainTargets, examples.meta.num_bins),
    },
  };
}

/** Indices of the examples in a split. */
export function splitIndices(ds: Dataset, split: SplitName): number[] {
  const code = SPLITS.indexOf(split);
  const out: number[] = [];
  for (let i = 0; i < ds.meta.n; i++) if (ds.split[i] === code) out.push(i);
  return out;
}

/** The token ids of example i. */
export function exampleTokens(ds: Dataset, i: number): Int32Array {
  return ds.tokens.subarray(i * ds.meta.max_len, i * ds.meta.max_len + ds.lengths[i]!);
}

/**
 * The id to right-pad with for a model of vocabulary dVocab: GPT-2's <|endoftext|> (50256), or the
 * last id of a smaller test vocabulary. Pad positions are never read (causal attention, last-token
 * read position), so any valid id gives the same numbers; it only has to be inside the embedding.
 */
export function padIdForVocab(dVocab: number): number {
  return Math.min(50256, dVocab - 1);
}

/** A right-padded batch of examples (padded to the longest) with their read positions. */
export function exampleBatch(ds: Dataset, indices: readonly number[], padId = 50256): { ids: Int32Array; batch: number; len: number; attentionMask: Uint8Array; positions: Int32Array } {
  const T = Math.max(1, ...indices.map((i) => ds.lengths[i]!));
  const B = indices.length;
  const ids = new Int32Array(B * T).fill(padId);
  const attentionMask = new Uint8Array(B * T);
  const positions = new Int32Array(B);
  indices.forEach((i, b) => {
    ids.set(exampleTokens(ds, i), b * T);
    attentionMask.fill(1, b * T, b * T + ds.lengths[i]!);
    positions[b] = ds.positions[i]!;
  });
  return { ids, batch: B, len: T, attentionMask, positions };
}
