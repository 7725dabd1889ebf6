/**
 * The neuron explorer against a brute-force reference: every window run alone through runWithCache
 * (no batching, no padding), statistics computed in float64 with two passes, top-k by a full sort.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { noGrad } from "../../src/tensor/index.ts";
import { makeConfig } from "../../src/model/config.ts";
import { HookedTransformer } from "../../src/model/transformer.ts";
import { loadGpt2Tokenizer } from "../../src/model/tokenizer.ts";
import {
  layerNeuronStats, topActivations, scanLayer, suggestTargets, TopKHeap, type NeuronStats, type NeuronDoc,
} from "../../src/lm/neurons.ts";
import { SelfreportError } from "../../src/errors.ts";
import { mulberry32, randn } from "../helpers/rng.ts";

process.env["SELFREPORT_QUIET"] = "1";

const tok = loadGpt2Tokenizer();
const CTX = 7;

function spikyModel(seed: number): HookedTransformer {
  const model = HookedTransformer.init(makeConfig({ nLayers: 2, dModel: 16, nHeads: 2, nCtx: 16 }), seed);
  const rng = mulberry32(seed + 100);
  for (const [name, t] of model.params) {
    for (let i = 0; i < t.size; i++) {
      if (/\.w$/.test(name)) t.data[i] = 0.5 + rng();
      else if (/\.b$|\.b_/.test(name)) t.data[i] = 0.1 * randn(rng);
      else t.data[i] = 0.4 * randn(rng);
    }
  }
  return model;
}

const WORDS = ["the", "cat", "sat", "on", "a", "mat", "and", "dog", "ran", "far", "away", "quickly", "house", "river", ",", ".", "she", "said", "42", "\n"];

function makeDocs(n: number, seed: number): NeuronDoc[] {
  const rng = mulberry32(seed);
  return Array.from({ length: n }, (_, d) => {
    const len = 3 + Math.floor(rng() * 30);
    return { id: `doc${d}`, text: Array.from({ length: len }, () => WORDS[Math.floor(rng() * WORDS.length)]).join(" ") };
  });
}

interface Row {
  doc: number;
  position: number;
  acts: Float32Array; // [M]
}

/** Every token's activations, each window of ctx run on its own, stopping after maxTokens. */
function bruteForce(model: HookedTransformer, docs: readonly NeuronDoc[], layer: number, ctx: number, maxTokens = Infinity): Row[] {
  const hook = `blocks.${layer}.mlp.hook_post`;
  const M = model.cfg.dMlp;
  const rows: Row[] = [];
  docs.forEach((d, di) => {
    const ids = tok.encode(d.text);
    for (let s = 0; s < ids.length; s += ctx) {
      const w = ids.slice(s, s + ctx);
      const { cache } = noGrad(() => model.runWithCache({ ids: Int32Array.from(w), batch: 1, len: w.length }, [hook]));
      const a = cache.get(hook)!.data; // [1, n, M]
      for (let t = 0; t < w.length; t++) {
        if (rows.length >= maxTokens) return;
        rows.push({ doc: di, position: s + t, acts: a.slice(t * M, (t + 1) * M) });
      }
    }
  });
  return rows;
}

function referenceStats(rows: readonly Row[], M: number): NeuronStats[] {
  return Array.from({ length: M }, (_, i) => {
    const xs = rows.map((r) => r.acts[i]!);
    const n = xs.length;
    const mean = xs.reduce((a, b) => a + b, 0) / n;
    const std = Math.sqrt(xs.reduce((a, b) => a + (b - mean) ** 2, 0) / n);
    return {
      neuron: i, mean, std, min: Math.min(...xs), max: Math.max(...xs),
      sparsity: xs.filter((x) => x <= 0).length / n, fracAbove1: xs.filter((x) => x > 1).length / n,
    };
  });
}

function compareStats(actual: readonly NeuronStats[], expected: readonly NeuronStats[], tol: number): void {
  assert.equal(actual.length, expected.length);
  let worst = 0;
  let where = "";
  for (let i = 0; i < expected.length; i++) {
    for (const key of ["mean", "std", "min", "max", "sparsity", "fracAbove1"] as const) {
      const d = Math.abs(actual[i]![key] - expected[i]![key]);
      if (d > worst) [worst, where] = [d, `neuron ${i} ${key}: ${actual[i]![key]} vs ${expected[i]![key]}`];
    }
    assert.equal(actual[i]!.neuron, i);
  }
  assert.ok(worst <= tol, `worst difference ${worst.toExponential(3)} > ${tol} (${where})`);
}

test("layerNeuronStats equals a brute-force computation over all positions (1e-5)", () => {
  const model = spikyModel(1);
  const docs = makeDocs(9, 2);
  for (const layer of [0, 1]) {
    const s = layerNeuronStats(model, tok, docs, layer, { ctx: CTX, batch: 3 });
    const rows = bruteForce(model, docs, layer, CTX);
    assert.equal(s.tokens, rows.length);
    assert.equal(s.documents, docs.length);
    assert.equal(s.hook, `blocks.${layer}.mlp.hook_post`);
    const ref = referenceStats(rows, model.cfg.dMlp);
    compareStats(s.neurons, ref, 1e-5);
    // The model is spiky enough for every statistic to be exercised.
    assert.ok(ref.some((r) => r.fracAbove1 > 0) && ref.some((r) => r.sparsity > 0 && r.sparsity < 1), "degenerate fixture");
  }
});

test("maxTokens cuts the text in document and window order", () => {
  const model = spikyModel(3);
  const docs = makeDocs(6, 4);
  const s = layerNeuronStats(model, tok, docs, 1, { ctx: 5, batch: 4, maxTokens: 23 });
  assert.equal(s.tokens, 23);
  compareStats(s.neurons, referenceStats(bruteForce(model, docs, 1, 5, 23), model.cfg.dMlp), 1e-5);
});

test("topActivations are the true top-k with their contexts", () => {
  const model = spikyModel(5);
  const docs = makeDocs(9, 6);
  const layer = 1;
  const rows = bruteForce(model, docs, layer, CTX);
  for (const neuron of [0, 17, 63]) {
    const k = 6;
    const top = topActivations(model, tok, docs, layer, neuron, { k, ctx: CTX, batch: 4 });
    const ref = [...rows].sort((a, b) => b.acts[neuron]! - a.acts[neuron]! || a.doc - b.doc || a.position - b.position).slice(0, k);
    assert.equal(top.length, k);
    top.forEach((t, i) => {
      const r = ref[i]!;
      assert.ok(Math.abs(t.activation - r.acts[neuron]!) <= 1e-5, `neuron ${neuron} rank ${i}: ${t.activation} vs ${r.acts[neuron]}`);
      assert.deepEqual([t.docId, t.position], [docs[r.doc]!.id, r.position], `neuron ${neuron} rank ${i}`);
      const ids = tok.encode(docs[r.doc]!.text);
      assert.equal(t.tokenId, ids[r.position]);
      assert.equal(t.token, tok.decode([ids[r.position]!]));
      assert.equal(t.before, tok.decode(ids.slice(Math.max(0, r.position - 12), r.position)));
      assert.equal(t.after, tok.decode(ids.slice(r.position + 1, r.position + 4)));
      assert.equal(t.context, `${t.before}[[${t.token}]]${t.after}`);
    });
  }
  // k larger than the number of tokens: every token, sorted.
  const all = topActivations(model, tok, docs.slice(0, 1), layer, 3, { k: 10000, ctx: CTX });
  assert.equal(all.length, tok.encode(docs[0]!.text).length);
  for (let i = 1; i < all.length; i++) assert.ok(all[i - 1]!.activation >= all[i]!.activation);
});

test("scanLayer: one pass gives the same statistics and contexts as the two functions", () => {
  const model = spikyModel(7);
  const docs = makeDocs(5, 8);
  const scan = scanLayer(model, tok, docs, 0, { ctx: CTX, k: 4, topNeurons: [2, 9] });
  assert.deepEqual(scan.stats, layerNeuronStats(model, tok, docs, 0, { ctx: CTX }));
  assert.deepEqual(scan.top.get(9), topActivations(model, tok, docs, 0, 9, { ctx: CTX, k: 4 }));
});

test("out-of-range layers and neurons, and bad options, fail with one clear error", () => {
  const model = spikyModel(9);
  const docs = makeDocs(2, 10);
  const cases: Array<[() => unknown, RegExp]> = [
    [() => layerNeuronStats(model, tok, docs, 2), /^layer 2 is out of range: the model has 2 layers \(0\.\.1\)$/],
    [() => layerNeuronStats(model, tok, docs, -1), /^layer -1 is out of range/],
    [() => topActivations(model, tok, docs, 1, 64), /^neuron 64 is out of range: layer 1 has 64 neurons \(0\.\.63\)$/],
    [() => topActivations(model, tok, docs, 0, -3), /^neuron -3 is out of range: layer 0 has 64 neurons/],
    [() => topActivations(model, tok, docs, 0, 1, { k: 0 }), /^k must be a positive integer, got 0$/],
    [() => layerNeuronStats(model, tok, docs, 0, { ctx: 17 }), /^ctx 17 is longer than the model's context n_ctx 16$/],
    [() => layerNeuronStats(model, tok, docs, 0, { maxTokens: 0 }), /^maxTokens must be a positive integer/],
    [() => layerNeuronStats(model, tok, [], 0), /^no documents to read$/],
  ];
  for (const [fn, re] of cases) assert.throws(fn, (e: unknown) => e instanceof SelfreportError && re.test(e.message), `expected ${re}`);
});

test("suggestTargets: not dead, peaked, ranked by std", () => {
  const s = (neuron: number, mean: number, std: number, max: number, sparsity: number): NeuronStats => ({ neuron, mean, std, min: -0.17, max, sparsity, fracAbove1: 0 });
  const stats = [
    s(0, 0.1, 0.5, 3.0, 0.5), //    ok, std 0.5
    s(1, 0.0, 2.0, 9.0, 0.995), //  dead (fires on 0.5 %)
    s(2, 1.0, 1.0, 2.5, 0.2), //    not peaked: max − mean = 1.5 < 2·std
    s(3, 0.2, 0.8, 4.0, 0.9), //    ok, std 0.8
    s(4, 0.0, 0.0, 0.0, 0.5), //    constant
    s(5, 0.1, 0.8, 5.0, 0.7), //    ok, std 0.8 (ties broken by index)
  ];
  assert.deepEqual(suggestTargets(stats, 10).map((x) => x.neuron), [3, 5, 0]);
  assert.deepEqual(suggestTargets(stats, 2).map((x) => x.neuron), [3, 5]);
  assert.deepEqual(suggestTargets(stats, 0), []);
});

test("TopKHeap keeps the k largest, earlier order first on ties", () => {
  const rng = mulberry32(11);
  for (const k of [1, 3, 10, 50]) {
    const items = Array.from({ length: 40 }, (_, order) => ({ activation: Math.round(rng() * 8), order }));
    const heap = new TopKHeap<(typeof items)[number]>(k);
    for (const it of items) heap.push(it);
    const ref = [...items].sort((a, b) => b.activation - a.activation || a.order - b.order).slice(0, k);
    assert.deepEqual(heap.sorted(), ref, `k ${k}`);
  }
});
