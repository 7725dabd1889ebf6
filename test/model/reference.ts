/**
 * An independent float64 GPT-2 forward pass, written from the math and the Hugging Face layout
 * (it shares no code with src/model/ or src/tensor/), returning every activation under its
 * TransformerLens hook name and shape. Used as the reference for the HookedTransformer tests.
 *
 * Glossary: B batch, T positions, C d_model, H heads, Dh d_head, M d_mlp, V vocabulary.
 *
 * HF GPT-2, per block (Conv1D: y = x·W + b with W stored [in, out]):
 *   a   = LN(x; ln_1)                       LN(x) = (x − mean) / sqrt(var + eps) · w + b, var biased
 *   qkv = a·c_attn.weight + c_attn.bias      [B, T, 3C]; q | k | v, head h = columns h·Dh..(h+1)·Dh−1
 *   scores[b,h,i,j] = q_i·k_j / √Dh  for j ≤ i, −∞ for j > i;  pattern = softmax over j
 *   z[b,i,h,:] = Σ_j pattern[b,h,i,j]·v[b,j,h,:];  attn_out = z·c_proj.weight + c_proj.bias
 *   x  += attn_out
 *   m   = gelu_new(LN(x; ln_2)·c_fc.weight + c_fc.bias);  x += m·mlp.c_proj.weight + mlp.c_proj.bias
 * then logits = LN(x; ln_f)·wteᵀ (tied) or ·lm_headᵀ, + lm_head.bias when the file has one.
 * gelu_new(u) = 0.5·u·(1 + tanh(√(2/π)·(u + 0.044715·u³))).
 */

/** A float64 activation with its shape. */
export interface RefTensor {
  shape: number[];
  data: Float64Array;
}

/** A weight as found in the file: shape + values (any numeric array). */
export interface RefWeight {
  shape: readonly number[];
  data: ArrayLike<number>;
}

/** Called at every hook point with the activation; returning an array (same length) replaces it. */
export type RefHook = (name: string, act: RefTensor) => Float64Array | void;

export interface RefResult {
  /** Every hook point, in forward order. */
  acts: Map<string, RefTensor>;
  /** [B, T, V] */
  logits: RefTensor;
}

/**
 * Runs the reference on `tokens` (B rows of the same length T). `weights` are keyed by HF names,
 * with or without the `transformer.` prefix; `config` is the parsed config.json (HF field names).
 */
export function referenceForward(
  weights: ReadonlyMap<string, RefWeight>, config: Record<string, unknown>, tokens: readonly (readonly number[])[], hook?: RefHook,
): RefResult {
  const L = config["n_layer"] as number;
  const H = config["n_head"] as number;
  const C = config["n_embd"] as number;
  const eps = (config["layer_norm_epsilon"] as number | undefined) ?? 1e-5;
  const tied = config["tie_word_embeddings"] !== false;
  const Dh = C / H;
  const B = tokens.length;
  const T = tokens[0]!.length;
  if (tokens.some((r) => r.length !== T)) throw new Error("referenceForward: rows must have the same length");

  const w = (key: string): Float64Array => {
    const t = weights.get(key) ?? weights.get(`transformer.${key}`);
    if (t === undefined) throw new Error(`referenceForward: no weight ${key}`);
    return Float64Array.from(t.data);
  };
  const wte = w("wte.weight"); //  [V, C]
  const wpe = w("wpe.weight"); //  [nCtx, C]
  const V = wte.length / C;

  const acts = new Map<string, RefTensor>();
  const at = (name: string, shape: number[], data: Float64Array): Float64Array => {
    let out = data;
    if (hook) {
      const r = hook(name, { shape, data });
      if (r !== undefined) {
        if (r.length !== data.length) throw new Error(`reference hook ${name}: replacement has ${r.length} values, expected ${data.length}`);
        out = r;
      }
    }
    acts.set(name, { shape, data: out });
    return out;
  };

  // Embeddings
  const embed = new Float64Array(B * T * C); // [B, T, C]
  const posEmbed = new Float64Array(B * T * C); // [B, T, C]
  for (let b = 0; b < B; b++) {
    for (let t = 0; t < T; t++) {
      const id = tokens[b]![t]!;
      for (let c = 0; c < C; c++) {
        embed[(b * T + t) * C + c] = wte[id * C + c]!;
        posEmbed[(b * T + t) * C + c] = wpe[t * C + c]!;
      }
    }
  }
  const e = at("hook_embed", [B, T, C], embed);
  const pe = at("hook_pos_embed", [B, T, C], posEmbed);
  let resid: Float64Array = new Float64Array(B * T * C); // [B, T, C]
  for (let i = 0; i < resid.length; i++) resid[i] = e[i]! + pe[i]!;

  const N = B * T; // rows
  for (let l = 0; l < L; l++) {
    const h = `h.${l}`;
    const p = `blocks.${l}`;
    const residPre = at(`${p}.hook_resid_pre`, [B, T, C], resid);

    const x1 = layerNorm(residPre, N, C, w(`${h}.ln_1.weight`), w(`${h}.ln_1.bias`), eps, `${p}.ln1`, [B, T], at); // [B, T, C]
    const qkv = conv1d(x1, N, C, 3 * C, w(`${h}.attn.c_attn.weight`), w(`${h}.attn.c_attn.bias`)); //              [B, T, 3C]
    const split = (part: number): Float64Array => {
      const out = new Float64Array(N * C); // [B, T, H, Dh]
      for (let r = 0; r < N; r++) for (let c = 0; c < C; c++) out[r * C + c] = qkv[r * 3 * C + part * C + c]!;
      return out;
    };
    const q = at(`${p}.attn.hook_q`, [B, T, H, Dh], split(0));
    const k = at(`${p}.attn.hook_k`, [B, T, H, Dh], split(1));
    const v = at(`${p}.attn.hook_v`, [B, T, H, Dh], split(2));

    const scores = new Float64Array(B * H * T * T); // [B, H, Tq, Tk]
    for (let b = 0; b < B; b++) {
      for (let hd = 0; hd < H; hd++) {
        for (let i = 0; i < T; i++) {
          for (let j = 0; j < T; j++) {
            let s = -Infinity;
            if (j <= i) {
              s = 0;
              for (let d = 0; d < Dh; d++) s += q[((b * T + i) * H + hd) * Dh + d]! * k[((b * T + j) * H + hd) * Dh + d]!;
              s /= Math.sqrt(Dh);
            }
            scores[((b * H + hd) * T + i) * T + j] = s;
          }
        }
      }
    }
    const sc = at(`${p}.attn.hook_attn_scores`, [B, H, T, T], scores);
    const pattern = at(`${p}.attn.hook_pattern`, [B, H, T, T], softmaxRows(sc, B * H * T, T));

    const z = new Float64Array(N * C); // [B, T, H, Dh]
    for (let b = 0; b < B; b++) {
      for (let hd = 0; hd < H; hd++) {
        for (let i = 0; i < T; i++) {
          for (let j = 0; j < T; j++) {
            const a = pattern[((b * H + hd) * T + i) * T + j]!;
            if (a === 0) continue;
            for (let d = 0; d < Dh; d++) z[((b * T + i) * H + hd) * Dh + d]! += a * v[((b * T + j) * H + hd) * Dh + d]!;
          }
        }
      }
    }
    const zz = at(`${p}.attn.hook_z`, [B, T, H, Dh], z);
    // z [B, T, H, Dh] is already [B, T, C] in memory: heads side by side, as c_proj reads them.
    const attnOut = at(`${p}.hook_attn_out`, [B, T, C], conv1d(zz, N, C, C, w(`${h}.attn.c_proj.weight`), w(`${h}.attn.c_proj.bias`)));
    const mid = new Float64Array(N * C);
    for (let i = 0; i < mid.length; i++) mid[i] = residPre[i]! + attnOut[i]!;
    const residMid = at(`${p}.hook_resid_mid`, [B, T, C], mid);

    const x2 = layerNorm(residMid, N, C, w(`${h}.ln_2.weight`), w(`${h}.ln_2.bias`), eps, `${p}.ln2`, [B, T], at);
    const cFc = w(`${h}.mlp.c_fc.weight`); // [C, M]
    const M = cFc.length / C;
    const pre = at(`${p}.mlp.hook_pre`, [B, T, M], conv1d(x2, N, C, M, cFc, w(`${h}.mlp.c_fc.bias`)));
    const post = at(`${p}.mlp.hook_post`, [B, T, M], pre.map(geluNew));
    const mlpOut = at(`${p}.hook_mlp_out`, [B, T, C], conv1d(post, N, M, C, w(`${h}.mlp.c_proj.weight`), w(`${h}.mlp.c_proj.bias`)));
    const out = new Float64Array(N * C);
    for (let i = 0; i < out.length; i++) out[i] = residMid[i]! + mlpOut[i]!;
    resid = at(`${p}.hook_resid_post`, [B, T, C], out);
  }

  const xf = layerNorm(resid, N, C, w("ln_f.weight"), w("ln_f.bias"), eps, "ln_final", [B, T], at); // [B, T, C]
  const U = tied ? wte : w("lm_head.weight"); // [V, C]
  const bias = weights.has("lm_head.bias") ? w("lm_head.bias") : null;
  const logits = new Float64Array(N * V); // [B, T, V]
  for (let r = 0; r < N; r++) {
    for (let t = 0; t < V; t++) {
      let s = bias ? bias[t]! : 0;
      for (let c = 0; c < C; c++) s += xf[r * C + c]! * U[t * C + c]!;
      logits[r * V + t] = s;
    }
  }
  return { acts, logits: { shape: [B, T, V], data: logits } };
}

/** y [N, O] = x [N, I] · W [I, O] + b [O]  (HF's Conv1D). */
function conv1d(x: Float64Array, N: number, I: number, O: number, W: Float64Array, b: Float64Array): Float64Array {
  const y = new Float64Array(N * O);
  for (let r = 0; r < N; r++) {
    for (let o = 0; o < O; o++) {
      let s = b[o]!;
      for (let i = 0; i < I; i++) s += x[r * I + i]! * W[i * O + o]!;
      y[r * O + o] = s;
    }
  }
  return y;
}

/** LayerNorm over rows of x [N, C], passing scale [.., 1] and the output x̂·w + b [.., C] (hook_normalized) through the hooks. */
function layerNorm(
  x: Float64Array, N: number, C: number, w: Float64Array, b: Float64Array, eps: number, prefix: string, lead: number[],
  at: (name: string, shape: number[], data: Float64Array) => Float64Array,
): Float64Array {
  const scale = new Float64Array(N); // [.., 1]
  for (let r = 0; r < N; r++) {
    let m = 0;
    for (let c = 0; c < C; c++) m += x[r * C + c]!;
    m /= C;
    let v = 0;
    for (let c = 0; c < C; c++) v += (x[r * C + c]! - m) ** 2;
    scale[r] = Math.sqrt(v / C + eps);
  }
  const s = at(`${prefix}.hook_scale`, [...lead, 1], scale);
  const normalized = new Float64Array(N * C); // [.., C]
  for (let r = 0; r < N; r++) {
    let m = 0;
    for (let c = 0; c < C; c++) m += x[r * C + c]!;
    m /= C;
    for (let c = 0; c < C; c++) normalized[r * C + c] = (x[r * C + c]! - m) / s[r]!;
  }
  // TransformerLens's LayerNorm hooks its output, x̂·w + b (transformer_lens/components/layer_norm.py).
  const y = new Float64Array(N * C);
  for (let r = 0; r < N; r++) for (let c = 0; c < C; c++) y[r * C + c] = normalized[r * C + c]! * w[c]! + b[c]!;
  return at(`${prefix}.hook_normalized`, [...lead, C], y);
}

function softmaxRows(x: Float64Array, rows: number, n: number): Float64Array {
  const y = new Float64Array(x.length);
  for (let r = 0; r < rows; r++) {
    let m = -Infinity;
    for (let j = 0; j < n; j++) m = Math.max(m, x[r * n + j]!);
    let s = 0;
    for (let j = 0; j < n; j++) s += (y[r * n + j] = Math.exp(x[r * n + j]! - m));
    for (let j = 0; j < n; j++) y[r * n + j]! /= s;
  }
  return y;
}

export function geluNew(u: number): number {
  return 0.5 * u * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (u + 0.044715 * u * u * u)));
}

/** log-softmax over the last axis of [rows, n] (for comparing logits up to a per-row constant). */
export function logSoftmaxRows(x: ArrayLike<number>, n: number): Float64Array {
  const rows = x.length / n;
  const y = new Float64Array(x.length);
  for (let r = 0; r < rows; r++) {
    let m = -Infinity;
    for (let j = 0; j < n; j++) m = Math.max(m, x[r * n + j]!);
    let s = 0;
    for (let j = 0; j < n; j++) s += Math.exp(x[r * n + j]! - m);
    const lse = m + Math.log(s);
    for (let j = 0; j < n; j++) y[r * n + j] = x[r * n + j]! - lse;
  }
  return y;
}
