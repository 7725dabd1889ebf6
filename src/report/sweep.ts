/**
 * The sweep report: one self-contained HTML page for a sweep folder (`selfreport report --sweep DIR`):
 *
 *   - what was swept (sweep.json) and how many jobs are done, failed or not finished;
 *   - per head and freezing mode: jobs and the median test r;
 *   - the results table, rebuilt from the job folders (as results.json is), sortable by any column
 *     (click a header; a second click reverses), each job linked to its own run report;
 *   - predictability (test r) against the neuron's activation statistics, and the distributions of
 *     the W_out cosine rank and of the patching slope when the sweep ran those analyses
 *     (the plots of src/sweep/results.ts).
 *
 * Each finished job's run report is written as jobs/<id>/report.html when it is missing (a job
 * folder does not change once finished; `selfreport analyze` on a job afterwards: pass
 * --rewrite-job-reports). The page holds one small inline script (the sorting), allowed by its hash
 * in the page's Content-Security-Policy; nothing is fetched at view time.
 */
import { createHash } from "node:crypto";
import { existsSync, statSync } from "node:fs";
import { dirname, join, relative, resolve, sep } from "node:path";
import { SelfreportError } from "../errors.ts";
import { writeFileAtomic } from "../io/atomic.ts";
import { checkOutput } from "../io/outputs.ts";
import { allJobs, readManifest, type SweepManifest } from "../sweep/spec.ts";
import { collectResults, resultsPlots, summaryLines } from "../sweep/results.ts";
import { jobDir, type JobResult } from "../sweep/jobs.ts";
import { escapeHtml, pageHead, prepareSvg, writeReport, REPORT_CSS } from "./html.ts";

export interface SweepReportInputs {
  sweepDir: string;
  manifest: SweepManifest;
  jobs: number;
  rows: JobResult[];
  missing: string[];
  /** Plot name → inlinable SVG (or the reason it is not shown). */
  plots: Array<{ name: string; svg: string | null; problem: string | null }>;
  /** Job id → its report's href, relative to the page. */
  links: Map<string, string>;
  generated: string;
}

/** Reads a sweep folder; throws a SelfreportError when it is none. */
export function readSweep(sweepDir: string): { manifest: SweepManifest; jobs: number; rows: JobResult[]; missing: string[] } {
  if (!existsSync(sweepDir)) throw new SelfreportError(`sweep folder ${sweepDir} does not exist`);
  if (!statSync(sweepDir).isDirectory()) throw new SelfreportError(`--sweep ${sweepDir} is a file; expected a sweep folder (with sweep.json)`);
  const manifest = readManifest(sweepDir);
  if (manifest === null) {
    const hint = existsSync(join(sweepDir, "config.json")) ? `; it is a run directory: \`selfreport report --run ${sweepDir}\`` : "";
    throw new SelfreportError(`${sweepDir} is not a sweep folder: sweep.json is missing${hint}`);
  }
  const jobs = manifest.neurons_by_layer === null ? [] : allJobs(manifest.settings, manifest.neurons_by_layer);
  const { rows, missing } = collectResults(sweepDir, jobs);
  return { manifest, jobs: jobs.length, rows, missing };
}

export interface WriteSweepReportOptions {
  sweepDir: string;
  out: string;
  /** Write every finished job's run report, also those that exist (default: only the missing ones). */
  rewriteJobReports?: boolean;
  /** Write no job reports; link those that exist (default false). */
  noJobReports?: boolean;
  /** Replace an existing sweep report at `out` (only a report: src/io/outputs.ts checkOutput). */
  force?: boolean;
}

/** The page, the job reports it links to, written atomically; returns what the page shows and how many job reports were written. */
export async function writeSweepReport(o: WriteSweepReportOptions): Promise<{ inputs: SweepReportInputs; jobReportsWritten: number }> {
  const { manifest, jobs, rows, missing } = readSweep(o.sweepDir);
  checkOutput(o.out, { kind: "report", inputs: [o.sweepDir], force: o.force === true });
  const links = new Map<string, string>();
  let written = 0;
  const pageDir = dirname(resolve(o.out));
  for (const r of rows) {
    if (r.status !== "done") continue;
    const runDir = jobDir(o.sweepDir, r.id);
    const file = join(runDir, "report.html");
    if (!o.noJobReports && (o.rewriteJobReports || !existsSync(file))) {
      await writeReport({ runDir, out: file, force: o.rewriteJobReports === true });
      written++;
    }
    if (existsSync(file)) links.set(r.id, relative(pageDir, resolve(file)).split(sep).map(encodeURIComponent).join("/"));
  }
  const svgs = await resultsPlots(rows);
  const plots = Object.entries(svgs).map(([name, text]) => {
    const p = prepareSvg(text, `${name}-`);
    return { name, svg: p.svg, problem: p.problem };
  });
  const inputs: SweepReportInputs = { sweepDir: o.sweepDir, manifest, jobs, rows, missing, plots, links, generated: new Date().toISOString() };
  writeFileAtomic(o.out, buildSweepReportHtml(inputs));
  return { inputs, jobReportsWritten: written };
}

// ───────────────────────────── page ─────────────────────────────

type Cell = { text: string; sort: number | string | null; href?: string; title?: string };

function fmt(v: number | null | undefined, digits = 3): string {
  if (v === null || v === undefined) return "";
  if (!Number.isFinite(v)) return String(v);
  const a = Math.abs(v);
  if (Number.isInteger(v)) return String(v);
  if (a !== 0 && (a >= 1e5 || a < 1e-3)) return v.toExponential(2);
  return v.toFixed(digits);
}

const n = (v: number | null | undefined, digits = 3): Cell => ({ text: fmt(v, digits), sort: v === null || v === undefined || !Number.isFinite(v) ? null : v });
const s = (v: string): Cell => ({ text: v, sort: v });

/** The table's columns: header, tooltip, and the cell of a row. */
const COLUMNS: ReadonlyArray<{ head: string; title: string; cell: (r: JobResult, link: string | undefined) => Cell }> = [
  { head: "job", title: "job id; links to the job's run report", cell: (r, link) => ({ text: r.id, sort: r.id, ...(link !== undefined ? { href: link } : {}) }) },
  { head: "layer", title: "target layer", cell: (r) => n(r.layer) },
  { head: "neuron", title: "target neuron (blocks.L.mlp.hook_post[N])", cell: (r) => n(r.neuron) },
  { head: "head", title: "head type", cell: (r) => s(r.head) },
  { head: "freeze", title: "freezing mode", cell: (r) => s(r.freeze) },
  { head: "status", title: "done or failed", cell: (r) => ({ text: r.status, sort: r.status, ...(r.error !== null ? { title: r.error } : {}) }) },
  { head: "test r", title: "Pearson r of prediction and activation, test split", cell: (r) => n(r.test_r) },
  { head: "test R²", title: "R² on the test split", cell: (r) => n(r.test_r2) },
  { head: "baseline R²", title: "R² of always predicting the training mean", cell: (r) => n(r.baseline_r2) },
  { head: "accuracy", title: "bin accuracy (classification and token heads)", cell: (r) => n(r.accuracy) },
  { head: "act std", title: "the neuron's activation std (training split)", cell: (r) => n(r.act_std) },
  { head: "act max", title: "the neuron's largest activation (training split)", cell: (r) => n(r.act_max) },
  { head: "near zero", title: "fraction of near-zero activations (training split)", cell: (r) => n(r.act_frac_near_zero) },
  { head: "cos W_out", title: "cosine of the head's reading direction with W_out[n] (weights analysis)", cell: (r) => n(r.weights_cos_w_out) },
  { head: "rank W_out", title: "rank of W_out[n] among the layer's neurons by |cosine| (1 = best; weights analysis)", cell: (r) => n(r.weights_rank_w_out) },
  { head: "slope", title: "patching slope Δprediction/Δactivation (1 = perfect self-report)", cell: (r) => n(r.patching_slope) },
  { head: "slope R²", title: "R² of the patching fit", cell: (r) => n(r.patching_r2) },
  { head: "epochs", title: "epochs run", cell: (r) => n(r.epochs_run) },
  { head: "seconds", title: "seconds the job took", cell: (r) => n(r.seconds, 1) },
];

function cellHtml(c: Cell): string {
  const sort = c.sort === null ? "" : ` data-sort="${escapeHtml(String(c.sort))}"`;
  const title = c.title !== undefined ? ` title="${escapeHtml(c.title)}"` : "";
  const body = c.href !== undefined ? `<a href="${escapeHtml(c.href)}">${escapeHtml(c.text)}</a>` : escapeHtml(c.text);
  return `<td${sort}${title}>${body}</td>`;
}

function resultsTable(r: SweepReportInputs): string {
  if (r.rows.length === 0) return `<p class="muted">No job has finished yet.</p>`;
  const head = COLUMNS.map((c, i) => `<th data-col="${i}" data-type="${i === 0 || (i >= 3 && i <= 5) ? "text" : "number"}" title="${escapeHtml(c.title)}" aria-sort="none">${escapeHtml(c.head)}</th>`).join("");
  const body = r.rows.map((row) => `<tr class="${row.status}">${COLUMNS.map((c) => cellHtml(c.cell(row, r.links.get(row.id)))).join("")}</tr>`).join("\n");
  return `<table id="results" class="sortable"><thead><tr>${head}</tr></thead><tbody>\n${body}\n</tbody></table>`;
}

/** Sorts #results by a clicked header: numbers numerically, text alphabetically, empty cells last; a second click reverses. */
const SORT_SCRIPT = `(() => {
  const table = document.getElementById("results");
  if (!table) return;
  const heads = Array.from(table.querySelectorAll("thead th"));
  const body = table.tBodies[0];
  heads.forEach((th, col) => th.addEventListener("click", () => {
    const asc = th.getAttribute("aria-sort") !== "ascending";
    heads.forEach((h) => h.setAttribute("aria-sort", "none"));
    th.setAttribute("aria-sort", asc ? "ascending" : "descending");
    const numeric = th.dataset.type === "number";
    const key = (tr) => {
      const v = tr.cells[col].dataset.sort;
      return v === undefined ? null : numeric ? Number(v) : v;
    };
    const rows = Array.from(body.rows);
    rows.sort((a, b) => {
      const x = key(a), y = key(b);
      if (x === null || y === null) return x === y ? 0 : x === null ? 1 : -1;
      const c = numeric ? x - y : String(x).localeCompare(String(y));
      return asc ? c : -c;
    });
    rows.forEach((tr) => body.appendChild(tr));
  }));
})();`;

const SORT_SCRIPT_HASH = `sha256-${createHash("sha256").update(SORT_SCRIPT).digest("base64")}`;

const SWEEP_CSS = `
table.sortable th { cursor: pointer; user-select: none; white-space: nowrap; }
table.sortable th[aria-sort="ascending"]::after { content: " ▲"; } table.sortable th[aria-sort="descending"]::after { content: " ▼"; }
table.sortable td { font-variant-numeric: tabular-nums; white-space: nowrap; } table.sortable { font-size: .85rem; }
tr.failed td { color: var(--no); }
.wide { overflow-x: auto; }
body { max-width: 1400px; }
`;

/** The whole page. Pure: every string from the inputs is escaped; SVGs are inlined as prepared by prepareSvg. */
export function buildSweepReportHtml(r: SweepReportInputs): string {
  const st = r.manifest.settings;
  const done = r.rows.filter((x) => x.status === "done").length;
  const failed = r.rows.length - done;
  const title = `selfreport sweep: ${st.layers.length} layer${st.layers.length === 1 ? "" : "s"}, ${r.jobs} jobs`;
  const settings: Array<[string, string]> = [
    ["model", `${st.model_dir} (weights ${st.weights})`],
    ["layers", st.layers.join(", ")],
    ["neurons", st.neurons],
    ["heads × freezing", `${st.heads.join(", ")} × ${st.freeze.join(", ")}${st.unfreeze_last !== null ? ` (partial: last ${st.unfreeze_last} blocks)` : ""}`],
    ["analyses", st.analyses.length > 0 ? st.analyses.join(", ") : "none"],
    ["examples", `${st.data.n} from ${st.data.corpus}, up to ${st.data.max_len} tokens`],
    ["training", Object.entries(st.training).map(([k, v]) => `${k} ${String(v)}`).join(", ")],
    ["jobs", `${r.jobs}: ${done} done, ${failed} failed, ${r.missing.length} not finished`],
  ];
  const settingsTable = `<table>${settings.map(([k, v]) => `<tr><th>${escapeHtml(k)}</th><td>${escapeHtml(v)}</td></tr>`).join("")}</table>`;
  const groups = summaryLines(r.rows);
  const groupList = groups.length === 0 ? "" : `<pre>${escapeHtml(groups.join("\n"))}</pre>`;
  const figures = r.plots.length === 0
    ? `<p class="muted">No plots: no job has finished.</p>`
    : `<div class="plots">${r.plots.map((p) => `<figure class="plot">${p.svg ?? `<p class="problem">${escapeHtml(p.problem ?? "not shown")}</p>`}<figcaption>${escapeHtml(p.name)}</figcaption></figure>`).join("")}</div>`;
  const absent = [
    ...(r.plots.some((p) => p.name === "cosine-rank") ? [] : ["the W_out cosine-rank distribution (the sweep ran no weights analysis, or no job has its numbers)"]),
    ...(r.plots.some((p) => p.name === "patching-slope") ? [] : ["the patching-slope distribution (the sweep ran no patching analysis, or no job has its numbers)"]),
  ];
  const absentNote = r.plots.length > 0 && absent.length > 0 ? `<p class="muted">Not shown: ${escapeHtml(absent.join("; "))}.</p>` : "";
  const unlinked = r.rows.filter((x) => x.status === "done" && !r.links.has(x.id)).length;
  return `${pageHead(title, REPORT_CSS + SWEEP_CSS, SORT_SCRIPT_HASH)}
<header><h1>${escapeHtml(title)}</h1><p class="muted">Report on ${escapeHtml(resolve(r.sweepDir))}; made ${escapeHtml(r.generated)} by <code>selfreport report --sweep</code>.</p></header>
<section id="settings"><h2>Sweep</h2>${settingsTable}${groupList}</section>
<section id="plots"><h2>Predictability and mechanism across neurons</h2>${figures}${absentNote}</section>
<section id="table"><h2>Results</h2><p class="muted">Click a column header to sort (again to reverse); empty cells sort last. Each job links to its run report${unlinked > 0 ? ` (${unlinked} finished jobs have none)` : ""}; hover a failed job's status for its error.</p><div class="wide">${resultsTable(r)}</div></section>
<script>${SORT_SCRIPT}</script>
</body>
</html>
`;
}
