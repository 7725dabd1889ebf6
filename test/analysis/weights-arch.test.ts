/**
 * The weights analysis on the other families (test/helpers/run-fixture.ts `arch`): a Llama-family
 * model (RMSNorm, gated MLP: the neuron is silu(x·W_gate[:, n])·(x·W_in[:, n])) and a GPT-NeoX one
 * (LayerNorm, parallel block). Known answers both ways: a head planted on a reader (W_in or W_gate,
 * RMSNorm's weight folded, nothing centred) scores cosine 1 and rank 1 on that reader and gets "no"
 * ("it recomputes the neuron's input"); a head planted on W_out scores cosine 1 and rank 1 on W_out.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { loadAnalysisContext } from "../../src/analysis/context.ts";
import { weightsAnalysis, foldedReader, neuronVector, type WeightsSummary } from "../../src/analysis/weights.ts";
import { weightsOnlyAnalysis } from "../../src/analysis/weights-only.ts";
import { weightsVerdict } from "../../src/report/verdicts.ts";
import { patchingAnalysis } from "../../src/analysis/patching.ts";
import { loadModel } from "../../src/model/load.ts";
import { tinyRunFolder, type TinyRunOptions } from "../helpers/run-fixture.ts";
import { close } from "../helpers/close.ts";

const { tinyRun } = tinyRunFolder("weights-arch");

function analyse(opts: TinyRunOptions): { s: WeightsSummary; fx: ReturnType<typeof tinyRun> } {
  const fx = tinyRun(opts);
  return { s: weightsAnalysis(loadAnalysisContext(fx.runDir)), fx };
}

test("gated MLP (Llama family): W_in and W_gate are both compared; the folded readers are ln2.w ⊙ column, not centred", () => {
  const { s, fx } = analyse({ arch: "llama", plantedDirection: "W_gate_folded", weights: "raw", model: { dModel: 32, nHeads: 4 } });
  assert.deepEqual(s.vectors, ["W_in_raw", "W_in_folded", "W_gate_raw", "W_gate_folded", "W_out"]);
  close(s.reading.W_gate_folded!.cosine, 1, 1e-5, "planted on the folded gate");
  assert.equal(s.reading.W_gate_folded!.rank_in_layer, 1);
  assert.equal(s.reading.W_gate_folded!.rank_overall, 1);
  // the folded gate by hand: ln2.w[c]·W_gate[c, n], no mean removed (the raw tiny model's RMSNorm weights are not 1)
  const m = fx.model;
  const { dModel: C, dMlp: M } = m.cfg;
  const ln2 = m.ln2W(1).data;
  assert.ok(ln2.some((v) => Math.abs(v - 1) > 0.05), "the tiny model's ln2 weights are not all 1");
  const F = foldedReader(m, 1, "W_gate");
  for (let c = 0; c < C; c++) close(F[c * M + 5]!, ln2[c]! * m.W_gate(1).data[c * M + 5]!, 1e-6, `folded gate [${c}]`);
  const mean = Array.from({ length: C }, (_, c) => F[c * M + 5]!).reduce((a, b) => a + b, 0) / C;
  assert.ok(Math.abs(mean) > 1e-4, "not centred");
  // where the neuron reads, in words; the gate's readout correlation is reported beside W_in's
  assert.match(s.w_in!.spaces, /the normalised resid_mid of layer 1 \(RMSNorm ln2 applied\)/);
  assert.ok(s.w_in!.gate_readout_correlation !== null && Math.abs(s.w_in!.gate_readout_correlation - 1) < 1e-6, `gate readout r ${s.w_in!.gate_readout_correlation}`);
  assert.match(s.w_in!.note, /RMSNorm removes no mean/);
  // the verdict: it reads what the neuron reads (its gate), not what it writes
  const v = weightsVerdict(s);
  assert.equal(v.level, "no", v.headline);
  assert.match(v.headline, /It reads what the neuron reads \(W_gate\[:, 5\]\) instead/);
  assert.match(v.evidence.join("\n"), /W_gate\[:, 5\] \(ln2 folded/);
});

test("gated MLP: planted on W_in (folded) → W_in cosine 1, rank 1; planted on W_out → W_out cosine 1, rank 1; tl weights need no fold", () => {
  const opts: TinyRunOptions = { arch: "llama", model: { dModel: 32, nHeads: 4 } };
  const onIn = analyse({ ...opts, plantedDirection: "W_in_folded" }).s;
  close(onIn.reading.W_in_folded!.cosine, 1, 1e-5, "W_in folded");
  assert.equal(onIn.reading.W_in_folded!.rank_in_layer, 1);
  assert.ok(Math.abs(onIn.reading.W_gate_folded!.cosine) < 0.9, "W_in and W_gate are different vectors");
  assert.equal(weightsVerdict(onIn).level, "no");
  const onOut = analyse({ ...opts, plantedDirection: "W_out" }).s;
  close(onOut.reading.W_out!.cosine, 1, 1e-5, "W_out");
  assert.equal(onOut.reading.W_out!.rank_in_layer, 1);
  // tl weights fold RMSNorm's weight into W_in and W_gate: raw and folded vectors are one
  const tl = analyse({ ...opts, weights: "tl", plantedDirection: "W_gate" });
  assert.equal(tl.s.w_in!.ln2_already_folded, true);
  close(tl.s.reading.W_gate_folded!.cosine, 1, 1e-5, "tl: W_gate = its folded self");
  const raw = loadModel(tl.fx.modelDir, { weights: "raw" }).model;
  const tlModel = tl.fx.model;
  // the tl gate column is the raw folded one
  const a = neuronVector(tlModel, "W_gate_raw", 1, 5);
  const b = neuronVector(raw, "W_gate_folded", 1, 5);
  for (let c = 0; c < a.length; c++) close(a[c]!, b[c]!, 1e-5, `tl W_gate[${c}, 5] = raw ln2.w ⊙ W_gate`);
  // the weights-only summary lists the gate too
  const ctx = loadAnalysisContext(tl.fx.runDir);
  const only = weightsOnlyAnalysis(ctx.run, ctx.model, tl.fx.runDir);
  close(only.reading.W_gate_folded!.cosine, 1, 1e-5, "weights-only: the gate too");
});

test("GPT-NeoX (parallel block): the neuron reads ln2 of resid_pre; the folded W_in is centred (LayerNorm); no gate", () => {
  const { s, fx } = analyse({ arch: "neox", plantedDirection: "W_in_folded", model: { dModel: 32, nHeads: 4 } });
  assert.deepEqual(s.vectors, ["W_in_raw", "W_in_folded", "W_out"]);
  close(s.reading.W_in_folded!.cosine, 1, 1e-5, "planted");
  assert.match(s.w_in!.spaces, /the normalised resid_pre of layer 1 \(LayerNorm ln2 applied; a parallel block/);
  assert.equal(s.w_in!.gate_readout_correlation, null);
  const F = foldedReader(fx.model, 1, "W_in");
  const { dModel: C, dMlp: M } = fx.model.cfg;
  const mean = Array.from({ length: C }, (_, c) => F[c * M + 5]!).reduce((x, y) => x + y, 0) / C;
  assert.ok(Math.abs(mean) < 1e-6, "centred after a LayerNorm");
});

test("patching runs on both families through the shared block (read rows and all positions): a head planted on W_out has slope > 0", () => {
  for (const arch of ["llama", "neox"] as const) {
    const fx = tinyRun({ arch, plantedDirection: "W_out", model: { dModel: 32, nHeads: 4 } });
    const ctx = loadAnalysisContext(fx.runDir);
    const read = patchingAnalysis(ctx, { nInputs: 4, controls: 3, positions: "both" });
    assert.ok(read.fit !== null && read.fit.slope > 0, `${arch}: slope ${read.fit?.slope}`);
    assert.ok(read.all_positions !== null && read.all_positions !== undefined, `${arch}: the all-positions pass ran`);
  }
});
