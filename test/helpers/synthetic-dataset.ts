/**
 * A synthetic self-report dataset on a tiny model, for trainer and CLI tests:
 *
 *   writeSyntheticDataset(path, modelDir, opts) → Dataset (also written to `path`)
 *
 * Windows of seeded random token ids; each window gives `perWindow` examples that are prefixes of
 * it (the first one full length), read at their last token. Splits by window: 8 train, 1
 * validation, 1 test out of every 10. Targets:
 *   "neuron"   the activation of blocks.{layer}.mlp.hook_post[neuron] (runWithCache on the window)
 *   "linear"   direction · resid_post(featureLayer) + bias: a target a frozen linear head can fit exactly
 */
import { resolve } from "node:path";
import { noGrad } from "../../src/tensor/index.ts";
import { loadModel } from "../../src/model/load.ts";
import { writeDataset, DATASET_FORMAT, DATASET_VERSION, type Dataset } from "../../src/selfreport/dataset.ts";
import { activationStats, quantileBinEdges } from "../../src/selfreport/stats.ts";
import { mulberry32 } from "./rng.ts";

export interface SyntheticOptions {
  weights?: "raw" | "tl";
  layer?: number;
  neuron?: number;
  n?: number;
  maxLen?: number;
  perWindow?: number;
  seed?: number;
  target?: "neuron" | { direction: Float32Array; bias: number; featureLayer: number };
}

export function writeSyntheticDataset(path: string, modelDir: string, o: SyntheticOptions = {}): Dataset {
  const weights = o.weights ?? "raw";
  const layer = o.layer ?? 1;
  const neuron = o.neuron ?? 5;
  const n = o.n ?? 120;
  const maxLen = o.maxLen ?? 8;
  const perWindow = o.perWindow ?? 3;
  const target = o.target ?? "neuron";
  const model = loadModel(modelDir, { weights }).model;
  const { dVocab: V, dModel: C } = model.cfg;
  const rng = mulberry32(o.seed ?? 1);
  const hook = target === "neuron" ? `blocks.${layer}.mlp.hook_post` : `blocks.${target.featureLayer}.hook_resid_post`;
  const ds: Dataset = {
    meta: undefined as unknown as Dataset["meta"],
    tokens: new Int32Array(n * maxLen),
    lengths: new Int32Array(n),
    positions: new Int32Array(n),
    targets: new Float32Array(n),
    split: new Int32Array(n),
    window: new Int32Array(n),
  };
  noGrad(() => {
    for (let w = 0; w * perWindow < n; w++) {
      const ids = Int32Array.from({ length: maxLen }, () => Math.floor(rng() * V));
      const { cache } = model.runWithCache({ ids, batch: 1, len: maxLen }, [hook]);
      const A = cache.get(hook)!; // [1, maxLen, width]
      const width = A.shape[2]!;
      for (let k = 0; k < perWindow && w * perWindow + k < n; k++) {
        const i = w * perWindow + k;
        const len = k === 0 ? maxLen : 2 + Math.floor(rng() * (maxLen - 2));
        const pos = len - 1;
        ds.tokens.set(ids.subarray(0, len), i * maxLen);
        ds.lengths[i] = len;
        ds.positions[i] = pos;
        if (target === "neuron") ds.targets[i] = A.data[pos * width + neuron]!;
        else {
          let s = target.bias;
          for (let c = 0; c < C; c++) s += target.direction[c]! * A.data[pos * width + c]!;
          ds.targets[i] = s;
        }
        ds.split[i] = w % 10 < 8 ? 0 : w % 10 === 8 ? 1 : 2;
        ds.window[i] = w;
      }
    }
  });
  const train = ds.targets.filter((_, i) => ds.split[i] === 0);
  ds.meta = {
    format: DATASET_FORMAT, version: DATASET_VERSION, model_dir: resolve(modelDir), model_name: "tiny", weights,
    layer, neuron, layer_type: "mlp_post", hook: `blocks.${layer}.mlp.hook_post`, token_pos: "last", max_len: maxLen, n,
    corpus: "synthetic", seed: o.seed ?? 1, balance: false,
    split_counts: { train: train.length, validation: ds.split.filter((s) => s === 1).length, test: ds.split.filter((s) => s === 2).length },
    stats: activationStats(train), bin_edges: quantileBinEdges(train, 10), num_bins: 10,
  };
  writeDataset(path, ds, (ids) => ids.join(" "));
  return ds;
}
