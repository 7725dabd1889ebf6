/**
 * RedisWatch's lines (src/sweep/queue.ts) on fake connections whose status the test sets: a connection
 * still being opened is not an outage (a loaded machine showed "reconnected" with no loss before it);
 * a real loss prints one "lost" line, its return one "reconnected" line, and a loss that lasts past
 * the timeout rejects `failed` with one error naming the last error.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { EventEmitter } from "node:events";
import type { Redis } from "ioredis";
import { RedisWatch } from "../../src/sweep/queue.ts";

class FakeConnection extends EventEmitter {
  status = "connecting";
}

const tick = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

test("RedisWatch: opening is not an outage; a loss and its return print one line each; a long loss fails with the last error", async () => {
  const c = new FakeConnection();
  const lines: string[] = [];
  const watch = new RedisWatch([c as unknown as Redis], "redis://h:1", 1, "stopped", (l) => void lines.push(l));
  try {
    await tick(600); // still connecting across two checks
    c.status = "ready";
    c.emit("ready");
    await tick(600);
    assert.deepEqual(lines, [], "opening the connection prints nothing");
    c.emit("error", new Error("ECONNREFUSED"));
    c.status = "reconnecting";
    await tick(400);
    assert.deepEqual(lines, ["lost the connection to Redis at redis://h:1 (ECONNREFUSED); waiting up to 1 s for it to come back"]);
    c.status = "ready";
    await tick(400);
    assert.deepEqual(lines.slice(1), ["reconnected to Redis at redis://h:1"]);
    c.status = "end";
    await assert.rejects(watch.failed, /^SelfreportError: lost Redis at redis:\/\/h:1 for 1 s \(last error: ECONNREFUSED\); giving up/);
    assert.equal(lines.length, 3);
  } finally {
    watch.dispose();
  }
});
