/**
 * `selfreport analyze weights|patching|residual --run RUN_DIR [--data FILE] [--out DIR]`:
 * the parent command; each analysis registers its own sub-command from its own file.
 */
import type { Command } from "commander";
import { registerWeightsAnalysis } from "./analyze-weights.ts";
import { registerPatchingAnalysis } from "./analyze-patching.ts";
import { registerResidualAnalysis } from "./analyze-residual.ts";

export function registerAnalyzeCommands(program: Command): void {
  const analyze = program
    .command("analyze")
    .description("mechanistic analyses of a trained run: weights, patching, residual");
  registerWeightsAnalysis(analyze);
  registerPatchingAnalysis(analyze);
  registerResidualAnalysis(analyze);
}
