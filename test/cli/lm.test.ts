/**
 * The language-model commands run in-process on a tiny model directory (random weights, GPT-2's
 * tokenizer files): exit codes, what they print, and one-line errors.
 */
import { test, after } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync, readFileSync, existsSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { makeConfig } from "../../src/model/config.ts";
import { HookedTransformer } from "../../src/model/transformer.ts";
import { saveModel } from "../../src/model/load.ts";
import { writeTokenizerFiles } from "../../src/model/tokenizer.ts";
import { run } from "../../src/cli/main.ts";
import { mulberry32, randn } from "../helpers/rng.ts";

process.env["SELFREPORT_QUIET"] = "1";

const root = mkdtempSync(join(tmpdir(), "selfreport-cli-lm-"));
after(() => rmSync(root, { recursive: true, force: true }));

const modelDir = join(root, "tiny");
{
  const model = HookedTransformer.init(makeConfig({ nLayers: 2, dModel: 16, nHeads: 2, nCtx: 16 }), 1);
  const rng = mulberry32(2);
  for (const [name, t] of model.params) if (/\.W_/.test(name)) for (let i = 0; i < t.size; i++) t.data[i] = 0.3 * randn(rng);
  saveModel(model, modelDir);
  writeTokenizerFiles(modelDir);
}
const corpus = join(root, "text.txt");
writeFileSync(corpus, [
  "The cat sat on the mat. It was a sunny day, and the cat was happy.",
  "A dog ran across the field. The farmer watched it from the porch.",
  "Numbers: 1, 2, 3, 42. Letters: a, b, c.",
  "She said that the river was cold, but they swam across it anyway.\nThen they went home.",
].join("\n\n"));

/** Runs the CLI, capturing console.log / console.error. */
async function cli(...args: string[]): Promise<{ code: number; out: string; err: string }> {
  const out: string[] = [];
  const err: string[] = [];
  const [log, error] = [console.log, console.error];
  console.log = (...a: unknown[]) => void out.push(a.join(" "));
  console.error = (...a: unknown[]) => void err.push(a.join(" "));
  try {
    const code = await run(["node", "selfreport", ...args]);
    return { code, out: out.join("\n"), err: err.join("\n") };
  } finally {
    [console.log, console.error] = [log, error];
  }
}

function assertOneLineError(r: { code: number; out: string; err: string }, message: string): void {
  assert.equal(r.code, 1, `exit code (stderr: ${r.err})`);
  assert.equal(r.err, `selfreport: error: ${message}`);
}

test("generate prints the prompt and its continuation; a seed fixes it", async () => {
  const greedy = await cli("generate", "--model", modelDir, "--prompt", "The cat sat", "--max-new-tokens", "5", "--temperature", "0");
  assert.equal(greedy.code, 0, greedy.err);
  assert.ok(greedy.out.startsWith("The cat sat"), greedy.out);
  assert.ok(greedy.out.length > "The cat sat".length);
  const a = await cli("generate", "--model", modelDir, "--prompt", "The cat sat", "--max-new-tokens", "6", "--seed", "3");
  const b = await cli("generate", "--model", modelDir, "--prompt", "The cat sat", "--max-new-tokens", "6", "--seed", "3");
  assert.equal(a.code, 0, a.err);
  assert.equal(a.out, b.out);
});

test("generate: bad prompts and options are one-line errors", async () => {
  assertOneLineError(await cli("generate", "--model", modelDir, "--prompt", ""), "the prompt is empty: give some text to continue");
  assertOneLineError(
    await cli("generate", "--model", modelDir, "--prompt", Array(20).fill("word").join(" ")),
    "the prompt has 20 tokens, longer than the model's context n_ctx 16",
  );
  assertOneLineError(await cli("generate", "--model", modelDir, "--prompt", "x", "--temperature", "-1"), "--temperature must be between 0 and Infinity, got -1");
  assertOneLineError(await cli("generate", "--model", modelDir, "--prompt", "x", "--top-k", "2.5"), `--top-k must be an integer, got "2.5"`);
  assertOneLineError(await cli("generate", "--model", join(root, "nope"), "--prompt", "x"), `model directory ${join(root, "nope")} does not exist (and it is not a model name such as gpt2 or org/name)`);
});

test("neurons: a layer's table and suggested targets; --json writes every neuron", async () => {
  const json = join(root, "layer.json");
  const r = await cli("neurons", "--model", modelDir, "--layer", "1", "--corpus", corpus, "--top", "5", "--json", json);
  assert.equal(r.code, 0, r.err);
  assert.match(r.out, /^blocks\.1\.mlp\.hook_post: 64 neurons over \d+ tokens of .*text\.txt \(held-out, 1 documents, windows of 16\)/);
  assert.match(r.out, /top 5 by std(, plus \d+ suggested targets)?:\n {2}neuron +mean +std +min +max +sparsity +>1\.0 +target\n/);
  assert.match(r.out, /\nsuggested self-report targets: (none qualifies|\d+(, \d+)*)\n {2}rule: not dead/);
  const rows = r.out.split("\n").filter((l) => /^ {2}\d+ /.test(l));
  assert.ok(rows.length >= 5, r.out);
  const saved = JSON.parse(readFileSync(json, "utf8")) as { neurons: unknown[]; layer: number; suggested: number[]; tokens: number };
  assert.equal(saved.layer, 1);
  assert.equal(saved.neurons.length, 64);
  assert.ok(saved.tokens > 0);
});

test("neurons --neuron: top contexts with the token bracketed (not a TTY), and JSON", async () => {
  const json = join(root, "neuron.json");
  const r = await cli("neurons", "--model", modelDir, "--layer", "0", "--neuron", "7", "--top", "3", "--corpus", corpus, "--json", json);
  assert.equal(r.code, 0, r.err);
  assert.match(r.out, /^blocks\.0\.mlp\.hook_post\[7\] over/);
  assert.match(r.out, /mean -?\d+\.\d{4} {2}std \d+\.\d{4}/);
  const lines = r.out.split("\n").filter((l) => l.includes("[["));
  assert.equal(lines.length, 3, r.out);
  for (const l of lines) assert.match(l, /^ {2}-?\d+\.\d{4} {2}text-3:\d+ +.*\[\[.+\]\]/);
  const saved = JSON.parse(readFileSync(json, "utf8")) as { neuron: number; top: Array<{ activation: number; context: string }>; stats: { neuron: number } };
  assert.equal(saved.neuron, 7);
  assert.equal(saved.stats.neuron, 7);
  assert.equal(saved.top.length, 3);
  assert.ok(saved.top[0]!.activation >= saved.top[2]!.activation);
});

test("neurons: out-of-range layer and neuron are one-line errors", async () => {
  assertOneLineError(await cli("neurons", "--model", modelDir, "--layer", "1", "--neuron", "9999", "--corpus", corpus), "neuron 9999 is out of range: layer 1 has 64 neurons (0..63)");
  assertOneLineError(await cli("neurons", "--model", modelDir, "--layer", "5", "--corpus", corpus), "layer 5 is out of range: the model has 2 layers (0..1)");
  assertOneLineError(await cli("neurons", "--model", modelDir, "--layer", "0", "--neuron", "-1", "--corpus", corpus), "--neuron must be between 0 and Infinity, got -1");
  // The corpus loader words its own message; it must still be one line naming the file.
  const missing = await cli("neurons", "--model", modelDir, "--layer", "0", "--corpus", join(root, "missing.txt"));
  assert.equal(missing.code, 1);
  assert.match(missing.err, /^selfreport: error: [^\n]*missing\.txt[^\n]*$/);
});

test("pretrain: a tiny run writes a model, records the command line, and prints the held-out loss", async () => {
  const out = join(root, "pretrained");
  const r = await cli(
    "pretrain", "--corpus", corpus, "--out", out, "--layers", "1", "--d-model", "8", "--heads", "2", "--ctx", "8",
    "--steps", "3", "--batch-size", "2", "--eval-every", "3", "--checkpoint-every", "3", "--dtype", "F32",
  );
  assert.equal(r.code, 0, r.err);
  assert.match(r.out, /held-out loss \d+\.\d{4} nats\/token \(perplexity \d+\.\d\) vs unigram baseline \d+\.\d{4} \(perplexity \d+\.\d\)/);
  const cfg = JSON.parse(readFileSync(join(out, "config.json"), "utf8")) as { n_layer: number; n_embd: number; selfreport: { command: string } };
  assert.deepEqual([cfg.n_layer, cfg.n_embd], [1, 8]);
  assert.equal(cfg.selfreport.command, `selfreport pretrain --corpus ${corpus} --out ${out} --layers 1 --d-model 8 --heads 2 --ctx 8 --steps 3 --batch-size 2 --eval-every 3 --checkpoint-every 3 --dtype F32`);
  assert.ok(existsSync(join(out, "model.safetensors")));
  // The result is a model the other commands read.
  const g = await cli("generate", "--model", out, "--prompt", "The", "--max-new-tokens", "3", "--temperature", "0");
  assert.equal(g.code, 0, g.err);
  assertOneLineError(await cli("pretrain", "--corpus", corpus, "--out", out, "--d-model", "10", "--heads", "3"), "--d-model 10 does not divide into 3 heads (d_head would be 3.33); choose a multiple of --heads");
});
