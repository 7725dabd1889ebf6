/**
 * What a run reports: one coordinate of one hook of the base model.
 *
 *   layer_type mlp_post   neuron N of blocks.L.mlp.hook_post   (an MLP neuron, [batch, pos, d_mlp])
 *   layer_type mlp_out    dimension N of blocks.L.hook_mlp_out (a residual-stream coordinate, [batch, pos, d_model])
 *
 * Every hook name of a target is built here (targetHook), and every printed name of one (targetLabel).
 */
import { blockHookName } from "../model/hooks.ts";

/** `mlp_post`: neuron N of blocks.L.mlp.hook_post; `mlp_out`: dimension N of blocks.L.hook_mlp_out. */
export type LayerType = "mlp_post" | "mlp_out";
export const LAYER_TYPES: readonly LayerType[] = ["mlp_post", "mlp_out"];

export interface Target {
  layer: number;
  neuron: number;
  layer_type: LayerType;
}

/** The hook a target reads: blocks.L.mlp.hook_post or blocks.L.hook_mlp_out. */
export function targetHook(t: Pick<Target, "layer" | "layer_type">): string {
  return blockHookName(t.layer, t.layer_type === "mlp_post" ? "mlp.hook_post" : "hook_mlp_out");
}

/** The hook of every MLP neuron of a layer: blocks.L.mlp.hook_post. */
export function mlpNeuronsHook(layer: number): string {
  return targetHook({ layer, layer_type: "mlp_post" });
}

/** `blocks.L.mlp.hook_post[N]`: the hook and the coordinate. */
export function targetLabel(t: Target): string {
  return `${targetHook(t)}[${t.neuron}]`;
}

/** The target of a run config (its target_layer, target_neuron and layer_type fields). */
export function runTarget(c: { target_layer: number; target_neuron: number; layer_type: LayerType }): Target {
  return { layer: c.target_layer, neuron: c.target_neuron, layer_type: c.layer_type };
}
