/**
 * ActivationCache: the activations of one forward pass by hook name, with TransformerLens's
 * residual-stream helpers (semantics from transformer_lens/ActivationCache.py):
 *
 *   accumulatedResid(layer)   the residual stream before each layer: resid_pre 0..layer-1
 *                             (+ resid_mid with inclMid), and at layer = nLayers the final resid_post.
 *                             [components, batch, pos, d_model]
 *   decomposeResid(layer)     what was added to it: embed, pos_embed, then attn_out and mlp_out of
 *                             each layer < layer. Its sum over components is resid_pre of `layer`
 *                             (resid_post of layer − 1; the final resid_post at layer = nLayers).
 *   applyLnToStack(stack, l)  each component as the input of layer l's LayerNorm sees it: centred and
 *                             divided by the cached hook_scale of the whole stream (ln1, ln2 with
 *                             mlpInput, ln_final at l = nLayers). The LayerNorm weights are not
 *                             applied (with weights "tl" they are folded into the next matrix).
 *   logitAttrs(stack, tokens) each component's direct contribution to a token's logit:
 *                             applyLnToStack(stack, nLayers) · W_U[:, token].
 *
 * The layer argument defaults to nLayers (everything up to the unembedding), as `None` does in
 * TransformerLens. Results are fresh tensors, outside autograd.
 */
import { Tensor, ShapeError, shapeStr, type SliceSpec } from "../tensor/tensor.ts";
import { noGrad } from "../tensor/tensor.ts";
import { SelfreportError } from "../errors.ts";
import type { HookedTransformer as Model } from "../model/transformer.ts";
import { getActName } from "./act-name.ts";

export interface StackOptions {
  /** Slice of the position axis applied to every component (and to the LayerNorm scale): an index or [start, end]. */
  posSlice?: SliceSpec;
  /** Also return the components' labels ("0_pre", "1_attn_out", …): the result is then [stack, labels]. */
  returnLabels?: boolean;
}

export interface AccumulatedResidOptions extends StackOptions {
  /** Include resid_mid of every layer before `layer`. */
  inclMid?: boolean;
  /** Apply the LayerNorm of `layer` (see applyLnToStack); at layer = nLayers ln_final is recomputed per component, as TransformerLens does. */
  applyLn?: boolean;
  /** Include resid_mid of `layer` itself (the MLP's input rather than the attention's). */
  mlpInput?: boolean;
}

export interface DecomposeResidOptions extends StackOptions {
  /** Include attn_out of `layer` itself (decompose the MLP's input). */
  mlpInput?: boolean;
  /** "all" (default), "mlp" or "attn" components. */
  mode?: "all" | "mlp" | "attn";
  /** Apply the LayerNorm of `layer` with the cached scale (see applyLnToStack). */
  applyLn?: boolean;
  /** Include hook_embed and hook_pos_embed (default true). */
  inclEmbeds?: boolean;
}

export interface ApplyLnOptions {
  /** The stack is the input of layer's MLP (ln2) rather than its attention (ln1). */
  mlpInput?: boolean;
  /** The stack's positions are this slice of the cached positions. */
  posSlice?: SliceSpec;
  /** At layer = nLayers: normalise each component with its own statistics (ln_final recomputed), not the cached scale. */
  recomputeLn?: boolean;
}

/** A token for logitAttrs: an id, a string that is one token, per batch row, or per [batch][pos]. */
export type TokenTargets = number | string | readonly (number | string)[] | readonly (readonly (number | string)[])[];

export interface LogitAttrsOptions {
  /** Attribute the logit difference tokens − incorrectTokens (same shape as tokens). */
  incorrectTokens?: TokenTargets;
  posSlice?: SliceSpec;
}

/** Turns a string token into its id (the model's tokenizer). */
export type SingleToken = (s: string) => number;

export class ActivationCache implements Iterable<[string, Tensor]> {
  readonly model: Model;
  private readonly byName: ReadonlyMap<string, Tensor>;
  private readonly singleToken: SingleToken | null;

  constructor(activations: ReadonlyMap<string, Tensor>, model: Model, singleToken: SingleToken | null = null) {
    this.byName = activations;
    this.model = model;
    this.singleToken = singleToken;
  }

  get size(): number {
    return this.byName.size;
  }

  has(name: string, layer?: number, layerType?: string): boolean {
    return this.byName.has(getActName(name, layer, layerType));
  }

  /**
   * An activation by hook name or TransformerLens shorthand: `get("blocks.2.mlp.hook_post")`,
   * `get("post", 2)`. Throws naming the hook when it was not cached.
   */
  get(name: string, layer?: number, layerType?: string): Tensor {
    const full = getActName(name, layer, layerType);
    const t = this.byName.get(full);
    if (t === undefined) {
      const cached = [...this.byName.keys()];
      throw new SelfreportError(
        `the cache has no "${full}"${full !== name ? ` (from ${JSON.stringify([name, layer, layerType].filter((x) => x !== undefined)).slice(1, -1)})` : ""}: ` +
          `run runWithCache with it in names (or without names to cache every hook); cached: ${cached.length === 0 ? "nothing" : cached.length > 8 ? `${cached.slice(0, 8).join(", ")} … (${cached.length})` : cached.join(", ")}`,
      );
    }
    return t;
  }

  keys(): IterableIterator<string> {
    return this.byName.keys();
  }

  values(): IterableIterator<Tensor> {
    return this.byName.values();
  }

  entries(): IterableIterator<[string, Tensor]> {
    return this.byName.entries();
  }

  [Symbol.iterator](): IterableIterator<[string, Tensor]> {
    return this.byName.entries();
  }

  /** The residual stream before each layer up to `layer` (see the top of this file). */
  accumulatedResid(layer?: number, opts?: AccumulatedResidOptions & { returnLabels?: false }): Tensor;
  accumulatedResid(layer: number | undefined, opts: AccumulatedResidOptions & { returnLabels: true }): [Tensor, string[]];
  accumulatedResid(layer?: number, opts: AccumulatedResidOptions = {}): Tensor | [Tensor, string[]] {
    const L = this.layerArg("accumulatedResid", layer);
    const n = this.model.cfg.nLayers;
    const parts: Tensor[] = [];
    const labels: string[] = [];
    for (let l = 0; l <= L; l++) {
      if (l === n) {
        parts.push(this.get(`blocks.${n - 1}.hook_resid_post`));
        labels.push("final_post");
        continue;
      }
      parts.push(this.get(`blocks.${l}.hook_resid_pre`));
      labels.push(`${l}_pre`);
      if ((opts.inclMid === true && l < L) || (opts.mlpInput === true && l === L)) {
        parts.push(this.get(`blocks.${l}.hook_resid_mid`));
        labels.push(`${l}_mid`);
      }
    }
    let stack = stackOf("accumulatedResid", parts.map((p) => posSliced(p, opts.posSlice)));
    if (opts.applyLn === true) {
      stack = this.applyLnToStack(stack, L, { mlpInput: opts.mlpInput ?? false, posSlice: opts.posSlice ?? null, recomputeLn: L === n });
    }
    return opts.returnLabels === true ? [stack, labels] : stack;
  }

  /** The components added to the residual stream before `layer` (see the top of this file). */
  decomposeResid(layer?: number, opts?: DecomposeResidOptions & { returnLabels?: false }): Tensor;
  decomposeResid(layer: number | undefined, opts: DecomposeResidOptions & { returnLabels: true }): [Tensor, string[]];
  decomposeResid(layer?: number, opts: DecomposeResidOptions = {}): Tensor | [Tensor, string[]] {
    const L = this.layerArg("decomposeResid", layer);
    const mode = opts.mode ?? "all";
    if (mode !== "all" && mode !== "mlp" && mode !== "attn") throw new SelfreportError(`decomposeResid: mode must be "all", "mlp" or "attn", got "${String(mode)}"`);
    if (opts.mlpInput === true && L === this.model.cfg.nLayers) throw new SelfreportError(`decomposeResid: mlpInput needs a layer below ${this.model.cfg.nLayers} (layer ${L} is the unembedding)`);
    const parts: Tensor[] = [];
    const labels: string[] = [];
    if (opts.inclEmbeds !== false) {
      parts.push(this.get("hook_embed"));
      labels.push("embed");
      if (this.model.spec.positionalEmbeddingType === "standard") { // rotary models add no position embedding
        parts.push(this.get("hook_pos_embed"));
        labels.push("pos_embed");
      }
    }
    for (let l = 0; l < L; l++) {
      if (mode !== "mlp") { parts.push(this.get(`blocks.${l}.hook_attn_out`)); labels.push(`${l}_attn_out`); }
      if (mode !== "attn") { parts.push(this.get(`blocks.${l}.hook_mlp_out`)); labels.push(`${l}_mlp_out`); }
    }
    if (opts.mlpInput === true && mode !== "mlp") { parts.push(this.get(`blocks.${L}.hook_attn_out`)); labels.push(`${L}_attn_out`); }
    if (parts.length === 0) throw new SelfreportError(`decomposeResid(${L}): no components (layer 0 without embeddings)`);
    let stack = stackOf("decomposeResid", parts.map((p) => posSliced(p, opts.posSlice)));
    if (opts.applyLn === true) stack = this.applyLnToStack(stack, L, { mlpInput: opts.mlpInput ?? false, posSlice: opts.posSlice ?? null });
    return opts.returnLabels === true ? [stack, labels] : stack;
  }

  /**
   * A stack [components, ...dims, d_model] as the LayerNorm of `layer` sees it (default nLayers:
   * ln_final). `dims` must be the cached positions' [batch, pos] (after posSlice).
   */
  applyLnToStack(stack: Tensor, layer?: number, opts: ApplyLnOptions = {}): Tensor {
    const L = this.layerArg("applyLnToStack", layer);
    const n = this.model.cfg.nLayers;
    const C = this.model.cfg.dModel;
    if (stack.ndim < 2 || stack.shape[stack.ndim - 1] !== C) {
      throw new ShapeError(`applyLnToStack: stack has shape ${shapeStr(stack.shape)}, expected [components, ..., ${C}] (d_model last)`);
    }
    if (opts.mlpInput === true && L === n) throw new SelfreportError(`applyLnToStack: mlpInput needs a layer below ${n} (layer ${n} is ln_final)`);
    if (opts.recomputeLn === true && L === n) {
      return noGrad(() => {
        const out = this.model.lnFinal(new Tensor(stack.data, stack.shape));
        return new Tensor(out.data.slice(), out.shape);
      });
    }
    const key = L === n ? "ln_final.hook_scale" : `blocks.${L}.ln${opts.mlpInput === true ? 2 : 1}.hook_scale`;
    const scale = posSliced(this.get(key), opts.posSlice); // [...dims, 1]
    const dims = stack.shape.slice(1, -1);
    const scaleDims = scale.shape.slice(0, -1);
    if (dims.length !== scaleDims.length || dims.some((d, i) => d !== scaleDims[i])) {
      throw new ShapeError(`applyLnToStack: stack has shape ${shapeStr(stack.shape)} but ${key} is ${shapeStr(scale.shape)}: the stack's middle dims must be ${shapeStr(scaleDims)} (pass posSlice when the stack covers some positions only)`);
    }
    const rows = scale.size;
    const comps = stack.shape[0]!;
    const out = new Float32Array(stack.size);
    for (let c = 0; c < comps; c++) {
      for (let r = 0; r < rows; r++) {
        const o = (c * rows + r) * C;
        let mean = 0;
        for (let j = 0; j < C; j++) mean += stack.data[o + j]!;
        mean /= C;
        const s = scale.data[r]!;
        for (let j = 0; j < C; j++) out[o + j] = (stack.data[o + j]! - mean) / s;
      }
    }
    return new Tensor(out, stack.shape);
  }

  /**
   * Each component's direct effect on the logit of `tokens` (minus incorrectTokens'):
   * stack [components, batch, pos, d_model] → [components, batch, pos]. `tokens` is one token for
   * everything, one per batch row, or one per [batch][pos].
   */
  logitAttrs(stack: Tensor, tokens: TokenTargets, opts: LogitAttrsOptions = {}): Tensor {
    const C = this.model.cfg.dModel;
    const scaled = this.applyLnToStack(stack, this.model.cfg.nLayers, { posSlice: opts.posSlice ?? null });
    const dims = stack.shape.slice(1, -1);
    const rows = dims.reduce((a, b) => a * b, 1);
    const ids = this.tokenGrid("tokens", tokens, dims);
    const wrong = opts.incorrectTokens === undefined ? null : this.tokenGrid("incorrectTokens", opts.incorrectTokens, dims);
    const dirOf = this.unembedDirections();
    const comps = stack.shape[0]!;
    const out = new Float32Array(comps * rows);
    for (let r = 0; r < rows; r++) {
      const d = dirOf(ids[r]!);
      const w = wrong === null ? null : dirOf(wrong[r]!);
      for (let c = 0; c < comps; c++) {
        const o = (c * rows + r) * C;
        let acc = 0;
        for (let j = 0; j < C; j++) acc += scaled.data[o + j]! * (w === null ? d[j]! : d[j]! - w[j]!);
        out[c * rows + r] = acc;
      }
    }
    return new Tensor(out, [comps, ...dims]);
  }

  /** The token id of every row of dims ([batch, pos], [batch] or []), from a TokenTargets. */
  private tokenGrid(what: string, tokens: TokenTargets, dims: readonly number[]): Int32Array {
    const rows = dims.reduce((a, b) => a * b, 1);
    const out = new Int32Array(rows);
    const id = (t: number | string): number => {
      if (typeof t === "number") {
        if (!Number.isInteger(t) || t < 0 || t >= this.model.cfg.dVocab) throw new SelfreportError(`logitAttrs: ${what} has token id ${t}, outside 0..${this.model.cfg.dVocab - 1}`);
        return t;
      }
      if (this.singleToken === null) throw new SelfreportError(`logitAttrs: ${what} is the string ${JSON.stringify(t)} but the model has no tokenizer; give token ids`);
      return this.singleToken(t);
    };
    if (!Array.isArray(tokens)) return out.fill(id(tokens as number | string));
    const list = tokens as readonly (number | string | readonly (number | string)[])[];
    const perRow = rows / (dims[0] ?? 1);
    if (dims.length === 0 || list.length !== dims[0]) {
      throw new ShapeError(`logitAttrs: ${what} has ${list.length} entries, expected one per batch row (${dims[0] ?? "none: the stack has no batch axis"}) for a stack over ${shapeStr(dims)}`);
    }
    list.forEach((row, b) => {
      if (!Array.isArray(row)) out.fill(id(row as number | string), b * perRow, (b + 1) * perRow);
      else {
        if (row.length !== perRow || dims.length !== 2) throw new ShapeError(`logitAttrs: ${what}[${b}] has ${row.length} tokens, expected ${dims.length === 2 ? dims[1] : "a single token"} for a stack over ${shapeStr(dims)}`);
        (row as readonly (number | string)[]).forEach((t, p) => void (out[b * perRow + p] = id(t)));
      }
    });
    return out;
  }

  /** token → its unembedding direction W_U[:, token] (d_model values). */
  private unembedDirections(): (token: number) => Float32Array {
    const { dModel: C, dVocab: V, tiedEmbeddings } = this.model.cfg;
    const W = tiedEmbeddings ? this.model.W_E : this.model.p("unembed.W_U"); // [V, C] tied, else [C, V]
    return (v) => (tiedEmbeddings ? W.data.subarray(v * C, (v + 1) * C) : Float32Array.from({ length: C }, (_, j) => W.data[j * V + v]!));
  }

  private layerArg(op: string, layer: number | undefined): number {
    const n = this.model.cfg.nLayers;
    if (layer === undefined || layer === -1) return n;
    if (!Number.isInteger(layer) || layer < 0 || layer > n) throw new SelfreportError(`${op}: layer ${layer} is out of range 0..${n} (${n} = up to the unembedding; -1 means ${n})`);
    return layer;
  }
}

/** [B, T, ...] sliced on the position axis (1), or the tensor itself when no slice is given. */
function posSliced(t: Tensor, pos: SliceSpec | undefined): Tensor {
  if (pos === undefined || pos === null) return t;
  if (t.ndim < 2) throw new ShapeError(`posSlice: tensor has shape ${shapeStr(t.shape)}, expected [batch, pos, ...]`);
  return t.slice(null, pos);
}

/** Tensors of one shape stacked on a new first axis. */
function stackOf(op: string, parts: readonly Tensor[]): Tensor {
  const shape = parts[0]!.shape;
  const size = parts[0]!.size;
  const out = new Float32Array(parts.length * size);
  parts.forEach((p, i) => {
    if (p.ndim !== shape.length || p.shape.some((d, j) => d !== shape[j])) throw new ShapeError(`${op}: component ${i} has shape ${shapeStr(p.shape)}, the first has ${shapeStr(shape)}`);
    out.set(p.data, i * size);
  });
  return new Tensor(out, [parts.length, ...shape]);
}
