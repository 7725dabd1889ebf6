import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, readdirSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { barChart, binValues, heatmap, histogram, lineChart, renderSvg, scatter, type VegaLiteSpec } from "../../src/report/charts.ts";
import { writeSvg } from "../../src/report/svg.ts";
import { SelfreportError } from "../../src/errors.ts";

/**
 * How many scene items of one kind the SVG holds. Vega writes an ARIA role description on every
 * item ("rect mark", "bar", "point", "line mark", "text mark", "rule mark"), which is a sturdier
 * count than matching `<path` (axes, ticks and legends draw paths too).
 */
function count(svg: string, role: string): number {
  return svg.split(`aria-roledescription="${role}"`).length - 1;
}

/** Renders, checks it is an SVG with the title, prints the cold and warm times. */
async function render(name: string, spec: VegaLiteSpec, title: string): Promise<string> {
  const t0 = performance.now();
  const svg = await renderSvg(spec);
  const t1 = performance.now();
  await renderSvg(spec);
  const t2 = performance.now();
  console.log(`${name}: ${svg.length} characters, first render ${(t1 - t0).toFixed(0)} ms, warm ${(t2 - t1).toFixed(0)} ms`);
  assert.ok(svg.startsWith("<svg"), `${name} does not start with <svg: ${svg.slice(0, 40)}`);
  assert.ok(svg.trimEnd().endsWith("</svg>"));
  assert.ok(svg.includes(`>${title}</text>`), `${name}: title "${title}" not found`);
  return svg;
}

test("lineChart: one line per series, a point per data point, axis titles", async () => {
  const data = [];
  for (let step = 0; step <= 100; step += 10) data.push({ x: step, y: 5 / (1 + step / 20), series: "train" });
  for (let step = 0; step <= 100; step += 50) data.push({ x: step, y: 5.5 / (1 + step / 20), series: "held-out" });
  const svg = await render("lineChart", lineChart({ title: "Pre-training loss", x: "step", y: "cross-entropy", series: "split", data }), "Pre-training loss");
  assert.equal(count(svg, "line mark"), 2);
  assert.equal(count(svg, "point"), 11 + 3);
  for (const t of ["step", "cross-entropy", "split", "train", "held-out"]) assert.ok(svg.includes(`>${t}</text>`), `missing text ${t}`);
  // A single series without `series`, log scale, bad points left out and said so.
  const single = await render(
    "lineChart log",
    lineChart({ title: "Loss (log)", x: "step", y: "loss", logY: true, data: [{ x: 0, y: 10 }, { x: 1, y: 1 }, { x: 2, y: 0 }, { x: 3, y: Number.NaN }, { x: 4, y: 0.1 }] }),
    "Loss (log)",
  );
  assert.equal(count(single, "line mark"), 1);
  assert.equal(count(single, "point"), 3);
  assert.ok(single.includes("2 points not finite or ≤ 0, not shown"));
});

test("histogram: exactly `bins` bars, the rule and its label", async () => {
  const values = Array.from({ length: 1000 }, (_, i) => Math.sin(i * 12.9898) * 0.3);
  const svg = await render("histogram", histogram({ title: "Cosine of the target among all neurons", values, bins: 25, markValue: 0.42, markLabel: "target neuron", xLabel: "cosine" }), "Cosine of the target among all neurons");
  assert.equal(count(svg, "rect mark"), 25);
  assert.equal(count(svg, "rule mark"), 1);
  assert.ok(svg.includes(">target neuron</text>"));
  assert.ok(svg.includes(">1,000 values, 25 bins</text>"));
  const plain = await render("histogram without mark", histogram({ title: "Plain", values: [1, 2, 2, 3], bins: 3 }), "Plain");
  assert.equal(count(plain, "rect mark"), 3);
  assert.equal(count(plain, "rule mark"), 0);
});

test("binValues: equal widths over the range (and the marked value), counts add up", () => {
  const bins = binValues([0, 0.5, 1, 1, 2, Number.NaN], 4, 4);
  assert.deepEqual(bins.map((b) => [b.x0, b.x1]), [[0, 1], [1, 2], [2, 3], [3, 4]]);
  assert.deepEqual(bins.map((b) => b.count), [2, 2, 1, 0]);
  assert.deepEqual(binValues([3, 3], 2).map((b) => b.count), [0, 2]);
  assert.deepEqual(binValues([], 2).map((b) => b.count), [0, 0]);
  assert.throws(() => binValues([1], 0), SelfreportError);
});

test("scatter: a point per (finite) point, the labels and the fit line", async () => {
  const points = Array.from({ length: 9 }, (_, i) => ({ x: i - 4, y: 0.5 * (i - 4) + 0.1, label: i === 0 ? "first" : undefined }));
  points.push({ x: Number.POSITIVE_INFINITY, y: 1, label: undefined });
  const svg = await render("scatter", scatter({ title: "Patching sweep", points, fitLine: { slope: 0.5, intercept: 0.1 }, xLabel: "Δ activation", yLabel: "Δ prediction" }), "Patching sweep");
  assert.equal(count(svg, "point"), 9);
  assert.equal(count(svg, "line mark"), 1);
  assert.equal(count(svg, "text mark"), 1);
  assert.ok(svg.includes(">first</text>"));
  assert.ok(svg.includes(">Δ activation</text>") && svg.includes(">Δ prediction</text>"));
  assert.ok(svg.includes("fit: y = 0.5·x + 0.1"));
  const bare = await render("scatter without fit", scatter({ title: "Bare", points: points.slice(1, 4), xLabel: "a", yLabel: "b" }), "Bare");
  assert.equal(count(bare, "point"), 3);
  assert.equal(count(bare, "line mark"), 0);
});

test("heatmap: a cell per finite value, row and column names, a shape check", async () => {
  const rows = ["L0", "L1", "L2"];
  const cols = ["W_Q", "W_K", "W_V", "W_O"];
  const values = [
    [0.1, -0.2, 0.3, 0.4],
    [0.5, 0.6, -0.7, 0.8],
    [0.9, -1, 0, Number.NaN],
  ];
  const svg = await render("heatmap", heatmap({ title: "Cosine by layer", rows, cols, values, colorLabel: "cosine" }), "Cosine by layer");
  assert.equal(count(svg, "rect mark"), 11);
  assert.equal(count(svg, "text mark"), 12);
  for (const t of [...rows, ...cols, "cosine", "-0.7"]) assert.ok(svg.includes(`>${t}</text>`), `missing text ${t}`);
  assert.throws(() => heatmap({ title: "t", rows, cols, values: values.slice(1) }), /2 value rows for 3 row names/);
  assert.throws(() => heatmap({ title: "t", rows, cols, values: [values[0], [1], values[2]] }), /row 1 \(L1\) has 1 values for 4 column names/);
});

test("barChart: a bar per category in the given order", async () => {
  const categories = ["zeta", "alpha", "mid"];
  const svg = await render("barChart", barChart({ title: "Per bin", categories, values: [3, 1, 2], yLabel: "accuracy" }), "Per bin");
  assert.equal(count(svg, "bar"), 3);
  const at = categories.map((c) => svg.indexOf(`>${c}</text>`));
  assert.ok(at.every((i) => i > 0) && at[0] < at[1] && at[1] < at[2], `categories out of order: ${at}`);
  assert.throws(() => barChart({ title: "t", categories, values: [1] }), /1 values for 3 categories/);
  assert.throws(() => barChart({ title: "t", categories: ["a", "a"], values: [1, 2] }), /category "a" appears twice/);
});

test("renderSvg refuses every URL: data, lookup data, image marks", async () => {
  const refused = async (spec: VegaLiteSpec, url: string): Promise<void> => {
    await assert.rejects(renderSvg(spec), (e: unknown) => {
      assert.ok(e instanceof SelfreportError, `expected a SelfreportError, got ${String(e)}`);
      assert.ok(e.message.includes(`refused to load "${url}"`) && e.message.includes("inline data only"), e.message);
      return true;
    });
  };
  await refused({ data: { url: "https://example.com/data.json" }, mark: "bar", encoding: { x: { field: "a", type: "quantitative" } } }, "https://example.com/data.json");
  await refused({ data: { url: "data/local.csv" }, mark: "point", encoding: { x: { field: "a", type: "quantitative" } } }, "data/local.csv");
  await refused(
    {
      data: { values: [{ a: 1 }] },
      transform: [{ lookup: "a", from: { data: { url: "file:///etc/passwd" }, key: "a", fields: ["b"] } }],
      mark: "bar",
      encoding: { x: { field: "a", type: "quantitative" } },
    },
    "file:///etc/passwd",
  );
  await refused(
    { data: { values: [{ a: 1, img: "https://example.com/y.png" }] }, mark: "image", encoding: { x: { field: "a", type: "quantitative" }, url: { field: "img" } } },
    "https://example.com/y.png",
  );
  // A field that happens to be called "url" inside inline values is data, not a fetch.
  const ok = await renderSvg({ data: { values: [{ a: 1, url: "https://example.com" }] }, mark: "bar", encoding: { x: { field: "a", type: "quantitative" } } });
  assert.ok(ok.startsWith("<svg"));
});

test("renderSvg: concurrent renders do not share state; a bad spec is a SelfreportError", async () => {
  const specs = ["One", "Two", "Three"].map((title, i) => barChart({ title, categories: ["a", "b"], values: [i, i + 1] }));
  const svgs = await Promise.all(specs.map(renderSvg));
  svgs.forEach((svg, i) => {
    const mine = ["One", "Two", "Three"][i];
    assert.ok(svg.includes(`>${mine}</text>`));
    for (const other of ["One", "Two", "Three"].filter((t) => t !== mine)) assert.ok(!svg.includes(`>${other}</text>`));
  });
  const invalid = JSON.parse('{"data": {"values": []}, "mark": "no-such-mark"}') as VegaLiteSpec;
  await assert.rejects(renderSvg(invalid), (e: unknown) => e instanceof SelfreportError && /^chart spec does not compile: /.test(e.message));
});

test("writeSvg writes atomically and leaves no temporary file", async () => {
  const dir = mkdtempSync(join(tmpdir(), "selfreport-svg-"));
  const svg = await renderSvg(barChart({ title: "Saved", categories: ["a"], values: [1] }));
  const path = join(dir, "chart.svg");
  writeSvg(path, svg);
  writeSvg(path, svg);
  assert.equal(readFileSync(path, "utf8"), svg);
  assert.deepEqual(readdirSync(dir), ["chart.svg"]);
  assert.throws(() => writeSvg(join(dir, "x.svg"), "not svg"), /not an SVG document/);
  assert.throws(() => writeSvg(join(dir, "missing", "x.svg"), svg), /cannot write/);
  assert.deepEqual(readdirSync(dir), ["chart.svg"]);
});
