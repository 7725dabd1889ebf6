/** `selfreport report --run RUN_DIR [--analyses DIR] --out report.html`: one self-contained HTML page. */
import type { Command } from "commander";
import { SelfreportError } from "../../errors.ts";
import { writeReport, ANALYSIS_NAMES, analysisCommand, type AnalysisName, type ReportInputs } from "../../report/html.ts";

function statusOf(r: ReportInputs, name: AnalysisName): string {
  const read = r[name];
  return read === null ? "not applicable" : read.status;
}

export function registerReportCommands(program: Command): void {
  program
    .command("report")
    .description("one self-contained HTML page: the run's config, training curve, test metrics, and every analysis with its plots and a plain-language verdict")
    .requiredOption("--run <run_dir>", "run directory")
    .option("--analyses <dir>", "folder with weights/, patching/, residual/ from `selfreport analyze` (default: RUN_DIR/analysis)")
    .requiredOption("--out <file.html>", "output HTML file")
    .option("--force", "replace an existing report", false)
    .action(async (o: { run: string; analyses?: string; out: string; force: boolean }) => {
      if (!/\.html?$/i.test(o.out)) throw new SelfreportError(`--out must end in .html, got "${o.out}"`);
      const r = await writeReport({ runDir: o.run, out: o.out, force: o.force, ...(o.analyses !== undefined ? { analysesDir: o.analyses } : {}) });
      const shown = ANALYSIS_NAMES.filter((n) => statusOf(r, n) === "ok");
      const plots = shown.reduce((s, n) => s + (r[n]?.status === "ok" ? r[n].plots.filter((p) => p.svg !== null).length : 0), 0);
      console.log(`wrote ${o.out}: analyses ${shown.length > 0 ? shown.join(", ") : "none"} (${plots} plots)`);
      for (const n of ANALYSIS_NAMES) {
        const st = statusOf(r, n);
        if (st === "not run") console.log(`not run: ${n} (${analysisCommand(n, r.runDir, r.analysesDir)})`);
        else if (st === "unreadable") {
          const read = r[n];
          console.log(`unreadable: ${n}${read !== null && read.status === "unreadable" ? ` (${read.reason})` : ""}`);
        }
      }
    });
}
