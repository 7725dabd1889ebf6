/**
 * Runs the real `selfreport` command (bin/selfreport.js → dist/src/cli/main.js) in a child process,
 * and snapshots folders to prove that a refused command left every file byte-identical.
 *
 *   const r = runChild(["train", …]);            // { code, stdout, stderr }
 *   const p = startChild(["train", …]);          // a running ChildProcess (for locks and kill -9)
 *   const before = snapshot(dir); …; assert.deepEqual(snapshot(dir), before);
 */
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync, readdirSync, readFileSync, statSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

/** bin/selfreport.js of this checkout (tests run from dist/test/…). */
export const BIN = resolve(dirname(fileURLToPath(import.meta.url)), "../../../bin/selfreport.js");

export interface ChildResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

export function childEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  return { ...process.env, SELFREPORT_QUIET: "1", OPENBLAS_NUM_THREADS: "1", ...extra };
}

export function runChild(args: readonly string[], env: Record<string, string> = {}): ChildResult {
  const r = spawnSync(process.execPath, [BIN, ...args], { env: childEnv(env), encoding: "utf8", timeout: 300_000 });
  return { code: r.status, signal: r.signal, stdout: r.stdout, stderr: r.stderr };
}

export function startChild(args: readonly string[], env: Record<string, string> = {}): ChildProcess {
  return spawn(process.execPath, [BIN, ...args], { env: childEnv(env), stdio: ["ignore", "pipe", "pipe"] });
}

/** Waits for a started child; collects its output. */
export function waitChild(p: ChildProcess): Promise<ChildResult> {
  let stdout = "";
  let stderr = "";
  p.stdout?.on("data", (d: Buffer) => void (stdout += d.toString()));
  p.stderr?.on("data", (d: Buffer) => void (stderr += d.toString()));
  return new Promise((res) => p.on("close", (code, signal) => res({ code, signal, stdout, stderr })));
}

/** sha256 of every file under `dir` (or of the file `dir`), keyed by relative path. */
export function snapshot(path: string): Record<string, string> {
  const out: Record<string, string> = {};
  if (!existsSync(path)) return out;
  const walk = (p: string, rel: string): void => {
    if (statSync(p).isDirectory()) {
      out[rel + "/"] = "dir";
      for (const e of readdirSync(p).sort()) walk(join(p, e), rel === "" ? e : `${rel}/${e}`);
    } else out[rel] = createHash("sha256").update(readFileSync(p)).digest("hex");
  };
  walk(path, "");
  return out;
}
