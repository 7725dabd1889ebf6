/**
 * The multi-output frozen trainer against the single trainer, for each head type: for each neuron of
 * a tiny model, train() on that neuron's dataset alone and trainMultiHead on all of them together
 * must give the same test r (1e-4), the same epochs (early stopping included), the same bin
 * accuracy and nearly the same weights. The ridge solver: ridgeMultiHead on all neurons (one basis)
 * = train() with solver "ridge" on each neuron alone (same λ, weights, r).
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { makeTinyRun } from "../helpers/run-fixture.ts";
import { train, TRAIN_DEFAULTS, type TrainOptions } from "../../src/selfreport/train.ts";
import { computeFeatures } from "../../src/selfreport/features.ts";
import { readRunConfig, readHead } from "../../src/selfreport/run.ts";
import { trainMultiHead, ridgeMultiHead, type NeuronFitOk } from "../../src/sweep/multihead.ts";
import type { HeadType } from "../../src/selfreport/predictor.ts";

process.env["SELFREPORT_QUIET"] = "1";

// clip norms low enough that clipping changes the result (checked by hand: r moves by 1e-3 without it)
const CASES: Array<{ head: HeadType; lr: number; gradClip: number }> = [
  { head: "regression", lr: 1e-1, gradClip: 0.5 },
  { head: "classification", lr: 5e-2, gradClip: 0.05 },
  { head: "token", lr: 5e-2, gradClip: 0.1 },
];

for (const { head, lr, gradClip } of CASES) {
  test(`multi-output ${head} head = the single trainer, neuron by neuron (r to 1e-4, same epochs, weights to 1e-3)`, async () => {
    const root = mkdtempSync(join(tmpdir(), "sweep-mh-"));
    try {
      const neurons = [0, 3, 5, 9, 17, 40];
      const runs = neurons.map((neuron) => makeTinyRun(join(root, `n${neuron}`), { neuron, n: 360, maxLen: 8, perWindow: 3, seed: 7, randomLn: true }));
      const first = runs[0]!;
      // every fixture has the same examples (same seeds); only the targets differ
      for (const r of runs) assert.deepEqual(r.dataset.tokens, first.dataset.tokens);
      const C = first.model.cfg.dModel;
      const n = first.dataset.meta.n;
      const K = neurons.length;
      const features = computeFeatures(first.model, first.dataset, first.model.cfg.nLayers - 1);
      const targets = new Float32Array(n * K);
      runs.forEach((r, k) => r.dataset.targets.forEach((v, i) => (targets[i * K + k] = v)));
      const opts = { epochs: 30, batchSize: 16, lr, weightDecay: 0.01, warmup: 5, gradClip, seed: 3, patience: 2 };

      const multi = trainMultiHead({ features: features.data, C, targets, K, split: first.dataset.split, head, model: first.model }, opts);

      let worstR = 0;
      let worstW = 0;
      const epochs: number[] = [];
      for (let k = 0; k < K; k++) {
        const r = runs[k]!;
        const o: TrainOptions = {
          ...TRAIN_DEFAULTS, data: r.datasetPath, out: join(root, `single-${k}`), head, freeze: "frozen", unfreezeLast: null,
          epochs: opts.epochs, batchSize: opts.batchSize, lr: opts.lr, weightDecay: opts.weightDecay, warmup: opts.warmup, gradClip: opts.gradClip,
          seed: opts.seed, patience: opts.patience, hiddenDim: null, activation: null, numClasses: null, resume: false, force: true, solver: "adamw",
        };
        const single = await train(o);
        const m = multi[k]!;
        assert.ok(m.ok, `neuron ${neurons[k]} failed in the multi-output trainer: ${m.ok ? "" : m.error}`);
        const mk = m as NeuronFitOk;
        worstR = Math.max(worstR, Math.abs(mk.test.pearson_r - single.test.pearson_r));
        assert.ok(Math.abs(mk.test.pearson_r - single.test.pearson_r) <= 1e-4, `neuron ${neurons[k]}: test r ${mk.test.pearson_r} (multi) vs ${single.test.pearson_r} (single)`);
        assert.ok(Math.abs(mk.test.r2 - single.test.r2) <= 1e-4, `neuron ${neurons[k]}: R² ${mk.test.r2} vs ${single.test.r2}`);
        assert.ok(Math.abs(mk.validation.pearson_r - single.validation.pearson_r) <= 1e-4, `neuron ${neurons[k]}: validation r ${mk.validation.pearson_r} vs ${single.validation.pearson_r}`);
        assert.equal(mk.test.accuracy, single.test.accuracy, `neuron ${neurons[k]}: bin accuracy`);
        assert.equal(mk.epochsRun, single.epochsRun, `neuron ${neurons[k]}: epochs run`);
        assert.equal(mk.bestEpoch, single.bestEpoch, `neuron ${neurons[k]}: best epoch`);
        assert.equal(mk.stoppedEarly, single.stoppedEarly, `neuron ${neurons[k]}: stopped early`);
        assert.ok(Math.abs(mk.test.baseline.mse - single.test.baseline.mse) <= 1e-9 * (1 + single.test.baseline.mse));
        const cfg = readRunConfig(o.out);
        assert.deepEqual(mk.headConfig, cfg.head_config);
        assert.deepEqual(mk.binEdges, cfg.bin_edges);
        const saved = readHead(o.out, cfg.head_config);
        const w = saved.get("output.weight")!.data;
        const b = saved.get("output.bias")!.data;
        assert.equal(mk.weight.length, w.length);
        for (let c = 0; c < w.length; c++) worstW = Math.max(worstW, Math.abs(w[c]! - mk.weight[c]!));
        for (let c = 0; c < b.length; c++) worstW = Math.max(worstW, Math.abs(b[c]! - mk.bias[c]!));
        epochs.push(mk.epochsRun);
      }
      assert.ok(worstW <= 1e-3, `worst weight difference ${worstW}`);
      // the case mix exercises early stopping: at least one neuron stopped before the last epoch
      assert.ok(epochs.some((e) => e < opts.epochs), `no neuron stopped early (epochs ${epochs.join(", ")}); the test would not cover early stopping`);
      console.log(`${head}: multi vs single: worst |Δr| ${worstR.toExponential(2)}, worst |Δw| ${worstW.toExponential(2)}, epochs ${epochs.join(",")}`);
    } finally {
      rmSync(root, { recursive: true, force: true });
    }
  });
}

test("multi-output head: a constant neuron is reported as failed, the others train", () => {
  const n = 100;
  const C = 4;
  const K = 2;
  const features = Float32Array.from({ length: n * C }, (_, i) => Math.sin(i * 0.37));
  const targets = new Float32Array(n * K);
  const split = Int32Array.from({ length: n }, (_, i) => (i % 10 < 8 ? 0 : i % 10 === 8 ? 1 : 2));
  for (let i = 0; i < n; i++) {
    targets[i * K] = 2; // constant
    targets[i * K + 1] = features[i * C]! - 0.5 * features[i * C + 2]!;
  }
  const fits = trainMultiHead({ features, C, targets, K, split }, { epochs: 30, batchSize: 8, lr: 5e-2, weightDecay: 0, warmup: 0, gradClip: 0, seed: 0, patience: 30 });
  assert.equal(fits[0]!.ok, false);
  assert.match((fits[0] as { error: string }).error, /constant \(2\)/);
  assert.ok(fits[1]!.ok);
  assert.ok((fits[1] as NeuronFitOk).test.pearson_r > 0.99, `linear target: r ${(fits[1] as NeuronFitOk).test.pearson_r}`);
});

test("multi-output ridge (all neurons, one basis) = train() with the ridge solver on each neuron alone: same λ, weights to 1e-6, r to 1e-6", async () => {
  const root = mkdtempSync(join(tmpdir(), "sweep-mh-ridge-"));
  try {
    const neurons = [0, 3, 5, 9, 17, 40];
    const runs = neurons.map((neuron) => makeTinyRun(join(root, `n${neuron}`), { neuron, n: 360, maxLen: 8, perWindow: 3, seed: 7, randomLn: true }));
    const first = runs[0]!;
    const C = first.model.cfg.dModel;
    const n = first.dataset.meta.n;
    const K = neurons.length;
    const features = computeFeatures(first.model, first.dataset, first.model.cfg.nLayers - 1);
    const targets = new Float32Array(n * K);
    runs.forEach((r, k) => r.dataset.targets.forEach((v, i) => (targets[i * K + k] = v)));
    const multi = ridgeMultiHead({ features: features.data, C, targets, K, split: first.dataset.split });
    const lambdas = new Set<number>();
    let worstW = 0;
    let worstR = 0;
    for (let k = 0; k < K; k++) {
      const r = runs[k]!;
      const o: TrainOptions = {
        ...TRAIN_DEFAULTS, data: r.datasetPath, out: join(root, `single-${k}`), head: "regression", freeze: "frozen", unfreezeLast: null,
        hiddenDim: null, activation: null, numClasses: null, resume: false, force: true, solver: "ridge",
      };
      const single = await train(o);
      const m = multi[k]!;
      assert.ok(m.ok, `neuron ${neurons[k]}: ${m.ok ? "" : m.error}`);
      const mk = m as NeuronFitOk;
      assert.ok(mk.ridge !== undefined && single.ridge !== undefined);
      assert.equal(mk.ridge.lambda, single.ridge.lambda, `neuron ${neurons[k]}: λ`);
      lambdas.add(mk.ridge.lambda);
      const cfg = readRunConfig(o.out);
      const saved = readHead(o.out, cfg.head_config);
      const w = saved.get("output.weight")!.data;
      for (let c = 0; c < C; c++) worstW = Math.max(worstW, Math.abs(w[c]! - mk.weight[c]!));
      worstW = Math.max(worstW, Math.abs(saved.get("output.bias")!.data[0]! - mk.bias[0]!));
      worstR = Math.max(worstR, Math.abs(mk.test.pearson_r - single.test.pearson_r), Math.abs(mk.validation.pearson_r - single.validation.pearson_r));
    }
    assert.ok(worstW <= 1e-6, `worst weight difference ${worstW}`);
    assert.ok(worstR <= 1e-6, `worst r difference ${worstR}`);
    // the neurons do not all share one λ: the choice is per neuron
    assert.ok(lambdas.size > 1, `every neuron chose λ ${[...lambdas].join(", ")}; the test would not show per-neuron choice`);
    console.log(`ridge: multi vs single: worst |Δw| ${worstW.toExponential(2)}, worst |Δr| ${worstR.toExponential(2)}, ${lambdas.size} distinct λ`);
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});
