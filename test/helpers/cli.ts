/**
 * Runs the `selfreport` CLI in-process (src/cli/main.ts `run`) and captures what it prints:
 *
 *   const { code, lines } = await runCapture(["analyze", "residual", "--run", dir, …]);
 *
 * console.log and console.error lines are collected in order (each call joined with spaces) and
 * restored afterwards, also when the command throws.
 */
import { run } from "../../src/cli/main.ts";

export async function runCapture(args: readonly string[]): Promise<{ code: number; lines: string[] }> {
  const lines: string[] = [];
  const origLog = console.log;
  const origErr = console.error;
  console.log = (...a: unknown[]) => void lines.push(a.join(" "));
  console.error = (...a: unknown[]) => void lines.push(a.join(" "));
  try {
    return { code: await run(["node", "selfreport", ...args]), lines };
  } finally {
    console.log = origLog;
    console.error = origErr;
  }
}
