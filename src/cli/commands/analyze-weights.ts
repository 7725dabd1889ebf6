/** `selfreport analyze weights --run RUN_DIR [--data FILE] [--out DIR] [--max-examples N]`. */
import type { Command } from "commander";
import { loadAnalysisContext, writeAnalysisOutput, hasNoDataset } from "../../analysis/context.ts";
import { weightsOnlyAnalysis } from "../../analysis/weights-only.ts";
import { readRun, loadRunModel } from "../../selfreport/run.ts";
import { weightsAnalysisInterruptibly, weightsPlots, WEIGHTS_DEFAULTS, type Comparison } from "../../analysis/weights.ts";
import { SelfreportError } from "../../errors.ts";
import { weightsVerdict } from "../../report/verdicts.ts";
import { parseIntOption } from "../options.ts";
import { analysisCommand, analysisOutput } from "./analysis-command.ts";
import { deferringSignals, interruptible } from "../interrupts.ts";

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
  analysisCommand(analyze, "weights", "does the head read what the neuron writes? head direction vs W_in/W_out: cosines, ranks, activation pattern, whitening, direct-write variance share", {
    data: "dataset (default: the one recorded in the run's config.json; a run without one, e.g. imported, gets the measures that need no examples)",
  })
    .option("--max-examples <n>", "examples for the covariance, gradients and variances", parseMaxExamples, WEIGHTS_DEFAULTS.maxExamples)
    .action(interruptible(async (o: { run: string; data?: string; out?: string; force: boolean; maxExamples: number }) => {
      const { out, stopped } = analysisOutput("weights", o);
      const run = readRun(o.run);
      if (hasNoDataset(run, o.data)) {
        const { s, files } = await deferringSignals(stopped, async (beforeWriting) => {
          const s = weightsOnlyAnalysis(run, loadRunModel(run), out);
          const plots = await weightsPlots(s);
          beforeWriting();
          return { s, files: writeAnalysisOutput(out, "weights", run, s, plots) };
        });
        const t = s.target;
        console.log(`${s.head.type} head reading resid_post of layer ${t.feature_layer}; target ${t.hook}[${t.neuron}] (no dataset: weights only, null std ${s.null_model.std.toFixed(4)})`);
        console.log("reading direction:");
        for (const kind of s.vectors) console.log(line(kind, s.reading[kind]));
        const dw = s.direct_write;
        console.log(`direct write: cosine ${dw.cosine.toFixed(4)}, |write| ${dw.write_norm.toFixed(4)}, prediction per unit activation ${dw.w_dot_write === null ? "n/a (needs examples)" : dw.w_dot_write.toFixed(4)}`);
        console.log(`skipped (need examples): ${s.skipped.map((k) => k.field).join(", ")}; add them with:`);
        console.log(`  ${s.skipped[0]!.command}`);
        console.log(`wrote ${files.length} files to ${out}`);
        return;
      }
      const { summary, files } = await deferringSignals(stopped, async (beforeWriting) => {
        const ctx = loadAnalysisContext(o.run, o.data);
        const summary = await weightsAnalysisInterruptibly(ctx, { maxExamples: o.maxExamples }, stopped);
        const plots = await weightsPlots(summary);
        beforeWriting();
        return { summary, files: writeAnalysisOutput(out, "weights", ctx.run, summary, plots) };
      });
      const t = summary.target;
      console.log(`${summary.head.type} head reading resid_post of layer ${t.feature_layer}; target ${t.hook}[${t.neuron}] (${summary.examples.n_used} examples, null std ${summary.null_model.std.toFixed(4)})`);
      console.log("reading direction (filter):");
      for (const kind of summary.vectors) console.log(line(kind, summary.reading[kind]));
      const dw = summary.direct_write;
      console.log(`direct-write variance share: ${dw.share === null ? `n/a (${dw.note})` : dw.share.toFixed(4)}`);
      if (summary.w_in !== null) {
        const gate = summary.w_in.gate_readout_correlation === null ? "" : `, W_gate ${summary.w_in.gate_readout_correlation.toFixed(4)}`;
        console.log(`readout correlation: W_in ${summary.w_in.readout_correlation.toFixed(4)}${gate} (${summary.w_in.spaces.split(":")[0]})`);
      }
      const pn = summary.pattern.random_filter_null;
      console.log(`activation pattern (what the prediction co-varies with, not evidence of reading): cosine ${summary.pattern.cosine_with_target_pattern.toFixed(4)} with the target pattern Cov(x, act)/Var(act); ${pn.n} random filters: ${pn.target_pattern.mean.toFixed(4)} ± ${pn.target_pattern.std.toFixed(4)}`);
      const v = weightsVerdict(summary);
      console.log(`verdict (weights only; the report adds patching where it ran): ${v.level.toUpperCase()}: ${v.headline}`);
      console.log(`wrote ${files.length} files to ${out}`);
    }));
}
