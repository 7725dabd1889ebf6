/**
 * The weights analysis of a run without a dataset (an imported run): the weight-only measures equal
 * those of the full analysis on the same run with its dataset, and the data-dependent ones are listed
 * as skipped with the commands that add them; `analyze weights` without --data runs it.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync, writeFileSync, existsSync } from "node:fs";
import { join } from "node:path";
import { loadAnalysisContext } from "../../src/analysis/context.ts";
import { weightsAnalysis } from "../../src/analysis/weights.ts";
import { weightsOnlyAnalysis, type WeightsOnlySummary } from "../../src/analysis/weights-only.ts";
import { loadRun, loadRunModel, type RunConfig } from "../../src/selfreport/run.ts";
import { runCapture } from "../helpers/cli.ts";
import { tinyRunFolder, type TinyRunOptions } from "../helpers/run-fixture.ts";
import { close } from "../helpers/close.ts";

const { root, tinyRun } = tinyRunFolder("weights-only");
let counter = 0;

/** A tiny run, plus the same run with its dataset reference removed (as import-pt writes it). */
function runPair(opts: TinyRunOptions): { withData: string; without: string } {
  const fx = tinyRun(opts);
  const cfgPath = join(fx.runDir, "config.json");
  const cfg = JSON.parse(readFileSync(cfgPath, "utf8")) as RunConfig;
  const again = tinyRun(opts); // same options and seeds: the same model, head and data
  writeFileSync(join(again.runDir, "config.json"), JSON.stringify({ ...cfg, dataset: { ...cfg.dataset, path: "", n: 0 }, training: {} }));
  return { withData: fx.runDir, without: again.runDir };
}

for (const opts of [{ plantedDirection: "W_out" as const }, { head: "classification" as const, seed: 3 }, { head: "token" as const, seed: 5 }, { layerType: "mlp_out" as const, seed: 2 }]) {
  test(`weight-only measures equal the full analysis's (${JSON.stringify(opts)})`, () => {
    const { withData, without } = runPair(opts);
    const full = weightsAnalysis(loadAnalysisContext(withData));
    const run = loadRun(without);
    const s = weightsOnlyAnalysis(run, loadRunModel(run), "OUT");
    assert.equal(s.mode, "weights only");
    assert.deepEqual(s.target, full.target);
    assert.deepEqual(s.null_model, full.null_model);
    assert.deepEqual(s.vectors, full.vectors);
    assert.deepEqual(s.reading, full.reading);
    assert.deepEqual(s.layer_cosines["reading_W_out"], full.layer_cosines["reading_W_out"]);
    assert.deepEqual(s.layer_cosines["reading_e_n"], full.layer_cosines["reading_e_n"]);
    assert.deepEqual(s.w_out_pca, full.w_out_pca);
    assert.deepEqual(s.w_in, full.w_in === null ? null : { ln2_already_folded: full.w_in.ln2_already_folded, note: full.w_in.note });
    assert.deepEqual(s.head.direction, full.head.direction);
    assert.equal(s.head.method, full.head.method);
    const writeKind = full.vectors.includes("W_out") ? "W_out" : "e_n";
    assert.equal(s.direct_write.cosine, full.reading[writeKind]!.cosine);
    if (full.head.type === "regression") {
      // a linear regression head's gradient is constant, so ḡ·W_out needs no examples
      close(s.direct_write.w_dot_write!, full.direct_write.w_dot_write!, 1e-6 * Math.abs(full.direct_write.w_dot_write!), "w_dot_write");
    } else {
      assert.equal(s.direct_write.w_dot_write, null);
      assert.match(s.direct_write.note, /needs examples/);
    }
    assert.deepEqual(s.skipped.map((k) => k.field), ["examples", "pattern", "whitened", "w_in.readout_correlation", "residual", "gradient", "direct_write.share"]);
    for (const k of s.skipped) assert.equal(k.command, s.skipped[0]!.command);
    const c = run.config;
    assert.equal(s.skipped[0]!.command,
      `selfreport dataset --model ${c.base_model_dir} --layer ${c.target_layer} --neuron ${c.target_neuron}${c.layer_type === "mlp_out" ? " --layer-type mlp_out" : ""} --weights ${c.weights} --out ${join(without, "dataset.safetensors")}` +
      ` && selfreport analyze weights --run ${without} --data ${join(without, "dataset.safetensors")} --out OUT --force`);
  });
}

test("analyze weights without --data on a run without a dataset: weights only, skipped listed with the commands; a hidden-layer head is a one-line error", async () => {
  const { without } = runPair({ plantedDirection: "W_out", seed: 9 });
  const out = join(root, `out${counter++}`);
  const r = await runCapture(["analyze", "weights", "--run", without, "--out", out]);
  assert.equal(r.code, 0, r.lines.join("\n"));
  assert.match(r.lines[0]!, /^regression head reading resid_post of layer 1; target blocks\.1\.mlp\.hook_post\[5\] \(no dataset: weights only, null std 0\.2500\)$/);
  assert.match(r.lines.find((l) => l.includes("W_out "))!, /W_out +cosine +1\.0000 +z +4\.00 +rank 1\/64 in layer, rank 1\/128 overall/);
  assert.ok(r.lines.includes("skipped (need examples): examples, pattern, whitened, w_in.readout_correlation, residual, gradient, direct_write.share; add them with:"), r.lines.join("\n"));
  const summary = JSON.parse(readFileSync(join(out, "summary.json"), "utf8")) as WeightsOnlySummary & { analysis: string; plots: string[] };
  assert.equal(summary.analysis, "weights");
  assert.equal(summary.mode, "weights only");
  assert.ok(r.lines.includes(`  ${summary.skipped[0]!.command}`));
  assert.deepEqual(summary.plots.sort(), ["reading_vs_W_in.svg", "reading_vs_W_out.svg", "w_out_pca.svg"]);
  for (const p of summary.plots) assert.ok(existsSync(join(out, p)), `${p} written`);


  const hidden = runPair({ hiddenDim: 3, seed: 4 }).without;
  const bad = await runCapture(["analyze", "weights", "--run", hidden, "--out", join(root, `out${counter++}`)]);
  assert.equal(bad.code, 1);
  assert.equal(bad.lines.length, 1, bad.lines.join("\n"));
  assert.ok(bad.lines[0]!.startsWith(`selfreport: error: run ${hidden} has no dataset, and its head has a hidden layer, whose reading direction is the mean gradient over examples; add one with \`selfreport dataset --model `), bad.lines[0]);
});
