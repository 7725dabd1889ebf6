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
import {
  jsBackend, checkClipAdamwBlocks, layerNormFrom, layerNormBackwardFrom, crossEntropyBlocksFrom, causalAttentionForwardJs, causalAttentionBackwardJs, scatterAddRunsJs, gatherRunsJs,
} from "./js.ts";

/** What OpenBLAS reports about itself (for bench headers and `selfreport model`). */
export interface OpenblasInfo {
  /** e.g. "OpenBLAS 0.3.21 NO_LAPACKE DYNAMIC_ARCH NO_AFFINITY Zen MAX_THREADS=64" */
  config: string;
  /** Threads OpenBLAS will use (OPENBLAS_NUM_THREADS, else the number of cores). */
  numThreads: number;
  /** Which build of the row kernels runs: "avx2" (x86-64 with AVX2+FMA) or "base"; SELFREPORT_SIMD=base forces "base". */
  rowKernels: "avx2" | "base";
  /**
   * Which build of the multi-output head kernels (clipAdamwBlocks; crossEntropyBlocks follows rowKernels) runs: "avx512", "avx2" or "base"
   * (SELFREPORT_SIMD=avx2 or base forces a narrower one); "js" when the addon predates them.
   */
  multiheadKernels: "avx512" | "avx2" | "base" | "js";
  /**
   * "on": the addon told glibc to keep freed memory in the heap for reuse (no mmap, no trim), so
   * fresh op outputs do not page-fault; "off" on other C libraries or with SELFREPORT_KEEP_MEMORY=0.
   */
  keepMemory: "on" | "off";
  /**
   * OPENBLAS_THREAD_TIMEOUT as OpenBLAS read it when it loaded: selfreport's QUIET_BLAS_HELPERS unless
   * the user had set it (withQuietBlasHelpers).
   */
  threadTimeout: string;
}

/** The Backend methods, which the addon (native/selfreport_blas.c) exports under the same names. */
const KERNELS = [
  "sgemm", "sgemmStridedBatched", "logSumExpRows", "softmaxScaleRows", "geluForward", "geluBackward",
  "lnScaleRows", "lnNormalizeRows", "affineRows", "lnScaleBackwardRows", "lnNormalizeBackwardRows", "affineBackwardRows",
  "softmaxRows", "softmaxBackwardRows", "adamwUpdate", "sumSquares", "scaleInPlace",
] as const satisfies readonly (keyof Backend)[];
/**
 * Kernels added after the addon's first release: an older build without them still loads, and these
 * are composed from its other kernels (composedLaterKernels: the same results, slower; the fused
 * attention kernels: the js backend's loops, equal to a tolerance and much slower) until `npm ci` rebuilds it.
 */
const LATER_KERNELS = [
  "clipAdamwBlocks", "crossEntropyBlocks", "layerNormRows", "layerNormBackwardRows", "causalAttentionForward", "causalAttentionBackward",
  "addInto", "scatterAddRuns", "gatherRuns",
] as const satisfies readonly (keyof Backend)[];
type Kernels = Pick<Backend, (typeof KERNELS)[number]>;
type LaterKernels = Pick<Backend, (typeof LATER_KERNELS)[number]>;

/** The addon's exports: the kernels, plus what OpenBLAS says about itself. */
interface BlasAddon extends Kernels, Partial<LaterKernels> {
  openblasInfo(): Omit<OpenblasInfo, "threadTimeout">;
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

/**
 * After each product, OpenBLAS's helper threads spin for 2^OPENBLAS_THREAD_TIMEOUT cycles (default
 * 2^28, about 0.1 s) before they sleep. With as many cores as BLAS threads (2 here), that spinning
 * takes the core that our own threaded kernels (GELU, LayerNorm, attention, AdamW) need right after a
 * product: a GELU of [1024, 3072] after an sgemm took 3.1 ms instead of 1.7. 4 (2^4 cycles, OpenBLAS's
 * minimum) lets the helpers sleep at once; waking them for the next product cost nothing measurable,
 * even for back-to-back 64³ products (6.4 µs a call either way).
 */
export const QUIET_BLAS_HELPERS = "4";

/**
 * Runs `load` (which loads the OpenBLAS library) with OPENBLAS_THREAD_TIMEOUT=QUIET_BLAS_HELPERS
 * unless the user set it (to anything but ""), and returns what it returns with the value OpenBLAS read. OpenBLAS reads
 * the variable once, when the library loads. Our setting is removed again afterwards, so child
 * processes (torch in the bench, a notebook's kernel) start with their own defaults. Only the main
 * thread changes the real environment: a worker thread loading first keeps OpenBLAS's default (the
 * sweep loads the addon on the main thread before it starts workers).
 */
export function withQuietBlasHelpers<T>(load: () => T): { value: T; threadTimeout: string } {
  const given = process.env["OPENBLAS_THREAD_TIMEOUT"];
  if (given !== undefined && given !== "") return { value: load(), threadTimeout: given };
  process.env["OPENBLAS_THREAD_TIMEOUT"] = QUIET_BLAS_HELPERS;
  try {
    return { value: load(), threadTimeout: QUIET_BLAS_HELPERS };
  } finally {
    if (given === undefined) delete process.env["OPENBLAS_THREAD_TIMEOUT"];
    else process.env["OPENBLAS_THREAD_TIMEOUT"] = given;
  }
}

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
  let threadTimeout: string;
  try {
    ({ value: mod, threadTimeout } = withQuietBlasHelpers((): unknown => createRequire(import.meta.url)(path)));
  } catch (err) {
    const message = err instanceof Error ? err.message.split("\n")[0] : String(err);
    return { ok: false, reason: `cannot load ${path}: ${message}`, path };
  }
  const missing = missingExports(mod);
  if (missing.length > 0) return { ok: false, reason: `${path} does not export ${missing.join(", ")} (an older build? rebuild it: npm ci)`, path };
  const addon = mod as BlasAddon;
  const kernels = Object.fromEntries(KERNELS.map((name) => [name, addon[name]])) as unknown as Kernels;
  const composed = composedLaterKernels(kernels);
  const later = Object.fromEntries(LATER_KERNELS.map((name) => [name, typeof addon[name] === "function" ? addon[name] : composed[name]])) as unknown as LaterKernels;
  const backend: Backend = { name: "native", ...kernels, ...later };
  const info = addon.openblasInfo();
  return { ok: true, backend, info: { ...info, multiheadKernels: info.multiheadKernels ?? "js", threadTimeout }, path };
}

/**
 * The later kernels from the older ones, step by step as the multi-output trainer took them before they
 * existed (sumSquares, scaling, adamwUpdate; bias add, logSumExpRows, softmaxScaleRows and loops): what
 * an addon built before them runs; the fused attention kernels are the js backend's. Argument checks and
 * errors are the js backend's.
 */
export function composedLaterKernels(k: Kernels): LaterKernels {
  return {
    layerNormRows(X, rows, cols, eps, w, b, out, scale, mean) {
      layerNormFrom(k, X, rows, cols, eps, w, b, out, scale, mean);
    },
    layerNormBackwardRows(G, X, rows, cols, scale, mean, w, GX, GW, GB) {
      layerNormBackwardFrom(k, G, X, rows, cols, scale, mean, w, GX, GW, GB);
    },
    clipAdamwBlocks(W, GW, MW, VW, wsize, B, GB, MB, VB, bsize, blocks, maxNorm, lr, beta1, beta2, eps, shrink, bc1, bc2) {
      checkClipAdamwBlocks(W, GW, MW, VW, wsize, B, GB, MB, VB, bsize, blocks);
      for (let a = 0; a < blocks; a++) {
        const w = [a * wsize, (a + 1) * wsize] as const;
        const b = [a * bsize, (a + 1) * bsize] as const;
        let gw = GW.subarray(...w);
        let gb = GB.subarray(...b);
        if (maxNorm > 0) {
          const norm = Math.sqrt(k.sumSquares(gw, wsize) + k.sumSquares(gb, bsize));
          if (norm > maxNorm) {
            const f = maxNorm / (norm + 1e-6);
            gw = gw.map((g) => g * f);
            gb = gb.map((g) => g * f);
          }
        }
        k.adamwUpdate(W.subarray(...w), gw, MW.subarray(...w), VW.subarray(...w), wsize, lr, beta1, beta2, eps, shrink, bc1, bc2);
        k.adamwUpdate(B.subarray(...b), gb, MB.subarray(...b), VB.subarray(...b), bsize, lr, beta1, beta2, eps, 1, bc1, bc2);
      }
    },
    crossEntropyBlocks(Out, rows, blocks, P, bias, labels, kc, loss, dB) {
      crossEntropyBlocksFrom(k, Out, rows, blocks, P, bias, labels, kc, loss, dB);
    },
    // The fused attention kernels fall back to the js backend's loops (correct, much slower); so do the adds.
    causalAttentionForward: causalAttentionForwardJs,
    causalAttentionBackward: causalAttentionBackwardJs,
    addInto: jsBackend.addInto,
    scatterAddRuns: scatterAddRunsJs,
    gatherRuns: gatherRunsJs,
  };
}
