/**
 * getActName: TransformerLens's shorthand for hook names (transformer_lens.utils.get_act_name),
 * for the hook points this GPT-2 has:
 *
 *   getActName("post", 2)               "blocks.2.mlp.hook_post"
 *   getActName("resid_pre", 0)          "blocks.0.hook_resid_pre"
 *   getActName("pattern", 1)            "blocks.1.attn.hook_pattern"   (also "attn", "a")
 *   getActName("scale", 3, "ln2")       "blocks.3.ln2.hook_scale"
 *   getActName("scale")                 "ln_final.hook_scale"
 *   getActName("embed")                 "hook_embed"
 *   getActName("k6"), getActName("pre5"), getActName("scale4ln1")   name, layer and type in one word
 *   getActName("blocks.2.mlp.hook_post") a full name is returned as it is
 *
 * Aliases as TransformerLens: attn → pattern, attn_logits → attn_scores, key/query/value → k/q/v,
 * mlp_pre/mlp_post → pre/post; layer types a → attn, m → mlp, b/block/blocks → none.
 */
import { SelfreportError } from "../errors.ts";

const NAME_ALIAS: Record<string, string> = {
  attn: "pattern", attn_logits: "attn_scores", key: "k", query: "q", value: "v", mlp_pre: "pre", mlp_post: "post",
};
const TYPE_ALIAS: Record<string, string> = { a: "attn", attention: "attn", m: "mlp", b: "", block: "", blocks: "" };
const ATTN_NAMES = new Set(["q", "k", "v", "z", "pattern", "attn_scores"]);
const MLP_NAMES = new Set(["pre", "post"]);

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
