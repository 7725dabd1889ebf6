/** `selfreport analyze weights --run RUN_DIR [--data FILE] --out DIR [--max-examples N]`. */
import type { Command } from "commander";
import { checkAnalysisOutput, loadAnalysisContext, writeAnalysisOutput } from "../../analysis/context.ts";
import { weightsAnalysis, weightsPlots, WEIGHTS_DEFAULTS, type Comparison } from "../../analysis/weights.ts";
import { SelfreportError } from "../../errors.ts";
import { parseIntOption } from "../options.ts";

function parseMaxExamples(value: string): number {
  const n = parseIntOption("--max-examples")(value);
  if (n < 1) throw new SelfreportError(`--max-examples must be a positive integer, got ${n}`);
  return n;
}

function line(name: string, c: Comparison | undefined): string {
  if (c === undefined) return "";
  const overall = c.rank_overall === null ? "" : `, rank ${c.rank_overall}/${c.n_overall} overall`;
  return `  ${name.padEnd(12)} cosine ${c.cosine.toFixed(4).padStart(7)}  z ${c.z.toFixed(2).padStart(6)}  rank ${c.rank_in_layer}/${c.n_in_layer} in layer${overall}`;
}

export function registerWeightsAnalysis(analyze: Command): void {
  analyze
    .command("weights")
    .description("does the head read what the neuron writes? head direction vs W_in/W_out: cosines, ranks, activation pattern, whitening, direct-write variance share")
    .requiredOption("--run <run_dir>", "run directory")
    .option("--data <file.safetensors>", "dataset (default: the one recorded in the run's config.json)")
    .requiredOption("--out <dir>", "output directory (summary.json and SVG plots)")
    .option("--force", "replace an existing analysis folder", false)
    .option("--max-examples <n>", "examples for the covariance, gradients and variances", parseMaxExamples, WEIGHTS_DEFAULTS.maxExamples)
    .action(async (o: { run: string; data?: string; out: string; force: boolean; maxExamples: number }) => {
      checkAnalysisOutput(o.out, o.run, o.data, o.force);
      const ctx = loadAnalysisContext(o.run, o.data);
      const summary = weightsAnalysis(ctx, { maxExamples: o.maxExamples });
      const plots = await weightsPlots(summary);
      const files = writeAnalysisOutput(o.out, "weights", ctx.run, summary, plots);
      const t = summary.target;
      console.log(`${summary.head.type} head reading resid_post of layer ${t.feature_layer}; target ${t.hook}[${t.neuron}] (${summary.examples.n_used} examples, null std ${summary.null_model.std.toFixed(4)})`);
      for (const [label, cmps] of [["reading", summary.reading], ["pattern", summary.pattern.comparisons]] as const) {
        console.log(`${label} direction:`);
        for (const kind of summary.vectors) console.log(line(kind, cmps[kind]));
      }
      const dw = summary.direct_write;
      console.log(`direct-write variance share: ${dw.share === null ? `n/a (${dw.note})` : dw.share.toFixed(4)}`);
      console.log(`wrote ${files.length} files to ${o.out}`);
    });
}
