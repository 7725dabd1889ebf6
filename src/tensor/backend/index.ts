/**
 * Which dense-matmul backend the tensor engine uses.
 *
 * Default: the native OpenBLAS addon when it loads, else the pure TypeScript kernels, with one
 * line on stderr (once per process) saying so. SELFREPORT_BACKEND=js forces the TypeScript
 * backend silently; SELFREPORT_BACKEND=native requires the addon and throws if it cannot load.
 */
import { SelfreportError } from "../../errors.ts";
import { jsBackend } from "./js.ts";
import { loadNativeBackend } from "./native.ts";
import type { Backend } from "./types.ts";

export type BackendName = Backend["name"];
const BACKEND_NAMES: readonly BackendName[] = ["native", "js"];

let current: Backend | null = null;
let warnedFallback = false;

function nativeOrThrow(why: string): Backend {
  const loaded = loadNativeBackend();
  if (loaded.ok) return loaded.backend;
  throw new SelfreportError(`${why}, but the native OpenBLAS backend cannot load: ${loaded.reason}`);
}

/**
 * The backend selected by a SELFREPORT_BACKEND value (undefined or "" = default). `warn` receives
 * the fallback line when the default cannot use the native backend. Exported for tests.
 */
export function chooseBackend(envValue: string | undefined, warn: (line: string) => void): Backend {
  if (envValue === undefined || envValue === "") {
    const loaded = loadNativeBackend();
    if (loaded.ok) return loaded.backend;
    warn(`selfreport: native OpenBLAS backend unavailable (${loaded.reason}); using the pure TypeScript backend (slower).`);
    return jsBackend;
  }
  if (envValue === "js") return jsBackend;
  if (envValue === "native") return nativeOrThrow("SELFREPORT_BACKEND=native");
  throw new SelfreportError(
    `SELFREPORT_BACKEND=${JSON.stringify(envValue)} is not a backend; allowed values: ${BACKEND_NAMES.map((n) => JSON.stringify(n)).join(", ")} (or unset for the default)`,
  );
}

/** The backend in use; chosen on first call from SELFREPORT_BACKEND (see the file comment). */
export function getBackend(): Backend {
  if (current === null) {
    current = chooseBackend(process.env.SELFREPORT_BACKEND, (line) => {
      if (!warnedFallback) process.stderr.write(line + "\n");
      warnedFallback = true;
    });
  }
  return current;
}

/** Switches backend for the rest of the process; "native" throws if the addon cannot load. */
export function setBackend(name: BackendName): void {
  if (name === "js") current = jsBackend;
  else if (name === "native") current = nativeOrThrow(`setBackend("native") was called`);
  else {
    const bad: unknown = name;
    throw new SelfreportError(`setBackend: unknown backend ${JSON.stringify(bad)}; allowed values: ${BACKEND_NAMES.join(", ")}`);
  }
}

/** Every backend that works in this process, native first. */
export function availableBackends(): Backend[] {
  const loaded = loadNativeBackend();
  return loaded.ok ? [loaded.backend, jsBackend] : [jsBackend];
}
