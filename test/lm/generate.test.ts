/**
 * Generation with a KV cache: the cached incremental forward must give the full forward's logits at
 * every position (1e-4), greedy decoding must be deterministic and equal to argmax of the full
 * forward, a seed must fix the sample, and bad arguments must fail with one clear error each.
 * Tiny random models with "spiky" weights (std 0.3, random LayerNorms) so attention is far from uniform.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { Rng, noGrad } from "../../src/tensor/index.ts";
import { makeConfig } from "../../src/model/config.ts";
import { HookedTransformer } from "../../src/model/transformer.ts";
import { processWeights } from "../../src/model/process.ts";
import { loadGpt2Tokenizer } from "../../src/model/tokenizer.ts";
import { KVCache, generateIds, generate, topKIndices, sampleToken } from "../../src/lm/generate.ts";
import { SelfreportError } from "../../src/errors.ts";
import type { Hook } from "../../src/model/hooks.ts";
import { mulberry32, randn } from "../helpers/rng.ts";

const N_CTX = 16;
const VOCAB = 64;

/** A random model whose every parameter is far from GPT-2's small init. */
function spikyModel(seed: number, o: { dVocab?: number; nCtx?: number } = {}): HookedTransformer {
  const cfg = makeConfig({ nLayers: 2, dModel: 16, nHeads: 2, nCtx: o.nCtx ?? N_CTX, dVocab: o.dVocab ?? VOCAB });
  const model = HookedTransformer.init(cfg, seed);
  const rng = mulberry32(seed + 100);
  for (const [name, t] of model.params) {
    for (let i = 0; i < t.size; i++) {
      if (/\.w$/.test(name)) t.data[i] = 0.5 + rng();
      else if (/\.b$|\.b_/.test(name)) t.data[i] = 0.1 * randn(rng);
      else t.data[i] = 0.3 * randn(rng);
    }
  }
  return model;
}

function randomIds(n: number, seed: number, vocab = VOCAB): number[] {
  const rng = mulberry32(seed);
  return Array.from({ length: n }, () => Math.floor(rng() * vocab));
}

function fullLogits(model: HookedTransformer, ids: readonly number[]): Float32Array {
  return noGrad(() => model.forward({ ids: Int32Array.from(ids), batch: 1, len: ids.length }).logits!.data); // [T, V]
}

/** max |a - b| over one row each. */
function worstDiff(a: Float32Array, b: Float32Array): number {
  assert.equal(a.length, b.length);
  let w = 0;
  for (let i = 0; i < a.length; i++) w = Math.max(w, Math.abs(a[i]! - b[i]!));
  return w;
}

function argmaxRow(x: Float32Array, o: number, n: number): number {
  let best = 0;
  for (let i = 1; i < n; i++) if (x[o + i]! > x[o + best]!) best = i;
  return best;
}

for (const weights of ["raw", "tl"] as const) {
  test(`KV cache: logits at every step equal the full forward's (${weights} weights, 1e-4)`, () => {
    const base = spikyModel(1);
    const { params, cfg } = processWeights(base.params, base.cfg, weights);
    const model = new HookedTransformer(cfg, params);
    const V = cfg.dVocab;
    const ids = randomIds(N_CTX, 7);
    const ref = fullLogits(model, ids); //                                      [N_CTX, V]
    const cache = new KVCache(model);
    let worst = 0;
    // A prefill of 5 tokens, then one token at a time up to n_ctx.
    const prefill = cache.append(ids.slice(0, 5));
    assert.deepEqual(prefill.shape, [5, V]);
    worst = Math.max(worst, worstDiff(prefill.data, ref.subarray(0, 5 * V)));
    for (let t = 5; t < N_CTX; t++) {
      const step = cache.append([ids[t]!]);
      assert.deepEqual(step.shape, [1, V]);
      worst = Math.max(worst, worstDiff(step.data, ref.subarray(t * V, (t + 1) * V)));
    }
    assert.equal(cache.length, N_CTX);
    assert.ok(worst <= 1e-4, `worst |KV-cache − full| logit difference ${worst.toExponential(3)} > 1e-4`);

    // lastOnly gives the last row only; the logits are not tiny (the comparison means something).
    cache.reset();
    const last = cache.append(ids.slice(0, 9), { lastOnly: true });
    assert.deepEqual(last.shape, [1, V]);
    const d = worstDiff(last.data, ref.subarray(8 * V, 9 * V));
    assert.ok(d <= 1e-4, `lastOnly: worst difference ${d.toExponential(3)}`);
    const spread = Math.max(...ref) - Math.min(...ref);
    assert.ok(spread > 1, `reference logits span only ${spread}`);
    assert.throws(() => cache.append(ids), /exceed the model's context n_ctx 16/);
  });
}

test("greedy generation is deterministic and is argmax of the full forward at each step", () => {
  const model = spikyModel(2);
  const prompt = randomIds(4, 11);
  const a = generateIds(model, prompt, { temperature: 0, maxNewTokens: 8 });
  const b = generateIds(model, prompt, { temperature: 0, maxNewTokens: 8, seed: 99 });
  assert.deepEqual(a, b);
  assert.equal(a.newIds.length, 8);
  assert.equal(a.stopReason, "max_new_tokens");
  assert.deepEqual(a.ids, [...prompt, ...a.newIds]);
  const ref = fullLogits(model, a.ids);
  for (let i = 0; i < a.newIds.length; i++) {
    const pos = prompt.length + i - 1; // logits at pos predict token pos+1
    assert.equal(a.newIds[i], argmaxRow(ref, pos * VOCAB, VOCAB), `step ${i}`);
  }
});

test("sampling: the same seed gives the same sample, another seed another one, top-k is respected", () => {
  const model = spikyModel(3);
  const prompt = randomIds(3, 12);
  const o = { temperature: 1.5, topK: 0, maxNewTokens: 12 };
  const a = generateIds(model, prompt, { ...o, seed: 5 });
  const b = generateIds(model, prompt, { ...o, seed: 5 });
  const c = generateIds(model, prompt, { ...o, seed: 6 });
  assert.deepEqual(a, b);
  assert.notDeepEqual(a.newIds, c.newIds);

  const k = 3;
  const s = generateIds(model, prompt, { temperature: 2, topK: k, maxNewTokens: 12, seed: 1 });
  const ref = fullLogits(model, s.ids);
  for (let i = 0; i < s.newIds.length; i++) {
    const row = ref.subarray((prompt.length + i - 1) * VOCAB, (prompt.length + i) * VOCAB);
    const allowed = [...row.keys()].sort((x, y) => row[y]! - row[x]!).slice(0, k);
    assert.ok(allowed.includes(s.newIds[i]!), `step ${i}: token ${s.newIds[i]} not among the top ${k} (${allowed.join(", ")})`);
  }
});

test("sampleToken follows the softmax distribution (1e4 draws, 4 tokens)", () => {
  const logits = Float32Array.of(0, Math.log(2), Math.log(3), Math.log(4)); // p = 0.1, 0.2, 0.3, 0.4
  const rng = new Rng(0);
  const counts = [0, 0, 0, 0];
  const n = 10000;
  for (let i = 0; i < n; i++) counts[sampleToken(logits, 1, 0, rng)]!++;
  counts.forEach((c, i) => assert.ok(Math.abs(c / n - (i + 1) / 10) < 0.02, `token ${i}: ${c / n} vs ${(i + 1) / 10}`));
  // top-k 2 renormalises over tokens 2 and 3: 3/7, 4/7
  const top = [0, 0, 0, 0];
  for (let i = 0; i < n; i++) top[sampleToken(logits, 1, 2, rng)]!++;
  assert.equal(top[0]! + top[1]!, 0);
  assert.ok(Math.abs(top[3]! / n - 4 / 7) < 0.02, `top-2: ${top[3]! / n} vs ${4 / 7}`);
});

test("topKIndices equals a full sort (ties: lower index first)", () => {
  const rng = mulberry32(4);
  for (const [n, k] of [[1, 1], [10, 3], [100, 100], [200, 40], [50, 60]] as const) {
    const v = Float32Array.from({ length: n }, () => Math.round(rng() * 20)); // many ties
    const ref = [...v.keys()].sort((a, b) => v[b]! - v[a]! || a - b).slice(0, k);
    assert.deepEqual(topKIndices(v, k), ref, `n ${n}, k ${k}`);
  }
});

test("generation stops at n_ctx and at the end-of-text token", () => {
  const model = spikyModel(4);
  const r = generateIds(model, randomIds(10, 13), { temperature: 0, maxNewTokens: 100 });
  assert.equal(r.stopReason, "n_ctx");
  assert.equal(r.ids.length, N_CTX);
  assert.equal(r.newIds.length, N_CTX - 10);
  const full = generateIds(model, randomIds(N_CTX, 14), { temperature: 0 });
  assert.deepEqual([full.newIds, full.stopReason], [[], "n_ctx"]);

  const prompt = randomIds(5, 15);
  const greedy = generateIds(model, prompt, { temperature: 0, maxNewTokens: 3 });
  const eos = greedy.newIds[1]!;
  const stopped = generateIds(model, prompt, { temperature: 0, maxNewTokens: 3, eosId: eos });
  assert.equal(stopped.stopReason, "eos");
  assert.deepEqual(stopped.newIds, greedy.newIds[0] === eos ? [] : greedy.newIds.slice(0, 1));
  assert.deepEqual(generateIds(model, prompt, { maxNewTokens: 0 }).newIds, []);
});

test("bad arguments fail with one clear SelfreportError each", () => {
  const model = spikyModel(5);
  const p = [1, 2, 3];
  const cases: Array<[() => unknown, RegExp]> = [
    [() => generateIds(model, [], {}), /prompt is empty/],
    [() => generateIds(model, randomIds(N_CTX + 1, 1), {}), /prompt has 17 tokens, longer than the model's context n_ctx 16/],
    [() => generateIds(model, p, { temperature: -1 }), /temperature must be a finite number ≥ 0 \(0 = greedy\), got -1/],
    [() => generateIds(model, p, { temperature: NaN }), /temperature must be .* got NaN/],
    [() => generateIds(model, p, { topK: 2.5 }), /top-k must be a non-negative integer \(0 = no limit\), got 2.5/],
    [() => generateIds(model, p, { topK: -1 }), /top-k must be a non-negative integer/],
    [() => generateIds(model, p, { maxNewTokens: -2 }), /max new tokens must be a non-negative integer, got -2/],
    [() => generateIds(model, [1, VOCAB], { temperature: 0 }), /token id 64 is out of range for a vocabulary of 64/],
  ];
  for (const [fn, re] of cases) {
    assert.throws(fn, (e: unknown) => e instanceof SelfreportError && re.test(e.message) && !e.message.includes("\n"), `expected ${re}`);
  }
});

test("generate() with GPT-2's tokenizer: text = prompt + continuation; empty and too-long prompts fail", () => {
  const model = spikyModel(6, { dVocab: 50257, nCtx: 24 });
  const tok = loadGpt2Tokenizer();
  const r = generate(model, tok, { prompt: "The cat sat on the", maxNewTokens: 5, temperature: 0 });
  assert.ok(r.text.startsWith("The cat sat on the"), r.text);
  assert.equal(r.text, "The cat sat on the" + r.continuation);
  assert.deepEqual(r.ids.slice(0, -r.newIds.length || undefined), tok.encode("The cat sat on the"));
  assert.ok(r.newIds.length <= 5);
  assert.deepEqual(generate(model, tok, { prompt: "The cat sat on the", maxNewTokens: 5, temperature: 0.7, seed: 3 }), generate(model, tok, { prompt: "The cat sat on the", maxNewTokens: 5, temperature: 0.7, seed: 3 }));
  assert.throws(() => generate(model, tok, { prompt: "" }), /the prompt is empty/);
  assert.throws(() => generate(model, tok, { prompt: Array(30).fill("word").join(" ") }), /the prompt has 30 tokens, longer than the model's context n_ctx 24/);
});

test("hooks run in the KV-cached steps as in the full forward: a zero-ablated neuron gives the hooked forward's logits (1e-4)", () => {
  const model = spikyModel(7);
  const ids = randomIds(10, 8);
  const n = 3;
  const ablate: Hook = ["blocks.0.mlp.hook_post", (post) => {
    const x = post.clone();
    for (let i = n; i < x.size; i += x.shape[x.ndim - 1]!) x.data[i] = 0;
    return x;
  }];
  const seen: number[][] = [];
  const spy: Hook = ["blocks.1.hook_resid_pre", (r) => void seen.push([...r.shape])];
  const hooked = noGrad(() => model.runWithHooks({ ids: Int32Array.from(ids), batch: 1, len: ids.length }, [ablate]).logits!.data);
  const plain = fullLogits(model, ids);
  const V = VOCAB;
  const cache = new KVCache(model, { hooks: [ablate, spy] });
  const first = cache.append(ids.slice(0, 4)).data; //   a prompt of 4, then one token at a time
  assert.ok(worstDiff(first, hooked.subarray(0, 4 * V)) < 1e-4);
  for (let t = 4; t < ids.length; t++) assert.ok(worstDiff(cache.append([ids[t]!]).data, hooked.subarray(t * V, (t + 1) * V)) < 1e-4, `step ${t}`);
  assert.ok(worstDiff(hooked, plain) > 1e-3, "the ablation changes the logits");
  assert.deepEqual(seen, [[1, 4, 16], ...Array.from({ length: 6 }, () => [1, 1, 16])], "hooks see the new positions as [1, T, d_model]");
  const greedy = generateIds(model, ids.slice(0, 4), { maxNewTokens: 6, temperature: 0, eosId: null, hooks: [ablate] });
  let withHook = ids.slice(0, 4);
  for (let s = 0; s < 6; s++) {
    const lg = noGrad(() => model.runWithHooks({ ids: Int32Array.from(withHook), batch: 1, len: withHook.length }, [ablate]).logits!.data);
    withHook = [...withHook, argmaxRow(lg, (withHook.length - 1) * V, V)];
  }
  assert.deepEqual(greedy.ids, withHook, "greedy generation with the hook = argmax of the hooked forward");
});

test("attention-pattern hooks cannot run against cached keys, and say so", () => {
  const model = spikyModel(9);
  const cache = new KVCache(model, { hooks: [["blocks.0.attn.hook_pattern", () => undefined]] });
  assert.throws(() => cache.append([1, 2]), (e: unknown) => e instanceof SelfreportError && e.message === "blocks.0.attn.hook_attn_scores and blocks.0.attn.hook_pattern cannot be hooked when rows attend to cached keys (generation, patching)");
});
