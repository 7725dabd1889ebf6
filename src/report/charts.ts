/**
 * Charts as Vega-Lite specs, rendered to SVG strings in Node without a browser or network.
 *
 * Builders are plain functions returning a spec (so a caller can tweak it or embed it in a
 * notebook); `renderSvg` compiles it with vega-lite and renders it with a headless vega View.
 * All data is inline: the vega loader refuses every URL and file, and a spec whose data names a
 * `url` is refused before rendering. Each call builds its own loader, logger and View; nothing
 * is cached between calls.
 */
// vega and vega-lite load on the first chart (they cost every other command ~0.5 s of start-up)
import type { View, Loader, LoggerInterface } from "vega";
import type { Config, TopLevelSpec } from "vega-lite";
import { SelfreportError } from "../errors.ts";

export type VegaLiteSpec = TopLevelSpec;
/** One layer of a layered spec. */
type Layer = Extract<TopLevelSpec, { layer: unknown }>["layer"][number];

/** The common look: sizes, fonts, colours, grid. */
const WIDTH = 480;
const HEIGHT = 280;
const FONT = "Helvetica, Arial, sans-serif";
const ACCENT = "#d62728";
const MAIN = "#4c78a8";

const SCHEMA = "https://vega.github.io/schema/vega-lite/v6.json";

const CONFIG: Config = {
  background: "white",
  padding: 8,
  font: FONT,
  title: { fontSize: 14, fontWeight: "bold", anchor: "start", subtitleFontSize: 11, subtitleColor: "#555" },
  axis: { labelFontSize: 11, titleFontSize: 12, titleFontWeight: "normal", gridColor: "#e6e6e6", domainColor: "#888", tickColor: "#888" },
  legend: { labelFontSize: 11, titleFontSize: 12, titleFontWeight: "normal" },
  view: { stroke: "#ccc" },
  range: { category: ["#4c78a8", "#f58518", "#54a24b", "#b279a2", "#e45756", "#72b7b2", "#eeca3b", "#9d755d"] },
};

/** A chart title with an optional subtitle line. */
function titleOf(text: string, subtitle?: string): { text: string; subtitle?: string } {
  return subtitle === undefined || subtitle === "" ? { text } : { text, subtitle };
}

/** Finite numbers only; NaN/±Infinity would break scales. */
function finite(v: number): boolean {
  return typeof v === "number" && Number.isFinite(v);
}

// ───────────────────────────── rendering ─────────────────────────────

/**
 * Every external data source of a spec: an object under a `data` key (vega-lite `data`, lookup
 * `from.data`; vega's `data` array) that has a `url`. Inline `values` are not walked.
 */
function findDataUrls(node: unknown, path: string, underData: boolean, out: { url: string; at: string }[]): void {
  if (Array.isArray(node)) {
    node.forEach((v, i) => findDataUrls(v, `${path}[${i}]`, underData, out));
    return;
  }
  if (typeof node !== "object" || node === null) return;
  for (const [k, v] of Object.entries(node)) {
    if (k === "values") continue;
    if (underData && k === "url") out.push({ url: typeof v === "string" ? v : JSON.stringify(v), at: `${path}.url` });
    else findDataUrls(v, `${path}.${k}`, k === "data", out);
  }
}

function refuse(uri: string, at?: string): never {
  throw new SelfreportError(`chart refused to load "${uri}"${at === undefined ? "" : ` (${at})`}: charts take inline data only (no network, no files)`);
}

/**
 * A vega loader that refuses everything, and notes what it refused: vega swallows some loader
 * errors (an image mark's URL), so renderSvg checks the list after rendering.
 */
function refusingLoader(refused: string[]): Loader {
  const no = async (uri: string): Promise<never> => {
    refused.push(uri);
    return refuse(uri);
  };
  return { load: no, sanitize: no, http: no, file: no };
}

/** A logger that keeps errors (to throw them) and drops warnings and info. */
type Vega = typeof import("vega");
let vegaLibs: Promise<[Vega, typeof import("vega-lite")]> | null = null;

function collectingLogger(vega: Vega, errors: string[]): LoggerInterface {
  return vega.logger(vega.Error, "error", (_method, _level, args) => {
    errors.push(args.map((a) => (a instanceof Error ? a.message : String(a))).join(" "));
  });
}

/**
 * Compiles a Vega-Lite spec and renders it to an SVG string (starts with `<svg`).
 * Throws a SelfreportError if the spec asks for external data or does not compile/render.
 */
export async function renderSvg(spec: VegaLiteSpec): Promise<string> {
  const urls: { url: string; at: string }[] = [];
  findDataUrls(spec, "spec", false, urls);
  if (urls.length > 0) refuse(urls[0].url, urls[0].at);
  const errors: string[] = [];
  const [vega, vl] = await (vegaLibs ??= Promise.all([import("vega"), import("vega-lite")]));
  let vgSpec: ReturnType<typeof vl.compile>["spec"];
  try {
    vgSpec = vl.compile(spec, { logger: collectingLogger(vega, errors) }).spec;
  } catch (e) {
    throw new SelfreportError(`chart spec does not compile: ${(e as Error).message}`);
  }
  findDataUrls(vgSpec.data ?? [], "vega.data", true, urls);
  if (urls.length > 0) refuse(urls[0].url, urls[0].at);
  const refused: string[] = [];
  let view: View | undefined;
  try {
    view = new vega.View(vega.parse(vgSpec), { renderer: "none", loader: refusingLoader(refused), logger: collectingLogger(vega, errors) });
    const svg = await view.toSVG();
    if (refused.length > 0) refuse(refused[0]);
    if (errors.length > 0) throw new SelfreportError(`chart did not render: ${errors[0]}`);
    return svg;
  } catch (e) {
    if (e instanceof SelfreportError) throw e;
    throw new SelfreportError(`chart did not render: ${(e as Error).message}`);
  } finally {
    view?.finalize();
  }
}

// ───────────────────────────── builders ─────────────────────────────

export interface LinePoint {
  x: number;
  y: number;
  /** Which line the point belongs to (e.g. "train", "held-out"); omit for a single line. */
  series?: string;
}

export interface LineChartOptions {
  title: string;
  /** x-axis title, e.g. "step". */
  x: string;
  /** y-axis title, e.g. "cross-entropy (nats/token)". */
  y: string;
  /** Legend title when points carry a `series` (e.g. "split"); default none shown. */
  series?: string;
  data: readonly LinePoint[];
  /** Logarithmic y axis; points with y ≤ 0 are left out (the subtitle says how many). */
  logY?: boolean;
  /** The legend under the plot instead of beside it (long series names never widen the chart). */
  legendBelow?: boolean;
  subtitle?: string;
}

/** Training curves: one line per series, x ascending. Non-finite points are left out. */
export function lineChart(o: LineChartOptions): VegaLiteSpec {
  const logY = o.logY ?? false;
  const kept = o.data.filter((p) => finite(p.x) && finite(p.y) && (!logY || p.y > 0));
  const dropped = o.data.length - kept.length;
  const hasSeries = kept.some((p) => p.series !== undefined);
  const values = kept.map((p) => ({ x: p.x, y: p.y, series: p.series ?? "" }));
  const note = dropped > 0 ? `${dropped} point${dropped === 1 ? "" : "s"} ${logY ? "not finite or ≤ 0" : "not finite"}, not shown` : undefined;
  const subtitle = [o.subtitle, note].filter((s) => s !== undefined && s !== "").join("; ");
  return {
    $schema: SCHEMA,
    title: titleOf(o.title, subtitle),
    width: WIDTH,
    height: HEIGHT,
    config: CONFIG,
    data: { values },
    mark: { type: "line", strokeWidth: 1.5, point: values.length <= 40 ? { size: 20 } : false },
    encoding: {
      x: { field: "x", type: "quantitative", title: o.x, scale: { zero: false } },
      y: { field: "y", type: "quantitative", title: o.y, scale: logY ? { type: "log" } : { zero: false } },
      ...(hasSeries
        ? { color: { field: "series", type: "nominal", title: o.series ?? null, sort: null, ...(o.legendBelow ? { legend: { orient: "bottom", direction: "horizontal", labelLimit: 0 } } : {}) } }
        : { color: { value: MAIN } }),
      order: { field: "x", type: "quantitative" },
    },
  };
}

export interface HistogramOptions {
  title: string;
  values: readonly number[];
  /** Number of equal-width bins between the smallest and largest value (and markValue). */
  bins: number;
  /** Draws a vertical rule at this value (e.g. the target neuron's cosine). */
  markValue?: number;
  /** Label next to the rule, e.g. "target neuron". */
  markLabel?: string;
  xLabel?: string;
  yLabel?: string;
  subtitle?: string;
  /**
   * Bin over the [q, 1 − q] quantiles of the values instead of their full range; values beyond are
   * counted in the edge bins and the subtitle says how many (for heavy-tailed data, e.g. q = 0.01).
   */
  clipQuantile?: number;
}

export interface Bin {
  x0: number;
  x1: number;
  count: number;
}

/** Equal-width bins over [min, max] of the values (and `include`); the last bin is closed. Non-finite values are skipped. */
export function binValues(values: readonly number[], bins: number, include?: number): Bin[] {
  if (!Number.isInteger(bins) || bins < 1) throw new SelfreportError(`histogram bins must be a positive integer, got ${bins}`);
  let lo = Infinity;
  let hi = -Infinity;
  for (const v of values) {
    if (!finite(v)) continue;
    if (v < lo) lo = v;
    if (v > hi) hi = v;
  }
  if (include !== undefined && finite(include)) {
    lo = Math.min(lo, include);
    hi = Math.max(hi, include);
  }
  if (lo === Infinity) [lo, hi] = [0, 1];
  if (lo === hi) [lo, hi] = [lo - 0.5, hi + 0.5];
  const width = (hi - lo) / bins;
  const out: Bin[] = Array.from({ length: bins }, (_, i) => ({ x0: lo + i * width, x1: i === bins - 1 ? hi : lo + (i + 1) * width, count: 0 }));
  for (const v of values) {
    if (!finite(v)) continue;
    out[Math.min(bins - 1, Math.floor((v - lo) / width))].count++;
  }
  return out;
}

/** The values with those beyond the [q, 1 − q] quantiles pulled in to them, and how many were. */
export function clipToQuantiles(values: readonly number[], q: number): { values: number[]; clipped: number; lo: number; hi: number } {
  const kept = values.filter(finite);
  if (kept.length === 0 || !(q > 0)) return { values: kept, clipped: 0, lo: NaN, hi: NaN };
  const sorted = [...kept].sort((a, b) => a - b);
  const at = (p: number): number => {
    const i = p * (sorted.length - 1);
    const f = Math.floor(i);
    return f + 1 < sorted.length ? sorted[f]! + (i - f) * (sorted[f + 1]! - sorted[f]!) : sorted[f]!;
  };
  const lo = at(q);
  const hi = at(1 - q);
  let clipped = 0;
  const out = kept.map((v) => {
    if (v < lo || v > hi) clipped++;
    return Math.min(hi, Math.max(lo, v));
  });
  return { values: out, clipped, lo, hi };
}

/** A distribution as `bins` bars, with an optional labelled rule at `markValue`. */
export function histogram(o: HistogramOptions): VegaLiteSpec {
  const clip = o.clipQuantile === undefined ? null : clipToQuantiles(o.values, o.clipQuantile);
  const bins = binValues(clip === null ? o.values : clip.values, o.bins, o.markValue);
  const n = bins.reduce((s, b) => s + b.count, 0);
  const clipNote = clip === null || clip.clipped === 0 ? undefined : `${clip.clipped} value${clip.clipped === 1 ? "" : "s"} beyond [${fmt(clip.lo)}, ${fmt(clip.hi)}] counted in the edge bins`;
  const subtitle = [o.subtitle, `${n.toLocaleString("en-US")} values, ${o.bins} bins`, clipNote].filter((s) => s !== undefined && s !== "").join("; ");
  const xTitle = o.xLabel ?? "value";
  const hasMark = o.markValue !== undefined && finite(o.markValue);
  const hasLabel = hasMark && o.markLabel !== undefined && o.markLabel !== "";
  const mark = [{ x0: o.markValue ?? 0, label: o.markLabel ?? "" }];
  const layer: Layer[] = [
    {
      data: { values: bins },
      mark: { type: "rect", color: MAIN, stroke: "white", strokeWidth: 0.5 },
      encoding: {
        x: { field: "x0", type: "quantitative", title: xTitle, scale: { zero: false, nice: false } },
        x2: { field: "x1" },
        y: { field: "count", type: "quantitative", title: o.yLabel ?? "count" },
        y2: { datum: 0 },
      },
    },
  ];
  if (hasMark) {
    layer.push({
      data: { values: mark },
      mark: { type: "rule", color: ACCENT, strokeWidth: 2 },
      encoding: { x: { field: "x0", type: "quantitative" } },
    });
  }
  if (hasLabel) {
    // the label sits beside the rule on the side with more room, so it never widens the chart
    const lo = bins[0]!.x0;
    const hi = bins[bins.length - 1]!.x1;
    const right = o.markValue! > (lo + hi) / 2;
    layer.push({
      data: { values: mark },
      mark: { type: "text", color: ACCENT, align: right ? "right" : "left", baseline: "top", dx: right ? -4 : 4, dy: 4, fontSize: 11, y: 0 },
      encoding: { x: { field: "x0", type: "quantitative" }, text: { field: "label" } },
    });
  }
  return { $schema: SCHEMA, title: titleOf(o.title, subtitle), width: WIDTH, height: HEIGHT, config: CONFIG, layer };
}

export interface ScatterPoint {
  x: number;
  y: number;
  /** Written next to the point. */
  label?: string;
}

export interface ScatterOptions {
  title: string;
  points: readonly ScatterPoint[];
  /** Draws y = slope·x + intercept across the x range of the points. */
  fitLine?: { slope: number; intercept: number };
  xLabel: string;
  yLabel: string;
  subtitle?: string;
}

/** Points (optionally labelled) with an optional fitted line across their x range. Non-finite points are left out. */
export function scatter(o: ScatterOptions): VegaLiteSpec {
  const pts = o.points.filter((p) => finite(p.x) && finite(p.y)).map((p) => ({ x: p.x, y: p.y, label: p.label ?? "" }));
  const labelled = pts.filter((p) => p.label !== "");
  const fit = o.fitLine;
  let line: { x: number; y: number }[] = [];
  if (fit !== undefined && finite(fit.slope) && finite(fit.intercept) && pts.length > 0) {
    const xs = pts.map((p) => p.x);
    const lo = Math.min(...xs);
    const hi = Math.max(...xs);
    line = [lo, hi].map((x) => ({ x, y: fit.slope * x + fit.intercept }));
  }
  const fitNote = line.length > 0 && fit !== undefined ? `fit: y = ${fmt(fit.slope)}·x ${fit.intercept < 0 ? "−" : "+"} ${fmt(Math.abs(fit.intercept))}` : undefined;
  const subtitle = [o.subtitle, fitNote].filter((s) => s !== undefined && s !== "").join("; ");
  const layer: Layer[] = [];
  if (line.length > 0) {
    layer.push({
      data: { values: line },
      mark: { type: "line", color: ACCENT, strokeWidth: 1.5, strokeDash: [6, 3] },
      encoding: { x: { field: "x", type: "quantitative" }, y: { field: "y", type: "quantitative" } },
    });
  }
  layer.push({
    data: { values: pts },
    mark: { type: "point", filled: true, size: 40, color: MAIN, opacity: 0.8 },
    encoding: {
      x: { field: "x", type: "quantitative", title: o.xLabel, scale: { zero: false } },
      y: { field: "y", type: "quantitative", title: o.yLabel, scale: { zero: false } },
    },
  });
  if (labelled.length > 0) {
    // each label on the side of its point with more room; labels of nearby points one above, one below
    const xs = pts.map((p) => p.x);
    const ys = pts.map((p) => p.y);
    const xMid = (Math.min(...xs) + Math.max(...xs)) / 2;
    const yRange = Math.max(...ys) - Math.min(...ys) || 1;
    const xRange = Math.max(...xs) - Math.min(...xs) || 1;
    labelled.forEach((p, i) => {
      const near = labelled.slice(0, i).some((q) => Math.abs(q.x - p.x) < 0.3 * xRange && Math.abs(q.y - p.y) < 0.08 * yRange);
      const right = p.x > xMid;
      layer.push({
        data: { values: [p] },
        mark: { type: "text", align: right ? "right" : "left", dx: right ? -6 : 6, dy: near ? 14 : -6, fontSize: 11, color: "#333" },
        encoding: { x: { field: "x", type: "quantitative" }, y: { field: "y", type: "quantitative" }, text: { field: "label" } },
      });
    });
  }
  return { $schema: SCHEMA, title: titleOf(o.title, subtitle), width: WIDTH, height: HEIGHT, config: CONFIG, layer };
}

export interface HeatmapOptions {
  title: string;
  /** Row names, top to bottom (e.g. layers). */
  rows: readonly string[];
  /** Column names, left to right (e.g. tensor kinds). */
  cols: readonly string[];
  /** values[r][c]; non-finite cells are drawn blank. */
  values: readonly (readonly number[])[];
  xLabel?: string;
  yLabel?: string;
  /** Legend title, e.g. "cosine". */
  colorLabel?: string;
  /** Write each cell's value in it (default: when there are at most 400 cells). */
  showValues?: boolean;
  subtitle?: string;
}

/** A rows × cols grid of coloured cells (diverging around 0 when values have both signs). */
export function heatmap(o: HeatmapOptions): VegaLiteSpec {
  if (o.values.length !== o.rows.length) throw new SelfreportError(`heatmap "${o.title}": ${o.values.length} value rows for ${o.rows.length} row names`);
  o.values.forEach((r, i) => {
    if (r.length !== o.cols.length) throw new SelfreportError(`heatmap "${o.title}": row ${i} (${o.rows[i]}) has ${r.length} values for ${o.cols.length} column names`);
  });
  const cells = o.rows.flatMap((row, r) => o.cols.map((col, c) => {
    const v = o.values[r][c];
    return { row, col, value: finite(v) ? v : null, text: finite(v) ? fmt(v) : "" };
  }));
  const vals = cells.flatMap((c) => (c.value === null ? [] : [c.value]));
  const diverging = vals.some((v) => v < 0) && vals.some((v) => v > 0);
  const showValues = o.showValues ?? cells.length <= 400;
  const maxAbs = vals.reduce((m, v) => Math.max(m, Math.abs(v)), 0);
  const rowSort = [...o.rows];
  const colSort = [...o.cols];
  const layer: Layer[] = [
    {
      mark: { type: "rect", stroke: "white", strokeWidth: 0.5 },
      encoding: {
        color: {
          field: "value",
          type: "quantitative",
          title: o.colorLabel ?? "value",
          scale: diverging ? { scheme: "redblue", reverse: true, domainMid: 0, domain: [-maxAbs, maxAbs] } : { scheme: "blues" },
        },
      },
    },
  ];
  // Dark cells (beyond 60 % of the colour range) get white text.
  const lo = diverging ? -maxAbs : Math.min(...vals);
  const hi = diverging ? maxAbs : Math.max(...vals);
  const dark = diverging ? `abs(datum.value) > ${0.6 * maxAbs}` : `datum.value > ${lo + 0.6 * (hi - lo)}`;
  if (showValues) {
    layer.push({
      mark: { type: "text", fontSize: 10 },
      encoding: { text: { field: "text" }, color: { condition: { test: `isValid(datum.value) && ${dark}`, value: "white" }, value: "#222" } },
    });
  }
  return {
    $schema: SCHEMA,
    title: titleOf(o.title, o.subtitle),
    width: { step: Math.max(showValues ? 44 : 24, Math.min(72, Math.floor(WIDTH / Math.max(1, o.cols.length)))) },
    height: { step: 24 },
    config: CONFIG,
    data: { values: cells },
    encoding: {
      x: { field: "col", type: "nominal", title: o.xLabel ?? null, sort: colSort, axis: { labelAngle: o.cols.some((c) => c.length > 6) ? -40 : 0 } },
      y: { field: "row", type: "nominal", title: o.yLabel ?? null, sort: rowSort },
    },
    layer,
  };
}

export interface BarChartOptions {
  title: string;
  categories: readonly string[];
  values: readonly number[];
  xLabel?: string;
  yLabel?: string;
  subtitle?: string;
}

/** One bar per category, in the given order. */
export function barChart(o: BarChartOptions): VegaLiteSpec {
  if (o.values.length !== o.categories.length) throw new SelfreportError(`bar chart "${o.title}": ${o.values.length} values for ${o.categories.length} categories`);
  const seen = new Set<string>();
  for (const c of o.categories) {
    if (seen.has(c)) throw new SelfreportError(`bar chart "${o.title}": category "${c}" appears twice`);
    seen.add(c);
  }
  const bars = o.categories.map((category, i) => ({ category, value: finite(o.values[i]) ? o.values[i] : null }));
  return {
    $schema: SCHEMA,
    title: titleOf(o.title, o.subtitle),
    width: o.categories.length > 16 ? { step: 20 } : WIDTH,
    height: HEIGHT,
    config: CONFIG,
    data: { values: bars },
    mark: { type: "bar", color: MAIN },
    encoding: {
      x: { field: "category", type: "nominal", title: o.xLabel ?? null, sort: [...o.categories], axis: { labelAngle: o.categories.some((c) => c.length > 6) ? -40 : 0 } },
      y: { field: "value", type: "quantitative", title: o.yLabel ?? "value" },
    },
  };
}

/** A short number for labels: 3 significant digits, no exponent for ordinary magnitudes. */
function fmt(v: number): string {
  if (v === 0) return "0";
  const a = Math.abs(v);
  if (a >= 1e5 || a < 1e-3) return v.toExponential(2);
  return String(Number(v.toPrecision(3)));
}
