/**
 * Dense matmul throughput: C[M, N] = A[M, K] · B[K, N] (no transposes, alpha 1, beta 0) at the
 * three GPT-2-small MLP / attention-projection shapes with 1024 tokens, for
 *   native  OpenBLAS through native/selfreport_blas.c (median of NATIVE_RUNS after warm-up)
 *   js      the pure TypeScript kernels (median of JS_RUNS; slow, so fewer)
 *   numpy   np.matmul(a, b, out=c) in one /usr/bin/python3 subprocess, same shapes and run count,
 *           when numpy is importable; native/numpy is the ratio of GFLOPS (1.00 = parity).
 * GFLOPS = 2·M·N·K / seconds / 1e9.
 */
import { spawnSync } from "node:child_process";
import { jsBackend } from "../src/tensor/backend/js.ts";
import { loadNativeBackend } from "../src/tensor/backend/native.ts";
import type { Backend } from "../src/tensor/backend/types.ts";
import type { BenchRow } from "./run.ts";
import { PYTHON, median, timeRuns, nodePeakRssMb } from "./util.ts";

/** [M, K, N]: A is [M, K], B is [K, N]. */
const SHAPES: [number, number, number][] = [
  [1024, 768, 3072], // MLP in:  [T, d_model] · [d_model, d_mlp]
  [1024, 3072, 768], // MLP out: [T, d_mlp] · [d_mlp, d_model]
  [1024, 768, 2304], // QKV:     [T, d_model] · [d_model, 3·d_model]
];
const NATIVE_WARMUP = 3;
const NATIVE_RUNS = 15;
const JS_WARMUP = 1;
/** BENCH_JS_RUNS=0 skips the js column (about 20 s at the default 3). */
const JS_RUNS = Math.max(0, Math.floor(Number(process.env.BENCH_JS_RUNS ?? 3)) || 0);

/** Uniform [-1, 1) floats from a fixed LCG (the values do not matter for speed, only that they are not 0). */
function filled(n: number, seed: number): Float32Array {
  const out = new Float32Array(n);
  let s = seed >>> 0;
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    out[i] = s / 2147483648 - 1;
  }
  return out;
}

/** Median seconds of `runs` timed calls of backend.sgemm on [M, K]·[K, N], after `warmup` untimed ones. */
function timeBackend(backend: Backend, M: number, K: number, N: number, warmup: number, runs: number): number {
  const A = filled(M * K, 1); // [M, K]
  const B = filled(K * N, 2); // [K, N]
  const C = new Float32Array(M * N); // [M, N]
  const once = (): void => backend.sgemm(false, false, M, N, K, 1, A, K, B, N, 0, C, N);
  return median(timeRuns(once, warmup, runs));
}

/** The numpy side: one subprocess timing every shape; prints {"version", "seconds": [...]} as JSON. */
const NUMPY_SCRIPT = `
import json, sys, time
import numpy as np
shapes, warmup, runs = json.loads(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
rng = np.random.default_rng(0)
seconds = []
for m, k, n in shapes:
    a = rng.uniform(-1, 1, (m, k)).astype(np.float32)
    b = rng.uniform(-1, 1, (k, n)).astype(np.float32)
    c = np.empty((m, n), dtype=np.float32)
    for _ in range(warmup):
        np.matmul(a, b, out=c)
    ts = []
    for _ in range(runs):
        t0 = time.perf_counter()
        np.matmul(a, b, out=c)
        ts.append(time.perf_counter() - t0)
    seconds.append(float(np.median(ts)))
import resource
print(json.dumps({"version": np.__version__, "seconds": seconds, "maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
`;

interface NumpyResult { version: string; seconds: number[]; maxrss_kb?: number }

function isNumpyResult(x: unknown): x is NumpyResult {
  if (typeof x !== "object" || x === null) return false;
  const r = x as Record<string, unknown>;
  return typeof r.version === "string" && Array.isArray(r.seconds) && r.seconds.every((s) => typeof s === "number");
}

/** numpy's median seconds per shape, or the reason it could not be measured. */
function timeNumpy(): NumpyResult | { error: string } {
  const probe = spawnSync(PYTHON, ["-c", "import numpy"], { encoding: "utf8" });
  if (probe.status !== 0) return { error: `${PYTHON} cannot import numpy` };
  const run = spawnSync(PYTHON, ["-c", NUMPY_SCRIPT, JSON.stringify(SHAPES), String(NATIVE_WARMUP), String(NATIVE_RUNS)], {
    encoding: "utf8", maxBuffer: 1 << 20,
  });
  if (run.status !== 0) return { error: `numpy script failed: ${run.stderr.trim().split("\n").pop() ?? ""}` };
  let parsed: unknown = null;
  try {
    parsed = JSON.parse(run.stdout);
  } catch {
    // reported below
  }
  return isNumpyResult(parsed) ? parsed : { error: `numpy script printed ${run.stdout.trim().slice(0, 200)}` };
}

const gflops = (M: number, K: number, N: number, seconds: number): number => (2 * M * N * K) / seconds / 1e9;
const fmt = (x: number): string => x.toFixed(x < 10 ? 2 : 1);

export async function benchSgemm(): Promise<BenchRow[]> {
  const native = loadNativeBackend();
  const numpy = timeNumpy();
  console.log([
    native.ok ? `native: ${native.info.config.trim()}, OpenBLAS threads: ${native.info.numThreads}, OPENBLAS_THREAD_TIMEOUT: ${native.info.threadTimeout}` : `native: unavailable (${native.reason})`,
    "error" in numpy ? `numpy: ${numpy.error}` : `numpy: ${numpy.version} (${PYTHON})`,
    `runs: native/numpy median of ${NATIVE_RUNS} after ${NATIVE_WARMUP} warm-up, ` +
      (JS_RUNS > 0 ? `js median of ${JS_RUNS} after ${JS_WARMUP}` : "js skipped (BENCH_JS_RUNS=0)"),
  ].join("; ") + "\n");

  const rows: BenchRow[] = [];
  SHAPES.forEach(([M, K, N], s) => {
    const nativeG = native.ok ? gflops(M, K, N, timeBackend(native.backend, M, K, N, NATIVE_WARMUP, NATIVE_RUNS)) : NaN;
    const jsG = JS_RUNS > 0 ? gflops(M, K, N, timeBackend(jsBackend, M, K, N, JS_WARMUP, JS_RUNS)) : NaN;
    const numpyG = "error" in numpy ? NaN : gflops(M, K, N, numpy.seconds[s]);
    rows.push({
      "shape [M×K]·[K×N]": `[${M}×${K}]·[${K}×${N}]`,
      "native": Number.isNaN(nativeG) ? "n/a" : fmt(nativeG),
      "js": Number.isNaN(jsG) ? "n/a" : fmt(jsG),
      "numpy": Number.isNaN(numpyG) ? "n/a" : fmt(numpyG),
      "native/numpy": Number.isNaN(nativeG) || Number.isNaN(numpyG) ? "n/a" : (nativeG / numpyG).toFixed(2),
      "native/js": Number.isNaN(nativeG) || Number.isNaN(jsG) ? "n/a" : `${(nativeG / jsG).toFixed(0)}×`,
      "peak RSS MB ours": nodePeakRssMb().toFixed(0),
      "peak RSS MB numpy": "error" in numpy || typeof numpy.maxrss_kb !== "number" ? "n/a" : (numpy.maxrss_kb / 1024).toFixed(0),
    });
  });
  return rows;
}
