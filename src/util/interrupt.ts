/**
 * Ctrl-C (SIGINT) and SIGTERM during long work.
 *
 * The CLI allows cooperative interrupts for the commands that support them (`interruptible` in
 * src/cli/interrupts.ts calls `allowCooperativeInterrupts`). The long loops (training, pre-training,
 * sweeps, the queue worker, the analyses) then run inside an `interruptibleSection`, which installs the handlers for
 * its duration: the first signal only sets a flag and prints one line; the loop gives the event loop a
 * turn between steps (`yieldToEventLoop`, so the handler can run at all), sees the flag, saves what is
 * complete and throws `Interrupted`; the CLI prints its message as one line and exits with `exitCode`
 * (130 after SIGINT, 143 after SIGTERM: the shell's 128 + signal number). A second signal exits at once.
 *
 * The analyses and the report (src/cli/interrupts.ts `deferringSignals`) keep a section open for the
 * whole command, so a signal while the model loads is seen at the first check, and check once more just
 * before writing.
 *
 * Outside a section (synchronous preparation: loading a model, computing features) Node's default
 * applies and a signal ends the process at once: a handler could not run before the work is done, and
 * every output is written atomically, so nothing half-written is left. Library code never calls
 * process.exit; without the CLI (a notebook, a script) nothing is intercepted.
 */

export type InterruptSignal = "SIGINT" | "SIGTERM";

/** The process exit code after a signal: 128 + the signal's number. */
export function signalExitCode(signal: InterruptSignal): number {
  return signal === "SIGTERM" ? 143 : 130;
}

export type ResumeHow = "--resume" | "rerun" | null;

/** Thrown by long work that stopped because of a signal; `message` says what was kept. */
export class Interrupted extends Error {
  override name = "Interrupted";
  readonly signal: InterruptSignal;
  /**
   * How to continue: "--resume" = the same command plus --resume; "rerun" = the same command again
   * (it skips what is done); null = start again.
   */
  readonly resume: ResumeHow;
  constructor(signal: InterruptSignal, message: string, opts: { resume?: ResumeHow } = {}) {
    super(message);
    this.signal = signal;
    this.resume = opts.resume ?? null;
  }
  get exitCode(): number {
    return signalExitCode(this.signal);
  }
}

let received: InterruptSignal | null = null;
const listeners = new Set<(signal: InterruptSignal) => void>();

/** The signal received since the handlers were installed, or null. */
export function interruptSignal(): InterruptSignal | null {
  return received;
}

/** Throws Interrupted(message) when a signal has been received. */
export function throwIfInterrupted(message: string | (() => string), opts: { resume?: ResumeHow } = {}): void {
  if (received !== null) throw new Interrupted(received, typeof message === "string" ? message : message(), opts);
}

/** Calls fn on the first signal (at once if one was already received); returns the unsubscribe. */
export function onInterruptSignal(fn: (signal: InterruptSignal) => void): () => void {
  if (received !== null) {
    fn(received);
    return () => {};
  }
  listeners.add(fn);
  return () => void listeners.delete(fn);
}

let lastYield = 0;
/**
 * Lets pending signal handlers (and other I/O callbacks) run: a setImmediate turn of the event loop,
 * at most every `everyMs` (a turn costs a few microseconds; training steps call this every step).
 */
export async function yieldToEventLoop(everyMs = 20): Promise<void> {
  const now = Date.now();
  if (now - lastYield < everyMs) return;
  lastYield = now;
  await new Promise<void>((r) => setImmediate(r));
}

let cooperative = false;
let sectionDepth = 0;
let removeHandlers: (() => void) | null = null;
let writeLine: (line: string) => void = (l) => void process.stderr.write(`${l}\n`);

/**
 * The CLI: from now on, interruptible sections install signal handlers. Returns the function that
 * ends this (removing any handlers and clearing the flag).
 */
export function allowCooperativeInterrupts(write?: (line: string) => void): () => void {
  cooperative = true;
  received = null;
  if (write !== undefined) writeLine = write;
  return () => {
    cooperative = false;
    sectionDepth = 0;
    removeHandlers?.();
    removeHandlers = null;
    listeners.clear();
    received = null;
    writeLine = (l) => void process.stderr.write(`${l}\n`);
  };
}

/**
 * Work that checks interruptSignal() often (and awaits yieldToEventLoop) runs between this call and
 * end(): with cooperative interrupts allowed, the handlers are installed meanwhile. Sections nest.
 */
export function interruptibleSection(): { end(): void } {
  if (!cooperative) return { end() {} };
  if (sectionDepth++ === 0) removeHandlers = installInterruptHandlers(writeLine);
  let ended = false;
  return {
    end() {
      if (ended || !cooperative) return;
      ended = true;
      if (--sectionDepth === 0) {
        removeHandlers?.();
        removeHandlers = null;
      }
    },
  };
}

/**
 * Installs the SIGINT/SIGTERM handlers (first signal: flag + one line; second: exit at once).
 * Returns the function that removes them again and clears the flag (Interrupted carries the signal on).
 */
export function installInterruptHandlers(write: (line: string) => void = writeLine): () => void {
  const handler = (signal: NodeJS.Signals): void => {
    const sig: InterruptSignal = signal === "SIGTERM" ? "SIGTERM" : "SIGINT";
    if (received !== null) {
      write(`selfreport: ${sig} again: quitting now`);
      process.exit(signalExitCode(received));
    }
    received = sig;
    write(`\nselfreport: ${sig} received: stopping and keeping what is complete (${sig === "SIGINT" ? "Ctrl-C" : "send it"} again to quit at once)`);
    for (const fn of [...listeners]) fn(sig);
    listeners.clear();
  };
  process.on("SIGINT", handler);
  process.on("SIGTERM", handler);
  return () => {
    process.off("SIGINT", handler);
    process.off("SIGTERM", handler);
    received = null;
  };
}

/** A promise resolved with the signal when one arrives (never, when no handlers are installed); dispose() unsubscribes. */
export function whenInterrupted(): { promise: Promise<InterruptSignal>; dispose(): void } {
  let dispose: () => void = () => {};
  const promise = new Promise<InterruptSignal>((resolve) => (dispose = onInterruptSignal(resolve)));
  return { promise, dispose };
}

/** Waits ms, or until a signal arrives. */
export function sleepUnlessInterrupted(ms: number): Promise<void> {
  return new Promise((resolve) => {
    const w = whenInterrupted();
    const t = setTimeout(() => {
      w.dispose();
      resolve();
    }, ms);
    void w.promise.then(() => {
      clearTimeout(t);
      resolve();
    });
  });
}

/**
 * Long synchronous work written once as a generator that yields between steps (e.g. after each batch)
 * runs either to the end at once (`runSteps`) or with a turn of the event loop between steps inside an
 * interruptible section (`runStepsInterruptibly`), which throws Interrupted(stopped()) on a signal.
 */
export function runSteps<T>(steps: Generator<unknown, T>): T {
  for (;;) {
    const r = steps.next();
    if (r.done === true) return r.value;
  }
}

export async function runStepsInterruptibly<T>(steps: Generator<unknown, T>, stopped: () => string, opts: { resume?: ResumeHow } = {}): Promise<T> {
  const section = interruptibleSection();
  try {
    for (;;) {
      const r = steps.next();
      if (r.done === true) return r.value;
      await yieldToEventLoop();
      const signal = interruptSignal();
      if (signal !== null) {
        steps.return(undefined as T);
        throw new Interrupted(signal, stopped(), opts);
      }
    }
  } finally {
    section.end();
  }
}
