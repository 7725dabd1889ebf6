/**
 * The native backend: OpenBLAS's cblas_sgemm through the plain C Node-API addon in native/
 * (built at `npm ci` by scripts/build-native.mjs into native/build/Release/selfreport_blas.node).
 *
 * The addon checks every argument itself (types, leading dimensions, that each Float32Array is
 * long enough) and throws a TypeError/RangeError naming the argument, so this wrapper adds
 * nothing per call: the Backend's methods are the addon's functions.
 */
import { existsSync, readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import type { Backend } from "./types.ts";

/** What OpenBLAS reports about itself (for bench headers and `selfreport model`). */
export interface OpenblasInfo {
  /** e.g. "OpenBLAS 0.3.21 NO_LAPACKE DYNAMIC_ARCH NO_AFFINITY Zen MAX_THREADS=64" */
  config: string;
  /** Threads OpenBLAS will use (OPENBLAS_NUM_THREADS, else the number of cores). */
  numThreads: number;
  /** Which build of the row kernels runs: "avx2" (x86-64 with AVX2+FMA) or "base"; SELFREPORT_SIMD=base forces "base". */
  rowKernels: "avx2" | "base";
}

/** The addon's exports (native/selfreport_blas.c). */
interface BlasAddon {
  sgemm: Backend["sgemm"];
  sgemmStridedBatched: Backend["sgemmStridedBatched"];
  openblasInfo(): OpenblasInfo;
  logSumExpRows: Backend["logSumExpRows"];
  softmaxScaleRows: Backend["softmaxScaleRows"];
  geluForward: Backend["geluForward"];
  geluBackward: Backend["geluBackward"];
  lnScaleRows: Backend["lnScaleRows"];
  lnNormalizeRows: Backend["lnNormalizeRows"];
  affineRows: Backend["affineRows"];
  lnScaleBackwardRows: Backend["lnScaleBackwardRows"];
  lnNormalizeBackwardRows: Backend["lnNormalizeBackwardRows"];
  affineBackwardRows: Backend["affineBackwardRows"];
  softmaxRows: Backend["softmaxRows"];
  softmaxBackwardRows: Backend["softmaxBackwardRows"];
  adamwUpdate: Backend["adamwUpdate"];
  sumSquares: Backend["sumSquares"];
}

export type NativeLoadResult =
  | { ok: true; backend: Backend; info: OpenblasInfo; path: string }
  | { ok: false; reason: string; path: string | null };

function isBlasAddon(mod: unknown): mod is BlasAddon {
  if (typeof mod !== "object" || mod === null) return false;
  const m = mod as Record<string, unknown>;
  return typeof m.sgemm === "function" && typeof m.sgemmStridedBatched === "function" &&
    typeof m.openblasInfo === "function" && typeof m.logSumExpRows === "function" &&
    typeof m.softmaxScaleRows === "function" && typeof m.geluForward === "function" && typeof m.geluBackward === "function" &&
    typeof m.lnScaleRows === "function" && typeof m.lnNormalizeRows === "function" && typeof m.affineRows === "function" &&
    typeof m.lnScaleBackwardRows === "function" && typeof m.lnNormalizeBackwardRows === "function" && typeof m.affineBackwardRows === "function" &&
    typeof m.softmaxRows === "function" && typeof m.softmaxBackwardRows === "function" &&
    typeof m.adamwUpdate === "function" && typeof m.sumSquares === "function";
}

/**
 * The selfreport repository root: the nearest ancestor of this file holding a package.json whose
 * name is "selfreport". Works from src/tensor/backend/ (ts, deno) and dist/src/tensor/backend/.
 */
export function findRepoRoot(from: string = dirname(fileURLToPath(import.meta.url))): string | null {
  let dir = from;
  for (;;) {
    const pkg = join(dir, "package.json");
    if (existsSync(pkg)) {
      try {
        const parsed: unknown = JSON.parse(readFileSync(pkg, "utf8"));
        if (typeof parsed === "object" && parsed !== null && (parsed as Record<string, unknown>).name === "selfreport") {
          return dir;
        }
      } catch {
        // An unreadable package.json is not ours; keep walking up.
      }
    }
    const parent = dirname(dir);
    if (parent === dir) return null;
    dir = parent;
  }
}

let cached: NativeLoadResult | null = null;

/** Loads the addon once per process; later calls return the same result. Never throws. */
export function loadNativeBackend(): NativeLoadResult {
  if (cached === null) cached = tryLoad();
  return cached;
}

function tryLoad(): NativeLoadResult {
  const root = findRepoRoot();
  if (root === null) return { ok: false, reason: "cannot find the selfreport package root", path: null };
  const path = join(root, "native", "build", "Release", "selfreport_blas.node");
  if (!existsSync(path)) {
    return { ok: false, reason: `${path} not built; install libopenblas-dev and run npm ci`, path };
  }
  let mod: unknown;
  try {
    mod = createRequire(import.meta.url)(path);
  } catch (err) {
    const message = err instanceof Error ? err.message.split("\n")[0] : String(err);
    return { ok: false, reason: `cannot load ${path}: ${message}`, path };
  }
  if (!isBlasAddon(mod)) return { ok: false, reason: `${path} does not export sgemm/sgemmStridedBatched/logSumExpRows/softmaxScaleRows/geluForward/geluBackward/lnScaleRows/lnNormalizeRows/affineRows/lnScaleBackwardRows/lnNormalizeBackwardRows/affineBackwardRows/softmaxRows/softmaxBackwardRows/adamwUpdate/sumSquares (rebuild it: npm ci)`, path };
  const addon = mod;
  const backend: Backend = {
    name: "native",
    sgemm: addon.sgemm,
    sgemmStridedBatched: addon.sgemmStridedBatched,
    logSumExpRows: addon.logSumExpRows,
    softmaxScaleRows: addon.softmaxScaleRows,
    geluForward: addon.geluForward,
    geluBackward: addon.geluBackward,
    lnScaleRows: addon.lnScaleRows,
    lnNormalizeRows: addon.lnNormalizeRows,
    affineRows: addon.affineRows,
    lnScaleBackwardRows: addon.lnScaleBackwardRows,
    lnNormalizeBackwardRows: addon.lnNormalizeBackwardRows,
    affineBackwardRows: addon.affineBackwardRows,
    softmaxRows: addon.softmaxRows,
    softmaxBackwardRows: addon.softmaxBackwardRows,
    adamwUpdate: addon.adamwUpdate,
    sumSquares: addon.sumSquares,
  };
  return { ok: true, backend, info: addon.openblasInfo(), path };
}
