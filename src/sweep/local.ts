/**
 * Sweep tasks on worker threads: a fixed pool of threads (thread.ts), each running one task at a
 * time with its own JobRunner. Used by `selfreport sweep` (the local pool, default one thread per
 * core) and by `selfreport worker` (one thread per queue slot, so the BullMQ connection's event loop
 * stays free to renew job locks while the thread computes).
 *
 * A thread that dies mid-task (out of memory, a native crash) is replaced; its task's unfinished jobs
 * are recorded as failed, with the error, and the other tasks go on.
 */
import { Worker } from "node:worker_threads";
import { JobRunner, workerName, type JobResult } from "./jobs.ts";
import { info } from "../util/progress.ts";
import { loadNativeBackend } from "../tensor/backend/native.ts";
import { Interrupted, interruptibleSection, interruptSignal, onInterruptSignal } from "../util/interrupt.ts";
import type { SweepManifest, Task } from "./spec.ts";
import type { ThreadData, ThreadReply } from "./thread.ts";

interface Pending {
  task: Task;
  resolve: (r: JobResult[]) => void;
  reject: (e: Error) => void;
}

interface Slot {
  worker: Worker;
  current: Pending | null;
}

/** The thread script beside this module (thread.js when compiled, thread.ts when run from source). */
function threadUrl(): URL {
  return new URL(import.meta.url.endsWith(".ts") ? "./thread.ts" : "./thread.js", import.meta.url);
}

export class TaskThreads {
  private readonly slots: Slot[] = [];
  private readonly queue: Pending[] = [];
  private closed = false;

  /**
   * onThreadDeath: "record" (default) writes the dying thread's unfinished jobs as failed and resolves;
   * "reject" rejects the task's promise instead (the queue worker lets BullMQ retry the task).
   */
  constructor(readonly sweepDir: string, readonly manifest: SweepManifest, readonly size: number, readonly opts: { onThreadDeath?: "record" | "reject" } = {}) {
    if (!Number.isInteger(size) || size < 1) throw new RangeError(`TaskThreads: size must be a positive integer, got ${size}`);
    loadNativeBackend(); // OpenBLAS loads here, on the main thread, so it reads the environment our settings go into (withQuietBlasHelpers)
    for (let i = 0; i < size; i++) this.slots.push(this.spawn());
  }

  private spawn(): Slot {
    const data: ThreadData = { sweepDir: this.sweepDir, manifest: this.manifest };
    const worker = new Worker(threadUrl(), { workerData: data, env: { ...process.env, SELFREPORT_QUIET: "1" } });
    const slot: Slot = { worker, current: null };
    worker.on("message", (m: ThreadReply) => {
      const p = slot.current;
      slot.current = null;
      if (p !== null) {
        if (m.type === "done") p.resolve(m.results);
        else p.reject(new Error(m.message));
      }
      this.dispatch();
    });
    const died = (why: string): void => {
      const p = slot.current;
      slot.current = null;
      const i = this.slots.indexOf(slot);
      if (i >= 0 && !this.closed) this.slots[i] = this.spawn();
      if (p !== null && this.opts.onThreadDeath === "reject") p.reject(new Error(`worker thread died: ${why}`));
      else if (p !== null) {
        // the thread is gone: record its task's unfinished jobs as failed from here
        try {
          p.resolve(new JobRunner(this.sweepDir, this.manifest, workerName()).failTask(p.task, `worker thread died: ${why}`));
        } catch (e) {
          p.reject(e instanceof Error ? e : new Error(String(e)));
        }
      }
      this.dispatch();
    };
    worker.on("error", (e) => died(e.message));
    worker.on("exit", (code) => {
      if (!this.closed && code !== 0) died(`exit code ${code}`);
    });
    return slot;
  }

  private dispatch(): void {
    for (const slot of this.slots) {
      if (slot.current !== null) continue;
      const next = this.queue.shift();
      if (next === undefined) return;
      slot.current = next;
      slot.worker.postMessage({ task: next.task });
    }
  }

  /** Runs the task on the next free thread. */
  run(task: Task): Promise<JobResult[]> {
    if (this.closed) return Promise.reject(new Error("TaskThreads: closed"));
    return new Promise<JobResult[]>((resolve, reject) => {
      this.queue.push({ task, resolve, reject });
      this.dispatch();
    });
  }

  /** Tasks running or waiting. */
  get busy(): number {
    return this.queue.length + this.slots.filter((s) => s.current !== null).length;
  }

  /** Stops the threads at once; tasks running or waiting reject with "TaskThreads: closed". */
  async close(): Promise<void> {
    this.closed = true;
    const open = [...this.queue.splice(0), ...this.slots.flatMap((s) => (s.current !== null ? [s.current] : []))];
    for (const s of this.slots) s.current = null;
    await Promise.all(this.slots.map((s) => s.worker.terminate()));
    for (const p of open) p.reject(new Error("TaskThreads: closed"));
  }
}

/**
 * Runs the tasks on `workers` threads; `onTask` is called as each task finishes (for progress).
 * Returns every result, in task order. On SIGINT/SIGTERM (with the CLI's handlers installed) the
 * threads are stopped at once and Interrupted is thrown: every job committed so far stays, half-built
 * ones are cleaned up by the next run.
 */
export async function runTasksLocally(
  sweepDir: string, manifest: SweepManifest, tasks: readonly Task[], workers: number, onTask?: (task: Task, results: JobResult[]) => void,
): Promise<JobResult[]> {
  if (tasks.length === 0) return [];
  const pool = new TaskThreads(sweepDir, manifest, Math.min(workers, tasks.length));
  const section = interruptibleSection();
  const unsubscribe = onInterruptSignal(() => void pool.close());
  try {
    let tasksDone = 0;
    const all = await Promise.all(tasks.map(async (t) => {
      let r: JobResult[] = [];
      try {
        r = await pool.run(t);
        tasksDone++;
      } catch (e) {
        if (interruptSignal() !== null) return r;
        // the task could not even record its failures (e.g. the folder is not writable): say so, go on
        info(`task ${t.id} failed and its jobs stay unfinished: ${e instanceof Error ? e.message : String(e)}`);
      }
      onTask?.(t, r);
      return r;
    }));
    const signal = interruptSignal();
    if (signal !== null) {
      throw new Interrupted(signal, `sweep stopped after ${tasksDone} of ${tasks.length} tasks; every job finished so far is kept in ${sweepDir}`, { resume: "rerun" });
    }
    return all.flat();
  } finally {
    unsubscribe();
    section.end();
    await pool.close();
  }
}
