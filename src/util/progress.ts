/**
 * Progress bars for long work: cli-progress on a terminal; otherwise (logs, CI, a pipe) a plain line
 * at every 10 % and at least every 10 s of work, so a log shows that the work is alive. Silent when
 * SELFREPORT_QUIET=1.
 *
 * Work that resumes (training with --resume) passes `start`, the steps done before this process: the
 * ETA is then the time per step *of this process* times the steps left, not the total elapsed time
 * spread over all steps done so far.
 */
import cliProgress from "cli-progress";

export interface Progress {
  /** Moves to `value` (of total) and updates the named fields shown after the bar. */
  update(value: number, fields?: Record<string, string | number>): void;
  stop(): void;
}

export interface ProgressOptions {
  /** Steps already done before this process started (a resumed run); default 0. */
  start?: number;
  /** Off a terminal: the longest time between two lines (ms); default 10 000. */
  everyMs?: number;
  /** Clock in ms (tests); default Date.now. */
  now?: () => number;
  /** Where lines go (tests); default process.stderr, as a bar when it is a terminal. */
  write?: (line: string) => void;
}

export const PROGRESS_EVERY_MS = 10_000;

export function progress(label: string, total: number, fieldNames: readonly string[] = [], opts: ProgressOptions = {}): Progress {
  if (process.env["SELFREPORT_QUIET"] === "1") return { update() {}, stop() {} };
  const start = opts.start ?? 0;
  const fieldFmt = fieldNames.map((f) => `${f} {${f}}`).join(" | ");
  if (opts.write === undefined && process.stderr.isTTY) {
    const bar = new cliProgress.SingleBar(
      {
        format: `${label} [{bar}] {percentage}% {value}/{total} | ETA {eta_formatted}${fieldFmt ? ` | ${fieldFmt}` : ""}`,
        stream: process.stderr,
        hideCursor: true,
        etaBuffer: 50,
        fps: 5,
      },
      cliProgress.Presets.shades_classic,
    );
    // starting at `start` (not 0) keeps the steps done before a resume out of cli-progress's rate
    bar.start(total, start, Object.fromEntries(fieldNames.map((f) => [f, "-"])));
    return {
      update: (v, fields) => bar.update(v, fields ?? {}),
      stop: () => bar.stop(),
    };
  }
  const now = opts.now ?? Date.now;
  const write = opts.write ?? ((line: string) => void process.stderr.write(`${line}\n`));
  const everyMs = opts.everyMs ?? PROGRESS_EVERY_MS;
  const t0 = now();
  let lastPrint = -Infinity;
  let nextFrac = 0;
  return {
    update(v, fields) {
      const t = now();
      const frac = total > 0 ? v / total : 1;
      if (frac + 1e-9 < nextFrac && t - lastPrint < everyMs && v !== total) return;
      lastPrint = t;
      nextFrac = Math.floor(frac * 10 + 1e-9 + 1) / 10;
      const elapsed = (t - t0) / 1000;
      const doneHere = v - start;
      const eta = doneHere > 0 ? (elapsed / doneHere) * (total - v) : NaN;
      const extra = fields ? Object.entries(fields).map(([k, x]) => `${k} ${x}`).join(" | ") : "";
      write(`${label} ${Math.round(frac * 100)}% ${v}/${total} | ${elapsed.toFixed(0)}s elapsed, ETA ${Number.isFinite(eta) ? eta.toFixed(0) + "s" : "-"}${extra ? ` | ${extra}` : ""}`);
    },
    stop() {},
  };
}

/** Prints a line to stderr unless SELFREPORT_QUIET=1. */
export function info(line: string): void {
  if (process.env["SELFREPORT_QUIET"] !== "1") process.stderr.write(`${line}\n`);
}
