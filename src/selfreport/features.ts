/**
 * Frozen feature cache: the residual stream (resid_post of the feature layer) at every example's
 * read position, computed once so that frozen training costs only the head.
 *
 * Examples cut from one text window share their prefix, so one forward pass over the longest
 * example of a window gives the features of all of them (causal attention: position p never sees
 * what follows it). The cache is a safetensors file beside the dataset, keyed by the model file,
 * the weight processing, the layer and the examples (a dataset rebuilt at the same path with other
 * text gets new features); a stale or foreign cache is recomputed, never trusted.
 */
import { existsSync, statSync } from "node:fs";
import { join } from "node:path";
import { Tensor, noGrad } from "../tensor/index.ts";
import type { HookedTransformer } from "../model/transformer.ts";
import { readSafetensors, writeSafetensors } from "../io/safetensors.ts";
import { progress } from "../util/progress.ts";
import { SelfreportError } from "../errors.ts";
import { exampleBatch, padIdForVocab, type Dataset } from "./dataset.ts";

export function featureCachePath(datasetPath: string, featureLayer: number, weights: string): string {
  return datasetPath.replace(/\.safetensors$/, `.features-L${featureLayer}-${weights}.safetensors`);
}

/** Identifies the model weights a cache was computed from (path, size and mtime of the file). */
export function modelFingerprint(modelDir: string): string {
  const f = join(modelDir, "model.safetensors");
  if (!existsSync(f)) return `${modelDir}:missing`;
  const s = statSync(f);
  return `${f}:${s.size}:${Math.floor(s.mtimeMs)}`;
}

/** Identifies the examples a cache was computed for: a hash of their tokens, lengths and read positions. */
export function examplesFingerprint(ds: Dataset): string {
  let h = 2166136261;
  for (const a of [ds.lengths, ds.positions, ds.tokens]) {
    for (let i = 0; i < a.length; i++) {
      h = Math.imul(h ^ a[i]!, 16777619) >>> 0;
      h = (h ^ (h >>> 15)) >>> 0;
    }
  }
  return `${ds.meta.n}x${ds.meta.max_len}:${h.toString(16)}`;
}

/** Features [n, d_model] for every example of the dataset (in dataset order). */
export function computeFeatures(model: HookedTransformer, ds: Dataset, featureLayer: number, batchWindows = 16): Tensor {
  const n = ds.meta.n;
  const C = model.cfg.dModel;
  const out = new Float32Array(n * C);
  // group examples by source window; the longest example of a group covers the others
  const groups = new Map<number, number[]>();
  for (let i = 0; i < n; i++) {
    const w = ds.window[i]!;
    const g = groups.get(w);
    if (g) g.push(i);
    else groups.set(w, [i]);
  }
  const list = [...groups.values()];
  checkSharedPrefixes(ds, list);
  const bar = progress("features", list.length);
  noGrad(() => {
    for (let g0 = 0; g0 < list.length; g0 += batchWindows) {
      const chunk = list.slice(g0, g0 + batchWindows);
      const longest = chunk.map((members) => members.reduce((a, b) => (ds.lengths[b]! > ds.lengths[a]! ? b : a)));
      const batch = exampleBatch(ds, longest, padIdForVocab(model.cfg.dVocab));
      const { resid } = model.forward(batch, { stopAtLayer: featureLayer + 1 }); // [B, T, C]
      const T = batch.len;
      chunk.forEach((members, b) => {
        for (const i of members) out.set(resid.data.subarray((b * T + ds.positions[i]!) * C, (b * T + ds.positions[i]! + 1) * C), i * C);
      });
      bar.update(Math.min(g0 + batchWindows, list.length));
    }
  });
  bar.stop();
  return new Tensor(out, [n, C]);
}

/**
 * One forward pass per window reads every example of the window from its longest member, which is
 * right only when each example's read position lies inside its own prefix and its tokens are the
 * start of the longest member's: anything else would read another example's features, so it is refused.
 */
function checkSharedPrefixes(ds: Dataset, groups: readonly number[][]): void {
  const L = ds.meta.max_len;
  for (const members of groups) {
    const longest = members.reduce((a, b) => (ds.lengths[b]! > ds.lengths[a]! ? b : a));
    for (const i of members) {
      const len = ds.lengths[i]!;
      const pos = ds.positions[i]!;
      if (pos < 0 || pos >= len) throw new SelfreportError(`dataset example ${i}: read position ${pos} is outside its ${len}-token prefix (expected 0..${len - 1})`);
      for (let j = 0; j < len; j++) {
        if (ds.tokens[i * L + j] !== ds.tokens[longest * L + j]) {
          throw new SelfreportError(`dataset example ${i}: window ${ds.window[i]!} groups it with example ${longest}, but its tokens are not a prefix of that example's (token ${j} differs); expected the examples of one window to share their prefix`);
        }
      }
    }
  }
}

/** Loads the cache when it matches (model fingerprint, examples, layer, size), else computes and saves it. */
export function cachedFeatures(model: HookedTransformer, modelDir: string, ds: Dataset, datasetPath: string, featureLayer: number, weights: string): Tensor {
  const path = featureCachePath(datasetPath, featureLayer, weights);
  const fingerprint = modelFingerprint(modelDir);
  const examples = examplesFingerprint(ds);
  if (existsSync(path)) {
    try {
      const { tensors, metadata } = readSafetensors(path);
      const f = tensors.get("features");
      if (metadata["fingerprint"] === fingerprint && metadata["examples"] === examples && f && f.data instanceof Float32Array && f.shape[0] === ds.meta.n && f.shape[1] === model.cfg.dModel) {
        return new Tensor(f.data, f.shape);
      }
    } catch {
      // unreadable cache: recompute below
    }
  }
  const features = computeFeatures(model, ds, featureLayer);
  writeSafetensors(path, { features: { dtype: "F32", shape: [...features.shape], data: features.data } }, { fingerprint, examples, feature_layer: String(featureLayer), weights });
  return features;
}
