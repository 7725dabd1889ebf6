/**
 * Cooperative Ctrl-C / SIGTERM for CLI commands (see src/util/interrupt.ts), and the command line
 * printed to continue interrupted work.
 */
import { allowCooperativeInterrupts, type Interrupted } from "../util/interrupt.ts";

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
