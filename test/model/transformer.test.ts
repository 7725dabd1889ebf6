/**
 * src/model/{transformer,hf,process,load}.ts: the HookedTransformer loaded from tiny random models in
 * the Hugging Face layout, checked against
 *   - test/model/reference.ts, an independent float64 GPT-2 written from the HF layout (every hook, 1e-4),
 *   - test/fixtures/gpt2-tiny/expected.safetensors, activations from an independent PyTorch GPT-2
 *     (test/fixtures/make_gpt2_tiny.py, dev-only),
 *   - central differences of the float64 reference (gradients through the engine's backward),
 * plus TransformerLens weight processing, hooks, padding, dtypes, save/load and the error messages.
 * Every numerical comparison reports its worst difference (t.diagnostic) whether it passes or not.
 */
import { test, type TestContext } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, readFileSync, writeFileSync, existsSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Tensor, backward, mul, noGrad } from "../../src/tensor/index.ts";
import { SelfreportError } from "../../src/errors.ts";
import { loadModel, saveModel } from "../../src/model/load.ts";
import { processWeights } from "../../src/model/process.ts";
import { HookedTransformer, tokenBatch, type TokenBatch } from "../../src/model/transformer.ts";
import { repoRoot } from "../../src/model/resolve.ts";
import { loadTokenizer } from "../../src/model/tokenizer.ts";
import { readSafetensors, readSafetensorsHeader } from "../../src/io/safetensors.ts";
import { makeTinyHfModel, writeHfSafetensors, roundF16, type HfTensor, type TinyHfOptions } from "../helpers/tiny-model.ts";
import { mulberry32, randn } from "../helpers/rng.ts";
import { referenceForward, logSoftmaxRows } from "./reference.ts";

const ATOL = 1e-4;
const tmp = (): string => mkdtempSync(join(tmpdir(), "selfreport-model-"));

/** A fresh directory holding a tiny HF model; removed when the test ends. */
function tiny(t: TestContext, opts: TinyHfOptions = {}): ReturnType<typeof makeTinyHfModel> {
  const dir = tmp();
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  return makeTinyHfModel(join(dir, "model"), opts);
}

/** Equal-length rows as a TokenBatch without an attention mask. */
function batchOf(rows: readonly (readonly number[])[]): TokenBatch {
  const T = rows[0]!.length;
  return { ids: Int32Array.from(rows.flat()), batch: rows.length, len: T };
}

function randomRows(seed: number, B: number, T: number, V: number): number[][] {
  const rng = mulberry32(seed);
  return Array.from({ length: B }, () => Array.from({ length: T }, () => Math.floor(rng() * V)));
}

/** Worst |got − ref| (equal infinities agree; anything else non-finite is infinitely far). */
function worstDiff(got: ArrayLike<number>, ref: ArrayLike<number>): { diff: number; at: number } {
  let diff = 0;
  let at = -1;
  for (let i = 0; i < ref.length; i++) {
    const g = got[i]!;
    const r = ref[i]!;
    if (g === r) continue;
    const d = Number.isFinite(g) && Number.isFinite(r) ? Math.abs(g - r) : Infinity;
    if (!(d <= diff)) {
      diff = d;
      at = i;
    }
  }
  return { diff, at };
}

/** Asserts same shape and every value within atol; reports the worst difference. */
function assertNear(t: TestContext, what: string, got: { shape: readonly number[]; data: ArrayLike<number> }, ref: { shape: readonly number[]; data: ArrayLike<number> }, atol = ATOL): void {
  assert.deepEqual([...got.shape], [...ref.shape], `${what}: shape [${got.shape.join(", ")}], reference [${ref.shape.join(", ")}]`);
  const { diff, at } = worstDiff(got.data, ref.data);
  t.diagnostic(`${what}: worst |diff| ${diff.toExponential(2)}`);
  if (!(diff <= atol)) assert.fail(`${what}: worst |diff| ${diff} > ${atol} at flat index ${at}: got ${got.data[at]}, reference ${ref.data[at]}`);
}

/** Asserts that fn throws a one-line SelfreportError whose message matches every pattern. */
function assertError(fn: () => unknown, ...patterns: RegExp[]): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof SelfreportError, `expected a SelfreportError, got ${String(e)}`);
    assert.ok(!e.message.includes("\n"), `message is not one line: ${e.message}`);
    for (const p of patterns) assert.match(e.message, p);
    return true;
  });
}

const allHooks = (): boolean => true;

/** The HF tensors of a model dir as written (prefix stripped, buffers dropped), for rewriting in error tests. */
function fileTensors(dir: string): Map<string, HfTensor> {
  const out = new Map<string, HfTensor>();
  for (const [k, t] of readSafetensors(join(dir, "model.safetensors")).tensors) out.set(k, { shape: t.shape, data: t.data as Float32Array });
  return out;
}

// -----------------------------------------------------------------------------------------------
// Against the float64 reference

const SHAPES: Array<{ label: string; opts: TinyHfOptions; B: number; T: number }> = [
  { label: "2 layers, d_model 16, 2 heads, tied", opts: { seed: 1 }, B: 2, T: 9 },
  { label: "3 layers, 4 heads, d_mlp 24, untied, prefixed keys", opts: { seed: 2, nLayers: 3, nHeads: 4, dMlp: 24, tied: false, prefix: true }, B: 3, T: 16 },
  { label: "1 layer, 1 head, d_model 8, one token", opts: { seed: 3, nLayers: 1, nHeads: 1, dModel: 8, dVocab: 11 }, B: 1, T: 1 },
];

for (const s of SHAPES) {
  test(`every hook of runWithCache matches the float64 reference: ${s.label}`, (t) => {
    const m = tiny(t, s.opts);
    const { model } = loadModel(m.dir, { weights: "raw" });
    const rows = randomRows(s.opts.seed! + 100, s.B, s.T, model.cfg.dVocab);
    const { logits, cache } = noGrad(() => model.runWithCache(batchOf(rows), allHooks));
    const ref = referenceForward(m.weights, m.config, rows);
    assert.deepEqual([...cache.keys()], [...ref.acts.keys()], "hook points and their order");
    for (const [name, r] of ref.acts) assertNear(t, name, cache.get(name)!, r);
    assertNear(t, "logits", logits!, ref.logits);
  });
}

test("the fused attention path (nobody hooks scores or pattern) matches the reference too, with and without a mask of ones", (t) => {
  const m = tiny(t, { seed: 4 });
  const { model } = loadModel(m.dir, { weights: "raw" });
  const rows = randomRows(5, 2, 12, 64);
  const ref = referenceForward(m.weights, m.config, rows);
  const names = ["blocks.0.attn.hook_z", "blocks.1.hook_resid_post"];
  const plain = noGrad(() => model.runWithCache(batchOf(rows), names));
  const masked = noGrad(() => model.runWithCache(tokenBatch(rows, 0), names));
  for (const n of names) {
    assertNear(t, `${n} (fused)`, plain.cache.get(n)!, ref.acts.get(n)!);
    assertNear(t, `${n} (fused, mask of ones)`, masked.cache.get(n)!, plain.cache.get(n)!, 0);
  }
  assertNear(t, "logits (fused)", plain.logits!, ref.logits);
});

test("nothing hooked (one-op LayerNorm, sums and GELU written over fresh outputs) gives the same bits as every point hooked, and leaves the input untouched", (t) => {
  const m = tiny(t, { seed: 6 });
  for (const weights of ["raw", "tl"] as const) {
    const { model } = loadModel(m.dir, { weights });
    const rows = randomRows(7, 2, 11, 64);
    const plain = noGrad(() => model.forward(batchOf(rows)));
    // every point but the attention pattern's (whose hooks switch attention to its two-op form, tested above)
    const hooked = noGrad(() => model.runWithCache(batchOf(rows), (n) => !/hook_(attn_scores|pattern)$/.test(n)));
    assert.deepEqual(plain.logits!.data, hooked.logits!.data, `${weights}: logits differ between the unhooked and the fully hooked forward`);
    // runBlocks must not write over the residual stream it is given
    const resid = hooked.cache.get("blocks.0.hook_resid_post")!;
    const before = resid.data.slice();
    const after = noGrad(() => model.runBlocks(resid, 1, model.cfg.nLayers));
    assert.deepEqual(resid.data, before, `${weights}: runBlocks changed its input`);
    assert.deepEqual(after.data, hooked.cache.get(`blocks.${model.cfg.nLayers - 1}.hook_resid_post`)!.data);
    // cached activations are not overwritten by later in-place work
    const pre = hooked.cache.get("blocks.0.mlp.hook_pre")!;
    const post = hooked.cache.get("blocks.0.mlp.hook_post")!;
    assert.notDeepEqual(pre.data, post.data);
  }
});

test("the PyTorch fixture: runWithCache matches HF GPT-2 math computed by torch (make_gpt2_tiny.py)", (t) => {
  const dir = join(repoRoot(), "test", "fixtures", "gpt2-tiny");
  const { model } = loadModel(dir, { weights: "raw" });
  const expected = readSafetensors(join(dir, "expected.safetensors")).tensors;
  const H = model.cfg.nHeads;
  assert.equal(H, 4);
  for (const seq of ["seq0", "seq1"]) {
    const ids = expected.get(`${seq}.tokens`)!.data as Int32Array;
    const names: string[] = [];
    for (let l = 0; l < model.cfg.nLayers; l++) {
      for (const h of ["hook_resid_pre", "hook_resid_post", "mlp.hook_post", "attn.hook_pattern"]) names.push(`blocks.${l}.${h}`);
    }
    const { logits, cache } = noGrad(() => model.runWithCache(batchOf([[...ids]]), names));
    for (const n of names) assertNear(t, `${seq} ${n}`, cache.get(n)!, expected.get(`${seq}.${n}`)!);
    assertNear(t, `${seq} logits`, logits!, expected.get(`${seq}.logits`)!);
  }
});

// -----------------------------------------------------------------------------------------------
// Hook names

const BLOCK = [
  "hook_resid_pre", "ln1.hook_scale", "ln1.hook_normalized", "attn.hook_q", "attn.hook_k", "attn.hook_v",
  "attn.hook_attn_scores", "attn.hook_pattern", "attn.hook_z", "hook_attn_out", "hook_resid_mid",
  "ln2.hook_scale", "ln2.hook_normalized", "mlp.hook_pre", "mlp.hook_post", "hook_mlp_out", "hook_resid_post",
];
const HOOKS_2_LAYERS = [
  "hook_embed", "hook_pos_embed",
  "blocks.0.hook_resid_pre", "blocks.0.ln1.hook_scale", "blocks.0.ln1.hook_normalized",
  "blocks.0.attn.hook_q", "blocks.0.attn.hook_k", "blocks.0.attn.hook_v", "blocks.0.attn.hook_attn_scores",
  "blocks.0.attn.hook_pattern", "blocks.0.attn.hook_z", "blocks.0.hook_attn_out", "blocks.0.hook_resid_mid",
  "blocks.0.ln2.hook_scale", "blocks.0.ln2.hook_normalized", "blocks.0.mlp.hook_pre", "blocks.0.mlp.hook_post",
  "blocks.0.hook_mlp_out", "blocks.0.hook_resid_post",
  "blocks.1.hook_resid_pre", "blocks.1.ln1.hook_scale", "blocks.1.ln1.hook_normalized",
  "blocks.1.attn.hook_q", "blocks.1.attn.hook_k", "blocks.1.attn.hook_v", "blocks.1.attn.hook_attn_scores",
  "blocks.1.attn.hook_pattern", "blocks.1.attn.hook_z", "blocks.1.hook_attn_out", "blocks.1.hook_resid_mid",
  "blocks.1.ln2.hook_scale", "blocks.1.ln2.hook_normalized", "blocks.1.mlp.hook_pre", "blocks.1.mlp.hook_post",
  "blocks.1.hook_mlp_out", "blocks.1.hook_resid_post",
  "ln_final.hook_scale", "ln_final.hook_normalized",
];

test("hook names of a 2-layer model, in the order the forward pass reaches them", (t) => {
  const m = tiny(t);
  const { model } = loadModel(m.dir, { weights: "raw" });
  assert.equal(HOOKS_2_LAYERS.length, 2 + 2 * BLOCK.length + 2);
  assert.deepEqual(model.hookNames(), HOOKS_2_LAYERS);
  const seen: string[] = [];
  noGrad(() => model.runWithHooks(batchOf([[1, 2, 3]]), [[allHooks, (_x, hook) => void seen.push(hook.name)]]));
  assert.deepEqual(seen, HOOKS_2_LAYERS, "every hook runs exactly once, in order");
  const { cache } = noGrad(() => model.runWithCache(batchOf([[1, 2, 3]]), ["blocks.1.mlp.hook_post", "hook_embed"]));
  assert.deepEqual([...cache.keys()], ["hook_embed", "blocks.1.mlp.hook_post"], "only the requested hooks are cached");
});

// -----------------------------------------------------------------------------------------------
// TransformerLens weight processing

test("tl and raw weights give the same MLP activations, attention patterns and log-probabilities", (t) => {
  const m = tiny(t, { seed: 6 });
  const raw = loadModel(m.dir, { weights: "raw" }).model;
  const tl = loadModel(m.dir, { weights: "tl" }).model;
  assert.equal(tl.cfg.tiedEmbeddings, false, "folding ln_final unties the unembedding");
  const rows = randomRows(7, 2, 10, 64);
  const names = (n: string): boolean => /mlp\.hook_(pre|post)$|attn\.hook_pattern$|hook_resid_post$/.test(n);
  const a = noGrad(() => raw.runWithCache(batchOf(rows), names));
  const b = noGrad(() => tl.runWithCache(batchOf(rows), names));
  for (let l = 0; l < 2; l++) {
    for (const h of ["mlp.hook_pre", "mlp.hook_post", "attn.hook_pattern"]) {
      const n = `blocks.${l}.${h}`;
      assertNear(t, `${n} tl vs raw`, b.cache.get(n)!, a.cache.get(n)!);
    }
    // tl centres every write to the residual stream: each position's residual has mean 0 over d_model.
    const r = b.cache.get(`blocks.${l}.hook_resid_post`)!;
    const C = tl.cfg.dModel;
    let worst = 0;
    for (let row = 0; row < r.size / C; row++) {
      let s = 0;
      for (let c = 0; c < C; c++) s += r.data[row * C + c]!;
      worst = Math.max(worst, Math.abs(s / C));
    }
    t.diagnostic(`blocks.${l}.hook_resid_post tl: worst |mean over d_model| ${worst.toExponential(2)}`);
    assert.ok(worst < 1e-5, `tl residual stream is not centred: mean ${worst}`);
  }
  const V = raw.cfg.dVocab;
  const lpRaw = logSoftmaxRows(a.logits!.data, V);
  const lpTl = logSoftmaxRows(b.logits!.data, V);
  assertNear(t, "log_softmax(logits) tl vs raw", { shape: a.logits!.shape, data: lpTl }, { shape: a.logits!.shape, data: lpRaw });
  // The logits themselves differ by one constant per position.
  let spread = 0;
  let shift = 0;
  for (let row = 0; row < lpRaw.length / V; row++) {
    let lo = Infinity;
    let hi = -Infinity;
    for (let v = 0; v < V; v++) {
      const d = b.logits!.data[row * V + v]! - a.logits!.data[row * V + v]!;
      lo = Math.min(lo, d);
      hi = Math.max(hi, d);
    }
    spread = Math.max(spread, hi - lo);
    shift = Math.max(shift, Math.abs(lo));
  }
  t.diagnostic(`logits tl − raw: worst spread within a position ${spread.toExponential(2)}, largest shift ${shift.toFixed(3)}`);
  assert.ok(spread <= ATOL, `logits tl − raw is not constant per position (spread ${spread})`);
});

test("tl W_in is raw W_in ⊙ ln2.w centred over d_model; b_in absorbs ln2.b; the LayerNorms become 1/0", (t) => {
  const m = tiny(t, { seed: 8 });
  const raw = loadModel(m.dir, { weights: "raw" }).model;
  const tl = loadModel(m.dir, { weights: "tl" }).model;
  const { dModel: C, dMlp: M } = raw.cfg;
  const l = 1;
  const n = 5; // one column, by hand
  const Win = m.weights.get(`h.${l}.mlp.c_fc.weight`)!.data; // [C, M]
  const lnW = m.weights.get(`h.${l}.ln_2.weight`)!.data;
  const lnB = m.weights.get(`h.${l}.ln_2.bias`)!.data;
  const col = Array.from({ length: C }, (_, c) => Win[c * M + n]! * lnW[c]!);
  const mean = col.reduce((a, b) => a + b, 0) / C;
  const want = col.map((x) => x - mean);
  const got = Array.from({ length: C }, (_, c) => tl.W_in(l).data[c * M + n]!);
  assertNear(t, `tl W_in[:, ${n}] of layer ${l}`, { shape: [C], data: got }, { shape: [C], data: want }, 1e-6);
  let bIn = m.weights.get(`h.${l}.mlp.c_fc.bias`)!.data[n]!;
  for (let c = 0; c < C; c++) bIn += Win[c * M + n]! * lnB[c]!;
  assertNear(t, `tl b_in[${n}] of layer ${l}`, { shape: [1], data: [tl.b_in(l).data[n]!] }, { shape: [1], data: [bIn] }, 1e-5);
  assert.ok(got.some((x, c) => Math.abs(x - Win[c * M + n]!) > 1e-3), "the fixture's ln2 must not be the identity");
  for (const p of ["blocks.0.ln1", "blocks.0.ln2", "blocks.1.ln1", "blocks.1.ln2", "ln_final"]) {
    assert.ok(tl.p(`${p}.w`).data.every((x) => x === 1), `${p}.w is all 1`);
    assert.ok(tl.p(`${p}.b`).data.every((x) => x === 0), `${p}.b is all 0`);
  }
  assert.ok(tl.b_V(0).data.every((x) => x === 0), "b_V folded into b_O");
});

test("tl processing applied twice is the same as once", (t) => {
  const m = tiny(t, { seed: 9 });
  const tl = loadModel(m.dir, { weights: "tl" }).model;
  const twice = processWeights(tl.params, tl.cfg, "tl");
  assert.deepEqual(twice.cfg, tl.cfg);
  assert.deepEqual([...twice.params.keys()].sort(), [...tl.params.keys()].sort());
  let worst = 0;
  for (const [name, p] of tl.params) {
    const q = twice.params.get(name)!;
    assert.deepEqual(q.shape, p.shape, name);
    worst = Math.max(worst, worstDiff(q.data, p.data).diff);
  }
  t.diagnostic(`tl∘tl vs tl: worst |diff| over all parameters ${worst.toExponential(2)}`);
  assert.ok(worst <= 1e-6, `processing twice changed a weight by ${worst}`);
  assert.notEqual(twice.params.get("blocks.0.mlp.W_in"), tl.params.get("blocks.0.mlp.W_in"), "processWeights returns copies");
});

// -----------------------------------------------------------------------------------------------
// Padding, stopAtLayer, hooks

test("padding: a right-padded row gives the same activations on its real positions as the row alone", (t) => {
  const m = tiny(t, { seed: 10 });
  const { model } = loadModel(m.dir, { weights: "raw" });
  const long = randomRows(11, 1, 9, 64)[0]!;
  const short = randomRows(12, 1, 4, 64)[0]!;
  const padded = noGrad(() => model.runWithCache(tokenBatch([long, short], 63), allHooks));
  for (const [b, row] of [[0, long], [1, short]] as const) {
    const alone = noGrad(() => model.runWithCache(batchOf([row]), allHooks));
    const n = row.length;
    const T = 9;
    let worst = 0;
    for (const [name, x] of alone.cache) {
      const p = padded.cache.get(name)!;
      if (name.endsWith("attn_scores") || name.endsWith("pattern")) {
        const H = x.shape[1]!;
        for (let h = 0; h < H; h++) {
          for (let i = 0; i < n; i++) {
            for (let j = 0; j < n; j++) {
              const d = worstDiff([p.data[((b * H + h) * T + i) * T + j]!], [x.data[(h * n + i) * n + j]!]).diff;
              if (!(d <= 1e-5)) assert.fail(`${name} row ${b} [h ${h}, ${i}, ${j}]: padded ${p.data[((b * H + h) * T + i) * T + j]} vs alone ${x.data[(h * n + i) * n + j]}`);
              worst = Math.max(worst, d);
            }
          }
        }
      } else {
        const inner = x.size / n; // [1, n, ...rest]
        const d = worstDiff(p.data.subarray(b * T * inner, b * T * inner + n * inner), x.data).diff;
        if (!(d <= 1e-5)) assert.fail(`${name} row ${b}: padded vs alone differ by ${d}`);
        worst = Math.max(worst, d);
      }
    }
    const V = model.cfg.dVocab;
    const dl = worstDiff(padded.logits!.data.subarray(b * T * V, (b * T + n) * V), alone.logits!.data).diff;
    t.diagnostic(`row ${b} (${n} tokens): worst |diff| padded vs alone over every hook ${worst.toExponential(2)}, logits ${dl.toExponential(2)}`);
    assert.ok(dl <= 1e-5, `logits of row ${b}: ${dl}`);
  }
});

test("stopAtLayer runs the first blocks only and returns their residual stream", (t) => {
  const m = tiny(t, { seed: 13 });
  const { model } = loadModel(m.dir, { weights: "raw" });
  const tokens = batchOf(randomRows(14, 2, 6, 64));
  const full = noGrad(() => model.runWithCache(tokens, allHooks));
  const stop1 = noGrad(() => model.runWithCache(tokens, allHooks, { stopAtLayer: 1 }));
  assert.equal(stop1.logits, null);
  assert.deepEqual(stop1.resid.data, full.cache.get("blocks.0.hook_resid_post")!.data);
  assert.deepEqual([...stop1.cache.keys()], HOOKS_2_LAYERS.filter((n) => n.startsWith("hook_") || n.startsWith("blocks.0.")));
  const stop0 = noGrad(() => model.forward(tokens, { stopAtLayer: 0 }));
  assert.deepEqual(stop0.resid.data, full.cache.get("blocks.0.hook_resid_pre")!.data);
  const stop2 = noGrad(() => model.forward(tokens, { stopAtLayer: 2 }));
  assert.equal(stop2.logits, null, "stopAtLayer = nLayers: every block, but no ln_final/unembedding");
  assert.deepEqual(stop2.resid.data, full.cache.get("blocks.1.hook_resid_post")!.data);
  assertError(() => model.forward(tokens, { stopAtLayer: 3 }), /stopAtLayer 3/, /0\.\.2/);
});

test("a hook can replace an activation: zeroing one neuron changes the logits, downstream hooks see the new value", (t) => {
  const m = tiny(t, { seed: 15 });
  const { model } = loadModel(m.dir, { weights: "raw" });
  const rows = randomRows(16, 2, 7, 64);
  const n = 9;
  const zero = (x: Tensor): Tensor => {
    const y = x.clone();
    for (let i = n; i < y.size; i += model.cfg.dMlp) y.data[i] = 0;
    return y;
  };
  const before = noGrad(() => model.forward(batchOf(rows)));
  const after = noGrad(() => model.runWithCache(batchOf(rows), allHooks, { hooks: [["blocks.0.mlp.hook_post", zero]] }));
  const change = worstDiff(after.logits!.data, before.logits!.data).diff;
  t.diagnostic(`zeroing neuron ${n} of layer 0 changes the logits by up to ${change.toFixed(4)}`);
  assert.ok(change > 1e-3, "the logits changed");
  const post = after.cache.get("blocks.0.mlp.hook_post")!;
  for (let i = n; i < post.size; i += model.cfg.dMlp) assert.equal(post.data[i], 0, "the cache holds the replaced value");
  // Every downstream activation is what the reference computes with the same replacement.
  const ref = referenceForward(m.weights, m.config, rows, (name, act) => {
    if (name !== "blocks.0.mlp.hook_post") return;
    const y = act.data.slice();
    for (let i = n; i < y.length; i += model.cfg.dMlp) y[i] = 0;
    return y;
  });
  for (const [name, r] of ref.acts) assertNear(t, `patched ${name}`, after.cache.get(name)!, r);
  assertNear(t, "patched logits", after.logits!, ref.logits);
  // Hooks on the same point compose in order, and a hook returning nothing leaves the value alone.
  const composed = noGrad(() => model.runWithCache(batchOf(rows), ["blocks.0.mlp.hook_post"], {
    hooks: [["blocks.0.mlp.hook_post", () => undefined], ["blocks.0.mlp.hook_post", zero]],
  }));
  assert.deepEqual(composed.logits!.data, after.logits!.data);
  assertError(() => noGrad(() => model.runWithHooks(batchOf(rows), [["blocks.0.mlp.hook_post", () => new Tensor(new Float32Array(3), [3])]])),
    /blocks\.0\.mlp\.hook_post/, /\[3\]/, /\[2, 7, 64\]/);
});

/** x·W + bias over rows in float64: x [N, C] (any array), W [C, O] row-major. */
function affineRows(x: ArrayLike<number>, N: number, C: number, W: ArrayLike<number>, O: number, bias: ArrayLike<number>): Float64Array {
  const y = new Float64Array(N * O);
  for (let r = 0; r < N; r++) for (let o = 0; o < O; o++) {
    let s = bias[o]!;
    for (let c = 0; c < C; c++) s += x[r * C + c]! * W[c * O + o]!;
    y[r * O + o] = s;
  }
  return y;
}

const LN_OUTPUT_HOOKS = ["blocks.0.ln1.hook_normalized", "blocks.0.ln2.hook_normalized", "blocks.1.ln1.hook_normalized", "blocks.1.ln2.hook_normalized", "ln_final.hook_normalized"];

test("raw weights: hook_normalized of ln1, ln2 and ln_final is the LayerNorm's output x̂·w + b (TransformerLens LayerNorm), and a replacement there is used as it is", (t) => {
  const m = tiny(t, { seed: 31 });
  const { model } = loadModel(m.dir, { weights: "raw" });
  const C = model.cfg.dModel;
  const rows = randomRows(32, 2, 6, 64);
  const N = 2 * 6;
  const { cache } = noGrad(() => model.runWithCache(batchOf(rows), allHooks));
  const ref = referenceForward(m.weights, m.config, rows);
  for (const name of LN_OUTPUT_HOOKS) {
    assertNear(t, `raw ${name} vs the reference's x̂·w + b`, cache.get(name)!, ref.acts.get(name)!);
    // not x̂: the tiny model's LayerNorms have w ~ U(0.5, 1.5), b ~ N(0, 0.2²)
    const prefix = name.slice(0, -".hook_normalized".length);
    const resid = cache.get(prefix === "ln_final" ? "blocks.1.hook_resid_post" : prefix.endsWith("ln1") ? prefix.replace("ln1", "hook_resid_pre") : prefix.replace("ln2", "hook_resid_mid"))!.data;
    const scale = cache.get(`${prefix}.hook_scale`)!.data;
    const w = model.p(`${prefix}.w`).data;
    const b = model.p(`${prefix}.b`).data;
    let worstVsAffine = 0;
    let leastVsXhat = 0;
    for (let r = 0; r < N; r++) {
      let mean = 0;
      for (let c = 0; c < C; c++) mean += resid[r * C + c]! / C;
      for (let c = 0; c < C; c++) {
        const xhat = (resid[r * C + c]! - mean) / scale[r]!;
        const got = cache.get(name)!.data[r * C + c]!;
        worstVsAffine = Math.max(worstVsAffine, Math.abs(got - (xhat * w[c]! + b[c]!)));
        leastVsXhat = Math.max(leastVsXhat, Math.abs(got - xhat));
      }
    }
    t.diagnostic(`${name}: worst |cached − (x̂·w + b)| ${worstVsAffine.toExponential(2)}, worst |cached − x̂| ${leastVsXhat.toFixed(3)}`);
    assert.ok(worstVsAffine <= ATOL, `${name} is not x̂·w + b`);
    assert.ok(leastVsXhat > 0.1, `${name} is x̂, not the LayerNorm's output`);
  }

  // Replacing each LayerNorm's output: the next layer reads the replacement as it is (no second w, b).
  const rng = mulberry32(33);
  const replacement = new Map(LN_OUTPUT_HOOKS.map((n) => [n, Float32Array.from({ length: N * C }, () => randn(rng))]));
  const patched = noGrad(() => model.runWithCache(batchOf(rows), allHooks, {
    hooks: LN_OUTPUT_HOOKS.map((n) => [n, (x: Tensor) => new Tensor(replacement.get(n)!.slice(), [...x.shape])] as const),
  }));
  const refPatched = referenceForward(m.weights, m.config, rows, (name) => (replacement.has(name) ? Float64Array.from(replacement.get(name)!) : undefined));
  for (const [name, r] of refPatched.acts) assertNear(t, `replaced LN outputs: ${name}`, patched.cache.get(name)!, r);
  assertNear(t, "replaced LN outputs: logits", patched.logits!, refPatched.logits);
  const M = model.cfg.dMlp;
  assertNear(t, "blocks.0.mlp.hook_pre = replacement·W_in + b_in", patched.cache.get("blocks.0.mlp.hook_pre")!,
    { shape: [2, 6, M], data: affineRows(replacement.get("blocks.0.ln2.hook_normalized")!, N, C, model.W_in(0).data, M, model.b_in(0).data) });
  const V = model.cfg.dVocab;
  assertNear(t, "logits = replacement·W_U + b_U", patched.logits!,
    { shape: [2, 6, V], data: affineRows(replacement.get("ln_final.hook_normalized")!, N, C, noGrad(() => model.W_U).data, V, model.b_U.data) });
});

test("tl weights (folded, TransformerLens's LayerNormPre): hook_normalized is x̂, and a replacement there is used as it is", (t) => {
  const m = tiny(t, { seed: 34 });
  const { model } = loadModel(m.dir, { weights: "tl" });
  const C = model.cfg.dModel;
  const M = model.cfg.dMlp;
  const rows = randomRows(35, 2, 5, 64);
  const N = 2 * 5;
  const { cache } = noGrad(() => model.runWithCache(batchOf(rows), allHooks));
  for (const name of LN_OUTPUT_HOOKS) {
    const prefix = name.slice(0, -".hook_normalized".length);
    const resid = cache.get(prefix === "ln_final" ? "blocks.1.hook_resid_post" : prefix.endsWith("ln1") ? prefix.replace("ln1", "hook_resid_pre") : prefix.replace("ln2", "hook_resid_mid"))!.data;
    const xhat = new Float64Array(N * C);
    for (let r = 0; r < N; r++) {
      let mean = 0;
      let v = 0;
      for (let c = 0; c < C; c++) mean += resid[r * C + c]! / C;
      for (let c = 0; c < C; c++) v += (resid[r * C + c]! - mean) ** 2 / C;
      for (let c = 0; c < C; c++) xhat[r * C + c] = (resid[r * C + c]! - mean) / Math.sqrt(v + model.cfg.lnEps);
    }
    assertNear(t, `tl ${name} vs x̂`, cache.get(name)!, { shape: [...cache.get(name)!.shape], data: xhat });
  }
  const rng = mulberry32(36);
  const R = Float32Array.from({ length: N * C }, () => randn(rng));
  const patched = noGrad(() => model.runWithCache(batchOf(rows), ["blocks.0.mlp.hook_pre"], { hooks: [["blocks.0.ln2.hook_normalized", (x: Tensor) => new Tensor(R.slice(), [...x.shape])]] }));
  assertNear(t, "tl blocks.0.mlp.hook_pre = replacement·W_in + b_in", patched.cache.get("blocks.0.mlp.hook_pre")!,
    { shape: [2, 5, M], data: affineRows(R, N, C, model.W_in(0).data, M, model.b_in(0).data) });
});

// -----------------------------------------------------------------------------------------------
// Gradients

/** Σ logits ⊙ G of the float64 reference: the scalar whose gradient the engine computes with backward(logits, G). */
function refLoss(weights: ReadonlyMap<string, { shape: readonly number[]; data: ArrayLike<number> }>, config: Record<string, unknown>, rows: number[][], G: Float32Array,
  hook?: Parameters<typeof referenceForward>[3]): number {
  const { logits } = referenceForward(weights, config, rows, hook);
  let s = 0;
  for (let i = 0; i < G.length; i++) s += logits.data[i]! * G[i]!;
  return s;
}

function randomGrad(seed: number, n: number): Float32Array {
  const rng = mulberry32(seed);
  return Float32Array.from({ length: n }, () => randn(rng));
}

/** Asserts |engine − FD| ≤ atol + rtol·|FD| everywhere; reports the worst. */
function assertGrad(t: TestContext, what: string, got: ArrayLike<number>, fd: ArrayLike<number>, atol = 1e-4, rtol = 1e-3): void {
  assert.equal(got.length, fd.length, `${what}: length`);
  let worst = 0;
  let worstAt = -1;
  let ratio = 0;
  for (let i = 0; i < fd.length; i++) {
    const d = Math.abs(got[i]! - fd[i]!);
    const r = d / (atol + rtol * Math.abs(fd[i]!));
    if (d > worst) worst = d;
    if (!(r <= ratio)) {
      ratio = r;
      worstAt = i;
    }
  }
  const scale = Math.max(...Array.from(fd, Math.abs));
  t.diagnostic(`${what}: worst |engine − FD| ${worst.toExponential(2)} (largest |grad| ${scale.toFixed(3)})`);
  if (!(ratio <= 1)) assert.fail(`${what}: at ${worstAt} engine ${got[worstAt]} vs finite differences ${fd[worstAt]} (${ratio.toFixed(1)}× the allowance)`);
}

test("backward matches float64 finite differences: d/d W_in of layer 0 and d/d hook_resid_pre of layer 1", (t) => {
  const m = tiny(t, { seed: 17 });
  const { model } = loadModel(m.dir, { weights: "raw" });
  const rows = randomRows(18, 2, 5, 64);
  const G = randomGrad(19, 2 * 5 * 64); // upstream gradient on logits [B, T, V]
  const Win = model.W_in(0).param();
  backward(model.forward(batchOf(rows)).logits!, G);
  // A second pass where a fresh leaf requiring grad replaces the residual stream entering layer 1
  // (which cuts the graph there: nothing upstream of it gets a gradient from this pass).
  const leaves: Tensor[] = [];
  const gradWinBefore = Win.grad!.slice();
  const { logits } = model.runWithHooks(batchOf(rows), [["blocks.1.hook_resid_pre", (x) => {
    const leaf = new Tensor(x.data.slice(), x.shape, true);
    leaves.push(leaf);
    return leaf;
  }]]);
  backward(logits!, G);
  const residLeaf = leaves[0]!;
  assert.ok(residLeaf.grad !== null);
  assert.deepEqual(Win.grad, gradWinBefore, "the replaced activation cuts the graph: W_in of layer 0 gets nothing more");
  const h = 1e-5;

  // d/d W_in (layer 0) = d/d h.0.mlp.c_fc.weight [C, M]
  const key = "h.0.mlp.c_fc.weight";
  const base = Float64Array.from(m.weights.get(key)!.data);
  const fdW = new Float64Array(base.length);
  const w = new Map<string, { shape: readonly number[]; data: ArrayLike<number> }>(m.weights);
  for (let i = 0; i < base.length; i++) {
    const x = base.slice();
    x[i] = base[i]! + h;
    w.set(key, { shape: m.weights.get(key)!.shape, data: x });
    const up = refLoss(w, m.config, rows, G);
    x[i] = base[i]! - h;
    const down = refLoss(w, m.config, rows, G);
    fdW[i] = (up - down) / (2 * h);
  }
  assertGrad(t, "d loss / d W_in[0]", Win.grad!, fdW);

  // d/d hook_resid_pre (layer 1), through a hook that returns a leaf requiring grad
  const resid0 = referenceForward(m.weights, m.config, rows).acts.get("blocks.1.hook_resid_pre")!.data;
  const fdR = new Float64Array(resid0.length);
  for (let i = 0; i < resid0.length; i++) {
    const at = (delta: number): number => refLoss(m.weights, m.config, rows, G, (name) => {
      if (name !== "blocks.1.hook_resid_pre") return;
      const x = resid0.slice();
      x[i] = resid0[i]! + delta;
      return x;
    });
    fdR[i] = (at(h) - at(-h)) / (2 * h);
  }
  assertGrad(t, "d loss / d blocks.1.hook_resid_pre", residLeaf.grad!, fdR);
});

test("gradients flow through a hook's replacement, not around it", (t) => {
  const m = tiny(t, { seed: 20 });
  const { model } = loadModel(m.dir, { weights: "raw" });
  const M = model.cfg.dMlp;
  const rows = randomRows(21, 2, 6, 64);
  const G = randomGrad(22, 2 * 6 * 64);
  const dead = 3;
  const s0 = new Float32Array(M).fill(1);
  s0[dead] = 0;
  const s = new Tensor(s0.slice(), [M], true); // per-neuron scale of layer 0's MLP output [M]
  const Win = model.W_in(0).param();
  const { logits } = model.runWithHooks(batchOf(rows), [["blocks.0.mlp.hook_post", (x) => mul(x, s)]]);
  backward(logits!, G);
  // The replacement multiplies neuron `dead` by 0, so nothing reaches its pre-activation: column exactly 0.
  const C = model.cfg.dModel;
  for (let c = 0; c < C; c++) assert.equal(Win.grad![c * M + dead], 0, `W_in[${c}, ${dead}] gets no gradient through the zeroed neuron`);
  assert.ok(Win.grad!.some((g) => Math.abs(g) > 1e-4), "the other columns do get gradients");
  // d loss / d s_n by finite differences of the reference with the same hook.
  const h = 1e-5;
  const fd = new Float64Array(M);
  for (let n = 0; n < M; n++) {
    const at = (delta: number): number => refLoss(m.weights, m.config, rows, G, (name, act) => {
      if (name !== "blocks.0.mlp.hook_post") return;
      const y = act.data.slice();
      for (let i = 0; i < y.length; i++) y[i]! *= s0[i % M]! + (i % M === n ? delta : 0);
      return y;
    });
    fd[n] = (at(h) - at(-h)) / (2 * h);
  }
  assertGrad(t, "d loss / d (scale in the hook)", s.grad!, fd);
});

// -----------------------------------------------------------------------------------------------
// Weights: layout, shapes, files

test("weight accessors have TransformerLens shapes and hold the HF tensors where TransformerLens puts them", (t) => {
  const m = tiny(t, { seed: 23, nHeads: 4, dMlp: 40, tied: false });
  const { model } = loadModel(m.dir, { weights: "raw" });
  const { dModel: C, nHeads: H, dHead: Dh, dMlp: M, dVocab: V, nCtx } = model.cfg;
  assert.deepEqual([C, H, Dh, M, V, nCtx], [16, 4, 4, 40, 64, 16]);
  const shapes: Array<[string, Tensor, number[]]> = [
    ["W_E", model.W_E, [V, C]], ["W_pos", model.W_pos, [nCtx, C]],
    ["W_Q", model.W_Q(1), [H, C, Dh]], ["W_K", model.W_K(1), [H, C, Dh]], ["W_V", model.W_V(1), [H, C, Dh]],
    ["b_Q", model.b_Q(1), [H, Dh]], ["b_K", model.b_K(1), [H, Dh]], ["b_V", model.b_V(1), [H, Dh]],
    ["W_O", model.W_O(1), [H, Dh, C]], ["b_O", model.b_O(1), [C]],
    ["W_in", model.W_in(1), [C, M]], ["b_in", model.b_in(1), [M]], ["W_out", model.W_out(1), [M, C]], ["b_out", model.b_out(1), [C]],
    ["W_U", model.W_U, [C, V]], ["b_U", model.b_U, [V]],
  ];
  for (const [name, x, shape] of shapes) assert.deepEqual([...x.shape], shape, name);
  const hf = (k: string): Float32Array => m.weights.get(k)!.data;
  const cAttn = hf("h.1.attn.c_attn.weight"); // [C, 3C]
  const cAttnB = hf("h.1.attn.c_attn.bias");
  (["W_Q", "W_K", "W_V"] as const).forEach((which, part) => {
    const W = which === "W_Q" ? model.W_Q(1) : which === "W_K" ? model.W_K(1) : model.W_V(1);
    const b = which === "W_Q" ? model.b_Q(1) : which === "W_K" ? model.b_K(1) : model.b_V(1);
    for (let h = 0; h < H; h++) {
      for (let d = 0; d < Dh; d++) {
        for (let c = 0; c < C; c++) assert.equal(W.data[(h * C + c) * Dh + d], cAttn[c * 3 * C + part * C + h * Dh + d], `${which}[${h}, ${c}, ${d}]`);
        assert.equal(b.data[h * Dh + d], cAttnB[part * C + h * Dh + d], `b_${which.slice(2)}[${h}, ${d}]`);
      }
    }
  });
  assert.deepEqual(model.W_O(1).data, hf("h.1.attn.c_proj.weight"), "W_O [H, Dh, C] = c_proj.weight [H·Dh, C]");
  assert.deepEqual(model.W_in(1).data, hf("h.1.mlp.c_fc.weight"));
  assert.deepEqual(model.W_out(1).data, hf("h.1.mlp.c_proj.weight"));
  const lm = hf("lm_head.weight"); // [V, C]
  for (let c = 0; c < C; c++) for (let v = 0; v < V; v++) assert.equal(model.W_U.data[c * V + v], lm[v * C + c], `W_U[${c}, ${v}]`);
  // Tied: W_U is W_Eᵀ.
  const tied = loadModel(tiny(t, { seed: 23 }).dir, { weights: "raw" }).model;
  for (let c = 0; c < C; c++) for (let v = 0; v < V; v++) assert.equal(tied.W_U.data[c * V + v], tied.W_E.data[v * C + c]);
});

test("keys with and without the `transformer.` prefix, with or without buffers and a tied lm_head copy, load identically", (t) => {
  const variants: TinyHfOptions[] = [{ prefix: true }, { buffers: false }, { prefix: true, lmHeadCopy: true }, { lmHeadCopy: true, buffers: false }];
  const plain = tiny(t, { seed: 24 });
  const header = readSafetensorsHeader(join(plain.dir, "model.safetensors")).tensors;
  assert.deepEqual([...header.get("h.0.attn.bias")!.shape], [1, 1, 16, 16], "the helper writes HF's mask buffers");
  const a = loadModel(plain.dir, { weights: "raw" }).model;
  for (const v of variants) {
    const other = tiny(t, { seed: 24, ...v });
    const names = [...readSafetensorsHeader(join(other.dir, "model.safetensors")).tensors.keys()];
    if (v.prefix === true) assert.ok(names.includes("transformer.wte.weight") && names.every((k) => k.startsWith("transformer.") || k.startsWith("lm_head.")));
    const b = loadModel(other.dir, { weights: "raw" }).model;
    assert.deepEqual(b.cfg, a.cfg);
    for (const [name, p] of a.params) assert.deepEqual(b.p(name).data, p.data, `${JSON.stringify(v)}: ${name}`);
  }
});

test("F16 and BF16 files load: exactly the stored values, within the format's precision of the F32 weights", (t) => {
  const f32 = tiny(t, { seed: 25 });
  const f32Model = loadModel(f32.dir, { weights: "raw" }).model;
  const rows = randomRows(26, 2, 8, 64);
  for (const [dtype, rel] of [["F16", 2 ** -11], ["BF16", 2 ** -8]] as const) {
    const m = tiny(t, { seed: 25, dtype });
    assert.equal(readSafetensorsHeader(join(m.dir, "model.safetensors")).tensors.get("wte.weight")!.dtype, dtype);
    const { model } = loadModel(m.dir, { weights: "raw" });
    assert.deepEqual(model.W_E.data, m.weights.get("wte.weight")!.data, `${dtype} W_E is the stored values`);
    assert.deepEqual(model.W_in(1).data, m.weights.get("h.1.mlp.c_fc.weight")!.data, `${dtype} W_in`);
    let worstRel = 0;
    for (const [name, p] of f32Model.params) {
      const q = model.p(name).data;
      for (let i = 0; i < p.size; i++) {
        const x = p.data[i]!;
        const err = Math.abs(q[i]! - x);
        assert.ok(err <= rel * Math.abs(x) + 2 ** -24, `${dtype} ${name}[${i}]: ${q[i]} is not ${x} to ${dtype} precision`);
        if (Math.abs(x) >= 2 ** -14) worstRel = Math.max(worstRel, err / Math.abs(x)); // normal range of F16
      }
    }
    t.diagnostic(`${dtype}: worst relative difference from the F32 weights (|x| ≥ 2^-14) ${worstRel.toExponential(2)} (format: ≤ ${rel.toExponential(2)})`);
    const ref = referenceForward(m.weights, m.config, rows);
    const { logits } = noGrad(() => model.forward(batchOf(rows)));
    assertNear(t, `${dtype} model logits vs reference on the rounded weights`, logits!, ref.logits);
  }
  // The helper's own F16 rounding (which the assertions above rely on), spot-checked by hand.
  assert.deepEqual([1, 1 + 2 ** -11, 1 + 3 * 2 ** -11, 0.1, 65504, 2 ** -24, 3 * 2 ** -25, 1e-9].map(roundF16),
    [1, 1, 1 + 2 ** -9, 0.0999755859375, 65504, 2 ** -24, 2 ** -23, 0]);
});

test("save → load round-trips exactly in F32 (raw and tl), and an untied lm_head survives", (t) => {
  for (const opts of [{ seed: 27 }, { seed: 28, tied: false }] as TinyHfOptions[]) {
    const m = tiny(t, opts);
    for (const weights of ["raw", "tl"] as const) {
      const { model } = loadModel(m.dir, { weights });
      const out = join(m.dir, "..", `saved-${weights}`);
      saveModel(model, out);
      const again = loadModel(out, { weights: "raw" }).model;
      assert.deepEqual(again.cfg, model.cfg, `${weights}: config`);
      assert.deepEqual([...again.params.keys()].sort(), [...model.params.keys()].sort());
      for (const [name, p] of model.params) assert.deepEqual(again.p(name).data, p.data, `${weights} tied=${opts.tied ?? true}: ${name}`);
      const names = [...readSafetensorsHeader(join(out, "model.safetensors")).tensors.keys()];
      assert.equal(names.includes("lm_head.weight"), !model.cfg.tiedEmbeddings, "lm_head.weight is written exactly when untied");
      const config = JSON.parse(readFileSync(join(out, "config.json"), "utf8")) as Record<string, unknown>;
      assert.equal(config["tie_word_embeddings"], model.cfg.tiedEmbeddings);
      if (weights === "raw") {
        const rows = randomRows(29, 1, 5, 64);
        const ref = referenceForward(m.weights, m.config, rows);
        assertNear(t, `re-loaded tied=${opts.tied ?? true} logits vs reference`, noGrad(() => again.forward(batchOf(rows))).logits!, ref.logits);
      }
    }
  }
});

test("a model made with HookedTransformer.init saves and loads (HF files that other tools read)", (t) => {
  const dir = tmp();
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const m = HookedTransformer.init({ nLayers: 1, dModel: 8, nHeads: 2, dHead: 4, dMlp: 32, nCtx: 8, dVocab: 10, lnEps: 1e-5, actFn: "gelu_new", tiedEmbeddings: true }, 3);
  saveModel(m, dir);
  const back = loadModel(dir, { weights: "raw" }).model;
  for (const [name, p] of m.params) assert.deepEqual(back.p(name).data, p.data, name);
  assert.ok(!existsSync(join(dir, "vocab.json")), "no tokenizer files unless asked");
});

test("a tiny model with GPT-2's vocabulary and tokenizer files runs on a right-padded batch of tokenized text", (t) => {
  const m = tiny(t, { seed: 30, dModel: 8, nHeads: 2, dVocab: 50257 });
  assert.ok(existsSync(join(m.dir, "vocab.json")) && existsSync(join(m.dir, "merges.txt")));
  const tok = loadTokenizer(m.dir);
  const enc = tok.encodeBatch(["Hello world, the 12 neurons", "Hi"]);
  assert.deepEqual(enc.lengths, [tok.encode("Hello world, the 12 neurons").length, 1]);
  const { model } = loadModel(m.dir, { weights: "raw" });
  const { logits } = noGrad(() => model.forward(enc));
  const ref = referenceForward(m.weights, m.config, [tok.encode("Hi")]);
  const V = 50257;
  assertNear(t, "logits of the padded short row vs the reference on it alone", { shape: [1, 1, V], data: logits!.data.subarray(enc.len * V, enc.len * V + V) }, ref.logits);
});

// -----------------------------------------------------------------------------------------------
// Errors: one line, naming the value and what was expected

test("errors: missing files", (t) => {
  const m = tiny(t);
  rmSync(join(m.dir, "model.safetensors"));
  assertError(() => loadModel(m.dir), /model\.safetensors not found/, new RegExp(m.dir.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")));
  writeFileSync(join(m.dir, "pytorch_model.bin"), "");
  assertError(() => loadModel(m.dir), /only pytorch_model\.bin is present: convert it to model\.safetensors with Hugging Face's transformers, as docs\/gpt2\.md shows/);
  assert.ok(readFileSync(join(repoRoot(), "docs", "gpt2.md"), "utf8").includes("save_pretrained('DIR', safe_serialization=True)"), "docs/gpt2.md shows the conversion");
  const n = tiny(t);
  rmSync(join(n.dir, "config.json"));
  assertError(() => loadModel(n.dir), /config\.json/);
});

test("errors: tensors that do not match the config", (t) => {
  const m = tiny(t);
  const path = join(m.dir, "model.safetensors");
  const good = fileTensors(m.dir);

  const cfg = JSON.parse(readFileSync(join(m.dir, "config.json"), "utf8")) as Record<string, unknown>;
  writeFileSync(join(m.dir, "config.json"), JSON.stringify({ ...cfg, n_inner: 32 }));
  assertError(() => loadModel(m.dir), /"h\.0\.mlp\.c_fc\.weight"/, /\[16, 64\]/, /\[16, 32\]/);
  writeFileSync(join(m.dir, "config.json"), JSON.stringify(cfg));

  const missing = new Map(good);
  missing.delete("h.1.mlp.c_fc.bias");
  writeHfSafetensors(path, missing);
  assertError(() => loadModel(m.dir), /"h\.1\.mlp\.c_fc\.bias"/, /missing/, /\[64\]/);

  const extra = new Map(good);
  extra.set("h.2.ln_1.weight", { shape: [16], data: new Float32Array(16) });
  writeHfSafetensors(path, extra);
  assertError(() => loadModel(m.dir), /unexpected tensor/, /"h\.2\.ln_1\.weight"/);

  writeHfSafetensors(path, good);
  assert.doesNotThrow(() => loadModel(m.dir));
});

test("errors: unsupported configs", (t) => {
  const m = tiny(t);
  const cfgPath = join(m.dir, "config.json");
  const cfg = JSON.parse(readFileSync(cfgPath, "utf8")) as Record<string, unknown>;
  const cases: Array<[Record<string, unknown>, RegExp[]]> = [
    [{ model_type: "llama" }, [/model_type "llama"/, /gpt2/]],
    [{ architectures: ["LlamaForCausalLM"] }, [/LlamaForCausalLM/, /GPT2LMHeadModel/]],
    [{ activation_function: "relu" }, [/activation_function "relu"/, /gelu_new/]],
    [{ n_head: 3 }, [/n_embd 16/, /n_head 3/, /divisible/]],
    [{ n_layer: 0 }, [/n_layer/, /positive integer/]],
  ];
  for (const [patch, patterns] of cases) {
    writeFileSync(cfgPath, JSON.stringify({ ...cfg, ...patch }));
    assertError(() => loadModel(m.dir), ...patterns);
  }
  writeFileSync(cfgPath, "{ not json");
  assertError(() => loadModel(m.dir), /config\.json/, /not valid JSON/);
});

test("errors: hook names, context length, token ids", (t) => {
  const m = tiny(t);
  const { model } = loadModel(m.dir, { weights: "raw" });
  const ok = batchOf([[1, 2, 3]]);
  assertError(() => model.runWithCache(ok, ["blocks.0.mlp.hook_psot"]), /unknown hook "blocks\.0\.mlp\.hook_psot"/, /closest hook names: blocks\.0\.mlp\.hook_post/);
  assertError(() => model.runWithHooks(ok, [["blocks.1.hook_resid_prex", () => undefined]]), /closest hook names: blocks\.1\.hook_resid_pre/);
  assertError(() => model.runWithCache(ok, ["blocks.2.mlp.hook_post"]), /"blocks\.2\.mlp\.hook_post"/, /layer 2 is out of range/, /0\.\.1/);
  assertError(() => model.forward(batchOf([Array.from({ length: 17 }, () => 1)])), /17 tokens/, /n_positions\) is 16/);
  assertError(() => model.forward(batchOf([[1, 64, 2]])), /token id 64/, /vocabulary of 64/);
  assertError(() => model.forward(batchOf([[1, -1, 2]])), /token id -1/);
});
