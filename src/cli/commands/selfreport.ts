/**
 * Self-report commands: `dataset`, `train`, `predict`, `import-pt`.
 */
import type { Command } from "commander";
import { interruptible } from "../interrupts.ts";
import { loadModel } from "../../model/load.ts";
import { loadTokenizer } from "../../model/tokenizer.ts";
import { loadCorpus } from "../../data/corpus.ts";
import { SelfreportError } from "../../errors.ts";
import { buildDatasetInterruptibly, writeDataset, checkDatasetOutput, type LayerType, type TokenPos } from "../../selfreport/dataset.ts";
import { train, TRAIN_DEFAULTS, defaultLr, trainOptionsFrom } from "../../selfreport/train.ts";
import { addTrainingOptions, trainingSettingsFromFlags, type TrainingFlags } from "../training-options.ts";
import { SOLVERS, defaultSolver, type Solver } from "../../selfreport/ridge.ts";
import { HEAD_TYPES, type HeadType, type HiddenActivation } from "../../selfreport/predictor.ts";
import { FREEZE_MODES, readRun, loadRunModel, loadBaseModel, finetunedDir, type FreezeMode } from "../../selfreport/run.ts";
import { runTarget, targetLabel } from "../../selfreport/target.ts";
import { predictPrompts } from "../../selfreport/predict.ts";
import { collect, parseChoice, parseFloatOption, parseIntOption, modelInput } from "../options.ts";
import { info } from "../../util/progress.ts";
import { registerImportPt } from "./import-pt.ts";

function parseTokenPos(value: string): TokenPos {
  if (value === "last") return "last";
  const n = Number(value);
  if (!Number.isInteger(n) || n < 0) throw new SelfreportError(`--token-pos must be "last" or a non-negative index, got "${value}"`);
  return n;
}

export function registerSelfreportCommands(program: Command): void {
  registerImportPt(program);
  program
    .command("dataset")
    .description("build a self-report dataset: text prefixes and the target neuron's activation at the read position")
    .requiredOption("--model <dir|name>", "base model directory or name")
    .requiredOption("--layer <L>", "target layer", parseIntOption("--layer", 0))
    .requiredOption("--neuron <N>", "target neuron (MLP index for mlp_post, residual dimension for mlp_out)", parseIntOption("--neuron", 0))
    .option("--layer-type <mlp_post|mlp_out>", "target hook: mlp_post = blocks.L.mlp.hook_post (default), mlp_out = blocks.L.hook_mlp_out", parseChoice<LayerType>("--layer-type", ["mlp_post", "mlp_out"]), "mlp_post")
    .option("--corpus <brown|FILE>", "text: the Brown corpus or a .txt / .jsonl file", "brown")
    .option("--n <count>", "number of examples", parseIntOption("--n", 10), 20000)
    .option("--max-len <tokens>", "longest prefix", parseIntOption("--max-len", 2), 64)
    .option("--token-pos <last|INDEX>", "read position: the last token of each prefix, or a fixed index", parseTokenPos, "last" as TokenPos)
    .option("--balance", "over-sample high activations in the training split (for sparse neurons)", false)
    .option("--weights <raw|tl>", "weight processing of the base model", parseChoice<"raw" | "tl">("--weights", ["raw", "tl"]), "tl")
    .option("--seed <seed>", "random seed", parseIntOption("--seed"), 0)
    .requiredOption("--out <file.safetensors>", "output dataset (a .jsonl with the text is written beside it)")
    .option("--force", "replace an existing dataset (never one that a run was trained on)", false)
    .action(interruptible(async (o: { model: string; layer: number; neuron: number; layerType: LayerType; corpus: string; n: number; maxLen: number; tokenPos: TokenPos; balance: boolean; weights: "raw" | "tl"; seed: number; out: string; force: boolean }) => {
      if (!o.out.endsWith(".safetensors")) throw new SelfreportError(`--out must end in .safetensors, got "${o.out}"`);
      checkDatasetOutput(o.out, { inputs: [modelInput(o.model), o.corpus === "brown" ? undefined : o.corpus], force: o.force });
      const { model, dir } = loadModel(o.model, { weights: o.weights });
      const tok = loadTokenizer(dir);
      const corpus = loadCorpus(o.corpus);
      const ds = await buildDatasetInterruptibly(model, tok, corpus.documents, {
        modelName: o.model, modelDir: dir, weights: o.weights, layer: o.layer, neuron: o.neuron, layerType: o.layerType,
        tokenPos: o.tokenPos, n: o.n, maxLen: o.maxLen, balance: o.balance, seed: o.seed, corpusName: o.corpus,
      });
      writeDataset(o.out, ds, (ids) => tok.decode(ids));
      const s = ds.meta.stats;
      console.log(`wrote ${o.out} (${ds.meta.n} examples: ${ds.meta.split_counts.train} train / ${ds.meta.split_counts.validation} validation / ${ds.meta.split_counts.test} test)`);
      console.log(`target ${ds.meta.hook}[${o.neuron}]: mean ${s.mean.toFixed(4)}, std ${s.std.toFixed(4)}, min ${s.min.toFixed(4)}, max ${s.max.toFixed(4)}, near zero ${(100 * s.frac_near_zero).toFixed(1)}%`);
    }));

  const trainCmd = program
    .command("train")
    .description("train an ActivationPredictor (base model + head) on a dataset into a run directory")
    .requiredOption("--data <file.safetensors>", "dataset from `selfreport dataset`")
    .requiredOption("--head <regression|classification|token>", "head type", parseChoice<HeadType>("--head", HEAD_TYPES))
    .option("--freeze <frozen|unfrozen|partial>", "what trains", parseChoice<FreezeMode>("--freeze", FREEZE_MODES), TRAIN_DEFAULTS.freeze)
    .option("--solver <ridge|adamw>", "how the head is fitted: ridge = closed-form ridge on the cached features, λ chosen on the validation split (frozen linear regression only); adamw = gradient training (default: ridge for a frozen regression head without --hidden-dim or --dropout, adamw otherwise)", parseChoice<Solver>("--solver", SOLVERS))
    .option("--unfreeze-last <K>", "with --freeze partial: the last K blocks up to the feature layer train", parseIntOption("--unfreeze-last", 1))
    .option("--lr <rate>", "peak learning rate (default 1e-3 frozen, 1e-4 otherwise)", parseFloatOption("--lr", 0));
  addTrainingOptions(trainCmd)
    .option("--hidden-dim <n>", "regression/classification: a hidden layer of this size", parseIntOption("--hidden-dim", 1))
    .option("--activation <relu|gelu|tanh>", "hidden layer non-linearity", parseChoice<HiddenActivation>("--activation", ["relu", "gelu", "tanh"]))
    .option("--dropout <p>", "dropout before the output layer", parseFloatOption("--dropout", 0, 0.99), TRAIN_DEFAULTS.dropout)
    .option("--num-classes <k>", "classification bins (token head: must be 10)", parseIntOption("--num-classes", 2))
    .option("--checkpoint-every <steps>", "checkpoint interval", parseIntOption("--checkpoint-every", 1), TRAIN_DEFAULTS.checkpointEvery)
    .option("--model <dir|name>", "base model (default: the dataset's)")
    .option("--resume", "continue from the run's checkpoint", false)
    .option("--force", "overwrite an existing run directory", false)
    .requiredOption("--out <run_dir>", "run directory")
    .action(interruptible(async (o: TrainingFlags & {
      data: string; head: HeadType; freeze: FreezeMode; solver?: Solver; unfreezeLast?: number; lr?: number; hiddenDim?: number; activation?: HiddenActivation; dropout: number;
      numClasses?: number; checkpointEvery: number; model?: string; resume: boolean; force: boolean; out: string;
    }, cmd: Command) => {
      const solver = o.solver ?? defaultSolver({ head: o.head, freeze: o.freeze, hiddenDim: o.hiddenDim ?? null, dropout: o.dropout });
      if (solver === "ridge") {
        const ignored = ["epochs", "batchSize", "lr", "weightDecay", "warmup", "gradClip", "patience", "seed", "checkpointEvery"].filter((k) => cmd.getOptionValueSource(k) === "cli");
        if (ignored.length > 0) {
          const flags = ignored.map((k) => `--${k.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}`).join(", ");
          info(`the ridge solver (the default for a frozen linear regression head) has no use for ${flags}; pass --solver adamw to train with them`);
        }
      }
      const r = await train({
        data: o.data, out: o.out, head: o.head, freeze: o.freeze, unfreezeLast: o.unfreezeLast ?? null,
        ...trainOptionsFrom(trainingSettingsFromFlags(o, o.lr ?? defaultLr(o.freeze))), hiddenDim: o.hiddenDim ?? null, activation: o.activation ?? null,
        dropout: o.dropout, numClasses: o.numClasses ?? null, checkpointEvery: o.checkpointEvery, resume: o.resume, force: o.force,
        ...(o.model !== undefined ? { model: o.model } : {}), ...(o.solver !== undefined ? { solver: o.solver } : {}),
      });
      const t = r.test;
      if (r.ridge !== undefined) info(`solved by ridge (λ ${r.ridge.lambda.toExponential(3)}, α ${r.ridge.alpha.toExponential(1)}, validation MSE ${r.ridge.valLoss.toFixed(4)}) in ${r.seconds.toFixed(2)} s`);
      else info(`trained ${r.epochsRun} epochs (best ${r.bestEpoch}${r.stoppedEarly ? ", stopped early" : ""}) in ${r.seconds.toFixed(1)} s`);
      console.log(`run: ${r.runDir}`);
      console.log(`test: r ${t.pearson_r.toFixed(4)}, ρ ${t.spearman_rho.toFixed(4)}, R² ${t.r2.toFixed(4)}, MSE ${t.mse.toExponential(3)}, MAE ${t.mae.toExponential(3)}${t.accuracy !== null ? `, bin accuracy ${(100 * t.accuracy).toFixed(1)}%` : ""}`);
      console.log(`baseline (${t.baseline.description}): MSE ${t.baseline.mse.toExponential(3)}, R² ${t.baseline.r2.toFixed(4)}`);
    }));

  program
    .command("predict")
    .description("predicted activation of a trained run beside the real one, for prompts")
    .requiredOption("--run <run_dir>", "run directory")
    .requiredOption("--prompt <text>", "a prompt (repeatable)", collect, [])
    .option("--json", "print JSON", false)
    .action((o: { run: string; prompt: string[]; json: boolean }) => {
      const run = readRun(o.run);
      const base = loadBaseModel(run);
      const model = run.config.freeze_mode === "frozen" ? base : loadRunModel(run);
      const tok = loadTokenizer(run.config.freeze_mode === "frozen" ? run.config.base_model_dir : finetunedDir(o.run));
      const preds = predictPrompts(run, model, base, tok, o.prompt);
      if (o.json) {
        console.log(JSON.stringify(preds, null, 2));
        return;
      }
      const c = run.config;
      console.log(`run ${o.run}: ${c.head_type} head (${c.freeze_mode}) reporting ${targetLabel(runTarget(c))}`);
      for (const p of preds) {
        const ft = p.actualFinetuned === null ? "" : `  (fine-tuned model's neuron: ${p.actualFinetuned.toFixed(4)})`;
        console.log(`predicted ${p.predicted.toFixed(4)}  actual ${p.actual.toFixed(4)}${ft}  | ${JSON.stringify(p.prompt)}`);
      }
    });
}
