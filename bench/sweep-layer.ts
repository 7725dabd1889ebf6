/**
 * sweep-layer: what one GPT-2-small layer of a whole-model frozen sweep costs with all three heads,
 * and the whole model (12 × 3072 neurons) extrapolated from it, on one machine and on N machines.
 *
 *   model     HookedTransformer.init of GPT-2 small's shape (12 layers, d_model 768, 12 heads, d_mlp
 *             3072, vocab 50257), random weights: the token head reads its final LayerNorm and the
 *             digit rows of its unembedding, as in a sweep.
 *   data      synthetic, as bench/sweep.ts: features X [N, 768] ~ N(0, 1) (what the feature cache
 *             holds), targets GELU(X·u_k + c_k) + noise for K neurons, split 80/10/10. Only the sizes
 *             matter for speed; the GELU and noise make early stopping behave as on real neurons.
 *   heads     the sweep's own code paths for frozen jobs (src/sweep/multihead.ts, what `selfreport
 *             sweep` runs per task of --group-size 512 neurons): regression by ridgeMultiHead (the
 *             default --solver ridge; its eigendecomposition basis made once, as one per worker),
 *             classification and token heads by trainMultiHead (≤ 20 epochs, batch 64, lr 1e-3,
 *             patience 3: the CLI defaults). Writing the job folders is not timed.
 *   layer     K neurons (BENCH_SWEEP_LAYER_K, default 3072 = the whole layer) in groups of 512. When
 *             K < 3072 the layer's cost is K's cost × 3072/K: an extrapolation, and the rows say so.
 *   data prep a sweep first builds its shared data (examples, the feature cache, the activations of
 *             every layer): ≈ 2.6 full forwards over the N/4 windows of ≤ 64 tokens the N examples come
 *             from (4 examples per window, the dataset default; docs/scaling.md). It is estimated here
 *             from the measured forward throughput of the same model (batch 16 × 64,
 *             BENCH_SWEEP_LAYER_FWD batches after 1 warm-up), in wall and in CPU seconds, not run.
 *   whole     12 × the layer: on one machine with one worker (the wall time measured here), and the
 *             CPU-time bound for 2 workers on an idle 2-core machine (CPU s ÷ 2); on N machines through
 *             the queue, the jobs divide by N and the data preparation (one machine) does not.
 * The context line gives this run's reference sgemm GFLOP/s (util.ts sgemmReference), to scale by.
 * Columns: wall s and cpu s (CPU time of the process over the same interval: on a loaded machine the
 * wall time is inflated, the CPU time much less), peak RSS (this section's process so far).
 * Sizes: BENCH_SWEEP_LAYER_N examples (20000), BENCH_SWEEP_LAYER_K neurons (3072),
 * BENCH_SWEEP_LAYER_EPOCHS (20), BENCH_SWEEP_LAYER_FWD forward batches (2).
 */
import { noGrad, getBackend } from "../src/tensor/index.ts";
import { makeConfig } from "../src/model/config.ts";
import { HookedTransformer } from "../src/model/transformer.ts";
import { trainMultiHead, ridgeMultiHead, type NeuronFit } from "../src/sweep/multihead.ts";
import { ridgeBasis } from "../src/selfreport/ridge.ts";
import { loadNativeBackend } from "../src/tensor/backend/native.ts";
import { readFeatures } from "../src/selfreport/predictor.ts";
import type { HeadType } from "../src/selfreport/predictor.ts";
import type { BenchRow } from "./run.ts";
import { synthetic, options, columns } from "./sweep.ts";
import { envCount, randomTokens, nodePeakRssMb, sgemmReference, sgemmRefText } from "./util.ts";

const SIZES = { nLayers: 12, dModel: 768, nHeads: 12, nCtx: 1024, dVocab: 50257 };
const LAYER_NEURONS = 3072;
const GROUP = 512; // selfreport sweep --group-size default
const TARGET_HOURS = 3;
/** Full forward passes of the shared data (docs/scaling.md: sampling, feature cache, activations). */
const DATA_PREP_FORWARDS = 2.6;
/** Examples drawn per source window (the dataset's default perWindow for --token-pos last). */
const EXAMPLES_PER_WINDOW = 4;
const MAX_LEN = 64;
const FWD_BATCH = 16;

interface Timed { seconds: number; cpuSeconds: number }

/** Which build of the multi-output head kernels runs, and on how many threads (native/selfreport_blas.c). */
function kernelsText(): string {
  const native = loadNativeBackend();
  if (getBackend().name !== "native" || !native.ok) return "";
  const threads = process.env["SELFREPORT_KERNEL_THREADS"] ?? `${native.info.numThreads} (OpenBLAS's)`;
  return ` (multi-output head kernels: ${native.info.multiheadKernels}, threads ${threads})`;
}

function timed(fn: () => void): Timed {
  const t0 = performance.now();
  const cpu0 = process.cpuUsage();
  fn();
  const cpu = process.cpuUsage(cpu0);
  return { seconds: (performance.now() - t0) / 1000, cpuSeconds: (cpu.user + cpu.system) / 1e6 };
}

const fmtS = (s: number): string => s.toFixed(s < 10 ? 2 : s < 100 ? 1 : 0);
const fmtH = (s: number): string => (s / 3600).toFixed(2);

export async function benchSweepLayer(): Promise<BenchRow[]> {
  const N = envCount("BENCH_SWEEP_LAYER_N", 20000);
  const K = Math.min(LAYER_NEURONS, envCount("BENCH_SWEEP_LAYER_K", LAYER_NEURONS));
  const epochs = envCount("BENCH_SWEEP_LAYER_EPOCHS", 20);
  const fwdBatches = envCount("BENCH_SWEEP_LAYER_FWD", 2);
  const C = SIZES.dModel;
  const scale = LAYER_NEURONS / K;
  const extrapolated = K < LAYER_NEURONS;

  const ref = await sgemmReference(); // printed so readers can scale the figures to their machine
  const model = HookedTransformer.init(makeConfig(SIZES), 0);
  const d = synthetic(N, K);
  const rows = (code: number): number[] => Array.from(d.split.keys()).filter((i) => d.split[i] === code);
  const groups: Array<[number, number]> = [];
  for (let k0 = 0; k0 < K; k0 += GROUP) groups.push([k0, Math.min(K, k0 + GROUP)]);

  const out: BenchRow[] = [];
  const perLayer = { seconds: 0, cpuSeconds: 0 };
  const add = (what: string, neurons: number, t: Timed, mean: string, layerScale: number): void => {
    perLayer.seconds += t.seconds * layerScale;
    perLayer.cpuSeconds += t.cpuSeconds * layerScale;
    out.push({
      part: what, neurons: String(neurons), "wall s": fmtS(t.seconds), "cpu s": fmtS(t.cpuSeconds),
      "cpu s / neuron": neurons > 0 ? (t.cpuSeconds / neurons).toFixed(3) : "",
      "mean epochs": mean,
      "per layer wall s": layerScale === 0 ? "" : `${fmtS(t.seconds * layerScale)}${layerScale !== 1 ? ` (× ${layerScale.toFixed(2)}, extrapolated)` : ""}`,
      "per layer cpu s": layerScale === 0 ? "" : fmtS(t.cpuSeconds * layerScale),
      "peak RSS MB": nodePeakRssMb().toFixed(0),
    });
  };
  const meanEpochs = (fits: NeuronFit[]): string => {
    const ok = fits.filter((f) => f.ok);
    return ok.length === 0 ? "n/a" : (ok.reduce((s, f) => s + (f.ok ? f.epochsRun : 0), 0) / ok.length).toFixed(1);
  };
  const failures = (fits: NeuronFit[]): void => {
    const bad = fits.find((f) => !f.ok);
    if (bad !== undefined && !bad.ok) throw new Error(`bench sweep-layer: a head failed: ${bad.error}`);
  };

  // regression: ridge; its basis is made once per worker and shared by every layer, so it is not in the per-layer sum
  let basis: ReturnType<typeof ridgeBasis> | null = null;
  const basisT = timed(() => void (basis = ridgeBasis(d.X, C, rows(0), rows(1))));
  add("ridge basis (once per worker, not per layer)", 0, basisT, "", 0);
  for (const head of ["regression", "classification", "token"] as const satisfies readonly HeadType[]) {
    const fits: NeuronFit[] = [];
    const t = timed(() => {
      for (const [k0, k1] of groups) {
        const input = { features: d.X, C, targets: columns(d.A, N, K, k0, k1), K: k1 - k0, split: d.split, head, model };
        fits.push(...(head === "regression" ? ridgeMultiHead(input, basis!) : trainMultiHead(input, options(epochs))));
      }
    });
    failures(fits);
    add(head === "regression" ? "regression (ridge)" : `${head} (multi-output AdamW)`, K, t, head === "regression" ? "(closed form)" : meanEpochs(fits), scale);
  }

  // data preparation, estimated from the forward throughput
  const batch = randomTokens(FWD_BATCH, MAX_LEN, SIZES.dVocab, 3);
  const positions = new Int32Array(FWD_BATCH).fill(MAX_LEN - 1);
  const forwardOnce = (): void => void noGrad(() => readFeatures(model, batch, positions, SIZES.nLayers - 1));
  forwardOnce(); // warm-up
  const fwdT = timed(() => { for (let i = 0; i < fwdBatches; i++) forwardOnce(); });
  const tokensPerSecond = (fwdBatches * FWD_BATCH * MAX_LEN) / fwdT.seconds;
  const tokensPerCpuSecond = (fwdBatches * FWD_BATCH * MAX_LEN) / fwdT.cpuSeconds;
  const prepTokens = DATA_PREP_FORWARDS * (N / EXAMPLES_PER_WINDOW) * MAX_LEN; // every window at 64 tokens: an upper bound
  const prepSeconds = prepTokens / tokensPerSecond; //              wall, as measured
  const prepIdleSeconds = prepTokens / tokensPerCpuSecond / 2; //    CPU s ÷ 2 cores (OpenBLAS uses both)

  const layerTotal = { ...perLayer };
  out.push({
    part: `**one layer, all three heads${extrapolated ? ` (extrapolated from ${K} of 3072 neurons)` : ""}**`, neurons: String(LAYER_NEURONS),
    "wall s": "", "cpu s": "", "cpu s / neuron": (layerTotal.cpuSeconds / LAYER_NEURONS).toFixed(3), "mean epochs": "",
    "per layer wall s": fmtS(layerTotal.seconds), "per layer cpu s": fmtS(layerTotal.cpuSeconds), "peak RSS MB": nodePeakRssMb().toFixed(0),
  });
  const jobsWall = 12 * layerTotal.seconds + basisT.seconds;
  const jobsCpu2 = (12 * layerTotal.cpuSeconds) / 2 + basisT.cpuSeconds; // each of 2 workers makes its own basis
  console.log([
    `GPT-2 small shapes (12 × 768, d_mlp 3072, vocab 50257), N ${N} examples (80/10/10), ${K} neurons${extrapolated ? ` (of ${LAYER_NEURONS}: the per-layer columns are × ${scale.toFixed(2)}, an extrapolation)` : " (the whole layer)"} in groups of ${GROUP}`,
    `≤ ${epochs} epochs; backend ${getBackend().name}${kernelsText()}; OPENBLAS_NUM_THREADS=${process.env["OPENBLAS_NUM_THREADS"] ?? "(unset)"}; one worker (this process); ${sgemmRefText(ref)}`,
    `forward ${tokensPerSecond.toFixed(0)} tokens/s wall, ${tokensPerCpuSecond.toFixed(0)} per CPU-s (batch ${FWD_BATCH} × ${MAX_LEN}, ${fwdBatches} batches after 1 warm-up) → data preparation ≈ ${DATA_PREP_FORWARDS} × ${N / EXAMPLES_PER_WINDOW} windows × ${MAX_LEN} tokens: ${fmtH(prepSeconds)} h wall, ${fmtH(prepIdleSeconds)} h as CPU s ÷ 2 (estimated, not run)`,
    `whole model: 12 layers × 3072 neurons × 3 heads; target ≤ ${TARGET_HOURS} h on one 2-core machine`,
  ].join("; ") + "\n");
  const whole = (label: string, machines: number, prep: number, jobs: number, basisNote: string): BenchRow => {
    const total = prep + jobs / machines; // (the per-worker basis divides too: a slight under-count on N machines)
    return {
      part: `whole model, ${label}`, neurons: `${12 * LAYER_NEURONS} × 3 heads`, "wall s": "", "cpu s": "", "cpu s / neuron": "", "mean epochs": "",
      "per layer wall s": `${fmtH(prep)} h data + ${fmtH(jobs / machines)} h jobs = **${fmtH(total)} h** ${basisNote}`,
      "per layer cpu s": total <= TARGET_HOURS * 3600 ? `meets ≤ ${TARGET_HOURS} h` : `misses ≤ ${TARGET_HOURS} h`, "peak RSS MB": "",
    };
  };
  out.push(whole("1 machine, 1 worker", 1, prepSeconds, jobsWall, "(wall as measured)"));
  out.push(whole("1 machine, 2 workers", 1, prepIdleSeconds, jobsCpu2, "(CPU s ÷ 2 cores: idle-machine bound)"));
  for (const n of [2, 4, 8]) out.push(whole(`${n} machines × 2 workers (queue)`, n, prepIdleSeconds, jobsCpu2, "(CPU s ÷ 2 ÷ N; data on one machine)"));
  return out;
}
