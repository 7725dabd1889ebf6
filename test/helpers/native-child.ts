/**
 * Runs a script against the native backend in a child Node process, for tests whose setting only
 * takes effect at load time (OPENBLAS_NUM_THREADS, SELFREPORT_SIMD). The script is the body of a
 * function given `be`, the loaded native backend, and `m`, the native module; what it prints is returned.
 */
import { spawnSync } from "node:child_process";
import { fileURLToPath } from "node:url";
import assert from "node:assert/strict";

const ext = import.meta.url.endsWith(".ts") ? ".ts" : ".js";
const NATIVE = fileURLToPath(new URL(`../../src/tensor/backend/native${ext}`, import.meta.url));

/** `env` entries are added to this process's environment; an undefined one is removed. Asserts exit 0. */
export function runNativeChild(body: string, env: Record<string, string | undefined>): string {
  const childEnv: NodeJS.ProcessEnv = { ...process.env };
  for (const [k, v] of Object.entries(env)) {
    if (v === undefined) delete childEnv[k];
    else childEnv[k] = v;
  }
  const script = `import(${JSON.stringify(NATIVE)}).then((m) => { const be = m.loadNativeBackend().backend;\n${body}\n})`;
  const r = spawnSync(process.execPath, ["--input-type=module", "-e", script], { env: childEnv, encoding: "utf8", maxBuffer: 1 << 30 });
  assert.equal(r.status, 0, r.stderr);
  return r.stdout;
}
