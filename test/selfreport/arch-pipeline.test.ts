/**
 * The whole pipeline on the other families, through the CLI: a tiny Llama-family model (gated MLP,
 * RMSNorm, rotary, grouped-query attention) and a GPT-NeoX one, each with a character-level
 * SentencePiece tokenizer.json whose digits are not GPT-2's ids: `dataset` from text, `train` with
 * every head and freezing mode (the token head answers with the vocabulary's own digit tokens),
 * `analyze weights|patching|residual`, `report` and `predict`; and a sweep whose multi-output token head
 * answers with the same digits, reported with `report --sweep`.
 */
import { test, after } from "node:test";
import assert from "node:assert/strict";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { makeTinyLlamaModel, makeTinyNeoxModel, writeCharTokenizer } from "../helpers/tiny-arch-model.ts";
import { makeDocs } from "../helpers/text-docs.ts";
import { runCapture } from "../helpers/cli.ts";
import { readRun } from "../../src/selfreport/run.ts";

const root = mkdtempSync(join(tmpdir(), "selfreport-arch-pipeline-"));
after(() => rmSync(root, { recursive: true, force: true }));
const corpus = join(root, "docs.txt");
writeFileSync(corpus, makeDocs(200, 6, 5).map((d) => `${d.text} ${d.id.length % 10}`).join("\n\n") + "\n");

async function ok(args: string[]): Promise<string[]> {
  const r = await runCapture(args);
  assert.equal(r.code, 0, `${args.join(" ")}:\n${r.lines.join("\n")}`);
  return r.lines;
}

for (const arch of ["llama", "neox"] as const) {
  test(`${arch}: dataset from text, every head and freezing mode, every analysis, report and predict`, async () => {
    const dir = join(root, arch);
    const model = join(dir, "model");
    const { mkdirSync } = await import("node:fs");
    mkdirSync(model, { recursive: true });
    const tok = writeCharTokenizer(model);
    if (arch === "llama") makeTinyLlamaModel(model, { dVocab: tok.vocabSize, nKvHeads: 2, nCtx: 64, seed: 1 });
    else makeTinyNeoxModel(model, { dVocab: tok.vocabSize, nCtx: 64, seed: 1 });
    const data = join(dir, "ds.safetensors");
    await ok(["dataset", "--model", model, "--layer", "1", "--neuron", "3", "--corpus", corpus, "--n", "200", "--max-len", "16", "--seed", "2", "--out", data]);
    const text = readFileSync(join(dir, "ds.jsonl"), "utf8").split("\n")[0]!;
    assert.match(text, /"text":"[a-z ]/, "the examples' text is decoded by the model's own tokenizer");

    const token = join(dir, "token");
    await ok(["train", "--data", data, "--head", "token", "--epochs", "2", "--batch-size", "16", "--out", token]);
    assert.deepEqual(readRun(token).config.head_config.digit_tokens, tok.digitIds, "the vocabulary's digits, not GPT-2's 15–24");
    const unfrozen = join(dir, "unfrozen");
    await ok(["train", "--data", data, "--head", "regression", "--freeze", "unfrozen", "--epochs", "1", "--batch-size", "16", "--out", unfrozen]);
    const partial = join(dir, "partial");
    await ok(["train", "--data", data, "--head", "classification", "--freeze", "partial", "--unfreeze-last", "1", "--epochs", "1", "--batch-size", "16", "--out", partial]);

    for (const run of [token, unfrozen, partial]) {
      await ok(["analyze", "weights", "--run", run, "--max-examples", "40"]);
      await ok(["analyze", "patching", "--run", run, "--n-inputs", "6", "--controls", "2"]);
      if (run !== token) await ok(["analyze", "residual", "--run", run, "--n-inputs", "6"]);
      await ok(["report", "--run", run, "--out", join(run, "report.html")]);
      assert.ok(existsSync(join(run, "report.html")));
      const p = await ok(["predict", "--run", run, "--prompt", "the cat sat on the mat 7"]);
      assert.match(p.join("\n"), /predicted/i);
    }
    const w = JSON.parse(readFileSync(join(token, "analysis", "weights", "summary.json"), "utf8")) as { vectors: string[] };
    assert.deepEqual(w.vectors, arch === "llama" ? ["W_in_raw", "W_in_folded", "W_gate_raw", "W_gate_folded", "W_out"] : ["W_in_raw", "W_in_folded", "W_out"]);

    // a sweep on the same model: its multi-output token head answers with the vocabulary's digits too
    const sweep = join(dir, "sweep");
    await ok(["sweep", "--model", model, "--layers", "1", "--neurons", "2,3", "--heads", "regression,token", "--freeze", "frozen",
      "--corpus", corpus, "--n", "200", "--max-len", "16", "--epochs", "2", "--workers", "1", "--out", sweep]);
    const job = readRun(join(sweep, "jobs", "L1-N3-token-frozen"));
    assert.deepEqual(job.config.head_config.digit_tokens, tok.digitIds);
    await ok(["analyze", "weights", "--run", join(sweep, "jobs", "L1-N3-token-frozen"), "--max-examples", "40", "--force"]);
    await ok(["report", "--sweep", sweep, "--out", join(dir, "sweep.html")]);
  });
}
