/**
 * The results table of a sweep, rebuilt from the job folders (the only source of truth):
 *
 *   results.json   { settings, jobs: n, done, failed, missing: [ids], rows: JobResult[] }
 *   results.csv    one row per finished job (done or failed), the JobResult fields as columns
 *   plots/predictability-vs-std.svg        test r against the neuron's activation std
 *   plots/predictability-vs-sparsity.svg   test r against the neuron's fraction of near-zero activations
 *   plots/cosine-rank.svg                  rank of |cos(head direction, W_out[n])| within the layer (weights analysis)
 *   plots/patching-slope.svg               Δprediction/Δactivation slopes (patching analysis; 1 = perfect self-report)
 */
import { join } from "node:path";
import { writeFileAtomic, writeJsonAtomic } from "../io/atomic.ts";
import { histogram, scatter, renderSvg } from "../report/charts.ts";
import { readJobResult, type JobResult } from "./jobs.ts";
import type { JobSpec, SweepSettings } from "./spec.ts";

export const RESULT_COLUMNS: ReadonlyArray<keyof JobResult> = [
  "id", "layer", "neuron", "head", "freeze", "status", "test_r", "test_r2", "test_spearman", "test_mse", "baseline_mse", "baseline_r2",
  "val_r", "accuracy", "epochs_run", "best_epoch", "stopped_early", "act_mean", "act_std", "act_max", "act_frac_near_zero",
  "weights_cos_w_out", "weights_rank_w_out", "weights_cos_w_in", "weights_rank_w_in", "n_in_layer",
  "patching_slope", "patching_r2", "patching_percentile", "trainer", "seconds", "worker", "finished_at", "error",
];

export interface ResultsTable {
  rows: JobResult[];
  missing: string[];
}

/** The result rows of the sweep's jobs, in job order, and the ids of jobs not finished yet. */
export function collectResults(sweepDir: string, jobs: readonly JobSpec[]): ResultsTable {
  const rows: JobResult[] = [];
  const missing: string[] = [];
  for (const j of jobs) {
    const r = readJobResult(sweepDir, j.id);
    if (r === null) missing.push(j.id);
    else rows.push(r);
  }
  return { rows, missing };
}

function csvCell(v: unknown): string {
  if (v === null || v === undefined) return "";
  const s = typeof v === "number" ? (Number.isFinite(v) ? String(v) : "") : String(v);
  return /[",\n\r]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
}

export function resultsCsv(rows: readonly JobResult[]): string {
  const lines = [RESULT_COLUMNS.join(",")];
  for (const r of rows) lines.push(RESULT_COLUMNS.map((c) => csvCell(r[c])).join(","));
  return lines.join("\n") + "\n";
}

function finiteValues(rows: readonly JobResult[], key: keyof JobResult): number[] {
  return rows.map((r) => r[key]).filter((v): v is number => typeof v === "number" && Number.isFinite(v));
}

/** The summary plots (name → SVG); a plot whose numbers no job has is left out. */
export async function resultsPlots(rows: readonly JobResult[]): Promise<Record<string, string>> {
  const done = rows.filter((r) => r.status === "done");
  const plots: Record<string, string> = {};
  const pts = (x: keyof JobResult): Array<{ x: number; y: number }> =>
    done.filter((r) => typeof r[x] === "number" && r.test_r !== null).map((r) => ({ x: r[x] as number, y: r.test_r! }));
  if (done.length > 0) {
    plots["predictability-vs-std"] = await renderSvg(scatter({
      title: "Predictability vs activation spread", subtitle: `${done.length} jobs, all heads and freezing modes`,
      points: pts("act_std"), xLabel: "neuron activation std (training split)", yLabel: "test Pearson r",
    }));
    plots["predictability-vs-sparsity"] = await renderSvg(scatter({
      title: "Predictability vs sparsity", subtitle: `${done.length} jobs`,
      points: pts("act_frac_near_zero"), xLabel: "fraction of near-zero activations", yLabel: "test Pearson r",
    }));
  }
  const ranks = finiteValues(done, "weights_rank_w_out");
  if (ranks.length > 0) {
    plots["cosine-rank"] = await renderSvg(histogram({
      title: "Rank of the neuron's own W_out among its layer", subtitle: "|cos(head direction, W_out[n])|; rank 1 = the head reads this neuron's write best",
      values: ranks, bins: Math.min(30, Math.max(5, Math.ceil(Math.sqrt(ranks.length)))), xLabel: "rank in layer (1 = highest |cosine|)", yLabel: "jobs",
    }));
  }
  const slopes = finiteValues(done, "patching_slope");
  if (slopes.length > 0) {
    plots["patching-slope"] = await renderSvg(histogram({
      title: "Patching slopes", subtitle: "Δprediction = slope·Δactivation; a perfect self-reporter has slope 1",
      values: slopes, bins: Math.min(30, Math.max(5, Math.ceil(Math.sqrt(slopes.length)))), markValue: 1, markLabel: "ideal", xLabel: "slope", yLabel: "jobs",
    }));
  }
  return plots;
}

/** Writes results.json, results.csv and plots/*.svg (each atomically); returns the files written. */
export async function writeResults(sweepDir: string, settings: SweepSettings, jobs: readonly JobSpec[], opts: { plots?: boolean } = {}): Promise<{ files: string[]; table: ResultsTable }> {
  const table = collectResults(sweepDir, jobs);
  const files: string[] = [];
  const json = join(sweepDir, "results.json");
  writeJsonAtomic(json, {
    settings, jobs: jobs.length, done: table.rows.filter((r) => r.status === "done").length, failed: table.rows.filter((r) => r.status === "failed").length,
    missing: table.missing, rows: table.rows,
  });
  files.push(json);
  const csv = join(sweepDir, "results.csv");
  writeFileAtomic(csv, resultsCsv(table.rows));
  files.push(csv);
  if (opts.plots ?? true) {
    for (const [name, svg] of Object.entries(await resultsPlots(table.rows))) {
      const f = join(sweepDir, "plots", `${name}.svg`);
      writeFileAtomic(f, svg);
      files.push(f);
    }
  }
  return { files, table };
}

/** One line per (head, freezing): jobs done/failed and the median test r. */
export function summaryLines(rows: readonly JobResult[]): string[] {
  const groups = new Map<string, JobResult[]>();
  for (const r of rows) {
    const k = `${r.head} ${r.freeze}`;
    const g = groups.get(k);
    if (g) g.push(r);
    else groups.set(k, [r]);
  }
  const lines: string[] = [];
  for (const [k, g] of groups) {
    const rs = finiteValues(g.filter((r) => r.status === "done"), "test_r").sort((a, b) => a - b);
    const med = rs.length === 0 ? NaN : rs.length % 2 === 1 ? rs[rs.length >> 1]! : (rs[rs.length / 2 - 1]! + rs[rs.length / 2]!) / 2;
    const failed = g.filter((r) => r.status === "failed").length;
    lines.push(`${k.padEnd(26)} ${String(g.length - failed).padStart(5)} done ${String(failed).padStart(4)} failed   median test r ${Number.isFinite(med) ? med.toFixed(4) : "n/a"}`);
  }
  return lines;
}
