/**
 * One writer per folder (src/io/lock.ts) and crash leftovers (src/io/folder.ts), with real child
 * processes: a second train on a folder being written is refused with one line naming the holder's
 * pid; after kill -9 the stale lock is taken over with a note, the interrupted writes' temporaries
 * are removed, and --resume leaves train_log.jsonl with every step exactly once.
 */
import { test, after } from "node:test";
import assert from "node:assert/strict";
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { hostname, tmpdir } from "node:os";
import { join } from "node:path";
import { makeTinyHfModel } from "../helpers/tiny-model.ts";
import { makeDocs } from "../helpers/text-docs.ts";
import { runChild, startChild, waitChild } from "../helpers/child-cli.ts";
import { lockFolder, LOCK_FILE, pidAlive } from "../../src/io/lock.ts";

const root = mkdtempSync(join(tmpdir(), "selfreport-lock-"));
after(() => rmSync(root, { recursive: true, force: true }));

const model = join(root, "tiny");
makeTinyHfModel(model, { dVocab: 50257, nLayers: 2, dModel: 16, nHeads: 2, nCtx: 16, seed: 4 });
const corpus = join(root, "docs.txt");
writeFileSync(corpus, makeDocs(30, 60, 8).map((d) => d.text).join("\n\n") + "\n");
const data = join(root, "ds.safetensors");

async function until(cond: () => boolean, what: string, ms = 60_000): Promise<void> {
  const t0 = Date.now();
  while (!cond()) {
    if (Date.now() - t0 > ms) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

/** Per-step lines of a train log: their steps, in order. */
function stepsOf(log: string): number[] {
  return log.split("\n").filter((l) => l !== "").map((l) => JSON.parse(l) as { step: number; loss?: number }).filter((r) => r.loss !== undefined).map((r) => r.step);
}

test("setup: a dataset", () => {
  const r = runChild(["dataset", "--model", model, "--layer", "1", "--neuron", "5", "--corpus", corpus, "--n", "120", "--max-len", "8", "--weights", "raw", "--seed", "3", "--out", data]);
  assert.equal(r.code, 0, r.stderr);
});

test("a second writer is refused naming the holder; after kill -9 the stale lock is taken over, temporaries removed, and --resume logs every step once", async () => {
  const run = join(root, "run");
  const trainArgs = (epochs: number, extra: string[] = []): string[] => [
    "train", "--data", data, "--head", "regression", "--solver", "adamw", "--batch-size", "1", "--epochs", String(epochs), "--patience", "1000000", "--checkpoint-every", "400", "--out", run, ...extra,
  ];
  const a = startChild(trainArgs(1_000_000));
  const aDone = waitChild(a);
  await until(() => existsSync(join(run, LOCK_FILE)) && existsSync(join(run, "checkpoint", "state.json")), "the first writer's lock and checkpoint");
  const holder = JSON.parse(readFileSync(join(run, LOCK_FILE), "utf8")) as { pid: number; host: string; started: string; command: string };
  assert.equal(holder.pid, a.pid);
  assert.match(holder.command, /^train --data /);

  for (const extra of [["--resume"], ["--force"]]) {
    const b = runChild(trainArgs(2, extra));
    assert.equal(b.code, 1, b.stderr);
    assert.equal(b.stderr.trimEnd().split("\n").length, 1, b.stderr);
    assert.match(b.stderr, new RegExp(`^selfreport: error: ${run.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")} is being written by another selfreport process \\(pid ${a.pid}, since ${holder.started}: train --data .*\\); wait for it to finish or choose another --out\\n$`));
  }
  assert.ok(existsSync(join(run, "checkpoint", "state.json")), "the refused --force removed nothing");

  // kill -9 the holder mid-interval (checkpoints every 400 steps), after it logged 5–300 steps past its last one (killing it right at
  // a checkpoint would leave nothing for --resume to cut)
  await until(() => {
    try {
      const ckStep = (JSON.parse(readFileSync(join(run, "checkpoint", "state.json"), "utf8")) as { step: number }).step;
      const last = stepsOf(readFileSync(join(run, "train_log.jsonl"), "utf8")).at(-1) ?? 0;
      return last - ckStep >= 5 && last - ckStep <= 300;
    } catch {
      return false; // a checkpoint being replaced
    }
  }, "logged steps between two checkpoints");
  // its lock stays behind, stale; so would a checkpoint or file write it was in
  a.kill("SIGKILL");
  const ad = await aDone;
  assert.equal(ad.signal, "SIGKILL");
  assert.ok(existsSync(join(run, LOCK_FILE)) && !pidAlive(a.pid!));
  mkdirSync(join(run, `.checkpoint.tmp-${a.pid}-1764633600000`));
  writeFileSync(join(run, `.checkpoint.tmp-${a.pid}-1764633600000`, "params.safetensors"), Buffer.alloc(4096));
  writeFileSync(join(run, `train_log.jsonl.tmp-${a.pid}-0a1b2c3d4e5f`), "half");
  const ck = JSON.parse(readFileSync(join(run, "checkpoint", "state.json"), "utf8")) as { step: number; epoch: number };
  // A step takes well under a millisecond here, so the kill can still land on the next checkpoint after the
  // wait above (CI saw it once). Then the log ends at the checkpoint; add what a kill mid-interval leaves:
  // a few whole lines past the checkpoint and one cut in half.
  const logFile = join(run, "train_log.jsonl");
  if (stepsOf(readFileSync(logFile, "utf8")).at(-1) === ck.step) {
    const past = [1, 2, 3].map((i) => JSON.stringify({ step: ck.step + i, epoch: ck.epoch, loss: 1 }) + "\n").join("");
    writeFileSync(logFile, readFileSync(logFile, "utf8") + past + `{"step": ${ck.step + 4}, "ep`);
  }
  const logged = stepsOf(readFileSync(logFile, "utf8").split("\n").filter((l) => l.endsWith("}")).join("\n"));
  assert.ok(logged.at(-1)! > ck.step, `the killed run logged steps after its checkpoint (${logged.at(-1)} > ${ck.step})`);

  const c = runChild(trainArgs(ck.epoch + 2, ["--resume"]), { SELFREPORT_QUIET: "1" });
  assert.equal(c.code, 0, c.stderr);
  assert.ok(c.stderr.includes(`note: took over the stale lock ${join(run, LOCK_FILE)} of pid ${a.pid}, which is no longer running (started ${holder.started})`), c.stderr);
  assert.deepEqual(readdirSync(run).filter((f) => f.startsWith(".") || f.includes(".tmp-")), [], "no lock, no temporaries");
  const steps = stepsOf(readFileSync(join(run, "train_log.jsonl"), "utf8"));
  assert.deepEqual(steps, Array.from({ length: steps.length }, (_, i) => i + 1), "every step exactly once, in order");
  const cfg = JSON.parse(readFileSync(join(run, "config.json"), "utf8")) as { training: { steps: number } };
  assert.equal(steps.length, cfg.training.steps);
});

test("two trains started together on one new folder: one writes the run, the other is refused; the log is one run's", async () => {
  const run = join(root, "race");
  const args = ["train", "--data", data, "--head", "regression", "--solver", "adamw", "--batch-size", "4", "--epochs", "30", "--patience", "1000", "--out", run];
  const [r1, r2] = await Promise.all([waitChild(startChild(args)), waitChild(startChild(args))]);
  const codes = [r1.code, r2.code].sort();
  assert.deepEqual(codes, [0, 1], `${r1.stderr}\n${r2.stderr}`);
  const loser = r1.code === 1 ? r1 : r2;
  assert.match(loser.stderr, /^selfreport: error: .*(is being written by another selfreport process \(pid \d+|already holds a run; pass --force)/);
  const steps = stepsOf(readFileSync(join(run, "train_log.jsonl"), "utf8"));
  assert.deepEqual(steps, Array.from({ length: steps.length }, (_, i) => i + 1));
  assert.equal(existsSync(join(run, LOCK_FILE)), false);
});

test("lockFolder in-process: a live holder is refused, a released lock can be taken again, an error inside leaves no lock", () => {
  const dir = join(root, "plain");
  mkdirSync(dir);
  const l1 = lockFolder(dir);
  assert.throws(() => lockFolder(dir), new RegExp(`is being written by another selfreport process \\(pid ${process.pid}, since `));
  l1.release();
  const l2 = lockFolder(dir);
  l2.release();
  l2.release();
  assert.equal(existsSync(join(dir, LOCK_FILE)), false);
  // a lock of a process that is gone is taken over, with a note
  const dead = 4194305; // above Linux's pid_max (2^22)
  assert.equal(pidAlive(dead), false);
  writeFileSync(join(dir, LOCK_FILE), JSON.stringify({ pid: dead, host: hostname(), started: "2026-01-01T00:00:00.000Z", command: "x" }));
  const notes: string[] = [];
  const l3 = lockFolder(dir, (line) => void notes.push(line));
  assert.deepEqual(notes, [`note: took over the stale lock ${join(dir, LOCK_FILE)} of pid ${dead}, which is no longer running (started 2026-01-01T00:00:00.000Z)`]);
  assert.equal((JSON.parse(readFileSync(join(dir, LOCK_FILE), "utf8")) as { pid: number }).pid, process.pid);
  l3.release();
  // a holder on another host cannot be judged: refused, with how to clear it
  writeFileSync(join(dir, LOCK_FILE), JSON.stringify({ pid: dead, host: "elsewhere.example", started: "2026-01-01T00:00:00.000Z", command: "x" }));
  assert.throws(() => lockFolder(dir), /pid 4194305 on host elsewhere\.example.*if that process is gone, delete .*\.selfreport\.lock/);
});
