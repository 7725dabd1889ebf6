/**
 * The dataset builder on a tiny random GPT-2 with GPT-2's tokenizer and seeded text documents:
 * every target against a forward pass of the example's own prefix, one example at a time; splits
 * by document; statistics and bin edges recomputed by hand; --balance; the file round trip; errors.
 */
import { test, after } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { noGrad, Rng } from "../../src/tensor/index.ts";
import { loadModel } from "../../src/model/load.ts";
import { loadTokenizer } from "../../src/model/tokenizer.ts";
import { writeSafetensors } from "../../src/io/safetensors.ts";
import { SelfreportError } from "../../src/errors.ts";
import {
  buildDataset, writeDataset, readDataset, documentSplit, targetHookName, exampleTokens, exampleBatch, splitIndices, padIdForVocab, jsonlPathFor,
  balancedChoice, type BuildOptions, type Dataset,
} from "../../src/selfreport/dataset.ts";
import { computeFeatures } from "../../src/selfreport/features.ts";
import { makeTinyHfModel } from "../helpers/tiny-model.ts";
import { assertClose } from "../tensor/gradcheck.ts";
import { makeDocs } from "../helpers/text-docs.ts";

process.env["SELFREPORT_QUIET"] = "1";

const root = mkdtempSync(join(tmpdir(), "selfreport-dataset-"));
after(() => rmSync(root, { recursive: true, force: true }));

const modelDir = join(root, "model");
makeTinyHfModel(modelDir, { dVocab: 50257, nLayers: 2, dModel: 16, nHeads: 2, nCtx: 16, seed: 3 });
const model = loadModel(modelDir, { weights: "tl" }).model;
const tok = loadTokenizer(modelDir);
const docs = makeDocs(30, 60, 11);
const docIds = docs.map((d) => tok.encode(d.text));

const base: BuildOptions = {
  modelName: "tiny", modelDir, weights: "tl", layer: 1, neuron: 5, layerType: "mlp_post", tokenPos: "last",
  n: 120, maxLen: 8, balance: false, seed: 4, corpusName: "test-docs",
};
const ds = buildDataset(model, tok, docs, base);

/** The target hook's activation at `pos` of `ids` alone: a full forward of that prefix only. */
function ownActivation(ids: Int32Array, pos: number, hook: string, neuron: number): number {
  const { cache } = noGrad(() => model.runWithCache({ ids: Int32Array.from(ids), batch: 1, len: ids.length }, [hook]));
  const A = cache.get(hook)!; // [1, T, width]
  return A.data[pos * A.shape[2]! + neuron]!;
}

/** (document, window start) of every example: where its tokens occur at a multiple of maxLen; asserts it is unique. */
function sourceOf(d: Dataset, i: number): { doc: number; start: number } {
  const ids = exampleTokens(d, i);
  const found: Array<{ doc: number; start: number }> = [];
  docIds.forEach((all, doc) => {
    for (let s = 0; s + ids.length <= all.length; s += d.meta.max_len) {
      if (ids.every((v, k) => all[s + k] === v)) found.push({ doc, start: s });
    }
  });
  assert.equal(found.length, 1, `example ${i} occurs ${found.length} times as a window prefix`);
  return found[0]!;
}

test("every target equals the hook's activation on the example's own prefix (one forward each), to 1e-5", () => {
  assert.equal(ds.meta.n, 120);
  const got = new Float64Array(ds.meta.n);
  const ref = new Float64Array(ds.meta.n);
  for (let i = 0; i < ds.meta.n; i++) {
    assert.equal(ds.positions[i], ds.lengths[i]! - 1, `token_pos last reads the last token (example ${i})`);
    assert.ok(ds.lengths[i]! >= 4 && ds.lengths[i]! <= 8, `length ${ds.lengths[i]} within [minLen 4, maxLen 8]`);
    got[i] = ds.targets[i]!;
    ref[i] = ownActivation(exampleTokens(ds, i), ds.positions[i]!, "blocks.1.mlp.hook_post", 5);
  }
  assertClose("targets vs per-prefix forward", got, ref, { atol: 1e-5, rtol: 0 });
  // not a constant: the check above would be weak on a dead neuron
  assert.ok(Math.max(...ref) - Math.min(...ref) > 0.1, `target spread ${Math.max(...ref) - Math.min(...ref)}`);
});

test("layer_type mlp_out reads dimension N of blocks.L.hook_mlp_out", () => {
  const d = buildDataset(model, tok, docs, { ...base, layer: 0, neuron: 7, layerType: "mlp_out" });
  assert.equal(d.meta.hook, "blocks.0.hook_mlp_out");
  assert.equal(targetHookName(0, "mlp_out"), "blocks.0.hook_mlp_out");
  for (let i = 0; i < d.meta.n; i++) {
    const r = ownActivation(exampleTokens(d, i), d.positions[i]!, "blocks.0.hook_mlp_out", 7);
    assert.ok(Math.abs(d.targets[i]! - r) <= 1e-5, `example ${i}: ${d.targets[i]} vs ${r}`);
  }
});

test("examples of one window are prefixes of one text window; their features equal per-prefix forwards", () => {
  const byWindow = new Map<number, number[]>();
  for (let i = 0; i < ds.meta.n; i++) byWindow.set(ds.window[i]!, [...(byWindow.get(ds.window[i]!) ?? []), i]);
  assert.ok([...byWindow.values()].some((m) => m.length > 1), "some window gives several examples");
  for (const members of byWindow.values()) {
    assert.ok(members.length <= 4, "at most perWindow (4) examples per window");
    const src = members.map((i) => sourceOf(ds, i));
    for (const s of src) assert.deepEqual(s, src[0], "one window = one place in one document");
    const lengths = members.map((i) => ds.lengths[i]!);
    assert.equal(new Set(lengths).size, lengths.length, "distinct read positions within a window");
  }
  // computeFeatures runs one forward per window (its longest example): equal to one forward per prefix
  const F = computeFeatures(model, ds, 1);
  const got = new Float64Array(ds.meta.n * 16);
  const ref = new Float64Array(ds.meta.n * 16);
  for (let i = 0; i < ds.meta.n; i++) {
    const ids = exampleTokens(ds, i);
    const { cache } = noGrad(() => model.runWithCache({ ids: Int32Array.from(ids), batch: 1, len: ids.length }, ["blocks.1.hook_resid_post"]));
    const R = cache.get("blocks.1.hook_resid_post")!; // [1, T, 16]
    ref.set(R.data.subarray(ds.positions[i]! * 16, (ds.positions[i]! + 1) * 16), i * 16);
    got.set(F.data.subarray(i * 16, (i + 1) * 16), i * 16);
  }
  assertClose("features vs per-prefix resid_post", got, ref, { atol: 1e-5, rtol: 1e-5 }, [ds.meta.n, 16]);
});

test("splits are by document: each example's split is its document's, and no document is in two splits", () => {
  const splitsOfDoc = new Map<number, Set<number>>();
  for (let i = 0; i < ds.meta.n; i++) {
    const { doc } = sourceOf(ds, i);
    assert.equal(ds.split[i], documentSplit(docs[doc]!.id, base.seed), `example ${i} (document ${docs[doc]!.id})`);
    splitsOfDoc.set(doc, (splitsOfDoc.get(doc) ?? new Set()).add(ds.split[i]!));
  }
  for (const [doc, s] of splitsOfDoc) assert.equal(s.size, 1, `document ${doc} is in splits ${[...s]}`);
  const counts = [0, 1, 2].map((s) => ds.split.filter((x) => x === s).length);
  assert.deepEqual(ds.meta.split_counts, { train: counts[0], validation: counts[1], test: counts[2] });
  assert.ok(counts.every((c) => c > 0), `every split is used: ${counts}`);
  assert.deepEqual(splitIndices(ds, "test"), Array.from({ length: ds.meta.n }, (_, i) => i).filter((i) => ds.split[i] === 2));
  // the assignment is 80/10/10 over many ids, and it depends on the seed
  const ids = Array.from({ length: 20000 }, (_, i) => `id-${i}`);
  const frac = [0, 1, 2].map((s) => ids.filter((id) => documentSplit(id, 4) === s).length / ids.length);
  assert.ok(Math.abs(frac[0]! - 0.8) < 0.015 && Math.abs(frac[1]! - 0.1) < 0.015 && Math.abs(frac[2]! - 0.1) < 0.015, `fractions ${frac}`);
  assert.ok(ids.slice(0, 200).some((id) => documentSplit(id, 4) !== documentSplit(id, 5)), "the seed changes the assignment");
});

test("stats and quantile bin edges are those of the training targets, recomputed by hand", () => {
  const train = Array.from(ds.targets.filter((_, i) => ds.split[i] === 0), Number);
  const n = train.length;
  let sum = 0;
  for (const v of train) sum += v;
  const m = sum / n;
  let ss = 0;
  for (const v of train) ss += (v - m) ** 2;
  const sorted = [...train].sort((a, b) => a - b);
  const q = (p: number): number => {
    const pos = p * (n - 1);
    const lo = Math.floor(pos);
    return lo + 1 < n ? sorted[lo]! + (sorted[lo + 1]! - sorted[lo]!) * (pos - lo) : sorted[lo]!;
  };
  const s = ds.meta.stats;
  assert.equal(s.count, n);
  assert.ok(Math.abs(s.mean - m) <= 1e-12, `mean ${s.mean} vs ${m}`);
  assert.ok(Math.abs(s.std - Math.sqrt(ss / n)) <= 1e-12, `std ${s.std} vs ${Math.sqrt(ss / n)}`);
  assert.equal(s.min, sorted[0]);
  assert.equal(s.max, sorted[n - 1]);
  for (const p of [1, 5, 25, 50, 75, 95, 99]) assert.ok(Math.abs(s.quantiles[`q${p}`]! - q(p / 100)) <= 1e-12, `q${p}`);
  assert.equal(ds.meta.num_bins, 10);
  assert.equal(ds.meta.bin_edges.length, 11);
  ds.meta.bin_edges.forEach((e, i) => assert.ok(Math.abs(e - q(i / 10)) <= 1e-12, `edge ${i}: ${e} vs ${q(i / 10)}`));
  assert.equal(ds.meta.bin_edges[0], sorted[0]);
  assert.equal(ds.meta.bin_edges[10], sorted[n - 1]);
});

test("token_pos INDEX: every example reads that position, from prefixes longer than it", () => {
  const d = buildDataset(model, tok, docs, { ...base, tokenPos: 2, n: 30 });
  assert.equal(d.meta.token_pos, 2);
  assert.equal(new Set(d.window).size, d.meta.n, "one example per window");
  for (let i = 0; i < d.meta.n; i++) {
    assert.equal(d.positions[i], 2);
    assert.ok(d.lengths[i]! >= 3 && d.lengths[i]! <= 8, `length ${d.lengths[i]}`);
    const r = ownActivation(exampleTokens(d, i), 2, "blocks.1.mlp.hook_post", 5);
    assert.ok(Math.abs(d.targets[i]! - r) <= 1e-5, `example ${i}: ${d.targets[i]} vs ${r}`);
  }
});

test("--balance over-samples high activations in the training split only", () => {
  const n = 200;
  const bal = buildDataset(model, tok, docs, { ...base, n, balance: true });
  const plain = buildDataset(model, tok, docs, { ...base, n });
  // the pool --balance draws from (3n examples) is, in order, what a plain build of 3n examples takes
  const pool = buildDataset(model, tok, docs, { ...base, n: 3 * n });
  assert.equal(bal.meta.n, n);
  assert.equal(bal.meta.balance, true);
  const key = (d: Dataset, i: number): string => `${d.window[i]}:${d.lengths[i]}`;

  // validation and test: the pool's first examples of those splits, in order, untouched
  const balOther = Array.from({ length: n }, (_, i) => i).filter((i) => bal.split[i] !== 0);
  const poolOther = Array.from({ length: pool.meta.n }, (_, i) => i).filter((i) => pool.split[i] !== 0);
  assert.ok(balOther.length > 0);
  balOther.forEach((i, k) => {
    assert.equal(key(bal, i), key(pool, poolOther[k]!), `validation/test example ${k}`);
    assert.equal(bal.targets[i], pool.targets[poolOther[k]!]);
  });
  assert.equal(new Set(balOther.map((i) => key(bal, i))).size, balOther.length, "no duplicates outside train");

  // train: drawn from the pool's training examples, more often from the top deciles
  const poolTrain = Array.from({ length: pool.meta.n }, (_, i) => i).filter((i) => pool.split[i] === 0).map((i) => pool.targets[i]!).sort((a, b) => a - b);
  const p90 = poolTrain[Math.floor(0.9 * poolTrain.length)]!;
  const topShare = (d: Dataset): number => {
    const t = d.targets.filter((_, i) => d.split[i] === 0);
    return t.filter((v) => v >= p90).length / t.length;
  };
  assert.ok(topShare(bal) >= 0.13, `balanced top-decile share ${topShare(bal)} (bin 9 is drawn 1.5× its fair share)`);
  assert.ok(topShare(bal) > topShare(plain), `balanced ${topShare(bal)} vs plain ${topShare(plain)}`);
  const meanTrain = (d: Dataset): number => {
    const t = d.targets.filter((_, i) => d.split[i] === 0);
    return t.reduce((a, b) => a + b, 0) / t.length;
  };
  assert.ok(meanTrain(bal) > meanTrain(plain), `train mean ${meanTrain(bal)} vs ${meanTrain(plain)}`);
  // stats describe the balanced training split
  assert.ok(Math.abs(bal.meta.stats.mean - meanTrain(bal)) <= 1e-6);
});

test("--balance keeps each decile's whole range: draws within a decile are random, so the tail survives", () => {
  // a heavy-tailed pool (exponential), 90 % training examples
  const rng = new Rng(21);
  const P = 6000;
  const targets = Array.from({ length: P }, () => -Math.log(1 - rng.uniform()));
  const split = Array.from({ length: P }, (_, i) => (i % 10 === 9 ? 2 : 0));
  const n = 2000;
  const chosen = balancedChoice(targets, split, n, new Rng(5));
  assert.equal(chosen.length, n);
  const pool = targets.filter((_, i) => split[i] === 0).sort((a, b) => a - b);
  const train = chosen.filter((i) => split[i] === 0).map((i) => targets[i]!).sort((a, b) => a - b);
  const q = (xs: number[], p: number): number => xs[Math.min(xs.length - 1, Math.floor(p * xs.length))]!;
  // the pool's top decile has 540 members, 300 of them drawn without replacement: the chance that none of
  // the pool's 20 largest is drawn is below 1e-6, so the balanced max is at least the 20th largest
  assert.ok(train.at(-1)! >= pool.at(-20)!, `balanced max ${train.at(-1)} < the pool's 20th largest ${pool.at(-20)} (pool max ${pool.at(-1)})`);
  // within every decile the chosen values are a random sample of the decile: same median within 4 standard errors
  const bins = 10;
  for (let b = 0; b < bins; b++) {
    const lo = pool[Math.floor((b * pool.length) / bins)]!;
    const hi = b === bins - 1 ? Infinity : pool[Math.floor(((b + 1) * pool.length) / bins)]!;
    const members = pool.filter((v) => v >= lo && v < hi);
    const drawn = train.filter((v) => v >= lo && v < hi);
    const median = q(members, 0.5);
    const above = drawn.filter((v) => v > median).length / drawn.length;
    assert.ok(Math.abs(above - 0.5) < 4 * Math.sqrt(0.25 / drawn.length), `decile ${b}: ${(100 * above).toFixed(1)}% of ${drawn.length} draws above the decile's median (expected 50%)`);
  }
  // and so the pool's upper tail is represented: of the pool examples above its 95th percentile, the top decile's
  // draws (300 of 540) take about half of them, and the balanced split's 95th/99th percentiles are the pool's or higher
  const p95 = q(pool, 0.95);
  const overP95 = new Set(chosen.filter((i) => split[i] === 0 && targets[i]! > p95)).size;
  const poolOverP95 = pool.filter((v) => v > p95).length;
  assert.ok(overP95 / poolOverP95 > 0.4, `${overP95} of the pool's ${poolOverP95} examples above its 95th percentile survive`);
  for (const p of [0.95, 0.99]) assert.ok(q(train, p) >= q(pool, p), `balanced q${100 * p} ${q(train, p)} < pool q${100 * p} ${q(pool, p)}`);
});

test("writeDataset → readDataset is exact; the .jsonl has one readable line per example", () => {
  const path = join(root, "ds.safetensors");
  writeDataset(path, ds, (ids) => tok.decode(ids));
  const back = readDataset(path);
  assert.deepEqual(back.meta, ds.meta);
  for (const k of ["tokens", "lengths", "positions", "targets", "split", "window"] as const) {
    assert.equal(back[k].constructor, ds[k].constructor, k);
    assert.deepEqual(back[k], ds[k], k);
  }
  const lines = readFileSync(jsonlPathFor(path), "utf8").trimEnd().split("\n").map((l) => JSON.parse(l) as Record<string, unknown>);
  assert.equal(lines.length, ds.meta.n);
  lines.forEach((l, i) => {
    assert.equal(l["i"], i);
    assert.equal(l["split"], ["train", "validation", "test"][ds.split[i]!]);
    assert.equal(l["position"], ds.positions[i]);
    assert.equal(l["activation"], ds.targets[i]);
    assert.equal(l["text"], tok.decode(Array.from(exampleTokens(ds, i))));
  });
  // padding: tokens past each example's length are <|endoftext|>
  for (let i = 0; i < ds.meta.n; i++) for (let t = ds.lengths[i]!; t < 8; t++) assert.equal(ds.tokens[i * 8 + t], 50256);
});

test("exampleBatch pads to the longest example with a mask; padIdForVocab", () => {
  const b = exampleBatch(ds, [0, 1], 7);
  const T = Math.max(ds.lengths[0]!, ds.lengths[1]!);
  assert.equal(b.len, T);
  assert.equal(b.batch, 2);
  for (let r = 0; r < 2; r++) {
    for (let t = 0; t < T; t++) {
      const real = t < ds.lengths[r]!;
      assert.equal(b.attentionMask[r * T + t], real ? 1 : 0);
      assert.equal(b.ids[r * T + t], real ? ds.tokens[r * 8 + t] : 7);
    }
    assert.equal(b.positions[r], ds.positions[r]);
  }
  assert.equal(padIdForVocab(50257), 50256);
  assert.equal(padIdForVocab(64), 63);
});

function throwsExactly(fn: () => unknown, message: string): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof SelfreportError, `not a SelfreportError: ${String(e)}`);
    assert.equal(e.message, message);
    return true;
  });
}

test("buildDataset errors name the bad value and the allowed range", () => {
  throwsExactly(() => buildDataset(model, tok, docs, { ...base, neuron: 64 }), "--neuron 64 is out of range: layer 1 has 64 MLP neurons (0..63)");
  throwsExactly(() => buildDataset(model, tok, docs, { ...base, neuron: 16, layerType: "mlp_out" }), "--neuron 16 is out of range: the residual stream (mlp_out) has 16 dimensions (0..15)");
  throwsExactly(() => buildDataset(model, tok, docs, { ...base, neuron: -1 }), "--neuron -1 is out of range: layer 1 has 64 MLP neurons (0..63)");
  throwsExactly(() => buildDataset(model, tok, docs, { ...base, layer: 2 }), "--layer 2 is out of range: the model has 2 layers (0..1)");
  throwsExactly(() => buildDataset(model, tok, docs, { ...base, maxLen: 17 }), "--max-len 17 must be between 2 and the model's n_positions 16");
  throwsExactly(() => buildDataset(model, tok, docs, { ...base, maxLen: 1 }), "--max-len 1 must be between 2 and the model's n_positions 16");
  throwsExactly(() => buildDataset(model, tok, docs, { ...base, n: 5 }), "--n must be an integer ≥ 10, got 5");
  throwsExactly(() => buildDataset(model, tok, docs, { ...base, tokenPos: 8 }), '--token-pos must be "last" or an index in 0..7 (below --max-len), got 8');
  throwsExactly(() => buildDataset(model, tok, [{ id: "a", text: "hi" }], base), "the corpus has no text window of at least 4 tokens");
  // too few examples: count them independently (windows of 8 from each document, ≤ 4 read positions each)
  const few = docs.slice(0, 2);
  let available = 0;
  for (const d of few) {
    const ids = tok.encode(d.text);
    for (let s = 0; s + 4 <= ids.length; s += 8) available += Math.min(4, Math.min(8, ids.length - s) - 4 + 1);
  }
  assert.ok(available < 120);
  throwsExactly(() => buildDataset(model, tok, few, base), `the corpus yields only ${available} examples at --max-len 8; ask for fewer with --n or give a larger corpus`);
});

test("readDataset / writeDataset refuse what is not a dataset of this version", () => {
  const missing = join(root, "nope.safetensors");
  throwsExactly(() => readDataset(missing), `dataset ${missing} not found (build one with \`selfreport dataset\`)`);
  const plain = join(root, "plain.safetensors");
  writeSafetensors(plain, { x: { dtype: "F32", shape: [1], data: Float32Array.of(1) } });
  throwsExactly(() => readDataset(plain), `${plain} is not a selfreport dataset (no "selfreport" metadata)`);
  const v2 = join(root, "v2.safetensors");
  writeDataset(v2, { ...ds, meta: { ...ds.meta, version: 2 } }, () => "");
  throwsExactly(() => readDataset(v2), `${v2}: dataset version 2 is not supported (expected 1)`);
  throwsExactly(() => writeDataset(join(root, "x.bin"), ds, () => ""), `dataset --out must end in .safetensors, got "${join(root, "x.bin")}"`);
});
