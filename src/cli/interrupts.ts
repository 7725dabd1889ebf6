/**
 * Cooperative Ctrl-C / SIGTERM for CLI commands (see src/util/interrupt.ts), and the command line
 * printed to continue interrupted work.
 */
import { allowCooperativeInterrupts, interruptibleSection, throwIfInterrupted, type Interrupted } from "../util/interrupt.ts";

/**
 * Wraps a command's action so that SIGINT/SIGTERM stop its long loops cooperatively
 * (src/util/interrupt.ts): they see the flag, keep what is complete and throw Interrupted, which `run`
 * maps to exit code 130 (SIGINT) or 143 (SIGTERM). A second signal exits at once.
 */
export function interruptible<A extends unknown[]>(action: (...args: A) => Promise<void> | void): (...args: A) => Promise<void> {
  return async (...args: A) => {
    const end = allowCooperativeInterrupts();
    try {
      await action(...args);
    } finally {
      end();
    }
  };
}

/**
 * Runs a command's body (inside `interruptible`) with the signal handlers installed throughout, so a
 * signal at any point (loading a model, an analysis's loops, rendering plots) only sets the flag and
 * is seen at the next check: the long loops check between batches, and `beforeWriting()` checks once
 * more just before the output is written. Interrupted's message is `stopped()`: nothing was written.
 * A signal after the output is written is too late to stop anything: the command finishes normally.
 */
export async function deferringSignals<T>(stopped: () => string, fn: (beforeWriting: () => void) => Promise<T>): Promise<T> {
  const section = interruptibleSection();
  try {
    return await fn(() => throwIfInterrupted(stopped));
  } finally {
    section.end();
  }
}

/** The message of a command stopped before writing `out`. */
export function nothingWritten(what: string, out: string): () => string {
  return () => `${what} stopped before it finished; nothing was written to ${out} (run the command again)`;
}

function shellQuote(s: string): string {
  return /^[\w@%+=:,./-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`;
}

/**
 * The command line that continues interrupted work: the same arguments without --force (which would
 * throw away what was kept), plus --resume when the command needs it.
 */
export function resumeCommand(args: readonly string[], how: "--resume" | "rerun"): string {
  const kept = args.filter((a) => a !== "--force");
  if (how === "--resume" && !kept.includes("--resume")) kept.push("--resume");
  return ["selfreport", ...kept].map(shellQuote).join(" ");
}

/** The one line printed for an Interrupted error. */
export function interruptedLine(e: Interrupted, args: readonly string[]): string {
  const how = e.resume === null ? "" : `; ${e.resume === "--resume" ? "resume" : "continue"} with: ${resumeCommand(args, e.resume)}`;
  return `selfreport: ${e.signal}: ${e.message}${how}`;
}
