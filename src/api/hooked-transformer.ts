/**
 * The public HookedTransformer: the model of src/model/transformer.ts with its tokenizer and the
 * calls TransformerLens users know, in TypeScript style (camelCase, options objects, `{ logits, cache }`
 * instead of a tuple). It is the same class underneath, so every library function that takes a
 * model (neuron statistics, datasets, analyses) takes this one.
 *
 *   const model = HookedTransformer.fromPretrained("brown-gpt2-mini");      // local files only
 *   const { logits, cache } = model.runWithCache("The cat sat", { names: ["blocks.2.mlp.hook_post"] });
 *   cache.get("post", 2).get(0, -1, 17);
 *
 * Inputs: a string, an array of strings (right-padded, with an attention mask), token ids (one
 * sequence) or rows of token ids, or a TokenBatch from toTokens. Strings are encoded without a
 * prepended <|endoftext|> by default, as the CLI and the selfreport datasets do (TransformerLens
 * prepends BOS by default: pass { prependBos: true } for that).
 */
import { Tensor, noGrad, ShapeError } from "../tensor/tensor.ts";
import { SelfreportError } from "../errors.ts";
import { HookedTransformer as Model, tokenBatch, type TokenBatch, type ForwardOptions, type ForwardResult } from "../model/transformer.ts";
import type { Hook, HookFilter } from "../model/hooks.ts";
import type { ModelConfig } from "../model/config.ts";
import { loadModel, hasTokenizerFiles } from "../model/load.ts";
import { loadTokenizer, type Tokenizer } from "../model/tokenizer.ts";
import type { WeightProcessing } from "../model/process.ts";
import { generate as generateText, GENERATE_DEFAULTS, type StopReason } from "../lm/generate.ts";
import { ActivationCache } from "./activation-cache.ts";

/** What the model runs on: text, texts, token ids, rows of token ids, or a TokenBatch. */
export type ModelInput = string | readonly string[] | readonly number[] | readonly (readonly number[])[] | TokenBatch;

export interface FromPretrainedOptions {
  /** "tl" (default): TransformerLens's processing (LayerNorm folded, writing weights centred …); "raw": the file as it is. */
  weights?: WeightProcessing;
}

export interface ToTokensOptions {
  /** Put <|endoftext|> before each text, as TransformerLens's prepend_bos. Default false (as the CLI and the datasets). */
  prependBos?: boolean;
}

export interface RunOptions extends ToTokensOptions {
  /** Run blocks 0..stopAtLayer-1 only: no logits, the residual stream there is `resid`. */
  stopAtLayer?: number;
}

export interface RunWithCacheOptions extends RunOptions {
  /** Hook names to cache, or a predicate on names; default every hook point (TransformerLens's default). */
  names?: readonly string[] | ((name: string) => boolean);
  /** Hooks that run during the same pass (e.g. an ablation), before the cache stores each activation. */
  fwdHooks?: readonly Hook[];
}

export interface RunWithHooksOptions extends RunOptions {
  /** [hook name or predicate, fn] pairs, as TransformerLens's fwd_hooks. */
  fwdHooks: readonly Hook[];
}

export interface ModelGenerateOptions extends ToTokensOptions {
  /** Tokens to add at most (default 50). */
  maxNewTokens?: number;
  /** 0 = greedy; default 0.8. */
  temperature?: number;
  /** Sample among the k most likely tokens (0 = all); default 40. */
  topK?: number;
  /** Seed of the sampler (default 0): a seed always gives the same text. */
  seed?: number;
  /** Hooks on the blocks' hook points, run at every step on the new positions ([1, T, ...]); hook_embed and ln_final hooks do not run here. */
  fwdHooks?: readonly Hook[];
}

export interface ModelGenerateResult {
  /** The prompt and its continuation. */
  text: string;
  /** The continuation only. */
  continuation: string;
  ids: number[];
  newIds: number[];
  stopReason: StopReason;
}

export interface RunResult {
  /** [batch, pos, d_vocab]; null with stopAtLayer. */
  logits: Tensor | null;
  /** The residual stream where the pass stopped: [batch, pos, d_model]. */
  resid: Tensor;
  /** The token batch that was run (ids, attention mask). */
  tokens: TokenBatch;
}

/**
 * One block's weights under TransformerLens's attribute names: model.blocks[2].mlp.W_in. RMSNorm has
 * no `b`; with grouped-query attention W_K/W_V/b_K/b_V are repeated per query head and the stored
 * per-K/V-head tensors are `_W_K`, `_W_V`, `_b_K`, `_b_V`; a gated MLP has `W_gate`.
 */
export interface BlockWeights {
  ln1: { w: Tensor; b?: Tensor };
  attn: { W_Q: Tensor; W_K: Tensor; W_V: Tensor; W_O: Tensor; b_Q: Tensor; b_K: Tensor; b_V: Tensor; b_O: Tensor; _W_K?: Tensor; _W_V?: Tensor; _b_K?: Tensor; _b_V?: Tensor };
  ln2: { w: Tensor; b?: Tensor };
  mlp: { W_in: Tensor; b_in: Tensor; W_out: Tensor; b_out: Tensor; W_gate?: Tensor };
}

export class HookedTransformer extends Model {
  /** Null when the model directory had no tokenizer files: then only token-id inputs work. */
  readonly tokenizer: Tokenizer | null;
  /** The directory the model was loaded from (null for a model built in memory). */
  readonly dir: string | null;

  constructor(cfg: ModelConfig, params: Map<string, Tensor>, opts: { tokenizer?: Tokenizer | null; dir?: string | null } = {}) {
    super(cfg, params);
    this.tokenizer = opts.tokenizer ?? null;
    this.dir = opts.dir ?? null;
  }

  /**
   * Loads a model from a directory or a name (brown-gpt2-mini, gpt2, org/name in the local Hugging
   * Face cache), exactly as the CLI's --model and --weights do. Never downloads.
   */
  static fromPretrained(nameOrDir: string, opts: FromPretrainedOptions = {}): HookedTransformer {
    const { model, dir } = loadModel(nameOrDir, { weights: opts.weights ?? "tl" });
    return new HookedTransformer(model.cfg, new Map(model.params), { tokenizer: hasTokenizerFiles(dir) ? loadTokenizer(dir) : null, dir });
  }

  /** The same weights (shared, not copied) with a tokenizer: for a model from HookedTransformer.init or training. */
  static fromModel(model: Model, tokenizer: Tokenizer | null = null): HookedTransformer {
    return new HookedTransformer(model.cfg, new Map(model.params), { tokenizer, dir: model instanceof HookedTransformer ? model.dir : null });
  }

  // -------------------------------------------------------------------------------------------
  // Tokens

  private tok(what: string): Tokenizer {
    if (this.tokenizer === null) throw new SelfreportError(`${what} needs a tokenizer, and this model has none (its directory has no tokenizer.json or vocab.json + merges.txt); give token ids instead`);
    return this.tokenizer;
  }

  /** Texts → a right-padded TokenBatch [batch, pos] with its attention mask (ids as Int32Array). */
  toTokens(input: string | readonly string[], opts: ToTokensOptions = {}): TokenBatch & { lengths: number[] } {
    const texts = typeof input === "string" ? [input] : input;
    if (!Array.isArray(texts) || texts.some((t) => typeof t !== "string")) throw new SelfreportError(`toTokens: expected a string or an array of strings`);
    const tok = this.tok("toTokens");
    const rows = texts.map((t, i) => {
      const ids = [...(opts.prependBos === true ? [tok.bosId ?? tok.eosId] : []), ...tok.encode(t)];
      if (ids.length === 0) throw new SelfreportError(`toTokens: text ${i + 1} of ${texts.length} is empty: there is nothing to run`);
      if (ids.length > this.cfg.nCtx) throw new SelfreportError(`toTokens: text ${i + 1} has ${ids.length} tokens, longer than the model's context n_ctx ${this.cfg.nCtx}`);
      return ids;
    });
    return tokenBatch(rows, tok.eosId);
  }

  /** Each token of a text (or of token ids) as its string: toStrTokens("The cat") → ["The", " cat"]. */
  toStrTokens(input: string | ArrayLike<number>, opts: ToTokensOptions = {}): string[] {
    const tok = this.tok("toStrTokens");
    const ids = typeof input === "string" ? [...(opts.prependBos === true ? [tok.bosId ?? tok.eosId] : []), ...tok.encode(input)] : Array.from(input);
    return ids.map((id) => tok.decode([id]));
  }

  /** The id of a string that is exactly one token (" cat"); throws naming the tokens otherwise. */
  toSingleToken(text: string): number {
    const ids = this.tok("toSingleToken").encode(text);
    if (ids.length !== 1) throw new SelfreportError(`toSingleToken: ${JSON.stringify(text)} is ${ids.length} tokens (${JSON.stringify(this.toStrTokens(ids))}), not one`);
    return ids[0]!;
  }

  /** Token ids → text; a TokenBatch → one text per row (its real tokens). Without an argument, a description of the model. */
  override toString(): string;
  override toString(tokens: ArrayLike<number> | number): string;
  override toString(tokens: TokenBatch): string[];
  override toString(tokens?: ArrayLike<number> | number | TokenBatch): string | string[] {
    if (tokens === undefined) {
      const c = this.cfg;
      return `HookedTransformer(${this.dir ?? "in memory"}: ${c.nLayers} layers, d_model ${c.dModel}, ${c.nHeads} heads, d_mlp ${c.dMlp}, n_ctx ${c.nCtx}, d_vocab ${c.dVocab})`;
    }
    const tok = this.tok("toString");
    if (typeof tokens === "number") return tok.decode([tokens]);
    if (isTokenBatch(tokens)) {
      return Array.from({ length: tokens.batch }, (_, b) => {
        const row = Array.from(tokens.ids.subarray(b * tokens.len, (b + 1) * tokens.len));
        const mask = tokens.attentionMask;
        return tok.decode(mask === undefined ? row : row.filter((_, t) => mask[b * tokens.len + t] === 1));
      });
    }
    return tok.decode(tokens);
  }

  /** Any ModelInput as a TokenBatch. */
  tokensOf(input: ModelInput, opts: ToTokensOptions = {}): TokenBatch {
    if (typeof input === "string") return this.toTokens(input, opts);
    if (isTokenBatch(input)) return input;
    if (!Array.isArray(input) || input.length === 0) throw new SelfreportError(`model input must be a string, strings, token ids, rows of token ids or a TokenBatch; got ${Array.isArray(input) ? "an empty array" : typeof input}`);
    if (input.every((x) => typeof x === "string")) return this.toTokens(input as readonly string[], opts);
    const rows = input.every((x) => typeof x === "number") ? [input as readonly number[]] : (input as readonly (readonly number[])[]);
    rows.forEach((r, i) => {
      if (!Array.isArray(r) || r.some((x) => typeof x !== "number")) throw new SelfreportError(`model input row ${i + 1} is not an array of token ids`);
      if (r.length === 0) throw new SelfreportError(`model input row ${i + 1} has no tokens`);
    });
    return tokenBatch(rows, this.tokenizer?.eosId ?? 50256);
  }

  // -------------------------------------------------------------------------------------------
  // Running

  /** Logits [batch, pos, d_vocab] of an input (TransformerLens's model(input)). */
  run(input: ModelInput, opts: RunOptions = {}): RunResult {
    const tokens = this.tokensOf(input, opts);
    const r = noGrad(() => this.forward(tokens, forwardOptions(opts)));
    return { ...r, tokens };
  }

  /**
   * A forward pass that stores activations: `{ logits, resid, tokens, cache }`. `names` limits what
   * is stored (default every hook point). Runs without gradients, as TransformerLens's cache is detached.
   */
  override runWithCache(tokens: TokenBatch, names: readonly string[] | ((name: string) => boolean), opts?: ForwardOptions): ForwardResult & { cache: Map<string, Tensor> };
  override runWithCache(input: ModelInput, opts?: RunWithCacheOptions): RunResult & { cache: ActivationCache };
  override runWithCache(
    input: ModelInput,
    second?: RunWithCacheOptions | readonly string[] | ((name: string) => boolean),
    third?: ForwardOptions,
  ): (ForwardResult & { cache: Map<string, Tensor> }) | (RunResult & { cache: ActivationCache }) {
    if (Array.isArray(second) || typeof second === "function") return super.runWithCache(input as TokenBatch, second as readonly string[], third);
    const opts = (second ?? {}) as RunWithCacheOptions;
    const tokens = this.tokensOf(input, opts);
    const names: readonly string[] | ((name: string) => boolean) = opts.names ?? (() => true);
    const r = noGrad(() => super.runWithCache(tokens, names, { ...forwardOptions(opts), hooks: opts.fwdHooks ?? [] }));
    const single = this.tokenizer === null ? null : (s: string) => this.toSingleToken(s);
    return { logits: r.logits, resid: r.resid, tokens, cache: new ActivationCache(r.cache, this, single) };
  }

  /** A forward pass with hooks that read or replace activations (TransformerLens's fwd_hooks): `{ logits, resid, tokens }`. */
  override runWithHooks(tokens: TokenBatch, hooks: readonly Hook[], opts?: ForwardOptions): ForwardResult;
  override runWithHooks(input: ModelInput, opts: RunWithHooksOptions): RunResult;
  override runWithHooks(input: ModelInput, second: RunWithHooksOptions | readonly Hook[], third?: ForwardOptions): ForwardResult | RunResult {
    if (Array.isArray(second)) return super.runWithHooks(input as TokenBatch, second as readonly Hook[], third);
    const opts = second as RunWithHooksOptions;
    if (opts === undefined || !Array.isArray(opts.fwdHooks)) throw new SelfreportError(`runWithHooks(input, { fwdHooks }): fwdHooks must be an array of [hook name, fn] pairs`);
    const tokens = this.tokensOf(input, opts);
    const r = noGrad(() => super.runWithHooks(tokens, opts.fwdHooks, forwardOptions(opts)));
    return { ...r, tokens };
  }

  /** Continues a text with the KV-cached sampler of `selfreport lm generate`, through the same blocks and hooks as runWithHooks. */
  generate(prompt: string, opts: ModelGenerateOptions = {}): ModelGenerateResult {
    const tok = this.tok("generate");
    if (opts.prependBos === true) throw new SelfreportError("generate: prependBos is not supported; put <|endoftext|> in the prompt if you need it");
    const r = noGrad(() => generateText(this, tok, {
      prompt,
      maxNewTokens: opts.maxNewTokens ?? GENERATE_DEFAULTS.maxNewTokens,
      temperature: opts.temperature ?? GENERATE_DEFAULTS.temperature,
      topK: opts.topK ?? GENERATE_DEFAULTS.topK,
      seed: opts.seed ?? GENERATE_DEFAULTS.seed,
      hooks: opts.fwdHooks ?? [],
    }));
    return { text: r.text, continuation: r.continuation, ids: r.ids, newIds: r.newIds, stopReason: r.stopReason };
  }

  // -------------------------------------------------------------------------------------------
  // Weights under TransformerLens names. With a layer: that layer's tensor; without: all layers
  // stacked on a new first axis, as TransformerLens's model.W_in is [n_layers, d_model, d_mlp].

  override W_Q(l?: number): Tensor { return l === undefined ? this.stacked("attn.W_Q") : super.W_Q(l); } //    [H, C, Dh]
  override W_K(l?: number): Tensor { return l === undefined ? this.stackedOf((i) => super.W_K(i)) : super.W_K(l); } // [H, C, Dh]
  override W_V(l?: number): Tensor { return l === undefined ? this.stackedOf((i) => super.W_V(i)) : super.W_V(l); } // [H, C, Dh]
  override W_O(l?: number): Tensor { return l === undefined ? this.stacked("attn.W_O") : super.W_O(l); } //    [H, Dh, C]
  override b_Q(l?: number): Tensor { return l === undefined ? this.stacked("attn.b_Q") : super.b_Q(l); } //    [H, Dh]
  override b_K(l?: number): Tensor { return l === undefined ? this.stackedOf((i) => super.b_K(i)) : super.b_K(l); } // [H, Dh]
  override b_V(l?: number): Tensor { return l === undefined ? this.stackedOf((i) => super.b_V(i)) : super.b_V(l); } // [H, Dh]
  /** The gate of a gated MLP (Llama family): [C, M], or [nLayers, C, M] without a layer. */
  override W_gate(l?: number): Tensor { return l === undefined ? this.stacked("mlp.W_gate") : super.W_gate(l); }
  override b_O(l?: number): Tensor { return l === undefined ? this.stacked("attn.b_O") : super.b_O(l); } //    [C]
  override W_in(l?: number): Tensor { return l === undefined ? this.stacked("mlp.W_in") : super.W_in(l); } //  [C, M]
  override b_in(l?: number): Tensor { return l === undefined ? this.stacked("mlp.b_in") : super.b_in(l); } //  [M]
  override W_out(l?: number): Tensor { return l === undefined ? this.stacked("mlp.W_out") : super.W_out(l); } // [M, C]
  override b_out(l?: number): Tensor { return l === undefined ? this.stacked("mlp.b_out") : super.b_out(l); } // [C]

  /** Per block, its weights by TransformerLens attribute path: `model.blocks[2].mlp.W_out` (the model's own tensors). */
  get blocks(): BlockWeights[] {
    return Array.from({ length: this.cfg.nLayers }, (_, l) => {
      const p = (n: string): Tensor => this.p(`blocks.${l}.${n}`);
      const opt = (n: string): Record<string, Tensor> => (this.params.has(`blocks.${l}.${n}`) ? { [n.slice(n.indexOf(".") + 1)]: p(n) } : {});
      if (!this.spec.gqa) {
        return {
          ln1: { w: p("ln1.w"), ...opt("ln1.b") },
          attn: { W_Q: p("attn.W_Q"), W_K: p("attn.W_K"), W_V: p("attn.W_V"), W_O: p("attn.W_O"), b_Q: p("attn.b_Q"), b_K: p("attn.b_K"), b_V: p("attn.b_V"), b_O: p("attn.b_O") },
          ln2: { w: p("ln2.w"), ...opt("ln2.b") },
          mlp: { W_in: p("mlp.W_in"), b_in: p("mlp.b_in"), W_out: p("mlp.W_out"), b_out: p("mlp.b_out"), ...opt("mlp.W_gate") },
        };
      }
      return {
        ln1: { w: p("ln1.w"), ...opt("ln1.b") },
        attn: {
          W_Q: p("attn.W_Q"), W_K: super.W_K(l), W_V: super.W_V(l), W_O: p("attn.W_O"), b_Q: p("attn.b_Q"), b_K: super.b_K(l), b_V: super.b_V(l), b_O: p("attn.b_O"),
          _W_K: p("attn._W_K"), _W_V: p("attn._W_V"), _b_K: p("attn._b_K"), _b_V: p("attn._b_V"),
        },
        ln2: { w: p("ln2.w"), ...opt("ln2.b") },
        mlp: { W_in: p("mlp.W_in"), b_in: p("mlp.b_in"), W_out: p("mlp.W_out"), b_out: p("mlp.b_out"), ...opt("mlp.W_gate") },
      };
    });
  }

  /** Every parameter by its TransformerLens name (blocks.0.mlp.W_in …), as TransformerLens's state_dict(). */
  stateDict(): Map<string, Tensor> {
    return new Map(this.params);
  }

  /** blocks.{l}.{name} of every layer stacked: [nLayers, ...]. A copy. */
  private stacked(name: string): Tensor {
    return this.stackedOf((l) => this.p(`blocks.${l}.${name}`));
  }

  /** One tensor per layer stacked: [nLayers, ...]. A copy. */
  private stackedOf(get: (l: number) => Tensor): Tensor {
    const parts = Array.from({ length: this.cfg.nLayers }, (_, l) => get(l));
    const size = parts[0]!.size;
    const out = new Float32Array(parts.length * size);
    parts.forEach((t, l) => out.set(t.data, l * size));
    return new Tensor(out, [parts.length, ...parts[0]!.shape]);
  }
}

function isTokenBatch(x: unknown): x is TokenBatch {
  return typeof x === "object" && x !== null && (x as TokenBatch).ids instanceof Int32Array && typeof (x as TokenBatch).batch === "number" && typeof (x as TokenBatch).len === "number";
}

function forwardOptions(o: RunOptions): ForwardOptions {
  if (o.stopAtLayer !== undefined && !Number.isInteger(o.stopAtLayer)) throw new ShapeError(`stopAtLayer must be an integer, got ${o.stopAtLayer}`);
  return o.stopAtLayer === undefined ? {} : { stopAtLayer: o.stopAtLayer };
}

export type { Hook, HookFilter };
