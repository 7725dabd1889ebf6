/**
 * `selfreport sweep` end to end on a tiny model with GPT-2's tokenizer and a synthetic corpus, on
 * two worker threads: the shared data equal what `selfreport dataset` builds for a neuron, a failing
 * job is recorded and the rest go on, a killed sweep resumes running only the missing jobs, and a
 * folder made with other settings is refused (and started over with --force).
 */
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { run } from "../../src/cli/main.ts";
import { loadModel } from "../../src/model/load.ts";
import { loadTokenizer } from "../../src/model/tokenizer.ts";
import { loadCorpus } from "../../src/data/corpus.ts";
import { buildDataset, readDataset } from "../../src/selfreport/dataset.ts";
import { readLayerTargets, neuronDataset, examplesPath, layerActivations } from "../../src/sweep/data.ts";
import { readManifest } from "../../src/sweep/spec.ts";
import type { JobResult } from "../../src/sweep/jobs.ts";
import { loadRun } from "../../src/selfreport/run.ts";
import { makeSweepFixture, type SweepFixture } from "./fixture.ts";

process.env["SELFREPORT_QUIET"] = "1";

let root = "";
let fx: SweepFixture;

before(() => {
  root = mkdtempSync(join(tmpdir(), "sweep-cli-"));
  fx = makeSweepFixture(join(root, "fx"));
});
after(() => rmSync(root, { recursive: true, force: true }));

function sweepArgs(out: string, extra: string[] = []): string[] {
  return [
    "sweep", "--model", fx.modelDir, "--layers", "0,1", "--neurons", "0-4,9", "--heads", "regression,classification", "--freeze", "frozen",
    "--corpus", fx.corpus, "--n", "300", "--max-len", "16", "--weights", "raw", "--epochs", "4", "--workers", "2", "--group-size", "4", "--out", out, ...extra,
  ];
}

function readResults(out: string): { rows: JobResult[]; missing: string[]; jobs: number } {
  return JSON.parse(readFileSync(join(out, "results.json"), "utf8")) as { rows: JobResult[]; missing: string[]; jobs: number };
}

/** Runs the CLI in-process, capturing what it prints to stderr. */
async function cli(args: string[]): Promise<{ code: number; stderr: string }> {
  const orig = console.error;
  const lines: string[] = [];
  console.error = (...a: unknown[]) => void lines.push(a.map(String).join(" "));
  try {
    const code = await run(["node", "selfreport", ...args]);
    return { code, stderr: lines.join("\n") };
  } finally {
    console.error = orig;
  }
}

test("sweep: shared data = the per-neuron dataset; a failing job is recorded, the others finish; resume runs only what is missing", async () => {
  const out = join(root, "s1");
  process.env["SELFREPORT_SWEEP_FAIL_JOBS"] = "L1-N3-classification-frozen,L0-N2-regression-frozen";
  let r: { code: number; stderr: string };
  try {
    r = await cli(sweepArgs(out));
  } finally {
    delete process.env["SELFREPORT_SWEEP_FAIL_JOBS"];
  }
  assert.equal(r.code, 0, r.stderr);

  // 2 layers × 6 neurons × 2 heads, each once
  const res = readResults(out);
  assert.equal(res.jobs, 24);
  assert.equal(res.rows.length, 24);
  assert.deepEqual(res.missing, []);
  assert.equal(new Set(res.rows.map((x) => x.id)).size, 24);
  const failed = res.rows.filter((x) => x.status === "failed");
  assert.deepEqual(failed.map((x) => x.id).sort(), ["L0-N2-regression-frozen", "L1-N3-classification-frozen"]);
  for (const f of failed) {
    assert.match(f.error ?? "", /injected failure/);
    assert.equal(f.test_r, null);
  }
  const done = res.rows.filter((x) => x.status === "done");
  for (const d of done) assert.ok(Number.isFinite(d.test_r) && Number.isFinite(d.baseline_mse) && (d.act_std ?? 0) > 0, `${d.id}: ${JSON.stringify(d)}`);
  assert.ok(done.every((d) => d.trainer === "multi-output"), "frozen jobs of every head train as multi-output heads");
  assert.ok(done.filter((d) => d.head === "classification").every((d) => d.accuracy !== null));
  assert.ok(done.filter((d) => d.head === "regression").every((d) => d.accuracy === null));
  // the CSV has a header and one line per job, the failure's error in the last column
  const csv = readFileSync(join(out, "results.csv"), "utf8").trim().split("\n");
  assert.equal(csv.length, 25);
  assert.match(csv.find((l) => l.startsWith("L0-N2-regression-frozen,"))!, /,failed,.*injected failure/);
  assert.ok(existsSync(join(out, "plots", "predictability-vs-std.svg")));
  // a job folder is a complete run directory
  for (const f of ["config.json", "head.safetensors", "metrics.json", "result.json"]) assert.ok(existsSync(join(out, "jobs", "L1-N9-regression-frozen", f)), f);
  // frozen regression jobs are solved by ridge (the default), classification jobs train with AdamW
  const regRun = loadRun(join(out, "jobs", "L1-N9-regression-frozen"));
  assert.equal(regRun.config.training["solver"], "ridge");
  assert.equal(typeof regRun.config.training["lambda"], "number");
  assert.equal(JSON.parse(readFileSync(join(out, "jobs", "L1-N9-regression-frozen", "metrics.json"), "utf8")).solver, "ridge");
  const clsRun = loadRun(join(out, "jobs", "L1-N9-classification-frozen"));
  assert.equal(clsRun.config.training["solver"], "adamw");
  assert.equal(clsRun.config.head_type, "classification");
  assert.deepEqual(clsRun.head.get("output.weight")!.shape, [10, 16]);
  assert.equal(clsRun.config.bin_edges.length, 11);

  // the shared examples and layer targets give exactly the dataset `selfreport dataset` builds for L1 N3
  const { model, dir } = loadModel(fx.modelDir, { weights: "raw" });
  const own = buildDataset(model, loadTokenizer(dir), loadCorpus(fx.corpus).documents, {
    modelName: fx.modelDir, modelDir: dir, weights: "raw", layer: 1, neuron: 3, layerType: "mlp_post", tokenPos: "last", n: 300, maxLen: 16,
    balance: false, seed: 0, corpusName: fx.corpus,
  });
  const examples = readDataset(examplesPath(out));
  const mine = neuronDataset(examples, readLayerTargets(out, 1, examples.meta.n), 3);
  assert.deepEqual(mine.tokens, own.tokens);
  assert.deepEqual(mine.split, own.split);
  let worst = 0;
  own.targets.forEach((v, i) => (worst = Math.max(worst, Math.abs(v - mine.targets[i]!))));
  assert.ok(worst <= 1e-5, `targets differ by up to ${worst}`);
  assert.ok(Math.abs(mine.meta.stats.std - own.meta.stats.std) <= 1e-6 * own.meta.stats.std);

  // ---- a "killed" sweep: two finished jobs gone, a half-built stage folder left behind
  const before = new Map(res.rows.map((x) => [x.id, x.finished_at]));
  for (const id of ["L0-N4-regression-frozen", "L1-N0-classification-frozen"]) rmSync(join(out, "jobs", id), { recursive: true });
  mkdirSync(join(out, "jobs", ".stage-L0-N4-regression-frozen-999-deadbeef"));
  const r2 = await cli(sweepArgs(out));
  assert.equal(r2.code, 0, r2.stderr);
  const res2 = readResults(out);
  assert.equal(res2.rows.length, 24);
  const rerun = res2.rows.filter((x) => x.finished_at !== before.get(x.id)).map((x) => x.id).sort();
  assert.deepEqual(rerun, ["L0-N4-regression-frozen", "L1-N0-classification-frozen"]);
  assert.ok(!readdirSync(join(out, "jobs")).some((f) => f.startsWith(".stage-")), "stale stage folder removed");
  // failed jobs stay failed on a plain re-run; --retry-failed runs them again (the injected failure is gone now)
  const r3 = await cli(sweepArgs(out, ["--retry-failed"]));
  assert.equal(r3.code, 0, r3.stderr);
  const res3 = readResults(out);
  assert.equal(res3.rows.filter((x) => x.status === "failed").length, 0);
  assert.equal(res3.rows.length, 24);
});

test("sweep: top-variance neurons; a folder made with other settings is refused, and --force starts it over", async () => {
  const out = join(root, "s2");
  const small = (extra: string[]): string[] => [
    "sweep", "--model", fx.modelDir, "--layers", "1", "--neurons", "top-variance:3", "--corpus", fx.corpus, "--n", "200", "--max-len", "16",
    "--weights", "raw", "--epochs", "2", "--workers", "1", "--out", out, ...extra,
  ];
  assert.equal((await cli(small([]))).code, 0);
  const created = readManifest(out)!.created;
  // the 3 neurons of highest training-split variance, recomputed here from the layer's activations
  const { model } = loadModel(fx.modelDir, { weights: "raw" });
  const examples = readDataset(examplesPath(out));
  const acts = layerActivations(model, examples, 1); // [n, 64]
  const M = model.cfg.dMlp;
  const variance = Array.from({ length: M }, (_, m) => {
    const xs: number[] = [];
    for (let i = 0; i < examples.meta.n; i++) if (examples.split[i] === 0) xs.push(acts[i * M + m]!);
    const mean = xs.reduce((a, b) => a + b, 0) / xs.length;
    return xs.reduce((a, b) => a + (b - mean) ** 2, 0) / xs.length;
  });
  const top3 = variance.map((v, m) => [v, m] as const).sort((a, b) => b[0] - a[0]).slice(0, 3).map(([, m]) => m).sort((a, b) => a - b);
  assert.deepEqual(readManifest(out)!.neurons_by_layer!["1"], top3);
  const refused = await cli(small(["--heads", "regression,token"]));
  assert.equal(refused.code, 1);
  assert.match(refused.stderr, /holds a sweep made with other settings \(heads: \["regression"\] ≠ \["regression","token"\]\).*--force/);
  assert.equal(readManifest(out)!.created, created, "the refused run changed nothing");
  assert.equal(readResults(out).rows.length, 3);
  const forced = await cli(small(["--heads", "regression,token", "--force"]));
  assert.equal(forced.code, 0, forced.stderr);
  const res = readResults(out);
  assert.equal(res.rows.length, 6);
  assert.deepEqual([...new Set(res.rows.map((x) => x.head))].sort(), ["regression", "token"]);
  assert.ok(res.rows.every((x) => x.status === "done"), JSON.stringify(res.rows.filter((x) => x.status !== "done")));
  // a non-sweep folder is refused too
  const other = join(root, "not-a-sweep");
  mkdirSync(other);
  mkdirSync(join(other, "mine"));
  const r = await cli(["sweep", "--model", fx.modelDir, "--layers", "1", "--neurons", "0", "--corpus", fx.corpus, "--n", "200", "--max-len", "16", "--out", other]);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /is a folder with other files \(mine\), not a sweep folder; it is never replaced/);
  // the solver is a setting: AdamW on the folder solved by ridge is refused; ridge without frozen regression jobs is refused
  const adamw = await cli(small(["--heads", "regression,token", "--solver", "adamw"]));
  assert.equal(adamw.code, 1);
  assert.match(adamw.stderr, /training\.solver: "ridge" ≠ "adamw"/);
  const noRidge = await cli(small(["--heads", "token", "--solver", "ridge"]));
  assert.equal(noRidge.code, 1);
  assert.equal(noRidge.stderr, "selfreport: error: --solver ridge fits frozen regression heads; this sweep has none (--heads token --freeze frozen); drop --solver");
});
