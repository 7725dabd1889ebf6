/**
 * The distributed sweep on one machine: a real redis-server on a free loopback port (started here,
 * data in a temp folder), the tasks enqueued by `selfreport sweep --queue`, two `selfreport worker`
 * processes, one of them killed (SIGKILL) in the middle of a task. The other worker must take the
 * dead worker's task over once its lock expires, and the results must hold every job exactly once.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { run } from "../../src/cli/main.ts";
import type { JobResult } from "../../src/sweep/jobs.ts";
import { makeSweepFixture } from "./fixture.ts";
import { freePort, redisOnPath, startRedis } from "../helpers/redis.ts";

process.env["SELFREPORT_QUIET"] = "1";
const BIN = fileURLToPath(new URL("../../../bin/selfreport.js", import.meta.url));

/** Resolves with the first stderr line matching re (rejects if the process exits first or after ms). */
function waitForLine(p: ChildProcess, re: RegExp, ms: number, log: string[]): Promise<RegExpExecArray> {
  return new Promise((resolve, reject) => {
    let buf = "";
    const timer = setTimeout(() => reject(new Error(`no line matching ${re} within ${ms} ms; output:\n${log.join("")}`)), ms);
    const onData = (d: Buffer): void => {
      buf += d.toString();
      let nl: number;
      while ((nl = buf.indexOf("\n")) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        const m = re.exec(line);
        if (m) {
          clearTimeout(timer);
          p.stderr!.off("data", onData);
          resolve(m);
          return;
        }
      }
    };
    p.stderr!.on("data", onData);
    p.once("exit", (code) => reject(new Error(`process exited (${code}) before a line matching ${re}; output:\n${log.join("")}`)));
  });
}

function exited(p: ChildProcess, ms: number): Promise<number | null> {
  return new Promise((resolve, reject) => {
    if (p.exitCode !== null) return resolve(p.exitCode);
    const timer = setTimeout(() => reject(new Error(`process ${p.pid} did not exit within ${ms} ms`)), ms);
    p.once("exit", (code) => {
      clearTimeout(timer);
      resolve(code);
    });
  });
}

test("queue: two workers, one killed mid-task; every job done exactly once", { timeout: 120_000 }, async () => {
  assert.ok(redisOnPath(), "redis-server is not on PATH: run `bash scripts/setup.sh` (it installs Debian's redis-server) before the tests");

  const root = mkdtempSync(join(tmpdir(), "sweep-queue-"));
  const procs: ChildProcess[] = [];
  try {
    const port = await freePort();
    procs.push(await startRedis(port, root));
    const url = `redis://127.0.0.1:${port}`;

    const fx = makeSweepFixture(join(root, "fx"));
    const out = join(root, "sweep");
    const args = [
      "node", "selfreport", "sweep", "--model", fx.modelDir, "--layers", "0,1", "--neurons", "0-5", "--heads", "regression,classification",
      "--freeze", "frozen", "--corpus", fx.corpus, "--n", "240", "--max-len", "16", "--weights", "raw", "--epochs", "2", "--group-size", "3",
      "--queue", url, "--out", out,
    ];
    assert.equal(await run([...args, "--no-wait"]), 0);

    // two workers; every job waits 400 ms before committing, so a kill lands inside a task
    const env = { ...process.env, SELFREPORT_QUIET: "0", SELFREPORT_SWEEP_JOB_DELAY_MS: "400" };
    const workerArgs = [BIN, "worker", "--queue", url, "--lock-ms", "1500", "--stalled-ms", "500", "--exit-when-idle", "2"];
    const logs: string[][] = [[], []];
    const workers = [0, 1].map((i) => {
      const p = spawn(process.execPath, workerArgs, { env, stdio: ["ignore", "pipe", "pipe"] });
      p.stderr!.on("data", (d: Buffer) => logs[i]!.push(d.toString()));
      p.stdout!.on("data", (d: Buffer) => logs[i]!.push(d.toString()));
      procs.push(p);
      return p;
    });
    const [a, b] = workers as [ChildProcess, ChildProcess];
    const started = await waitForLine(a, /started task (\S+) /, 30_000, logs[0]!);
    const killedTask = started[1]!;
    a.kill("SIGKILL");
    await exited(a, 5_000);
    // the survivor takes the dead worker's task once its lock expires, finishes the queue and exits when idle
    assert.equal(await exited(b, 90_000), 0, logs[1]!.join(""));
    const bLog = logs[1]!.join("");
    assert.match(bLog, new RegExp(`started task ${killedTask.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")} `), `worker B never took over ${killedTask}:\n${bLog}`);

    // the enqueuer, re-run in waiting mode, finds every job finished and writes the table
    assert.equal(await run(args), 0);
    const res = JSON.parse(readFileSync(join(out, "results.json"), "utf8")) as { rows: JobResult[]; missing: string[]; jobs: number };
    assert.equal(res.jobs, 24);
    assert.deepEqual(res.missing, []);
    assert.equal(res.rows.length, 24);
    assert.equal(new Set(res.rows.map((r) => r.id)).size, 24);
    assert.ok(res.rows.every((r) => r.status === "done"), JSON.stringify(res.rows.filter((r) => r.status !== "done")));
    const folders = readdirSync(join(out, "jobs")).filter((f) => !f.startsWith(".stage-"));
    assert.equal(folders.length, 24, `job folders: ${folders.join(", ")}`);
    // the killed worker's task: finished, and at least its last job by the survivor
    const bPid = String(b.pid);
    const aPid = String(a.pid);
    const m = /^L(\d+)-N(\d+)_(\d+)-regression-frozen-multi$/.exec(killedTask);
    const killedJobs = m
      ? res.rows.filter((r) => r.layer === Number(m[1]) && r.head === "regression" && r.neuron >= Number(m[2]) && r.neuron <= Number(m[3]))
      : res.rows.filter((r) => r.id === killedTask);
    assert.ok(killedJobs.length >= 1, `no result for the killed task ${killedTask}`);
    assert.ok(killedJobs.some((r) => r.worker.includes(`:${bPid}`)), `the survivor committed none of ${killedTask}'s jobs`);
    const byB = res.rows.filter((r) => r.worker.includes(`:${bPid}`)).length;
    const byA = res.rows.filter((r) => r.worker.includes(`:${aPid}`)).length;
    assert.equal(byA + byB, 24, "every job was committed by one of the two workers");
    console.log(`queue test: killed worker A in ${killedTask}; A committed ${byA} jobs, B ${byB}`);
  } finally {
    for (const p of procs) if (p.exitCode === null && p.signalCode === null) p.kill("SIGKILL");
    rmSync(root, { recursive: true, force: true });
  }
});
