/**
 * The ridge solver for frozen linear regression heads, against an independent solution: the
 * normal equations of the augmented problem (intercept column, unpenalised) built and solved in
 * float64 here by Gaussian elimination with partial pivoting, with no centring and no
 * eigendecomposition. Checks:
 *   exact      weights and bias to 1e-5 for a fixed λ, and for λ = 0 (ordinary least squares)
 *   choice     the chosen λ is the validation-best of the grid (validation MSE of each grid
 *              point recomputed from the independent solutions), and it is inside the grid
 *   train()    the default solver of a frozen regression run is ridge; its head file is the
 *              independent solution on the run's features at the logged λ; its files (metrics,
 *              one log record, report) are written; its test r is at least AdamW's on the same data
 */
import { test, after } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, readFileSync, existsSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ridgeBasis, ridgeFit, RIDGE_ALPHAS, defaultSolver } from "../../src/selfreport/ridge.ts";
import { train, type TrainOptions } from "../../src/selfreport/train.ts";
import { splitIndices } from "../../src/selfreport/dataset.ts";
import { computeFeatures } from "../../src/selfreport/features.ts";
import { readRunConfig, readHead } from "../../src/selfreport/run.ts";
import { loadModel } from "../../src/model/load.ts";
import { writeReport } from "../../src/report/html.ts";
import { makeTinyHfModel } from "../helpers/tiny-model.ts";
import { writeSyntheticDataset } from "../helpers/synthetic-dataset.ts";
import { mulberry32 } from "../helpers/rng.ts";

process.env["SELFREPORT_QUIET"] = "1";

const root = mkdtempSync(join(tmpdir(), "selfreport-ridge-"));
after(() => rmSync(root, { recursive: true, force: true }));

/** Solves A x = b (A [m, m] row-major) by Gaussian elimination with partial pivoting, float64. */
function gaussSolve(A: Float64Array, b: Float64Array, m: number): Float64Array {
  const M = Float64Array.from(A);
  const x = Float64Array.from(b);
  for (let col = 0; col < m; col++) {
    let piv = col;
    for (let r = col + 1; r < m; r++) if (Math.abs(M[r * m + col]!) > Math.abs(M[piv * m + col]!)) piv = r;
    if (piv !== col) {
      for (let c = 0; c < m; c++) [M[col * m + c], M[piv * m + c]] = [M[piv * m + c]!, M[col * m + c]!];
      [x[col], x[piv]] = [x[piv]!, x[col]!];
    }
    for (let r = col + 1; r < m; r++) {
      const f = M[r * m + col]! / M[col * m + col]!;
      for (let c = col; c < m; c++) M[r * m + c]! -= f * M[col * m + c]!;
      x[r]! -= f * x[col]!;
    }
  }
  for (let r = m - 1; r >= 0; r--) {
    let s = x[r]!;
    for (let c = r + 1; c < m; c++) s -= M[r * m + c]! * x[c]!;
    x[r] = s / M[r * m + r]!;
  }
  return x;
}

/**
 * argmin over (w, b) of (1/n) Σ_rows (y − x·w − b)² + λ‖w‖², by the normal equations of [1, X]:
 *   [ n      Σxᵀ        ] [b]   [ Σy  ]
 *   [ Σx   XᵀX + nλ I   ] [w] = [ Xᵀy ]
 */
function referenceRidge(X: ArrayLike<number>, C: number, y: ArrayLike<number>, rows: readonly number[], lambda: number): { w: Float64Array; b: number } {
  const m = C + 1;
  const A = new Float64Array(m * m);
  const rhs = new Float64Array(m);
  const z = new Float64Array(m);
  for (const i of rows) {
    z[0] = 1;
    for (let c = 0; c < C; c++) z[c + 1] = X[i * C + c]!;
    for (let p = 0; p < m; p++) {
      rhs[p]! += z[p]! * y[i]!;
      for (let q = 0; q < m; q++) A[p * m + q]! += z[p]! * z[q]!;
    }
  }
  for (let c = 1; c < m; c++) A[c * m + c]! += rows.length * lambda;
  const sol = gaussSolve(A, rhs, m);
  return { b: sol[0]!, w: sol.slice(1) };
}

/** λ = α · tr(S)/C, S the population covariance of the training rows (recomputed here). */
function lambdaOf(alpha: number, X: ArrayLike<number>, C: number, rows: readonly number[]): number {
  let tr = 0;
  for (let c = 0; c < C; c++) {
    let m = 0;
    for (const i of rows) m += X[i * C + c]!;
    m /= rows.length;
    for (const i of rows) tr += (X[i * C + c]! - m) ** 2 / rows.length;
  }
  return (alpha * tr) / C;
}

function mseOf(X: ArrayLike<number>, C: number, y: ArrayLike<number>, rows: readonly number[], w: ArrayLike<number>, b: number): number {
  let s = 0;
  for (const i of rows) {
    let p = b;
    for (let c = 0; c < C; c++) p += w[c]! * X[i * C + c]!;
    s += (y[i]! - p) ** 2;
  }
  return s / rows.length;
}

/** Gaussian features with unequal scales and a non-zero mean, K targets = linear + noise. */
function synthetic(n: number, C: number, K: number, noise: number, seed: number): { X: Float32Array; Y: Float32Array; train: number[]; val: number[] } {
  const rng = mulberry32(seed);
  const gauss = (): number => Math.sqrt(-2 * Math.log(rng() + 1e-12)) * Math.cos(2 * Math.PI * rng());
  const scale = Float64Array.from({ length: C }, (_, c) => 0.2 + 3 * (c % 5));
  const X = Float32Array.from({ length: n * C }, (_, i) => 1.5 + scale[i % C]! * gauss());
  const Wt = Float64Array.from({ length: K * C }, () => gauss() / Math.sqrt(C));
  const Y = new Float32Array(n * K);
  for (let i = 0; i < n; i++) {
    for (let k = 0; k < K; k++) {
      let s = 0.3 * k;
      for (let c = 0; c < C; c++) s += Wt[k * C + c]! * X[i * C + c]!;
      Y[i * K + k] = s + noise * gauss();
    }
  }
  const train: number[] = [];
  const val: number[] = [];
  for (let i = 0; i < n; i++) (i % 10 < 8 ? train : i % 10 === 8 ? val : []).push(i);
  return { X, Y, train, val };
}

function column(Y: Float32Array, K: number, k: number): Float64Array {
  return Float64Array.from({ length: Y.length / K }, (_, i) => Y[i * K + k]!);
}

function worstDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let w = 0;
  for (let i = 0; i < a.length; i++) w = Math.max(w, Math.abs(a[i]! - b[i]!) / Math.max(1, Math.abs(b[i]!)));
  return w;
}

test("ridge = the independent normal-equation solution (Gaussian elimination, float64) to 1e-5, for a fixed λ and for λ = 0 (least squares)", () => {
  const C = 12;
  const K = 3;
  const { X, Y, train, val } = synthetic(400, C, K, 0.5, 1);
  for (const alpha of [1e-2, 0]) {
    const basis = ridgeBasis(X, C, train, val, [alpha]);
    const fit = ridgeFit(basis, Y, K);
    const lambda = lambdaOf(alpha, X, C, train);
    assert.ok(Math.abs(fit.lambda[0]! - lambda) <= 1e-9 * Math.max(1, lambda), `λ ${fit.lambda[0]} vs ${lambda}`);
    for (let k = 0; k < K; k++) {
      const ref = referenceRidge(X, C, column(Y, K, k), train, lambda);
      const dw = worstDiff(fit.W.subarray(k * C, (k + 1) * C), ref.w);
      const db = worstDiff([fit.b[k]!], [ref.b]);
      assert.ok(dw <= 1e-5 && db <= 1e-5, `α ${alpha}, target ${k}: |Δw| ${dw}, |Δb| ${db}`);
    }
  }
});

test("ridge picks the validation-best penalty of the grid (recomputed from the independent solutions), per target", () => {
  // few training rows for the width and a noisy target: neither end of the grid is best
  const C = 40;
  const K = 2;
  const { X, Y, train, val } = synthetic(150, C, K, 2, 5);
  const basis = ridgeBasis(X, C, train, val);
  const fit = ridgeFit(basis, Y, K);
  for (let k = 0; k < K; k++) {
    const y = column(Y, K, k);
    const losses = RIDGE_ALPHAS.map((a) => {
      const ref = referenceRidge(X, C, y, train, lambdaOf(a, X, C, train));
      return mseOf(X, C, y, val, ref.w, ref.b);
    });
    const best = Math.min(...losses);
    const g = fit.choice[k]!;
    assert.ok(g > 0 && g < RIDGE_ALPHAS.length - 1, `target ${k}: the best penalty is at the end of the grid (index ${g}); the test would not show a choice`);
    assert.ok(losses[g]! <= best * (1 + 1e-6), `target ${k}: chose α ${RIDGE_ALPHAS[g]} (validation MSE ${losses[g]}), best is ${best} at α ${RIDGE_ALPHAS[losses.indexOf(best)]}`);
    assert.ok(Math.abs(fit.valLoss[k]! - losses[g]!) <= 1e-5 * losses[g]!, `target ${k}: reported validation MSE ${fit.valLoss[k]} vs ${losses[g]}`);
    // the grid's losses differ: the choice matters (the worst is clearly worse than the best)
    assert.ok(Math.max(...losses) > 1.05 * best, `target ${k}: validation losses ${losses.join(", ")}`);
  }
});

test("defaultSolver: ridge for frozen linear regression only", () => {
  assert.equal(defaultSolver({ head: "regression", freeze: "frozen", hiddenDim: null, dropout: 0 }), "ridge");
  assert.equal(defaultSolver({ head: "regression", freeze: "frozen", hiddenDim: 8, dropout: 0 }), "adamw");
  assert.equal(defaultSolver({ head: "regression", freeze: "frozen", hiddenDim: null, dropout: 0.1 }), "adamw");
  assert.equal(defaultSolver({ head: "regression", freeze: "unfrozen", hiddenDim: null, dropout: 0 }), "adamw");
  assert.equal(defaultSolver({ head: "classification", freeze: "frozen", hiddenDim: null, dropout: 0 }), "adamw");
});

const C = 16;
const modelDir = join(root, "model");
makeTinyHfModel(modelDir, { dVocab: 64, dModel: C, nLayers: 2, nHeads: 2, nCtx: 16, seed: 2 });
const neuronData = join(root, "neuron.safetensors");
const neuronDs = writeSyntheticDataset(neuronData, modelDir, { n: 300, seed: 1 });

let counter = 0;
function opts(o: Partial<TrainOptions> = {}): TrainOptions {
  return {
    data: neuronData, out: join(root, `run${counter++}`), head: "regression", freeze: "frozen", unfreezeLast: null, featureLayer: -1,
    epochs: 20, batchSize: 64, lr: 1e-3, weightDecay: 0.01, warmup: 50, gradClip: 1, seed: 0, patience: 3,
    hiddenDim: null, activation: null, dropout: 0, numClasses: null, checkpointEvery: 500, resume: false, force: false, ...o,
  };
}

test("train(): a frozen regression run is solved by ridge by default; the head file = the independent solution at the logged λ; files complete; test r ≥ AdamW's", async () => {
  const o = opts();
  const r = await train(o);
  assert.ok(r.ridge !== undefined, "the default solver of a frozen linear regression head is ridge");
  // one train_log record for the solve, with λ and the validation loss
  const log = readFileSync(join(o.out, "train_log.jsonl"), "utf8").trim().split("\n").map((l) => JSON.parse(l) as Record<string, unknown>);
  assert.equal(log.length, 1);
  assert.equal(log[0]!["solver"], "ridge");
  assert.equal(log[0]!["lambda"], r.ridge.lambda);
  assert.equal(typeof log[0]!["val_loss"], "number");
  const metrics = JSON.parse(readFileSync(join(o.out, "metrics.json"), "utf8")) as { solver: string; ridge: { lambda: number }; test: { pearson_r: number } };
  assert.equal(metrics.solver, "ridge");
  assert.equal(metrics.ridge.lambda, r.ridge.lambda);
  const cfg = readRunConfig(o.out);
  assert.equal(cfg.training["solver"], "ridge");
  assert.equal(cfg.training["lambda"], r.ridge.lambda);

  // the head = the normal-equation solution on the features the trainer reads, standardised targets
  const model = loadModel(modelDir, { weights: "raw" }).model;
  const X = computeFeatures(model, neuronDs, 1).data;
  const { mean, std } = neuronDs.meta.stats;
  const y = Float64Array.from(neuronDs.targets, (t) => Math.fround((t - mean) / std));
  const ref = referenceRidge(X, C, y, splitIndices(neuronDs, "train"), r.ridge.lambda);
  const head = readHead(o.out, cfg.head_config);
  const dw = worstDiff(head.get("output.weight")!.data, ref.w);
  const db = worstDiff(head.get("output.bias")!.data, [ref.b]);
  assert.ok(dw <= 1e-5 && db <= 1e-5, `head vs independent solution: |Δw| ${dw}, |Δb| ${db}`);

  // the report reads the run
  const html = join(o.out, "report.html");
  await writeReport({ runDir: o.out, out: html });
  assert.ok(readFileSync(html, "utf8").includes("ridge"), "the report names the solver");

  // AdamW on the same data and splits (the CLI's frozen defaults) does not beat it
  const a = await train(opts({ solver: "adamw" }));
  assert.equal(a.ridge, undefined);
  assert.ok(existsSync(join(a.runDir, "head.safetensors")));
  assert.ok(r.test.pearson_r >= a.test.pearson_r, `test r: ridge ${r.test.pearson_r} < AdamW ${a.test.pearson_r}`);
  console.log(`test r: ridge ${r.test.pearson_r.toFixed(4)} (λ ${r.ridge.lambda.toExponential(2)}), AdamW ${a.test.pearson_r.toFixed(4)}`);
});

test("train(): --solver ridge is refused for other heads and modes, and --resume is refused for ridge, each with one clear message", async () => {
  await assert.rejects(train(opts({ solver: "ridge", head: "classification" })), /the ridge solver fits linear regression heads only, not --head classification; use --solver adamw/);
  await assert.rejects(train(opts({ solver: "ridge", freeze: "unfrozen" })), /the ridge solver needs fixed features \(--freeze frozen\), not --freeze unfrozen; use --solver adamw/);
  await assert.rejects(train(opts({ solver: "ridge", hiddenDim: 8, activation: "relu" })), /--hidden-dim 8 needs --solver adamw/);
  await assert.rejects(train(opts({ resume: true })), /--resume continues an AdamW run/);
});
