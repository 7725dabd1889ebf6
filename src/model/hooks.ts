/**
 * Hook points, named exactly as in TransformerLens. A hook is `fn(activation, hook) → replacement | undefined`,
 * attached for one forward pass only (nothing global to remove afterwards). Caching is just a hook that stores.
 */
import type { Tensor } from "../tensor/index.ts";
import { SelfreportError } from "../errors.ts";
import { blockSpec, type ModelConfig } from "./config.ts";

export interface HookContext {
  readonly name: string;
}

/** Reads an activation; returning a tensor replaces it (gradients flow through the replacement). */
export type HookFn = (activation: Tensor, hook: HookContext) => Tensor | void;

/** Which hook points a hook applies to: an exact name or a predicate on names. */
export type HookFilter = string | ((name: string) => boolean);

export type Hook = readonly [HookFilter, HookFn];

/** The per-block hook names, in forward order, after the `blocks.{l}.` prefix. Shapes as TransformerLens. */
export const BLOCK_HOOKS = [
  "hook_resid_pre", //        [batch, pos, d_model]
  "ln1.hook_scale", //        [batch, pos, 1]
  "ln1.hook_normalized", //   [batch, pos, d_model]
  "attn.hook_q", //           [batch, pos, head, d_head]
  "attn.hook_k", //           [batch, pos, head, d_head]
  "attn.hook_v", //           [batch, pos, head, d_head]
  "attn.hook_attn_scores", // [batch, head, query_pos, key_pos]
  "attn.hook_pattern", //     [batch, head, query_pos, key_pos]
  "attn.hook_z", //           [batch, pos, head, d_head]
  "hook_attn_out", //         [batch, pos, d_model]
  "hook_resid_mid", //        [batch, pos, d_model]
  "ln2.hook_scale", //        [batch, pos, 1]
  "ln2.hook_normalized", //   [batch, pos, d_model]
  "mlp.hook_pre", //          [batch, pos, d_mlp]
  "mlp.hook_post", //         [batch, pos, d_mlp]
  "hook_mlp_out", //          [batch, pos, d_model]
  "hook_resid_post", //       [batch, pos, d_model]
] as const;

export type BlockHook = (typeof BLOCK_HOOKS)[number];

export function blockHookName(layer: number, hook: BlockHook): string {
  return `blocks.${layer}.${hook}`;
}

/**
 * The per-block hook names of a model (after `blocks.{l}.`), in forward order, as TransformerLens
 * has them for its config: BLOCK_HOOKS for GPT-2; rotary models add attn.hook_rot_q / hook_rot_k
 * (q and k after the rotation; with grouped-query attention hook_k, hook_v and hook_rot_k have
 * n_key_value_heads heads); a gated MLP adds mlp.hook_pre_linear (the up projection x·W_in, while
 * mlp.hook_pre is the gate's pre-activation x·W_gate); a parallel block has no hook_resid_mid.
 */
export function blockHooks(cfg: ModelConfig): string[] {
  const spec = blockSpec(cfg);
  const out: string[] = [];
  for (const h of BLOCK_HOOKS) {
    if (h === "hook_resid_mid" && spec.parallelAttnMlp) continue;
    out.push(h);
    if (h === "attn.hook_v" && spec.positionalEmbeddingType === "rotary") out.push("attn.hook_rot_q", "attn.hook_rot_k");
    if (h === "mlp.hook_pre" && spec.gatedMlp) out.push("mlp.hook_pre_linear");
  }
  return out;
}

/** Every hook point of a model, in the order the forward pass reaches them (no hook_pos_embed for rotary models, as TransformerLens). */
export function hookNames(cfg: ModelConfig): string[] {
  const names = blockSpec(cfg).positionalEmbeddingType === "rotary" ? ["hook_embed"] : ["hook_embed", "hook_pos_embed"];
  const block = blockHooks(cfg);
  for (let l = 0; l < cfg.nLayers; l++) for (const h of block) names.push(`blocks.${l}.${h}`);
  names.push("ln_final.hook_scale", "ln_final.hook_normalized");
  return names;
}

/** Throws a one-line error for an unknown hook name, listing the closest real names. */
export function assertHookName(cfg: ModelConfig, name: string): void {
  const all = hookNames(cfg);
  if (all.includes(name)) return;
  const layerMatch = /^blocks\.(\d+)\./.exec(name);
  if (layerMatch && Number(layerMatch[1]) >= cfg.nLayers) {
    throw new SelfreportError(`unknown hook "${name}": layer ${layerMatch[1]} is out of range, the model has layers 0..${cfg.nLayers - 1}`);
  }
  const closest = all
    .map((n) => [n, editDistance(name, n)] as const)
    .sort((a, b) => a[1] - b[1])
    .slice(0, 3)
    .map(([n]) => n);
  throw new SelfreportError(`unknown hook "${name}"; closest hook names: ${closest.join(", ")} (run \`selfreport inspect\` for all)`);
}

function editDistance(a: string, b: string): number {
  const dp = new Array<number>(b.length + 1);
  for (let j = 0; j <= b.length; j++) dp[j] = j;
  for (let i = 1; i <= a.length; i++) {
    let prev = dp[0]!;
    dp[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const tmp = dp[j]!;
      dp[j] = Math.min(dp[j]! + 1, dp[j - 1]! + 1, prev + (a[i - 1] === b[j - 1] ? 0 : 1));
      prev = tmp;
    }
  }
  return dp[b.length]!;
}

/**
 * The hooks of one forward pass, resolved per hook point once so that `run` costs a Map lookup.
 * `needs(name)` tells the model whether anybody listens at a point (to choose fused kernels).
 */
export class HookRunner {
  private readonly byName = new Map<string, HookFn[]>();

  constructor(cfg: ModelConfig, hooks: readonly Hook[]) {
    if (hooks.length === 0) return;
    const all = hookNames(cfg);
    for (const [filter, fn] of hooks) {
      if (typeof filter === "string") {
        assertHookName(cfg, filter);
        this.add(filter, fn);
      } else {
        for (const n of all) if (filter(n)) this.add(n, fn);
      }
    }
  }

  private add(name: string, fn: HookFn): void {
    const list = this.byName.get(name);
    if (list) list.push(fn);
    else this.byName.set(name, [fn]);
  }

  needs(name: string): boolean {
    return this.byName.has(name);
  }

  run(name: string, x: Tensor): Tensor {
    const fns = this.byName.get(name);
    if (fns === undefined) return x;
    let out = x;
    for (const fn of fns) {
      const r = fn(out, { name });
      if (r !== undefined) {
        if (r.size !== out.size || r.shape.some((d, i) => d !== out.shape[i])) {
          throw new SelfreportError(`hook on "${name}" returned shape [${r.shape.join(", ")}], expected [${out.shape.join(", ")}]`);
        }
        out = r;
      }
    }
    return out;
  }
}
