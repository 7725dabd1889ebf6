/**
 * Known-answer tests of the residual-stream analysis on tiny hand-made fine-tuned runs
 * (test/helpers/run-fixture.ts): an identical "fine-tuned" model changes nothing; a fine-tune that
 * only adds α·W_out[n, :] to the neuron's own output row writes exactly α·a·W_out[n, :] into the
 * residual (β = α·W_out[n, :], cosine 1, the whole prediction change in the target layer); the
 * read-out decomposition adds up exactly for a linear head; and the errors (frozen run, bad options).
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { loadAnalysisContext } from "../../src/analysis/context.ts";
import { residualAnalysis, residualPlots, parameterChanges, type ResidualSummary } from "../../src/analysis/residual.ts";
import { loadModel, saveModel } from "../../src/model/load.ts";
import { finetunedDir } from "../../src/selfreport/run.ts";
import { runCapture } from "../helpers/cli.ts";
import { Rng } from "../../src/tensor/index.ts";
import { residualVerdict } from "../../src/report/verdicts.ts";
import { tinyRunFolder } from "../helpers/run-fixture.ts";
import { close } from "../helpers/close.ts";

process.env["SELFREPORT_QUIET"] = "1";
const { root, tinyRun } = tinyRunFolder("residual");
let counter = 0; // for output folders


/** Captures console output of a CLI call; returns the exit code and the lines. */
const cli = (args: string[]): Promise<{ code: number; lines: string[] }> => runCapture(["analyze", "residual", ...args]);

test("a fine-tuned model identical to its base: every change is exactly 0, the neuron is unchanged", () => {
  const fx = tinyRun({ freeze: "unfrozen", finetuneNoise: 0, seed: 1 });
  const s = residualAnalysis(loadAnalysisContext(fx.runDir), { nInputs: 30 });
  assert.equal(s.layers.length, 1 + 2); // embed, blocks 0 and 1
  for (const l of s.layers) {
    assert.equal(l.mean_norm_change, 0, `layer ${l.layer}`);
    assert.equal(l.readout_change, 0);
    assert.equal(l.share_of_prediction_change, null, "no prediction change to share");
    assert.equal(l.status, "unchanged");
    assert.equal(l.coupled_change_cosines, null, "noise has no direction");
    assert.equal(l.mean_change_cosines, null);
  }
  assert.equal(s.predictions.split, null);
  for (const p of s.parameters) assert.equal(p.change_norm, 0, p.name);
  close(s.neuron.r, 1, 1e-12, "neuron r");
  assert.equal(s.neuron.rms_difference, 0);
  assert.equal(s.predictions.mean_abs_change, 0);
});

test("fine-tune adds α·W_out[n, :] to the neuron's output row: Δresid = α·a·W_out[n, :] in the target layer only", () => {
  const alpha = 0.75;
  const fx = tinyRun({ freeze: "unfrozen", finetuneNoise: 0, layer: 1, neuron: 5, featureLayer: 1, plantedDirection: "W_out", n: 90, seed: 2, model: { dModel: 24, nHeads: 2 } });
  // rewrite the fine-tuned model: W_out[5, :] ← (1 + α)·W_out[5, :]
  const ft = loadModel(finetunedDir(fx.runDir), { weights: "raw" }).model;
  const C = ft.cfg.dModel;
  const Wout = ft.W_out(1).data;
  const row = Float64Array.from(Wout.subarray(5 * C, 6 * C));
  for (let c = 0; c < C; c++) Wout[5 * C + c] = (1 + alpha) * row[c]!;
  saveModel(ft, finetunedDir(fx.runDir));

  const s = residualAnalysis(loadAnalysisContext(fx.runDir), { nInputs: 40 });
  const [embed, l0, l1] = s.layers;
  for (const l of [embed!, l0!]) {
    assert.equal(l.mean_norm_change, 0, `layer ${l.layer} is before the change`);
    assert.equal(l.share_of_prediction_change, 0);
    assert.equal(l.status, "unchanged");
    assert.equal(l.coupled_change_cosines, null);
  }
  assert.equal(l1!.status, "changed");
  close(l1!.share_of_prediction_change!, 1, 1e-4, "target layer carries the whole prediction change (float32 predictions)");
  close(l1!.share_of_coupled_change!, 1, 1e-6, "and the whole part that tracks the neuron");
  close(l1!.coupled_change_cosines!.W_out, 1, 1e-6, "β ∥ W_out[n, :]");
  close(l1!.coupled_change_norm, alpha * Math.hypot(...row), 1e-4 * alpha * Math.hypot(...row), "‖β‖ = α‖W_out[n, :]‖");
  close(Math.abs(l1!.mean_change_cosines!.W_out), 1, 1e-6, "mean change ∥ W_out[n, :]");
  close(l1!.coupled_change_cosines!.head, 1, 1e-6, "the head was planted on W_out[n, :]");
  // Δpred_i = k·a_i exactly: a mean shift k·ā plus the tracking part k·(a_i − ā), no rest
  const sp = s.predictions.split!;
  close(sp.share_mean_shift + sp.share_coupled + sp.share_rest, 1, 1e-9, "the three parts add up");
  assert.ok(sp.share_rest < 1e-6, `rest ${sp.share_rest}`);
  const act = fx.dataset.targets;
  assert.ok(sp.share_coupled > 0 && act.length > 0);
  close(l1!.increment_r_with_activation!, 1, 1e-6, "the increment is α·a·(g·W_out): r = 1 with a");
  close(s.readout.linearisation_r2!, 1, 1e-6, "linear head: exact up to float32 predictions");
  // the only tensor that moved is blocks.1.mlp.W_out, by α·‖row‖ / ‖W_out‖
  const moved = s.parameters.filter((p) => p.change_norm > 0);
  assert.deepEqual(moved.map((p) => p.name), ["blocks.1.mlp.W_out"]);
  const base = fx.model.W_out(1).data;
  close(moved[0]!.relative!, (alpha * Math.hypot(...row)) / Math.hypot(...base), 1e-6, "relative Frobenius change");
  // the neuron itself reads from before the change
  close(s.neuron.r, 1, 1e-9, "neuron unchanged");
  assert.ok(s.neuron.rms_difference < 1e-6);
});

test("random fine-tune, linear head: layer increments add up to the prediction change exactly", () => {
  const fx = tinyRun({ freeze: "unfrozen", finetuneNoise: 0.05, model: { nLayers: 3 }, seed: 3 });
  const s = residualAnalysis(loadAnalysisContext(fx.runDir), { nInputs: 50 });
  const total = s.layers.reduce((a, l) => a + l.share_of_prediction_change!, 0);
  close(total, 1, 1e-5, "Σ shares");
  close(s.layers.at(-1)!.readout_change, s.predictions.mean_change, 1e-5 * Math.max(1, s.predictions.mean_abs_change), "cumulative read-out change at the feature layer = mean Δpred");
  close(s.readout.linearisation_r2!, 1, 1e-6, "linear head");
  assert.ok(s.layers.slice(1).every((l) => l.mean_norm_change > 0));
  assert.ok(s.parameters.every((p) => p.change_norm > 0));
  assert.ok(s.notes.length === 0, s.notes.join("; "));
});

test("classification head with a hidden layer: the first-order decomposition is close for a small fine-tune", () => {
  const fx = tinyRun({ freeze: "unfrozen", finetuneNoise: 0.005, head: "classification", hiddenDim: 8, seed: 4 });
  const s = residualAnalysis(loadAnalysisContext(fx.runDir), { nInputs: 40 });
  assert.ok(s.readout.linearisation_r2! > 0.99, `R² ${s.readout.linearisation_r2}`);
  const total = s.layers.reduce((a, l) => a + l.share_of_prediction_change!, 0);
  close(total, 1, 0.02, "Σ shares ≈ 1");
  assert.ok(s.notes.some((n) => /first order/.test(n)));
});

test("partial run: the blocks training froze (all but F−k+1..F and ln_final) are checked, with a noise floor", () => {
  // 3 blocks, the head reads layer 1, k = 1: block 1 and ln_final train; blocks 0 and 2, embeddings, unembed are frozen
  const fx = tinyRun({ freeze: "partial", finetuneNoise: 0, seed: 5, featureLayer: 1, model: { nLayers: 3 } });
  const ft = loadModel(finetunedDir(fx.runDir), { weights: "raw" }).model;
  const rng = new Rng(9);
  const nudge = (name: string, relative: number): void => {
    const t = ft.p(name).data;
    let norm = 0;
    for (let i = 0; i < t.length; i++) norm += t[i]! ** 2;
    const step = (relative * Math.sqrt(norm)) / Math.sqrt(t.length);
    for (let i = 0; i < t.length; i++) t[i]! += step * (rng.uniform() < 0.5 ? -1 : 1);
  };
  for (const [name] of ft.params) if (name.startsWith("blocks.1.") || name.startsWith("ln_final.")) nudge(name, 0.05); // trained: may move
  saveModel(ft, finetunedDir(fx.runDir));
  const clean = residualAnalysis(loadAnalysisContext(fx.runDir), { nInputs: 20 });
  assert.deepEqual(clean.frozen_check, { frozen_blocks: [0, 2], checked: clean.frozen_check!.checked, moved: [] });
  assert.ok(clean.frozen_check!.checked >= 2 * 12, "every tensor of blocks 0 and 2 and the embeddings is checked");
  assert.ok(!clean.notes.some((n) => /frozen/.test(n)), clean.notes.join("; "));
  // round-off-sized changes of a frozen tensor are below the floor; a real one is named
  nudge("blocks.0.attn.W_Q", 1e-8);
  nudge("blocks.2.mlp.W_in", 1e-3);
  saveModel(ft, finetunedDir(fx.runDir));
  const moved = residualAnalysis(loadAnalysisContext(fx.runDir), { nInputs: 20 });
  assert.deepEqual(moved.frozen_check!.moved, ["blocks.2.mlp.W_in"]);
  assert.ok(moved.notes.some((n) => /1 tensor\(s\) that training kept frozen \(everything but blocks 1\.\.1 and ln_final\) changed/.test(n)), moved.notes.join("; "));
  assert.equal(moved.parameters.find((p) => p.name === "blocks.0.attn.W_Q")!.changed, false);
});

test("a fine-tune that only shifts the prediction's mean: the split says so, no layer tracks the neuron, verdict no", () => {
  const fx = tinyRun({ freeze: "unfrozen", finetuneNoise: 0, seed: 6, featureLayer: 1, plantedDirection: "W_out", n: 60 });
  const ft = loadModel(finetunedDir(fx.runDir), { weights: "raw" }).model;
  const C = ft.cfg.dModel;
  const bOut = ft.b_out(1).data; // a constant write into resid_post of layer 1, along the head's direction
  const w = fx.head.get("output.weight")!.data;
  for (let c = 0; c < C; c++) bOut[c]! += 0.5 * w[c]! / Math.hypot(...w);
  saveModel(ft, finetunedDir(fx.runDir));
  const s = residualAnalysis(loadAnalysisContext(fx.runDir), { nInputs: 40 });
  const sp = s.predictions.split!;
  close(sp.share_mean_shift, 1, 1e-6, "all of the change is a mean shift");
  assert.ok(sp.share_coupled < 1e-6, `coupled ${sp.share_coupled}`);
  const l1 = s.layers.find((l) => l.layer === 1)!;
  assert.equal(l1.status, "changed");
  assert.equal(l1.coupled_change_cosines, null, "the change does not track the neuron: no β direction");
  for (const l of s.layers) assert.equal(l.share_of_coupled_change, null);
  const v = residualVerdict(s);
  assert.equal(v.level, "no", v.headline);
  assert.ok(v.evidence.some((e) => /100\.0% is a mean shift/.test(e)), v.evidence.join(" | "));
});

test("parameterChanges names layers and kinds", () => {
  const fx = tinyRun({ freeze: "partial", finetuneNoise: 0.01, seed: 5 });
  const ctx = loadAnalysisContext(fx.runDir);
  const p = parameterChanges(ctx.baseModel, ctx.model);
  const q = p.find((x) => x.name === "blocks.0.attn.W_Q")!;
  assert.equal(q.layer, 0);
  assert.equal(q.kind, "attn.W_Q");
  const e = p.find((x) => x.name === "embed.W_E")!;
  assert.equal(e.layer, null);
  assert.equal(e.kind, "embed.W_E");
});

test("errors: a frozen run is refused with the reason; bad --n-inputs; the CLI writes summary.json and the plots", async () => {
  const frozen = tinyRun({ seed: 6 });
  assert.throws(() => residualAnalysis(loadAnalysisContext(frozen.runDir)), /run .* is frozen: only the head was trained, the model is the base model and its residual stream did not change/);
  const fx = tinyRun({ freeze: "unfrozen", finetuneNoise: 0.02, seed: 7 });
  assert.throws(() => residualAnalysis(loadAnalysisContext(fx.runDir), { nInputs: 2 }), /--n-inputs must be an integer ≥ 3, got 2/);

  const out = join(root, `out${counter++}`);
  const ok = await cli(["--run", fx.runDir, "--out", out, "--n-inputs", "25"]);
  assert.equal(ok.code, 0, ok.lines.join("\n"));
  const summary = JSON.parse(readFileSync(join(out, "summary.json"), "utf8")) as ResidualSummary & { analysis: string; plots: string[] };
  assert.equal(summary.analysis, "residual");
  assert.equal(summary.inputs.n_used, 25);
  assert.deepEqual([...summary.plots].sort(), ["direction_cosines.svg", "layer_change.svg", "neuron_before_after.svg", "param_change.svg", "readout_share.svg"]);
  for (const p of summary.plots) assert.ok(readFileSync(join(out, p), "utf8").includes("<svg"), `${p} is an SVG`);

  const bad = await cli(["--run", frozen.runDir, "--out", join(root, "never")]);
  assert.equal(bad.code, 1);
  assert.equal(bad.lines.length, 1, bad.lines.join("\n"));
  assert.match(bad.lines[0]!, /^selfreport: error: analyze residual compares a fine-tuned model with its base/);
  assert.ok(!existsSync(join(root, "never")), "nothing written for a refused run");
});

test("plots render for a summary with every layer", async () => {
  const fx = tinyRun({ freeze: "unfrozen", finetuneNoise: 0.02, seed: 8 });
  const plots = await residualPlots(residualAnalysis(loadAnalysisContext(fx.runDir), { nInputs: 10 }));
  assert.equal(Object.keys(plots).length, 5);
});
