/** `selfreport analyze residual` (placeholder until the analysis lands). */
import type { Command } from "commander";

export function registerResidualAnalysis(analyze: Command): void {
  void analyze;
}
