/**
 * The run directory: config.json and head.safetensors round trips, and clear refusals of what is
 * not a run of this format (unknown format_version, a Python config, a missing head, bad shapes).
 */
import { test, after } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync, readFileSync, unlinkSync, mkdirSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Tensor } from "../../src/tensor/index.ts";
import { readSafetensors, writeSafetensors } from "../../src/io/safetensors.ts";
import { SelfreportError } from "../../src/errors.ts";
import {
  loadRun, readRunConfig, readHead, writeRunConfig, writeHead, loadRunModel, loadBaseModel, finetunedDir, RUN_FORMAT_VERSION, type RunConfig,
} from "../../src/selfreport/run.ts";
import { makeHeadConfig } from "../../src/selfreport/predictor.ts";
import { makeTinyRun } from "../helpers/run-fixture.ts";
import { assertExact } from "../tensor/gradcheck.ts";

process.env["SELFREPORT_QUIET"] = "1";

const root = mkdtempSync(join(tmpdir(), "selfreport-run-"));
after(() => rmSync(root, { recursive: true, force: true }));
const fx = makeTinyRun(join(root, "fx"), { head: "classification", hiddenDim: 4 });

function throwsExactly(fn: () => unknown, message: string): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof SelfreportError, `not a SelfreportError: ${String(e)}`);
    assert.equal(e.message, message);
    return true;
  });
}

/** A copy of the fixture's run directory whose config.json is `edit`ed (raw JSON object). */
function editedRun(name: string, edit: (cfg: Record<string, unknown>) => void): string {
  const dir = join(root, name);
  mkdirSync(dir, { recursive: true });
  const cfg = JSON.parse(readFileSync(join(fx.runDir, "config.json"), "utf8")) as Record<string, unknown>;
  edit(cfg);
  writeFileSync(join(dir, "config.json"), JSON.stringify(cfg));
  writeFileSync(join(dir, "head.safetensors"), readFileSync(join(fx.runDir, "head.safetensors")));
  return dir;
}

test("loadRun reads back exactly what was written: config.json and every head tensor", () => {
  const run = loadRun(fx.runDir);
  assert.deepEqual(run.config, fx.config);
  assert.equal(run.headType, "classification");
  assert.deepEqual([...run.head.keys()].sort(), ["hidden.bias", "hidden.weight", "output.bias", "output.weight"]);
  for (const [k, t] of fx.head) {
    assert.deepEqual(run.head.get(k)!.shape, t.shape, k);
    assertExact(`head ${k}`, run.head.get(k)!.data, t.data);
  }
  assert.deepEqual(run.readout, { activationMean: fx.config.activation_mean, activationStd: fx.config.activation_std, binEdges: fx.config.bin_edges });
});

test("writeRunConfig / writeHead round trip, including imported notes and head metadata", () => {
  const dir = join(root, "rt");
  const cfg: RunConfig = { ...fx.config, token_pos: 3, imported: { from: "/x/head.pt", notes: ["a note", "ünïcode ✓"] }, training: { lr: 1e-3, epochs: 3, multi_output_neurons: 4 } };
  writeRunConfig(dir, cfg);
  assert.deepEqual(readRunConfig(dir), cfg);
  const head = new Map([["output.weight", new Tensor(Float32Array.of(0.1, -2, 3.5e-8, 1e30), [1, 4])], ["output.bias", new Tensor(Float32Array.of(-0), [1])]]);
  writeHead(dir, head, { imported_from: "/x/head.pt" });
  const back = readHead(dir, makeHeadConfig("regression", { inputDim: 4 }));
  assertExact("output.weight", back.get("output.weight")!.data, head.get("output.weight")!.data);
  assert.ok(Object.is(back.get("output.bias")!.data[0], -0), "-0 survives");
  assert.equal(readSafetensors(join(dir, "head.safetensors")).metadata["imported_from"], "/x/head.pt");
});

test("an unknown format_version, or none, is refused with a clear message", () => {
  const v2 = editedRun("v2", (c) => void (c["format_version"] = 2));
  throwsExactly(() => loadRun(v2), `${join(v2, "config.json")}: run format_version 2 is unknown to this selfreport (which reads version ${RUN_FORMAT_VERSION})`);
  const py = editedRun("py", (c) => void delete c["format_version"]);
  throwsExactly(() => loadRun(py), `${join(py, "config.json")}: no format_version; is this a run from the Python tool? Import it with \`selfreport import-pt\``);
  const noEdges = editedRun("no-edges", (c) => void delete c["bin_edges"]);
  throwsExactly(() => loadRun(noEdges), `${join(noEdges, "config.json")}: field "bin_edges" is missing (expected a list of 11 finite numbers in non-decreasing order)`);
  const bad = join(root, "bad-json");
  mkdirSync(bad);
  writeFileSync(join(bad, "config.json"), "{ not json");
  assert.throws(() => loadRun(bad), (e: unknown) => e instanceof SelfreportError && e.message.startsWith(`${join(bad, "config.json")}: not valid JSON (`));
});

test("missing directory, config, or head file; head_type disagreeing; wrong head shapes", () => {
  const nowhere = join(root, "nowhere");
  throwsExactly(() => loadRun(nowhere), `run directory ${nowhere} does not exist`);
  const empty = join(root, "empty");
  mkdirSync(empty);
  throwsExactly(() => loadRun(empty), `${empty} is not a run directory: config.json is missing`);
  const noHead = editedRun("no-head", () => {});
  unlinkSync(join(noHead, "head.safetensors"));
  throwsExactly(() => loadRun(noHead), `${noHead}: head.safetensors is missing`);
  const disagree = editedRun("disagree", (c) => void (c["head_type"] = "regression"));
  throwsExactly(() => loadRun(disagree), `${disagree}/config.json: field "head_config.class_name" must be "RegressionHead" (head_type is "regression"), got "ClassificationHead"`);
  // a head of another width than head_config says
  const wide = editedRun("wide", (c) => void ((c["head_config"] as Record<string, unknown>)["input_dim"] = 32));
  throwsExactly(() => loadRun(wide), `${join(wide, "config.json")}: field "head_config.input_dim" must be 16 (d_model), got 32`);
  // integer tensors are not a head
  const ints = editedRun("ints", () => {});
  writeSafetensors(join(ints, "head.safetensors"), { "output.weight": { dtype: "I32", shape: [1, 2], data: Int32Array.of(1, 2) } });
  throwsExactly(() => loadRun(ints), `${join(ints, "head.safetensors")}: head tensor "output.weight" is not floating point`);
});

test("loadRunModel: the base model for frozen runs, finetuned/ for the others (and an error when it is missing)", () => {
  const frozen = loadRun(fx.runDir);
  const base = loadBaseModel(frozen);
  for (const [k, t] of fx.model.params) assertExact(`base ${k}`, base.p(k).data, t.data);
  const ft = makeTinyRun(join(root, "ft"), { freeze: "unfrozen" });
  const run = loadRun(ft.runDir);
  const m = loadRunModel(run);
  for (const [k, t] of ft.runModel.params) assertExact(`finetuned ${k}`, m.p(k).data, t.data);
  assert.ok([...ft.model.params].some(([k, t]) => t.data.some((v, i) => v !== m.p(k).data[i])), "the fine-tuned model differs from the base");
  rmSync(finetunedDir(ft.runDir), { recursive: true });
  throwsExactly(() => loadRunModel(run), `${ft.runDir}: a run with freeze_mode unfrozen needs finetuned/model.safetensors, which is missing`);
});
