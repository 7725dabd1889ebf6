/**
 * Known-answer tests of activation patching on tiny hand-written runs (test/helpers/run-fixture.ts):
 * the fast one-row path against the naive whole-forward reference, a head planted on W_out[n, :]
 * whose slopes are known exactly, the ablations' definitions, the fit and t quantiles against
 * scipy, and the CLI's errors.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { existsSync, readFileSync, unlinkSync } from "node:fs";
import { join } from "node:path";
import { loadAnalysisContext, type AnalysisContext } from "../../src/analysis/context.ts";
import { patchingAnalysis, patchingPlots, runPatches, runPatchesAllPositions, patchedReference, type Patch } from "../../src/analysis/patching.ts";
import { exampleBatch, targetHookName } from "../../src/selfreport/dataset.ts";
import { padIdFor } from "../../src/analysis/context.ts";
import { headForward, predictionsFromOutput } from "../../src/selfreport/predictor.ts";
import { Tensor, noGrad } from "../../src/tensor/index.ts";
import { selectInputs } from "../../src/analysis/context.ts";
import { linearFit, tQuantile, tCdf } from "../../src/analysis/fit.ts";
import { runCapture } from "../helpers/cli.ts";
import { tinyRunFolder } from "../helpers/run-fixture.ts";
import { close } from "../helpers/close.ts";

process.env["SELFREPORT_QUIET"] = "1";
const { root, tinyRun } = tinyRunFolder("patching");


/**
 * Makes a freshly initialised tiny model do something: weights N(0, 0.02) give near-uniform
 * attention and near-linear MLPs, under which a wrong attention kernel would go unnoticed.
 * Scales the model in place (the fast path and the reference share it, so the comparison stays exact).
 */
function sharpen(ctx: AnalysisContext): void {
  for (const [name, t] of ctx.model.params) {
    const f = /attn\.W_[QK]$/.test(name) ? 15 : /attn\.W_[VO]$|mlp\.W_(in|out)$/.test(name) ? 6 : 1;
    if (f !== 1) for (let i = 0; i < t.size; i++) t.data[i]! *= f;
  }
}

/**
 * Compares the fast path with the whole-forward reference for a few patches on every input: the clean
 * activations, the value read back after the patch, and Δprediction relative to its largest size.
 */
function checkAgainstReference(ctx: AnalysisContext, patches: Patch[], nInputs = 12): void {
  const { indices } = selectInputs(ctx.ds, nInputs);
  const { cleanPred, outcomes } = runPatches(ctx, indices, patches);
  let worst = 0;
  let size = 0;
  indices.forEach((input, k) => {
    const clean = patchedReference(ctx, input, ctx.run.config.target_neuron, (a) => a);
    patches.forEach((pt, j) => {
      const ref = patchedReference(ctx, input, pt.neuron, (a) => pt.value(a, k));
      const o = outcomes[j]!;
      close(o.act[k]!, ref.act, 1e-6 * Math.max(1, Math.abs(ref.act)), `clean activation, input ${input}, patch ${j}`);
      close(ref.patchedAct, o.patched[k]!, 1e-6 * Math.max(1, Math.abs(o.patched[k]!)), `read back after the patch, input ${input}, patch ${j}`);
      const refDelta = ref.pred - clean.pred;
      size = Math.max(size, Math.abs(refDelta));
      worst = Math.max(worst, Math.abs(o.pred[k]! - cleanPred[k]! - refDelta));
    });
  });
  assert.ok(worst <= 1e-4 * size, `fast path vs reference: worst Δprediction difference ${worst} (largest |Δprediction| ${size})`);
  if (process.env["SELFREPORT_TEST_VERBOSE"] === "1") console.log(`fast path vs reference: worst Δprediction difference ${worst.toExponential(2)}, largest |Δprediction| ${size.toExponential(2)}`);
}

const sweep = (neuron: number): Patch[] => [
  { neuron, value: () => 2.5 },
  { neuron, value: (a) => -1.5 * a },
  { neuron, value: () => 0 },
  { neuron: (neuron + 7) % 64, value: (a) => 3 * a + 1 },
];

test("fast path = whole-forward reference: two blocks after the target layer, regression head", () => {
  const fx = tinyRun({ model: { nLayers: 3 }, layer: 0, featureLayer: 2, randomLn: true });
  const ctx = loadAnalysisContext(fx.runDir);
  sharpen(ctx);
  checkAgainstReference(ctx, sweep(5));
});

test("fast path = reference: classification head with a hidden layer, one block after the target", () => {
  const fx = tinyRun({ head: "classification", hiddenDim: 8, layer: 0, featureLayer: 1, randomLn: true, seed: 3 });
  const ctx = loadAnalysisContext(fx.runDir);
  sharpen(ctx);
  checkAgainstReference(ctx, sweep(5));
});

test("fast path = reference: token head on a fine-tuned (unfrozen) run", () => {
  const fx = tinyRun({ head: "token", freeze: "unfrozen", finetuneNoise: 0.02, layer: 0, featureLayer: 1, seed: 4 });
  const ctx = loadAnalysisContext(fx.runDir);
  assert.notEqual(ctx.model, ctx.baseModel);
  sharpen(ctx);
  checkAgainstReference(ctx, sweep(5));
});

test("fast path = reference: layer_type mlp_out (the neuron is residual dimension n of hook_mlp_out)", () => {
  const fx = tinyRun({ layerType: "mlp_out", neuron: 3, layer: 0, featureLayer: 1, seed: 5 });
  const ctx = loadAnalysisContext(fx.runDir);
  sharpen(ctx);
  checkAgainstReference(ctx, [
    { neuron: 3, value: () => 1.25 }, { neuron: 3, value: (a) => 0.5 * a }, { neuron: 11, value: (a) => -a },
  ]);
});

test("feature layer before the target layer: every effect is exactly 0", () => {
  const fx = tinyRun({ layer: 1, featureLayer: 0 });
  const ctx = loadAnalysisContext(fx.runDir);
  const { indices } = selectInputs(ctx.ds, 8);
  const { cleanPred, outcomes } = runPatches(ctx, indices, [{ neuron: 5, value: () => 10, direct: true }]);
  assert.deepEqual(Array.from(outcomes[0]!.pred), Array.from(cleanPred));
  assert.deepEqual(Array.from(outcomes[0]!.predDirect!), Array.from(cleanPred));
  checkAgainstReference(ctx, [{ neuron: 5, value: () => 10 }], 4);
});

test("head planted on W_out[n, :] reading the target layer itself: direct = total = std·w·W_out[n, :], R² 1, controls below", async () => {
  const fx = tinyRun({ plantedDirection: "W_out", layer: 1, featureLayer: 1, n: 120, model: { dModel: 32, nHeads: 4 } });
  const ctx = loadAnalysisContext(fx.runDir);
  const s = patchingAnalysis(ctx, { nInputs: 60, controls: 20, seed: 1 });
  const w = fx.head.get("output.weight")!.data;
  const wOut = fx.planted!;
  let dot = 0;
  for (let i = 0; i < w.length; i++) dot += w[i]! * wOut[i]!;
  const expected = dot * fx.config.activation_std;
  assert.ok(expected > 0);
  close(s.direct.analytic_slope!, expected, 1e-9 * expected, "analytic direct slope");
  close(s.direct.direct_slope!, expected, 1e-4 * expected, "fitted direct slope");
  close(s.direct.total_slope!, s.direct.direct_slope!, 1e-9 * expected, "total = direct (nothing downstream)");
  close(s.direct.indirect_slope!, 0, 1e-9 * expected, "indirect slope");
  close(s.fit!.r2!, 1, 1e-6, "R² of an exactly linear relation");
  close(s.fit!.slope, expected, 1e-4 * expected, "pooled slope");
  for (const v of s.sensitivity.values) close(v!, expected, 1e-3 * expected, "per-input slope");
  assert.equal(s.controls.neurons.length, 20);
  assert.ok(!s.controls.neurons.includes(5), "controls exclude the target");
  assert.equal(s.controls.percentile_abs, 100, `control slopes ${s.controls.slopes.join(", ")} vs target ${s.controls.target_scale_slope}`);
  assert.equal(s.inputs.n_used, 60);
  assert.ok(s.inputs.from_split.test > 0 && s.inputs.from_split.test <= s.inputs.n_used);
  close(s.inputs.dataset_target_r, 1, 1e-6, "frozen run: clean activation = dataset target");
  const plots = await patchingPlots(s);
  assert.deepEqual(Object.keys(plots).sort(), ["control_slopes", "delta_scatter", "direct_vs_total", "sensitivity"]);
  for (const svg of Object.values(plots)) assert.ok(svg.startsWith("<svg"), svg.slice(0, 80));
});

test("scale ×1 changes nothing exactly; zero gives Δact = −act; set gives act' = value; resample takes another input's activation", () => {
  const fx = tinyRun({ model: { nLayers: 3 }, layer: 1, featureLayer: 2, seed: 2 });
  const ctx = loadAnalysisContext(fx.runDir);
  const { indices } = selectInputs(ctx.ds, 20);
  const acts = indices.map((i) => patchedReference(ctx, i, 5, (a) => a).act);
  const sources = indices.map((_, k) => (k + 3) % indices.length);
  const { cleanPred, outcomes } = runPatches(ctx, indices, [
    { neuron: 5, value: (a) => 1 * a, direct: true },
    { neuron: 5, value: () => 0 },
    { neuron: 5, value: () => 0.75 },
    { neuron: 5, value: (_a, k) => acts[sources[k]!]! },
  ]);
  const [one, zero, set, resample] = outcomes as [typeof outcomes[0], typeof outcomes[0], typeof outcomes[0], typeof outcomes[0]];
  for (let k = 0; k < indices.length; k++) {
    assert.equal(one.patched[k]! - one.act[k]!, 0);
    assert.equal(one.pred[k], cleanPred[k], "scale 1: Δpred exactly 0");
    assert.equal(one.predDirect![k], cleanPred[k], "scale 1: direct Δpred exactly 0");
    assert.equal(zero.patched[k]! - zero.act[k]!, -zero.act[k]!);
    close(zero.act[k]!, acts[k]!, 1e-6, "clean activation");
    assert.equal(set.patched[k], 0.75);
    assert.notEqual(sources[k], k);
    close(resample.patched[k]!, acts[sources[k]!]!, 0, "resampled value");
  }
  // the set value really is what the model sees: read back by a cache hook after the patch
  for (const input of indices.slice(0, 5)) close(patchedReference(ctx, input, 5, () => 0.75).patchedAct, 0.75, 1e-7, "read back");

  // and in the analysis: every resample source is another input, every Δ of scale ×1 is 0
  const s = patchingAnalysis(ctx, { nInputs: 20, controls: 3 });
  const one1 = s.settings.find((x) => x.label === "scale ×1")!;
  assert.equal(one1.mean_delta_act, 0);
  assert.equal(one1.mean_delta_pred, 0);
  assert.equal(one1.slope, null, "no spread of Δact: no slope");
  assert.equal(s.ablations.zero, "scale ×0");
  const zero0 = s.settings.find((x) => x.label === "scale ×0")!;
  close(zero0.mean_delta_act, -s.inputs.clean_activation.mean, 1e-9, "zero: mean Δact = −mean act");
  close(zero0.mean_act_after, 0, 0, "zero: act' = 0");
  const mean = s.settings.find((x) => x.kind === "mean")!;
  close(mean.mean_act_after, fx.dataset.meta.stats.mean, 1e-6, "mean ablation sets the dataset mean");
  assert.equal(s.settings.length, 5 + 5 + 2);
  assert.deepEqual(s.set_values, [fx.dataset.meta.stats.min, fx.dataset.meta.stats.quantiles["q25"], fx.dataset.meta.stats.quantiles["q50"], fx.dataset.meta.stats.quantiles["q75"], fx.dataset.meta.stats.max]);
  const noZero = patchingAnalysis(ctx, { nInputs: 10, controls: 0, scales: [0.5, 2] });
  assert.equal(noZero.ablations.zero, "zero");
  assert.ok(noZero.settings.some((x) => x.kind === "zero"));
  assert.equal(noZero.controls.percentile_abs, null);
});

test("linearFit against scipy.stats.linregress; R² 1 for an exactly linear relation", () => {
  const f = linearFit([1, 2, 3, 4, 5], [2.1, 3.9, 6.2, 7.8, 10.1])!;
  close(f.slope, 1.99, 1e-12, "slope");
  close(f.intercept, 0.05, 1e-12, "intercept");
  close(f.slope_se!, 0.059721576223897795, 1e-12, "slope se");
  close(f.intercept_se!, 0.19807406022327906, 1e-12, "intercept se");
  close(f.r2!, 0.9986517555689656 ** 2, 1e-12, "R²");
  close(f.slope_ci95![0], 1.7999392904005371, 1e-9, "slope CI low");
  close(f.slope_ci95![1], 2.180060709599463, 1e-9, "slope CI high");
  close(f.intercept_ci95![0], -0.5803600611301164, 1e-9, "intercept CI low");
  const exact = linearFit([0, 1, 2, 3, 4, 5, 6], [1, -1, -3, -5, -7, -9, -11])!;
  close(exact.r2!, 1, 1e-15, "R² exact");
  close(exact.slope, -2, 1e-15, "slope exact");
  close(exact.slope_se!, 0, 1e-15, "se exact");
  assert.equal(linearFit([1, 1, 1], [1, 2, 3]), null, "no spread of x: no fit");
  assert.equal(linearFit([1, 2, 3], [4, 4, 4])!.r2, null, "constant y: R² undefined");
});

test("tQuantile against scipy.stats.t.ppf", () => {
  const ref: Array<[number, number, number]> = [
    [0.975, 1, 12.706204736174694], [0.975, 2, 4.302652729749462], [0.975, 3, 3.1824463052837078], [0.975, 5, 2.5705818356363146],
    [0.975, 10, 2.228138851986274], [0.975, 30, 2.0422724563012378], [0.975, 100, 1.9839715185235518], [0.975, 1000, 1.9623390808264083],
    [0.9995, 1, 636.6192487687897], [0.05, 7, -1.8945786050900066],
  ];
  for (const [p, df, q] of ref) close(tQuantile(p, df), q, 1e-9 * Math.abs(q), `t.ppf(${p}, ${df})`);
  close(tCdf(0, 4), 0.5, 1e-15, "cdf(0)");
});

// ---------------------------------------------------------------------------------------------
// CLI

async function cli(args: string[]): Promise<{ code: number; out: string }> {
  const { code, lines } = await runCapture(["analyze", "patching", ...args]);
  return { code, out: lines.join("\n") };
}

test("CLI: writes summary.json and the four plots", async () => {
  const fx = tinyRun({ plantedDirection: "W_out", seed: 6 });
  const out = join(root, "cli-out");
  const r = await cli(["--run", fx.runDir, "--out", out, "--n-inputs", "30", "--controls", "4", "--scales", "0,1,2", "--set-values", "-0.1,0.3"]);
  assert.equal(r.code, 0, r.out);
  const s = JSON.parse(readFileSync(join(out, "summary.json"), "utf8"));
  assert.equal(s.analysis, "patching");
  assert.deepEqual(s.scales, [0, 1, 2]);
  assert.deepEqual(s.set_values, [-0.1, 0.3]);
  assert.equal(s.settings.length, 3 + 2 + 2);
  assert.equal(s.controls.k, 4);
  assert.deepEqual([...s.plots].sort(), ["control_slopes.svg", "delta_scatter.svg", "direct_vs_total.svg", "sensitivity.svg"]);
  for (const p of s.plots) assert.ok(existsSync(join(out, p)));
  assert.match(r.out, /slope/);
});

test("CLI errors: empty or non-numeric --scales name the value; a run without head.safetensors; a dataset of another neuron", async () => {
  const fx = tinyRun({ seed: 8 });
  const out = join(root, "cli-err");
  let r = await cli(["--run", fx.runDir, "--out", out, "--scales", ""]);
  assert.equal(r.code, 1);
  assert.match(r.out, /--scales must be a comma-separated list of numbers, got ""/);
  r = await cli(["--run", fx.runDir, "--out", out, "--scales", "0,abc,2"]);
  assert.equal(r.code, 1);
  assert.match(r.out, /--scales: "abc" is not a number/);
  r = await cli(["--run", fx.runDir, "--out", out, "--set-values", "1,,x"]);
  assert.equal(r.code, 1);
  assert.match(r.out, /--set-values: "x" is not a number/);
  r = await cli(["--run", fx.runDir, "--out", out, "--controls", "64"]);
  assert.equal(r.code, 1);
  assert.match(r.out, /--controls must be an integer in 0\.\.63/);

  const other = tinyRun({ seed: 8, neuron: 9 });
  r = await cli(["--run", fx.runDir, "--data", other.datasetPath, "--out", out]);
  assert.equal(r.code, 1);
  assert.match(r.out, /does not belong to run .*neuron 9 ≠ run's 5/);

  unlinkSync(join(fx.runDir, "head.safetensors"));
  r = await cli(["--run", fx.runDir, "--out", out]);
  assert.equal(r.code, 1);
  assert.match(r.out, /head\.safetensors is missing/);
  assert.equal(r.out.split("\n").length, 1, `one line: ${r.out}`);
});

// ---------------------------------------------------------------------------------------------
// --positions all: the neuron patched at every position

/** Independent reference: one input, a whole forward with the neuron set at every position, the head at the read position. */
function allPositionsReference(ctx: AnalysisContext, input: number, neuron: number, value: (a: number) => number): number {
  const c = ctx.run.config;
  const hook = targetHookName(c.target_layer, c.layer_type);
  const batch = exampleBatch(ctx.ds, [input], padIdFor(ctx.model));
  const T = batch.len;
  const width = c.layer_type === "mlp_post" ? ctx.model.cfg.dMlp : ctx.model.cfg.dModel;
  const C = ctx.model.cfg.dModel;
  const feature = `blocks.${c.feature_layer}.hook_resid_post`;
  return noGrad(() => {
    const { cache } = ctx.model.runWithCache(batch, [feature], {
      stopAtLayer: Math.max(c.target_layer, c.feature_layer) + 1,
      hooks: [[hook, (a) => {
        const out = a.clone();
        for (let t = 0; t < T; t++) out.data[t * width + neuron] = value(a.data[t * width + neuron]!);
        return out;
      }]],
    });
    const pos = batch.positions[0]!;
    const x = new Tensor(cache.get(feature)!.data.slice(pos * C, (pos + 1) * C), [1, C]);
    const out = headForward(c.head_config, ctx.run.head, x, ctx.model);
    return predictionsFromOutput(ctx.run.headType, out, ctx.run.readout)[0]!;
  });
}

test("--positions all: equals a whole-forward reference that sets every position; differs from read-only patching downstream", () => {
  const fx = tinyRun({ model: { nLayers: 3 }, layer: 0, featureLayer: 2, randomLn: true, seed: 4 });
  const ctx = loadAnalysisContext(fx.runDir);
  sharpen(ctx);
  const { indices } = selectInputs(ctx.ds, 10);
  const patches = sweep(5);
  const all = runPatchesAllPositions(ctx, indices, patches);
  const read = runPatches(ctx, indices, patches);
  let worst = 0;
  let size = 0;
  let differs = 0;
  indices.forEach((input, k) => {
    patches.forEach((pt, j) => {
      const ref = allPositionsReference(ctx, input, pt.neuron, (a) => pt.value(a, k));
      const refClean = allPositionsReference(ctx, input, pt.neuron, (a) => a);
      close(all.cleanPred[k]!, refClean, 1e-5 * Math.max(1, Math.abs(refClean)), "clean prediction");
      size = Math.max(size, Math.abs(ref - refClean));
      worst = Math.max(worst, Math.abs(all.outcomes[j]!.pred[k]! - all.cleanPred[k]! - (ref - refClean)));
      differs = Math.max(differs, Math.abs(all.outcomes[j]!.pred[k]! - read.outcomes[j]!.pred[k]!));
      close(all.outcomes[j]!.act[k]!, read.outcomes[j]!.act[k]!, 1e-6, "the read position's clean activation");
    });
  });
  assert.ok(worst <= 1e-4 * size, `all positions vs reference: worst ${worst}, largest |Δprediction| ${size}`);
  assert.ok(differs > 1e-3 * size, `patching every position must reach the read position through attention: largest difference ${differs}`);
});

test("--positions all with the head reading the target layer itself: no later block, so it equals read-only patching", () => {
  const fx = tinyRun({ layer: 1, featureLayer: 1, seed: 8 });
  const ctx = loadAnalysisContext(fx.runDir);
  const { indices } = selectInputs(ctx.ds, 10);
  const patches = sweep(5).map((p) => ({ ...p, direct: true }));
  const all = runPatchesAllPositions(ctx, indices, patches);
  const read = runPatches(ctx, indices, patches);
  patches.forEach((_, j) => indices.forEach((_, k) => {
    close(all.outcomes[j]!.pred[k]!, read.outcomes[j]!.pred[k]!, 1e-5, `patch ${j}, input ${k}`);
    close(all.outcomes[j]!.predDirect![k]!, read.outcomes[j]!.predDirect![k]!, 1e-5, `direct, patch ${j}, input ${k}`);
  }));
});

test("--positions both: the summary keeps read-position numbers and adds the all-positions fit; bad values are refused", async () => {
  const fx = tinyRun({ model: { nLayers: 3 }, layer: 0, featureLayer: 2, seed: 5 });
  const ctx = loadAnalysisContext(fx.runDir);
  const read = patchingAnalysis(ctx, { nInputs: 12, controls: 2, bootstrap: 50 });
  const both = patchingAnalysis(ctx, { nInputs: 12, controls: 2, bootstrap: 50, positions: "both" });
  const all = patchingAnalysis(ctx, { nInputs: 12, controls: 2, bootstrap: 50, positions: "all" });
  assert.equal(read.positions, "read");
  assert.equal(read.all_positions, null);
  assert.equal(both.fit!.slope, read.fit!.slope);
  assert.equal(both.all_positions!.fit!.slope, all.fit!.slope);
  assert.equal(all.positions, "all");
  assert.throws(() => patchingAnalysis(ctx, { positions: "some" as never }), /--positions must be one of read, all, both, got some/);
  const r = await cli(["--run", fx.runDir, "--out", join(root, "pos-bad"), "--positions", "every"]);
  assert.notEqual(r.code, 0);
  assert.match(r.out, /--positions must be one of read, all, both, got "every"/);
});
