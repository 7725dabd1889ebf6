/**
 * patching: the activation-patching analysis on GPT-2-small shapes (12 layers, d_model 768, 12 heads,
 * d_mlp 3072, vocab 50257, random weights), target blocks.8.mlp.hook_post neuron 481, a frozen
 * regression head on resid_post of block 11.
 *   run      the tests' hand-written run fixture (test/helpers/run-fixture.ts) at that size: the model
 *            saved and reloaded, a dataset of 600 prefixes (≤ 64 tokens, 8 per random window) whose
 *            targets are the neuron's activations, and run/config.json + head weights. Not timed.
 *   fast     patchingAnalysis (src/analysis/patching.ts) over 500 inputs with the default target
 *            settings (5 scales, 5 set values, mean, resample = 12), no controls: the batched path that
 *            recomputes only the patched read-position row through the later blocks.
 *   +controls  the same with the default 20 control neurons × 5 scales (112 settings per input).
 *   naive    the reference patch (patchedReference): one whole forward per input and setting, up to
 *            the feature layer, with a hook that sets the neuron; timed on NAIVE_INPUTS inputs × the
 *            12 target settings plus the clean pass, extrapolated to 500 inputs.
 * speed-up = naive seconds ÷ fast seconds for the same 500 × 12 patches.
 * Roofline: matmul FLOPs (bench/flops.ts) ÷ seconds as a fraction of this run's reference sgemm rate
 * (target ≥ 85 %, a forward). Counted on the unpadded prefix lengths of the 500 inputs: the batched
 * path = a clean forward through the 12 blocks + one row per input and setting through the blocks
 * after the target's (9, 10, 11: the block's products for one token + its attention row over the
 * prefix); rows the analysis skips because Δact = 0 are counted too. The naive path = one forward
 * through 12 blocks per input and setting, plus the clean one, on the inputs it was timed on. The
 * head, the fit and the bootstrap are not counted.
 * Peak RSS: this section's Node process so far (run.ts runs each section in a child).
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { getBackend } from "../src/tensor/index.ts";
import { loadAnalysisContext, selectInputs } from "../src/analysis/context.ts";
import { patchingAnalysis, patchedReference } from "../src/analysis/patching.ts";
import { makeTinyRun } from "../test/helpers/run-fixture.ts";
import type { BenchRow } from "./run.ts";
import { envCount, nodePeakRssMb, timeRuns, sgemmReference, sgemmRefText, rooflineCell } from "./util.ts";
import { attentionFlopsPerSequence, blockFlopsPerToken, forwardFlops, type ModelShape } from "./flops.ts";

const SIZES = { nLayers: 12, dModel: 768, nHeads: 12, nCtx: 1024, dVocab: 50257 };
const LAYER = 8;
const NEURON = 481;
const N_INPUTS = 500;
/** BENCH_PATCHING_NAIVE: inputs for the naive reference (default 2), extrapolated to N_INPUTS. */
const NAIVE_INPUTS = envCount("BENCH_PATCHING_NAIVE", 2);

/** Seconds of one call of fn, no warm-up. */
const seconds = (fn: () => void): number => timeRuns(fn, 0, 1)[0]!;

export async function benchPatching(): Promise<BenchRow[]> {
  const dir = mkdtempSync(join(tmpdir(), "selfreport-bench-patching-"));
  try {
    const fx = makeTinyRun(dir, { model: SIZES, layer: LAYER, neuron: NEURON, n: 600, maxLen: 64, perWindow: 8 });
    const ctx = loadAnalysisContext(fx.runDir);
    const fixtureRssMb = nodePeakRssMb();

    let nSettings = 0;
    let nUsed = 0;
    const fast = seconds(() => {
      const s = patchingAnalysis(ctx, { nInputs: N_INPUTS, controls: 0 });
      nSettings = s.settings.length;
      nUsed = s.inputs.n_used;
    });
    const fastRssMb = nodePeakRssMb();
    const withControls = seconds(() => patchingAnalysis(ctx, { nInputs: N_INPUTS }));
    const controlsRssMb = nodePeakRssMb();

    // naive: the same target settings, one whole forward each (plus the clean one)
    const { indices } = selectInputs(ctx.ds, NAIVE_INPUTS);
    const q = ctx.ds.meta.stats.quantiles;
    const values: Array<(a: number) => number> = [
      ...[0, 0.5, 1, 1.5, 2].map((k) => (a: number) => k * a),
      ...[ctx.ds.meta.stats.min, q["q25"]!, q["q50"]!, q["q75"]!, ctx.ds.meta.stats.max, ctx.ds.meta.stats.mean].map((v) => () => v),
      () => ctx.ds.targets[0]!, // resample: some other input's value
    ];
    const naivePerInput = seconds(() => {
      for (const input of indices) {
        patchedReference(ctx, input, NEURON, (a) => a); // clean
        for (const v of values) patchedReference(ctx, input, NEURON, v);
      }
    }) / indices.length;
    const naive = naivePerInput * nUsed;
    const rssMb = nodePeakRssMb();

    const shape: ModelShape = { nLayers: SIZES.nLayers, dModel: SIZES.dModel, dMlp: 4 * SIZES.dModel, dVocab: SIZES.dVocab };
    const lengths = selectInputs(ctx.ds, nUsed).indices.map((i) => ctx.ds.lengths[i]!);
    const fwd = (L: number): number => forwardFlops(shape, 1, L, { unembed: false });
    const later = SIZES.nLayers - 1 - LAYER; // blocks after the target's, up to the feature layer 11
    const row = (L: number): number => later * (blockFlopsPerToken(shape) + attentionFlopsPerSequence(L, shape.dModel) / L);
    const batchedFlops = (settings: number): number => lengths.reduce((sum, L) => sum + fwd(L) + (1 + settings) * row(L), 0);
    // the naive rate from what was timed: its inputs' own lengths, (values + clean) forwards each
    const naiveTimedFlops = indices.reduce((sum, i) => sum + (values.length + 1) * fwd(ctx.ds.lengths[i]!), 0);
    const naiveFlops = (naiveTimedFlops / indices.length) * nUsed; // extrapolated as the seconds are
    const ref = await sgemmReference();

    console.log([
      `GPT-2 small shapes (12 × 768, d_mlp 3072, vocab 50257), target blocks.${LAYER}.mlp.hook_post[${NEURON}], frozen regression head on resid_post of block 11`,
      `${nUsed} inputs (prefixes ≤ 64 tokens), ${nSettings} target settings; naive timed on ${indices.length} input${indices.length === 1 ? "" : "s"} × ${values.length + 1} forwards, extrapolated`,
      `backend ${getBackend().name}; one run each; peak RSS: this section's process so far (${fixtureRssMb.toFixed(0)} MB after building the fixture)`,
      `matmul GFLOP: target only ${(batchedFlops(nSettings) / 1e9).toFixed(0)}, + controls ${(batchedFlops(nSettings + 100) / 1e9).toFixed(0)}, naive ${(naiveFlops / 1e9).toFixed(0)}; ${sgemmRefText(ref)}`,
    ].join("; ") + "\n");
    return [
      { path: "patchingAnalysis, target only", patches: `${nUsed} × ${nSettings}`, seconds: fast.toFixed(1), "speed-up": `${(naive / fast).toFixed(0)}×`, "peak RSS MB": fastRssMb.toFixed(0), "of sgemm": rooflineCell(batchedFlops(nSettings), fast, ref.gflops, 85) },
      { path: "patchingAnalysis, + 20 control neurons × 5 scales", patches: `${nUsed} × ${nSettings + 100}`, seconds: withControls.toFixed(1), "speed-up": "", "peak RSS MB": controlsRssMb.toFixed(0), "of sgemm": rooflineCell(batchedFlops(nSettings + 100), withControls, ref.gflops, 85) },
      { path: "naive: one whole forward per patch", patches: `${nUsed} × ${nSettings}`, seconds: `${naive.toFixed(0)} (extrapolated)`, "speed-up": "1×", "peak RSS MB": rssMb.toFixed(0), "of sgemm": rooflineCell(naiveTimedFlops, naivePerInput * indices.length, ref.gflops, 85) },
    ];
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
