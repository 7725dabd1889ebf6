/**
 * Helpers shared by the bench sections: run counts from the environment, timing with a median after
 * warm-up, fixed pseudo-random data, and the PyTorch peer run in one /usr/bin/python3 subprocess
 * that prints JSON.
 */
import { spawnSync } from "node:child_process";
import type { TokenBatch } from "../src/model/transformer.ts";
import { getBackend } from "../src/tensor/backend/index.ts";

/** Debian's Python, which sees python3-numpy and python3-torch (the pyenv shim on PATH does not). */
export const PYTHON = "/usr/bin/python3";

/** A positive integer from the environment variable `name`, else `fallback`. */
export function envCount(name: string, fallback: number): number {
  const v = Math.floor(Number(process.env[name] ?? fallback));
  return Number.isFinite(v) && v >= 1 ? v : fallback;
}

export function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 === 1 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}

/** Seconds of each of `runs` timed calls of fn, after `warmup` untimed ones. */
export function timeRuns(fn: () => void, warmup: number, runs: number): number[] {
  for (let i = 0; i < warmup; i++) fn();
  const times: number[] = [];
  for (let i = 0; i < runs; i++) {
    const t0 = process.hrtime.bigint();
    fn();
    times.push(Number(process.hrtime.bigint() - t0) / 1e9);
  }
  return times;
}

/** Standard-normal-ish floats (sum of uniforms) from a fixed LCG; values only need to be non-degenerate. */
export function filledNormal(n: number, seed: number, std = 1): Float32Array {
  const out = new Float32Array(n);
  let s = seed >>> 0;
  const u = (): number => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 4294967296;
  };
  for (let i = 0; i < n; i++) out[i] = (u() + u() + u() + u() - 2) * 1.7320508 * std; // variance 4/12 · 3 = 1
  return out;
}

/** Token ids [batch, len] from a fixed LCG, all positions real (attention mask of ones). */
export function randomTokens(batch: number, len: number, vocab: number, seed: number): TokenBatch {
  const ids = new Int32Array(batch * len);
  let s = seed >>> 0;
  for (let i = 0; i < ids.length; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    ids[i] = s % vocab;
  }
  return { ids, batch, len, attentionMask: new Uint8Array(batch * len).fill(1) };
}

/** Peak resident set of this Node process so far (the whole bench run, not just the section), MB. */
export function nodePeakRssMb(): number {
  return process.resourceUsage().maxRSS / 1024;
}

/** The fields every torch script prints, plus the section's own (checked by `valid`). */
export interface TorchCommon {
  version: string;
  threads: number;
  maxrss_kb: number;
}

/**
 * Runs `script` with `args` in one /usr/bin/python3 subprocess and parses the JSON it prints.
 * Returns the reason instead when torch is not importable, the script fails, or the JSON is not
 * what `valid` expects.
 */
export function runTorch<T extends TorchCommon>(script: string, args: readonly (string | number)[], valid: (x: Record<string, unknown>) => boolean): T | { error: string } {
  const probe = spawnSync(PYTHON, ["-c", "import torch"], { encoding: "utf8" });
  if (probe.status !== 0) return { error: `${PYTHON} cannot import torch` };
  const run = spawnSync(PYTHON, ["-c", script, ...args.map(String)], { encoding: "utf8", maxBuffer: 1 << 22 });
  if (run.status !== 0) return { error: `torch script failed (exit ${run.status ?? run.signal}): ${run.stderr.trim().split("\n").pop() ?? ""}` };
  let parsed: unknown = null;
  try {
    parsed = JSON.parse(run.stdout);
  } catch {
    // reported below
  }
  if (typeof parsed === "object" && parsed !== null) {
    const r = parsed as Record<string, unknown>;
    if (typeof r.version === "string" && typeof r.threads === "number" && typeof r.maxrss_kb === "number" && valid(r)) return parsed as T;
  }
  return { error: `torch script printed ${run.stdout.trim().slice(0, 200)}` };
}

/** True when x is an array of numbers. */
export function isNumberArray(x: unknown): x is number[] {
  return Array.isArray(x) && x.every((v) => typeof v === "number");
}

/** Milliseconds with a precision that suits the size. */
export function fmtMs(seconds: number): string {
  const ms = seconds * 1000;
  return ms.toFixed(ms < 10 ? 2 : ms < 100 ? 1 : 0);
}

/** ours/peer ratio of speeds given their seconds (> 1: we are faster), or "n/a". */
export function speedRatio(oursSeconds: number, peerSeconds: number | null): string {
  return peerSeconds === null || !(oursSeconds > 0) ? "n/a" : (peerSeconds / oursSeconds).toFixed(2);
}

// ---------------------------------------------------------------------------------------------
// Roofline: achieved matmul FLOP/s of a model-level figure ÷ the sgemm FLOP/s measured in the same run.

/** Set by run.ts (the parent measures sgemm once per invocation and hands it to each section's child). */
export const SGEMM_REF_ENV = "BENCH_SGEMM_GFLOPS";

/** [M, K, N] of the reference sgemm: the three GPT-2-small shapes of bench/sgemm.ts (B·T = 1024). */
export const SGEMM_REF_SHAPES: readonly [number, number, number][] = [
  [1024, 768, 3072],
  [1024, 3072, 768],
  [1024, 768, 2304],
];

/**
 * The reference sgemm GFLOP/s: the mean over SGEMM_REF_SHAPES of the median native sgemm throughput
 * (5 calls after 2 warm-up), measured now. run.ts calls this once per invocation (in a child process)
 * and passes the result to every section in BENCH_SGEMM_GFLOPS.
 */
export async function measureSgemmGflops(): Promise<number> {
  const { getBackend } = await import("../src/tensor/backend/index.ts");
  const backend = getBackend();
  const rates = SGEMM_REF_SHAPES.map(([M, K, N]) => {
    const A = filledNormal(M * K, 1); // [M, K]
    const B = filledNormal(K * N, 2); // [K, N]
    const C = new Float32Array(M * N); // [M, N]
    const s = median(timeRuns(() => backend.sgemm(false, false, M, N, K, 1, A, K, B, N, 0, C, N), 3, 15)); // as the sgemm section
    return (2 * M * N * K) / s / 1e9;
  });
  return rates.reduce((a, b) => a + b, 0) / rates.length;
}

let sgemmRef: { gflops: number; source: string } | null = null;

/**
 * The reference sgemm GFLOP/s of a section: measured in its own process (once), and when run.ts gave
 * the run's start value (BENCH_SGEMM_GFLOPS), the higher of the two. On a shared VM one measurement can
 * land in a slow moment (a start value of 141 against 188 in the sgemm section right after was seen);
 * the higher rate is the machine's limit, so a fraction against it errs low, not high.
 */
export async function sgemmReference(): Promise<{ gflops: number; source: string }> {
  if (sgemmRef !== null) return sgemmRef;
  const given = Number(process.env[SGEMM_REF_ENV]);
  const own = await measureSgemmGflops();
  sgemmRef = Number.isFinite(given) && given > 0
    ? { gflops: Math.max(given, own), source: `the higher of the run's start (${given.toFixed(1)}) and this section's own measurement (${own.toFixed(1)})` }
    : { gflops: own, source: "measured in this section" };
  return sgemmRef;
}

/** One line for a section's context: the reference sgemm rate and where it came from. */
export function sgemmRefText(ref: { gflops: number; source: string }): string {
  return `roofline: sgemm ${ref.gflops.toFixed(1)} GFLOP/s (mean of the 3 GPT-2-small shapes, ${ref.source})`;
}

/**
 * The reference sgemm GFLOP/s right now, from a short burst: for each SGEMM_REF_SHAPES shape the median
 * of 3 calls after 1 warm-up, then the mean of the three rates (about 0.3 s). Each shape's buffers are
 * dropped before the next, so at most one shape's (about 25 MB) is alive.
 */
export function sgemmBurstGflops(): number {
  const backend = getBackend();
  const rates = SGEMM_REF_SHAPES.map(([M, K, N]) => {
    const A = filledNormal(M * K, 1); // [M, K]
    const B = filledNormal(K * N, 2); // [K, N]
    const C = new Float32Array(M * N); // [M, N]
    const s = median(timeRuns(() => backend.sgemm(false, false, M, N, K, 1, A, K, B, N, 0, C, N), 1, 3));
    return (2 * M * N * K) / s / 1e9;
  });
  return rates.reduce((a, b) => a + b, 0) / rates.length;
}

/** Timed runs, each paired with the reference sgemm rate measured right before it. */
export interface PairedRuns {
  seconds: number[];
  refGflops: number[];
}

/**
 * timeRuns with a reference sgemm burst (sgemmBurstGflops) right before each timed run. On a shared VM
 * the machine's speed drifts by ±10 % within a minute; a fraction of one run against the rate of the
 * same moment cancels that drift, where a reference taken once, seconds or a torch run away, does not.
 */
export function timeRunsPaired(fn: () => void, warmup: number, runs: number): PairedRuns {
  for (let i = 0; i < warmup; i++) fn();
  const seconds: number[] = [];
  const refGflops: number[] = [];
  for (let i = 0; i < runs; i++) {
    refGflops.push(sgemmBurstGflops());
    seconds.push(timeRuns(fn, 0, 1)[0]!);
  }
  return { seconds, refGflops };
}

/**
 * What a section reports from paired runs: the median seconds, the median reference rate (for torch's
 * row and the context line), and ours' fraction of sgemm = the median over runs of
 * (flops ÷ seconds_i) ÷ ref_i, in percent.
 */
export function pairedSummary(p: PairedRuns, flops: number): { seconds: number; ref: { gflops: number; source: string }; pct: number } {
  const pcts = p.seconds.map((s, i) => (flops / s / 1e9 / p.refGflops[i]!) * 100);
  const lo = Math.min(...p.refGflops);
  const hi = Math.max(...p.refGflops);
  return {
    seconds: median(p.seconds),
    pct: median(pcts),
    ref: {
      gflops: median(p.refGflops),
      source: `measured right before each timed run, median of ${p.refGflops.length}, range ${lo.toFixed(1)}–${hi.toFixed(1)}; ours' fraction is the median of the per-run fractions (${pcts.map((x) => x.toFixed(0)).join(", ")} %), torch's is against the median rate`,
    },
  };
}

/** "62 % (target ≥ 85 %)" from a percentage. */
export function pctCell(pct: number, targetPct: number | null): string {
  return Number.isFinite(pct) ? `${pct.toFixed(0)} %${targetPct === null ? "" : ` (target ≥ ${targetPct} %)`}` : "n/a";
}

/** "62 % (target ≥ 85 %)": the fraction of the reference sgemm rate reached by `flops` in `seconds`. */
export function rooflineCell(flops: number, seconds: number | null, refGflops: number, targetPct: number | null): string {
  if (seconds === null || !(seconds > 0) || !(refGflops > 0)) return "n/a";
  return pctCell((flops / seconds / 1e9 / refGflops) * 100, targetPct);
}

/** Achieved GFLOP/s of `flops` in `seconds`. */
export function gflopsCell(flops: number, seconds: number | null): string {
  return seconds === null || !(seconds > 0) ? "n/a" : (flops / seconds / 1e9).toFixed(1);
}

/**
 * The two rows of a forward-throughput section (forward, qwen): ours and torch's tokens/s, ms per
 * batch, peak RSS, GFLOP/s and fraction of sgemm (ours against `targetPct`), and ours/torch on our
 * row (with `ratioTarget` when given); torch's row is left out when it could not run. `first`
 * columns lead each row (e.g. a `measure` column).
 */
export function forwardRows(o: {
  tokensPerBatch: number; oursSeconds: number; oursRssMb: number; flops: number; refGflops: number; targetPct: number;
  /** Ours' fraction of sgemm in percent when measured paired (pairedSummary); else from refGflops. */
  oursPct?: number;
  torch: (TorchCommon & { seconds: number[] }) | { error: string }; ratioTarget?: string; first?: Record<string, string>;
}): Record<string, string>[] {
  const tokS = (s: number): string => (o.tokensPerBatch / s).toFixed(0);
  const row = (implementation: string, seconds: number, rssMb: number, targetPct: number | null): Record<string, string> => ({
    ...o.first, implementation, "tokens/s": tokS(seconds), "ms / batch": (seconds * 1000).toFixed(0), "peak RSS MB": rssMb.toFixed(0),
    "GFLOP/s": gflopsCell(o.flops, seconds), "of sgemm": rooflineCell(o.flops, seconds, o.refGflops, targetPct), "ours/torch": "",
  });
  const ours = row(`selfreport (${getBackend().name})`, o.oursSeconds, o.oursRssMb, o.targetPct);
  if (o.oursPct !== undefined) ours["of sgemm"] = pctCell(o.oursPct, o.targetPct);
  if ("error" in o.torch) return [{ ...ours, "ours/torch": `n/a (${o.torch.error})` }];
  const t = median(o.torch.seconds);
  ours["ours/torch"] = `${(t / o.oursSeconds).toFixed(2)}${o.ratioTarget === undefined ? "" : ` (${o.ratioTarget})`}`;
  return [ours, row(`torch ${o.torch.version}`, t, o.torch.maxrss_kb / 1024, null)];
}
