/**
 * Progress bars for long work (cli-progress on a terminal; a plain line every ~10 % otherwise, so
 * logs and CI output stay readable). Silent when SELFREPORT_QUIET=1.
 */
import cliProgress from "cli-progress";

export interface Progress {
  /** Moves to `value` (of total) and updates the named fields shown after the bar. */
  update(value: number, fields?: Record<string, string | number>): void;
  stop(): void;
}

export function progress(label: string, total: number, fieldNames: readonly string[] = []): Progress {
  if (process.env["SELFREPORT_QUIET"] === "1") return { update() {}, stop() {} };
  const fieldFmt = fieldNames.map((f) => `${f} {${f}}`).join(" | ");
  if (process.stderr.isTTY) {
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
    bar.start(total, 0, Object.fromEntries(fieldNames.map((f) => [f, "-"])));
    return {
      update: (v, fields) => bar.update(v, fields ?? {}),
      stop: () => bar.stop(),
    };
  }
  const start = Date.now();
  let nextPrint = 0;
  return {
    update(v, fields) {
      const frac = total > 0 ? v / total : 1;
      if (frac + 1e-9 < nextPrint && v !== total) return;
      nextPrint = Math.floor(frac * 10 + 1) / 10;
      const elapsed = (Date.now() - start) / 1000;
      const eta = frac > 0 ? (elapsed / frac) * (1 - frac) : NaN;
      const extra = fields ? Object.entries(fields).map(([k, x]) => `${k} ${x}`).join(" | ") : "";
      process.stderr.write(`${label} ${Math.round(frac * 100)}% ${v}/${total} | ${elapsed.toFixed(0)}s elapsed, ETA ${Number.isFinite(eta) ? eta.toFixed(0) + "s" : "-"}${extra ? ` | ${extra}` : ""}\n`);
    },
    stop() {},
  };
}

/** Prints a line to stderr unless SELFREPORT_QUIET=1. */
export function info(line: string): void {
  if (process.env["SELFREPORT_QUIET"] !== "1") process.stderr.write(`${line}\n`);
}
