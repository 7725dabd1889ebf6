/**
 * A complete, tiny run directory written by hand (no training), for analysis tests.
 *
 *   makeTinyRun(dir, opts) → { runDir, datasetPath, modelDir, ... }
 *
 * writes, under `dir`:
 *   model/               a random GPT-2-architecture model (HookedTransformer.init, saved with saveModel)
 *   data.safetensors     a synthetic dataset: random token ids, targets = the target hook's activation
 *                        in the model (runWithCache), token_pos "last"; each window is one random
 *                        sequence of maxLen tokens and its examples are prefixes of it, the first one
 *                        full length (so computeFeatures never pads: the tiny vocabulary has no id 50256;
 *                        when you batch examples yourself, pass padId = min(50256, dVocab − 1) to exampleBatch).
 *                        The `tokens` array is padded with 0. Splits 80/10/10 by window.
 *   run/                 config.json + head.safetensors (+ finetuned/ for unfrozen/partial runs)
 *
 * Options (all optional):
 *   head              "regression" (default) | "classification" | "token"
 *   hiddenDim         a hidden layer of this size (regression/classification); activation `activation` (default "tanh")
 *   plantedDirection  the head's reading direction, planted into output.weight:
 *                       "W_in"        W_in[:, n] of the run's model as loaded
 *                       "W_in_folded" centre(ln2.w ⊙ W_in[:, n]) (what the neuron really reads, LN included)
 *                       "W_out"       W_out[n, :]
 *                       a Float32Array [d_model]
 *                     regression: output.weight = direction; classification: row i = (centre_i − c̄)·direction + shift;
 *                     token: row i = (centre_i − c̄)·direction / ln_final.w + shift (so the ln_final-folded
 *                     direction is the planted one). Not with hiddenDim. Default: initHead's seeded random init.
 *   shift             the shared vector added to every row of a planted bin head (softmax ignores it):
 *                     a Float32Array [d_model], or a number = the std of a seeded random one (default 1)
 *   freeze            "frozen" (default) | "unfrozen" | "partial"; non-frozen runs get finetuned/ = the
 *                     model as loaded plus N(0, finetuneNoise²) noise on every weight (default 0.01)
 *   weights           "raw" (default) | "tl": the weight processing of the base model, dataset and run
 *   layer, neuron     target (default 1, 5); layerType "mlp_post" (default) | "mlp_out"
 *   featureLayer      resid_post read by the head (default: the last layer)
 *   n, maxLen, perWindow   dataset size (default 96 examples, prefixes of ≤ 8 tokens, 3 per window)
 *   seed              model seed (default 0); the head uses seed+1, the data seed+2
 *   model             model size overrides (default nLayers 2, dModel 16, nHeads 2, nCtx 16, dVocab 64)
 *   randomLn          every LayerNorm gets w ~ U(0.5, 1.5), b ~ N(0, 0.1²), as in a trained model (default false)
 *   lnFinalW          ln_final.w of the saved model (a Float32Array [d_model]); applied after randomLn
 *   writeScale        multiplies the target neuron's W_out[n, :] (mlp_post targets), so its write dominates
 *                     the residual stream along that direction (default 1)
 *   arch              "llama" (RMSNorm, rotary, gated MLP) | "neox" (LayerNorm, parallel block): the model is a
 *                     random one of that family written in the Hugging Face layout (test/helpers/tiny-arch-model.ts)
 *                     with the `model` sizes; frozen runs only (fine-tuned models of these families are not saved
 *                     yet), and randomLn / lnFinalW / writeScale do not apply. Planted "W_gate" / "W_gate_folded"
 *                     (gated MLPs): the gate column, as loaded or with ln2.w folded in.
 */
import { mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { after } from "node:test";
import { Rng, Tensor, noGrad } from "../../src/tensor/index.ts";
import { makeConfig, blockSpec, type ModelConfig } from "../../src/model/config.ts";
import { makeTinyLlamaModel, makeTinyNeoxModel } from "./tiny-arch-model.ts";
import { HookedTransformer } from "../../src/model/transformer.ts";
import { saveModel, loadModel } from "../../src/model/load.ts";
import {
  writeDataset, targetHookName, DATASET_FORMAT, DATASET_VERSION, type Dataset, type LayerType,
} from "../../src/selfreport/dataset.ts";
import { activationStats, quantileBinEdges, binCentres } from "../../src/selfreport/stats.ts";
import { makeHeadConfig, initHead, type HeadType, type HeadParams, type HiddenActivation } from "../../src/selfreport/predictor.ts";
import { writeRunConfig, writeHead, finetunedDir, RUN_FORMAT_VERSION, type FreezeMode, type RunConfig } from "../../src/selfreport/run.ts";

export interface TinyRunOptions {
  head?: HeadType;
  hiddenDim?: number;
  activation?: HiddenActivation;
  plantedDirection?: "W_in" | "W_in_folded" | "W_gate" | "W_gate_folded" | "W_out" | Float32Array;
  shift?: Float32Array | number;
  freeze?: FreezeMode;
  finetuneNoise?: number;
  weights?: "raw" | "tl";
  layer?: number;
  neuron?: number;
  layerType?: LayerType;
  featureLayer?: number;
  n?: number;
  maxLen?: number;
  perWindow?: number;
  seed?: number;
  model?: Partial<{ nLayers: number; dModel: number; nHeads: number; nCtx: number; dVocab: number }>;
  randomLn?: boolean;
  lnFinalW?: Float32Array;
  writeScale?: number;
  arch?: "llama" | "neox";
}

export interface TinyRun {
  runDir: string;
  datasetPath: string;
  modelDir: string;
  /** The base model as loaded with the run's weight processing. */
  model: HookedTransformer;
  /** The model the predictor runs on (finetuned for unfrozen/partial, else `model`). */
  runModel: HookedTransformer;
  dataset: Dataset;
  config: RunConfig;
  head: HeadParams;
  /** The planted direction [d_model], when one was planted. */
  planted: Float32Array | null;
}

export function makeTinyRun(dir: string, opts: TinyRunOptions = {}): TinyRun {
  const headType = opts.head ?? "regression";
  const freeze = opts.freeze ?? "frozen";
  const weights = opts.weights ?? "raw";
  const layer = opts.layer ?? 1;
  const neuron = opts.neuron ?? 5;
  const layerType = opts.layerType ?? "mlp_post";
  const seed = opts.seed ?? 0;
  const n = opts.n ?? 96;
  const maxLen = opts.maxLen ?? 8;
  const perWindow = opts.perWindow ?? 3;
  const cfg = makeConfig({ nLayers: 2, dModel: 16, nHeads: 2, nCtx: 16, dVocab: 64, ...opts.model });
  const featureLayer = opts.featureLayer ?? cfg.nLayers - 1;

  // ---- model
  const modelDir = resolve(join(dir, "model"));
  if (opts.arch !== undefined) {
    if (freeze !== "frozen") throw new Error("makeTinyRun: arch runs are frozen only");
    const sizes = { nLayers: cfg.nLayers, dModel: cfg.dModel, nHeads: cfg.nHeads, dVocab: cfg.dVocab, nCtx: cfg.nCtx, seed };
    if (opts.arch === "llama") makeTinyLlamaModel(modelDir, sizes);
    else makeTinyNeoxModel(modelDir, sizes);
  } else saveModel(initModel(cfg, seed, opts, layer, neuron, layerType), modelDir);
  const model = loadModel(modelDir, { weights }).model;
  const C = model.cfg.dModel;

  // ---- dataset: windows of random ids; examples are prefixes (the first one full length)
  const rng = new Rng(seed + 2);
  const nWindows = Math.ceil(n / perWindow);
  const hook = targetHookName(layer, layerType);
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
    for (let w = 0; w < nWindows; w++) {
      const ids = Int32Array.from({ length: maxLen }, () => rng.int(cfg.dVocab));
      const { cache } = model.runWithCache({ ids, batch: 1, len: maxLen }, [hook], { stopAtLayer: layer + 1 });
      const A = cache.get(hook)!; // [1, maxLen, width]
      const width = A.shape[2]!;
      for (let k = 0; k < perWindow && w * perWindow + k < n; k++) {
        const i = w * perWindow + k;
        const len = k === 0 ? maxLen : 2 + rng.int(maxLen - 1);
        ds.tokens.set(ids.subarray(0, len), i * maxLen);
        ds.lengths[i] = len;
        ds.positions[i] = len - 1;
        ds.targets[i] = A.data[(len - 1) * width + neuron]!;
        ds.split[i] = w % 10 < 8 ? 0 : w % 10 === 8 ? 1 : 2;
        ds.window[i] = w;
      }
    }
  });
  const train = ds.targets.filter((_, i) => ds.split[i] === 0);
  ds.meta = {
    format: DATASET_FORMAT, version: DATASET_VERSION, model_dir: modelDir, model_name: modelDir, weights,
    layer, neuron, layer_type: layerType, hook, token_pos: "last", max_len: maxLen, n, corpus: "synthetic", seed: seed + 2, balance: false,
    split_counts: { train: train.length, validation: ds.split.filter((s) => s === 1).length, test: ds.split.filter((s) => s === 2).length },
    stats: activationStats(train), bin_edges: quantileBinEdges(train, 10), num_bins: 10,
  };
  const datasetPath = resolve(join(dir, "data.safetensors"));
  writeDataset(datasetPath, ds, (ids) => ids.join(" "));

  // ---- run directory
  const runDir = resolve(join(dir, "run"));
  mkdirSync(runDir, { recursive: true });
  let runModel = model;
  if (freeze !== "frozen") {
    const noise = new Rng(seed + 3);
    const std = opts.finetuneNoise ?? 0.01;
    const params = new Map<string, Tensor>();
    for (const [k, t] of model.params) params.set(k, new Tensor(t.data.map((v) => v + std * noise.normal()), t.shape));
    runModel = new HookedTransformer(model.cfg, params);
    saveModel(runModel, finetunedDir(runDir));
    runModel = loadModel(finetunedDir(runDir), { weights }).model; // exactly what an analysis will load
  }
  const headCfg = makeHeadConfig(headType, { inputDim: C, hiddenDim: opts.hiddenDim ?? null, activation: opts.activation ?? "tanh" });
  const head = initHead(headCfg, seed + 1, runModel);
  const planted = opts.plantedDirection === undefined ? null : plantedVector(runModel, layer, neuron, opts.plantedDirection);
  if (planted !== null) {
    if (opts.hiddenDim !== undefined) throw new Error("makeTinyRun: plantedDirection needs a head without a hidden layer");
    const W = head.get("output.weight")!; // [out, C]
    if (headType === "regression") W.data.set(planted);
    else {
      const centres = binCentres(ds.meta.bin_edges);
      const cbar = centres.reduce((a, b) => a + b, 0) / centres.length;
      const shiftRng = new Rng(seed + 4);
      const shift = opts.shift instanceof Float32Array ? opts.shift : Float32Array.from({ length: C }, () => shiftRng.normal() * ((opts.shift as number | undefined) ?? 1));
      const lnfW = runModel.p("ln_final.w").data;
      centres.forEach((ci, i) => {
        for (let c = 0; c < C; c++) {
          const v = (ci - cbar) * planted[c]!;
          W.data[i * C + c] = (headType === "token" ? v / lnfW[c]! : v) + shift[c]!;
        }
      });
    }
  }
  writeHead(runDir, head);
  const config: RunConfig = {
    format_version: RUN_FORMAT_VERSION,
    head_type: headType,
    target_layer: layer,
    target_neuron: neuron,
    layer_type: layerType,
    token_pos: "last",
    feature_layer: featureLayer,
    head_config: headCfg,
    base_model_name: modelDir,
    base_model_dir: modelDir,
    weights,
    d_model: C,
    bin_edges: [...ds.meta.bin_edges],
    activation_mean: ds.meta.stats.mean,
    activation_std: ds.meta.stats.std,
    freeze_mode: freeze,
    unfreeze_last: freeze === "partial" ? 1 : null,
    dataset: { path: datasetPath, n, layer, neuron, model_dir: modelDir },
    training: {},
  };
  writeRunConfig(runDir, config);
  return { runDir, datasetPath, modelDir, model, runModel, dataset: ds, config, head, planted };
}

/** A random GPT-2-architecture model with the options that change its weights (randomLn, lnFinalW, writeScale). */
function initModel(cfg: ModelConfig, seed: number, opts: TinyRunOptions, layer: number, neuron: number, layerType: LayerType): HookedTransformer {
  const init = HookedTransformer.init(cfg, seed);
  if (opts.randomLn) {
    const rng = new Rng(seed + 100);
    for (const [name, t] of init.params) {
      if (/(ln1|ln2|ln_final)\.w$/.test(name)) for (let i = 0; i < t.size; i++) t.data[i] = 0.5 + rng.uniform();
      if (/(ln1|ln2|ln_final)\.b$/.test(name)) for (let i = 0; i < t.size; i++) t.data[i] = 0.1 * rng.normal();
    }
  }
  if (opts.lnFinalW) init.p("ln_final.w").data.set(opts.lnFinalW);
  if (opts.writeScale !== undefined && layerType === "mlp_post") {
    const Wout = init.W_out(layer).data; // [M, C]
    const C0 = cfg.dModel;
    for (let c = 0; c < C0; c++) Wout[neuron * C0 + c]! *= opts.writeScale;
  }
  return init;
}


function plantedVector(model: HookedTransformer, layer: number, neuron: number, what: NonNullable<TinyRunOptions["plantedDirection"]>): Float32Array {
  if (what instanceof Float32Array) return what.slice();
  const { dModel: C, dMlp: M } = model.cfg;
  if (what === "W_out") return model.W_out(layer).data.slice(neuron * C, (neuron + 1) * C);
  const W = (what.startsWith("W_gate") ? model.W_gate(layer) : model.W_in(layer)).data; // [C, M]
  const col = Float32Array.from({ length: C }, (_, c) => W[c * M + neuron]!);
  if (what === "W_in" || what === "W_gate") return col;
  const ln2 = model.ln2W(layer).data;
  for (let c = 0; c < C; c++) col[c]! *= ln2[c]!;
  if (blockSpec(model.cfg).normalizationType === "RMS") return col; // RMSNorm removes no mean
  const mean = col.reduce((a, b) => a + b, 0) / C;
  return col.map((v) => v - mean);
}

/**
 * A temporary folder for one test file's tiny runs, removed when the file's tests end: `root` (for
 * other outputs too) and `tinyRun(opts)`, which writes a new run in it (run0, run1, …).
 */
export function tinyRunFolder(prefix: string): { root: string; tinyRun: (opts?: TinyRunOptions) => TinyRun } {
  const root = mkdtempSync(join(tmpdir(), `selfreport-${prefix}-`));
  after(() => rmSync(root, { recursive: true, force: true }));
  let counter = 0;
  return { root, tinyRun: (opts = {}) => makeTinyRun(join(root, `run${counter++}`), opts) };
}
