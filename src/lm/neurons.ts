/**
 * The neuron explorer: statistics of every MLP neuron of a layer over real text, and the contexts
 * that activate one neuron most.
 *
 * A neuron is one index of `blocks.L.mlp.hook_post` (the GELU output, [batch, pos, d_mlp]). Text is
 * read document by document: each document is tokenized on its own and cut into consecutive,
 * non-overlapping windows of `ctx` tokens (the last one shorter), at most `maxTokens` tokens in all,
 * in document order. Windows run in right-padded batches with `stopAtLayer: layer + 1` (no logits)
 * and a hook that keeps the layer's hook_post; padding positions are skipped. Because attention is
 * causal, a token's activation depends only on the tokens before it in its window.
 *
 * Statistics, per neuron, over every real token (population statistics, float64 accumulation):
 *   mean, std (divides by n), min, max;
 *   sparsity     the fraction of tokens whose activation is ≤ 0: GELU is "off" there (its output is
 *                negative only on a small dip, never below −0.17, so ≤ 0 means the pre-activation is
 *                ≤ 0 too);
 *   fracAbove1   the fraction of tokens whose activation is > 1.0 (strongly on).
 *
 * Top activations keep a bounded min-heap of k entries, so memory does not grow with the text.
 * Ties are broken towards the earlier token (document order, then position).
 */
import { noGrad, type Tensor } from "../tensor/index.ts";
import type { HookedTransformer, TokenBatch } from "../model/transformer.ts";
import type { Tokenizer } from "../model/tokenizer.ts";
import { SelfreportError } from "../errors.ts";
import { progress } from "../util/progress.ts";
import { mlpNeuronsHook } from "../selfreport/target.ts";

export interface NeuronDoc {
  id: string;
  text: string;
}

export interface ScanOptions {
  /** Read at most this many tokens (default 50000). */
  maxTokens?: number;
  /** Window length (default: the model's n_ctx, at most 64). */
  ctx?: number;
  /** Windows per forward pass (default 16). */
  batch?: number;
  /** Progress bar label; null hides the bar (default "neurons"). */
  label?: string | null;
}

export interface TopOptions extends ScanOptions {
  /** How many top activations (default 20). */
  k?: number;
  /** Tokens of context before the activating token (default 12). */
  before?: number;
  /** Tokens of context after it (default 3). */
  after?: number;
}

export interface NeuronStats {
  neuron: number;
  mean: number;
  std: number;
  min: number;
  max: number;
  /** Fraction of tokens with activation ≤ 0 (the GELU is off). */
  sparsity: number;
  /** Fraction of tokens with activation > 1.0. */
  fracAbove1: number;
}

export interface LayerStats {
  layer: number;
  hook: string;
  /** Tokens the statistics are over. */
  tokens: number;
  windows: number;
  /** Documents that contributed tokens. */
  documents: number;
  ctx: number;
  neurons: NeuronStats[];
}

export interface TopActivation {
  activation: number;
  docId: string;
  /** Position of the token in its document (0-based, in tokens). */
  position: number;
  tokenId: number;
  /** The activating token's text. */
  token: string;
  /** Up to `before` tokens before it and `after` tokens after it, as text. */
  before: string;
  after: string;
  /** before + "[[" + token + "]]" + after: the context with the activating token marked. */
  context: string;
}

export const SPARSITY_DEFINITION = "fraction of tokens whose activation is <= 0 (the GELU is off)";

export const SCAN_DEFAULTS = { maxTokens: 50000, batch: 16, maxCtx: 64, k: 20, before: 12, after: 3 };

/** Throws a one-line error unless `neuron` indexes the layer's d_mlp neurons. */
export function checkNeuron(model: HookedTransformer, layer: number, neuron: number): void {
  model.checkLayer(layer);
  const M = model.cfg.dMlp;
  if (!Number.isInteger(neuron) || neuron < 0 || neuron >= M) {
    throw new SelfreportError(`neuron ${neuron} is out of range: layer ${layer} has ${M} neurons (0..${M - 1})`);
  }
}

function positiveInt(name: string, v: number): number {
  if (!Number.isInteger(v) || v < 1) throw new SelfreportError(`${name} must be a positive integer, got ${v}`);
  return v;
}

interface Window {
  doc: number;
  /** Position of the window's first token in its document. */
  start: number;
  ids: number[];
}

/** Tokenizes documents in order and cuts them into windows until maxTokens tokens are taken. */
function makeWindows(model: HookedTransformer, tok: Tokenizer, docs: readonly NeuronDoc[], ctx: number, maxTokens: number): { windows: Window[]; docIds: number[][]; tokens: number } {
  const windows: Window[] = [];
  const docIds: number[][] = [];
  let tokens = 0;
  for (let d = 0; d < docs.length && tokens < maxTokens; d++) {
    const ids = tok.encode(docs[d]!.text);
    docIds[d] = ids;
    for (const id of ids) {
      if (id >= model.cfg.dVocab) throw new SelfreportError(`document ${docs[d]!.id}: token id ${id} is outside the model's vocabulary of ${model.cfg.dVocab} (is the tokenizer the model's?)`);
    }
    for (let s = 0; s < ids.length && tokens < maxTokens; s += ctx) {
      const n = Math.min(ctx, ids.length - s, maxTokens - tokens);
      windows.push({ doc: d, start: s, ids: ids.slice(s, s + n) });
      tokens += n;
    }
  }
  return { windows, docIds, tokens };
}

/**
 * Runs the windows through blocks 0..layer and calls `visit(window, acts)` per window with its
 * activations [len, d_mlp] (a view: copy what you keep).
 */
function scanWindows(model: HookedTransformer, layer: number, windows: readonly Window[], batchSize: number, label: string | null, visit: (w: Window, acts: Float32Array) => void): void {
  const hook = mlpNeuronsHook(layer);
  const M = model.cfg.dMlp;
  const bar = label === null ? null : progress(label, windows.length);
  try {
    for (let w0 = 0; w0 < windows.length; w0 += batchSize) {
      const group = windows.slice(w0, w0 + batchSize);
      const B = group.length;
      const T = Math.max(...group.map((w) => w.ids.length));
      const ids = new Int32Array(B * T); //                                    [B, T], padded with id 0
      const attentionMask = new Uint8Array(B * T); //                           [B, T]
      group.forEach((w, b) => {
        ids.set(w.ids, b * T);
        attentionMask.fill(1, b * T, b * T + w.ids.length);
      });
      const batch: TokenBatch = { ids, batch: B, len: T, attentionMask };
      let post: Tensor | null = null; //                                        [B, T, M]
      noGrad(() => model.forward(batch, { stopAtLayer: layer + 1, hooks: [[hook, (act) => void (post = act)]] }));
      const acts = (post as Tensor | null)?.data;
      if (acts === undefined) throw new Error(`neurons: hook ${hook} did not run`);
      group.forEach((w, b) => visit(w, acts.subarray(b * T * M, (b * T + w.ids.length) * M)));
      bar?.update(Math.min(w0 + B, windows.length));
    }
  } finally {
    bar?.stop();
  }
}

/** Float64 running sums for the statistics of M neurons. */
class StatsAccumulator {
  n = 0;
  readonly sum: Float64Array;
  readonly sumSq: Float64Array;
  readonly min: Float64Array;
  readonly max: Float64Array;
  readonly off: Float64Array;
  readonly above1: Float64Array;

  constructor(readonly M: number) {
    this.sum = new Float64Array(M);
    this.sumSq = new Float64Array(M);
    this.min = new Float64Array(M).fill(Infinity);
    this.max = new Float64Array(M).fill(-Infinity);
    this.off = new Float64Array(M);
    this.above1 = new Float64Array(M);
  }

  /** acts: [rows, M]. */
  add(acts: Float32Array): void {
    const M = this.M;
    const rows = acts.length / M;
    for (let r = 0; r < rows; r++) {
      const o = r * M;
      for (let i = 0; i < M; i++) {
        const a = acts[o + i]!;
        this.sum[i]! += a;
        this.sumSq[i]! += a * a;
        if (a < this.min[i]!) this.min[i] = a;
        if (a > this.max[i]!) this.max[i] = a;
        if (a <= 0) this.off[i]!++;
        if (a > 1) this.above1[i]!++;
      }
    }
    this.n += rows;
  }

  stats(): NeuronStats[] {
    const n = this.n;
    return Array.from({ length: this.M }, (_, i) => {
      const mean = this.sum[i]! / n;
      return {
        neuron: i,
        mean,
        std: Math.sqrt(Math.max(0, this.sumSq[i]! / n - mean * mean)),
        min: this.min[i]!,
        max: this.max[i]!,
        sparsity: this.off[i]! / n,
        fracAbove1: this.above1[i]! / n,
      };
    });
  }
}

interface HeapEntry {
  activation: number;
  /** Global token order (document, then position): ties prefer the earlier token. */
  order: number;
  doc: number;
  position: number;
}

/** Keeps the k largest activations seen; `sorted()` gives them largest first. */
export class TopKHeap<T extends { activation: number; order: number }> {
  private readonly heap: T[] = [];
  constructor(readonly k: number) {}

  /** "a ranks below b": smaller activation, or equal and later. */
  private below(a: T, b: T): boolean {
    return a.activation < b.activation || (a.activation === b.activation && a.order > b.order);
  }

  /** Cheap pre-check before building an entry: would an activation of this size (arriving last) enter? */
  admits(activation: number): boolean {
    return this.heap.length < this.k || activation > this.heap[0]!.activation;
  }

  push(e: T): void {
    const h = this.heap;
    if (h.length < this.k) {
      h.push(e);
      for (let c = h.length - 1; c > 0; ) {
        const p = (c - 1) >> 1;
        if (!this.below(h[c]!, h[p]!)) break;
        [h[c], h[p]] = [h[p]!, h[c]!];
        c = p;
      }
      return;
    }
    if (this.k === 0 || !this.below(h[0]!, e)) return;
    h[0] = e;
    for (let i = 0; ; ) {
      const l = 2 * i + 1;
      const r = l + 1;
      let m = i;
      if (l < h.length && this.below(h[l]!, h[m]!)) m = l;
      if (r < h.length && this.below(h[r]!, h[m]!)) m = r;
      if (m === i) break;
      [h[i], h[m]] = [h[m]!, h[i]!];
      i = m;
    }
  }

  get size(): number {
    return this.heap.length;
  }

  sorted(): T[] {
    return [...this.heap].sort((a, b) => (this.below(a, b) ? 1 : this.below(b, a) ? -1 : 0));
  }
}

export interface ScanResult {
  stats: LayerStats;
  /** neuron → its top activations, for the neurons asked for. */
  top: Map<number, TopActivation[]>;
}

/**
 * One pass over the text: statistics of every neuron of `layer`, and the top-k contexts of the
 * neurons in `topNeurons`. layerNeuronStats and topActivations are this with one half unused.
 */
export function scanLayer(
  model: HookedTransformer, tok: Tokenizer, docs: readonly NeuronDoc[], layer: number,
  opts: TopOptions & { topNeurons?: readonly number[] } = {},
): ScanResult {
  model.checkLayer(layer);
  const topNeurons = opts.topNeurons ?? [];
  for (const n of topNeurons) checkNeuron(model, layer, n);
  const maxTokens = positiveInt("maxTokens", opts.maxTokens ?? SCAN_DEFAULTS.maxTokens);
  const ctx = positiveInt("ctx", opts.ctx ?? Math.min(model.cfg.nCtx, SCAN_DEFAULTS.maxCtx));
  if (ctx > model.cfg.nCtx) throw new SelfreportError(`ctx ${ctx} is longer than the model's context n_ctx ${model.cfg.nCtx}`);
  const batch = positiveInt("batch", opts.batch ?? SCAN_DEFAULTS.batch);
  const k = positiveInt("k", opts.k ?? SCAN_DEFAULTS.k);
  const before = opts.before ?? SCAN_DEFAULTS.before;
  const after = opts.after ?? SCAN_DEFAULTS.after;
  if (docs.length === 0) throw new SelfreportError("no documents to read");

  const { windows, docIds, tokens } = makeWindows(model, tok, docs, ctx, maxTokens);
  if (tokens === 0) throw new SelfreportError(`the ${docs.length} document(s) have no tokens`);
  const M = model.cfg.dMlp;
  const acc = new StatsAccumulator(M);
  const heaps = topNeurons.map(() => new TopKHeap<HeapEntry>(k));
  // Global token order for tie-breaking: documents are read in order, so doc·2^26 + position is monotone.
  const ORDER_DOC = 2 ** 26;
  scanWindows(model, layer, windows, batch, opts.label === undefined ? "neurons" : opts.label, (w, acts) => {
    acc.add(acts);
    topNeurons.forEach((neuron, j) => {
      const heap = heaps[j]!;
      for (let t = 0; t < w.ids.length; t++) {
        const a = acts[t * M + neuron]!;
        if (!heap.admits(a)) continue;
        heap.push({ activation: a, order: w.doc * ORDER_DOC + w.start + t, doc: w.doc, position: w.start + t });
      }
    });
  });

  const top = new Map<number, TopActivation[]>();
  topNeurons.forEach((neuron, j) => {
    top.set(neuron, heaps[j]!.sorted().map((e) => describe(tok, docs[e.doc]!.id, docIds[e.doc]!, e.position, e.activation, before, after)));
  });
  const docsUsed = new Set(windows.map((w) => w.doc)).size;
  return {
    stats: { layer, hook: mlpNeuronsHook(layer), tokens, windows: windows.length, documents: docsUsed, ctx, neurons: acc.stats() },
    top,
  };
}

function describe(tok: Tokenizer, docId: string, ids: readonly number[], position: number, activation: number, before: number, after: number): TopActivation {
  const tokenId = ids[position]!;
  const token = tok.decode([tokenId]);
  const pre = tok.decode(ids.slice(Math.max(0, position - before), position));
  const post = tok.decode(ids.slice(position + 1, position + 1 + after));
  return { activation, docId, position, tokenId, token, before: pre, after: post, context: `${pre}[[${token}]]${post}` };
}

/** Statistics of every neuron of blocks.{layer}.mlp.hook_post over the documents (see the top of this file). */
export function layerNeuronStats(model: HookedTransformer, tok: Tokenizer, docs: readonly NeuronDoc[], layer: number, opts: ScanOptions = {}): LayerStats {
  return scanLayer(model, tok, docs, layer, opts).stats;
}

/** The k tokens (with context) on which neuron `neuron` of `layer` is most active, largest first. */
export function topActivations(model: HookedTransformer, tok: Tokenizer, docs: readonly NeuronDoc[], layer: number, neuron: number, opts: TopOptions = {}): TopActivation[] {
  checkNeuron(model, layer, neuron);
  return scanLayer(model, tok, docs, layer, { ...opts, topNeurons: [neuron] }).top.get(neuron)!;
}

/** The rule suggestTargets applies, for display. */
export const TARGET_RULE =
  "not dead (sparsity < 0.99: active on at least 1% of tokens), peaked (max - mean >= 2·std: its strongest activations stand out), ranked by std (most variance to report)";

/**
 * Neurons ranked for self-report suitability. A neuron qualifies when it is
 *   - not dead: sparsity < 0.99 (its GELU is on for at least 1 % of tokens), and
 *   - peaked: max − mean ≥ 2·std (its strongest activations stand out from its typical value, so
 *     there is an event to report), with std > 0;
 * qualifying neurons are ranked by std, largest first (a self-report head must predict variance;
 * a near-constant neuron is trivially "predictable" and uninteresting). Returns at most n.
 */
export function suggestTargets(stats: readonly NeuronStats[], n: number): NeuronStats[] {
  return stats
    .filter((s) => s.sparsity < 0.99 && s.std > 0 && s.max - s.mean >= 2 * s.std)
    .sort((a, b) => b.std - a.std || a.neuron - b.neuron)
    .slice(0, Math.max(0, n));
}
