/**
 * HookedTransformer: GPT-2, the Llama family (Llama, Mistral, Qwen2) and GPT-NeoX (Pythia) in one
 * readable file, with TransformerLens's parameter names, shapes and hook points. One block serves
 * every family; the config's TransformerLens fields (see blockSpec) choose LayerNorm or RMSNorm,
 * learned or rotary positions, grouped-query attention, a plain or gated MLP, sequential or parallel
 * attention + MLP.
 *
 * Glossary: B batch, T positions, C d_model, H heads, Hkv key/value heads, Dh d_head, M d_mlp, V d_vocab.
 *
 * Parameters live in one Map under TransformerLens names and shapes (weights right-multiplied):
 *   embed.W_E [V, C]  pos_embed.W_pos [nCtx, C]
 *   blocks.{l}.ln1.w/b [C]  attn.W_Q/W_K/W_V [H, C, Dh]  attn.b_Q/b_K/b_V [H, Dh]  attn.W_O [H, Dh, C]  attn.b_O [C]
 *   blocks.{l}.ln2.w/b [C]  mlp.W_in [C, M]  mlp.b_in [M]  mlp.W_out [M, C]  mlp.b_out [C]
 *   ln_final.w/b [C]  unembed.W_U [C, V] (absent when tied: the unembedding is W_Eᵀ)  unembed.b_U [V]
 * Other families, as TransformerLens: RMSNorm has `.w` only; rotary models have no W_pos; with
 * grouped-query attention K/V are stored per K/V head as attn._W_K/_W_V [Hkv, C, Dh] and _b_K/_b_V
 * [Hkv, Dh] (W_K(l)/W_V(l) give them repeated to [H, C, Dh]); a gated MLP adds mlp.W_gate [C, M].
 */
import {
  Tensor, Rng, noGrad, zeros, fillNormal, add, linear, matmul, reshape, permute, slice, embedding,
  lnScale, lnNormalize, affineLast, layerNorm, geluNew, geluNewInPlace, addInPlace, isGradEnabled, softmax, attnScores, attnApply, causalAttention, unembedCrossEntropy, ShapeError,
  rmsScale, divByScale, silu, siluMul, geluExact, rotary, RotaryTable, mul, indexSelect,
} from "../tensor/index.ts";
import { SelfreportError } from "../errors.ts";
import { blockSpec, type BlockSpec, type ModelConfig } from "./config.ts";
import { HookRunner, hookNames, assertHookName, type Hook, type HookFilter } from "./hooks.ts";

/** Right-padded token ids [batch, len] with an optional attention mask (1 = real token). */
export interface TokenBatch {
  ids: Int32Array;
  batch: number;
  len: number;
  attentionMask?: Uint8Array;
}

export interface ForwardOptions {
  hooks?: readonly Hook[];
  /**
   * Run blocks 0..stopAtLayer-1 only and return the residual stream, as TransformerLens's
   * stop_at_layer. Given at all (even = n_layers), the forward computes no logits: ln_final and the
   * [B, T, d_vocab] unembedding are skipped, which is most of the cost of a small model's forward.
   */
  stopAtLayer?: number;
  /** Compute logits (default true). Without them the forward ends at the final residual stream. */
  logits?: boolean;
}

export interface ForwardResult {
  /** [B, T, V], or null when not computed. */
  logits: Tensor | null;
  /** The residual stream where the forward stopped: [B, T, C]. */
  resid: Tensor;
}

/** One layer's attention weights laid out for the block: the heads side by side (GPT-2's c_attn order). */
export interface LayerWeights {
  WQ: Tensor; WK: Tensor; WV: Tensor; // [C, H·Dh] (WK, WV: [C, Hkv·Dh]): the columns of head h are h·Dh..(h+1)·Dh-1
  bQ: Tensor; bK: Tensor; bV: Tensor; // [H·Dh] ([Hkv·Dh])
  WO: Tensor; //                         [H·Dh, C]
}

/**
 * Rows run through a block against cached keys and values instead of a whole sequence: the new
 * tokens of a generation step (attending to the KV cache) or the patched read positions of
 * activation patching (attending to the clean pass's keys). Row r stands at some position of cached
 * sequence rowSeq[r] and attends to that sequence's first rowPast[r] cached keys, then to the new
 * keys of the rows of its group (rowGroup) up to itself, in row order. For rotary models a row's
 * position is rowPast[r] plus its index among its group's rows, and the cached keys are the rotated
 * ones (attn.hook_rot_k, see HookedTransformer.keyHook).
 */
export interface RowsContext {
  /** [S, stride, Hkv, Dh] cached keys and values of S sequences. */
  pastK: Float32Array;
  pastV: Float32Array;
  stride: number;
  rowSeq: Int32Array;
  rowPast: Int32Array;
  rowGroup: Int32Array;
  /** How hooks see the R rows: [batch, pos] with batch·pos = R ([1, T] for a generation step, [R, 1] for patched rows). */
  hookShape: readonly [number, number];
}

/** What blockRows returns: resid_post of the rows [R, C] and their new keys (rotated, for rotary models) and values [R, Hkv·Dh]. */
export interface RowsResult {
  resid: Tensor;
  k: Float32Array;
  v: Float32Array;
}

type Attention = { kind: "causal"; keyMask: Uint8Array | null } | { kind: "rows"; ctx: RowsContext };

/** Names and shapes of every parameter, in a fixed order. */
export function paramShapes(cfg: ModelConfig): Array<[string, number[]]> {
  const { dModel: C, nHeads: H, dHead: Dh, dMlp: M, dVocab: V, nCtx } = cfg;
  const spec = blockSpec(cfg);
  const Hkv = spec.nKvHeads;
  const kv = spec.gqa ? "_" : ""; // TransformerLens's GQA names: _W_K, _W_V, _b_K, _b_V
  const ln = (prefix: string): Array<[string, number[]]> => (spec.normalizationType === "RMS" ? [[`${prefix}.w`, [C]]] : [[`${prefix}.w`, [C]], [`${prefix}.b`, [C]]]);
  const shapes: Array<[string, number[]]> = [["embed.W_E", [V, C]]];
  if (spec.positionalEmbeddingType === "standard") shapes.push(["pos_embed.W_pos", [nCtx, C]]);
  for (let l = 0; l < cfg.nLayers; l++) {
    const p = `blocks.${l}`;
    shapes.push(
      ...ln(`${p}.ln1`),
      [`${p}.attn.W_Q`, [H, C, Dh]], [`${p}.attn.${kv}W_K`, [Hkv, C, Dh]], [`${p}.attn.${kv}W_V`, [Hkv, C, Dh]],
      [`${p}.attn.b_Q`, [H, Dh]], [`${p}.attn.${kv}b_K`, [Hkv, Dh]], [`${p}.attn.${kv}b_V`, [Hkv, Dh]],
      [`${p}.attn.W_O`, [H, Dh, C]], [`${p}.attn.b_O`, [C]],
      ...ln(`${p}.ln2`),
      [`${p}.mlp.W_in`, [C, M]],
    );
    if (spec.gatedMlp) shapes.push([`${p}.mlp.W_gate`, [C, M]]);
    shapes.push([`${p}.mlp.b_in`, [M]], [`${p}.mlp.W_out`, [M, C]], [`${p}.mlp.b_out`, [C]]);
  }
  shapes.push(...ln("ln_final"));
  if (!cfg.tiedEmbeddings) shapes.push(["unembed.W_U", [C, V]]);
  shapes.push(["unembed.b_U", [V]]);
  return shapes;
}

export class HookedTransformer {
  readonly cfg: ModelConfig;
  readonly params: ReadonlyMap<string, Tensor>;
  /** The config's architecture fields with GPT-2's defaults filled in. */
  readonly spec: BlockSpec;
  /** cos/sin of the rotary angles (rotary models), grown to the longest sequence seen. */
  private readonly rotaryTable: RotaryTable | null;
  /** For grouped-query attention: the K/V head each query head reads (h → h / (H / Hkv)), as repeat_interleave. */
  private readonly kvHeadOf: Int32Array | null;

  constructor(cfg: ModelConfig, params: Map<string, Tensor>) {
    for (const [name, shape] of paramShapes(cfg)) {
      const t = params.get(name);
      if (t === undefined) throw new SelfreportError(`model: parameter "${name}" is missing (expected shape [${shape.join(", ")}])`);
      if (t.ndim !== shape.length || t.shape.some((d, i) => d !== shape[i])) {
        throw new SelfreportError(`model: parameter "${name}" has shape [${t.shape.join(", ")}], the config needs [${shape.join(", ")}]`);
      }
    }
    const expected = new Set(paramShapes(cfg).map(([n]) => n));
    for (const name of params.keys()) if (!expected.has(name)) throw new SelfreportError(`model: unexpected parameter "${name}"`);
    this.cfg = cfg;
    this.params = params;
    this.spec = blockSpec(cfg);
    this.rotaryTable = this.spec.positionalEmbeddingType === "rotary" ? new RotaryTable(this.spec.rotaryDim, this.spec.rotaryBase) : null;
    const rep = cfg.nHeads / this.spec.nKvHeads;
    this.kvHeadOf = this.spec.nKvHeads === cfg.nHeads ? null : Int32Array.from({ length: cfg.nHeads }, (_, h) => Math.floor(h / rep));
  }

  /** GPT-2 initialisation from a seed: N(0, 0.02), residual writers scaled by 1/√(2·nLayers), LayerNorm 1/0, biases 0. */
  static init(cfg: ModelConfig, seed: number): HookedTransformer {
    const rng = new Rng(seed);
    const params = new Map<string, Tensor>();
    const writerStd = 0.02 / Math.sqrt(2 * cfg.nLayers);
    for (const [name, shape] of paramShapes(cfg)) {
      const t = zeros(shape);
      if (/\.(w)$/.test(name)) t.data.fill(1);
      else if (/\.W_(O|out)$/.test(name)) fillNormal(t.data, rng, writerStd);
      else if (/\._?W_/.test(name)) fillNormal(t.data, rng, 0.02);
      params.set(name, t);
    }
    return new HookedTransformer(cfg, params);
  }

  /** A parameter by name; throws naming it if absent. */
  p(name: string): Tensor {
    const t = this.params.get(name);
    if (t === undefined) throw new SelfreportError(`model: no parameter "${name}"`);
    return t;
  }

  parameters(): Tensor[] {
    return [...this.params.values()];
  }

  hookNames(): string[] {
    return hookNames(this.cfg);
  }

  /** Throws a clear error unless 0 ≤ layer < nLayers. */
  checkLayer(layer: number, what = "layer"): void {
    if (!Number.isInteger(layer) || layer < 0 || layer >= this.cfg.nLayers) {
      throw new SelfreportError(`${what} ${layer} is out of range: the model has ${this.cfg.nLayers} layers (0..${this.cfg.nLayers - 1})`);
    }
  }

  // -------------------------------------------------------------------------------------------
  // Weight accessors (TransformerLens names and shapes)

  get W_E(): Tensor { return this.p("embed.W_E"); } //                       [V, C]
  get W_pos(): Tensor { return this.p("pos_embed.W_pos"); } //               [nCtx, C]
  W_Q(l: number): Tensor { return this.p(`blocks.${l}.attn.W_Q`); } //       [H, C, Dh]
  /** [H, C, Dh]; with grouped-query attention _W_K repeated per query head (TransformerLens's W_K property). */
  W_K(l: number): Tensor { return this.perQueryHead(this.p(this.kvName(l, "W_K"))); }
  /** [H, C, Dh]; with grouped-query attention _W_V repeated per query head. */
  W_V(l: number): Tensor { return this.perQueryHead(this.p(this.kvName(l, "W_V"))); }
  W_O(l: number): Tensor { return this.p(`blocks.${l}.attn.W_O`); } //       [H, Dh, C]
  b_Q(l: number): Tensor { return this.p(`blocks.${l}.attn.b_Q`); } //       [H, Dh]
  b_K(l: number): Tensor { return this.perQueryHead(this.p(this.kvName(l, "b_K"))); } // [H, Dh]
  b_V(l: number): Tensor { return this.perQueryHead(this.p(this.kvName(l, "b_V"))); } // [H, Dh]
  /** [C, M]: the gate of a gated MLP (mlp.hook_pre = x·W_gate); throws for a plain MLP. */
  W_gate(l: number): Tensor { return this.p(`blocks.${l}.mlp.W_gate`); }

  /** The parameter name of a K/V weight or bias: TransformerLens's `_W_K` … under grouped-query attention. */
  kvName(l: number, which: "W_K" | "W_V" | "b_K" | "b_V"): string {
    return `blocks.${l}.attn.${this.spec.gqa ? "_" : ""}${which}`;
  }

  /** The hook whose activation holds the keys attention uses: attn.hook_rot_k for rotary models, attn.hook_k otherwise. */
  keyHook(l: number): string {
    return `blocks.${l}.attn.${this.rotaryTable === null ? "hook_k" : "hook_rot_k"}`;
  }

  private perQueryHead(t: Tensor): Tensor {
    return this.kvHeadOf === null ? t : indexSelect(t, 0, this.kvHeadOf);
  }
  b_O(l: number): Tensor { return this.p(`blocks.${l}.attn.b_O`); } //       [C]
  W_in(l: number): Tensor { return this.p(`blocks.${l}.mlp.W_in`); } //      [C, M]
  b_in(l: number): Tensor { return this.p(`blocks.${l}.mlp.b_in`); } //      [M]
  W_out(l: number): Tensor { return this.p(`blocks.${l}.mlp.W_out`); } //    [M, C]
  b_out(l: number): Tensor { return this.p(`blocks.${l}.mlp.b_out`); } //    [C]
  ln1W(l: number): Tensor { return this.p(`blocks.${l}.ln1.w`); } //         [C]
  ln2W(l: number): Tensor { return this.p(`blocks.${l}.ln2.w`); } //         [C]
  get b_U(): Tensor { return this.p("unembed.b_U"); } //                     [V]
  /** [C, V]; for tied embeddings a fresh copy of W_Eᵀ. */
  get W_U(): Tensor {
    return this.cfg.tiedEmbeddings ? noGrad(() => permute(this.W_E, [1, 0])) : this.p("unembed.W_U");
  }

  // -------------------------------------------------------------------------------------------
  // Forward

  forward(tokens: TokenBatch, opts: ForwardOptions = {}): ForwardResult {
    const { batch: B, len: T, ids } = tokens;
    const cfg = this.cfg;
    if (ids.length !== B * T) throw new ShapeError(`forward: ${ids.length} token ids do not fill [${B}, ${T}]`);
    if (T > cfg.nCtx) throw new SelfreportError(`input has ${T} tokens but the model's context (n_positions) is ${cfg.nCtx}`);
    if (T === 0) throw new SelfreportError("input has no tokens");
    for (let i = 0; i < ids.length; i++) {
      const id = ids[i]!;
      if (!(id >= 0 && id < cfg.dVocab)) throw new SelfreportError(`token id ${id} is out of range for a vocabulary of ${cfg.dVocab}`);
    }
    const stop = opts.stopAtLayer ?? cfg.nLayers;
    if (!Number.isInteger(stop) || stop < 0 || stop > cfg.nLayers) {
      throw new SelfreportError(`stopAtLayer ${stop} is out of range 0..${cfg.nLayers}`);
    }
    const hooks = new HookRunner(cfg, opts.hooks ?? []);
    const keyMask = tokens.attentionMask ?? null;

    const embed = hooks.run("hook_embed", embedding(this.W_E, ids, [B, T])); //            [B, T, C]
    let resid = embed; //                                                                  [B, T, C]
    if (this.rotaryTable === null) {
      const pos = hooks.run("hook_pos_embed", add(zeros([B, T, cfg.dModel]), slice(this.W_pos, 0, 0, T))); // [B, T, C]
      resid = add(embed, pos);
    }
    for (let l = 0; l < stop; l++) resid = this.block(l, resid, hooks, { kind: "causal", keyMask }).resid;
    if (opts.stopAtLayer !== undefined || opts.logits === false) return { logits: null, resid };
    const x = this.lnFinal(resid, hooks); //                                               [B, T, C]
    return { logits: this.unembed(x), resid };
  }

  /** Runs blocks from..to-1 on a residual stream [B, T, C] (e.g. to resume after a patched layer). */
  runBlocks(resid: Tensor, from: number, to: number, hooks: readonly Hook[] = [], keyMask: Uint8Array | null = null): Tensor {
    const runner = new HookRunner(this.cfg, hooks);
    let r = resid;
    for (let l = from; l < to; l++) r = this.block(l, r, runner, { kind: "causal", keyMask }).resid;
    return r;
  }

  /** Layer l's attention weights in the block's layout (see LayerWeights); recorded by autograd like any op. */
  layerWeights(l: number): LayerWeights {
    const { nHeads: H, dHead: Dh, dModel: C } = this.cfg;
    return {
      WQ: headsIn(this.W_Q(l)), WK: headsIn(this.p(this.kvName(l, "W_K"))), WV: headsIn(this.p(this.kvName(l, "W_V"))),
      bQ: flatBias(this.b_Q(l)), bK: flatBias(this.p(this.kvName(l, "b_K"))), bV: flatBias(this.p(this.kvName(l, "b_V"))),
      WO: reshape(this.W_O(l), [H * Dh, C]),
    };
  }

  /**
   * Block l for rows x [R, C] against cached keys and values (see RowsContext): generation's KV-cache
   * step and patching's one-row path. The same block as the forward pass, with its hooks (shown the
   * rows as ctx.hookShape); only attn.hook_attn_scores and attn.hook_pattern cannot be hooked here.
   * Pass `weights` (layerWeights(l)) to reuse them across calls. Untracked by autograd.
   */
  blockRows(l: number, x: Tensor, ctx: RowsContext, opts: { weights?: LayerWeights; hooks?: readonly Hook[] | HookRunner } = {}): RowsResult {
    this.checkLayer(l);
    const [B, T] = ctx.hookShape;
    const R = ctx.rowSeq.length;
    const C = this.cfg.dModel;
    if (x.ndim !== 2 || x.shape[0] !== R || x.shape[1] !== C) throw new ShapeError(`blockRows: rows have shape [${x.shape.join(", ")}], expected [${R}, ${C}] (one per rowSeq entry)`);
    if (B * T !== R) throw new ShapeError(`blockRows: hookShape [${B}, ${T}] does not hold ${R} rows`);
    if (ctx.rowPast.length !== R || ctx.rowGroup.length !== R) throw new ShapeError(`blockRows: rowSeq, rowPast and rowGroup must each have ${R} entries`);
    const hooks = opts.hooks instanceof HookRunner ? opts.hooks : new HookRunner(this.cfg, opts.hooks ?? []);
    return noGrad(() => {
      const out = this.block(l, reshape(x, [B, T, C]), hooks, { kind: "rows", ctx }, opts.weights);
      return { resid: reshape(out.resid, [R, C]), k: out.k, v: out.v };
    });
  }

  /**
   * One transformer block: attention then MLP, each added to the residual stream, or (parallelAttnMlp,
   * GPT-NeoX) both reading resid_pre and added together: [B, T, C] → [B, T, C]. Attention is causal
   * over the sequence (the forward pass) or over cached keys (rows, see blockRows).
   */
  private block(l: number, residIn: Tensor, hooks: HookRunner, attention: Attention, w: LayerWeights = this.layerWeights(l)): { resid: Tensor; k: Float32Array; v: Float32Array } {
    const { nHeads: H, dHead: Dh } = this.cfg;
    const Hkv = this.spec.nKvHeads;
    const [B, T] = [residIn.shape[0]!, residIn.shape[1]!];
    const p = `blocks.${l}`;
    const name = (h: string): string => `${p}.${h}`;

    const residPre = hooks.run(name("hook_resid_pre"), residIn); //                         [B, T, C]
    const x1 = this.layerNorm(residPre, `${p}.ln1`, hooks); //                              [B, T, C]
    let q = hooks.run(name("attn.hook_q"), reshape(linear(x1, w.WQ, w.bQ), [B, T, H, Dh]));
    let k = hooks.run(name("attn.hook_k"), reshape(linear(x1, w.WK, w.bK), [B, T, Hkv, Dh]));
    const v = hooks.run(name("attn.hook_v"), reshape(linear(x1, w.WV, w.bV), [B, T, Hkv, Dh]));
    if (this.rotaryTable !== null) {
      const positions = attention.kind === "rows" ? rowPositions(attention.ctx) : sequencePositions(B, T);
      q = hooks.run(name("attn.hook_rot_q"), rotary(q, positions, this.rotaryTable)); //    [B, T, H, Dh]
      k = hooks.run(name("attn.hook_rot_k"), rotary(k, positions, this.rotaryTable)); //    [B, T, Hkv, Dh]
    }
    const wantsPattern = hooks.needs(name("attn.hook_attn_scores")) || hooks.needs(name("attn.hook_pattern"));
    let z: Tensor; //                                                                       [B, T, H, Dh]
    if (attention.kind === "rows") {
      if (wantsPattern) throw new SelfreportError(`${name("attn.hook_attn_scores")} and ${name("attn.hook_pattern")} cannot be hooked when rows attend to cached keys (generation, patching)`);
      z = new Tensor(rowsAttention(q.data, k.data, v.data, attention.ctx, H, Hkv, Dh), [B, T, H, Dh]);
    } else {
      // grouped-query attention: each query head reads its K/V head (repeat_interleave, as TransformerLens)
      const kH = this.kvHeadOf === null ? k : indexSelect(k, 2, this.kvHeadOf); //          [B, T, H, Dh]
      const vH = this.kvHeadOf === null ? v : indexSelect(v, 2, this.kvHeadOf); //          [B, T, H, Dh]
      if (wantsPattern) {
        const scores = hooks.run(name("attn.hook_attn_scores"), attnScores(q, kH, attention.keyMask)); // [B, H, T, T]
        const pattern = hooks.run(name("attn.hook_pattern"), softmax(scores)); //            [B, H, T, T]
        z = attnApply(pattern, vH);
      } else {
        z = causalAttention(q, kH, vH, attention.keyMask);
      }
    }
    z = hooks.run(name("attn.hook_z"), z);
    const attnOut = hooks.run(name("hook_attn_out"), linear(reshape(z, [B, T, H * Dh]), w.WO, this.b_O(l)));
    if (this.spec.parallelAttnMlp) {
      const x2 = this.layerNorm(residPre, `${p}.ln2`, hooks); //                            [B, T, C]
      const mlpOut = this.mlp(l, x2, hooks); //                                             [B, T, C]
      const both = residualAdd(residualAdd(residPre, attnOut, name("hook_attn_out"), hooks), mlpOut, name("hook_mlp_out"), hooks);
      return { resid: hooks.run(name("hook_resid_post"), both), k: k.data, v: v.data };
    }
    const residMid = hooks.run(name("hook_resid_mid"), residualAdd(residPre, attnOut, name("hook_attn_out"), hooks)); // [B, T, C]
    const x2 = this.layerNorm(residMid, `${p}.ln2`, hooks); //                              [B, T, C]
    const mlpOut = this.mlp(l, x2, hooks); //                                               [B, T, C]
    return { resid: hooks.run(name("hook_resid_post"), residualAdd(residMid, mlpOut, name("hook_mlp_out"), hooks)), k: k.data, v: v.data }; // [B, T, C]
  }

  /**
   * The MLP of block l on its normalised input [B, T, C] → hook_mlp_out [B, T, C]. Plain (GPT-2, NeoX):
   * hook_pre = x·W_in + b_in, hook_post = act(pre). Gated (Llama family, TransformerLens's GatedMLP):
   * hook_pre = x·W_gate, hook_pre_linear = x·W_in, hook_post = act(pre)·pre_linear + b_in.
   */
  private mlp(l: number, x: Tensor, hooks: HookRunner): Tensor {
    const name = (h: string): string => `blocks.${l}.${h}`;
    let post: Tensor; //                                                                     [B, T, M]
    if (this.spec.gatedMlp) {
      const pre = hooks.run(name("mlp.hook_pre"), linear(x, this.W_gate(l), null)); //      [B, T, M]
      const preLinear = hooks.run(name("mlp.hook_pre_linear"), linear(x, this.W_in(l), null)); // [B, T, M]
      const bIn = this.b_in(l); // zero in every Hugging Face checkpoint: skipped then (adding 0 changes nothing)
      const gated = this.cfg.actFn === "silu" ? siluMul(pre, preLinear) : mul(this.act(pre), preLinear); // [B, T, M]
      post = hooks.run(name("mlp.hook_post"), bIn.requiresGrad || bIn.data.some((x) => x !== 0) ? add(gated, bIn) : gated);
    } else {
      const pre = hooks.run(name("mlp.hook_pre"), linear(x, this.W_in(l), this.b_in(l))); // [B, T, M]
      // nobody holds an unhooked pre outside autograd: GELU overwrites it (the same bits, no new buffer)
      const overwrite = this.cfg.actFn === "gelu_new" && !hooks.needs(name("mlp.hook_pre")) && !(isGradEnabled() && pre.requiresGrad);
      post = hooks.run(name("mlp.hook_post"), overwrite ? geluNewInPlace(pre) : this.act(pre));
    }
    return hooks.run(name("hook_mlp_out"), linear(post, this.W_out(l), this.b_out(l))); //  [B, T, C]
  }

  private act(x: Tensor): Tensor {
    switch (this.cfg.actFn) {
      case "gelu_new": return geluNew(x);
      case "silu": return silu(x);
      case "gelu": return geluExact(x);
    }
  }

  /**
   * LayerNorm as TransformerLens writes it: hook_scale on the scale, hook_normalized on the LN's
   * OUTPUT x̂·w + b (TransformerLens's LayerNorm), which is what the next layer reads, so a
   * replacement there is used as it is. With tl weights w = 1 and b = 0 (folded into the readers),
   * so the output is x̂, as TransformerLens's LayerNormPre hooks it.
   * RMSNorm (TransformerLens's RMSNorm): hook_scale = sqrt(mean(x²) + eps), hook_normalized = x / scale
   * BEFORE the weight, output hook_normalized · w (w = 1 with tl weights, TransformerLens's RMSNormPre).
   */
  private layerNorm(x: Tensor, prefix: string, hooks: HookRunner): Tensor {
    if (this.spec.normalizationType === "RMS") {
      const scale = hooks.run(`${prefix}.hook_scale`, rmsScale(x, this.cfg.lnEps)); //       [..., 1]
      const normalized = hooks.run(`${prefix}.hook_normalized`, divByScale(x, scale)); //    [..., C]
      return affineLast(normalized, this.p(`${prefix}.w`), null);
    }
    if (!hooks.needs(`${prefix}.hook_scale`)) { // one op, the same bits (layerNorm)
      return hooks.run(`${prefix}.hook_normalized`, layerNorm(x, this.p(`${prefix}.w`), this.p(`${prefix}.b`), this.cfg.lnEps));
    }
    const scale = hooks.run(`${prefix}.hook_scale`, lnScale(x, this.cfg.lnEps)); //          [..., 1]
    const normalized = lnNormalize(x, scale); //                                            [..., C] x̂
    return hooks.run(`${prefix}.hook_normalized`, affineLast(normalized, this.p(`${prefix}.w`), this.p(`${prefix}.b`))); // [..., C]
  }

  /** ln_final applied to a residual stream [..., C]. */
  lnFinal(resid: Tensor, hooks: HookRunner = new HookRunner(this.cfg, [])): Tensor {
    return this.layerNorm(resid, "ln_final", hooks);
  }

  /** Logits [..., V] from the normalised final residual [..., C]. */
  unembed(x: Tensor): Tensor {
    if (!this.cfg.tiedEmbeddings) return linear(x, this.p("unembed.W_U"), this.b_U);
    const logits = matmul(x, this.W_E, { transB: true });
    return this.b_U.data.some((v) => v !== 0) || this.b_U.requiresGrad ? add(logits, this.b_U) : logits;
  }

  /**
   * Mean next-token cross-entropy of a batch against `targets` (one per position, [B·T]),
   * fused with the unembedding so the [B, T, V] logits are never held (see unembedCrossEntropy).
   * Equal to crossEntropy(forward(tokens).logits, targets); the pre-training loss.
   */
  nextTokenLoss(tokens: TokenBatch, targets: ArrayLike<number>, opts: { ignoreIndex?: number } = {}): Tensor {
    const { resid } = this.forward(tokens, { logits: false });
    const x = this.lnFinal(resid); //                                                        [B, T, C]
    const rows = reshape(x, [tokens.batch * tokens.len, this.cfg.dModel]); //               [B·T, C]
    const bias = this.b_U.requiresGrad || this.b_U.data.some((v) => v !== 0) ? this.b_U : null;
    return this.cfg.tiedEmbeddings
      ? unembedCrossEntropy(rows, this.W_E, targets, { layout: "out_in", bias, ...opts })
      : unembedCrossEntropy(rows, this.p("unembed.W_U"), targets, { layout: "in_out", bias, ...opts });
  }

  // -------------------------------------------------------------------------------------------
  // TransformerLens conveniences

  /** Forward pass that stores the activations at the named hook points (only those). */
  runWithCache(tokens: TokenBatch, names: readonly string[] | ((name: string) => boolean), opts: ForwardOptions = {}): ForwardResult & { cache: Map<string, Tensor> } {
    const cache = new Map<string, Tensor>();
    let filter: HookFilter;
    if (typeof names === "function") filter = names;
    else {
      for (const n of names) assertHookName(this.cfg, n);
      const wanted = new Set(names);
      filter = (n: string) => wanted.has(n);
    }
    const store: Hook = [filter, (act, hook) => void cache.set(hook.name, act)];
    const result = this.forward(tokens, { ...opts, hooks: [...(opts.hooks ?? []), store] });
    return { ...result, cache };
  }

  /** Forward pass with hooks that may read or replace activations. */
  runWithHooks(tokens: TokenBatch, hooks: readonly Hook[], opts: ForwardOptions = {}): ForwardResult {
    return this.forward(tokens, { ...opts, hooks: [...(opts.hooks ?? []), ...hooks] });
  }
}

/**
 * residual + out, where `out` is a block's fresh attention or MLP output (a linear layer's output) at
 * hook point `outHook`. With nobody hooking that point nothing else holds `out`, and no backward reads
 * its value, so the sum is written over its buffer (addInPlace: the same bits and gradients as add)
 * instead of a new [B, T, C] one.
 */
function residualAdd(residual: Tensor, out: Tensor, outHook: string, hooks: HookRunner): Tensor {
  return hooks.needs(outHook) ? add(residual, out) : addInPlace(residual, out);
}

/** W [H, C, Dh] → [C, H·Dh]: the columns of head h are h·Dh..(h+1)·Dh-1, as in GPT-2's c_attn. */
function headsIn(W: Tensor): Tensor {
  const [H, C, Dh] = W.shape as [number, number, number];
  return reshape(permute(W, [1, 0, 2]), [C, H * Dh]);
}

function flatBias(b: Tensor): Tensor {
  return reshape(b, [b.size]);
}

/** Position t of every row (b, t) of a [B, T] sequence batch (right-padded: padding sits after the tokens). */
function sequencePositions(B: number, T: number): Int32Array {
  const out = new Int32Array(B * T);
  for (let b = 0; b < B; b++) for (let t = 0; t < T; t++) out[b * T + t] = t;
  return out;
}

/** The position of each row of a RowsContext: its rowPast plus its index among the rows of its group. */
export function rowPositions(ctx: RowsContext): Int32Array {
  const R = ctx.rowSeq.length;
  const out = new Int32Array(R);
  const seen = new Map<number, number>();
  for (let r = 0; r < R; r++) {
    const g = ctx.rowGroup[r]!;
    const i = seen.get(g) ?? 0;
    seen.set(g, i + 1);
    out[r] = ctx.rowPast[r]! + i;
  }
  return out;
}

/**
 * Attention of rows against cached keys (see RowsContext): q [R, H·Dh], k, v [R, Hkv·Dh] (the rows'
 * own) → z [R, H·Dh]; query head h reads K/V head h / (H / Hkv). Scores and softmax in float64, per
 * row and head: the cached keys 0..rowPast-1 of its sequence, then the new keys of its group's rows up to itself.
 */
function rowsAttention(q: Float32Array, k: Float32Array, v: Float32Array, ctx: RowsContext, H: number, Hkv: number, Dh: number): Float32Array {
  const R = ctx.rowSeq.length;
  const HD = H * Dh;
  const KD = Hkv * Dh;
  const rep = H / Hkv;
  const z = new Float32Array(R * HD);
  const scale = 1 / Math.sqrt(Dh);
  // the rows each row attends to among the new ones: the earlier rows of its group, then itself
  const groupRows = new Map<number, number[]>();
  let maxPast = 0;
  for (let r = 0; r < R; r++) {
    maxPast = Math.max(maxPast, ctx.rowPast[r]!);
    const g = ctx.rowGroup[r]!;
    const list = groupRows.get(g);
    if (list === undefined) groupRows.set(g, [r]);
    else list.push(r);
  }
  const s = new Float64Array(maxPast + R);
  const seen = new Map<number, number>(); // group → rows of it reached so far
  for (let r = 0; r < R; r++) {
    const g = ctx.rowGroup[r]!;
    const upTo = (seen.get(g) ?? 0) + 1;
    seen.set(g, upTo);
    const mine = groupRows.get(g)!;
    const past = ctx.rowPast[r]!;
    if (past > ctx.stride) throw new ShapeError(`rows attention: row ${r} sees ${past} cached positions, the cache holds ${ctx.stride}`);
    const base = ctx.rowSeq[r]! * ctx.stride;
    const n = past + upTo;
    for (let h = 0; h < H; h++) {
      const qo = r * HD + h * Dh;
      const kvh = Math.floor(h / rep); // its K/V head
      let max = -Infinity;
      for (let j = 0; j < n; j++) {
        const [K, ko] = j < past ? [ctx.pastK, ((base + j) * Hkv + kvh) * Dh] : [k, mine[j - past]! * KD + kvh * Dh];
        let d = 0;
        for (let i = 0; i < Dh; i++) d += q[qo + i]! * K[ko + i]!;
        s[j] = d * scale;
        if (s[j]! > max) max = s[j]!;
      }
      let sum = 0;
      for (let j = 0; j < n; j++) {
        s[j] = Math.exp(s[j]! - max);
        sum += s[j]!;
      }
      for (let j = 0; j < n; j++) {
        const [V, vo] = j < past ? [ctx.pastV, ((base + j) * Hkv + kvh) * Dh] : [v, mine[j - past]! * KD + kvh * Dh];
        const p = s[j]! / sum;
        for (let i = 0; i < Dh; i++) z[qo + i]! += p * V[vo + i]!;
      }
    }
  }
  return z;
}

/** Token ids as a right-padded TokenBatch (pad id 50256 by default). */
export function tokenBatch(rows: readonly (readonly number[])[], padId = 50256): TokenBatch & { lengths: number[] } {
  const B = rows.length;
  const T = Math.max(1, ...rows.map((r) => r.length));
  const ids = new Int32Array(B * T).fill(padId);
  const attentionMask = new Uint8Array(B * T);
  rows.forEach((r, b) => {
    r.forEach((id, t) => {
      ids[b * T + t] = id;
      attentionMask[b * T + t] = 1;
    });
  });
  return { ids, batch: B, len: T, attentionMask, lengths: rows.map((r) => r.length) };
}
