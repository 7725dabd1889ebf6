/**
 * Language-model commands: `pretrain` (a small GPT-2 on a corpus), `generate` (continue a prompt)
 * and `neurons` (the neuron explorer: a layer's neuron statistics, or one neuron's top contexts).
 */
import type { Command } from "commander";
import { interruptible } from "../interrupts.ts";
import { loadModel } from "../../model/load.ts";
import { loadTokenizer } from "../../model/tokenizer.ts";
import { loadCorpus } from "../../data/corpus.ts";
import { writeJsonAtomic } from "../../io/atomic.ts";
import { checkOutput } from "../../io/outputs.ts";
import { pretrain, PRETRAIN_DEFAULTS } from "../../lm/pretrain.ts";
import { generate, GENERATE_DEFAULTS } from "../../lm/generate.ts";
import {
  scanLayer, suggestTargets, checkNeuron, SCAN_DEFAULTS, SPARSITY_DEFINITION, TARGET_RULE,
  type NeuronStats, type TopActivation,
} from "../../lm/neurons.ts";
import { parseChoice, parseFloatOption, parseIntOption, modelInput } from "../options.ts";
import { info } from "../../util/progress.ts";

/** How many suggested self-report targets the layer view lists. */
const SUGGESTED = 10;

/** The command line as given (explicit options only, in declaration order), for the record. */
function commandLine(cmd: Command): string {
  const parts = ["selfreport", cmd.name()];
  for (const opt of cmd.options) {
    const key = opt.attributeName();
    if (cmd.getOptionValueSource(key) !== "cli") continue;
    const v: unknown = cmd.getOptionValue(key);
    parts.push(opt.long ?? opt.flags);
    if (typeof v !== "boolean") parts.push(shellQuote(String(v)));
  }
  return parts.join(" ");
}

function shellQuote(s: string): string {
  return /^[\w@%+=:,./-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`;
}

function fmt(x: number, digits = 4): string {
  return x.toFixed(digits);
}

function pct(x: number): string {
  return `${(100 * x).toFixed(1)}%`;
}

function statsTable(rows: readonly NeuronStats[], suggested: ReadonlySet<number>): string[] {
  const header = ["neuron", "mean", "std", "min", "max", "sparsity", ">1.0", "target"];
  const body = rows.map((s) => [
    String(s.neuron), fmt(s.mean), fmt(s.std), fmt(s.min), fmt(s.max), pct(s.sparsity), pct(s.fracAbove1), suggested.has(s.neuron) ? "*" : "",
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...body.map((r) => r[i]!.length)));
  const line = (r: readonly string[]): string => r.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join("  ").trimEnd();
  return [line(header), ...body.map(line)];
}

/** Newlines and tabs made visible so that each context stays on one line. */
function oneLine(s: string): string {
  return s.replace(/\r?\n/g, "\\n").replace(/\t/g, "\\t");
}

function highlight(a: TopActivation, tty: boolean): string {
  const token = oneLine(a.token);
  const marked = tty ? `\x1b[1;33m${token}\x1b[0m` : `[[${token}]]`;
  return `${oneLine(a.before)}${marked}${oneLine(a.after)}`;
}

export function registerLmCommands(program: Command): void {
  program
    .command("neurons")
    .description("neuron explorer: statistics of a layer's MLP neurons on held-out text, or one neuron's top-activating contexts")
    .requiredOption("--model <dir|name>", "model directory or name")
    .requiredOption("--layer <L>", "layer (blocks.L.mlp.hook_post)", parseIntOption("--layer", 0))
    .option("--neuron <N>", "show this neuron's top-activating contexts", parseIntOption("--neuron", 0))
    .option("--top <K>", "rows of the layer table / contexts of the neuron", parseIntOption("--top", 1), SCAN_DEFAULTS.k)
    .option("--corpus <brown|FILE>", "text: the Brown corpus or a .txt / .jsonl file (its held-out split is read)", "brown")
    .option("--max-tokens <N>", "tokens of text to read", parseIntOption("--max-tokens", 1), SCAN_DEFAULTS.maxTokens)
    .option("--json <FILE>", "also write the full statistics / contexts as JSON")
    .option("--force", "replace an existing --json file", false)
    .action((o: { model: string; layer: number; neuron?: number; top: number; corpus: string; maxTokens: number; json?: string; force: boolean }) => {
      const neuron = o.neuron;
      if (o.json !== undefined) checkOutput(o.json, { kind: "neuron-table", inputs: [modelInput(o.model), o.corpus === "brown" ? undefined : o.corpus], force: o.force, option: "--json" });
      const { model, dir } = loadModel(o.model);
      model.checkLayer(o.layer);
      if (neuron !== undefined) checkNeuron(model, o.layer, neuron);
      const tok = loadTokenizer(dir);
      const corpus = loadCorpus(o.corpus);
      let docs = corpus.split("heldout");
      let split = "held-out";
      if (docs.length === 0) {
        docs = corpus.documents;
        split = "all";
        info(`corpus ${o.corpus} has no held-out documents; reading all ${docs.length}`);
      }
      const scan = scanLayer(model, tok, docs, o.layer, {
        maxTokens: o.maxTokens, k: o.top, ...(neuron !== undefined ? { topNeurons: [neuron] } : {}),
      });
      const s = scan.stats;
      const suggested = suggestTargets(s.neurons, SUGGESTED);
      const source = `${s.tokens.toLocaleString("en-US")} tokens of ${o.corpus} (${split}, ${s.documents} documents, windows of ${s.ctx})`;

      if (neuron === undefined) {
        const byStd = [...s.neurons].sort((a, b) => b.std - a.std || a.neuron - b.neuron);
        const targets = new Set(suggested.map((x) => x.neuron));
        const shown = new Set(byStd.slice(0, o.top).map((x) => x.neuron));
        const rows = byStd.filter((x) => shown.has(x.neuron) || targets.has(x.neuron));
        console.log(`${s.hook}: ${model.cfg.dMlp} neurons over ${source}`);
        console.log(`sparsity = ${SPARSITY_DEFINITION}; >1.0 = fraction of tokens above 1.0; * = suggested target`);
        console.log("");
        console.log(`top ${shown.size} by std${rows.length > shown.size ? `, plus ${rows.length - shown.size} suggested targets` : ""}:`);
        for (const line of statsTable(rows, targets)) console.log(`  ${line}`);
        console.log("");
        console.log(`suggested self-report targets: ${suggested.length === 0 ? "none qualifies" : suggested.map((x) => x.neuron).join(", ")}`);
        console.log(`  rule: ${TARGET_RULE}`);
        if (o.json !== undefined) {
          writeJsonAtomic(o.json, {
            model: dir, corpus: o.corpus, split, layer: s.layer, hook: s.hook, tokens: s.tokens, windows: s.windows, documents: s.documents, ctx: s.ctx,
            sparsity_definition: SPARSITY_DEFINITION, target_rule: TARGET_RULE, suggested: suggested.map((x) => x.neuron), neurons: s.neurons,
          });
          console.log(`wrote ${o.json}`);
        }
        return;
      }

      const n = s.neurons[neuron]!;
      const top = scan.top.get(neuron)!;
      const tty = process.stdout.isTTY === true;
      console.log(`${s.hook}[${neuron}] over ${source}`);
      console.log(`mean ${fmt(n.mean)}  std ${fmt(n.std)}  min ${fmt(n.min)}  max ${fmt(n.max)}  sparsity ${pct(n.sparsity)}  >1.0 ${pct(n.fracAbove1)}`);
      console.log("");
      console.log(`top ${top.length} activations:`);
      const wAct = Math.max(...top.map((a) => fmt(a.activation).length));
      const wWhere = Math.max(...top.map((a) => `${a.docId}:${a.position}`.length));
      for (const a of top) console.log(`  ${fmt(a.activation).padStart(wAct)}  ${`${a.docId}:${a.position}`.padEnd(wWhere)}  ${highlight(a, tty)}`);
      if (o.json !== undefined) {
        writeJsonAtomic(o.json, {
          model: dir, corpus: o.corpus, split, layer: s.layer, hook: s.hook, neuron, tokens: s.tokens, windows: s.windows, documents: s.documents, ctx: s.ctx,
          sparsity_definition: SPARSITY_DEFINITION, stats: n, top,
        });
        console.log(`wrote ${o.json}`);
      }
    });

  program
    .command("generate")
    .description("continue a prompt with a model (KV-cached sampling)")
    .requiredOption("--model <dir|name>", "model directory or name")
    .requiredOption("--prompt <text>", "the text to continue")
    .option("--max-new-tokens <n>", "tokens to add at most", parseIntOption("--max-new-tokens", 0), GENERATE_DEFAULTS.maxNewTokens)
    .option("--temperature <t>", "sampling temperature (0 = greedy)", parseFloatOption("--temperature", 0), GENERATE_DEFAULTS.temperature)
    .option("--top-k <k>", "sample among the k most likely tokens (0 = all)", parseIntOption("--top-k", 0), GENERATE_DEFAULTS.topK)
    .option("--seed <seed>", "random seed of the sampler", parseIntOption("--seed"), GENERATE_DEFAULTS.seed)
    .action((o: { model: string; prompt: string; maxNewTokens: number; temperature: number; topK: number; seed: number }) => {
      const { model, dir } = loadModel(o.model);
      const tok = loadTokenizer(dir);
      const r = generate(model, tok, { prompt: o.prompt, maxNewTokens: o.maxNewTokens, temperature: o.temperature, topK: o.topK, seed: o.seed });
      console.log(o.prompt + r.continuation);
      if (r.stopReason === "n_ctx") info(`stopped: the sequence reached the model's context (n_ctx ${model.cfg.nCtx} tokens)`);
      else if (r.stopReason === "eos") info("stopped: the model produced <|endoftext|>");
    });

  const d = PRETRAIN_DEFAULTS;
  program
    .command("pretrain")
    .description("pre-train a small GPT-2-architecture language model on a corpus (next-token prediction)")
    .option("--corpus <brown|FILE>", "training text: the Brown corpus or a .txt / .jsonl file", "brown")
    .requiredOption("--out <dir>", "model directory to write, e.g. models/brown-gpt2-mini")
    .option("--layers <n>", "transformer blocks", parseIntOption("--layers", 1), d.layers)
    .option("--d-model <n>", "residual stream width", parseIntOption("--d-model", 1), d.dModel)
    .option("--heads <n>", "attention heads", parseIntOption("--heads", 1), d.heads)
    .option("--ctx <n>", "context length (n_positions)", parseIntOption("--ctx", 2), d.ctx)
    .option("--steps <n>", "optimizer steps", parseIntOption("--steps", 1), d.steps)
    .option("--batch-size <n>", "windows per step", parseIntOption("--batch-size", 1), d.batchSize)
    .option("--lr <rate>", "peak learning rate", parseFloatOption("--lr", 0), d.lr)
    .option("--warmup <steps>", "linear warm-up steps before cosine decay", parseIntOption("--warmup", 0), d.warmup)
    .option("--weight-decay <wd>", "AdamW decoupled weight decay", parseFloatOption("--weight-decay", 0), d.weightDecay)
    .option("--grad-clip <norm>", "global gradient-norm clip (0 = off)", parseFloatOption("--grad-clip", 0), d.gradClip)
    .option("--seed <seed>", "random seed (initialisation and batches)", parseIntOption("--seed"), d.seed)
    .option("--eval-every <steps>", "held-out evaluation interval", parseIntOption("--eval-every", 1), d.evalEvery)
    .option("--checkpoint-every <steps>", "checkpoint interval", parseIntOption("--checkpoint-every", 1), d.checkpointEvery)
    .option("--dtype <F16|F32>", "dtype of the saved weights", parseChoice<"F16" | "F32">("--dtype", ["F16", "F32"]), d.dtype)
    .option("--resume", "continue from the checkpoint in --out", false)
    .option("--force", "overwrite an existing model in --out", false)
    .action(interruptible(async (o: {
      corpus: string; out: string; layers: number; dModel: number; heads: number; ctx: number; steps: number; batchSize: number; lr: number;
      warmup: number; weightDecay: number; gradClip: number; seed: number; evalEvery: number; checkpointEvery: number; dtype: "F16" | "F32";
      resume: boolean; force: boolean;
    }, cmd: Command) => {
      const r = await pretrain({ ...o, command: commandLine(cmd) });
      const uniPpl = Math.exp(r.unigramLoss);
      console.log(`wrote ${o.out}`);
      console.log(`held-out loss ${r.heldoutLoss.toFixed(4)} nats/token (perplexity ${r.heldoutPerplexity.toFixed(1)}) vs unigram baseline ${r.unigramLoss.toFixed(4)} (perplexity ${uniPpl.toFixed(1)})`);
      console.log(`${r.trainTokens.toLocaleString("en-US")} training / ${r.heldoutTokens.toLocaleString("en-US")} held-out tokens; ${r.seconds.toFixed(0)} s, ${Math.round(r.tokensPerSecond).toLocaleString("en-US")} tokens/s`);
    }));
}
