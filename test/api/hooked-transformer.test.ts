/**
 * The public API (src/index.ts) on a tiny random GPT-2 with GPT-2's tokenizer and non-trivial
 * LayerNorms: tokens, caching, hooks, TransformerLens's residual identities, weights by TL name,
 * generation, and the exported names.
 */
import { test, after } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as api from "../../src/index.ts";
import { HookedTransformer, ActivationCache, getActName, SelfreportError, ShapeError, zeros, type Tensor, type Hook } from "../../src/index.ts";
import { loadModel } from "../../src/model/load.ts";
import { loadTokenizer } from "../../src/model/tokenizer.ts";
import { generateIds } from "../../src/lm/generate.ts";
import { makeTinyHfModel } from "../helpers/tiny-model.ts";

process.env["SELFREPORT_QUIET"] = "1";
const root = mkdtempSync(join(tmpdir(), "selfreport-api-"));
after(() => rmSync(root, { recursive: true, force: true }));
const dir = join(root, "tiny");
makeTinyHfModel(dir, { nLayers: 3, dModel: 16, nHeads: 2, nCtx: 32, dVocab: 50257, tied: false });
const model = HookedTransformer.fromPretrained(dir); // weights "tl"
const PROMPTS = ["The cat sat on the mat", "Hello there"];

function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  assert.equal(a.length, b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}

/** Sum of a stack [components, ...rest] over its first axis. */
function sumStack(stack: Tensor): Float64Array {
  const n = stack.size / stack.shape[0]!;
  const out = new Float64Array(n);
  for (let c = 0; c < stack.shape[0]!; c++) for (let i = 0; i < n; i++) out[i]! += stack.data[c * n + i]!;
  return out;
}

test("fromPretrained loads as the CLI's loader does, for both weight processings", () => {
  for (const weights of ["tl", "raw"] as const) {
    const m = HookedTransformer.fromPretrained(dir, { weights });
    const { model: core } = loadModel(dir, { weights });
    const batch = loadTokenizer(dir).encodeBatch(PROMPTS);
    const expected = core.runWithCache(batch, ["blocks.1.mlp.hook_post"]);
    const { logits, cache } = m.runWithCache(PROMPTS, { names: ["blocks.1.mlp.hook_post"] });
    assert.deepEqual(logits!.data, expected.logits!.data, `${weights}: logits equal the loader's model exactly`);
    assert.deepEqual(cache.get("blocks.1.mlp.hook_post").data, expected.cache.get("blocks.1.mlp.hook_post")!.data);
    assert.equal(m.dir, dir);
  }
  assert.notDeepEqual(HookedTransformer.fromPretrained(dir, { weights: "raw" }).W_in(0).data, model.W_in(0).data, "tl processing folded ln2 into W_in");
});

test("toTokens, toStrTokens, toString, toSingleToken", () => {
  const t = model.toTokens(PROMPTS);
  assert.equal(t.batch, 2);
  assert.equal(t.len, 6);
  assert.deepEqual(t.lengths, [6, 2]);
  assert.deepEqual(Array.from(t.attentionMask!), [1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0]);
  assert.deepEqual(model.toStrTokens("The cat sat"), ["The", " cat", " sat"]);
  assert.deepEqual(model.toStrTokens("The cat", { prependBos: true }), ["<|endoftext|>", "The", " cat"]);
  assert.equal(model.toTokens("The cat", { prependBos: true }).ids[0], 50256);
  assert.deepEqual(model.toString(t), PROMPTS);
  assert.equal(model.toString(Array.from(t.ids.subarray(0, 3))), "The cat sat");
  assert.equal(model.toString(model.toSingleToken(" cat")), " cat");
  assert.match(model.toString(), /^HookedTransformer\(.*: 3 layers, d_model 16, 2 heads/);
  assert.throws(() => model.toSingleToken(" selfreporting"), (e: unknown) => e instanceof SelfreportError && e.message === `toSingleToken: " selfreporting" is 2 tokens ([" self","reporting"]), not one`);
  assert.throws(() => model.toTokens(["a", ""]), /text 2 of 2 is empty/);
  assert.throws(() => model.toTokens("word ".repeat(40)), /longer than the model's context n_ctx 32/);
});

test("inputs: text, texts, token ids and rows of ids run the same pass", () => {
  const ids = Array.from(model.toTokens(PROMPTS[0]!).ids);
  const a = model.run(PROMPTS[0]!).logits!;
  assert.deepEqual(model.run(ids).logits!.data, a.data);
  assert.deepEqual(model.run([ids]).logits!.data, a.data);
  assert.deepEqual(model.run(model.toTokens(PROMPTS[0]!)).logits!.data, a.data);
  assert.deepEqual(model.run([PROMPTS[0]!]).logits!.data, a.data);
  assert.throws(() => model.run([]), /got an empty array/);
});

test("getActName follows TransformerLens's shorthand", () => {
  const cases: Array<[string, number | undefined, string | undefined, string]> = [
    ["post", 2, undefined, "blocks.2.mlp.hook_post"], ["pre", 0, undefined, "blocks.0.mlp.hook_pre"],
    ["resid_pre", 1, undefined, "blocks.1.hook_resid_pre"], ["resid_post", 3, undefined, "blocks.3.hook_resid_post"],
    ["attn", 1, undefined, "blocks.1.attn.hook_pattern"], ["pattern", 1, "a", "blocks.1.attn.hook_pattern"],
    ["attn_logits", 0, undefined, "blocks.0.attn.hook_attn_scores"], ["key", 6, undefined, "blocks.6.attn.hook_k"],
    ["k6", undefined, undefined, "blocks.6.attn.hook_k"], ["pre5", undefined, undefined, "blocks.5.mlp.hook_pre"],
    ["scale4ln1", undefined, undefined, "blocks.4.ln1.hook_scale"], ["normalized", 27, "ln2", "blocks.27.ln2.hook_normalized"],
    ["scale", undefined, undefined, "ln_final.hook_scale"], ["embed", undefined, undefined, "hook_embed"],
    ["mlp_out", 2, undefined, "blocks.2.hook_mlp_out"], ["z", 1, undefined, "blocks.1.attn.hook_z"],
    ["blocks.2.mlp.hook_post", undefined, undefined, "blocks.2.mlp.hook_post"],
  ];
  for (const [name, layer, type, expected] of cases) assert.equal(getActName(name, layer, type), expected, `getActName(${name}, ${layer}, ${type})`);
});

test("runWithCache: every hook by default, names limit it, get accepts the shorthand, a missing hook is named", () => {
  const { logits, cache } = model.runWithCache(PROMPTS);
  assert.ok(cache instanceof ActivationCache);
  assert.equal(cache.size, model.hookNames().length);
  assert.deepEqual(logits!.shape, [2, 6, 50257]);
  assert.equal(cache.get("post", 2), cache.get("blocks.2.mlp.hook_post"));
  const only = model.runWithCache(PROMPTS, { names: ["blocks.2.mlp.hook_post", "hook_embed"] }).cache;
  assert.deepEqual([...only.keys()].sort(), ["blocks.2.mlp.hook_post", "hook_embed"]);
  assert.deepEqual(only.get("post", 2).data, cache.get("post", 2).data);
  assert.throws(() => only.get("resid_pre", 1), (e: unknown) => e instanceof SelfreportError && e.message.startsWith(`the cache has no "blocks.1.hook_resid_pre"`) && e.message.includes("cached: "));
  assert.throws(() => model.runWithCache(PROMPTS, { names: ["blocks.2.mlp.hook_pots"] }), /unknown hook "blocks.2.mlp.hook_pots"; closest hook names: blocks.2.mlp.hook_post/);
  assert.equal(model.runWithCache(PROMPTS, { stopAtLayer: 1 }).logits, null);
});

test("runWithHooks: zero-ablating one neuron changes the logits, and the cache sees the ablation", () => {
  const n = 5;
  const ablate: Hook = ["blocks.1.mlp.hook_post", (post) => {
    const x = post.clone();
    for (let i = n; i < x.size; i += x.shape[2]!) x.data[i] = 0;
    return x;
  }];
  const clean = model.runWithCache(PROMPTS, { names: ["blocks.1.mlp.hook_post"] });
  const ablated = model.runWithHooks(PROMPTS, { fwdHooks: [ablate] });
  assert.ok(maxAbsDiff(clean.logits!.data, ablated.logits!.data) > 1e-5);
  assert.notEqual(clean.cache.get("post", 1).get(0, 2, n), 0);
  const seen = model.runWithCache(PROMPTS, { names: ["blocks.1.mlp.hook_post"], fwdHooks: [ablate] });
  assert.equal(seen.cache.get("post", 1).get(0, 2, n), 0);
  assert.deepEqual(seen.logits!.data, ablated.logits!.data);
  // the model's own signature stays: runWithHooks(tokenBatch, hooks)
  assert.deepEqual(model.runWithHooks(model.toTokens(PROMPTS), [ablate]).logits!.data, ablated.logits!.data);
  assert.throws(() => model.runWithHooks(PROMPTS, {} as never), /fwdHooks must be an array/);
});

test("decomposeResid sums to the residual stream at every layer (and resid_mid with mlpInput)", () => {
  const { cache } = model.runWithCache(PROMPTS);
  const L = model.cfg.nLayers;
  for (let l = 0; l <= L; l++) {
    const target = l === L ? cache.get("resid_post", L - 1) : cache.get("resid_pre", l);
    assert.ok(maxAbsDiff(sumStack(cache.decomposeResid(l)), target.data) < 1e-5, `layer ${l}`);
  }
  const [mid, labels] = cache.decomposeResid(1, { mlpInput: true, returnLabels: true });
  assert.deepEqual(labels, ["embed", "pos_embed", "0_attn_out", "0_mlp_out", "1_attn_out"]);
  assert.ok(maxAbsDiff(sumStack(mid), cache.get("resid_mid", 1).data) < 1e-5);
  assert.deepEqual(cache.decomposeResid(2, { mode: "mlp", inclEmbeds: false, returnLabels: true })[1], ["0_mlp_out", "1_mlp_out"]);
  assert.deepEqual(cache.decomposeResid(undefined, { posSlice: -1 }).shape, [2 + 2 * L, 2, 16]);
});

test("accumulatedResid stacks resid_pre (and resid_mid), final_post at nLayers", () => {
  const { cache } = model.runWithCache(PROMPTS);
  const [acc, labels] = cache.accumulatedResid(undefined, { returnLabels: true });
  assert.deepEqual(labels, ["0_pre", "1_pre", "2_pre", "final_post"]);
  assert.deepEqual(acc.shape, [4, 2, 6, 16]);
  assert.deepEqual(acc.slice(1).data, cache.get("resid_pre", 1).data);
  assert.deepEqual(acc.slice(3).data, cache.get("resid_post", 2).data);
  assert.deepEqual(cache.accumulatedResid(2, { inclMid: true, returnLabels: true })[1], ["0_pre", "0_mid", "1_pre", "1_mid", "2_pre"]);
  assert.deepEqual(cache.accumulatedResid(1, { mlpInput: true, returnLabels: true })[1], ["0_pre", "1_pre", "1_mid"]);
  // applyLn at nLayers recomputes ln_final per component: the final one is ln_final's output
  const ln = cache.accumulatedResid(undefined, { applyLn: true });
  assert.ok(maxAbsDiff(ln.slice(3).data, cache.get("normalized").data) < 1e-5);
  assert.throws(() => cache.accumulatedResid(4), /layer 4 is out of range 0..3/);
});

test("applyLnToStack with the cached scale: the normalised components sum to the LayerNorm's normalised input", () => {
  const { cache } = model.runWithCache(PROMPTS);
  const L = model.cfg.nLayers;
  assert.ok(maxAbsDiff(sumStack(cache.applyLnToStack(cache.decomposeResid(L), L)), cache.get("normalized").data) < 1e-5, "ln_final");
  assert.ok(maxAbsDiff(sumStack(cache.applyLnToStack(cache.decomposeResid(1), 1)), cache.get("normalized", 1, "ln1").data) < 1e-5, "ln1");
  assert.ok(maxAbsDiff(sumStack(cache.decomposeResid(1, { mlpInput: true, applyLn: true })), cache.get("normalized", 1, "ln2").data) < 1e-5, "ln2");
  const last = cache.decomposeResid(L, { posSlice: -1 });
  const full = cache.applyLnToStack(cache.decomposeResid(L), L);
  assert.ok(maxAbsDiff(cache.applyLnToStack(last, L, { posSlice: -1 }).data, full.slice(null, null, -1).data) < 1e-7);
  assert.throws(() => cache.applyLnToStack(last, L), (e: unknown) => e instanceof ShapeError && /ln_final.hook_scale is \[2, 6, 1\]/.test(e.message) && /pass posSlice/.test(e.message));
});

test("logitAttrs: the components' attributions plus b_U are the logits (weights tl)", () => {
  const { logits, cache } = model.runWithCache(PROMPTS);
  const stack = cache.decomposeResid();
  const tok = model.toSingleToken(" cat");
  const attrs = cache.logitAttrs(stack, " cat");
  assert.deepEqual(attrs.shape, [stack.shape[0], 2, 6]);
  const total = sumStack(attrs);
  const bU = model.b_U.data[tok]!;
  for (let b = 0; b < 2; b++) for (let p = 0; p < 6; p++) assert.ok(Math.abs(total[b * 6 + p]! + bU - logits!.get(b, p, tok)) < 1e-4, `[${b}, ${p}]`);
  // per batch row, and a difference of two tokens
  const dog = model.toSingleToken(" dog");
  const diff = sumStack(cache.logitAttrs(stack, [tok, dog], { incorrectTokens: [dog, tok] }));
  const bDiff = model.b_U.data[tok]! - model.b_U.data[dog]!;
  assert.ok(Math.abs(diff[3]! + bDiff - (logits!.get(0, 3, tok) - logits!.get(0, 3, dog))) < 1e-4);
  assert.ok(Math.abs(diff[6 + 1]! - bDiff - (logits!.get(1, 1, dog) - logits!.get(1, 1, tok))) < 1e-4);
  assert.throws(() => cache.logitAttrs(stack, [tok, dog, tok]), /tokens has 3 entries, expected one per batch row \(2\)/);
});

test("weights by TransformerLens name: per layer, stacked over layers, blocks[l], stateDict", () => {
  const W = model.W_in();
  assert.deepEqual(W.shape, [3, 16, 64]);
  assert.deepEqual(W.slice(2).data, model.W_in(2).data);
  assert.equal(model.blocks[2]!.mlp.W_out, model.p("blocks.2.mlp.W_out"));
  assert.equal(model.blocks[0]!.attn.W_Q, model.W_Q(0));
  assert.deepEqual(model.W_O().shape, [3, 2, 8, 16]);
  assert.deepEqual(model.W_U.shape, [16, 50257]);
  assert.deepEqual([...model.stateDict().keys()].slice(0, 3), ["embed.W_E", "pos_embed.W_pos", "blocks.0.ln1.w"]);
});

test("generate: the KV-cached sampler of `selfreport lm generate`", () => {
  const r = model.generate("The cat", { maxNewTokens: 5, temperature: 0 });
  const ids = generateIds(model, model.tokenizer!.encode("The cat"), { maxNewTokens: 5, temperature: 0, eosId: 50256 });
  assert.deepEqual(r.ids, ids.ids);
  assert.equal(r.text, model.toString(ids.ids));
  assert.equal(r.text, "The cat" + r.continuation);
  // fwdHooks run at every step: zeroing the last block's output changes what is generated, as in generateIds
  const zero: Hook = ["blocks.2.hook_mlp_out", (x) => zeros(x.shape)];
  const hooked = model.generate("The cat", { maxNewTokens: 5, temperature: 0, fwdHooks: [zero] });
  const expected = generateIds(model, model.tokenizer!.encode("The cat"), { maxNewTokens: 5, temperature: 0, eosId: 50256, hooks: [zero] });
  assert.deepEqual(hooked.ids, expected.ids);
  assert.notDeepEqual(hooked.ids, r.ids);
});

test("prependBos prepends the tokenizer's bosId (from tokenizer_config.json's bos_token for a tokenizer.json)", () => {
  const d = mkdtempSync(join(tmpdir(), "selfreport-bos-"));
  const src = join(import.meta.dirname, "..", "..", "..", "models", "brown-gpt2-mini");
  const vocab = JSON.parse(readFileSync(join(src, "vocab.json"), "utf8")) as Record<string, number>;
  const merges = readFileSync(join(src, "merges.txt"), "utf8").split("\n").slice(1).filter((l) => l.length > 0);
  writeFileSync(join(d, "tokenizer.json"), JSON.stringify({
    added_tokens: [{ id: 50256, content: "<|endoftext|>", special: true }],
    pre_tokenizer: { type: "ByteLevel", add_prefix_space: false, use_regex: true },
    decoder: { type: "ByteLevel" },
    model: { type: "BPE", vocab, merges },
  }));
  writeFileSync(join(d, "tokenizer_config.json"), JSON.stringify({ bos_token: "!", eos_token: "<|endoftext|>" }));
  const m = HookedTransformer.fromModel(model, api.loadTokenizer(d));
  assert.deepEqual(Array.from(m.toTokens("The cat", { prependBos: true }).ids), [0, 464, 3797]);
  assert.deepEqual(m.toStrTokens("The cat", { prependBos: true }), ["!", "The", " cat"]);
  rmSync(d, { recursive: true, force: true });
});

test("the public entry exports the stable API and nothing internal", () => {
  assert.deepEqual(Object.keys(api).sort(), [
    "ActivationCache", "BLOCK_HOOKS", "HookedTransformer", "Interrupted", "NanError", "SelfreportError", "ShapeError", "TARGET_RULE", "THRESHOLDS",
    "TRAIN_DEFAULTS", "Tensor", "analysisCommand", "buildDataset", "defaultLr", "digitTokenIds", "full", "getActName", "getBackend", "histogram", "hookNames",
    "layerNeuronStats", "loadAnalysisContext", "loadCorpus", "loadModel", "loadRun", "loadTokenizer", "noGrad", "notebookFigures", "ones",
    "patchingAnalysis", "patchingPlots", "patchingVerdict", "rankLimit", "readAnalysis", "readDataset", "renderSvg", "residualAnalysis",
    "residualPlots", "residualVerdict", "resolveModelDir", "runPatches", "saveModel", "scalar", "selectInputs", "suggestTargets", "tensor",
    "tokenBatch", "topActivations", "train", "weightsAnalysis", "weightsPlots", "weightsVerdict", "writeDataset", "zeros",
  ].sort());
});
