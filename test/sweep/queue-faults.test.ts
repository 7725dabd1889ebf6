/**
 * `selfreport worker` and `sweep --queue` when Redis is not there, is not Redis, or goes away: real
 * child processes against a closed port, a loopback server that answers garbage, and a real
 * redis-server killed mid-run. Each gives up after --queue-timeout with one line and exit code 1, and
 * honours SIGINT/SIGTERM at any time (130/143).
 */
import { test, after } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { createServer, type Server } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { exitOf, spawnCli, until, type Child } from "../helpers/child.ts";
import { freePort, redisOnPath, startRedis } from "../helpers/redis.ts";
import { makeSweepFixture } from "./fixture.ts";

const root = mkdtempSync(join(tmpdir(), "queue-faults-"));
after(() => rmSync(root, { recursive: true, force: true }));

/** A signal lands within this long (the machine running the tests may be busy). */
const STOP_MS = 10_000;

/** stderr without blank lines */
function lines(c: Child): string[] {
  return c.stderr().split("\n").filter((l) => l.trim() !== "");
}

function assertNoStack(c: Child): void {
  assert.doesNotMatch(c.stderr(), /^\s+at |^\w*Error: |^\s*(code|errno|syscall):/m, `no stack traces:\n${c.stderr()}`);
}

const sweepArgs = (url: string, timeout: string): string[] => [
  "sweep", "--queue", url, "--queue-timeout", timeout, "--model", join(root, "no-model"), "--layers", "0", "--neurons", "0-1", "--out", join(root, "sweep"),
];

test("nothing listening: worker and sweep --queue give up after --queue-timeout with one line and exit 1", { timeout: 60_000 }, async () => {
  const port = await freePort();
  const url = `redis://127.0.0.1:${port}`;
  for (const args of [["worker", "--queue", url, "--queue-timeout", "2", "--exit-when-idle", "1"], sweepArgs(url, "2")]) {
    const c = spawnCli(args);
    const r = await exitOf(c, 30_000);
    assert.equal(r.code, 1, c.stderr());
    assert.deepEqual(lines(c), [`selfreport: error: cannot reach Redis at ${url} within 2 s (last error: connect ECONNREFUSED 127.0.0.1:${port}); start redis-server there, or pass another --queue or a longer --queue-timeout`]);
  }
});

test("a loopback server that is not Redis: one line naming the protocol error, exit 1", { timeout: 60_000 }, async () => {
  const server: Server = createServer((sock) => {
    sock.on("error", () => {});
    sock.on("data", () => sock.write("HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n"));
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const addr = server.address();
  const url = `redis://127.0.0.1:${typeof addr === "object" && addr !== null ? addr.port : 0}`;
  try {
    for (const args of [["worker", "--queue", url, "--queue-timeout", "2"], sweepArgs(url, "2")]) {
      const c = spawnCli(args);
      const r = await exitOf(c, 30_000);
      assert.equal(r.code, 1, c.stderr());
      const ls = lines(c);
      assert.equal(ls.length, 1, c.stderr());
      assert.match(ls[0]!, new RegExp(`^selfreport: error: cannot reach Redis at ${url} within 2 s \\(last error: .*(RESP|[Pp]rotocol).*\\)`));
      assertNoStack(c);
    }
  } finally {
    server.close();
  }
});

test("SIGINT and SIGTERM while waiting for an unreachable Redis: exit 130 / 143 within seconds", { timeout: 60_000 }, async () => {
  const url = `redis://127.0.0.1:${await freePort()}`;
  for (const [signal, code, args] of [["SIGINT", 130, ["worker", "--queue", url]], ["SIGTERM", 143, sweepArgs(url, "600")]] as const) {
    const c = spawnCli(args, { markSignals: true });
    // once the command has its handlers (Node's start-up can take seconds on a busy machine), and a few failed attempts
    await until(() => c.handlesSignals(), 30_000, c, `the command's signal handlers`);
    await new Promise((r) => setTimeout(r, 1500));
    assert.equal(c.proc.exitCode, null, `still waiting: ${c.stderr()}`);
    c.proc.kill(signal);
    const r = await exitOf(c, 10_000);
    assert.equal(r.code, code, c.stderr());
    assert.match(c.stderr(), new RegExp(`selfreport: ${signal}: stopped while connecting to Redis at ${url}`));
    assertNoStack(c);
  }
});

test("a real redis-server killed under a waiting worker: the worker gives up after --queue-timeout with one line", { timeout: 90_000 }, async () => {
  assert.ok(redisOnPath(), "redis-server is not on PATH: run `bash scripts/setup.sh` (it installs Debian's redis-server) before the tests");
  const port = await freePort();
  const redis = await startRedis(port, root);
  const url = `redis://127.0.0.1:${port}`;
  try {
    const c = spawnCli(["worker", "--queue", url, "--queue-timeout", "3"]);
    await until(() => /waiting for tasks on/.test(c.stderr()), 30_000, c, "the worker's waiting line");
    await new Promise((r) => setTimeout(r, 1000));
    redis.kill("SIGKILL");
    const t0 = Date.now();
    const r = await exitOf(c, 30_000);
    const seconds = (Date.now() - t0) / 1000;
    assert.equal(r.code, 1, c.stderr());
    assert.ok(seconds >= 3 && seconds < 15, `gave up after ${seconds} s`);
    const ls = lines(c);
    assert.match(ls[0]!, /waiting for tasks on/);
    assert.match(ls[1]!, new RegExp(`lost the connection to Redis at ${url} \\(.*\\); waiting up to 3 s for it to come back$`));
    assert.match(ls[2]!, new RegExp(`^selfreport: error: lost Redis at ${url} for 3 s \\(last error: .*\\); giving up \\(--queue-timeout sets this wait\\)$`));
    assert.equal(ls.length, 3, c.stderr());
    assertNoStack(c);
  } finally {
    redis.kill("SIGKILL");
  }
});

test("a worker waiting on a live redis-server stops within seconds on SIGTERM, exit 143", { timeout: 60_000 }, async () => {
  const port = await freePort();
  const redis = await startRedis(port, root);
  try {
    const c = spawnCli(["worker", "--queue", `redis://127.0.0.1:${port}`]);
    await until(() => /waiting for tasks on/.test(c.stderr()), 30_000, c, "the worker's waiting line");
    c.proc.kill("SIGTERM");
    const r = await exitOf(c, 10_000);
    assert.equal(r.code, 143, c.stderr());
    assert.match(c.stderr(), /selfreport: SIGTERM: worker \S+ stopped; a task it was running goes back to the queue/);
    assertNoStack(c);
  } finally {
    redis.kill("SIGKILL");
  }
});

test("SIGTERM to a worker in the middle of a task: exit 143 within seconds; the task goes back to the queue and another worker finishes the sweep", { timeout: 180_000 }, async () => {
  const port = await freePort();
  const redis = await startRedis(port, root);
  const url = `redis://127.0.0.1:${port}`;
  try {
    const fx = makeSweepFixture(join(root, "fx"));
    const out = join(root, "sweep-q");
    const args = [
      "sweep", "--model", fx.modelDir, "--layers", "1", "--neurons", "0-3", "--freeze", "frozen", "--corpus", fx.corpus, "--n", "120", "--max-len", "12",
      "--weights", "raw", "--epochs", "1", "--group-size", "2", "--queue", url, "--out", out,
    ];
    const enq = spawnCli([...args, "--no-wait"]);
    assert.equal((await exitOf(enq, 120_000)).code, 0, enq.stderr());
    // every job waits 5 s before committing: the signal lands inside a task
    const env = { SELFREPORT_SWEEP_JOB_DELAY_MS: "5000" };
    const a = spawnCli(["worker", "--queue", url, "--lock-ms", "2000", "--stalled-ms", "500"], { env });
    await until(() => /started task \S+ /.test(a.stderr()), 60_000, a, "a started task");
    a.proc.kill("SIGTERM");
    const ra = await exitOf(a, STOP_MS);
    assert.equal(ra.code, 143, a.stderr());
    assert.match(a.stderr(), /selfreport: SIGTERM: worker \S+ stopped; a task it was running goes back to the queue once its lock expires/);
    assertNoStack(a);
    const b = spawnCli(["worker", "--queue", url, "--stalled-ms", "500", "--exit-when-idle", "3"], { env: { SELFREPORT_SWEEP_JOB_DELAY_MS: "0" } });
    const rb = await exitOf(b, 120_000);
    assert.equal(rb.code, 0, b.stderr());
    const fin = spawnCli(args);
    assert.equal((await exitOf(fin, 120_000)).code, 0, fin.stderr());
    const res = JSON.parse(readFileSync(join(out, "results.json"), "utf8")) as { rows: Array<{ status: string }>; missing: string[] };
    assert.deepEqual(res.missing, []);
    assert.equal(res.rows.length, 4);
    assert.ok(res.rows.every((r) => r.status === "done"));
  } finally {
    redis.kill("SIGKILL");
  }
});
