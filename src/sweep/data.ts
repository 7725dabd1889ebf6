/**
 * The data a sweep shares between its jobs, computed once into SWEEP_DIR/data/:
 *
 *   examples.safetensors                  one selfreport dataset (`selfreport dataset` format, built by
 *                                         buildDataset without --balance): the token prefixes, read
 *                                         positions, splits and windows every job uses. Its own target is
 *                                         neuron 0 of the first layer; jobs replace it (neuronDataset).
 *   examples.features-L{F}-{w}.safetensors the frozen feature cache (features.ts format): resid_post of the
 *                                         feature layer F at every example. The examples are the same for
 *                                         every layer, so one cache serves all layers of the sweep.
 *   L{l}.targets.safetensors              targets F32 [n, K]: the activations of the layer's K swept
 *                                         neurons (metadata `neurons`: JSON list), read from one forward
 *                                         pass per window batch that gives every neuron of several layers
 *                                         at once (as many layers as fit 1.5 GiB of activations).
 *
 * Without --balance the examples buildDataset chooses depend only on the text, the seed and the
 * lengths, never on which neuron is the target, so a job's dataset (neuronDataset) is exactly the
 * one `selfreport dataset --layer l --neuron m` would build with the same options.
 */
import { existsSync } from "node:fs";
import { join } from "node:path";
import { Tensor, noGrad } from "../tensor/index.ts";
import type { HookedTransformer } from "../model/transformer.ts";
import type { Tokenizer } from "../model/tokenizer.ts";
import type { Doc } from "../data/corpus.ts";
import { readSafetensors, writeSafetensors } from "../io/safetensors.ts";
import { SelfreportError } from "../errors.ts";
import { progress } from "../util/progress.ts";
import { buildDataset, writeDataset, readDataset, exampleBatch, padIdForVocab, withTargets, targetColumn, type Dataset } from "../selfreport/dataset.ts";
import { mlpNeuronsHook } from "../selfreport/target.ts";
import { cachedFeatures, featureCachePath } from "../selfreport/features.ts";
import { neuronsOfRanges, type NeuronSpec, type SweepSettings } from "./spec.ts";

export function dataDir(sweepDir: string): string {
  return join(sweepDir, "data");
}

export function examplesPath(sweepDir: string): string {
  return join(dataDir(sweepDir), "examples.safetensors");
}

export function layerTargetsPath(sweepDir: string, layer: number): string {
  return join(dataDir(sweepDir), `L${layer}.targets.safetensors`);
}

export interface LayerTargets {
  layer: number;
  /** The swept neurons of the layer, ascending. */
  neurons: number[];
  /** [n, K] activations, column k = neurons[k]. */
  targets: Float32Array;
}

/** The feature layer of the settings (−1 = last). */
export function featureLayerOf(s: SweepSettings, nLayers: number): number {
  return s.training.feature_layer === -1 ? nLayers - 1 : s.training.feature_layer;
}

/**
 * Activations [n, dMlp] of every neuron of each of `layers` at every example's read position: one
 * forward pass (up to the deepest of the layers) over the longest example of each window covers all
 * examples of the window and all the layers.
 */
export function layersActivations(model: HookedTransformer, ds: Dataset, layers: readonly number[], batchWindows = 16): Map<number, Float32Array> {
  const n = ds.meta.n;
  const M = model.cfg.dMlp;
  const hooks = layers.map((l) => mlpNeuronsHook(l));
  const out = new Map<number, Float32Array>(layers.map((l) => [l, new Float32Array(n * M)]));
  const groups = new Map<number, number[]>();
  for (let i = 0; i < n; i++) {
    const g = groups.get(ds.window[i]!);
    if (g) g.push(i);
    else groups.set(ds.window[i]!, [i]);
  }
  const list = [...groups.values()];
  const deepest = Math.max(...layers);
  const bar = progress(`activations L${layers.join(",")}`, list.length);
  noGrad(() => {
    for (let g0 = 0; g0 < list.length; g0 += batchWindows) {
      const chunk = list.slice(g0, g0 + batchWindows);
      const longest = chunk.map((members) => members.reduce((a, b) => (ds.lengths[b]! > ds.lengths[a]! ? b : a)));
      const batch = exampleBatch(ds, longest, padIdForVocab(model.cfg.dVocab));
      const { cache } = model.runWithCache(batch, hooks, { stopAtLayer: deepest + 1 });
      const T = batch.len;
      layers.forEach((l, h) => {
        const act = cache.get(hooks[h]!)!.data; // [B, T, M]
        const dst = out.get(l)!;
        chunk.forEach((members, b) => {
          for (const i of members) dst.set(act.subarray((b * T + ds.positions[i]!) * M, (b * T + ds.positions[i]! + 1) * M), i * M);
        });
      });
      bar.update(Math.min(g0 + batchWindows, list.length));
    }
  });
  bar.stop();
  return out;
}

/** Activations [n, dMlp] of one layer (see layersActivations). */
export function layerActivations(model: HookedTransformer, ds: Dataset, layer: number): Float32Array {
  return layersActivations(model, ds, [layer]).get(layer)!;
}

/** Memory for the activations held at once while preparing a sweep's layers (bytes). */
const ACTIVATION_BUDGET = 1.5 * 2 ** 30;

/** The K neurons of highest population variance over the training split, ascending by index. */
export function topVarianceNeurons(acts: Float32Array, split: Int32Array, M: number, k: number): number[] {
  if (k > M) throw new SelfreportError(`--neurons top-variance:${k} asks for more neurons than the layer has (${M})`);
  const sum = new Float64Array(M);
  const sq = new Float64Array(M);
  let count = 0;
  for (let i = 0; i < split.length; i++) {
    if (split[i] !== 0) continue;
    count++;
    const row = i * M;
    for (let m = 0; m < M; m++) {
      const v = acts[row + m]!;
      sum[m]! += v;
      sq[m]! += v * v;
    }
  }
  const variance = Array.from({ length: M }, (_, m) => sq[m]! / count - (sum[m]! / count) ** 2);
  const order = Array.from({ length: M }, (_, m) => m).sort((a, b) => variance[b]! - variance[a]! || a - b);
  return order.slice(0, k).sort((a, b) => a - b);
}

/** Columns `neurons` of acts [n, M] → [n, K]. */
function selectColumns(acts: Float32Array, n: number, M: number, neurons: readonly number[]): Float32Array {
  const K = neurons.length;
  const out = new Float32Array(n * K);
  for (let i = 0; i < n; i++) for (let k = 0; k < K; k++) out[i * K + k] = acts[i * M + neurons[k]!]!;
  return out;
}

export function readLayerTargets(sweepDir: string, layer: number, n: number): LayerTargets {
  const path = layerTargetsPath(sweepDir, layer);
  if (!existsSync(path)) throw new SelfreportError(`${path} is missing: the sweep's data for layer ${layer} were not prepared (re-run the sweep command)`);
  const { tensors, metadata } = readSafetensors(path);
  const t = tensors.get("targets");
  const neurons = JSON.parse(metadata["neurons"] ?? "null") as number[] | null;
  if (!t || !(t.data instanceof Float32Array) || neurons === null || t.shape[0] !== n || t.shape[1] !== neurons.length) {
    throw new SelfreportError(`${path}: not a sweep targets file for ${n} examples (delete it and re-run the sweep command)`);
  }
  return { layer, neurons, targets: t.data };
}

/**
 * The feature cache prepared for the sweep, read as it is (workers never recompute it: that is the
 * enqueuing command's job, and a worker rewriting a shared file would race the others).
 */
export function readSweepFeatures(sweepDir: string, featureLayer: number, weights: string, n: number, C: number): Tensor {
  const path = featureCachePath(examplesPath(sweepDir), featureLayer, weights);
  if (!existsSync(path)) throw new SelfreportError(`${path} is missing: the sweep's feature cache was not prepared (re-run the sweep command)`);
  const f = readSafetensors(path).tensors.get("features");
  if (!f || !(f.data instanceof Float32Array) || f.shape[0] !== n || f.shape[1] !== C) {
    throw new SelfreportError(`${path}: not a feature cache [${n}, ${C}] for this sweep's examples (re-run the sweep command)`);
  }
  return new Tensor(f.data, f.shape);
}

export interface PreparedData {
  examples: Dataset;
  features: Tensor;
  neuronsByLayer: Record<string, number[]>;
}

/**
 * Builds (or, when present, reads) the shared data of a sweep. `docs` and `tok` are only used when
 * the examples have to be built.
 */
export function prepareSweepData(
  s: SweepSettings, sweepDir: string, model: HookedTransformer, load: () => { tok: Tokenizer; docs: readonly Doc[] }, spec: NeuronSpec,
): PreparedData {
  const exPath = examplesPath(sweepDir);
  let examples: Dataset;
  if (existsSync(exPath)) examples = readDataset(exPath);
  else {
    const { tok, docs } = load();
    examples = buildDataset(model, tok, docs, {
      modelName: s.model_dir, modelDir: s.model_dir, weights: s.weights, layer: s.layers[0]!, neuron: 0, layerType: "mlp_post",
      tokenPos: "last", n: s.data.n, maxLen: s.data.max_len, balance: false, seed: s.data.seed, corpusName: s.data.corpus,
    });
    writeDataset(exPath, examples, (ids) => tok.decode(ids));
  }
  const F = featureLayerOf(s, model.cfg.nLayers);
  const features = cachedFeatures(model, s.model_dir, examples, exPath, F, s.weights);
  const neuronsByLayer: Record<string, number[]> = {};
  const n = examples.meta.n;
  const M = model.cfg.dMlp;
  const todo: number[] = [];
  for (const layer of s.layers) {
    if (existsSync(layerTargetsPath(sweepDir, layer))) neuronsByLayer[String(layer)] = readLayerTargets(sweepDir, layer, n).neurons;
    else todo.push(layer);
  }
  // as many layers per forward pass as fit the memory budget (GPT-2 small, 20 000 examples: 6 layers)
  const perPass = Math.max(1, Math.floor(ACTIVATION_BUDGET / (n * M * 4)));
  for (let c = 0; c < todo.length; c += perPass) {
    const chunk = todo.slice(c, c + perPass);
    const acts = layersActivations(model, examples, chunk);
    for (const layer of chunk) {
      const a = acts.get(layer)!;
      const neurons = spec.kind === "ranges" ? neuronsOfRanges(spec, M) : topVarianceNeurons(a, examples.split, M, spec.k);
      writeSafetensors(layerTargetsPath(sweepDir, layer), { targets: { dtype: "F32", shape: [n, neurons.length], data: selectColumns(a, n, M, neurons) } }, { neurons: JSON.stringify(neurons), layer: String(layer) });
      neuronsByLayer[String(layer)] = neurons;
      acts.delete(layer);
    }
  }
  return { examples, features, neuronsByLayer };
}

/**
 * The dataset of one job: the shared examples with neuron `neuron`'s activations as targets, and
 * the statistics and bin edges buildDataset would have computed for it.
 */
export function neuronDataset(examples: Dataset, lt: LayerTargets, neuron: number): Dataset {
  const k = lt.neurons.indexOf(neuron);
  if (k < 0) throw new SelfreportError(`neuron ${neuron} is not among the swept neurons of layer ${lt.layer}`);
  return withTargets(examples, { layer: lt.layer, neuron, layer_type: "mlp_post" }, targetColumn(lt.targets, examples.meta.n, lt.neurons.length, k));
}
