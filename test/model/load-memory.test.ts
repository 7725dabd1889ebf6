// Loading with TransformerLens processing holds the model once: loadModel processes the parameters it
// has just read in place (processWeights with inPlace) instead of copying them (issue 19, item 5: a 0.5 B
// model's activations job must fit in 4 GB). Checked in a child process by its peak RSS, and by value
// against the copying processWeights.
import { test, type TestContext } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { writeSafetensors, type WritableTensor } from "../../src/io/safetensors.ts";
import { loadModel } from "../../src/model/load.ts";
import { processWeights } from "../../src/model/process.ts";
import { makeTinyLlamaModel } from "../helpers/tiny-arch-model.ts";

const tmp = (t: TestContext): string => {
  const dir = mkdtempSync(join(tmpdir(), "selfreport-load-memory-"));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
};

/**
 * A Qwen2ForCausalLM directory with many small layers and a small untied vocabulary, so the float32
 * parameters (`nParams` · 4 bytes, ≈ 134 MB) dwarf any one tensor and the Node baseline.
 */
function writeManyLayerModel(dir: string): number {
  const C = 256, M = 1024, H = 4, Hkv = 2, Dh = 64, V = 512, L = 32;
  const config = {
    architectures: ["Qwen2ForCausalLM"], model_type: "qwen2", hidden_size: C, num_hidden_layers: L,
    num_attention_heads: H, num_key_value_heads: Hkv, intermediate_size: M, vocab_size: V,
    max_position_embeddings: 128, tie_word_embeddings: false, rope_theta: 10000, rms_norm_eps: 1e-6, hidden_act: "silu",
  };
  writeFileSync(join(dir, "config.json"), JSON.stringify(config));
  let s = 1;
  const tensors: Record<string, WritableTensor> = {};
  let nParams = 0;
  const put = (name: string, shape: number[], fill: "rand" | "ones"): void => {
    const n = shape.reduce((a, b) => a * b, 1);
    const data = new Float32Array(n);
    for (let i = 0; i < n; i++) {
      s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
      data[i] = fill === "ones" ? 1 + (s / 2 ** 32 - 0.5) * 0.1 : (s / 2 ** 32 - 0.5) * 0.05;
    }
    tensors[name] = { dtype: "F16", shape, data };
    nParams += n;
  };
  put("model.embed_tokens.weight", [V, C], "rand");
  put("lm_head.weight", [V, C], "rand");
  put("model.norm.weight", [C], "ones");
  for (let l = 0; l < L; l++) {
    const h = `model.layers.${l}`;
    put(`${h}.input_layernorm.weight`, [C], "ones");
    put(`${h}.post_attention_layernorm.weight`, [C], "ones");
    put(`${h}.self_attn.q_proj.weight`, [H * Dh, C], "rand");
    put(`${h}.self_attn.q_proj.bias`, [H * Dh], "rand");
    put(`${h}.self_attn.k_proj.weight`, [Hkv * Dh, C], "rand");
    put(`${h}.self_attn.k_proj.bias`, [Hkv * Dh], "rand");
    put(`${h}.self_attn.v_proj.weight`, [Hkv * Dh, C], "rand");
    put(`${h}.self_attn.v_proj.bias`, [Hkv * Dh], "rand");
    put(`${h}.self_attn.o_proj.weight`, [C, H * Dh], "rand");
    put(`${h}.mlp.gate_proj.weight`, [M, C], "rand");
    put(`${h}.mlp.up_proj.weight`, [M, C], "rand");
    put(`${h}.mlp.down_proj.weight`, [C, M], "rand");
  }
  writeSafetensors(join(dir, "model.safetensors"), tensors, { format: "pt" });
  return nParams;
}

/** In a fresh Node: RSS before loading, peak RSS after loadModel(dir, weights), in bytes. */
function loadRss(dir: string, weights: "raw" | "tl"): { before: number; peak: number } {
  const load = new URL("../../src/model/load.js", import.meta.url).href;
  const script = `
    const { loadModel } = await import(${JSON.stringify(load)});
    const before = process.memoryUsage().rss;
    const { model } = loadModel(${JSON.stringify(dir)}, { weights: ${JSON.stringify(weights)} });
    if (model.params.size === 0) throw new Error("no parameters");
    console.log(JSON.stringify({ before, peak: process.resourceUsage().maxRSS * 1024 }));`;
  const r = spawnSync(process.execPath, ["--input-type=module", "-e", script], { encoding: "utf8", cwd: fileURLToPath(new URL(".", import.meta.url)) });
  assert.equal(r.status, 0, r.stderr);
  return JSON.parse(r.stdout) as { before: number; peak: number };
}

test("loadModel with tl processing peaks below 1.6 × the float32 parameters (it does not copy them to process them)", (t) => {
  const dir = tmp(t);
  const paramBytes = 4 * writeManyLayerModel(dir);
  assert.ok(paramBytes > 120e6, `the model holds ${paramBytes} bytes`);
  for (const weights of ["raw", "tl"] as const) {
    const { before, peak } = loadRss(dir, weights);
    const grown = (peak - before) / paramBytes;
    // processing copies of the parameters would need ≥ 2 × the parameters on top of the baseline
    assert.ok(grown < 1.6, `--weights ${weights}: peak RSS grew by ${grown.toFixed(2)} × the ${(paramBytes / 1e6).toFixed(0)} MB of float32 parameters`);
  }
});

test("processWeights { inPlace: true } processes the given tensors themselves and gives what a copying processWeights gives", (t) => {
  const m = makeTinyLlamaModel(tmp(t), { architecture: "Qwen2ForCausalLM", nKvHeads: 2, nHeads: 4, qkvBias: true, tied: true, seed: 5 });
  const { model: raw } = loadModel(m.dir, { weights: "raw" });
  const copied = processWeights(raw.params, raw.cfg, "tl");
  const mine = new Map(raw.params);
  const wq = mine.get("blocks.0.attn.W_Q")!;
  const before = wq.data.slice();
  const inPlace = processWeights(mine, raw.cfg, "tl", { inPlace: true });
  assert.equal(inPlace.params.get("blocks.0.attn.W_Q"), wq, "the same tensor is processed");
  assert.notDeepEqual(wq.data, before, "W_Q had ln1's weights folded in");
  assert.deepEqual(inPlace.cfg, copied.cfg);
  assert.deepEqual([...inPlace.params.keys()].sort(), [...copied.params.keys()].sort());
  for (const [name, p] of copied.params) assert.deepEqual(inPlace.params.get(name)!.data, p.data, name);
  // and loadModel's tl weights are exactly these
  const { model: tl } = loadModel(m.dir, { weights: "tl" });
  for (const [name, p] of copied.params) assert.deepEqual(tl.params.get(name)!.data, p.data, name);
});
