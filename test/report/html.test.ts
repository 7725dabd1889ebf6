/**
 * The run report: verdicts on hand-made summaries with known answers; a whole page built from two
 * tiny runs (frozen and unfrozen, test/helpers/run-fixture.ts) whose analyses ran through the
 * library; escaping, every plot inlined with scoped ids, the "not run" / "not applicable" /
 * "unreadable" listings, the errors; and the page opened in headless Chromium (no console error,
 * no network request, every chart drawn with a non-zero size).
 */
import { test, after } from "node:test";
import assert from "node:assert/strict";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync, cpSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { loadAnalysisContext, writeAnalysisOutput } from "../../src/analysis/context.ts";
import { weightsAnalysis, weightsPlots, type Comparison } from "../../src/analysis/weights.ts";
import { patchingAnalysis, patchingPlots } from "../../src/analysis/patching.ts";
import { residualAnalysis, residualPlots } from "../../src/analysis/residual.ts";
import { lineChart, renderSvg } from "../../src/report/charts.ts";
import { writeReport, collectReport, buildReportHtml, escapeHtml, prepareSvg, readAnalysis } from "../../src/report/html.ts";
import {
  weightsVerdict, patchingVerdict, residualVerdict, rankLimit, THRESHOLD_TEXT, ciText,
  type WeightsVerdictInput, type PatchingVerdictInput, type ResidualVerdictInput,
} from "../../src/report/verdicts.ts";
import { SelfreportError } from "../../src/errors.ts";
import { runCapture } from "../helpers/cli.ts";
import { makeTinyRun } from "../helpers/run-fixture.ts";

process.env["SELFREPORT_QUIET"] = "1";
const root = mkdtempSync(join(tmpdir(), "selfreport-report-"));
after(() => rmSync(root, { recursive: true, force: true }));

// ───────────────────────────── verdicts on known inputs ─────────────────────────────

function cmp(cosine: number, rank: number, n: number, d: number): Comparison {
  return { cosine, z: cosine * Math.sqrt(d), rank_in_layer: rank, n_in_layer: n, rank_overall: rank, n_overall: 2 * n };
}

/** A weights summary over d_model 64 (null std 1/8, so |z| > 4 ⇔ |cosine| > 0.5) and 256 neurons (rank limit 2). */
function weightsInput(wOut: Comparison, share: number | null = 0.5, wIn: Comparison = cmp(0.05, 120, 256, 64)): WeightsVerdictInput {
  return {
    target: { layer: 1, neuron: 7, layer_type: "mlp_post", d_model: 64, feature_layer: 2 },
    reading: { W_in_raw: wIn, W_in_folded: wIn, W_out: wOut },
    direct_write: { applicable: true, share },
    pattern: { cosine_with_target_pattern: 0.95, random_filter_null: { n: 200, target_pattern: { mean: 0.3, std: 0.2, percentile_abs: 100 } } },
    w_in: { readout_correlation: 0.4, spaces: "different points" },
  };
}

test("rankLimit: the top 1% of the candidates, at least rank 1", () => {
  assert.equal(rankLimit(64), 1);
  assert.equal(rankLimit(256), 2);
  assert.equal(rankLimit(3072), 30);
  assert.equal(rankLimit(36864), 368);
});

test("weightsVerdict: filter z and rank pass, positive, direct write ≥ 10% (and patching, if run) → yes; each failure → partly or no", () => {
  const yes = weightsVerdict(weightsInput(cmp(0.6, 1, 256, 64)));
  assert.equal(yes.level, "yes");
  assert.match(yes.headline, /^Yes: the head reads the direction neuron 7 writes \(W_out\[7, :\]\).*carries 50\.0% of the prediction's variance/);
  assert.match(yes.evidence[0]!, /cosine 0\.600, z 4\.8 \(beyond ±4\), rank 1 of 256 \(within the top 1%, rank ≤ 2\)/);
  assert.ok(yes.evidence.some((e) => /activation pattern \(what the prediction co-varies with; not evidence of reading\)/.test(e)));
  assert.ok(yes.evidence.some((e) => /readout correlation 0\.400/.test(e)));

  // the filter matches but the write carries 1.5% of the prediction: partly (the demo's frozen head)
  const weak = weightsVerdict(weightsInput(cmp(0.6, 1, 256, 64), 0.015));
  assert.equal(weak.level, "partly");
  assert.match(weak.headline, /carries 1\.5% of the prediction's variance \(below 10%\): most of what it predicts comes from elsewhere/);
  // exactly 10% passes
  assert.equal(weightsVerdict(weightsInput(cmp(0.6, 1, 256, 64), 0.1)).level, "yes");
  // patching that does not confirm turns yes into partly; patching that confirms keeps it
  const flat = patchingInput(0.02, [0.01, 0.03], null, 60);
  const unconfirmed = weightsVerdict(weightsInput(cmp(0.6, 1, 256, 64)), flat);
  assert.equal(unconfirmed.level, "partly");
  assert.match(unconfirmed.headline, /patching does not confirm/);
  assert.equal(weightsVerdict(weightsInput(cmp(0.6, 1, 256, 64)), patchingInput(0.9, [0.8, 1.0], null, 100)).level, "yes");
  // z passes, rank 3 > 2 fails, small share: no
  const common = weightsVerdict(weightsInput(cmp(0.6, 3, 256, 64), 0.01));
  assert.equal(common.level, "no");
  assert.match(common.headline, /other neurons match as well or better/);
  // rank 1 but z within the null, 2.3% share: no from the weights alone; patching that confirms a specific effect makes it partly (the demo's ridge head)
  assert.equal(weightsVerdict(weightsInput(cmp(0.45, 1, 256, 64), 0.023)).level, "no");
  const leaning = weightsVerdict(weightsInput(cmp(0.45, 1, 256, 64), 0.023), patchingInput(0.15, [0.14, 0.16], null, 100));
  assert.equal(leaning.level, "partly");
  assert.match(leaning.headline, /more than other neurons do \(patching\).*but weakly: its cosine is within the random-direction null and the neuron's direct write carries 2\.3%/);
  assert.equal(weightsVerdict(weightsInput(cmp(0.05, 200, 256, 64), 0.001), patchingInput(0.15, [0.14, 0.16], null, 100)).level, "no", "patching alone does not make a head read the write");
  // not specific but the write carries the prediction: partly
  assert.equal(weightsVerdict(weightsInput(cmp(0.45, 1, 256, 64), 0.3)).level, "partly");
  // wrong sign
  const neg = weightsVerdict(weightsInput(cmp(-0.8, 1, 256, 64)));
  assert.equal(neg.level, "partly");
  assert.match(neg.headline, /wrong sign/);
  // nothing on W_out, but W_in (what the neuron reads) passes: no, and it says so
  const recompute = weightsVerdict(weightsInput(cmp(0.05, 100, 256, 64), 0.001, cmp(0.9, 1, 256, 64)));
  assert.equal(recompute.level, "no");
  assert.match(recompute.headline, /recomputes the neuron's input/);
  // a filter orthogonal to the write with no share: no, whatever the pattern says
  const orth = weightsVerdict(weightsInput(cmp(0, 256, 256, 64), 0));
  assert.equal(orth.level, "no");
  // exactly z = 4 is not beyond 4
  const no = weightsVerdict(weightsInput(cmp(0.5, 3, 256, 64), 0.01));
  assert.equal(no.level, "no");
  assert.match(no.evidence[0]!, /z 4\.0 \(within ±4\)/);
  // the head reads before the target layer writes
  const before = weightsVerdict({ ...weightsInput(cmp(0.6, 1, 256, 64)), direct_write: { applicable: false, share: null } });
  assert.equal(before.level, "no");
  assert.match(before.headline, /before layer 1 writes/);
});

test("weightsVerdict: an mlp_out target is judged on e_n; no write vector → not assessable", () => {
  const v = weightsVerdict({ target: { layer: 0, neuron: 3, layer_type: "mlp_out", d_model: 100 }, reading: { e_n: cmp(0.5, 1, 100, 100) }, direct_write: { applicable: true, share: 0.4 } });
  assert.equal(v.level, "yes");
  assert.match(v.headline, /e_3/);
  assert.equal(weightsVerdict({ target: { layer: 0, neuron: 3, layer_type: "mlp_post", d_model: 100 }, reading: {} }).level, "not assessable");
});

test("ciText: enough digits that the two ends differ", () => {
  assert.equal(ciText([0.12101, 0.12149]), "[0.1210, 0.1215]");
  assert.equal(ciText([0.121001, 0.121004]), "[0.121001, 0.121004]");
  assert.equal(ciText([0.1, 0.3]), "[0.100, 0.300]");
});

function patchingInput(slope: number, boot: [number, number] | null, t: [number, number] | null, percentile: number | null, k = 20): PatchingVerdictInput {
  return { target: { neuron: 7 }, fit: { slope, slope_ci95: t }, fit_bootstrap: { slope_ci95: boot }, controls: { k, n_defined: k, percentile_abs: percentile, target_scale_slope: slope } };
}

test("patchingVerdict: CI vs 0, slope vs 0.5, controls vs the 95th percentile, ideal 1", () => {
  const yes = patchingVerdict(patchingInput(0.95, [0.8, 1.1], [0.9, 1.0], 100));
  assert.equal(yes.level, "yes");
  assert.match(yes.headline, /consistent with the ideal slope 1/);
  assert.match(yes.evidence[0]!, /bootstrap 95% CI \[0\.800, 1\.100\]: excludes 0; contains the ideal 1/);
  const under = patchingVerdict(patchingInput(0.7, [0.6, 0.8], [0.65, 0.75], 99));
  assert.equal(under.level, "yes");
  assert.match(under.headline, /under-reporting \(slope 0\.700 < 1\)/);
  assert.equal(patchingVerdict(patchingInput(0.1, [-0.1, 0.3], [0.05, 0.15], 100)).level, "no"); // the bootstrap CI, not the t CI, decides
  const small = patchingVerdict(patchingInput(0.2, [0.1, 0.3], null, 100));
  assert.equal(small.level, "partly");
  assert.match(small.headline, /the effect is small \(slope 0\.200 < 0\.5\)/);
  const unspecific = patchingVerdict(patchingInput(1.0, [0.8, 1.2], null, 95));
  assert.equal(unspecific.level, "partly");
  assert.match(unspecific.headline, /other neurons of the layer move it about as much \(percentile 95% ≤ 95%\)/);
  const noControls = patchingVerdict(patchingInput(1.0, [0.8, 1.2], null, null, 0));
  assert.equal(noControls.level, "partly");
  assert.match(noControls.headline, /no controls ran/);
  assert.match(patchingVerdict(patchingInput(-0.9, [-1.1, -0.7], null, 100)).headline, /the wrong way/);
  // detectable but negligible, either sign: no; the number is written so that it is not "0.000"
  const tiny = patchingVerdict(patchingInput(-0.0004, [-0.00045, -0.00035], null, 100));
  assert.equal(tiny.level, "no");
  assert.match(tiny.headline, /barely moves with neuron 7 \(\|slope\| 4\.0e-4 < 0\.05\), although the effect is detectable/);
  assert.equal(patchingVerdict(patchingInput(0.049, [0.04, 0.06], null, 100)).level, "no");
  assert.equal(patchingVerdict(patchingInput(0.05, [0.04, 0.06], null, 100)).level, "partly");
  const tOnly = patchingVerdict(patchingInput(1.3, null, [1.2, 1.4], 100));
  assert.equal(tOnly.level, "yes");
  assert.match(tOnly.evidence[0]!, /t-based 95% CI/);
  assert.match(tOnly.headline, /over-reporting/);
  assert.equal(patchingVerdict({ ...patchingInput(1, null, null, 100), fit: null }).level, "not assessable");
  assert.equal(patchingVerdict(patchingInput(1, null, null, 100)).level, "not assessable");
});

function residualInput(rBase: number, rFt: number, headCos: number, neuronR: number): ResidualVerdictInput {
  // d_model 64: |z| > 4 ⇔ |cosine| > 0.5
  return {
    target: { freeze_mode: "unfrozen", feature_layer: 1, layer: 0, d_model: 64 },
    predictions: { base: { r_with_target: rBase }, finetuned: { r_with_target: rFt } },
    layers: [
      { layer: "embed", share_of_prediction_change: 0.1, coupled_change_cosines: { W_out: 0, head: 0.1 } },
      { layer: 0, share_of_prediction_change: 0.7, coupled_change_cosines: { W_out: 0.3, head: 0.2 } },
      { layer: 1, share_of_prediction_change: 0.2, coupled_change_cosines: { W_out: 0.1, head: headCos } },
    ],
    neuron: { r: neuronR },
  };
}

test("residualVerdict: r gain ≥ 0.1 and β along the head (|z| > 4) → yes; the neuron's own change is flagged", () => {
  const yes = residualVerdict(residualInput(0.05, 0.9, 0.8, 0.99));
  assert.equal(yes.level, "yes");
  assert.match(yes.evidence.join(" "), /largest share of the prediction change comes from block 0 \(70%\)/);
  assert.match(yes.evidence.join(" "), /cosine 0\.800 with the head direction \(z 6\.4/);
  assert.ok(!/no longer exists/.test(yes.headline));
  assert.equal(residualVerdict(residualInput(0.05, 0.9, 0.4, 0.99)).level, "partly");
  assert.equal(residualVerdict(residualInput(0.5, 0.55, 0.8, 0.99)).level, "partly");
  assert.equal(residualVerdict(residualInput(0.5, 0.55, 0.1, 0.99)).level, "no");
  assert.match(residualVerdict(residualInput(0.05, 0.9, 0.8, 0.5)).headline, /changed the neuron itself/);
});

test("every threshold is stated in words", () => {
  const text = THRESHOLD_TEXT.join("\n");
  for (const t of ["|z| > 4", "top 1%", "95th percentile", "at least 0.5", "|slope| < 0.05", "by at least 0.1", "r ≥ 0.9", "excludes 0"]) assert.ok(text.includes(t), `THRESHOLD_TEXT lacks "${t}"`);
});

// ───────────────────────────── SVG preparation ─────────────────────────────

test("prepareSvg: ids and their references are prefixed; scripts, handlers and external references are refused", () => {
  const svg = `<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg"><defs><clipPath id="clip1"><rect/></clipPath></defs><g clip-path="url(#clip1)"><use href="#clip1"/><rect fill="url(#other)"/></g></svg>`;
  const p = prepareSvg(svg, "w-0-");
  assert.equal(p.problem, null);
  assert.ok(p.svg!.startsWith("<svg"));
  assert.ok(p.svg!.includes(`id="w-0-clip1"`) && p.svg!.includes(`url(#w-0-clip1)`) && p.svg!.includes(`href="#w-0-clip1"`));
  assert.ok(p.svg!.includes(`url(#other)`), "a reference to an id the SVG does not define is left alone");
  for (const bad of [
    `<svg><script>alert(1)</script></svg>`, `<svg><rect onload="x()"/></svg>`, `<svg><a href="https://example.com/"><text>x</text></a></svg>`,
    `<svg><rect fill="url(https://example.com/x.svg#g)"/></svg>`, `<svg><foreignObject/></svg>`, `<svg><image href="data:x"/></svg>`,
  ]) {
    const r = prepareSvg(bad, "p-");
    assert.equal(r.svg, null, `should refuse ${bad}`);
    assert.match(r.problem!, /not inlined: it contains/);
  }
  assert.equal(prepareSvg("<html></html>", "p-").problem, "not an SVG document");
});

// ───────────────────────────── whole reports from tiny runs ─────────────────────────────

const NASTY = `<script>alert("x")</script> & 'co'`;

interface Fixture {
  runDir: string;
  analysesDir: string;
  plots: Record<string, string[]>;
}

/** Frozen run, head planted on W_out (the weights verdict is "yes"): weights + patching, metrics.json, train_log.jsonl (no SVG curve). */
async function frozenRun(): Promise<Fixture> {
  const fx = makeTinyRun(join(root, "frozen"), { plantedDirection: "W_out", writeScale: 30, model: { dModel: 32, nHeads: 4 }, n: 120 });
  const cfgPath = join(fx.runDir, "config.json");
  const cfg = JSON.parse(readFileSync(cfgPath, "utf8")) as Record<string, unknown>;
  cfg["base_model_name"] = NASTY; // a string from a file that must be escaped
  writeFileSync(cfgPath, JSON.stringify(cfg));
  const ctx = loadAnalysisContext(fx.runDir);
  const analysesDir = join(fx.runDir, "analysis");
  const w = weightsAnalysis(ctx, { maxExamples: 120 });
  w.notes.push(`<img src=x onerror="alert(1)"> note`);
  const wPlots = await weightsPlots(w);
  writeAnalysisOutput(join(analysesDir, "weights"), "weights", ctx.run, w, wPlots);
  const p = patchingAnalysis(ctx, { nInputs: 24, controls: 6, bootstrap: 200 });
  const pPlots = await patchingPlots(p);
  writeAnalysisOutput(join(analysesDir, "patching"), "patching", ctx.run, p, pPlots);
  const base = { description: "always predict the training mean", mse: 0.04, mae: 0.16, r2: -0.01 };
  const metrics = { n: 12, mse: 0.01, mae: 0.08, pearson_r: 0.87, spearman_rho: 0.85, r2: 0.74, accuracy: null, baseline: base };
  writeFileSync(join(fx.runDir, "metrics.json"), JSON.stringify({ test: metrics, validation: metrics, epochs_run: 4, best_epoch: 3, stopped_early: false, seconds: 1.5 }));
  const log = [];
  for (let s = 1; s <= 12; s++) log.push(JSON.stringify({ step: s, epoch: Math.ceil(s / 3), loss: 1 / s, lr: 1e-3 }));
  for (let e = 1; e <= 4; e++) log.push(JSON.stringify({ step: 3 * e, epoch: e, val_loss: 1.2 / e, val_r: 0.2 * e }));
  writeFileSync(join(fx.runDir, "train_log.jsonl"), log.join("\n") + "\n{broken\n");
  return { runDir: fx.runDir, analysesDir, plots: { weights: Object.keys(wPlots), patching: Object.keys(pPlots) } };
}

/** Unfrozen run: weights + residual, patching not run; a training_curve.svg, no metrics.json. */
async function unfrozenRun(): Promise<Fixture> {
  const fx = makeTinyRun(join(root, "unfrozen"), { freeze: "unfrozen", finetuneNoise: 0.02, seed: 2 });
  const ctx = loadAnalysisContext(fx.runDir);
  const analysesDir = join(fx.runDir, "analysis");
  const w = weightsAnalysis(ctx, { maxExamples: 60 });
  const wPlots = await weightsPlots(w);
  writeAnalysisOutput(join(analysesDir, "weights"), "weights", ctx.run, w, wPlots);
  const r = residualAnalysis(ctx, { nInputs: 20 });
  const rPlots = await residualPlots(r);
  writeAnalysisOutput(join(analysesDir, "residual"), "residual", ctx.run, r, rPlots);
  writeFileSync(join(fx.runDir, "training_curve.svg"), await renderSvg(lineChart({ title: "Training loss (fixture)", x: "step", y: "loss", data: [{ x: 1, y: 2 }, { x: 2, y: 1 }] })));
  return { runDir: fx.runDir, analysesDir, plots: { weights: Object.keys(wPlots), residual: Object.keys(rPlots) } };
}

let frozen: Fixture;
let unfrozen: Fixture;
const fixtures = (async () => {
  frozen = await frozenRun();
  unfrozen = await unfrozenRun();
})();

/** Every <figure class="plot"> caption, in order. */
function captions(html: string): string[] {
  return Array.from(html.matchAll(/<figure class="plot"><svg[\s\S]*?<figcaption>([^<]*)<\/figcaption>/g), (m) => m[1]!);
}

test("frozen run: config, escaped strings, curve from the log, metrics vs baseline, both analyses with every plot and verdict, residual not applicable", async () => {
  await fixtures;
  const out = join(root, "out", "frozen.html");
  await writeReport({ runDir: frozen.runDir, out });
  const html = readFileSync(out, "utf8");
  assert.deepEqual(readdirSync(join(root, "out")).filter((f) => f.includes(".tmp-")), [], "no temporary files left");

  // escaping: the nasty strings appear escaped only
  assert.ok(html.includes(escapeHtml(NASTY)), "escaped base_model_name missing");
  assert.ok(!html.includes(NASTY) && !html.includes("<script"), "an unescaped string from a file reached the page");
  assert.ok(html.includes("&lt;img src=x onerror=&quot;alert(1)&quot;&gt; note"), "the analysis note is not escaped");
  assert.ok(!/<img/i.test(html));

  // config and training
  assert.match(html, /<th>target<\/th><td>layer 1, neuron 5 \(blocks\.1\.mlp\.hook_post\[5\]\)<\/td>/);
  assert.match(html, /<th>freezing<\/th><td>frozen<\/td>/);
  assert.match(html, /<td>MSE<\/td><td>0\.0100<\/td><td>0\.0400<\/td>/);
  assert.ok(html.includes("The head&#39;s test MSE is 25.0% of the baseline&#39;s."));
  assert.ok(html.includes("Trained 4 epochs (best 3) in 1.5 s."));
  assert.ok(html.includes("1 unreadable log lines skipped"), "the broken log line is reported in the curve's subtitle");

  // every plot of every analysis, in order, then no others; ids unique across the page
  const caps = captions(html);
  assert.deepEqual(caps, ["train_log.jsonl", ...frozen.plots.weights!.map((p) => `${p}.svg`), ...frozen.plots.patching!.map((p) => `${p}.svg`)]);
  assert.equal((html.match(/<svg/g) ?? []).length, caps.length);
  const ids = Array.from(html.matchAll(/\sid="([^"]+)"/g), (m) => m[1]!);
  assert.equal(new Set(ids).size, ids.length, `duplicate ids: ${ids.filter((id, i) => ids.indexOf(id) !== i).join(", ")}`);

  // verdicts: the page shows exactly what the verdict functions say about these summaries
  const inputs = await collectReport(frozen.runDir);
  assert.equal(inputs.weights.status, "ok");
  assert.equal(inputs.patching.status, "ok");
  assert.equal(inputs.residual, null);
  if (inputs.weights.status !== "ok" || inputs.patching.status !== "ok") return;
  const wv = weightsVerdict(inputs.weights.summary, inputs.patching.summary);
  assert.equal(wv.level, "yes", `planted W_out head: ${wv.headline}`);
  const pv = patchingVerdict(inputs.patching.summary);
  for (const v of [wv, pv]) {
    assert.ok(html.includes(escapeHtml(v.headline)), `verdict "${v.headline}" missing`);
    for (const e of v.evidence) assert.ok(html.includes(escapeHtml(e)), `evidence "${e}" missing`);
  }
  for (const t of THRESHOLD_TEXT) assert.ok(html.includes(escapeHtml(t)), "a threshold is not stated on the page");
  assert.ok(html.includes("This is a frozen run: only the head trained"));
  assert.ok(!html.includes(">not run<"));
  assert.equal(buildReportHtml(inputs).replace(/made [^ ]+ by/, ""), html.replace(/made [^ ]+ by/, ""), "buildReportHtml is deterministic apart from the time");
});

test("unfrozen run: SVG curve, no metrics, residual verdict, patching listed as not run with its command", async () => {
  await fixtures;
  const out = join(root, "out", "unfrozen.html");
  await writeReport({ runDir: unfrozen.runDir, out });
  const html = readFileSync(out, "utf8");
  assert.deepEqual(captions(html), ["training_curve.svg", ...unfrozen.plots.weights!.map((p) => `${p}.svg`), ...unfrozen.plots.residual!.map((p) => `${p}.svg`)]);
  assert.ok(html.includes("No metrics.json in the run directory"));
  assert.ok(html.includes(`<span class="badge">not run</span> No patching analysis in ${escapeHtml(join(unfrozen.analysesDir, "patching"))}.`));
  assert.ok(html.includes(`<code>selfreport analyze patching --run ${unfrozen.runDir} --out ${join(unfrozen.analysesDir, "patching")}</code>`));
  const inputs = await collectReport(unfrozen.runDir);
  assert.ok(inputs.residual !== null && inputs.residual.status === "ok");
  if (inputs.residual === null || inputs.residual.status !== "ok") return;
  const rv = residualVerdict(inputs.residual.summary);
  assert.ok(html.includes(escapeHtml(rv.headline)));
  assert.match(html, /<th>freezing<\/th><td>unfrozen<\/td>/);
});

test("--analyses elsewhere: nothing there is 'not run' everywhere; a broken summary is 'unreadable' with the reason; a stranger's summary is flagged", async () => {
  await fixtures;
  const empty = join(root, "empty-analyses");
  mkdirSync(empty);
  const r = await collectReport(frozen.runDir, empty);
  assert.equal(r.weights.status, "not run");
  assert.equal(r.patching.status, "not run");
  const html = buildReportHtml(r);
  assert.equal((html.match(/<p class="answer"><span class="badge">not run<\/span>/g) ?? []).length, 2);
  assert.equal((html.match(/<td><span class="badge">not run<\/span><\/td>/g) ?? []).length, 2, "the overview lists both as not run");
  assert.ok(html.includes(`selfreport analyze weights --run ${frozen.runDir} --out ${join(empty, "weights")}`));

  const broken = join(root, "broken-analyses");
  cpSync(frozen.analysesDir, broken, { recursive: true });
  writeFileSync(join(broken, "weights", "summary.json"), "{ not json");
  const s = JSON.parse(readFileSync(join(broken, "patching", "summary.json"), "utf8")) as Record<string, unknown>;
  delete s["controls"];
  writeFileSync(join(broken, "patching", "summary.json"), JSON.stringify(s));
  const rb = await collectReport(frozen.runDir, broken);
  assert.equal(rb.weights.status, "unreadable");
  assert.equal(rb.patching.status, "unreadable");
  if (rb.patching.status === "unreadable") assert.match(rb.patching.reason, /summary\.json: field "controls\.k" is missing \(expected a number\)$/);
  const hb = buildReportHtml(rb);
  assert.equal((hb.match(/<p class="answer"><span class="badge">unreadable<\/span>/g) ?? []).length, 2);

  // an analysis of another run, and a plot file that went missing
  const other = join(root, "other-analyses");
  cpSync(unfrozen.analysesDir, other, { recursive: true });
  rmSync(join(other, "weights", `${unfrozen.plots.weights![0]}.svg`));
  const ro = await collectReport(frozen.runDir, other);
  const ho = buildReportHtml(ro);
  assert.ok(ho.includes(`This summary says it analysed ${escapeHtml(unfrozen.runDir)}`));
  assert.ok(ho.includes("listed in summary.json but missing"));
  const read = readAnalysis(other, "weights");
  assert.ok(read.status === "ok" && read.plots[0]!.svg === null);
});

test("errors: a missing, empty, file or invalid run directory and a missing --analyses folder are one SelfreportError each; nothing is written", async () => {
  await fixtures;
  const out = join(root, "out", "never.html");
  const cases: Array<[string, string | undefined, RegExp]> = [
    [join(root, "nope"), undefined, /run directory .*nope does not exist/],
    [root, undefined, /is not a run directory: config\.json is missing/],
    [join(frozen.runDir, "metrics.json"), undefined, /is a file; expected a run directory/],
    [frozen.runDir, join(root, "no-such-analyses"), /--analyses .*no-such-analyses does not exist/],
    [frozen.runDir, join(frozen.runDir, "metrics.json"), /--analyses .*metrics\.json is not a folder/],
  ];
  const bad = join(root, "badrun");
  mkdirSync(bad);
  writeFileSync(join(bad, "config.json"), "{");
  cases.push([bad, undefined, /config\.json: not valid JSON/]);
  for (const [runDir, analysesDir, re] of cases) {
    await assert.rejects(writeReport({ runDir, out, ...(analysesDir !== undefined ? { analysesDir } : {}) }), (e: unknown) => e instanceof SelfreportError && re.test(e.message) && !e.message.includes("\n"));
  }
  assert.ok(!existsSync(out));
});

const cli = (args: string[]): Promise<{ code: number; lines: string[] }> => runCapture(["report", ...args]);

test("CLI: writes the page and lists what was not run; bad --run and --out give one error line", async () => {
  await fixtures;
  const out = join(root, "out", "cli.html");
  const ok = await cli(["--run", unfrozen.runDir, "--out", out]);
  assert.equal(ok.code, 0, ok.lines.join("\n"));
  assert.match(ok.lines[0]!, /^wrote .*cli\.html: analyses weights, residual \(\d+ plots\)$/);
  assert.deepEqual(ok.lines.slice(1), [`not run: patching (selfreport analyze patching --run ${unfrozen.runDir} --out ${join(unfrozen.analysesDir, "patching")})`]);
  assert.ok(existsSync(out));
  const missing = await cli(["--run", join(root, "nope"), "--out", join(root, "out", "x.html")]);
  assert.equal(missing.code, 1);
  assert.equal(missing.lines.length, 1);
  assert.match(missing.lines[0]!, /^selfreport: error: run directory .*nope does not exist$/);
  const badOut = await cli(["--run", unfrozen.runDir, "--out", join(root, "out", "x.txt")]);
  assert.equal(badOut.code, 1);
  assert.match(badOut.lines[0]!, /--out must end in \.html, got ".*x\.txt"/);
});

// ───────────────────────────── in a real browser ─────────────────────────────

const CHROMIUM = "/usr/bin/chromium";

test("headless Chromium: no console error, no request beyond the page, every chart drawn with a non-zero size", { skip: existsSync(CHROMIUM) ? false : `${CHROMIUM} is absent (install Debian's chromium: bash scripts/setup.sh)` }, async () => {
  await fixtures;
  const { chromium } = await import("playwright-core");
  const pages = [join(root, "out", "browser-frozen.html"), join(root, "out", "browser-unfrozen.html")];
  await writeReport({ runDir: frozen.runDir, out: pages[0]! });
  await writeReport({ runDir: unfrozen.runDir, out: pages[1]! });
  const browser = await chromium.launch({ executablePath: CHROMIUM, args: ["--no-sandbox", "--disable-gpu"] });
  try {
    for (const file of pages) {
      const page = await browser.newPage();
      const problems: string[] = [];
      const url = pathToFileURL(file).href;
      page.on("console", (m) => void (m.type() === "error" && problems.push(`console error: ${m.text()}`)));
      page.on("pageerror", (e) => void problems.push(`page error: ${e.message}`));
      await page.route("**/*", (route) => {
        if (route.request().url() === url) return route.continue();
        problems.push(`request: ${route.request().url()}`);
        return route.abort();
      });
      await page.goto(url, { waitUntil: "load" });
      const boxes = await page.$$eval("svg", (svgs) => svgs.map((s) => {
        const r = s.getBoundingClientRect();
        return { w: r.width, h: r.height, caption: s.parentElement?.querySelector("figcaption")?.textContent ?? "?" };
      }));
      const expected = (readFileSync(file, "utf8").match(/<svg/g) ?? []).length;
      assert.ok(expected >= 5, `${file}: only ${expected} charts`);
      assert.equal(boxes.length, expected);
      for (const b of boxes) assert.ok(b.w > 50 && b.h > 50, `${file}: chart ${b.caption} is ${b.w}×${b.h}`);
      // a drawn chart has painted marks: at least one path or rect of non-zero size per chart
      const painted: unknown = await page.evaluate(`Array.from(document.querySelectorAll("svg")).filter((s) =>
        Array.from(s.querySelectorAll("path, rect")).some((e) => { const r = e.getBoundingClientRect(); return r.width > 0 && r.height > 0; })).length`);
      assert.equal(painted, expected);
      assert.deepEqual(problems, [], `${file}: ${problems.join("; ")}`);
      await page.close();
    }
  } finally {
    await browser.close();
  }
});

/** In the page: every chart's text that is smaller than minPx on screen, or whose box leaves its SVG's viewBox. */
const READABILITY_PROBE = (minPx: number): string => `(() => {
  const problems = [];
  for (const svg of document.querySelectorAll("figure svg")) {
    const caption = svg.parentElement?.querySelector("figcaption")?.textContent ?? "?";
    const vb = svg.viewBox.baseVal;
    const W = vb && vb.width > 0 ? vb.width : svg.width.baseVal.value;
    const H = vb && vb.height > 0 ? vb.height : svg.height.baseVal.value;
    const scale = svg.getBoundingClientRect().width / W;
    for (const t of svg.querySelectorAll("text")) {
      const text = (t.textContent ?? "").trim();
      if (text === "") continue;
      const px = parseFloat(getComputedStyle(t).fontSize) * scale;
      if (px < ${minPx}) problems.push(caption + ": '" + text.slice(0, 40) + "' is " + px.toFixed(1) + " px");
      const b = t.getBBox();
      const m = t.getCTM();
      const xs = [b.x, b.x + b.width].flatMap((x) => [b.y, b.y + b.height].map((y) => m.a * x + m.c * y + m.e));
      const ys = [b.x, b.x + b.width].flatMap((x) => [b.y, b.y + b.height].map((y) => m.b * x + m.d * y + m.f));
      const vx = vb && vb.width > 0 ? vb.x : 0;
      const vy = vb && vb.width > 0 ? vb.y : 0;
      if (Math.min(...xs) < vx - 1 || Math.max(...xs) > vx + W + 1 || Math.min(...ys) < vy - 1 || Math.max(...ys) > vy + H + 1) {
        problems.push(caption + ": '" + text.slice(0, 40) + "' leaves the viewBox");
      }
    }
  }
  return problems;
})()`;

test("headless Chromium at 1280 px: no chart text below 10 px on screen, no label outside its SVG's viewBox", { skip: existsSync(CHROMIUM) ? false : `${CHROMIUM} is absent` }, async () => {
  await fixtures;
  const { chromium } = await import("playwright-core");
  const pages = [join(root, "out", "readable-frozen.html"), join(root, "out", "readable-unfrozen.html")];
  await writeReport({ runDir: frozen.runDir, out: pages[0]! });
  await writeReport({ runDir: unfrozen.runDir, out: pages[1]! });
  const browser = await chromium.launch({ executablePath: CHROMIUM, args: ["--no-sandbox", "--disable-gpu"] });
  try {
    for (const file of pages) {
      const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
      await page.goto(pathToFileURL(file).href, { waitUntil: "load" });
      const problems = (await page.evaluate(READABILITY_PROBE(10))) as string[];
      const texts: unknown = await page.evaluate(`document.querySelectorAll("figure svg text").length`);
      assert.ok((texts as number) > 50, `${file}: only ${String(texts)} chart texts`);
      assert.deepEqual(problems, [], `${file}:\n${problems.join("\n")}`);
      await page.close();
    }
  } finally {
    await browser.close();
  }
});
