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
import { Redis } from "ioredis";
import { Queue, Worker, UnrecoverableError, type Job } from "bullmq";
import { SelfreportError } from "../errors.ts";
import { progress, info } from "../util/progress.ts";
import { TaskThreads } from "./local.ts";
import { isJobFinished, JobRunner, removeDeadStages, workerName, type JobResult } from "./jobs.ts";
import { jobsOfTask, makeTasks, readManifest, type JobSpec, type SweepManifest, type Task } from "./spec.ts";

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

/** A connection as BullMQ wants it (no per-request retry limit: blocking commands wait). */
export function connect(url: string): Redis {
  return new Redis(url, { maxRetriesPerRequest: null, lazyConnect: false });
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
  const connection = connect(o.url);
  const queue = new Queue<QueueJobData, QueueJobReturn>(QUEUE_NAME, { connection });
  const failedTasks: string[] = [];
  try {
    // a task already run to the end (completed, or failed for good) but with unfinished jobs now (e.g.
    // --retry-failed deleted its failed jobs) is removed first, or the queue would ignore the new add
    for (const task of tasks) {
      const old = await queue.getJob(queueJobId(key, task));
      if (old === undefined) continue;
      const state = await old.getState();
      if (state === "completed" || state === "failed") await old.remove();
    }
    await queue.addBulk(tasks.map((task) => ({
      name: task.id,
      data: { sweepDir, sweepKey: key, task },
      opts: { jobId: queueJobId(key, task), attempts: o.attempts, backoff: { type: "exponential", delay: 5000 }, removeOnComplete: { age: 7 * 86400 }, removeOnFail: { age: 7 * 86400 } },
    })));
    info(`enqueued ${tasks.length} task(s) (${o.pending.length} jobs) on ${o.url} queue "${QUEUE_NAME}", sweep key ${key}; start workers with: selfreport worker --queue ${o.url}`);
    if (!o.wait) return { tasks: tasks.length, failedTasks };
    const bar = progress("sweep (queue)", o.pending.length, ["failed tasks"]);
    const open = new Set(tasks);
    for (;;) {
      for (const task of [...open]) {
        const jobs = jobsOfTask(task);
        if (jobs.every((j) => isJobFinished(sweepDir, j.id))) {
          open.delete(task);
          continue;
        }
        const qj = await queue.getJob(queueJobId(key, task));
        const state = qj === undefined ? "unknown" : await qj.getState();
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
      await new Promise((r) => setTimeout(r, o.pollMs ?? 1000));
    }
    bar.stop();
    return { tasks: tasks.length, failedTasks };
  } finally {
    await queue.close();
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
}

function mapSweepDir(dir: string, root: WorkerOptions["sweepRoot"]): string {
  if (root === undefined) return dir;
  const rel = relative(root.from, dir);
  if (rel.startsWith("..") || isAbsolute(rel)) return dir;
  return join(root.to, rel);
}

/** Runs a worker until SIGINT/SIGTERM, --max-tasks or --exit-when-idle; resolves with the number of tasks run. */
export async function runQueueWorker(o: WorkerOptions): Promise<number> {
  const name = workerName();
  const connection = connect(o.url);
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
      throw new UnrecoverableError(`${sweepDir} no longer holds sweep ${key} (it was started over or removed); task ${task.id} dropped`);
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

  const worker = new Worker<QueueJobData, QueueJobReturn>(QUEUE_NAME, processor, {
    connection, concurrency: o.concurrency, lockDuration: o.lockMs, stalledInterval: o.stalledMs, maxStalledCount: o.maxStalled, name,
  });
  worker.on("failed", (job, err) => info(`${name}: task ${job?.data.task.id ?? "?"} failed: ${err.message}`));
  worker.on("error", (err) => info(`${name}: ${err.message}`));

  const stop = async (): Promise<void> => {
    if (stopping) return;
    stopping = true;
    await worker.close();
    for (const p of pools.values()) await p.close();
    connection.disconnect();
    resolveStop();
  };
  const onSignal = (): void => {
    info(`${name}: stopping after the current task`);
    void stop();
  };
  process.on("SIGINT", onSignal);
  process.on("SIGTERM", onSignal);
  let idleTimer: NodeJS.Timeout | null = null;
  if (o.idleExitSeconds > 0) {
    const queue = new Queue(QUEUE_NAME, { connection });
    let idleSince = Date.now();
    idleTimer = setInterval(() => {
      void queue.getJobCounts("waiting", "delayed", "active", "prioritized").then((c) => {
        const open = Object.values(c).reduce((a, b) => a + b, 0);
        if (open > 0) idleSince = Date.now();
        else if (Date.now() - idleSince >= o.idleExitSeconds * 1000) {
          info(`${name}: queue empty for ${o.idleExitSeconds} s; exiting`);
          void queue.close().then(stop);
        }
      }, () => {});
    }, 500);
  }
  info(`${name}: waiting for tasks on ${o.url} queue "${QUEUE_NAME}" (concurrency ${o.concurrency}, lock ${o.lockMs} ms)`);
  await stopped;
  if (idleTimer !== null) clearInterval(idleTimer);
  process.off("SIGINT", onSignal);
  process.off("SIGTERM", onSignal);
  return tasksRun;
}
