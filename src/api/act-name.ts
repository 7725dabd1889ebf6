/**
 * getActName: TransformerLens's shorthand for hook names (transformer_lens.utils.get_act_name),
 * for the hook points selfreport's models have (rotary models: rot_q, rot_k; gated MLPs: pre_linear):
 *
 *   getActName("post", 2)               "blocks.2.mlp.hook_post"
 *   getActName("resid_pre", 0)          "blocks.0.hook_resid_pre"
 *   getActName("pattern", 1)            "blocks.1.attn.hook_pattern"   (also "attn", "a")
 *   getActName("scale", 3, "ln2")       "blocks.3.ln2.hook_scale"
 *   getActName("rot_k", 1)              "blocks.1.attn.hook_rot_k"
 *   getActName("pre_linear", 0)         "blocks.0.mlp.hook_pre_linear"
 *   getActName("scale")                 "ln_final.hook_scale"
 *   getActName("embed")                 "hook_embed"
 *   getActName("k6"), getActName("pre5"), getActName("scale4ln1")   name, layer and type in one word
 *   getActName("blocks.2.mlp.hook_post") a full name is returned as it is
 *
 * Aliases as TransformerLens: attn → pattern, attn_logits → attn_scores, key/query/value → k/q/v,
 * mlp_pre/mlp_pre_linear/mlp_post → pre/pre_linear/post; layer types a → attn, m → mlp, b/block/blocks → none.
 */
import { SelfreportError } from "../errors.ts";

const NAME_ALIAS: Record<string, string> = {
  attn: "pattern", attn_logits: "attn_scores", key: "k", query: "q", value: "v", mlp_pre: "pre", mlp_pre_linear: "pre_linear", mlp_post: "post",
};
const TYPE_ALIAS: Record<string, string> = { a: "attn", attention: "attn", m: "mlp", b: "", block: "", blocks: "" };
const ATTN_NAMES = new Set(["q", "k", "v", "z", "rot_q", "rot_k", "pattern", "attn_scores"]);
const MLP_NAMES = new Set(["pre", "pre_linear", "post"]);

export function getActName(name: string, layer?: number, layerType?: string): string {
  if ((name.includes(".") || name.startsWith("hook_")) && layer === undefined && layerType === undefined) return name;
  if (layer !== undefined && (!Number.isInteger(layer) || layer < 0)) throw new SelfreportError(`getActName("${name}", ${layer}): the layer must be an integer ≥ 0`);
  let base = name;
  let l = layer;
  let type = layerType;
  const packed = /^([a-z_]+?)(\d+)([a-z]\w*)?$/.exec(name);
  if (packed !== null && layer === undefined) {
    base = packed[1]!;
    l = Number(packed[2]);
    type = packed[3] ?? type;
  }
  if (!/^[a-z_]+$/.test(base)) throw new SelfreportError(`getActName("${name}"): expected a short name such as "post", "resid_pre" or "k6", or a full hook name`);
  base = NAME_ALIAS[base] ?? base;
  if (ATTN_NAMES.has(base)) type = "attn";
  else if (MLP_NAMES.has(base)) type = "mlp";
  else if (type !== undefined && Object.hasOwn(TYPE_ALIAS, type)) type = TYPE_ALIAS[type];
  let full = l === undefined ? "" : `blocks.${l}.`;
  if (type) full += `${type}.`;
  full += `hook_${base}`;
  if ((base === "scale" || base === "normalized") && l === undefined) full = `ln_final.${full}`;
  return full;
}
