/**
 * Model commands: `inspect` (config, parameter count, hook names) and `activations`
 * (run prompts and save chosen hook activations to a safetensors file).
 */
import type { Command } from "commander";
import { loadModel } from "../../model/load.ts";
import { loadTokenizer } from "../../model/tokenizer.ts";
import { blockSpec } from "../../model/config.ts";
import { tokenBatch, type TokenBatch } from "../../model/transformer.ts";
import { assertHookName } from "../../model/hooks.ts";
import { writeSafetensors } from "../../io/safetensors.ts";
import { noGrad, getBackend } from "../../tensor/index.ts";
import { SelfreportError } from "../../errors.ts";
import { checkOutput } from "../../io/outputs.ts";
import { modelInput } from "../options.ts";
import { collect, parseChoice } from "../options.ts";
import type { WeightProcessing } from "../../model/process.ts";

export function registerModelCommands(program: Command): void {
  program
    .command("inspect")
    .description("print a model's config, parameter count and hook names")
    .requiredOption("--model <dir|name>", "model directory or name (e.g. brown-gpt2-mini, gpt2)")
    .option("--weights <raw|tl>", "weight processing", parseChoice<WeightProcessing>("--weights", ["raw", "tl"]), "tl")
    .option("--json", "print JSON instead of text")
    .action((o: { model: string; weights: WeightProcessing; json?: boolean }) => {
      const { model, dir } = loadModel(o.model, { weights: o.weights });
      const nParams = model.parameters().reduce((s, t) => s + t.size, 0);
      const { hfConfig: _hf, ...config } = model.cfg; // the config.json itself is in the directory
      void _hf;
      const info = { dir, weights: o.weights, backend: getBackend().name, config, parameters: nParams, hooks: model.hookNames() };
      if (o.json) {
        console.log(JSON.stringify(info, null, 2));
        return;
      }
      const c = model.cfg;
      console.log(`model        ${dir}`);
      console.log(`weights      ${o.weights}   (backend: ${info.backend})`);
      const s = blockSpec(c);
      const parts = [
        s.normalizationType === "RMS" ? "RMSNorm" : "LayerNorm",
        s.positionalEmbeddingType === "rotary" ? `rotary (${s.rotaryDim} of ${c.dHead} dims, base ${s.rotaryBase})` : "learned positions",
        ...(s.gqa ? [`grouped-query attention (${s.nKvHeads} K/V heads)`] : []),
        `${s.gatedMlp ? "gated " : ""}MLP ${c.actFn}`,
        ...(s.parallelAttnMlp ? ["parallel attention + MLP"] : []),
        c.tiedEmbeddings ? "tied embeddings" : "untied embeddings",
      ];
      console.log(`architecture ${c.hfArchitecture ?? "GPT2LMHeadModel"}: ${parts.join(", ")}`);
      console.log(`layers ${c.nLayers}  d_model ${c.dModel}  heads ${c.nHeads} × d_head ${c.dHead}  d_mlp ${c.dMlp}  n_ctx ${c.nCtx}  d_vocab ${c.dVocab}`);
      console.log(`parameters   ${nParams.toLocaleString("en-US")}`);
      console.log(`hook points  ${info.hooks.length}:`);
      for (const h of info.hooks) if (!h.startsWith("blocks.") || h.startsWith("blocks.0.")) console.log(`  ${h}`);
      if (c.nLayers > 1) console.log(`  … and the same blocks.{l}.* hooks for layers 1..${c.nLayers - 1}`);
    });

  program
    .command("activations")
    .description("run prompts through a model and save hook activations ([batch, pos, …] float32) to a safetensors file")
    .requiredOption("--model <dir|name>", "model directory or name")
    .option("--prompt <text>", "a prompt (repeat for a batch)", collect, [])
    .option("--tokens <ids>", "token ids, comma-separated, instead of --prompt (repeat for a batch)", collect, [])
    .requiredOption("--hook <name>", "a hook name, e.g. blocks.0.mlp.hook_post (repeatable)", collect, [])
    .option("--weights <raw|tl>", "weight processing", parseChoice<WeightProcessing>("--weights", ["raw", "tl"]), "tl")
    .requiredOption("--out <file.safetensors>", "output file")
    .option("--force", "replace an existing activations file", false)
    .action((o: { model: string; prompt: string[]; tokens: string[]; hook: string[]; weights: WeightProcessing; out: string; force: boolean }) => {
      if (!o.out.endsWith(".safetensors")) throw new SelfreportError(`--out must name a .safetensors file, got "${o.out}"`);
      if ((o.prompt.length === 0) === (o.tokens.length === 0)) throw new SelfreportError("activations: give either --prompt (text) or --tokens (token ids), at least once, not both");
      checkOutput(o.out, { kind: "activations", inputs: [modelInput(o.model)], force: o.force });
      const { model, dir } = loadModel(o.model, { weights: o.weights });
      for (const h of o.hook) assertHookName(model.cfg, h);
      let batch: TokenBatch;
      if (o.tokens.length > 0) {
        const rows = o.tokens.map((s, i) => parseTokenIds(s, i, model.cfg.dVocab));
        rows.forEach((ids, i) => {
          if (ids.length > model.cfg.nCtx) throw new SelfreportError(`--tokens ${i + 1} has ${ids.length} tokens, longer than the model's n_positions ${model.cfg.nCtx}`);
        });
        batch = tokenBatch(rows, 0);
      } else {
        const tok = loadTokenizer(dir);
        const encoded = o.prompt.map((p) => tok.encode(p));
        encoded.forEach((ids, i) => {
          if (ids.length === 0) throw new SelfreportError(`prompt ${i + 1} is empty after tokenization`);
          if (ids.length > model.cfg.nCtx) throw new SelfreportError(`prompt ${i + 1} has ${ids.length} tokens, longer than the model's n_positions ${model.cfg.nCtx}`);
        });
        batch = tok.encodeBatch(o.prompt);
      }
      const { logits, cache } = noGrad(() => model.runWithCache(batch, o.hook));
      const tensors: Record<string, { dtype: "F32" | "I32"; shape: number[]; data: Float32Array | Int32Array }> = {};
      for (const [name, t] of cache) tensors[name] = { dtype: "F32", shape: [...t.shape], data: t.data };
      tensors["tokens"] = { dtype: "I32", shape: [batch.batch, batch.len], data: batch.ids };
      tensors["attention_mask"] = { dtype: "I32", shape: [batch.batch, batch.len], data: Int32Array.from(batch.attentionMask ?? new Uint8Array(batch.ids.length).fill(1)) };
      if (logits) tensors["logits"] = { dtype: "F32", shape: [...logits.shape], data: logits.data };
      writeSafetensors(o.out, tensors, { model: dir, weights: o.weights, prompts: JSON.stringify(o.prompt), ...(o.tokens.length > 0 ? { tokens: JSON.stringify(o.tokens) } : {}) });
      console.log(`wrote ${o.out}: ${Object.keys(tensors).map((k) => `${k} [${tensors[k]!.shape.join(", ")}]`).join(", ")}`);
    });
}

/** "1,2,3" → [1, 2, 3]: non-empty, integers in 0..dVocab-1; `i` numbers the --tokens option in errors. */
function parseTokenIds(text: string, i: number, dVocab: number): number[] {
  const parts = text.split(",").map((x) => x.trim());
  if (parts.length === 0 || parts.some((x) => !/^\d+$/.test(x))) throw new SelfreportError(`--tokens ${i + 1} must be comma-separated token ids like "15,496,11", got "${text}"`);
  const ids = parts.map(Number);
  const bad = ids.find((id) => id >= dVocab);
  if (bad !== undefined) throw new SelfreportError(`--tokens ${i + 1}: token id ${bad} is out of range for a vocabulary of ${dVocab}`);
  return ids;
}
