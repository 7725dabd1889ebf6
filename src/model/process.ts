/**
 * Weight processing, as TransformerLens's `from_pretrained` does by default, as a list of small
 * pure functions applied in a fixed order:
 *
 *   1. foldLayerNorm        LN weights and biases folded into the reading weights (W_Q/K/V, W_in, W_U),
 *                           then those reading weights centred over d_model (LN's output has mean 0);
 *                           the LayerNorms become pure normalisation (w = 1, b = 0).
 *   2. centerWritingWeights W_E, W_pos, W_O, W_out and b_O, b_out centred over d_model: every write to
 *                           the residual stream has mean 0 (LN removes the mean anyway).
 *   3. centerUnembed        W_U and b_U centred over the vocabulary (softmax ignores a shared shift).
 *   4. foldValueBiases      b_V moved into b_O (each attention row sums to 1, so b_V·W_O is a constant).
 *
 * None of these change any MLP activation or the log-probabilities; they change what the residual
 * stream and the weights look like (that is the point: W_in then shows what a neuron really reads).
 * Applying the list twice gives the same weights as once.
 *
 * RMSNorm models (Llama family), as TransformerLens's process_weights: step 1 folds only the norm's
 * weights (into W_Q, K/V, W_in and W_gate, W_U: RMSNorm has no bias and does not centre, so nothing
 * is centred), step 2 is skipped (writing weights are not centred), steps 3 and 4 as above. With
 * grouped-query attention the K/V weights are TransformerLens's _W_K/_W_V, and b_V is repeated per
 * query head when folded into b_O.
 */
import { Tensor } from "../tensor/index.ts";
import { blockSpec, type ModelConfig } from "./config.ts";

export type WeightProcessing = "raw" | "tl";

type Params = Map<string, Tensor>;

function copyParams(params: ReadonlyMap<string, Tensor>): Params {
  const out: Params = new Map();
  for (const [k, t] of params) out.set(k, new Tensor(t.data.slice(), t.shape));
  return out;
}

/** Subtracts, for every index of the other axes, the mean over `axis` of a contiguous array. */
function centerAxis(data: Float32Array, shape: readonly number[], axis: number): void {
  const outer = shape.slice(0, axis).reduce((a, b) => a * b, 1);
  const n = shape[axis]!;
  const inner = shape.slice(axis + 1).reduce((a, b) => a * b, 1);
  const mean = new Float64Array(inner);
  for (let o = 0; o < outer; o++) {
    mean.fill(0);
    for (let k = 0; k < n; k++) for (let i = 0; i < inner; i++) mean[i]! += data[(o * n + k) * inner + i]!;
    for (let i = 0; i < inner; i++) mean[i]! /= n;
    for (let k = 0; k < n; k++) for (let i = 0; i < inner; i++) data[(o * n + k) * inner + i]! -= mean[i]!;
  }
}

/**
 * Folds LN (w, b) [C] into a reading weight W whose d_model axis is `axis`, and its bias:
 * b += Σ_c W[.., c, ..]·lnB[c], then W[.., c, ..] *= lnW[c], then W centred over c.
 * RMSNorm (lnB null, centre false): only W[.., c, ..] *= lnW[c].
 */
function foldInto(W: Tensor, b: Tensor | null, axis: number, lnW: Float32Array, lnB: Float32Array | null, centre = true): void {
  const outer = W.shape.slice(0, axis).reduce((x, y) => x * y, 1);
  const C = W.shape[axis]!;
  const inner = W.shape.slice(axis + 1).reduce((x, y) => x * y, 1);
  const Wd = W.data;
  for (let o = 0; o < outer; o++) {
    if (b !== null && lnB !== null) for (let i = 0; i < inner; i++) {
      const bd = b.data; // [outer·inner], e.g. b_Q [H, Dh] or b_in [M]
      let acc = 0;
      for (let c = 0; c < C; c++) acc += Wd[(o * C + c) * inner + i]! * lnB[c]!;
      bd[o * inner + i]! += acc;
    }
    for (let c = 0; c < C; c++) {
      const s = lnW[c]!;
      for (let i = 0; i < inner; i++) Wd[(o * C + c) * inner + i]! *= s;
    }
  }
  if (centre) centerAxis(Wd, W.shape, axis);
}

function resetLn(params: Params, prefix: string): void {
  params.get(`${prefix}.w`)!.data.fill(1);
  params.get(`${prefix}.b`)?.data.fill(0); // RMSNorm has no bias
}

export function foldLayerNorm(params: Params, cfg: ModelConfig): void {
  const spec = blockSpec(cfg);
  const ln = spec.normalizationType === "LN"; // RMSNorm: weights only, no centring (TransformerLens: fold_biases=False, center_weights=False)
  const kv = spec.gqa ? "_" : "";
  const bias = (prefix: string): Float32Array | null => (ln ? params.get(`${prefix}.b`)!.data.slice() : null);
  for (let l = 0; l < cfg.nLayers; l++) {
    const p = `blocks.${l}`;
    const ln1w = params.get(`${p}.ln1.w`)!.data.slice();
    const ln1b = bias(`${p}.ln1`);
    for (const [W, b] of [["W_Q", "b_Q"], [`${kv}W_K`, `${kv}b_K`], [`${kv}W_V`, `${kv}b_V`]] as const) {
      foldInto(params.get(`${p}.attn.${W}`)!, params.get(`${p}.attn.${b}`)!, 1, ln1w, ln1b, ln);
    }
    resetLn(params, `${p}.ln1`);
    const ln2w = params.get(`${p}.ln2.w`)!.data.slice();
    const ln2b = bias(`${p}.ln2`);
    foldInto(params.get(`${p}.mlp.W_in`)!, params.get(`${p}.mlp.b_in`)!, 0, ln2w, ln2b, ln);
    if (spec.gatedMlp) foldInto(params.get(`${p}.mlp.W_gate`)!, null, 0, ln2w, null, false); // TransformerLens scales W_gate only
    resetLn(params, `${p}.ln2`);
  }
  const lnfw = params.get("ln_final.w")!.data.slice();
  const lnfb = bias("ln_final");
  foldInto(params.get("unembed.W_U")!, params.get("unembed.b_U")!, 0, lnfw, lnfb, ln);
  resetLn(params, "ln_final");
}

export function centerWritingWeights(params: Params, cfg: ModelConfig): void {
  const center = (name: string): void => {
    const t = params.get(name)!;
    centerAxis(t.data, t.shape, t.ndim - 1);
  };
  center("embed.W_E");
  if (params.has("pos_embed.W_pos")) center("pos_embed.W_pos"); // rotary models have none
  for (let l = 0; l < cfg.nLayers; l++) {
    for (const n of ["attn.W_O", "attn.b_O", "mlp.W_out", "mlp.b_out"]) center(`blocks.${l}.${n}`);
  }
}

export function centerUnembed(params: Params): void {
  const WU = params.get("unembed.W_U")!;
  centerAxis(WU.data, WU.shape, 1);
  const bU = params.get("unembed.b_U")!;
  centerAxis(bU.data, bU.shape, 0);
}

export function foldValueBiases(params: Params, cfg: ModelConfig): void {
  const { nHeads: H, dHead: Dh, dModel: C } = cfg;
  const spec = blockSpec(cfg);
  const rep = H / spec.nKvHeads; // query heads per K/V head (1 without grouped-query attention)
  for (let l = 0; l < cfg.nLayers; l++) {
    const p = `blocks.${l}`;
    const bV = params.get(`${p}.attn.${spec.gqa ? "_" : ""}b_V`)!.data; // [Hkv, Dh]
    const WO = params.get(`${p}.attn.W_O`)!.data; // [H, Dh, C]
    const bO = params.get(`${p}.attn.b_O`)!.data; // [C]
    for (let c = 0; c < C; c++) {
      let acc = 0;
      for (let hd = 0; hd < H * Dh; hd++) acc += bV[Math.floor(hd / Dh / rep) * Dh + (hd % Dh)]! * WO[hd * C + c]!;
      bO[c]! += acc;
    }
    bV.fill(0);
  }
}

/**
 * Returns processed copies of the parameters (and the config, untied when the unembedding is
 * processed). "raw" returns the parameters unchanged. The given tensors are not modified.
 */
export function processWeights(
  params: ReadonlyMap<string, Tensor>, cfg: ModelConfig, how: WeightProcessing,
): { params: Map<string, Tensor>; cfg: ModelConfig } {
  if (how === "raw") return { params: new Map(params), cfg };
  return processWeightsInPlace(copyParams(params), cfg, how);
}

/**
 * processWeights without the copy: processes the given tensors themselves and returns the same map
 * (with unembed.W_U added when the embeddings were tied). For a caller that owns freshly loaded
 * parameters (loadModel), so a model is not held twice while it is processed.
 */
export function processWeightsInPlace(
  params: Map<string, Tensor>, cfg: ModelConfig, how: WeightProcessing,
): { params: Map<string, Tensor>; cfg: ModelConfig } {
  if (how === "raw") return { params, cfg };
  const out = params;
  let c = cfg;
  if (cfg.tiedEmbeddings) {
    // Folding ln_final into the unembedding unties it from W_E.
    const [V, C] = [cfg.dVocab, cfg.dModel];
    const WE = out.get("embed.W_E")!.data;
    const WU = new Float32Array(C * V);
    for (let v = 0; v < V; v++) for (let k = 0; k < C; k++) WU[k * V + v] = WE[v * C + k]!;
    out.set("unembed.W_U", new Tensor(WU, [C, V]));
    c = { ...cfg, tiedEmbeddings: false };
  }
  foldLayerNorm(out, c);
  if (blockSpec(c).normalizationType === "LN") centerWritingWeights(out, c); // TransformerLens skips this for RMSNorm
  centerUnembed(out);
  foldValueBiases(out, c);
  return { params: out, cfg: c };
}
