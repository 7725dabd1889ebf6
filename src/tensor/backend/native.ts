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
  /**
   * "on": the addon told glibc to keep freed memory in the heap for reuse (no mmap, no trim), so
   * fresh op outputs do not page-fault; "off" on other C libraries or with SELFREPORT_KEEP_MEMORY=0.
   */
  keepMemory: "on" | "off";
}

/** The Backend methods, which the addon (native/selfreport_blas.c) exports under the same names. */
const KERNELS = [
  "sgemm", "sgemmStridedBatched", "logSumExpRows", "softmaxScaleRows", "geluForward", "geluBackward",
  "lnScaleRows", "lnNormalizeRows", "affineRows", "lnScaleBackwardRows", "lnNormalizeBackwardRows", "affineBackwardRows",
  "softmaxRows", "softmaxBackwardRows", "adamwUpdate", "sumSquares", "scaleInPlace",
] as const satisfies readonly (keyof Backend)[];
type Kernels = Pick<Backend, (typeof KERNELS)[number]>;

/** The addon's exports: the kernels, plus what OpenBLAS says about itself. */
interface BlasAddon extends Kernels {
  openblasInfo(): OpenblasInfo;
}

export type NativeLoadResult =
  | { ok: true; backend: Backend; info: OpenblasInfo; path: string }
  | { ok: false; reason: string; path: string | null };

/** The exports a BlasAddon needs that `mod` lacks (empty: it is one). */
function missingExports(mod: unknown): string[] {
  if (typeof mod !== "object" || mod === null) return ["everything (not an object)"];
  const m = mod as Record<string, unknown>;
  return [...KERNELS, "openblasInfo"].filter((name) => typeof m[name] !== "function");
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
  const missing = missingExports(mod);
  if (missing.length > 0) return { ok: false, reason: `${path} does not export ${missing.join(", ")} (an older build? rebuild it: npm ci)`, path };
  const addon = mod as BlasAddon;
  const kernels = Object.fromEntries(KERNELS.map((name) => [name, addon[name]])) as unknown as Kernels;
  const backend: Backend = { name: "native", ...kernels };
  return { ok: true, backend, info: addon.openblasInfo(), path };
}
