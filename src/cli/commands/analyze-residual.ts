/** `selfreport analyze residual --run RUN_DIR [--data FILE] [--out DIR] [--n-inputs 500]` (unfrozen / partial runs). */
import type { Command } from "commander";
import { loadAnalysisContext, writeAnalysisOutput } from "../../analysis/context.ts";
import { residualAnalysisInterruptibly, residualPlots, RESIDUAL_DEFAULTS } from "../../analysis/residual.ts";
import { parseIntOption } from "../options.ts";
import { analysisCommand, analysisOutput } from "./analysis-command.ts";
import { deferringSignals, interruptible } from "../interrupts.ts";

const f = (v: number | null, digits = 3): string => (v === null ? "n/a" : v.toFixed(digits));

export function registerResidualAnalysis(analyze: Command): void {
  analysisCommand(analyze, "residual", "fine-tuned runs: what training changed in the residual stream, per layer; whether the change writes the neuron's directions into what the fixed head reads; which weights moved", {
    run: "run directory of an unfrozen or partial run",
  })
    .option("--n-inputs <n>", "inputs to compare on (test split first)", parseIntOption("--n-inputs", 3), RESIDUAL_DEFAULTS.nInputs)
    .action(interruptible(async (o: { run: string; data?: string; out?: string; force: boolean; nInputs: number }) => {
      const { out, stopped } = analysisOutput("residual", o);
      const { s, files } = await deferringSignals(stopped, async (beforeWriting) => {
        const ctx = loadAnalysisContext(o.run, o.data);
        const s = await residualAnalysisInterruptibly(ctx, { nInputs: o.nInputs }, stopped);
        const plots = await residualPlots(s);
        beforeWriting();
        return { s, files: writeAnalysisOutput(out, "residual", ctx.run, s, plots) };
      });
      const p = s.predictions;
      console.log(`${s.target.freeze_mode} run, ${s.target.head_type} head reading layer ${s.target.feature_layer}; ${s.inputs.n_used} inputs`);
      console.log(`fixed head on base features: r ${f(p.base.r_with_target)} with the target; on fine-tuned features: r ${f(p.finetuned.r_with_target)}`);
      console.log(`target neuron before vs after fine-tuning: r ${f(s.neuron.r, 4)}; first-order read-out R² ${f(s.readout.linearisation_r2, 4)}`);
      const sp = p.split;
      if (sp !== null) console.log(`change in prediction: mean shift ${f(sp.mean_shift)} (${f(100 * sp.share_mean_shift, 1)}% of its mean square), tracking the neuron ${f(100 * sp.share_coupled, 1)}% (slope ${f(sp.coupled_slope)}), rest ${f(100 * sp.share_rest, 1)}%`);
      console.log("layer    rel.Δ   share(tracking)  r(inc,act)  cos(β,W_out)  cos(β,W_in ln2)  cos(β,head)");
      for (const l of s.layers) {
        const k = l.coupled_change_cosines;
        if (k === null) {
          console.log(`${String(l.layer).padEnd(7)} ${f(l.relative_change).padStart(6)}  unchanged (below the noise floor ${s.noise_floor.residual_relative})`);
          continue;
        }
        console.log(`${String(l.layer).padEnd(7)} ${f(l.relative_change).padStart(6)} ${f(l.share_of_coupled_change).padStart(16)} ${f(l.increment_r_with_activation).padStart(11)} ${f(k.W_out).padStart(13)} ${f(k.W_in_folded).padStart(16)} ${f(k.head).padStart(12)}`);
      }
      console.log(`(random directions: cosine std ${f(s.null_cosine_std)})`);
      for (const note of s.notes) console.log(`note: ${note}`);
      console.log(`wrote ${files.length} files to ${out}`);
    }));
}
