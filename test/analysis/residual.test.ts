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
  }
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
  }
  close(l1!.share_of_prediction_change!, 1, 1e-4, "target layer carries the whole prediction change (float32 predictions)");
  close(l1!.coupled_change_cosines.W_out, 1, 1e-6, "β ∥ W_out[n, :]");
  close(l1!.coupled_change_norm, alpha * Math.hypot(...row), 1e-4 * alpha * Math.hypot(...row), "‖β‖ = α‖W_out[n, :]‖");
  close(Math.abs(l1!.mean_change_cosines.W_out), 1, 1e-6, "mean change ∥ W_out[n, :]");
  close(l1!.coupled_change_cosines.head, 1, 1e-6, "the head was planted on W_out[n, :]");
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

test("partial run whose lower blocks moved gets a note; parameterChanges names layers and kinds", () => {
  const fx = tinyRun({ freeze: "partial", finetuneNoise: 0.01, seed: 5 });
  const ctx = loadAnalysisContext(fx.runDir);
  const s = residualAnalysis(ctx, { nInputs: 20 });
  assert.ok(s.notes.some((n) => /blocks below 1 changed although the run trained only the last 1 block/.test(n)), s.notes.join("; "));
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
