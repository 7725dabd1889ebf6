/**
 * Sweeps past one machine: tasks on a BullMQ queue in Redis, taken by `selfreport worker` processes
 * on any number of machines that share the sweep folder (same absolute path everywhere, e.g. an NFS
 * mount; `--sweep-root` maps it when it differs).
 *
 *   enqueue    `selfreport sweep … --queue redis://HOST:PORT` prepares the data and sweep.json as a
 *              local sweep does, adds one queue job per pending task (job id = sweep key + task id, so
 *              re-running the command never adds a task twice), then (unless --no-wait) waits for them
 *              and writes the results table.
 *   work       `selfreport worker --queue redis://HOST:PORT` runs tasks on worker threads (local.ts), so
 *              the process's event loop keeps renewing the job's lock while a thread computes.
 *   retries    a task that throws (a crashed thread, an unreadable folder) is retried `attempts` times
 *              with exponential back-off; a job that fails inside a task is recorded as failed in its
 *              folder and is not retried (re-run the sweep with --retry-failed for that).
 *   a worker that dies mid-task stops renewing its lock; after lockDuration the stalled-job check of
 *              any live worker moves the task back to the queue (up to maxStalledCount times) and
 *              another worker runs it. Jobs it had already committed are skipped; its half-built stage
 *              folders are never renamed into place, so the results have every job exactly once.
 */
import { existsSync } from "node:fs";
import { join, relative, resolve, isAbsolute } from "node:path";
import { createHash } from "node:crypto";
import { createRequire } from "node:module";
import type { Redis } from "ioredis";
import type { Job } from "bullmq";
import { SelfreportError } from "../errors.ts";
import { progress, info } from "../util/progress.ts";
import { Interrupted, interruptibleSection, interruptSignal, sleepUnlessInterrupted, whenInterrupted, type InterruptSignal } from "../util/interrupt.ts";
import { TaskThreads } from "./local.ts";
import { isJobFinished, JobRunner, removeDeadStages, workerName, type JobResult } from "./jobs.ts";
import { jobsOfTask, makeTasks, readManifest, type JobSpec, type SweepManifest, type Task } from "./spec.ts";

// ioredis and bullmq load on first use: imported at the top they cost every command ~0.5 s of start-up
const requireLazy = createRequire(import.meta.url);
const ioredis = (): typeof import("ioredis") => requireLazy("ioredis") as typeof import("ioredis");
const bullmq = (): typeof import("bullmq") => requireLazy("bullmq") as typeof import("bullmq");

export const QUEUE_NAME = "selfreport-sweep";

/** What a queue job carries: where the sweep lives, which sweep (key), which task. */
export interface QueueJobData {
  sweepDir: string;
  sweepKey: string;
  task: Task;
}

export interface QueueJobReturn {
  jobs: number;
  failed: number;
  worker: string;
}

/** Checks a redis:// URL (one line, naming it) before any connection is tried. */
export function parseQueueUrl(value: string): string {
  let u: URL;
  try {
    u = new URL(value);
  } catch {
    throw new SelfreportError(`--queue must be a URL like redis://HOST:PORT, got "${value}"`);
  }
  if (u.protocol !== "redis:" && u.protocol !== "rediss:") throw new SelfreportError(`--queue must be a redis:// or rediss:// URL, got "${value}"`);
  if (u.hostname === "") throw new SelfreportError(`--queue URL has no host: "${value}"`);
  return value;
}

/** How long (s) `sweep --queue` and `worker` wait for an unreachable Redis before giving up. */
export const QUEUE_TIMEOUT_DEFAULT_S = 30;

/**
 * A connection as BullMQ wants it (no per-request retry limit: blocking commands wait). It reconnects
 * by itself; `RedisWatch` decides when an outage has lasted too long. Its errors are recorded by the
 * watch, never printed one by one.
 */
export function connect(url: string): Redis {
  return new (ioredis().Redis)(url, { maxRetriesPerRequest: null, lazyConnect: false, retryStrategy: (times) => Math.min(200 * times, 1000) });
}

/** The message of a connection error, one line (ioredis errors can carry a code but no message). */
function errorText(e: unknown): string {
  if (e instanceof Error) {
    const code = (e as NodeJS.ErrnoException).code;
    const msg = e.message.split("\n")[0]!;
    return msg !== "" ? msg : code ?? e.name;
  }
  return String(e);
}

/**
 * Connects to the Redis at url and checks that it answers PING, trying again for up to timeoutS
 * seconds (a Redis still starting, a network hiccup). Throws one SelfreportError naming the URL and the
 * last error when it does not answer in time (nothing listening, a server that is not Redis), and
 * Interrupted when a signal arrives meanwhile.
 */
export async function reachRedis(url: string, timeoutS: number): Promise<void> {
  const deadline = Date.now() + timeoutS * 1000;
  let lastError = "no answer";
  const section = interruptibleSection();
  const signal = whenInterrupted();
  try {
    for (;;) {
      const left = deadline - Date.now();
      const attemptMs = Math.max(200, Math.min(3000, left));
      const client = new (ioredis().Redis)(url, {
        lazyConnect: true, enableOfflineQueue: false, maxRetriesPerRequest: 0, retryStrategy: () => null,
        connectTimeout: attemptMs, commandTimeout: attemptMs,
      });
      // the 'error' event names the cause (ECONNREFUSED, a protocol error); the rejection then only says "Connection is closed"
      let eventError: string | null = null;
      client.on("error", (e: unknown) => void (eventError ??= errorText(e)));
      let timer: NodeJS.Timeout | undefined;
      try {
        const attempt = client.connect().then(() => client.ping());
        attempt.catch(() => {});
        const outcome = await Promise.race([
          attempt.then((pong) => ({ pong })),
          signal.promise.then((sig) => ({ sig })),
          new Promise<{ timeout: true }>((r) => (timer = setTimeout(() => r({ timeout: true }), attemptMs + 500))),
        ]);
        if ("sig" in outcome) throw new Interrupted(outcome.sig, `stopped while connecting to Redis at ${url}`);
        if ("pong" in outcome) {
          if (outcome.pong === "PONG") return;
          lastError = `it answered PING with ${JSON.stringify(outcome.pong)}`;
        } else lastError = "no answer to PING";
      } catch (e) {
        if (e instanceof Interrupted) throw e;
        lastError = errorText(e);
      } finally {
        clearTimeout(timer);
        client.disconnect();
      }
      if (eventError !== null) lastError = eventError;
      if (Date.now() >= deadline) {
        throw new SelfreportError(`cannot reach Redis at ${url} within ${timeoutS} s (last error: ${lastError}); start redis-server there, or pass another --queue or a longer --queue-timeout`);
      }
      await sleepUnlessInterrupted(Math.min(500, Math.max(0, deadline - Date.now())));
      const sig = interruptSignal();
      if (sig !== null) throw new Interrupted(sig, `stopped while connecting to Redis at ${url}`);
    }
  } finally {
    signal.dispose();
    section.end();
  }
}

/**
 * Watches a live connection: when it has been down for longer than timeoutS, `failed` rejects with one
 * SelfreportError (the last error named); when a signal arrives, with Interrupted. `guard(p)` races a
 * Redis call against that, so no await hangs on a Redis that went away.
 */
export class RedisWatch {
  readonly failed: Promise<never>;
  private lastError = "connection closed";
  private downSince: number | null = null;
  private readonly timer: NodeJS.Timeout;
  private readonly signal = whenInterrupted();
  private fail: (e: Error) => void = () => {};
  private everUp = false;
  /** A "lost the connection" line was printed and no "reconnected" yet. */
  private announcedDown = false;
  private interruptMessage: string;

  constructor(private readonly connections: readonly Redis[], private readonly url: string, private readonly timeoutS: number, interruptMessage: string, private readonly say: (line: string) => void = info) {
    this.interruptMessage = interruptMessage;
    this.failed = new Promise<never>((_, reject) => (this.fail = reject));
    this.failed.catch(() => {});
    for (const c of connections) {
      c.on("error", (e: unknown) => void (this.lastError = errorText(e)));
    }
    // "up" means every connection ready at once, as check() sees it: a connection still being opened
    // is not an outage, and its first "ready" is not a reconnection
    this.everUp = connections.every((c) => c.status === "ready");
    void this.signal.promise.then((sig: InterruptSignal) => this.fail(new Interrupted(sig, this.interruptMessage, { resume: "rerun" })));
    this.timer = setInterval(() => this.check(), 250);
  }

  /** Changes what the Interrupted error says (e.g. once the work moves on). */
  setInterruptMessage(message: string): void {
    this.interruptMessage = message;
  }

  /** Notes an error seen elsewhere (a Worker's or Queue's 'error' event) as the last error. */
  noteError(e: unknown): void {
    this.lastError = errorText(e);
  }

  private check(): void {
    const up = this.connections.every((c) => c.status === "ready");
    const now = Date.now();
    if (up) {
      if (this.announcedDown) this.say(`reconnected to Redis at ${this.url}`);
      this.announcedDown = false;
      this.downSince = null;
      this.everUp = true;
      return;
    }
    if (this.downSince === null) {
      this.downSince = now;
      if (this.everUp) {
        this.say(`lost the connection to Redis at ${this.url} (${this.lastError}); waiting up to ${this.timeoutS} s for it to come back`);
        this.announcedDown = true;
      }
    } else if (now - this.downSince >= this.timeoutS * 1000) {
      this.fail(new SelfreportError(`lost Redis at ${this.url} for ${this.timeoutS} s (last error: ${this.lastError}); giving up (--queue-timeout sets this wait)`));
    }
  }

  guard<T>(p: Promise<T>): Promise<T> {
    return Promise.race([p, this.failed]);
  }

  dispose(): void {
    clearInterval(this.timer);
    this.signal.dispose();
  }
}

/** Awaits p for at most ms (closing a client whose Redis is gone can hang); never rejects. */
async function atMost(p: Promise<unknown>, ms: number): Promise<void> {
  let t: NodeJS.Timeout | undefined;
  await Promise.race([p.catch(() => {}), new Promise<void>((r) => (t = setTimeout(r, ms)))]);
  clearTimeout(t);
}

/** Identifies one sweep folder's current contents: settings plus creation time (--force makes a new key). */
export function sweepKey(m: SweepManifest): string {
  return createHash("sha256").update(JSON.stringify(m.settings)).update(m.created).digest("hex").slice(0, 12);
}

export function queueJobId(key: string, task: Task): string {
  return `${key}-${task.id}`;
}

export interface EnqueueOptions {
  url: string;
  sweepDir: string;
  manifest: SweepManifest;
  pending: readonly JobSpec[];
  attempts: number;
  /** Wait for the tasks to finish (progress bar); else return after enqueueing. */
  wait: boolean;
  /** Poll interval while waiting (ms). */
  pollMs?: number;
  /** Give up when Redis cannot be reached (or is lost) for this long (s). */
  timeoutS?: number;
}

export interface EnqueueResult {
  tasks: number;
  /** Tasks whose queue job failed for good (all attempts); their unfinished jobs are recorded as failed. */
  failedTasks: string[];
}

/** Adds the pending tasks to the queue and (optionally) waits for every job to have a result. */
export async function enqueueSweep(o: EnqueueOptions): Promise<EnqueueResult> {
  const sweepDir = resolve(o.sweepDir);
  const key = sweepKey(o.manifest);
  const tasks = makeTasks(o.pending, o.manifest.settings.group_size);
  const timeoutS = o.timeoutS ?? QUEUE_TIMEOUT_DEFAULT_S;
  const section = interruptibleSection();
  try {
    await reachRedis(o.url, timeoutS);
    return await enqueueConnected(o, sweepDir, key, tasks, timeoutS);
  } finally {
    section.end();
  }
}

async function enqueueConnected(o: EnqueueOptions, sweepDir: string, key: string, tasks: Task[], timeoutS: number): Promise<EnqueueResult> {
  const connection = connect(o.url);
  const watch = new RedisWatch([connection], o.url, timeoutS, "stopped while enqueueing the tasks (the ones enqueued stay queued)");
  const queue = new (bullmq().Queue)<QueueJobData, QueueJobReturn>(QUEUE_NAME, { connection });
  queue.on("error", (e) => watch.noteError(e));
  const failedTasks: string[] = [];
  const g = <T>(p: Promise<T>): Promise<T> => watch.guard(p);
  try {
    // a task already run to the end (completed, or failed for good) but with unfinished jobs now (e.g.
    // --retry-failed deleted its failed jobs) is removed first, or the queue would ignore the new add
    for (const task of tasks) {
      const old = await g(queue.getJob(queueJobId(key, task)));
      if (old === undefined) continue;
      const state = await g(old.getState());
      if (state === "completed" || state === "failed") await g(old.remove());
    }
    await g(queue.addBulk(tasks.map((task) => ({
      name: task.id,
      data: { sweepDir, sweepKey: key, task },
      opts: { jobId: queueJobId(key, task), attempts: o.attempts, backoff: { type: "exponential", delay: 5000 }, removeOnComplete: { age: 7 * 86400 }, removeOnFail: { age: 7 * 86400 } },
    }))));
    info(`enqueued ${tasks.length} task(s) (${o.pending.length} jobs) on ${o.url} queue "${QUEUE_NAME}", sweep key ${key}; start workers with: selfreport worker --queue ${o.url}`);
    if (!o.wait) return { tasks: tasks.length, failedTasks };
    watch.setInterruptMessage("stopped waiting for the queued tasks (they stay queued; the workers go on)");
    const bar = progress("sweep (queue)", o.pending.length, ["failed tasks"]);
    const open = new Set(tasks);
    for (;;) {
      for (const task of [...open]) {
        const jobs = jobsOfTask(task);
        if (jobs.every((j) => isJobFinished(sweepDir, j.id))) {
          open.delete(task);
          continue;
        }
        const qj = await g(queue.getJob(queueJobId(key, task)));
        const state = qj === undefined ? "unknown" : await g(qj.getState());
        if (state === "failed" || state === "unknown") {
          // gone for good (all attempts used, or removed): record its unfinished jobs as failed
          const why = qj?.failedReason ?? "the queue job disappeared (removed from Redis?)";
          new JobRunner(sweepDir, o.manifest, `${workerName()} (enqueuer)`).failTask(task, `queue job failed after ${qj?.attemptsMade ?? "?"} attempt(s): ${why}`);
          failedTasks.push(task.id);
          open.delete(task);
        }
      }
      const done = o.pending.filter((j) => isJobFinished(sweepDir, j.id)).length;
      bar.update(done, { "failed tasks": failedTasks.length });
      if (open.size === 0) break;
      await g(new Promise((r) => setTimeout(r, o.pollMs ?? 1000)));
    }
    bar.stop();
    return { tasks: tasks.length, failedTasks };
  } finally {
    watch.dispose();
    await atMost(queue.close(), 2000);
    connection.disconnect();
  }
}

export interface WorkerOptions {
  url: string;
  /** Tasks at once (one worker thread each). */
  concurrency: number;
  /** BullMQ lock duration (ms): how long a task survives its worker's silence before another worker takes it. */
  lockMs: number;
  /** How often (ms) this worker looks for stalled tasks of dead workers. */
  stalledMs: number;
  /** Times a task may be recovered from a dead worker before it fails. */
  maxStalled: number;
  /** Exit after this many tasks (0 = no limit). */
  maxTasks: number;
  /** Exit after the queue has been empty (nothing waiting, delayed or active) this long (s; 0 = never). */
  idleExitSeconds: number;
  /** Maps the enqueuer's sweep folder to this machine's: `FROM=TO` prefix replacement. */
  sweepRoot?: { from: string; to: string };
  /** Give up when Redis cannot be reached (or is lost) for this long (s). */
  timeoutS?: number;
}

function mapSweepDir(dir: string, root: WorkerOptions["sweepRoot"]): string {
  if (root === undefined) return dir;
  const rel = relative(root.from, dir);
  if (rel.startsWith("..") || isAbsolute(rel)) return dir;
  return join(root.to, rel);
}

/**
 * Runs a worker until --max-tasks or --exit-when-idle (resolves with the number of tasks run), a
 * signal (throws Interrupted within seconds: the running task's threads are stopped, and the task goes
 * back to the queue once its lock expires), or a Redis that cannot be reached for `timeoutS` (throws
 * one SelfreportError).
 */
export async function runQueueWorker(o: WorkerOptions): Promise<number> {
  const name = workerName();
  const timeoutS = o.timeoutS ?? QUEUE_TIMEOUT_DEFAULT_S;
  const section = interruptibleSection();
  try {
    await reachRedis(o.url, timeoutS);
    return await workConnected(o, name, timeoutS);
  } finally {
    section.end();
  }
}

async function workConnected(o: WorkerOptions, name: string, timeoutS: number): Promise<number> {
  const connection = connect(o.url);
  const watch = new RedisWatch([connection], o.url, timeoutS,
    `worker ${name} stopped; a task it was running goes back to the queue once its lock expires (--lock-ms) and another worker takes it`);
  const pools = new Map<string, TaskThreads>();
  let tasksRun = 0;
  let stopping = false;
  let resolveStop: () => void = () => {};
  const stopped = new Promise<void>((r) => (resolveStop = r));

  const processor = async (job: Job<QueueJobData, QueueJobReturn>): Promise<QueueJobReturn> => {
    const { task, sweepKey: key } = job.data;
    const sweepDir = mapSweepDir(job.data.sweepDir, o.sweepRoot);
    if (!existsSync(sweepDir)) throw new Error(`sweep folder ${sweepDir} is not visible on ${name} (share it at the same path, or pass --sweep-root FROM=TO)`);
    const manifest = readManifest(sweepDir);
    if (manifest === null || sweepKey(manifest) !== key) {
      throw new (bullmq().UnrecoverableError)(`${sweepDir} no longer holds sweep ${key} (it was started over or removed); task ${task.id} dropped`);
    }
    let pool = pools.get(sweepDir);
    if (pool === undefined) {
      // the first task of this sweep here: stage folders of dead workers on this host go
      removeDeadStages(sweepDir);
      pool = new TaskThreads(sweepDir, manifest, o.concurrency, { onThreadDeath: "reject" });
      pools.set(sweepDir, pool);
    }
    const t0 = Date.now();
    info(`${name}: started task ${task.id} (attempt ${job.attemptsMade + 1})`);
    const results: JobResult[] = await pool.run(task);
    const failed = results.filter((r) => r.status === "failed").length;
    info(`${name}: finished task ${task.id}: ${results.length} job(s), ${failed} failed, ${((Date.now() - t0) / 1000).toFixed(1)} s`);
    tasksRun++;
    if (o.maxTasks > 0 && tasksRun >= o.maxTasks) void stop();
    return { jobs: results.length, failed, worker: name };
  };

  const worker = new (bullmq().Worker)<QueueJobData, QueueJobReturn>(QUEUE_NAME, processor, {
    connection, concurrency: o.concurrency, lockDuration: o.lockMs, stalledInterval: o.stalledMs, maxStalledCount: o.maxStalled, name,
  });
  worker.on("failed", (job, err) => {
    if (!stopping) info(`${name}: task ${job?.data.task.id ?? "?"} failed: ${err.message}`);
  });
  // connection errors repeat on every reconnection attempt: the watch keeps the last one for its one line
  worker.on("error", (err) => watch.noteError(err));

  const stop = async (): Promise<void> => {
    if (stopping) return;
    stopping = true;
    await worker.close();
    for (const p of pools.values()) await p.close();
    resolveStop();
  };
  let idleTimer: NodeJS.Timeout | null = null;
  const idleQueue = o.idleExitSeconds > 0 ? new (bullmq().Queue)(QUEUE_NAME, { connection }) : null;
  if (idleQueue !== null) {
    idleQueue.on("error", (e) => watch.noteError(e));
    let idleSince = Date.now();
    let asking = false;
    idleTimer = setInterval(() => {
      if (asking || stopping) return;
      asking = true;
      void idleQueue.getJobCounts("waiting", "delayed", "active", "prioritized").then((c) => {
        const open = Object.values(c).reduce((a, b) => a + b, 0);
        if (open > 0) idleSince = Date.now();
        else if (Date.now() - idleSince >= o.idleExitSeconds * 1000) {
          info(`${name}: queue empty for ${o.idleExitSeconds} s; exiting`);
          void stop();
        }
      }, () => {}).finally(() => (asking = false));
    }, 500);
  }
  info(`${name}: waiting for tasks on ${o.url} queue "${QUEUE_NAME}" (concurrency ${o.concurrency}, lock ${o.lockMs} ms)`);
  try {
    await watch.guard(stopped);
    return tasksRun;
  } catch (e) {
    // a signal or a lost Redis: stop now, without waiting for the running task or for Redis
    stopping = true;
    await atMost(worker.close(true), 2000);
    await atMost(Promise.all([...pools.values()].map((p) => p.close())), 5000);
    throw e;
  } finally {
    watch.dispose();
    if (idleTimer !== null) clearInterval(idleTimer);
    if (idleQueue !== null) await atMost(idleQueue.close(), 2000);
    connection.disconnect();
  }
}
