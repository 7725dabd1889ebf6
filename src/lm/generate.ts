/**
 * Text generation with a key/value cache.
 *
 * The full forward pass (model.forward) recomputes every position at every step. A KV cache keeps,
 * per layer, the keys and values of the positions seen so far ([pos, head, d_head]); a step then runs
 * only the new tokens through the blocks, attending from the new queries to all cached keys. Causal
 * attention makes this exact: position p never sees positions after p, so its keys and values do not
 * change when tokens are appended. The test checks the cached logits against the full forward.
 *
 * Glossary: T new tokens in a step, P positions cached before it, C d_model, H heads, Dh d_head,
 * M d_mlp, V d_vocab.
 *
 * Sampling: temperature 0 is greedy (argmax, lowest id on ties); otherwise the logits are divided by
 * the temperature, restricted to the topK largest (topK 0 = the whole vocabulary), softmaxed, and one
 * token drawn with the engine's seeded Rng, so a seed always gives the same continuation.
 * Generation stops after maxNewTokens, at <|endoftext|> (not included in the output), or when the
 * sequence fills the model's context n_ctx (stopReason says which).
 */
import { Tensor, Rng, noGrad, getBackend } from "../tensor/index.ts";
import type { HookedTransformer, LayerWeights, RowsContext } from "../model/transformer.ts";
import { HookRunner, type Hook } from "../model/hooks.ts";
import type { Tokenizer } from "../model/tokenizer.ts";
import { SelfreportError } from "../errors.ts";

/**
 * An incremental forward pass over one sequence. `append(ids)` runs the new tokens at positions
 * length..length+T-1 through the model's own block (HookedTransformer.blockRows, attending to the
 * cached keys) and returns their logits [T, V] (or only the last row's [1, V]). Hooks given here run
 * at every step, on the new positions only ([1, T, ...]).
 */
export class KVCache {
  readonly model: HookedTransformer;
  private readonly layers: LayerWeights[];
  private readonly hooks: HookRunner;
  /** keys[l], values[l]: [capacity, Hkv, Dh], filled for positions 0..length-1 (keys rotated, for rotary models). */
  private keys: Float32Array[];
  private values: Float32Array[];
  /** Positions the buffers hold; doubled as needed up to n_ctx (a long-context model costs nothing until used). */
  private capacity: number;
  private pos = 0;

  constructor(model: HookedTransformer, opts: { hooks?: readonly Hook[] } = {}) {
    this.model = model;
    const cfg = model.cfg;
    this.layers = noGrad(() => Array.from({ length: cfg.nLayers }, (_, l) => model.layerWeights(l)));
    this.hooks = new HookRunner(cfg, opts.hooks ?? []);
    this.capacity = Math.min(cfg.nCtx, 1024);
    const size = this.capacity * model.spec.nKvHeads * cfg.dHead;
    this.keys = Array.from({ length: cfg.nLayers }, () => new Float32Array(size));
    this.values = Array.from({ length: cfg.nLayers }, () => new Float32Array(size));
  }

  /** Grows the buffers to hold n positions. */
  private reserve(n: number): void {
    if (n <= this.capacity) return;
    const cap = Math.min(this.model.cfg.nCtx, Math.max(n, 2 * this.capacity));
    const size = cap * this.model.spec.nKvHeads * this.model.cfg.dHead;
    const grow = (a: Float32Array): Float32Array => {
      const b = new Float32Array(size);
      b.set(a);
      return b;
    };
    this.keys = this.keys.map(grow);
    this.values = this.values.map(grow);
    this.capacity = cap;
  }

  /** Positions cached so far. */
  get length(): number {
    return this.pos;
  }

  /** Forgets every cached position. */
  reset(): void {
    this.pos = 0;
  }

  /** Runs `ids` at the next positions; returns logits [T, V], or [1, V] for the last one with lastOnly. */
  append(ids: ArrayLike<number>, opts: { lastOnly?: boolean } = {}): Tensor {
    const cfg = this.model.cfg;
    const T = ids.length;
    const P = this.pos;
    if (T === 0) throw new SelfreportError("KVCache.append: no tokens to append");
    if (P + T > cfg.nCtx) throw new SelfreportError(`KVCache.append: ${P} cached + ${T} new tokens exceed the model's context n_ctx ${cfg.nCtx}`);
    const { dModel: C } = cfg;
    this.reserve(P + T);
    return noGrad(() => {
      // Token (+ position, unless rotary) embeddings.
      const x0 = new Float32Array(T * C); //                                  [T, C]
      const WE = this.model.W_E.data;
      const Wpos = this.model.spec.positionalEmbeddingType === "standard" ? this.model.W_pos.data : null;
      for (let t = 0; t < T; t++) {
        const id = ids[t]!;
        if (!(Number.isInteger(id) && id >= 0 && id < cfg.dVocab)) throw new SelfreportError(`token id ${id} is out of range for a vocabulary of ${cfg.dVocab}`);
        if (Wpos === null) for (let c = 0; c < C; c++) x0[t * C + c] = WE[id * C + c]!;
        else for (let c = 0; c < C; c++) x0[t * C + c] = WE[id * C + c]! + Wpos[(P + t) * C + c]!;
      }
      let resid = new Tensor(x0, [T, C]); //                                   [T, C]
      const rows: RowsContext = {
        pastK: new Float32Array(0), pastV: new Float32Array(0), stride: this.capacity,
        rowSeq: new Int32Array(T), rowPast: new Int32Array(T).fill(P), rowGroup: new Int32Array(T), hookShape: [1, T],
      };
      const HD = this.model.spec.nKvHeads * cfg.dHead;
      for (let l = 0; l < cfg.nLayers; l++) {
        const out = this.model.blockRows(l, resid, { ...rows, pastK: this.keys[l]!, pastV: this.values[l]! }, { weights: this.layers[l]!, hooks: this.hooks });
        this.keys[l]!.set(out.k, P * HD);
        this.values[l]!.set(out.v, P * HD);
        resid = out.resid;
      }
      this.pos = P + T;
      const last = opts.lastOnly === true ? new Tensor(resid.data.slice((T - 1) * C), [1, C]) : resid;
      const x = this.model.lnFinal(last); //                                   [T or 1, C]
      return this.model.unembed(x); //                                         [T or 1, V]
    });
  }
}

// ---------------------------------------------------------------------------------------------
// Sampling

export interface SamplingOptions {
  /** 0 = greedy; otherwise logits are divided by it before the softmax. Default 0.8. */
  temperature?: number;
  /** Sample among the topK most likely tokens (0 = all). Default 40. */
  topK?: number;
  /** Seed of the sampling Rng. Default 0. */
  seed?: number;
}

export interface GenerateIdsOptions extends SamplingOptions {
  /** Tokens to add at most. Default 50. */
  maxNewTokens?: number;
  /** Stop when this token is drawn (it is not included in the output); null = never. */
  eosId?: number | null;
  /** Hooks on the blocks' hook points, run at every step on the new positions ([1, T, ...]); not on hook_embed or ln_final. */
  hooks?: readonly Hook[];
}

export interface GenerateOptions extends SamplingOptions {
  prompt: string;
  maxNewTokens?: number;
  /** As GenerateIdsOptions.hooks. */
  hooks?: readonly Hook[];
}

export type StopReason = "max_new_tokens" | "eos" | "n_ctx";

export interface GenerateIdsResult {
  /** Prompt ids followed by the new ones. */
  ids: number[];
  newIds: number[];
  stopReason: StopReason;
}

export interface GenerateResult extends GenerateIdsResult {
  /** The prompt and its continuation, decoded. */
  text: string;
  /** The continuation only. */
  continuation: string;
}

export const GENERATE_DEFAULTS = { maxNewTokens: 50, temperature: 0.8, topK: 40, seed: 0 };

function checkSampling(o: Required<SamplingOptions>, maxNewTokens: number): void {
  if (!Number.isInteger(maxNewTokens) || maxNewTokens < 0) throw new SelfreportError(`max new tokens must be a non-negative integer, got ${maxNewTokens}`);
  if (!(Number.isFinite(o.temperature) && o.temperature >= 0)) throw new SelfreportError(`temperature must be a finite number ≥ 0 (0 = greedy), got ${o.temperature}`);
  if (!Number.isInteger(o.topK) || o.topK < 0) throw new SelfreportError(`top-k must be a non-negative integer (0 = no limit), got ${o.topK}`);
  if (!Number.isFinite(o.seed)) throw new SelfreportError(`seed must be a finite number, got ${o.seed}`);
}

/** Index of the largest logit (the lowest index on ties). */
export function argmax(logits: Float32Array): number {
  let best = 0;
  for (let i = 1; i < logits.length; i++) if (logits[i]! > logits[best]!) best = i;
  return best;
}

/**
 * The k largest entries' indices, largest first (ties: lower index first), with a bounded
 * min-heap: O(V log k) instead of sorting the vocabulary.
 */
export function topKIndices(values: Float32Array, k: number): number[] {
  const n = Math.min(k, values.length);
  // "a ranks below b": smaller value, or equal value and larger index.
  const below = (a: number, b: number): boolean => values[a]! < values[b]! || (values[a] === values[b] && a > b);
  const heap: number[] = []; // heap[0] ranks lowest
  const siftDown = (i: number): void => {
    for (;;) {
      const l = 2 * i + 1;
      const r = l + 1;
      let m = i;
      if (l < heap.length && below(heap[l]!, heap[m]!)) m = l;
      if (r < heap.length && below(heap[r]!, heap[m]!)) m = r;
      if (m === i) return;
      [heap[i], heap[m]] = [heap[m]!, heap[i]!];
      i = m;
    }
  };
  for (let i = 0; i < values.length; i++) {
    if (heap.length < n) {
      heap.push(i);
      for (let c = heap.length - 1; c > 0; ) {
        const parent = (c - 1) >> 1;
        if (!below(heap[c]!, heap[parent]!)) break;
        [heap[c], heap[parent]] = [heap[parent]!, heap[c]!];
        c = parent;
      }
    } else if (n > 0 && below(heap[0]!, i)) {
      heap[0] = i;
      siftDown(0);
    }
  }
  return heap.sort((a, b) => (below(a, b) ? 1 : below(b, a) ? -1 : 0));
}

/** Draws the next token from one row of logits [V] (see the top of this file). */
export function sampleToken(logits: Float32Array, temperature: number, topK: number, rng: Rng): number {
  if (temperature === 0) return argmax(logits);
  const candidates = topK > 0 && topK < logits.length ? topKIndices(logits, topK) : Array.from(logits.keys());
  const scaled = Float32Array.from(candidates, (i) => logits[i]! / temperature);
  getBackend().softmaxRows(scaled, 1, scaled.length, scaled);
  const u = rng.uniform();
  let acc = 0;
  for (let j = 0; j < candidates.length; j++) {
    acc += scaled[j]!;
    if (u < acc) return candidates[j]!;
  }
  // Rounding left u above the total: the last candidate with any probability.
  for (let j = candidates.length - 1; j >= 0; j--) if (scaled[j]! > 0) return candidates[j]!;
  return candidates[0]!;
}

// ---------------------------------------------------------------------------------------------
// Generation

/** Continues a prompt given as token ids (see the top of this file). */
export function generateIds(model: HookedTransformer, promptIds: readonly number[], opts: GenerateIdsOptions = {}): GenerateIdsResult {
  const maxNewTokens = opts.maxNewTokens ?? GENERATE_DEFAULTS.maxNewTokens;
  const sampling = {
    temperature: opts.temperature ?? GENERATE_DEFAULTS.temperature,
    topK: opts.topK ?? GENERATE_DEFAULTS.topK,
    seed: opts.seed ?? GENERATE_DEFAULTS.seed,
  };
  checkSampling(sampling, maxNewTokens);
  const nCtx = model.cfg.nCtx;
  if (promptIds.length === 0) throw new SelfreportError("the prompt is empty: give at least one token to continue");
  if (promptIds.length > nCtx) throw new SelfreportError(`the prompt has ${promptIds.length} tokens, longer than the model's context n_ctx ${nCtx}`);
  const eosId = opts.eosId ?? null;
  const rng = new Rng(sampling.seed);
  const ids = [...promptIds];
  const newIds: number[] = [];
  if (ids.length >= nCtx) return { ids, newIds, stopReason: "n_ctx" };
  if (maxNewTokens === 0) return { ids, newIds, stopReason: "max_new_tokens" };

  const cache = new KVCache(model, { hooks: opts.hooks ?? [] });
  let logits = cache.append(ids, { lastOnly: true }).data; //                  [V]
  for (;;) {
    const next = sampleToken(logits, sampling.temperature, sampling.topK, rng);
    if (next === eosId) return { ids, newIds, stopReason: "eos" };
    ids.push(next);
    newIds.push(next);
    if (newIds.length >= maxNewTokens) return { ids, newIds, stopReason: "max_new_tokens" };
    if (ids.length >= nCtx) return { ids, newIds, stopReason: "n_ctx" };
    logits = cache.append([next]).data;
  }
}

/** Continues a text prompt: encodes it, generates with a KV cache, decodes. */
export function generate(model: HookedTransformer, tokenizer: Tokenizer, opts: GenerateOptions): GenerateResult {
  if (opts.prompt.length === 0) throw new SelfreportError("the prompt is empty: give some text to continue");
  const r = generateIds(model, tokenizer.encode(opts.prompt), { ...opts, eosId: tokenizer.eosId });
  return { ...r, text: tokenizer.decode(r.ids), continuation: tokenizer.decode(r.newIds) };
}
