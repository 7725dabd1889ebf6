/**
 * Independent float64 forward passes of the Hugging Face Llama family (LlamaForCausalLM,
 * MistralForCausalLM, Qwen2ForCausalLM) and GPT-NeoX (GPTNeoXForCausalLM), written from the
 * published architectures and the HF checkpoint layout (no code shared with src/), returning every
 * activation under its TransformerLens hook name and shape. The reference for test/model/arch.test.ts.
 *
 * Glossary: B batch, T positions, C d_model, H heads, Hkv key/value heads, Dh d_head, M d_mlp, V vocabulary.
 * nn.Linear: y = x·Wᵀ + b with W stored [out, in].
 *
 * Llama (HF modeling_llama): x = embed_tokens[ids]; per layer
 *   a = RMSNorm(x; input_layernorm)       RMSNorm(x) = x / sqrt(mean(x²) + eps) · w
 *   q = a·q_projᵀ (+ bias, Qwen2) [B, T, H, Dh];  k, v [B, T, Hkv, Dh]
 *   q, k rotated: rotate-half pairs (i, i + Dh/2) by angle t·θ^(−2i/Dh), θ = rope_theta
 *   head h attends with K/V head h / (H/Hkv); scores / √Dh, causal softmax; attn_out = z·o_projᵀ
 *   x += attn_out;  m = RMSNorm(x; post_attention_layernorm);  x += (silu(m·gateᵀ) ⊙ (m·upᵀ))·downᵀ
 * then logits = RMSNorm(x; model.norm)·lm_headᵀ (embed_tokensᵀ when tied).
 * GPT-NeoX (HF modeling_gpt_neox): LayerNorm with biases; the fused query_key_value [3C, C] has
 * rows (head, q|k|v, d_head); only the first rotary_ndims = int(Dh·rotary_pct) dims of q, k are
 * rotated (rotate-half within them, base rotary_emb_base); exact GELU; with use_parallel_residual
 * x_out = x + attn(LN1(x)) + mlp(LN2(x)), else sequential; logits = LN_f(x)·embed_outᵀ.
 *
 * Hooks follow TransformerLens: LayerNorm's hook_normalized is its output x̂·w + b, RMSNorm's is
 * x / scale before the weight; hook_rot_q/hook_rot_k after the rotation; mlp.hook_pre is the gate's
 * pre-activation, mlp.hook_pre_linear the up projection, mlp.hook_post act(gate)·up.
 */
import type { RefResult, RefTensor, RefWeight } from "./reference.ts";

type At = (name: string, shape: number[], data: Float64Array) => Float64Array;

function erf(x: number): number {
  const a = Math.abs(x);
  let r: number;
  if (a < 3) {
    let term = a;
    let sum = a;
    for (let n = 1; n < 300; n++) {
      term *= (-a * a) / n;
      sum += term / (2 * n + 1);
      if (Math.abs(term) < 1e-18) break;
    }
    r = (2 / Math.sqrt(Math.PI)) * sum;
  } else {
    let f = 0;
    for (let k = 80; k >= 1; k--) f = k / 2 / (a + f);
    r = 1 - Math.exp(-a * a) / Math.sqrt(Math.PI) / (a + f);
  }
  return x < 0 ? -r : r;
}

const gelu = (u: number): number => 0.5 * u * (1 + erf(u / Math.SQRT2));
const silu = (u: number): number => u / (1 + Math.exp(-u));

/** x [N, in] · Wᵀ (W [out, in]) + b → [N, out]. */
function linear(x: Float64Array, N: number, nin: number, W: Float64Array, nout: number, b: Float64Array | null): Float64Array {
  const y = new Float64Array(N * nout);
  for (let r = 0; r < N; r++) {
    for (let o = 0; o < nout; o++) {
      let s = b === null ? 0 : b[o]!;
      for (let i = 0; i < nin; i++) s += x[r * nin + i]! * W[o * nin + i]!;
      y[r * nout + o] = s;
    }
  }
  return y;
}

function rmsNorm(x: Float64Array, N: number, C: number, w: Float64Array, eps: number, prefix: string, lead: number[], at: At): Float64Array {
  const scale = new Float64Array(N);
  for (let r = 0; r < N; r++) {
    let s = 0;
    for (let c = 0; c < C; c++) s += x[r * C + c]! ** 2;
    scale[r] = Math.sqrt(s / C + eps);
  }
  const sc = at(`${prefix}.hook_scale`, [...lead, 1], scale);
  const normalized = new Float64Array(N * C);
  for (let r = 0; r < N; r++) for (let c = 0; c < C; c++) normalized[r * C + c] = x[r * C + c]! / sc[r]!;
  const nz = at(`${prefix}.hook_normalized`, [...lead, C], normalized);
  const y = new Float64Array(N * C);
  for (let r = 0; r < N; r++) for (let c = 0; c < C; c++) y[r * C + c] = nz[r * C + c]! * w[c]!;
  return y;
}

function layerNorm(x: Float64Array, N: number, C: number, w: Float64Array, b: Float64Array, eps: number, prefix: string, lead: number[], at: At): Float64Array {
  const scale = new Float64Array(N);
  const mean = new Float64Array(N);
  for (let r = 0; r < N; r++) {
    let m = 0;
    for (let c = 0; c < C; c++) m += x[r * C + c]!;
    m /= C;
    let v = 0;
    for (let c = 0; c < C; c++) v += (x[r * C + c]! - m) ** 2;
    mean[r] = m;
    scale[r] = Math.sqrt(v / C + eps);
  }
  const sc = at(`${prefix}.hook_scale`, [...lead, 1], scale);
  const y = new Float64Array(N * C);
  for (let r = 0; r < N; r++) for (let c = 0; c < C; c++) y[r * C + c] = ((x[r * C + c]! - mean[r]!) / sc[r]!) * w[c]! + b[c]!;
  return at(`${prefix}.hook_normalized`, [...lead, C], y);
}

/** Rotates the first `rot` dims of each head of x [B, T, heads, Dh] (rotate-half), position = t. */
function rope(x: Float64Array, B: number, T: number, heads: number, Dh: number, rot: number, base: number): Float64Array {
  const y = Float64Array.from(x);
  const half = rot / 2;
  for (let b = 0; b < B; b++) for (let t = 0; t < T; t++) for (let h = 0; h < heads; h++) {
    const o = ((b * T + t) * heads + h) * Dh;
    for (let i = 0; i < half; i++) {
      const ang = t / base ** ((2 * i) / rot);
      const c = Math.cos(ang);
      const s = Math.sin(ang);
      const x1 = x[o + i]!;
      const x2 = x[o + i + half]!;
      y[o + i] = x1 * c - x2 * s;
      y[o + i + half] = x2 * c + x1 * s;
    }
  }
  return y;
}

/** Causal attention with K/V heads shared by groups of query heads; hooks scores, pattern, z. */
function attention(q: Float64Array, k: Float64Array, v: Float64Array, B: number, T: number, H: number, Hkv: number, Dh: number, p: string, at: At): Float64Array {
  const rep = H / Hkv;
  const scores = new Float64Array(B * H * T * T);
  for (let b = 0; b < B; b++) for (let h = 0; h < H; h++) for (let i = 0; i < T; i++) for (let j = 0; j < T; j++) {
    let s = -Infinity;
    if (j <= i) {
      s = 0;
      const g = Math.floor(h / rep);
      for (let d = 0; d < Dh; d++) s += q[((b * T + i) * H + h) * Dh + d]! * k[((b * T + j) * Hkv + g) * Dh + d]!;
      s /= Math.sqrt(Dh);
    }
    scores[((b * H + h) * T + i) * T + j] = s;
  }
  const sc = at(`${p}.attn.hook_attn_scores`, [B, H, T, T], scores);
  const pattern = new Float64Array(sc.length);
  for (let r = 0; r < B * H * T; r++) {
    let m = -Infinity;
    for (let j = 0; j < T; j++) m = Math.max(m, sc[r * T + j]!);
    let s = 0;
    for (let j = 0; j < T; j++) s += (pattern[r * T + j] = Math.exp(sc[r * T + j]! - m));
    for (let j = 0; j < T; j++) pattern[r * T + j]! /= s;
  }
  const pat = at(`${p}.attn.hook_pattern`, [B, H, T, T], pattern);
  const z = new Float64Array(B * T * H * Dh);
  for (let b = 0; b < B; b++) for (let h = 0; h < H; h++) for (let i = 0; i < T; i++) for (let j = 0; j <= i; j++) {
    const a = pat[((b * H + h) * T + i) * T + j]!;
    const g = Math.floor(h / rep);
    for (let d = 0; d < Dh; d++) z[((b * T + i) * H + h) * Dh + d]! += a * v[((b * T + j) * Hkv + g) * Dh + d]!;
  }
  return at(`${p}.attn.hook_z`, [B, T, H, Dh], z);
}

function makeAt(acts: Map<string, RefTensor>): At {
  return (name, shape, data) => {
    acts.set(name, { shape, data });
    return data;
  };
}

function weightGetter(weights: ReadonlyMap<string, RefWeight>): { w: (k: string) => Float64Array; maybe: (k: string) => Float64Array | null } {
  const maybe = (k: string): Float64Array | null => {
    const t = weights.get(k);
    return t === undefined ? null : Float64Array.from(t.data);
  };
  return {
    maybe,
    w: (k) => {
      const t = maybe(k);
      if (t === null) throw new Error(`reference: no weight ${k}`);
      return t;
    },
  };
}

const add = (a: Float64Array, b: Float64Array): Float64Array => a.map((x, i) => x + b[i]!);

function embedRows(E: Float64Array, C: number, tokens: readonly (readonly number[])[]): Float64Array {
  const B = tokens.length;
  const T = tokens[0]!.length;
  const out = new Float64Array(B * T * C);
  for (let b = 0; b < B; b++) for (let t = 0; t < T; t++) for (let c = 0; c < C; c++) out[(b * T + t) * C + c] = E[tokens[b]![t]! * C + c]!;
  return out;
}

/** The Llama family's forward (see the top of this file). `config` is config.json as written. */
export function referenceLlama(weights: ReadonlyMap<string, RefWeight>, config: Record<string, unknown>, tokens: readonly (readonly number[])[]): RefResult {
  const L = config["num_hidden_layers"] as number;
  const C = config["hidden_size"] as number;
  const H = config["num_attention_heads"] as number;
  const Hkv = (config["num_key_value_heads"] as number | undefined) ?? H;
  const M = config["intermediate_size"] as number;
  const eps = config["rms_norm_eps"] as number;
  const theta = (config["rope_theta"] as number | undefined) ?? 10000;
  const tied = config["tie_word_embeddings"] === true;
  const Dh = C / H;
  const B = tokens.length;
  const T = tokens[0]!.length;
  const N = B * T;
  const { w, maybe } = weightGetter(weights);
  const acts = new Map<string, RefTensor>();
  const at = makeAt(acts);
  const E = w("model.embed_tokens.weight");
  const V = E.length / C;
  let x = at("hook_embed", [B, T, C], embedRows(E, C, tokens));
  for (let l = 0; l < L; l++) {
    const h = `model.layers.${l}`;
    const p = `blocks.${l}`;
    const residPre = at(`${p}.hook_resid_pre`, [B, T, C], x);
    const a = rmsNorm(residPre, N, C, w(`${h}.input_layernorm.weight`), eps, `${p}.ln1`, [B, T], at);
    const q = at(`${p}.attn.hook_q`, [B, T, H, Dh], linear(a, N, C, w(`${h}.self_attn.q_proj.weight`), H * Dh, maybe(`${h}.self_attn.q_proj.bias`)));
    const k = at(`${p}.attn.hook_k`, [B, T, Hkv, Dh], linear(a, N, C, w(`${h}.self_attn.k_proj.weight`), Hkv * Dh, maybe(`${h}.self_attn.k_proj.bias`)));
    const v = at(`${p}.attn.hook_v`, [B, T, Hkv, Dh], linear(a, N, C, w(`${h}.self_attn.v_proj.weight`), Hkv * Dh, maybe(`${h}.self_attn.v_proj.bias`)));
    const rq = at(`${p}.attn.hook_rot_q`, [B, T, H, Dh], rope(q, B, T, H, Dh, Dh, theta));
    const rk = at(`${p}.attn.hook_rot_k`, [B, T, Hkv, Dh], rope(k, B, T, Hkv, Dh, Dh, theta));
    const z = attention(rq, rk, v, B, T, H, Hkv, Dh, p, at);
    const attnOut = at(`${p}.hook_attn_out`, [B, T, C], linear(z, N, H * Dh, w(`${h}.self_attn.o_proj.weight`), C, maybe(`${h}.self_attn.o_proj.bias`)));
    const residMid = at(`${p}.hook_resid_mid`, [B, T, C], add(residPre, attnOut));
    const m = rmsNorm(residMid, N, C, w(`${h}.post_attention_layernorm.weight`), eps, `${p}.ln2`, [B, T], at);
    const gate = at(`${p}.mlp.hook_pre`, [B, T, M], linear(m, N, C, w(`${h}.mlp.gate_proj.weight`), M, null));
    const up = at(`${p}.mlp.hook_pre_linear`, [B, T, M], linear(m, N, C, w(`${h}.mlp.up_proj.weight`), M, null));
    const post = at(`${p}.mlp.hook_post`, [B, T, M], gate.map((g, i) => silu(g) * up[i]!));
    const mlpOut = at(`${p}.hook_mlp_out`, [B, T, C], linear(post, N, M, w(`${h}.mlp.down_proj.weight`), C, null));
    x = at(`${p}.hook_resid_post`, [B, T, C], add(residMid, mlpOut));
  }
  const xf = rmsNorm(x, N, C, w("model.norm.weight"), eps, "ln_final", [B, T], at);
  const U = tied ? E : w("lm_head.weight");
  return { acts, logits: { shape: [B, T, V], data: linear(xf, N, C, U, V, null) } };
}

/** GPT-NeoX's forward (see the top of this file). */
export function referenceNeox(weights: ReadonlyMap<string, RefWeight>, config: Record<string, unknown>, tokens: readonly (readonly number[])[]): RefResult {
  const L = config["num_hidden_layers"] as number;
  const C = config["hidden_size"] as number;
  const H = config["num_attention_heads"] as number;
  const M = config["intermediate_size"] as number;
  const eps = config["layer_norm_eps"] as number;
  const base = config["rotary_emb_base"] as number;
  const parallel = config["use_parallel_residual"] !== false;
  const Dh = C / H;
  const rot = Math.floor(Dh * (config["rotary_pct"] as number));
  const B = tokens.length;
  const T = tokens[0]!.length;
  const N = B * T;
  const { w } = weightGetter(weights);
  const acts = new Map<string, RefTensor>();
  const at = makeAt(acts);
  const E = w("gpt_neox.embed_in.weight");
  const V = E.length / C;
  let x = at("hook_embed", [B, T, C], embedRows(E, C, tokens));
  for (let l = 0; l < L; l++) {
    const h = `gpt_neox.layers.${l}`;
    const p = `blocks.${l}`;
    const residPre = at(`${p}.hook_resid_pre`, [B, T, C], x);
    const a = layerNorm(residPre, N, C, w(`${h}.input_layernorm.weight`), w(`${h}.input_layernorm.bias`), eps, `${p}.ln1`, [B, T], at);
    const qkv = linear(a, N, C, w(`${h}.attention.query_key_value.weight`), 3 * C, w(`${h}.attention.query_key_value.bias`)); // [N, H, 3, Dh]
    const part = (j: number): Float64Array => {
      const out = new Float64Array(N * C);
      for (let r = 0; r < N; r++) for (let hd = 0; hd < H; hd++) for (let d = 0; d < Dh; d++) out[(r * H + hd) * Dh + d] = qkv[r * 3 * C + (hd * 3 + j) * Dh + d]!;
      return out;
    };
    const q = at(`${p}.attn.hook_q`, [B, T, H, Dh], part(0));
    const k = at(`${p}.attn.hook_k`, [B, T, H, Dh], part(1));
    const v = at(`${p}.attn.hook_v`, [B, T, H, Dh], part(2));
    const rq = at(`${p}.attn.hook_rot_q`, [B, T, H, Dh], rope(q, B, T, H, Dh, rot, base));
    const rk = at(`${p}.attn.hook_rot_k`, [B, T, H, Dh], rope(k, B, T, H, Dh, rot, base));
    const z = attention(rq, rk, v, B, T, H, H, Dh, p, at);
    const attnOut = at(`${p}.hook_attn_out`, [B, T, C], linear(z, N, C, w(`${h}.attention.dense.weight`), C, w(`${h}.attention.dense.bias`)));
    const mlpIn = parallel ? residPre : at(`${p}.hook_resid_mid`, [B, T, C], add(residPre, attnOut));
    const m = layerNorm(mlpIn, N, C, w(`${h}.post_attention_layernorm.weight`), w(`${h}.post_attention_layernorm.bias`), eps, `${p}.ln2`, [B, T], at);
    const pre = at(`${p}.mlp.hook_pre`, [B, T, M], linear(m, N, C, w(`${h}.mlp.dense_h_to_4h.weight`), M, w(`${h}.mlp.dense_h_to_4h.bias`)));
    const post = at(`${p}.mlp.hook_post`, [B, T, M], pre.map(gelu));
    const mlpOut = at(`${p}.hook_mlp_out`, [B, T, C], linear(post, N, M, w(`${h}.mlp.dense_4h_to_h.weight`), C, w(`${h}.mlp.dense_4h_to_h.bias`)));
    x = at(`${p}.hook_resid_post`, [B, T, C], parallel ? add(add(residPre, attnOut), mlpOut) : add(mlpIn, mlpOut));
  }
  const xf = layerNorm(x, N, C, w("gpt_neox.final_layer_norm.weight"), w("gpt_neox.final_layer_norm.bias"), eps, "ln_final", [B, T], at);
  return { acts, logits: { shape: [B, T, V], data: linear(xf, N, C, w("embed_out.weight"), V, null) } };
}
