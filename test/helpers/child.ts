/**
 * `selfreport` as a real child process, for tests about signals, exit codes and what is printed:
 *
 *   const c = spawnCli(["train", …], { cwd });   // node bin/selfreport.js …, stdout/stderr collected
 *   await until(() => linesOf(file) >= 20, 30_000, c);
 *   c.proc.kill("SIGINT");
 *   const { code, ms } = await exitOf(c, 15_000);   // code null when killed by a signal
 *   c.stderr()                                      // everything printed to stderr so far
 */
import { spawn, type ChildProcess } from "node:child_process";
import { existsSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

export const BIN = fileURLToPath(new URL("../../../bin/selfreport.js", import.meta.url));

export interface Child {
  proc: ChildProcess;
  stdout(): string;
  stderr(): string;
  /** With spawnCli({ markSignals: true }): whether the command has installed its signal handlers. */
  handlesSignals(): boolean;
}

let marks = 0;

/**
 * Runs `node bin/selfreport.js ...args`. With markSignals, `c.handlesSignals()` turns true once the
 * command has installed its SIGINT/SIGTERM handlers (see signal-ready.ts).
 */
export function spawnCli(args: readonly string[], opts: { cwd?: string; env?: Record<string, string>; markSignals?: boolean } = {}): Child {
  const mark = join(tmpdir(), `selfreport-signal-mark-${process.pid}-${marks++}`);
  rmSync(mark, { force: true });
  const preload = opts.markSignals === true ? ["--import", new URL("./signal-ready.js", import.meta.url).href] : [];
  const proc = spawn(process.execPath, [...preload, BIN, ...args], {
    cwd: opts.cwd,
    env: { ...process.env, SELFREPORT_QUIET: "0", ...(opts.markSignals === true ? { SELFREPORT_TEST_SIGNAL_MARK: mark } : {}), ...opts.env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  proc.once("exit", () => rmSync(mark, { force: true }));
  let out = "";
  let err = "";
  proc.stdout!.on("data", (d: Buffer) => void (out += d.toString()));
  proc.stderr!.on("data", (d: Buffer) => void (err += d.toString()));
  return { proc, stdout: () => out, stderr: () => err, handlesSignals: () => existsSync(mark) };
}

/** Resolves when cond() holds (polled every 20 ms); rejects after ms or when the child exits first. */
export function until(cond: () => boolean, ms: number, c: Child, what = "the condition"): Promise<void> {
  return new Promise((resolve, reject) => {
    const t0 = Date.now();
    const tick = (): void => {
      if (cond()) return resolve();
      if (c.proc.exitCode !== null || c.proc.signalCode !== null) return reject(new Error(`the process exited (${c.proc.exitCode ?? c.proc.signalCode}) before ${what}; stderr:\n${c.stderr()}`));
      if (Date.now() - t0 > ms) return reject(new Error(`no ${what} within ${ms} ms; stderr:\n${c.stderr()}`));
      setTimeout(tick, 20);
    };
    tick();
  });
}

/** The number of lines in a file (0 when it does not exist). */
export function linesOf(path: string): number {
  if (!existsSync(path)) return 0;
  return readFileSync(path, "utf8").split("\n").filter((l) => l !== "").length;
}

/** Waits for the child's exit: its code (null when a signal ended it) and the ms waited; rejects after ms. */
export function exitOf(c: Child, ms: number): Promise<{ code: number | null; signal: NodeJS.Signals | null; ms: number }> {
  const t0 = Date.now();
  return new Promise((resolve, reject) => {
    const done = (): void => resolve({ code: c.proc.exitCode, signal: c.proc.signalCode, ms: Date.now() - t0 });
    if (c.proc.exitCode !== null || c.proc.signalCode !== null) return done();
    const timer = setTimeout(() => {
      c.proc.kill("SIGKILL");
      reject(new Error(`process ${c.proc.pid} did not exit within ${ms} ms (killed); stderr:\n${c.stderr()}`));
    }, ms);
    c.proc.once("exit", () => {
      clearTimeout(timer);
      // 'exit' can come before the last output; 'close' follows once the pipes are drained
      c.proc.once("close", done);
      if (c.proc.stdout!.readableEnded && c.proc.stderr!.readableEnded) done();
    });
  });
}

