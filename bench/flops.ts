/**
 * Matmul FLOP counts of the model shapes the bench runs, for the roofline columns (bench/README.md,
 * "Roofline"). The rule: 2·m·n·k per [m, k]·[k, n] product; only matrix products are counted
 * (LayerNorm, GELU, softmax, the embedding gather and the optimizer are not); attention's q·kᵀ and
 * pattern·v count as dense [T, T] products (4·T²·d_model per sequence and layer, masked half
 * included, as a dense kernel computes it); a training step counts 3× the forward (forward, then the
 * gradients of the inputs and of the weights of every product, each as large as the forward).
 */

export interface ModelShape {
  nLayers: number;
  dModel: number;
  /** d_mlp (4·d_model for GPT-2). */
  dMlp: number;
  dVocab: number;
  /** Width of the K and V projections (n_key_value_heads · d_head): d_model unless grouped-query attention. */
  dKv?: number;
  /** Gated MLP (Llama family): W_gate, W_in and W_out, three [d_model, d_mlp] products instead of two. */
  gatedMlp?: boolean;
}

/**
 * Matmul FLOPs of one block per token, attention scores excluded: W_Q, W_K, W_V, W_O, W_in, W_out
 * (and W_gate for a gated MLP). With grouped-query attention W_K and W_V are [d_model, dKv].
 */
export function blockFlopsPerToken(s: Pick<ModelShape, "dModel" | "dMlp" | "dKv" | "gatedMlp">): number {
  const C = s.dModel;
  const dKv = s.dKv ?? C;
  const mlpMatrices = s.gatedMlp === true ? 3 : 2;
  return 2 * (C * C + 2 * C * dKv + C * C + mlpMatrices * C * s.dMlp);
}

/** Attention's q·kᵀ and pattern·v for one sequence of T positions in one block (dense [T, T]). */
export function attentionFlopsPerSequence(T: number, dModel: number): number {
  return 4 * T * T * dModel;
}

/**
 * Matmul FLOPs of a forward over `batch` sequences of `T` positions through `layers` blocks
 * (default all), plus the unembedding [tokens, d_model]·[d_model, vocab] when `unembed`.
 */
export function forwardFlops(s: ModelShape, batch: number, T: number, o: { layers?: number; unembed: boolean }): number {
  const layers = o.layers ?? s.nLayers;
  const perLayer = batch * T * blockFlopsPerToken(s) + batch * attentionFlopsPerSequence(T, s.dModel);
  return layers * perLayer + (o.unembed ? 2 * batch * T * s.dModel * s.dVocab : 0);
}

/** A training step through the same products: forward + the input and weight gradients = 3 × forward. */
export function trainStepFlops(forward: number): number {
  return 3 * forward;
}
