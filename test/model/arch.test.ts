/**
 * The Llama family (LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM) and GPT-NeoX
 * (GPTNeoXForCausalLM) in src/model/: tiny random models written in the Hugging Face layout by
 * test/helpers/tiny-arch-model.ts, checked hook by hook against test/model/reference-arch.ts (an
 * independent float64 implementation of the published architectures), for raw and tl weights; the
 * KV-cache and row paths (generation, patching) against the full forward; TransformerLens's names,
 * hooks and parameter shapes; and the errors for configs selfreport does not run.
 * Every numerical comparison reports its worst scaled difference (t.diagnostic).
 */
import { test, type TestContext } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Tensor, noGrad, backward, RotaryTable, scale } from "../../src/tensor/index.ts";
import { SelfreportError } from "../../src/errors.ts";
import { loadModel, saveModel, readModelConfig, readHfParams } from "../../src/model/load.ts";
import { hfToParams } from "../../src/model/hf.ts";
import { processWeights } from "../../src/model/process.ts";
import { paramShapes, type HookedTransformer, type RowsContext, type TokenBatch } from "../../src/model/transformer.ts";
import { KVCache } from "../../src/lm/generate.ts";
import { makeTinyLlamaModel, makeTinyNeoxModel, type TinyArchModel, type TinyLlamaOptions, type TinyNeoxOptions } from "../helpers/tiny-arch-model.ts";
import { mulberry32, randn } from "../helpers/rng.ts";
import { runCapture } from "../helpers/cli.ts";
import { readSafetensors } from "../../src/io/safetensors.ts";
import { HookedTransformer as ApiModel } from "../../src/api/hooked-transformer.ts";
import { tokenBatch } from "../../src/model/transformer.ts";
import { getActName } from "../../src/api/act-name.ts";
import { referenceLlama, referenceNeox } from "./reference-arch.ts";
import { logSoftmaxRows } from "./reference.ts";

const TOL = 1e-4;
const tmp = (t: TestContext): string => {
  const dir = mkdtempSync(join(tmpdir(), "selfreport-arch-"));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
};

function batchOf(rows: readonly (readonly number[])[]): TokenBatch {
  return { ids: Int32Array.from(rows.flat()), batch: rows.length, len: rows[0]!.length };
}

function randomRows(seed: number, B: number, T: number, V: number): number[][] {
  const rng = mulberry32(seed);
  return Array.from({ length: B }, () => Array.from({ length: T }, () => Math.floor(rng() * V)));
}

/** max |got − ref| / max(1, max |ref|). */
function scaledDiff(got: ArrayLike<number>, ref: ArrayLike<number>): number {
  let diff = 0;
  let scale = 1;
  for (let i = 0; i < ref.length; i++) {
    const g = got[i]!;
    const r = ref[i]!;
    if (Number.isFinite(r)) scale = Math.max(scale, Math.abs(r));
    if (g === r) continue;
    const d = Number.isFinite(g) && Number.isFinite(r) ? Math.abs(g - r) : Infinity;
    if (!(d <= diff)) diff = d;
  }
  return diff / scale;
}

const worst = { value: 0 };

function assertNear(t: TestContext, what: string, got: { shape: readonly number[]; data: ArrayLike<number> }, ref: { shape: readonly number[]; data: ArrayLike<number> }, tol = TOL): number {
  assert.deepEqual([...got.shape], [...ref.shape], `${what}: shape [${got.shape.join(", ")}], reference [${ref.shape.join(", ")}]`);
  const d = scaledDiff(got.data, ref.data);
  t.diagnostic(`${what}: worst scaled |diff| ${d.toExponential(2)}`);
  worst.value = Math.max(worst.value, d);
  if (!(d <= tol)) assert.fail(`${what}: worst scaled |diff| ${d} > ${tol}`);
  return d;
}

/** The config read from `json` written into `dir`'s config.json. */
function readModelConfigOf(dir: string, json: Record<string, unknown>): ReturnType<typeof readModelConfig> {
  writeFileSync(join(dir, "config.json"), JSON.stringify(json));
  return readModelConfig(dir);
}

function assertError(fn: () => unknown, ...patterns: RegExp[]): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof SelfreportError, `expected a SelfreportError, got ${String(e)}`);
    assert.ok(!e.message.includes("\n"), `message is not one line: ${e.message}`);
    for (const p of patterns) assert.match(e.message, p);
    return true;
  });
}

type Case = { label: string; make: (dir: string) => TinyArchModel; ref: typeof referenceLlama; B: number; T: number; seed: number };

const llama = (o: TinyLlamaOptions) => (dir: string): TinyArchModel => makeTinyLlamaModel(join(dir, "model"), o);
const neox = (o: TinyNeoxOptions) => (dir: string): TinyArchModel => makeTinyNeoxModel(join(dir, "model"), o);

const CASES: Case[] = [
  { label: "Llama, 4 heads, untied", make: llama({ seed: 1 }), ref: referenceLlama, B: 2, T: 9, seed: 11 },
  { label: "Llama, GQA 4 query heads / 2 K/V heads, tied, rope_theta 500000", make: llama({ seed: 2, nKvHeads: 2, tied: true, ropeTheta: 500000 }), ref: referenceLlama, B: 2, T: 12, seed: 12 },
  { label: "Qwen2, q/k/v biases, GQA 4 / 1, tied", make: llama({ seed: 3, architecture: "Qwen2ForCausalLM", qkvBias: true, nKvHeads: 1, tied: true, nLayers: 3 }), ref: referenceLlama, B: 3, T: 7, seed: 13 },
  { label: "Mistral, sharded checkpoint (3 shards + index.json), GQA 4 / 2", make: llama({ seed: 4, architecture: "MistralForCausalLM", nKvHeads: 2, shards: 3 }), ref: referenceLlama, B: 1, T: 16, seed: 14 },
  { label: "Qwen2, BF16 file in 2 shards (as Qwen2 checkpoints ship), GQA 4 / 2, tied", make: llama({ seed: 7, architecture: "Qwen2ForCausalLM", qkvBias: true, nKvHeads: 2, tied: true, dtype: "BF16", shards: 2 }), ref: referenceLlama, B: 2, T: 6, seed: 17 },
  { label: "Qwen2 with as many K/V heads as heads (TL's _W_K names all the same), untied", make: llama({ seed: 8, architecture: "Qwen2ForCausalLM", qkvBias: true }), ref: referenceLlama, B: 2, T: 5, seed: 18 },
  { label: "GPT-NeoX (Pythia), parallel attention + MLP, rotary_pct 0.25, untied embed_out", make: neox({ seed: 5, dModel: 32, nHeads: 2 }), ref: referenceNeox, B: 2, T: 10, seed: 15 },
  { label: "GPT-NeoX, sequential residual, rotary_pct 0.5, 4 heads", make: neox({ seed: 6, parallel: false, rotaryPct: 0.5, nHeads: 4, nLayers: 3 }), ref: referenceNeox, B: 2, T: 8, seed: 16 },
];

for (const c of CASES) {
  test(`every hook matches the float64 reference, raw weights: ${c.label}`, (t) => {
    const m = c.make(tmp(t));
    const { model } = loadModel(m.dir, { weights: "raw" });
    const rows = randomRows(c.seed, c.B, c.T, model.cfg.dVocab);
    const { logits, cache } = noGrad(() => model.runWithCache(batchOf(rows), () => true));
    const ref = c.ref(m.weights, m.config, rows);
    assert.deepEqual([...cache.keys()], [...ref.acts.keys()], "hook points and their order");
    assert.deepEqual(model.hookNames(), [...ref.acts.keys()], "hookNames() lists exactly the hooks the forward runs");
    for (const [name, r] of ref.acts) assertNear(t, name, cache.get(name)!, r);
    assertNear(t, "logits", logits!, ref.logits);
  });

  test(`tl weights: same MLP activations and attention, log-probabilities equal raw ones: ${c.label}`, (t) => {
    const m = c.make(tmp(t));
    const raw = loadModel(m.dir, { weights: "raw" }).model;
    const tl = loadModel(m.dir, { weights: "tl" }).model;
    const rows = randomRows(c.seed + 1, c.B, c.T, raw.cfg.dVocab);
    const a = noGrad(() => raw.runWithCache(batchOf(rows), () => true));
    const b = noGrad(() => tl.runWithCache(batchOf(rows), () => true));
    for (let l = 0; l < raw.cfg.nLayers; l++) {
      // invariant under processing (hook_z is not: b_V moves into b_O; resid is not for LayerNorm models: writes are centred)
      for (const h of ["attn.hook_rot_q", "attn.hook_rot_k", "attn.hook_pattern", "ln1.hook_scale", "ln2.hook_scale", "mlp.hook_pre", ...(raw.spec.gatedMlp ? ["mlp.hook_pre_linear"] : []), "mlp.hook_post"]) {
        const n = `blocks.${l}.${h}`;
        assertNear(t, `${n} tl vs raw`, b.cache.get(n)!, a.cache.get(n)!);
      }
    }
    const V = raw.cfg.dVocab;
    const lpRaw = logSoftmaxRows(a.logits!.data, V);
    const lpTl = logSoftmaxRows(b.logits!.data, V);
    assertNear(t, "log-probabilities tl vs raw", { shape: a.logits!.shape, data: lpTl }, { shape: a.logits!.shape, data: lpRaw });
    // TransformerLens centres the unembedding over the vocabulary: logits move by one constant per position.
    const centred = (x: Float32Array): Float64Array => {
      const out = new Float64Array(x.length);
      for (let r = 0; r < x.length / V; r++) {
        let mean = 0;
        for (let v = 0; v < V; v++) mean += x[r * V + v]!;
        mean /= V;
        for (let v = 0; v < V; v++) out[r * V + v] = x[r * V + v]! - mean;
      }
      return out;
    };
    assertNear(t, "logits tl vs raw (each position's mean removed)", { shape: a.logits!.shape, data: Float64Array.from(b.logits!.data) }, { shape: a.logits!.shape, data: centred(a.logits!.data) });
    // the norms' weights are folded into the readers: every ln.w is 1 and the weights that read differ
    for (let l = 0; l < tl.cfg.nLayers; l++) for (const n of ["ln1", "ln2"]) assert.ok(tl.p(`blocks.${l}.${n}.w`).data.every((x) => x === 1), `blocks.${l}.${n}.w is all ones`);
    assert.ok(tl.p("ln_final.w").data.every((x) => x === 1));
    if (tl.spec.normalizationType === "RMS") {
      // no centring for RMSNorm models (TransformerLens skips center_writing_weights): W_E is as in the file
      assert.deepEqual([...tl.W_E.data], [...raw.W_E.data], "RMS: W_E is not centred");
      const Wg = tl.W_gate(0).data;
      const Wg0 = raw.W_gate(0).data;
      const w2 = raw.p("blocks.0.ln2.w").data;
      const M = raw.cfg.dMlp;
      for (let i = 0; i < Wg.length; i++) assert.ok(Math.abs(Wg[i]! - Wg0[i]! * w2[Math.floor(i / M)]!) < 1e-6, "W_gate has ln2.w folded in");
    } else {
      // LayerNorm models: writing weights centred over d_model
      const WE = tl.W_E.data;
      const C = tl.cfg.dModel;
      for (let v = 0; v < tl.cfg.dVocab; v++) {
        let s = 0;
        for (let c = 0; c < C; c++) s += WE[v * C + c]!;
        assert.ok(Math.abs(s / C) < 1e-5, "W_E rows have mean 0");
      }
    }
  });
}

/** Logits of a KV-cache generation fed in chunks, against the full forward. */
function checkKvCache(t: TestContext, model: HookedTransformer, ids: number[], chunks: number[], what: string): void {
  const full = noGrad(() => model.forward(batchOf([ids])).logits!);
  const cache = new KVCache(model);
  const got: number[] = [];
  let at = 0;
  for (const n of chunks) {
    got.push(...cache.append(ids.slice(at, at + n)).data);
    at += n;
  }
  assert.equal(at, ids.length);
  assertNear(t, what, { shape: full.shape, data: got }, full);
}

test("generation with the KV cache equals the full forward: Llama with GQA (rotary positions continue across steps)", (t) => {
  const m = makeTinyLlamaModel(join(tmp(t), "m"), { seed: 21, nKvHeads: 2, nCtx: 40 });
  for (const weights of ["raw", "tl"] as const) {
    const { model } = loadModel(m.dir, { weights });
    const ids = randomRows(22, 1, 20, model.cfg.dVocab)[0]!;
    checkKvCache(t, model, ids, [7, 1, 1, 5, 6], `Llama GQA ${weights}: cached logits vs forward`);
  }
});

test("hooks on the rotary hooks and the gated MLP run in generation's row path as in the forward (cached keys are the hooked ones)", (t) => {
  const m = makeTinyLlamaModel(join(tmp(t), "m"), { seed: 25, nKvHeads: 2 });
  const { model } = loadModel(m.dir, { weights: "tl" });
  const ids = randomRows(26, 1, 12, model.cfg.dVocab)[0]!;
  const hooks = [
    ["blocks.0.attn.hook_rot_k", (x: Tensor) => scale(x, 0.5)],
    ["blocks.1.attn.hook_rot_q", (x: Tensor) => scale(x, -1)],
    ["blocks.0.mlp.hook_pre_linear", (x: Tensor) => scale(x, 2)],
  ] as const;
  const full = noGrad(() => model.runWithHooks(batchOf([ids]), hooks).logits!);
  const plain = noGrad(() => model.forward(batchOf([ids])).logits!);
  assert.ok(scaledDiff(full.data, plain.data) > 1e-2, "the hooks change the output");
  const cache = new KVCache(model, { hooks });
  const got = [...cache.append(ids.slice(0, 5)).data, ...cache.append(ids.slice(5, 6)).data, ...cache.append(ids.slice(6)).data];
  assertNear(t, "hooked generation vs hooked forward", { shape: full.shape, data: got }, full);
});

test("generation with the KV cache equals the full forward: GPT-NeoX (partial rotary, parallel block)", (t) => {
  const m = makeTinyNeoxModel(join(tmp(t), "m"), { seed: 23, nCtx: 40 });
  const { model } = loadModel(m.dir, { weights: "tl" });
  const ids = randomRows(24, 1, 18, model.cfg.dVocab)[0]!;
  checkKvCache(t, model, ids, [5, 1, 12], "NeoX: cached logits vs forward");
});

test("a right-padded batch with an attention mask gives each row what it gives alone (rotary positions start at 0 in every row)", (t) => {
  for (const m of [makeTinyLlamaModel(join(tmp(t), "l"), { seed: 71, nKvHeads: 2 }), makeTinyNeoxModel(join(tmp(t), "n"), { seed: 72 })]) {
    const { model } = loadModel(m.dir, { weights: "tl" });
    const rows = [randomRows(73, 1, 9, model.cfg.dVocab)[0]!, randomRows(74, 1, 4, model.cfg.dVocab)[0]!];
    const batch = tokenBatch(rows, 0);
    const { logits, cache } = noGrad(() => model.runWithCache(batch, ["blocks.1.mlp.hook_post"]));
    const V = model.cfg.dVocab;
    const M = model.cfg.dMlp;
    rows.forEach((r, b) => {
      const alone = noGrad(() => model.runWithCache(batchOf([r]), ["blocks.1.mlp.hook_post"]));
      const n = r.length;
      assertNear(t, `row ${b} logits`, { shape: [n, V], data: logits!.data.subarray(b * 9 * V, (b * 9 + n) * V) }, { shape: [n, V], data: alone.logits!.data });
      const post = cache.get("blocks.1.mlp.hook_post")!.data;
      assertNear(t, `row ${b} mlp.hook_post`, { shape: [n, M], data: post.subarray(b * 9 * M, (b * 9 + n) * M) }, { shape: [n, M], data: alone.cache.get("blocks.1.mlp.hook_post")!.data });
    });
  }
});

test("blockRows: rows in groups of one at cached positions (patching's path) reproduce the forward's resid_post", (t) => {
  for (const [label, m] of [
    ["Llama GQA", makeTinyLlamaModel(join(tmp(t), "l"), { seed: 31, nKvHeads: 2 })],
    ["NeoX", makeTinyNeoxModel(join(tmp(t), "n"), { seed: 32 })],
  ] as const) {
    const { model } = loadModel(m.dir, { weights: "raw" });
    const B = 2;
    const T = 9;
    const rows = randomRows(33, B, T, model.cfg.dVocab);
    const l = 1;
    const names = [`blocks.${l}.hook_resid_pre`, `blocks.${l}.hook_resid_post`, model.keyHook(l), `blocks.${l}.attn.hook_v`];
    assert.equal(model.keyHook(l), `blocks.${l}.attn.hook_rot_k`, "rotary models cache rotated keys");
    const { cache } = noGrad(() => model.runWithCache(batchOf(rows), names));
    // one row per (sequence, position) picked out of order; each attends to its sequence's keys before it
    const picks: Array<[number, number]> = [[1, 8], [0, 3], [1, 0], [0, 6]];
    const C = model.cfg.dModel;
    const X = new Float32Array(picks.length * C);
    const pre = cache.get(`blocks.${l}.hook_resid_pre`)!.data;
    picks.forEach(([b, p], r) => X.set(pre.subarray((b * T + p) * C, (b * T + p + 1) * C), r * C));
    const ctx: RowsContext = {
      pastK: cache.get(model.keyHook(l))!.data, pastV: cache.get(`blocks.${l}.attn.hook_v`)!.data, stride: T,
      rowSeq: Int32Array.from(picks.map(([b]) => b)), rowPast: Int32Array.from(picks.map(([, p]) => p)),
      rowGroup: Int32Array.from(picks.map((_, r) => r)), hookShape: [picks.length, 1],
    };
    const out = model.blockRows(l, new Tensor(X, [picks.length, C]), ctx);
    const post = cache.get(`blocks.${l}.hook_resid_post`)!.data;
    const want = new Float32Array(picks.length * C);
    picks.forEach(([b, p], r) => want.set(post.subarray((b * T + p) * C, (b * T + p + 1) * C), r * C));
    assertNear(t, `${label}: blockRows resid_post vs forward`, out.resid, { shape: [picks.length, C], data: want });
  }
});

test("TransformerLens names: hooks and parameter shapes of each family", (t) => {
  const dir = tmp(t);
  const gqa = loadModel(makeTinyLlamaModel(join(dir, "a"), { nKvHeads: 2, nLayers: 1 }).dir, { weights: "raw" }).model;
  assert.deepEqual(gqa.hookNames(), [
    "hook_embed",
    "blocks.0.hook_resid_pre", "blocks.0.ln1.hook_scale", "blocks.0.ln1.hook_normalized",
    "blocks.0.attn.hook_q", "blocks.0.attn.hook_k", "blocks.0.attn.hook_v", "blocks.0.attn.hook_rot_q", "blocks.0.attn.hook_rot_k",
    "blocks.0.attn.hook_attn_scores", "blocks.0.attn.hook_pattern", "blocks.0.attn.hook_z", "blocks.0.hook_attn_out", "blocks.0.hook_resid_mid",
    "blocks.0.ln2.hook_scale", "blocks.0.ln2.hook_normalized", "blocks.0.mlp.hook_pre", "blocks.0.mlp.hook_pre_linear", "blocks.0.mlp.hook_post",
    "blocks.0.hook_mlp_out", "blocks.0.hook_resid_post", "ln_final.hook_scale", "ln_final.hook_normalized",
  ]);
  const shapes = new Map(paramShapes(gqa.cfg));
  assert.deepEqual(shapes.get("blocks.0.attn._W_K"), [2, 16, 4], "GQA K weights per K/V head, TL's _W_K");
  assert.deepEqual(shapes.get("blocks.0.attn._b_V"), [2, 4]);
  assert.equal(shapes.has("blocks.0.attn.W_K"), false);
  assert.deepEqual(shapes.get("blocks.0.mlp.W_gate"), [16, 24]);
  assert.deepEqual(shapes.get("blocks.0.mlp.W_in"), [16, 24]);
  assert.equal(shapes.has("blocks.0.ln1.b"), false, "RMSNorm has no bias");
  assert.equal(shapes.has("pos_embed.W_pos"), false, "rotary: no W_pos");
  assert.deepEqual(gqa.W_K(0).shape, [4, 16, 4], "W_K(l) repeats K/V heads per query head, as TL's W_K property");
  const k = gqa.W_K(0).data;
  const k0 = gqa.p("blocks.0.attn._W_K").data;
  assert.deepEqual([...k.subarray(16 * 4, 2 * 16 * 4)], [...k0.subarray(0, 16 * 4)], "query head 1 reads K/V head 0");
  assert.deepEqual([...k.subarray(2 * 16 * 4, 3 * 16 * 4)], [...k0.subarray(16 * 4, 2 * 16 * 4)], "query head 2 reads K/V head 1");
  assert.equal(gqa.keyHook(0), "blocks.0.attn.hook_rot_k");

  const mha = loadModel(makeTinyLlamaModel(join(dir, "b"), { nLayers: 1 }).dir, { weights: "raw" }).model;
  assert.ok(new Map(paramShapes(mha.cfg)).has("blocks.0.attn.W_K"), "Llama without GQA: the names are W_K/W_V");
  // TransformerLens configures Qwen2 and Mistral with n_key_value_heads always: _W_K even with as many K/V heads as heads
  const qwenMha = loadModel(makeTinyLlamaModel(join(dir, "q"), { nLayers: 1, architecture: "Qwen2ForCausalLM", qkvBias: true }).dir, { weights: "tl" }).model;
  assert.deepEqual(new Map(paramShapes(qwenMha.cfg)).get("blocks.0.attn._W_K"), [4, 16, 4]);
  assert.deepEqual(qwenMha.W_K(0).shape, [4, 16, 4]);

  const nx = loadModel(makeTinyNeoxModel(join(dir, "c"), { nLayers: 1 }).dir, { weights: "raw" }).model;
  const nxHooks = nx.hookNames();
  assert.ok(!nxHooks.includes("blocks.0.hook_resid_mid"), "a parallel block has no resid_mid");
  assert.ok(!nxHooks.includes("blocks.0.mlp.hook_pre_linear") && nxHooks.includes("blocks.0.attn.hook_rot_q"));
  assert.ok(!nxHooks.includes("hook_pos_embed"));
  assert.equal(nx.cfg.rotaryDim, 2, "rotary_pct 0.25 of d_head 8");
  assert.deepEqual(new Map(paramShapes(nx.cfg)).get("blocks.0.ln1.b"), [16], "LayerNorm with biases");
  assertError(() => nx.runWithCache(batchOf([[1, 2]]), ["blocks.0.hook_resid_mid"]), /unknown hook "blocks\.0\.hook_resid_mid"/);
  assertError(() => mha.runWithCache(batchOf([[1, 2]]), ["hook_pos_embed"]), /unknown hook "hook_pos_embed"/);
});

test("errors: unknown architectures and configs selfreport does not run, each one line naming the value", (t) => {
  const m = makeTinyLlamaModel(join(tmp(t), "m"), { nLayers: 1 });
  const cfgPath = join(m.dir, "config.json");
  const cfg = JSON.parse(readFileSync(cfgPath, "utf8")) as Record<string, unknown>;
  const cases: Array<[Record<string, unknown>, RegExp[]]> = [
    [{ architectures: ["GemmaForCausalLM"], model_type: "gemma" }, [/GemmaForCausalLM/, /not supported/, /LlamaForCausalLM/, /Qwen2ForCausalLM/, /MistralForCausalLM/, /GPTNeoXForCausalLM/, /GPT2LMHeadModel/]],
    [{ architectures: undefined, model_type: "phi" }, [/model_type "phi"/, /not supported/, /LlamaForCausalLM/]],
    [{ rope_scaling: { rope_type: "llama3", factor: 8 } }, [/rope_scaling/, /llama3/, /plain rotary/]],
    [{ rope_scaling: { type: "default" } }, []],
    [{ num_key_value_heads: 3 }, [/num_attention_heads 4/, /num_key_value_heads 3/]],
    [{ hidden_act: "gelu" }, [/hidden_act "gelu"/, /silu/]],
    [{ mlp_bias: true }, [/mlp_bias/]],
  ];
  for (const [patch, patterns] of cases) {
    writeFileSync(cfgPath, JSON.stringify({ ...cfg, ...patch }));
    if (patterns.length === 0) loadModel(m.dir);
    else assertError(() => loadModel(m.dir), ...patterns);
  }
  writeFileSync(cfgPath, JSON.stringify(cfg));
  // a tensor the architecture does not have is refused by name
  const n = makeTinyNeoxModel(join(tmp(t), "n"), { nLayers: 1 });
  const nc = JSON.parse(readFileSync(join(n.dir, "config.json"), "utf8")) as Record<string, unknown>;
  const { rotary_pct: _pct, ...noPct } = nc;
  void _pct;
  writeFileSync(join(n.dir, "config.json"), JSON.stringify({ ...noPct, hidden_size: 32, intermediate_size: 64 }));
  assertError(() => loadModel(n.dir), /tensor "gpt_neox\.embed_in\.weight" has shape \[40, 16\], but config\.json implies \[40, 32\]/);
  assert.equal(readModelConfigOf(n.dir, { ...noPct }).rotaryDim, 2, "rotary_pct absent: Hugging Face's default 0.25 (of d_head 8)");
  writeFileSync(join(n.dir, "config.json"), JSON.stringify({ ...nc, rotary_pct: 0.1 }));
  assertError(() => loadModel(n.dir), /rotary_pct 0\.1/, /even/);
  writeFileSync(join(n.dir, "config.json"), JSON.stringify({ ...nc, num_hidden_layers: 2 }));
  assertError(() => loadModel(n.dir), /"gpt_neox\.layers\.1\.input_layernorm\.weight" is missing/);
});

test("CLI inspect and activations (--tokens) on a Qwen2 model; without tokenizer files --prompt says so and points at --tokens", async (t) => {
  const dir = tmp(t);
  const m = makeTinyLlamaModel(join(dir, "qwen"), { seed: 41, architecture: "Qwen2ForCausalLM", qkvBias: true, nKvHeads: 2 });
  const ins = await runCapture(["inspect", "--model", m.dir, "--json"]);
  assert.equal(ins.code, 0, ins.lines.join("\n"));
  const info = JSON.parse(ins.lines.join("\n")) as { config: Record<string, unknown>; parameters: number; hooks: string[] };
  assert.equal(info.config["hfArchitecture"], "Qwen2ForCausalLM");
  assert.equal(info.config["nKeyValueHeads"], 2);
  assert.ok(info.hooks.includes("blocks.1.mlp.hook_pre_linear") && info.hooks.includes("blocks.0.attn.hook_rot_k"));
  const { model } = loadModel(m.dir, { weights: "tl" });
  assert.equal(info.parameters, model.parameters().reduce((a, p) => a + p.size, 0));
  const text = await runCapture(["inspect", "--model", m.dir]);
  assert.ok(text.lines.some((l) => /^architecture Qwen2ForCausalLM: RMSNorm, rotary \(4 of 4 dims, base 10000\), grouped-query attention \(2 K\/V heads\), gated MLP silu/.test(l)), text.lines.join("\n"));

  const out = join(dir, "acts.safetensors");
  const hooks = ["blocks.1.mlp.hook_pre_linear", "blocks.0.attn.hook_rot_k", "blocks.1.mlp.hook_post"];
  const r = await runCapture(["activations", "--model", m.dir, "--tokens", "1,2,3,4", "--tokens", "5, 6", ...hooks.flatMap((h) => ["--hook", h]), "--out", out]);
  assert.equal(r.code, 0, r.lines.join("\n"));
  const file = readSafetensors(out).tensors;
  const { cache } = noGrad(() => model.runWithCache(tokenBatch([[1, 2, 3, 4], [5, 6]], 0), hooks));
  for (const h of hooks) assertNear(t, `activations file ${h}`, { shape: file.get(h)!.shape, data: file.get(h)!.data }, cache.get(h)!, 0);
  assert.deepEqual([...file.get("attention_mask")!.data], [1, 1, 1, 1, 1, 1, 0, 0]);
  const again = ["activations", "--model", m.dir, "--tokens", "7", "--hook", hooks[0]!, "--out", out];
  assert.equal((await runCapture(again)).code, 1, "an existing activations file is kept without --force");
  assert.equal((await runCapture([...again, "--force"])).code, 0, "and recognised as one (prompts metadata) with --force");
  assert.deepEqual(readSafetensors(out).tensors.get("tokens")!.shape, [1, 1]);

  const bad = await runCapture(["activations", "--model", m.dir, "--prompt", "hello", "--hook", hooks[0]!, "--out", join(dir, "b.safetensors")]);
  assert.equal(bad.code, 1);
  assert.match(bad.lines.join("\n"), /qwen: no tokenizer files: a model directory needs vocab\.json \+ merges\.txt or tokenizer\.json\. .*; without a tokenizer, give token ids \(activations --tokens\)$/);
  // every command that encodes text says the same, before any output is written
  for (const args of [
    ["dataset", "--model", m.dir, "--layer", "0", "--neuron", "0", "--n", "10", "--out", join(dir, "d.safetensors")],
    ["generate", "--model", m.dir, "--prompt", "hello"],
  ]) {
    const r2 = await runCapture(args);
    assert.equal(r2.code, 1, `${args[0]}: ${r2.lines.join("\n")}`);
    assert.match(r2.lines.join("\n"), /no tokenizer files: a model directory needs/, args[0]);
  }
  const bad2 = await runCapture(["activations", "--model", m.dir, "--tokens", "1,99", "--hook", hooks[0]!, "--out", join(dir, "c.safetensors")]);
  assert.match(bad2.lines.join("\n"), /token id 99 is out of range for a vocabulary of 40/);

  // the API: token ids work, text says why not; decomposeResid has no pos_embed for rotary models
  const api = ApiModel.fromPretrained(m.dir);
  assert.throws(() => api.toTokens("hi"), /toTokens needs a tokenizer, and this model has none \(its directory has no tokenizer\.json or vocab\.json \+ merges\.txt\); give token ids instead/);
  const { cache: c2 } = api.runWithCache([[3, 4, 5]]);
  const [stack, labels] = c2.decomposeResid(1, { returnLabels: true });
  assert.deepEqual(labels, ["embed", "0_attn_out", "0_mlp_out"]);
  assert.equal(stack.shape[0], 3);
  // weights by TransformerLens attribute: GQA's stored _W_K and the repeated W_K, the gate, no RMSNorm bias
  const blk = api.blocks[1]!;
  assert.deepEqual(blk.attn._W_K!.shape, [2, 16, 4]);
  assert.deepEqual(blk.attn.W_K.shape, [4, 16, 4]);
  assert.deepEqual([...blk.attn.W_K.data.subarray(0, 64)], [...blk.attn._W_K!.data.subarray(0, 64)]);
  assert.equal(blk.ln1.b, undefined);
  assert.equal(blk.mlp.W_gate, api.p("blocks.1.mlp.W_gate"));
  assert.deepEqual(api.W_K().shape, [2, 4, 16, 4], "all layers stacked, K/V heads repeated");
  assert.deepEqual(api.W_gate().shape, [2, 16, 24]);
  for (const [args, full] of [[["rot_k", 1], "blocks.1.attn.hook_rot_k"], [["rot_q0"], "blocks.0.attn.hook_rot_q"], [["pre_linear", 1], "blocks.1.mlp.hook_pre_linear"], [["mlp_pre_linear", 0], "blocks.0.mlp.hook_pre_linear"]] as const) {
    const name = getActName(args[0], args[1]);
    assert.equal(name, full);
    assert.ok(api.hookNames().includes(name));
  }
  assert.deepEqual([...api.W_gate().data.subarray(16 * 24)], [...api.W_gate(1).data]);
});

/**
 * Gradients through the new kernels (RMSNorm, rotary, grouped K/V heads, gated SiLU MLP, exact GELU,
 * parallel block): backward(logits, G) against central differences of Σ logits ⊙ G computed by the
 * float64 reference, at sampled elements of each parameter. `map(i)` is the HF flat index of TL element i.
 */
function checkGrads(t: TestContext, m: TinyArchModel, ref: typeof referenceLlama, checks: Array<{ tl: string; hf: string; map: (i: number) => number }>, label: string): void {
  const { model } = loadModel(m.dir, { weights: "raw" });
  const rows = randomRows(51, 2, 6, model.cfg.dVocab);
  const rng = mulberry32(52);
  const G = Float32Array.from({ length: 2 * 6 * model.cfg.dVocab }, () => randn(rng));
  for (const c of checks) model.p(c.tl).param();
  backward(model.forward(batchOf(rows)).logits!, G);
  const loss = (w: ReadonlyMap<string, { shape: readonly number[]; data: ArrayLike<number> }>): number => {
    const { logits } = ref(w, m.config, rows);
    let s = 0;
    for (let i = 0; i < G.length; i++) s += logits.data[i]! * G[i]!;
    return s;
  };
  const h = 1e-5;
  for (const c of checks) {
    const grad = model.p(c.tl).grad!;
    const base = Float64Array.from(m.weights.get(c.hf)!.data);
    let worstRatio = 0;
    let worstAbs = 0;
    for (let k = 0; k < 10; k++) {
      const i = Math.floor(rng() * grad.length);
      const j = c.map(i);
      const w = new Map<string, { shape: readonly number[]; data: ArrayLike<number> }>(m.weights);
      const x = base.slice();
      x[j] = base[j]! + h;
      w.set(c.hf, { shape: m.weights.get(c.hf)!.shape, data: x });
      const up = loss(w);
      x[j] = base[j]! - h;
      const down = loss(w);
      const fd = (up - down) / (2 * h);
      const d = Math.abs(grad[i]! - fd);
      worstAbs = Math.max(worstAbs, d);
      worstRatio = Math.max(worstRatio, d / (1e-3 + 1e-3 * Math.abs(fd)));
    }
    t.diagnostic(`${label} d/d ${c.tl}: worst |engine − FD| ${worstAbs.toExponential(2)}`);
    assert.ok(worstRatio <= 1, `${label} d/d ${c.tl}: |engine − FD| ${worstAbs} exceeds 1e-3 + 1e-3·|FD|`);
  }
}

test("backward matches float64 finite differences through RMSNorm, rotary, GQA, the gated MLP (Qwen2) and NeoX's parallel block", (t) => {
  const C = 16;
  const q = makeTinyLlamaModel(join(tmp(t), "q"), { seed: 53, architecture: "Qwen2ForCausalLM", qkvBias: true, nKvHeads: 2, tied: true });
  const Dh = 4;
  const M = 24;
  // TL [heads, C, Dh] element i → nn.Linear [heads·Dh, C] element
  const headsMap = (i: number): number => {
    const d = i % Dh;
    const c = Math.floor(i / Dh) % C;
    const hd = Math.floor(i / (Dh * C));
    return (hd * Dh + d) * C + c;
  };
  const inOut = (out: number) => (i: number): number => (i % out) * C + Math.floor(i / out); // TL [C, out] → Linear [out, C]
  checkGrads(t, q, referenceLlama, [
    { tl: "embed.W_E", hf: "model.embed_tokens.weight", map: (i) => i },
    { tl: "blocks.0.ln1.w", hf: "model.layers.0.input_layernorm.weight", map: (i) => i },
    { tl: "blocks.0.attn.W_Q", hf: "model.layers.0.self_attn.q_proj.weight", map: headsMap },
    { tl: "blocks.0.attn._W_K", hf: "model.layers.0.self_attn.k_proj.weight", map: headsMap },
    { tl: "blocks.0.attn._b_K", hf: "model.layers.0.self_attn.k_proj.bias", map: (i) => i },
    { tl: "blocks.0.attn._W_V", hf: "model.layers.0.self_attn.v_proj.weight", map: headsMap },
    { tl: "blocks.0.mlp.W_gate", hf: "model.layers.0.mlp.gate_proj.weight", map: inOut(M) },
    { tl: "blocks.1.mlp.W_in", hf: "model.layers.1.mlp.up_proj.weight", map: inOut(M) },
    { tl: "blocks.1.ln2.w", hf: "model.layers.1.post_attention_layernorm.weight", map: (i) => i },
    { tl: "ln_final.w", hf: "model.norm.weight", map: (i) => i },
  ], "Qwen2");
  const n = makeTinyNeoxModel(join(tmp(t), "n"), { seed: 54 });
  const Dn = 8;
  const qkvMap = (part: number) => (i: number): number => {
    const d = i % Dn;
    const c = Math.floor(i / Dn) % C;
    const hd = Math.floor(i / (Dn * C));
    return ((hd * 3 + part) * Dn + d) * C + c;
  };
  checkGrads(t, n, referenceNeox, [
    { tl: "blocks.0.attn.W_Q", hf: "gpt_neox.layers.0.attention.query_key_value.weight", map: qkvMap(0) },
    { tl: "blocks.0.attn.W_K", hf: "gpt_neox.layers.0.attention.query_key_value.weight", map: qkvMap(1) },
    { tl: "blocks.0.ln2.b", hf: "gpt_neox.layers.0.post_attention_layernorm.bias", map: (i) => i },
    { tl: "blocks.0.mlp.W_in", hf: "gpt_neox.layers.0.mlp.dense_h_to_4h.weight", map: inOut(64) },
    { tl: "blocks.1.ln1.w", hf: "gpt_neox.layers.1.input_layernorm.weight", map: (i) => i },
  ], "NeoX");
});

test("save and load: raw weights round-trip exactly; tl-processed weights (biases moved into b_O, untied W_U) load as saved", (t) => {
  const dir = tmp(t);
  for (const m of [
    makeTinyLlamaModel(join(dir, "qwen"), { seed: 61, architecture: "Qwen2ForCausalLM", qkvBias: true, nKvHeads: 2, tied: true }),
    makeTinyLlamaModel(join(dir, "llama"), { seed: 62 }),
    makeTinyNeoxModel(join(dir, "neox"), { seed: 63 }),
  ]) {
    const arch = (m.config["architectures"] as string[])[0]!;
    const raw = loadModel(m.dir, { weights: "raw" }).model;
    saveModel(raw, join(dir, `${arch}-raw`));
    const back = loadModel(join(dir, `${arch}-raw`), { weights: "raw" }).model;
    assert.deepEqual([...back.params.keys()], [...raw.params.keys()], `${arch}: same parameters`);
    for (const [k, v] of raw.params) assert.deepEqual([...back.p(k).data], [...v.data], `${arch} raw round trip: ${k}`);
    const saved = JSON.parse(readFileSync(join(dir, `${arch}-raw`, "config.json"), "utf8")) as Record<string, unknown>;
    assert.deepEqual(saved["architectures"], [arch]);

    const tl = loadModel(m.dir, { weights: "tl" }).model;
    saveModel(tl, join(dir, `${arch}-tl`), { processed: "tl" });
    const tlBack = loadModel(join(dir, `${arch}-tl`)).model;
    for (const [k, v] of tl.params) assert.deepEqual([...tlBack.p(k).data], [...v.data], `${arch} tl round trip: ${k}`);
    const rows = randomRows(64, 2, 6, tl.cfg.dVocab);
    const a = noGrad(() => tl.forward(batchOf(rows)).logits!);
    const b = noGrad(() => tlBack.forward(batchOf(rows)).logits!);
    assertNear(t, `${arch}: logits of the saved tl model`, b, a, 0);
  }
});

test("loading holds one copy of the weights: the file's tensors are taken as converted, then processed in place", (t) => {
  for (const m of [makeTinyLlamaModel(join(tmp(t), "l"), { seed: 81, nKvHeads: 2, qkvBias: true, architecture: "Qwen2ForCausalLM" }), makeTinyNeoxModel(join(tmp(t), "n"), { seed: 82 })]) {
    const cfg = readModelConfig(m.dir);
    // an eager map of the file's tensors (readHfParams may read lazily), so identity says "not copied"
    const eager = (): Map<string, { shape: readonly number[]; data: Float32Array }> => {
      const out = new Map<string, { shape: readonly number[]; data: Float32Array }>();
      for (const [k, v] of readHfParams(m.dir, cfg)) out.set(k, { shape: v.shape, data: v.data });
      return out;
    };
    const raw = eager();
    const embedKey = cfg.architecture === "llama" ? "model.embed_tokens.weight" : "gpt_neox.embed_in.weight";
    const normKey = cfg.architecture === "llama" ? "model.norm.weight" : "gpt_neox.final_layer_norm.weight";
    const embed = raw.get(embedKey)!.data;
    const norm = raw.get(normKey)!.data;
    // default: the file's map is left alone and the model gets copies
    const copied = hfToParams(raw, cfg);
    assert.ok(raw.size > 0 && copied.get("embed.W_E")!.data !== embed && raw.get(embedKey)!.data === embed);
    // consume: every tensor leaves the map (buffers too), embeddings and norms are used as they are
    const params = hfToParams(raw, cfg, "x", { consume: true });
    assert.equal(raw.size, 0, "nothing of the file is left to hold");
    assert.equal(params.get("embed.W_E")!.data, embed, "W_E is the file's array, not a copy");
    assert.equal(params.get("ln_final.w")!.data, norm);
    const before = params.get("embed.W_E")!;
    const { params: tl } = processWeights(params, cfg, "tl", { inPlace: true });
    assert.equal(tl.get("embed.W_E"), before, "processed in place: the same tensor");
    const fresh = processWeights(copied, cfg, "tl").params;
    for (const [k, v] of fresh) assert.deepEqual([...tl.get(k)!.data], [...v.data], `in place = copied: ${k}`);
    assert.ok(copied.get("ln_final.w")!.data.some((x) => x !== 1), "without inPlace the input is not changed");
  }
});

test("rotary angles are computed in float32 as Hugging Face does (values from numpy float32), not more exactly", () => {
  // rope_theta 1e6, head dim 64 (Qwen2-like); numpy: inv = float32(1) / float32(1e6) ** (float32(2i) / float32(64)), angle = float32(p) * inv
  const table = new RotaryTable(64, 1e6);
  table.ensure(30001);
  const cases: Array<[p: number, i: number, cos: number, sin: number, exactCos: number]> = [
    [30000, 5, -0.6745026707649231, 0.7382724285125732, -0.6743274081177553],
    [12345, 1, 0.7463462352752686, -0.665557861328125, 0.746366802837618],
    [30000, 20, 0.5830269455909729, -0.8124528527259827, 0.5830268073731951],
  ];
  for (const [p, i, c, s, exact] of cases) {
    assert.ok(Math.abs(table.cosAt(p, i) - c) < 2e-7 && Math.abs(table.sinAt(p, i) - s) < 2e-7, `position ${p}, pair ${i}: cos ${table.cosAt(p, i)} sin ${table.sinAt(p, i)}, float32 torch-style ${c} ${s}`);
    if (Math.abs(c - exact) > 1e-5) assert.ok(Math.abs(table.cosAt(p, i) - exact) > 1e-5, "differs from the exact angle as the trained model's does");
  }
});

test("worst scaled difference over every comparison in this file", (t) => {
  t.diagnostic(`worst scaled |diff| so far: ${worst.value.toExponential(2)}`);
  assert.ok(worst.value <= TOL);
});
