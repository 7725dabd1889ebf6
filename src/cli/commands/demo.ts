/**
 * `selfreport demo` (`npm run demo`): the whole research loop on the shipped model and its default
 * target neuron, in a few minutes on 2 cores:
 *
 *   dataset → frozen regression predictor → weights + patching analyses
 *           → unfrozen regression predictor (fixed random head, the model learns) → weights + patching + residual
 *           → an HTML report per run
 *
 * Layout under --out (default runs/demo):
 *   dataset.safetensors (+ .jsonl)
 *   frozen-regression/        run directory; analysis/{weights,patching}/; report.html
 *   unfrozen-regression/      run directory (+ finetuned/); analysis/{weights,patching,residual}/; report.html
 * The notebooks default to these run directories.
 */
import { targetLabel } from "../../selfreport/target.ts";
import { analysisDir } from "../../selfreport/run.ts";
import type { Command } from "commander";
import { existsSync } from "node:fs";
import { join, resolve } from "node:path";
import { loadModel } from "../../model/load.ts";
import { loadTokenizer } from "../../model/tokenizer.ts";
import { loadCorpus } from "../../data/corpus.ts";
import { SelfreportError } from "../../errors.ts";
import { buildDataset, writeDataset, checkDatasetOutput } from "../../selfreport/dataset.ts";
import { checkOutput } from "../../io/outputs.ts";
import { train, TRAIN_DEFAULTS, type TrainOptions } from "../../selfreport/train.ts";
import { loadAnalysisContext, writeAnalysisOutput } from "../../analysis/context.ts";
import { weightsAnalysis, weightsPlots, type WeightsSummary } from "../../analysis/weights.ts";
import { patchingAnalysis, patchingPlots, type PatchingSummary } from "../../analysis/patching.ts";
import { residualAnalysis, residualPlots } from "../../analysis/residual.ts";
import { ciText, weightsVerdict } from "../../report/verdicts.ts";
import { writeReport } from "../../report/html.ts";
import { info } from "../../util/progress.ts";
import { parseIntOption } from "../options.ts";

/** The shipped model and the target its README recommends (see models/brown-gpt2-mini/README.md). */
export const DEMO_DEFAULTS = { model: "models/brown-gpt2-mini", layer: 2, neuron: 392, n: 4000, out: "runs/demo" } as const;

export interface DemoOptions {
  model: string;
  layer: number;
  neuron: number;
  n: number;
  out: string;
  /** Replace the outputs of an earlier demo in `out`. */
  force: boolean;
}

export interface DemoResult {
  reports: string[];
  testR: number;
  baselineR2: number;
  testR2: number;
  cosineWOut: number | null;
  rankWOut: number | null;
  patchSlope: number | null;
  patchSlopeCi: [number, number] | null;
  /** The frozen run's weights verdict, with patching ("does the head read what the neuron writes?"). */
  weightsVerdict: string | null;
}

function trainOptions(data: string, out: string, freeze: "frozen" | "unfrozen", epochs: number, lr: number): TrainOptions {
  return {
    ...TRAIN_DEFAULTS, data, out, head: "regression", freeze, unfreezeLast: null, epochs, lr,
    hiddenDim: null, activation: null, numClasses: null, resume: false, force: true,
  };
}

interface Analysed {
  weights?: WeightsSummary;
  patching?: PatchingSummary;
}

/** Runs the named analyses of a run into RUN_DIR/analysis/NAME/ and returns their summaries. */
async function analyse(runDir: string, which: Array<"weights" | "patching" | "residual">): Promise<Analysed> {
  const ctx = loadAnalysisContext(runDir);
  const done: Analysed = {};
  for (const a of which) {
    const out = analysisDir(runDir, a);
    if (a === "weights") {
      const s = (done.weights = weightsAnalysis(ctx));
      writeAnalysisOutput(out, a, ctx.run, s, await weightsPlots(s));
    } else if (a === "patching") {
      // both: the read position (the main numbers) and every position, as the original notebooks patched
      const s = (done.patching = patchingAnalysis(ctx, { nInputs: 300, controls: 20, positions: "both" }));
      writeAnalysisOutput(out, a, ctx.run, s, await patchingPlots(s));
    } else {
      const s = residualAnalysis(ctx, { nInputs: 300 });
      writeAnalysisOutput(out, a, ctx.run, s, await residualPlots(s));
    }
    info(`demo: analysis ${a} → ${out}`);
  }
  return done;
}

export async function runDemo(o: DemoOptions): Promise<DemoResult> {
  if (!existsSync(join(o.model, "model.safetensors"))) {
    throw new SelfreportError(`demo: no model at ${o.model} (model.safetensors missing); the shipped model lives in models/brown-gpt2-mini`);
  }
  const t0 = Date.now();
  const out = resolve(o.out);
  const data = join(out, "dataset.safetensors");
  const frozenDir = join(out, "frozen-regression");
  const unfrozenDir = join(out, "unfrozen-regression");
  // every output checked before anything is computed (analyses and reports live inside the run folders)
  for (const runDir of [frozenDir, unfrozenDir]) checkOutput(runDir, { kind: "run", inputs: [o.model], force: o.force });
  checkDatasetOutput(data, { inputs: [o.model], force: o.force, replacing: [frozenDir, unfrozenDir] });

  info(`demo: 1/5 dataset: ${o.n} prefixes of Brown-corpus text, target ${targetLabel({ layer: o.layer, neuron: o.neuron, layer_type: "mlp_post" })} of ${o.model}`);
  const { model, dir } = loadModel(o.model, { weights: "tl" });
  const tok = loadTokenizer(dir);
  const corpus = loadCorpus("brown");
  const ds = buildDataset(model, tok, corpus.documents, {
    modelName: o.model, modelDir: dir, weights: "tl", layer: o.layer, neuron: o.neuron, layerType: "mlp_post",
    tokenPos: "last", n: o.n, maxLen: 64, balance: false, seed: 0, corpusName: "brown",
  });
  writeDataset(data, ds, (ids) => tok.decode(ids));

  info("demo: 2/5 frozen regression head (only the head learns)");
  const frozen = await train(trainOptions(data, frozenDir, "frozen", 30, 1e-3));
  info("demo: 3/5 analyses of the frozen run: weights, patching");
  const fa = await analyse(frozenDir, ["weights", "patching"]);

  info("demo: 4/5 unfrozen regression (the head stays at its random init; the model learns to write what it reads)");
  await train(trainOptions(data, unfrozenDir, "unfrozen", 3, 3e-4));
  await analyse(unfrozenDir, ["weights", "patching", "residual"]);

  info("demo: 5/5 reports");
  const reports: string[] = [];
  for (const runDir of [frozenDir, unfrozenDir]) {
    const file = join(runDir, "report.html");
    await writeReport({ runDir, out: file, force: true });
    reports.push(file);
  }

  info(`demo: done in ${((Date.now() - t0) / 1000).toFixed(0)} s`);
  return {
    reports,
    testR: frozen.test.pearson_r,
    testR2: frozen.test.r2,
    baselineR2: frozen.test.baseline.r2,
    cosineWOut: fa.weights?.reading.W_out?.cosine ?? null,
    rankWOut: fa.weights?.reading.W_out?.rank_in_layer ?? null,
    patchSlope: fa.patching?.fit?.slope ?? null,
    patchSlopeCi: fa.patching?.fit_bootstrap.slope_ci95 ?? null,
    weightsVerdict: fa.weights === undefined ? null : (() => {
      const v = weightsVerdict(fa.weights!, fa.patching ?? null);
      return v.headline;
    })(),
  };
}

export function registerDemo(program: Command): void {
  program
    .command("demo")
    .description("the whole loop on the shipped model: dataset → frozen and unfrozen regression predictors → weights, patching, residual analyses → HTML reports")
    .option("--model <dir>", "base model directory", DEMO_DEFAULTS.model)
    .option("--layer <L>", "target layer", parseIntOption("--layer", 0), DEMO_DEFAULTS.layer)
    .option("--neuron <N>", "target neuron", parseIntOption("--neuron", 0), DEMO_DEFAULTS.neuron)
    .option("--n <count>", "dataset size", parseIntOption("--n", 100), DEMO_DEFAULTS.n)
    .option("--out <dir>", "output folder", DEMO_DEFAULTS.out)
    .option("--force", "replace the dataset, runs, analyses and reports of an earlier demo in --out", false)
    .action(async (o: DemoOptions) => {
      const r = await runDemo(o);
      const f = (v: number | null, d = 3): string => (v === null ? "n/a" : v.toFixed(d));
      console.log("");
      console.log(`reports: ${r.reports.join("  ")}`);
      console.log(`1. can it report? frozen regression head, test split: r ${f(r.testR)}, R² ${f(r.testR2)} (always-the-mean baseline R² ${f(r.baselineR2)})`);
      console.log(`2. does it read the neuron's write? cosine(head, W_out[n, :]) ${f(r.cosineWOut)}${r.rankWOut === null ? "" : `, rank ${r.rankWOut} among the layer's neurons`}`);
      console.log(`3. does the prediction move with the neuron? patching slope ${f(r.patchSlope)} (bootstrap 95% CI ${r.patchSlopeCi === null ? "n/a" : ciText(r.patchSlopeCi)}; ideal 1)`);
      if (r.weightsVerdict !== null) console.log(`   verdict on "does the head read what the neuron writes?": ${r.weightsVerdict}`);
    });
}
