/**
 * The run report: one self-contained HTML page (inline CSS and SVG, no scripts, nothing fetched at
 * view time) with a run's config, its training curve and test metrics against the mean baseline,
 * and every analysis found in its analyses folder, each with its plots and a plain-language verdict
 * (./verdicts.ts).
 *
 *   collectReport(runDir, analysesDir?)   reads everything the page needs (the only part that reads files)
 *   buildReportHtml(inputs)               the page, as a string (pure)
 *   writeReport({ runDir, analysesDir, out })   both, written atomically
 *   readAnalysis(analysesDir, name)       one analysis folder's summary.json and SVGs (also used by the notebooks)
 *
 * Every string that comes from a file is HTML-escaped. SVGs are inlined as markup after a check
 * that they hold no script, event handler or external reference, and with their element ids
 * prefixed (vega numbers clip paths and gradients from 1 in every chart, so two inlined charts
 * would otherwise share ids and clip each other).
 *
 * Missing analyses are listed as "not run" with the command that runs them; a residual analysis is
 * "not applicable" for a frozen run. A missing or invalid run directory is a SelfreportError.
 */
import { REPORT_MARKER, checkOutput } from "../io/outputs.ts";
import type { RegressionMetrics } from "../selfreport/stats.ts";
import { existsSync, readFileSync, readdirSync, statSync } from "node:fs";
import { join, resolve } from "node:path";
import { SelfreportError } from "../errors.ts";
import { checkAnalysisSummary, requireField } from "../io/schema.ts";
import { writeFileAtomic } from "../io/atomic.ts";
import { readRunConfig, readTrainLog, analysisDir, type RunConfig } from "../selfreport/run.ts";
import { runTarget, targetLabel } from "../selfreport/target.ts";
import type { WeightsSummary } from "../analysis/weights.ts";
import type { PatchingSummary } from "../analysis/patching.ts";
import type { ResidualSummary } from "../analysis/residual.ts";
import { lineChart, renderSvg, type LinePoint } from "./charts.ts";
import {
  weightsVerdict, patchingVerdict, residualVerdict, QUESTIONS, THRESHOLD_TEXT, type Verdict, type VerdictLevel,
} from "./verdicts.ts";

export type AnalysisName = "weights" | "patching" | "residual";
export const ANALYSIS_NAMES: readonly AnalysisName[] = ["weights", "patching", "residual"];

/** What writeAnalysisOutput adds to every summary. */
export interface SummaryEnvelope {
  analysis: AnalysisName;
  run_dir: string;
  run_config: RunConfig;
  plots: string[];
}

export interface AnalysisSummaries {
  weights: WeightsSummary & SummaryEnvelope;
  patching: PatchingSummary & SummaryEnvelope;
  residual: ResidualSummary & SummaryEnvelope;
}

export interface PlotFile {
  /** File name, e.g. "delta_scatter.svg". */
  file: string;
  /** The SVG markup ready to inline, or null with the reason it is not shown. */
  svg: string | null;
  problem: string | null;
}

export type AnalysisRead<K extends AnalysisName> =
  | { status: "ok"; name: K; dir: string; summary: AnalysisSummaries[K]; plots: PlotFile[] }
  | { status: "not run"; name: K; dir: string }
  | { status: "unreadable"; name: K; dir: string; reason: string };

/** One split's metrics in metrics.json: the regression metrics plus bin accuracy and the mean baseline. */
export interface TestMetricsFile extends RegressionMetrics {
  accuracy: number | null;
  baseline: { description: string; mse: number; mae: number; r2: number };
}

export interface MetricsFile {
  test: TestMetricsFile;
  validation: TestMetricsFile | null;
  epochs_run: number | null;
  best_epoch: number | null;
  stopped_early: boolean | null;
  seconds: number | null;
  /** Set when the head was solved in closed form (solver "ridge"): the chosen penalty. */
  ridge_lambda: number | null;
}

export interface ReportInputs {
  runDir: string;
  analysesDir: string;
  config: RunConfig;
  metrics: { status: "ok"; value: MetricsFile } | { status: "missing" } | { status: "unreadable"; reason: string };
  trainingCurve: { svg: string; source: string } | { svg: null; reason: string };
  weights: AnalysisRead<"weights">;
  patching: AnalysisRead<"patching">;
  /** null: not applicable (frozen run). */
  residual: AnalysisRead<"residual"> | null;
  /** ISO time the report was made. */
  generated: string;
}

// ───────────────────────────── escaping and SVG ─────────────────────────────

const ESCAPES: Record<string, string> = { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" };

/** Escapes a string for HTML text and attribute values. */
export function escapeHtml(s: string): string {
  return s.replace(/[&<>"']/g, (c) => ESCAPES[c]!);
}

/** Anything in an SVG that could run code or fetch at view time. */
const UNSAFE_SVG = /<script|<foreignObject|<iframe|<object|<embed|<image|\son[a-z]+\s*=|javascript:|(?:href|src)\s*=\s*["'](?!#)|url\(\s*["']?(?!#)|@import/i;

/**
 * An SVG file's text made ready to inline: XML declaration and doctype removed, refused when it
 * holds anything that runs or fetches, element ids prefixed with `prefix` (and the `url(#…)` and
 * `href="#…"` references to them).
 */
export function prepareSvg(text: string, prefix: string): { svg: string; problem: null } | { svg: null; problem: string } {
  const body = text.replace(/^\uFEFF/, "").replace(/^\s*<\?xml[^>]*\?>/, "").replace(/^\s*<!DOCTYPE[^>]*>/i, "").trim();
  if (!body.startsWith("<svg") || !body.endsWith("</svg>")) return { svg: null, problem: "not an SVG document" };
  const bad = UNSAFE_SVG.exec(body);
  if (bad !== null) return { svg: null, problem: `not inlined: it contains ${JSON.stringify(bad[0].trim())} (scripts, event handlers and external references are refused)` };
  const ids = new Set(Array.from(body.matchAll(/\sid="([^"]+)"/g), (m) => m[1]!));
  if (ids.size === 0) return { svg: body, problem: null };
  const svg = body
    .replace(/(\sid=")([^"]+)"/g, (_m, a: string, id: string) => `${a}${prefix}${id}"`)
    .replace(/url\(#([^)]+)\)/g, (m, id: string) => (ids.has(id) ? `url(#${prefix}${id})` : m))
    .replace(/(href=")#([^"]+)"/g, (m, a: string, id: string) => (ids.has(id) ? `${a}#${prefix}${id}"` : m));
  return { svg, problem: null };
}

/** A value a Jupyter kernel shows through the `Symbol.for("Jupyter.display")` protocol (Deno's kernel does). */
export interface JupyterDisplayable {
  [key: symbol]: () => Record<string, string>;
}

let figureCount = 0;

/**
 * SVG charts for a notebook cell, side by side, as one HTML output: make it the cell's last
 * expression. (Deno's kernel sends the last expression's value with the cell's reply, while
 * `Deno.jupyter.display` messages sent just before the cell ends are sometimes dropped by
 * nbconvert.) Ids are scoped per figure, as in the report, because a notebook page is one document.
 */
export function notebookFigures(svgs: readonly string[]): JupyterDisplayable {
  const parts = svgs.map((svg) => {
    const p = prepareSvg(svg, `fig${++figureCount}-`);
    return p.svg !== null ? `<div style="flex: 0 1 auto; max-width: 100%">${p.svg}</div>` : `<p>${escapeHtml(p.problem)}</p>`;
  });
  const html = `<div style="display: flex; flex-wrap: wrap; gap: 12px; align-items: flex-start">${parts.join("")}</div>`;
  return { [Symbol.for("Jupyter.display")]: () => ({ "text/html": html }) };
}

// ───────────────────────────── reading ─────────────────────────────

type Json = Record<string, unknown>;

function isObject(v: unknown): v is Json {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/** The value at a dotted path, or throws naming the file, the path and what was expected (src/io/schema.ts). */
const need = requireField;

function readJson(path: string): Json {
  let parsed: unknown;
  try {
    parsed = JSON.parse(readFileSync(path, "utf8"));
  } catch (e) {
    throw new SelfreportError(`${path}: not valid JSON (${(e as Error).message})`);
  }
  if (!isObject(parsed)) throw new SelfreportError(`${path}: expected a JSON object`);
  return parsed;
}

/**
 * Throws unless `summary` is analysis `name`'s and has every field the verdicts and sections read
 * (checkAnalysisSummary, src/io/schema.ts); the rest is taken as writeAnalysisOutput wrote it.
 */
function checkSummary<K extends AnalysisName>(name: K, summary: Json, path: string): asserts summary is Json & AnalysisSummaries[K] {
  checkAnalysisSummary(name, summary, path);
}

/**
 * One analysis folder `analysesDir/name`: "not run" when it has no summary.json, "unreadable" when
 * the summary is not valid JSON, is another analysis's or lacks a field the report needs.
 */
export function readAnalysis<K extends AnalysisName>(analysesDir: string, name: K): AnalysisRead<K> {
  const dir = join(analysesDir, name);
  const path = join(dir, "summary.json");
  if (!existsSync(path)) return { status: "not run", name, dir };
  let summary: Json;
  try {
    summary = readJson(path);
    if (summary["mode"] === "weights only") {
      const skipped = Array.isArray(summary["skipped"]) ? (summary["skipped"] as Json[]) : [];
      const cmd = typeof skipped[0]?.["command"] === "string" ? ` Add the examples with: ${skipped[0]["command"] as string}` : "";
      return { status: "unreadable", name, dir, reason: `${path} was computed from the weights alone (the run has no dataset): the verdict needs the data-dependent measures.${cmd}` };
    }
    checkSummary(name, summary, path);
  } catch (e) {
    if (!(e instanceof SelfreportError)) throw e;
    return { status: "unreadable", name, dir, reason: e.message };
  }
  const listed = Array.isArray(summary["plots"]) ? summary["plots"].filter((p): p is string => typeof p === "string") : null;
  const files = listed ?? readdirSync(dir).filter((f) => f.endsWith(".svg")).sort();
  const plots = files.map((file, i): PlotFile => {
    const p = join(dir, file);
    if (file.includes("/") || file.includes("\\") || !file.endsWith(".svg")) return { file, svg: null, problem: "not a plain .svg file name" };
    if (!existsSync(p)) return { file, svg: null, problem: "listed in summary.json but missing" };
    const prepared = prepareSvg(readFileSync(p, "utf8"), `${name}-${i}-`);
    return { file, svg: prepared.svg, problem: prepared.problem };
  });
  return { status: "ok", name, dir, summary, plots };
}

function readMetrics(runDir: string): ReportInputs["metrics"] {
  const path = join(runDir, "metrics.json");
  if (!existsSync(path)) return { status: "missing" };
  try {
    const m = readJson(path);
    const split = (key: string): TestMetricsFile | null => {
      if (key === "validation" && m[key] === undefined) return null;
      for (const f of ["n", "mse", "mae", "pearson_r", "spearman_rho", "r2", "baseline.mse", "baseline.mae", "baseline.r2"]) need(m, `${key}.${f}`, "number", path);
      need(m, `${key}.baseline.description`, "string", path);
      return m[key] as TestMetricsFile;
    };
    const opt = <T>(key: string, type: string): T | null => (typeof m[key] === type ? (m[key] as T) : null);
    return {
      status: "ok",
      value: { test: split("test")!, validation: split("validation"), epochs_run: opt("epochs_run", "number"), best_epoch: opt("best_epoch", "number"), stopped_early: opt("stopped_early", "boolean"), seconds: opt("seconds", "number"),
        ridge_lambda: m["solver"] === "ridge" && isObject(m["ridge"]) && typeof m["ridge"]["lambda"] === "number" ? m["ridge"]["lambda"] : null,
      },
    };
  } catch (e) {
    if (!(e instanceof SelfreportError)) throw e;
    return { status: "unreadable", reason: e.message };
  }
}

/** training_curve.svg when present, else a curve drawn from train_log.jsonl. */
async function readTrainingCurve(runDir: string, cfg: RunConfig): Promise<ReportInputs["trainingCurve"]> {
  const svgPath = join(runDir, "training_curve.svg");
  if (existsSync(svgPath)) {
    const p = prepareSvg(readFileSync(svgPath, "utf8"), "training-");
    return p.svg !== null ? { svg: p.svg, source: "training_curve.svg" } : { svg: null, reason: `training_curve.svg ${p.problem}` };
  }
  const log = readTrainLog(runDir);
  if (log === null) return { svg: null, reason: "the run has neither training_curve.svg nor train_log.jsonl" };
  const points: LinePoint[] = [];
  const bad = log.bad;
  for (const rec of log.records) {
    if (typeof rec["loss"] === "number") points.push({ x: rec.step, y: rec["loss"], series: "train (per step)" });
    if (typeof rec["train_loss_mean"] === "number") points.push({ x: rec.step, y: rec["train_loss_mean"], series: "train (epoch mean)" });
    if (typeof rec["val_loss"] === "number") points.push({ x: rec.step, y: rec["val_loss"], series: "validation (per epoch)" });
  }
  if (points.length === 0) return { svg: null, reason: `train_log.jsonl has no loss records${bad > 0 ? ` (${bad} unreadable lines)` : ""}` };
  const svg = await renderSvg(lineChart({
    title: `Training loss (${cfg.head_type} head, ${cfg.freeze_mode})`, x: "step", y: `${cfg.head_type === "regression" ? "MSE (standardised)" : "cross-entropy"}, log scale`,
    data: points, logY: true, legendBelow: true, ...(bad > 0 ? { subtitle: `${bad} unreadable log lines skipped` } : {}),
  }));
  const p = prepareSvg(svg, "training-");
  return p.svg !== null ? { svg: p.svg, source: "train_log.jsonl" } : { svg: null, reason: p.problem };
}

/**
 * Everything the page shows. Throws a SelfreportError when runDir is not a run directory, or when
 * an analyses folder given explicitly does not exist.
 */
export async function collectReport(runDir: string, analysesDir?: string): Promise<ReportInputs> {
  if (existsSync(runDir) && !statSync(runDir).isDirectory()) throw new SelfreportError(`--run ${runDir} is a file; expected a run directory (with config.json)`);
  const config = readRunConfig(runDir);
  const dir = analysesDir ?? analysisDir(runDir);
  if (analysesDir !== undefined && !(existsSync(analysesDir) && statSync(analysesDir).isDirectory())) {
    throw new SelfreportError(`--analyses ${analysesDir} ${existsSync(analysesDir) ? "is not a folder" : "does not exist"}; expected a folder with weights/, patching/ or residual/ from \`selfreport analyze\``);
  }
  return {
    runDir,
    analysesDir: dir,
    config,
    metrics: readMetrics(runDir),
    trainingCurve: await readTrainingCurve(runDir, config),
    weights: readAnalysis(dir, "weights"),
    patching: readAnalysis(dir, "patching"),
    residual: config.freeze_mode === "frozen" ? null : readAnalysis(dir, "residual"),
    generated: new Date().toISOString(),
  };
}

// ───────────────────────────── page ─────────────────────────────

function shellQuote(s: string): string {
  return /^[\w@%+=:,./-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`;
}

/** The command that runs an analysis into the report's analyses folder. */
export function analysisCommand(name: AnalysisName, runDir: string, analysesDir: string): string {
  return `selfreport analyze ${name} --run ${shellQuote(runDir)} --out ${shellQuote(join(analysesDir, name))}`;
}

function num(v: number | null | undefined, digits = 4): string {
  if (v === null || v === undefined) return "n/a";
  if (!Number.isFinite(v)) return String(v);
  const a = Math.abs(v);
  if (a !== 0 && (a >= 1e5 || a < 1e-3)) return v.toExponential(2);
  return v.toFixed(digits);
}

function table(head: readonly string[] | null, rows: ReadonlyArray<readonly string[]>): string {
  const th = head === null ? "" : `<thead><tr>${head.map((h) => `<th>${escapeHtml(h)}</th>`).join("")}</tr></thead>`;
  return `<table>${th}<tbody>${rows.map((r) => `<tr>${r.map((c, i) => (i === 0 && head === null ? `<th>${escapeHtml(c)}</th>` : `<td>${escapeHtml(c)}</td>`)).join("")}</tr>`).join("")}</tbody></table>`;
}

const LEVEL_CLASS: Record<VerdictLevel, string> = { yes: "yes", partly: "partly", no: "no", "not assessable": "na" };

function verdictBox(v: Verdict): string {
  return `<div class="verdict ${LEVEL_CLASS[v.level]}"><p class="answer"><span class="badge">${escapeHtml(v.level)}</span> ${escapeHtml(v.headline)}</p>` +
    (v.evidence.length > 0 ? `<ul>${v.evidence.map((e) => `<li>${escapeHtml(e)}</li>`).join("")}</ul>` : "") + "</div>";
}

function figures(plots: readonly PlotFile[]): string {
  if (plots.length === 0) return `<p class="muted">No plots.</p>`;
  return `<div class="plots">${plots.map((p) => `<figure class="plot">${p.svg ?? `<p class="problem">${escapeHtml(p.problem ?? "not shown")}</p>`}<figcaption>${escapeHtml(p.file)}</figcaption></figure>`).join("")}</div>`;
}

function notesList(notes: unknown): string {
  const list = Array.isArray(notes) ? notes.filter((n): n is string => typeof n === "string") : [];
  return list.length === 0 ? "" : `<details><summary>Notes from the analysis (${list.length})</summary><ul>${list.map((n) => `<li>${escapeHtml(n)}</li>`).join("")}</ul></details>`;
}

function provenance(r: ReportInputs, read: { summary: SummaryEnvelope; dir: string }): string {
  const parts = [`From ${escapeHtml(join(read.dir, "summary.json"))}.`];
  if (typeof read.summary.run_dir === "string" && resolve(read.summary.run_dir) !== resolve(r.runDir)) {
    parts.push(`<strong class="warn">This summary says it analysed ${escapeHtml(read.summary.run_dir)}, not ${escapeHtml(resolve(r.runDir))}.</strong>`);
  }
  return `<p class="muted">${parts.join(" ")}</p>`;
}

function notRun(r: ReportInputs, name: AnalysisName, read: AnalysisRead<AnalysisName>): string {
  const cmd = analysisCommand(name, r.runDir, r.analysesDir);
  if (read.status === "unreadable") {
    return `<div class="verdict na"><p class="answer"><span class="badge">unreadable</span> ${escapeHtml(read.reason)}</p><p>Run it again: <code>${escapeHtml(cmd)}</code></p></div>`;
  }
  return `<div class="verdict na notrun"><p class="answer"><span class="badge">not run</span> No ${escapeHtml(name)} analysis in ${escapeHtml(read.dir)}.</p><p>Run it with: <code>${escapeHtml(cmd)}</code></p></div>`;
}

function weightsSection(r: ReportInputs): string {
  const read = r.weights;
  let body: string;
  if (read.status !== "ok") body = notRun(r, "weights", read);
  else {
    const s = read.summary;
    const dw = s.direct_write;
    const rows: string[][] = [
      ["head", `${s.head.type}${s.head.hidden_dim ? ` (hidden ${s.head.hidden_dim})` : ""}: ${s.head.method}`],
      ["random-direction null", `cosine std 1/√${s.target.d_model} = ${num(1 / Math.sqrt(s.target.d_model))}`],
      ["examples used", `${s.examples.n_used} of ${s.examples.n_dataset} (${s.examples.features})`],
      ["r(prediction, activation)", num(s.examples.prediction_activation_r)],
      ["direct-write variance share", dw.share === null ? `n/a (${dw.note})` : num(dw.share)],
      ...(s.pattern.random_filter_null === undefined ? [] : [[
        "activation pattern (what the prediction co-varies with)",
        `cosine ${num(s.pattern.cosine_with_target_pattern)} with the head-free target pattern Cov(x, act)/Var(act); random filters: ${num(s.pattern.random_filter_null.target_pattern.mean)} ± ${num(s.pattern.random_filter_null.target_pattern.std)} (n ${s.pattern.random_filter_null.n}). Not evidence of reading: any predictive head has a pattern close to the target pattern.`,
      ]]),
      ...(s.w_in == null || s.w_in.readout_correlation === undefined ? [] : [[
        "W_in readout correlation",
        `${num(s.w_in.readout_correlation)}: ${s.w_in.readout_note}. ${s.w_in.spaces}.`,
      ]]),
    ];
    body = verdictBox(weightsVerdict(s, r.patching.status === "ok" ? r.patching.summary : null)) + table(null, rows) + notesList(s.notes) + provenance(r, read) + figures(read.plots);
  }
  return section("weights", QUESTIONS.weights, "analysis weights: the head's reading direction against the neuron's W_in and W_out vectors", body);
}

function patchingSection(r: ReportInputs): string {
  const read = r.patching;
  let body: string;
  if (read.status !== "ok") body = notRun(r, "patching", read);
  else {
    const s = read.summary;
    const f = s.fit;
    const d = s.direct;
    const ci = (v: [number, number] | null | undefined): string => (v == null ? "n/a" : `[${num(v[0])}, ${num(v[1])}]`);
    const rows: string[][] = [
      ["inputs × settings", `${s.inputs.n_used} × ${s.settings.length}`],
      ["fit Δpred = slope·Δact + b", f === null ? "no fit" : `slope ${num(f.slope)}, R² ${num(f.r2)}, t CI ${ci(f.slope_ci95)}`],
      ["bootstrap CI (over inputs)", ci(s.fit_bootstrap.slope_ci95)],
      ["direct (W_out path) / indirect slope", `${num(d.direct_slope)} / ${num(d.indirect_slope)}`],
      ["controls", s.controls.k === 0 ? "none" : `${s.controls.n_defined} neurons, target |slope| percentile ${num(s.controls.percentile_abs, 1)}%, z ${num(s.controls.z, 2)}`],
    ];
    body = verdictBox(patchingVerdict(s)) + table(null, rows) + notesList(s.notes) + provenance(r, read) + figures(read.plots);
  }
  return section("patching", QUESTIONS.patching, "analysis patching: set, scale and ablate the neuron; fit the change in prediction against the change in activation", body);
}

function residualSection(r: ReportInputs): string {
  const read = r.residual;
  let body: string;
  if (read === null) {
    body = `<div class="verdict na"><p class="answer"><span class="badge">not applicable</span> This is a frozen run: only the head trained, the model did not change, so there is no fine-tuning to analyse.</p></div>`;
  } else if (read.status !== "ok") body = notRun(r, "residual", read);
  else {
    const s = read.summary;
    const p = s.predictions;
    const rows: string[][] = [
      ["inputs", String(s.inputs.n_used)],
      ["r(prediction, target): base → fine-tuned features", `${num(p.base.r_with_target)} → ${num(p.finetuned.r_with_target)}`],
      ["first-order read-out R²", num(s.readout.linearisation_r2)],
      ["neuron before vs after: r", num(s.neuron.r)],
      ...(p.split == null ? [] : [[
        "change in prediction: mean shift / tracking the neuron / rest",
        `${num(100 * p.split.share_mean_shift, 1)}% / ${num(100 * p.split.share_coupled, 1)}% / ${num(100 * p.split.share_rest, 1)}% of its mean square (mean shift ${num(p.split.mean_shift, 3)}: the fixed head's re-calibration, not a reading of the neuron)`,
      ]]),
    ];
    const layerRows = s.layers.map((l) => {
      const name = l.layer === "embed" ? "embed" : `L${l.layer}`;
      const k = l.coupled_change_cosines;
      if (k == null) return [name, num(l.relative_change, 3), "unchanged", "", ""];
      return [name, num(l.relative_change, 3), num(l.share_of_coupled_change ?? null, 3), num(k.W_out, 3), num(k.head, 3)];
    });
    body = verdictBox(residualVerdict(s)) + table(null, rows) +
      table(["layer", "relative change", "share of the change that tracks the neuron", "cos(β, W_out)", "cos(β, head)"], layerRows) +
      notesList(s.notes) + provenance(r, read) + figures(read.plots);
  }
  return section("residual", QUESTIONS.residual, "analysis residual: the fine-tuned model's residual stream against the base model's", body);
}

function section(id: string, title: string, sub: string, body: string): string {
  return `<section id="${id}"><h2>${escapeHtml(title)}</h2><p class="sub">${escapeHtml(sub)}</p>${body}</section>`;
}

function configSection(r: ReportInputs): string {
  const c = r.config;
  const hook = targetLabel(runTarget(c));
  const ds = c.dataset;
  const column = ds?.target_column != null ? `, targets: column ${ds.target_column.column} of ${ds.target_column.path}` : "";
  const hc = c.head_config;
  const rows: string[][] = [
    ["target", `layer ${c.target_layer}, neuron ${c.target_neuron} (${hook})`],
    ["head", `${c.head_type}${hc.hidden_dim ? `, hidden layer ${hc.hidden_dim} (${hc.activation ?? ""})` : ""}, reads resid_post of layer ${c.feature_layer}`],
    ["freezing", c.freeze_mode === "partial" ? `partial (last ${c.unfreeze_last ?? "?"} blocks trained)` : c.freeze_mode],
    ["base model", `${c.base_model_name} (${c.base_model_dir}), weights ${c.weights}, d_model ${c.d_model}`],
    ["dataset", ds === undefined || ds.path === "" ? "none recorded" : `${ds.path} (${ds.n} examples${column})`],
    ["target activation", `mean ${num(c.activation_mean)}, std ${num(c.activation_std)}`],
    ["training", Object.entries(c.training ?? {}).map(([k, v]) => `${k} ${String(v)}`).join(", ")],
    ["run directory", resolve(r.runDir)],
  ];
  if (c.imported) rows.push(["imported", `${c.imported.from}${c.imported.notes.length > 0 ? `: ${c.imported.notes.join("; ")}` : ""}`]);
  return `<section id="config"><h2>Run</h2>${table(null, rows)}</section>`;
}

function trainingSection(r: ReportInputs): string {
  const curve = r.trainingCurve.svg !== null
    ? `<figure class="plot">${r.trainingCurve.svg}<figcaption>${escapeHtml(r.trainingCurve.source)}</figcaption></figure>`
    : `<p class="muted">No training curve: ${escapeHtml(r.trainingCurve.reason)}.</p>`;
  let metrics: string;
  if (r.metrics.status === "missing") metrics = `<p class="muted">No metrics.json in the run directory (runs written by <code>selfreport train</code> have one).</p>`;
  else if (r.metrics.status === "unreadable") metrics = `<p class="problem">${escapeHtml(r.metrics.reason)}</p>`;
  else {
    const m = r.metrics.value;
    const t = m.test;
    const b = t.baseline;
    const rows = [
      ["MSE", num(t.mse), num(b.mse)],
      ["MAE", num(t.mae), num(b.mae)],
      ["R²", num(t.r2), num(b.r2)],
      ["Pearson r", num(t.pearson_r), "n/a (constant)"],
      ["Spearman ρ", num(t.spearman_rho), "n/a (constant)"],
      ...(t.accuracy !== null && t.accuracy !== undefined ? [["bin accuracy", `${(100 * t.accuracy).toFixed(1)}%`, ""]] : []),
    ];
    const ratio = b.mse > 0 ? `The head's test MSE is ${(100 * t.mse / b.mse).toFixed(1)}% of the baseline's.` : "";
    const epochs = m.ridge_lambda !== null
      ? ` Solved in closed form (ridge regression, penalty λ = ${m.ridge_lambda.toExponential(3)} chosen on the validation split)${m.seconds === null ? "" : ` in ${m.seconds.toFixed(2)} s`}.`
      : m.epochs_run === null ? "" : ` Trained ${m.epochs_run} epochs (best ${m.best_epoch ?? "?"}${m.stopped_early ? ", stopped early" : ""})${m.seconds === null ? "" : ` in ${m.seconds.toFixed(1)} s`}.`;
    metrics = `<p>Test split, ${t.n} examples; baseline: ${escapeHtml(b.description)}. ${escapeHtml(ratio)}${escapeHtml(epochs)}</p>` +
      table(["metric", "head", "mean baseline"], rows);
  }
  return `<section id="training"><h2>Training</h2>${curve}${metrics}</section>`;
}

function overview(r: ReportInputs): string {
  const row = (name: AnalysisName, question: string, read: AnalysisRead<AnalysisName> | null, verdict: (() => Verdict) | null): string => {
    let answer: string;
    if (read === null) answer = `<span class="badge">not applicable</span> frozen run`;
    else if (verdict === null) answer = `<span class="badge">${escapeHtml(read.status)}</span>`;
    else {
      const v = verdict();
      answer = `<span class="badge">${escapeHtml(v.level)}</span> ${escapeHtml(v.headline)}`;
    }
    const level = read === null || verdict === null ? "na" : LEVEL_CLASS[verdict().level];
    return `<tr class="${level}"><td><a href="#${name}">${escapeHtml(question)}</a></td><td>${answer}</td></tr>`;
  };
  const w = r.weights;
  const p = r.patching;
  const res = r.residual;
  const rows = [
    row("weights", QUESTIONS.weights, w, w.status === "ok" ? () => weightsVerdict(w.summary, p.status === "ok" ? p.summary : null) : null),
    row("patching", QUESTIONS.patching, p, p.status === "ok" ? () => patchingVerdict(p.summary) : null),
    row("residual", QUESTIONS.residual, res, res !== null && res.status === "ok" ? () => residualVerdict(res.summary) : null),
  ];
  return `<section id="overview"><h2>Answers</h2><table class="answers"><thead><tr><th>question</th><th>answer</th></tr></thead><tbody>${rows.join("")}</tbody></table>` +
    `<details open><summary>How the verdicts are decided</summary><ul class="thresholds">${THRESHOLD_TEXT.map((t) => `<li>${escapeHtml(t)}</li>`).join("")}</ul></details></section>`;
}

/** The stylesheet of the run report (the sweep report adds to it). */
export const REPORT_CSS = `
:root { --fg: #222; --muted: #666; --line: #ddd; --yes: #2e7d32; --partly: #b26a00; --no: #c62828; --na: #607d8b; }
* { box-sizing: border-box; }
body { font: 15px/1.5 Helvetica, Arial, sans-serif; color: var(--fg); margin: 0 auto; max-width: 1100px; padding: 1.5rem; }
h1 { font-size: 1.6rem; margin: 0 0 .2rem; } h2 { font-size: 1.25rem; border-bottom: 1px solid var(--line); padding-bottom: .2rem; margin-top: 2rem; }
.sub, .muted { color: var(--muted); } .sub { margin-top: -.5rem; font-size: .9rem; }
table { border-collapse: collapse; margin: .6rem 0; width: 100%; } th, td { text-align: left; vertical-align: top; padding: .25rem .6rem; border-bottom: 1px solid var(--line); }
thead th { border-bottom: 2px solid #bbb; } tbody th { width: 16rem; font-weight: 600; }
code { background: #f4f4f4; padding: .1rem .3rem; border-radius: 3px; word-break: break-all; }
.verdict { border-left: 5px solid var(--na); background: #fafafa; padding: .4rem .9rem; margin: .8rem 0; }
.verdict.yes { border-color: var(--yes); } .verdict.partly { border-color: var(--partly); } .verdict.no { border-color: var(--no); }
.answer { font-size: 1.05rem; margin: .3rem 0; }
.badge { display: inline-block; color: white; background: var(--na); border-radius: 3px; padding: 0 .45rem; font-size: .85rem; text-transform: uppercase; letter-spacing: .03em; }
.yes .badge { background: var(--yes); } .partly .badge { background: var(--partly); } .no .badge { background: var(--no); }
.plots { display: flex; flex-wrap: wrap; gap: 1rem; }
figure.plot { margin: .5rem 0; max-width: 100%; overflow-x: auto; } .plots figure.plot { flex: 0 1 auto; }
figure.plot svg { display: block; max-width: none; height: auto; } /* natural size: never scaled below its fonts */
table.answers td:first-child { width: 16rem; font-weight: 600; } table.answers a { color: inherit; }
figcaption { color: var(--muted); font-size: .8rem; }
.problem, .warn { color: var(--no); }
details { margin: .6rem 0; } summary { cursor: pointer; color: #444; }
`;

/**
 * A report page's start, up to and including <body>: the generator marker, a Content-Security-Policy
 * that allows only inline styles, data: images and (when given) the one inline script of that hash.
 */
export function pageHead(title: string, css: string, scriptHash?: string): string {
  const script = scriptHash !== undefined ? `; script-src '${scriptHash}'` : "";
  return `<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
${REPORT_MARKER}
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'; img-src data:${script}">
<title>${escapeHtml(title)}</title>
<style>${css}</style>
</head>
<body>`;
}

/** The whole page. Pure: every string from the inputs is escaped; SVGs are inlined as prepared by prepareSvg. */
export function buildReportHtml(r: ReportInputs): string {
  const c = r.config;
  const title = `selfreport: layer ${c.target_layer} neuron ${c.target_neuron} (${c.head_type} head, ${c.freeze_mode})`;
  return `${pageHead(title, REPORT_CSS)}
<header><h1>${escapeHtml(title)}</h1><p class="muted">Report on ${escapeHtml(resolve(r.runDir))}, analyses from ${escapeHtml(resolve(r.analysesDir))}; made ${escapeHtml(r.generated)} by <code>selfreport report</code>.</p></header>
${overview(r)}
${configSection(r)}
${trainingSection(r)}
${weightsSection(r)}
${patchingSection(r)}
${residualSection(r)}
</body>
</html>
`;
}

export interface WriteReportOptions {
  runDir: string;
  /** Default: runDir/analysis (analysisDir in src/selfreport/run.ts). */
  analysesDir?: string;
  out: string;
  /** Replace an existing report at `out`. */
  force?: boolean;
  /** Called just before the page is written; throws to write nothing (the CLI: a signal arrived). */
  beforeWriting?: () => void;
}

/** Collects, builds and writes the page atomically; returns what it showed. */
export async function writeReport(o: WriteReportOptions): Promise<ReportInputs> {
  checkOutput(o.out, { kind: "report", inputs: [o.runDir, o.analysesDir], force: o.force === true });
  const inputs = await collectReport(o.runDir, o.analysesDir);
  const html = buildReportHtml(inputs);
  o.beforeWriting?.();
  writeFileAtomic(o.out, html);
  return inputs;
}
