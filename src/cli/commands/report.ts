/**
 * `selfreport report --run RUN_DIR [--analyses DIR] --out report.html`: one run's self-contained HTML page.
 * `selfreport report --sweep SWEEP_DIR --out sweep.html`: a sweep's page (results table, plots), each
 * job linked to its own run report.
 */
import type { Command } from "commander";
import { SelfreportError } from "../../errors.ts";
import { deferringSignals, interruptible, nothingWritten } from "../interrupts.ts";
import { writeReport, ANALYSIS_NAMES, analysisCommand, type AnalysisName, type ReportInputs } from "../../report/html.ts";
import { writeSweepReport } from "../../report/sweep.ts";

function statusOf(r: ReportInputs, name: AnalysisName): string {
  const read = r[name];
  return read === null ? "not applicable" : read.status;
}

interface ReportCliOptions {
  run?: string;
  sweep?: string;
  analyses?: string;
  out: string;
  jobReports: boolean;
  rewriteJobReports: boolean;
  force: boolean;
}

export function registerReportCommands(program: Command): void {
  program
    .command("report")
    .description("one self-contained HTML page: for a run (--run), its config, training curve, test metrics and every analysis with its plots and a plain-language verdict; for a sweep (--sweep), the sortable results table and plots across neurons, each job linked to its run report")
    .option("--run <run_dir>", "run directory (a run from train or import-pt, or a sweep's jobs/<job id>)")
    .option("--sweep <sweep_dir>", "sweep folder (from `selfreport sweep`)")
    .option("--analyses <dir>", "with --run: folder with weights/, patching/, residual/ from `selfreport analyze` (default: RUN_DIR/analysis)")
    .option("--no-job-reports", "with --sweep: write no job reports (link those that exist)")
    .option("--rewrite-job-reports", "with --sweep: rewrite every job's report (default: write only the missing ones)", false)
    .requiredOption("--out <file.html>", "output HTML file")
    .option("--force", "replace an existing report (never another kind of file)", false)
    .action(interruptible(async (o: ReportCliOptions) => {
      if (!/\.html?$/i.test(o.out)) throw new SelfreportError(`--out must end in .html, got "${o.out}"`);
      if ((o.run === undefined) === (o.sweep === undefined)) throw new SelfreportError("give either --run RUN_DIR (one run) or --sweep SWEEP_DIR (a whole sweep)");
      if (o.sweep !== undefined) {
        if (o.analyses !== undefined) throw new SelfreportError("--analyses applies to --run only (a sweep's jobs keep theirs in jobs/<job id>/analysis)");
        const { inputs, jobReportsWritten } = await writeSweepReport({ sweepDir: o.sweep, out: o.out, force: o.force, rewriteJobReports: o.rewriteJobReports, noJobReports: !o.jobReports });
        const done = inputs.rows.filter((r) => r.status === "done").length;
        console.log(`wrote ${o.out}: ${inputs.rows.length} of ${inputs.jobs} jobs (${done} done, ${inputs.rows.length - done} failed, ${inputs.missing.length} not finished), ${inputs.plots.length} plots; ${jobReportsWritten} job reports written, ${inputs.links.size} linked`);
        return;
      }
      const run = o.run!;
      const r = await deferringSignals(nothingWritten("report", o.out), (beforeWriting) =>
        writeReport({ runDir: run, out: o.out, force: o.force, beforeWriting, ...(o.analyses !== undefined ? { analysesDir: o.analyses } : {}) }));
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
    }));
}
