/**
 * `selfreport analyze patching --run RUN_DIR [--data FILE] [--out DIR] [--n-inputs 500] [--scales 0,0.5,1,1.5,2]
 *  [--set-values a,b,…] [--controls 20] [--seed 0] [--positions read|all|both]`.
 */
import type { Command } from "commander";
import { loadAnalysisContext, writeAnalysisOutput } from "../../analysis/context.ts";
import { patchingAnalysisInterruptibly, patchingPlots, PATCHING_DEFAULTS, PATCH_POSITIONS, type PatchPositions } from "../../analysis/patching.ts";
import { SelfreportError } from "../../errors.ts";
import { parseIntOption, parseNumberList } from "../options.ts";
import { analysisCommand, analysisOutput } from "./analysis-command.ts";
import { deferringSignals, interruptible } from "../interrupts.ts";

function ci(v: [number, number] | null | undefined): string {
  return v == null ? "n/a" : `[${v[0].toFixed(4)}, ${v[1].toFixed(4)}]`;
}

function parsePositions(value: string): PatchPositions {
  if (!(PATCH_POSITIONS as readonly string[]).includes(value)) throw new SelfreportError(`--positions must be one of ${PATCH_POSITIONS.join(", ")}, got "${value}"`);
  return value as PatchPositions;
}

function num(v: number | null | undefined, digits = 4): string {
  return v == null ? "n/a" : v.toFixed(digits);
}

export function registerPatchingAnalysis(analyze: Command): void {
  analysisCommand(analyze, "patching", "activation patching: set, scale, zero, mean-ablate and resample the target neuron; fit Δprediction = slope·Δactivation; controls; direct vs total effect")
    .option("--n-inputs <n>", "inputs to patch (test split first)", parseIntOption("--n-inputs", 3), PATCHING_DEFAULTS.nInputs)
    .option("--scales <list>", "scale factors, comma-separated", parseNumberList("--scales"), [...PATCHING_DEFAULTS.scales])
    .option("--set-values <list>", "values to set the neuron to, comma-separated (default: min, quartiles, max of the dataset)", parseNumberList("--set-values"))
    .option("--controls <k>", "random other neurons of the layer for the null distribution of slopes", parseIntOption("--controls", 0), PATCHING_DEFAULTS.controls)
    .option("--seed <seed>", "seed of the controls, resample sources and bootstrap", parseIntOption("--seed"), PATCHING_DEFAULTS.seed)
    .option("--positions <where>", "patch the neuron at the read position only (read), at every position (all, as the original notebooks did; slower) or both (read, plus an all-positions summary)", parsePositions, PATCHING_DEFAULTS.positions)
    .action(interruptible(async (o: { run: string; data?: string; out?: string; force: boolean; nInputs: number; scales: number[]; setValues?: number[]; controls: number; seed: number; positions: PatchPositions }) => {
      const { out, stopped } = analysisOutput("patching", o);
      const { summary, files } = await deferringSignals(stopped, async (beforeWriting) => {
        const ctx = loadAnalysisContext(o.run, o.data);
        const summary = await patchingAnalysisInterruptibly(ctx, {
          nInputs: o.nInputs, scales: o.scales, controls: o.controls, seed: o.seed, positions: o.positions, ...(o.setValues !== undefined ? { setValues: o.setValues } : {}),
        }, stopped);
        const plots = await patchingPlots(summary);
        beforeWriting();
        return { summary, files: writeAnalysisOutput(out, "patching", ctx.run, summary, plots) };
      });
      const t = summary.target;
      const f = summary.fit;
      console.log(`${t.head_type} head reading layer ${t.feature_layer}; patched ${t.hook}[${t.neuron}] on ${summary.inputs.n_used} inputs × ${summary.settings.length} settings`);
      console.log(`fit Δpred = slope·Δact + b: slope ${num(f?.slope)} (95% t CI ${ci(f?.slope_ci95)}, bootstrap ${ci(summary.fit_bootstrap.slope_ci95)}), R² ${num(f?.r2)}; ideal slope 1`);
      console.log(`direct (W_out path) slope ${num(summary.direct.direct_slope)}, indirect ${num(summary.direct.indirect_slope)}`);
      const c = summary.controls;
      if (c.k > 0) console.log(`controls: target |slope| at percentile ${num(c.percentile_abs, 1)}% of ${c.n_defined} random neurons (z ${num(c.z, 2)})`);
      const all = summary.all_positions;
      if (all !== null) console.log(`all positions patched: slope ${num(all.fit?.slope)} (bootstrap ${ci(all.fit_bootstrap.slope_ci95)}), direct ${num(all.direct.direct_slope)}, controls percentile ${num(all.controls.percentile_abs, 1)}%`);
      else if (summary.positions === "all") console.log("(the neuron was patched at every position; Δact is the change at the read position)");
      for (const s of summary.settings) console.log(`  ${s.label.padEnd(16)} mean Δact ${s.mean_delta_act.toFixed(4).padStart(9)}  mean Δpred ${s.mean_delta_pred.toFixed(4).padStart(9)}`);
      for (const note of summary.notes) console.log(`note: ${note}`);
      console.log(`wrote ${files.length} files to ${out}`);
    }));
}
