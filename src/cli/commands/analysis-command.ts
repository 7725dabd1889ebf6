/**
 * What every `analyze NAME` command shares: its subcommand with --run, --data, --out and --force
 * (analysisCommand), and the start of its action (analysisOutput): the output folder, checked before
 * anything is computed, and the message an interruption prints.
 */
import type { Command } from "commander";
import { checkAnalysisOutput } from "../../analysis/context.ts";
import { analysisDir } from "../../selfreport/run.ts";
import { expectFolderPath } from "../../io/paths.ts";
import { nothingWritten } from "../interrupts.ts";

/**
 * The subcommand `analyze NAME` with the options every analysis shares: --run, --data, --out (default
 * RUN_DIR/analysis/NAME, where `selfreport report` reads it) and --force. `help.run` and `help.data`
 * say what this analysis needs of them.
 */
export function analysisCommand(analyze: Command, name: string, description: string, help: { run?: string; data?: string } = {}): Command {
  return analyze
    .command(name)
    .description(description)
    .requiredOption("--run <run_dir>", help.run ?? "run directory")
    .option("--data <file.safetensors>", help.data ?? "dataset (default: the one recorded in the run's config.json)")
    .option("--out <dir>", `output directory for summary.json and the SVG plots (default: RUN_DIR/analysis/${name}, where \`selfreport report\` reads it)`)
    .option("--force", "replace an existing analysis folder (never anything else)", false);
}

/**
 * The output folder of `analyze NAME` (--out, default RUN_DIR/analysis/NAME, where `selfreport report`
 * reads it), checked by the output rule before any work, and the line an interruption prints.
 */
export function analysisOutput(name: string, o: { run: string; data?: string; out?: string; force: boolean }): { out: string; stopped: () => string } {
  const out = o.out ?? analysisDir(o.run, name);
  expectFolderPath(out, "--out", "an analysis output folder");
  checkAnalysisOutput(out, o.run, o.data, o.force);
  return { out, stopped: nothingWritten(`analyze ${name}`, out) };
}
