/**
 * Sweep throughput: frozen regression heads for many neurons of one GPT-2-small-shaped layer.
 *
 *   data        synthetic: features X [N, 768] ~ N(0, 1) (what the frozen feature cache holds), targets
 *               a_k = GELU(X·u_k + c_k) + noise for K neurons (u_k random, |u_k| = 1), split 80/10/10.
 *               Only the sizes matter for speed; the GELU and noise make early stopping behave as on real
 *               neurons (most run several epochs, some stop early).
 *   multi-output  trainMultiHead (src/sweep/multihead.ts) on all K neurons, with 1 worker thread, and
 *               with 2 worker threads each taking half of the neurons (what `selfreport sweep --workers 2`
 *               does with --group-size ≤ K/2). Reported as jobs (neurons) per hour and seconds for K.
 *   separate    the single trainer, train() of src/selfreport/train.ts, once per neuron (in memory: the
 *               dataset, features and a 1-block 768-wide model are passed in, so no file reading is
 *               timed; each run still writes its run directory, as a sweep job does), for S neurons.
 *   ratio       multi-output (1 thread) jobs/hour over separate jobs/hour.
 *   bin heads   the same single-trainer timing for classification and token heads (frozen), the per-job
 *               cost of a sweep's other frozen jobs (BENCH_SWEEP_SEPARATE_BINS runs each, default 4).
 * Training settings: the CLI defaults (20 epochs, batch 64, lr 1e-3, warm-up 50, clip 1, patience 3).
 *
 * Columns: wall seconds, and "cpu s" (CPU time of the whole process over the same interval: on a busy
 * machine, compare it with seconds × workers to see how much CPU the threads actually got).
 *
 * Sizes (environment): BENCH_SWEEP_N examples (default 20000), BENCH_SWEEP_K neurons (3072),
 * BENCH_SWEEP_SEPARATE separate runs (64), BENCH_SWEEP_EPOCHS (20). The full default takes a few
 * minutes on 2 cores; e.g. BENCH_SWEEP_N=2000 BENCH_SWEEP_K=256 BENCH_SWEEP_SEPARATE=8 checks it works.
 *
 * This file is also the body of the benchmark's worker threads (isMainThread false).
 */
import { Worker, isMainThread, parentPort, workerData } from "node:worker_threads";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Rng, Tensor, getBackend } from "../src/tensor/index.ts";
import { makeConfig } from "../src/model/config.ts";
import { HookedTransformer } from "../src/model/transformer.ts";
import { DATASET_FORMAT, DATASET_VERSION, type Dataset } from "../src/selfreport/dataset.ts";
import { activationStats, quantileBinEdges } from "../src/selfreport/stats.ts";
import { train, TRAIN_DEFAULTS } from "../src/selfreport/train.ts";
import { trainMultiHead, type MultiHeadOptions } from "../src/sweep/multihead.ts";
import type { HeadType } from "../src/selfreport/predictor.ts";
import type { BenchRow } from "./run.ts";

const C = 768;
const envInt = (name: string, def: number): number => {
  const v = Number(process.env[name] ?? def);
  return Number.isInteger(v) && v > 0 ? v : def;
};

interface Synthetic {
  X: Float32Array; // [N, C]
  A: Float32Array; // [N, K]
  split: Int32Array; // [N]
}

function gelu(x: number): number {
  return 0.5 * x * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (x + 0.044715 * x * x * x)));
}

function synthetic(N: number, K: number, seed = 0): Synthetic {
  const rng = new Rng(seed);
  const X = new Float32Array(N * C);
  for (let i = 0; i < X.length; i++) X[i] = rng.normal();
  const U = new Float32Array(C * K); // [C, K], columns of norm ≈ 1
  for (let i = 0; i < U.length; i++) U[i] = rng.normal() / Math.sqrt(C);
  const A = new Float32Array(N * K);
  getBackend().sgemm(false, false, N, K, C, 1, X, C, U, K, 0, A, K);
  const shift = Float32Array.from({ length: K }, () => rng.normal() - 1);
  for (let i = 0; i < N; i++) for (let k = 0; k < K; k++) A[i * K + k] = gelu(A[i * K + k]! + shift[k]!) + 0.3 * rng.normal();
  const split = Int32Array.from({ length: N }, (_, i) => (i % 10 < 8 ? 0 : i % 10 === 8 ? 1 : 2));
  return { X, A, split };
}

function options(epochs: number): MultiHeadOptions {
  return {
    epochs, batchSize: TRAIN_DEFAULTS.batchSize, lr: 1e-3, weightDecay: TRAIN_DEFAULTS.weightDecay, warmup: TRAIN_DEFAULTS.warmup,
    gradClip: TRAIN_DEFAULTS.gradClip, seed: 0, patience: TRAIN_DEFAULTS.patience,
  };
}

/** Columns [k0, k1) of A [N, K]. */
function columns(A: Float32Array, N: number, K: number, k0: number, k1: number): Float32Array {
  const Kp = k1 - k0;
  const out = new Float32Array(N * Kp);
  for (let i = 0; i < N; i++) out.set(A.subarray(i * K + k0, i * K + k1), i * Kp);
  return out;
}

interface ThreadJob {
  benchSweep: true;
  X: Float32Array;
  A: Float32Array;
  split: Int32Array;
  K: number;
  epochs: number;
}

/**
 * Trains the neurons on `threads` worker threads (each its share of the columns); seconds from "go"
 * to the last thread's end (thread start-up and the copy of the data are not timed: a sweep pays them
 * once per thread, not per task).
 */
async function multiOnThreads(d: Synthetic, N: number, K: number, epochs: number, threads: number): Promise<{ seconds: number; cpuSeconds: number; epochsMean: number }> {
  const per = Math.ceil(K / threads);
  const workers = Array.from({ length: threads }, (_, t) => {
    const k0 = t * per;
    const k1 = Math.min(K, k0 + per);
    const job: ThreadJob = { benchSweep: true, X: d.X, A: columns(d.A, N, K, k0, k1), split: d.split, K: k1 - k0, epochs };
    return new Worker(new URL(import.meta.url), { workerData: job });
  });
  const next = (w: Worker): Promise<number> => new Promise<number>((resolve, reject) => {
    w.once("message", resolve);
    w.once("error", reject);
  });
  await Promise.all(workers.map(next)); // "ready"
  const t0 = performance.now();
  const cpu0 = process.cpuUsage();
  const done = workers.map(next);
  for (const w of workers) w.postMessage("go");
  const epochSums = await Promise.all(done);
  const seconds = (performance.now() - t0) / 1000;
  const cpu = process.cpuUsage(cpu0);
  await Promise.all(workers.map((w) => w.terminate()));
  return { seconds, cpuSeconds: (cpu.user + cpu.system) / 1e6, epochsMean: epochSums.reduce((a, b) => a + b, 0) / K };
}

/** S separate single-trainer runs of neurons 0..S-1 with the given head; seconds. */
async function separateRuns(d: Synthetic, N: number, K: number, S: number, epochs: number, head: HeadType): Promise<{ seconds: number; cpuSeconds: number }> {
  const dir = mkdtempSync(join(tmpdir(), "bench-sweep-"));
  const prev = process.env["SELFREPORT_QUIET"];
  process.env["SELFREPORT_QUIET"] = "1";
  try {
    // dVocab 32 holds GPT-2's digit ids 15…24 that the token head reads
    const model = HookedTransformer.init(makeConfig({ nLayers: 1, dModel: C, nHeads: 12, nCtx: 8, dVocab: 32 }), 0);
    const features = new Tensor(d.X, [N, C]);
    const t0 = performance.now();
    const cpu0 = process.cpuUsage();
    for (let k = 0; k < S; k++) {
      const targets = columns(d.A, N, K, k, k + 1);
      const trainTargets = targets.filter((_, i) => d.split[i] === 0);
      const ds: Dataset = {
        meta: {
          format: DATASET_FORMAT, version: DATASET_VERSION, model_dir: dir, model_name: "bench", weights: "raw", layer: 0, neuron: k, layer_type: "mlp_post",
          hook: "blocks.0.mlp.hook_post", token_pos: "last", max_len: 1, n: N, corpus: "synthetic", seed: 0, balance: false,
          split_counts: { train: trainTargets.length, validation: 0, test: 0 }, stats: activationStats(trainTargets), bin_edges: quantileBinEdges(trainTargets, 10), num_bins: 10,
        },
        tokens: new Int32Array(N), lengths: new Int32Array(N).fill(1), positions: new Int32Array(N), targets, split: d.split, window: Int32Array.from({ length: N }, (_, i) => i),
      };
      await train({
        ...TRAIN_DEFAULTS, data: join(dir, "bench.safetensors"), out: join(dir, `run${k}`), head, freeze: "frozen", unfreezeLast: null,
        epochs, lr: 1e-3, hiddenDim: null, activation: null, numClasses: null, checkpointEvery: 1_000_000_000, resume: false, force: true, solver: "adamw",
      }, { dataset: ds, features, loaded: { model, dir } });
    }
    const cpu = process.cpuUsage(cpu0);
    return { seconds: (performance.now() - t0) / 1000, cpuSeconds: (cpu.user + cpu.system) / 1e6 };
  } finally {
    if (prev === undefined) delete process.env["SELFREPORT_QUIET"];
    else process.env["SELFREPORT_QUIET"] = prev;
    rmSync(dir, { recursive: true, force: true });
  }
}

const perHour = (jobs: number, seconds: number): string => Math.round((jobs / seconds) * 3600).toLocaleString("en-US");

export async function benchSweep(): Promise<BenchRow[]> {
  const N = envInt("BENCH_SWEEP_N", 20000);
  const K = envInt("BENCH_SWEEP_K", 3072);
  const S = Math.min(K, envInt("BENCH_SWEEP_SEPARATE", 64));
  const SB = Math.min(K, envInt("BENCH_SWEEP_SEPARATE_BINS", 4));
  const epochs = envInt("BENCH_SWEEP_EPOCHS", 20);
  const d = synthetic(N, K);
  console.log(`N ${N} examples, d_model ${C}, ${K} neurons (multi-output), ${S} separate runs, ≤ ${epochs} epochs, batch ${TRAIN_DEFAULTS.batchSize}; OPENBLAS_NUM_THREADS=${process.env["OPENBLAS_NUM_THREADS"] ?? "(unset)"}\n`);
  const rows: BenchRow[] = [];
  const one = await multiOnThreads(d, N, K, epochs, 1);
  rows.push({ path: "multi-output", workers: 1, neurons: K, seconds: one.seconds.toFixed(1), "cpu s": one.cpuSeconds.toFixed(1), "jobs/hour": perHour(K, one.seconds), "mean epochs": one.epochsMean.toFixed(1), "vs separate": "" });
  const two = await multiOnThreads(d, N, K, epochs, 2);
  rows.push({ path: "multi-output", workers: 2, neurons: K, seconds: two.seconds.toFixed(1), "cpu s": two.cpuSeconds.toFixed(1), "jobs/hour": perHour(K, two.seconds), "mean epochs": two.epochsMean.toFixed(1), "vs separate": "" });
  const sep = await separateRuns(d, N, K, S, epochs, "regression");
  const ratio = (K / one.seconds) / (S / sep.seconds);
  rows[0]!["vs separate"] = `${ratio.toFixed(0)}×`;
  rows.push({ path: "separate train() runs, regression", workers: 1, neurons: S, seconds: sep.seconds.toFixed(1), "cpu s": sep.cpuSeconds.toFixed(1), "jobs/hour": perHour(S, sep.seconds), "mean epochs": "", "vs separate": "1×" });
  for (const head of ["classification", "token"] as const) {
    const sb = await separateRuns(d, N, K, SB, epochs, head);
    rows.push({ path: `separate train() runs, ${head}`, workers: 1, neurons: SB, seconds: sb.seconds.toFixed(1), "cpu s": sb.cpuSeconds.toFixed(1), "jobs/hour": perHour(SB, sb.seconds), "mean epochs": "", "vs separate": "" });
  }
  return rows;
}

if (!isMainThread && (workerData as Partial<ThreadJob> | null)?.benchSweep === true) {
  const job = workerData as ThreadJob;
  const port = parentPort!;
  port.once("message", () => {
    const fits = trainMultiHead({ features: job.X, C, targets: job.A, K: job.K, split: job.split }, options(job.epochs));
    port.postMessage(fits.reduce((s, f) => s + (f.ok ? f.epochsRun : 0), 0));
  });
  port.postMessage(0); // ready
}
