/** Parsing and validating sweep lists, settings comparison and task grouping. */
import { test } from "node:test";
import assert from "node:assert/strict";
import {
  parseNeuronSpec, neuronsOfRanges, parseLayers, checkLayers, parseHeads, parseFreezeModes, parseAnalyses, settingsDifferences, makeTasks, allJobs,
  type SweepSettings,
} from "../../src/sweep/spec.ts";
import { topVarianceNeurons } from "../../src/sweep/data.ts";
import { SelfreportError } from "../../src/errors.ts";

function throwsUser(fn: () => unknown, re: RegExp): void {
  assert.throws(fn, (e: unknown) => e instanceof SelfreportError && re.test(e.message), `expected a SelfreportError matching ${re}`);
}

test("--neurons: ranges, singles, top-variance", () => {
  const s = parseNeuronSpec("0-3,10,20-21");
  assert.equal(s.kind, "ranges");
  assert.deepEqual(neuronsOfRanges(s as Extract<typeof s, { kind: "ranges" }>, 64), [0, 1, 2, 3, 10, 20, 21]);
  assert.deepEqual(parseNeuronSpec("top-variance:32"), { kind: "top-variance", k: 32 });
  // ranges in any order come out ascending
  const t = parseNeuronSpec("40-41,5");
  assert.deepEqual(neuronsOfRanges(t as Extract<typeof t, { kind: "ranges" }>, 64), [5, 40, 41]);
});

test("--neurons: overlapping, reversed, malformed and out-of-range values are refused, naming the value", () => {
  throwsUser(() => parseNeuronSpec("0-63,32-40"), /ranges "0-63" and "32-40" overlap/);
  throwsUser(() => parseNeuronSpec("5,0-5"), /ranges "0-5" and "5" overlap/);
  throwsUser(() => parseNeuronSpec("7-3"), /"7-3" ends before it starts/);
  throwsUser(() => parseNeuronSpec("0-x"), /"x" is not a non-negative integer/);
  throwsUser(() => parseNeuronSpec("-1"), /not a non-negative integer/);
  throwsUser(() => parseNeuronSpec("1,,2"), /ranges like 0-63,100 or top-variance:K/);
  throwsUser(() => parseNeuronSpec("top-variance:0"), /K ≥ 1/);
  throwsUser(() => parseNeuronSpec("top-variance:abc"), /"abc" is not a non-negative integer/);
  const s = parseNeuronSpec("0-63,64-3071") as Extract<ReturnType<typeof parseNeuronSpec>, { kind: "ranges" }>;
  throwsUser(() => neuronsOfRanges(s, 64), /"64-3071" is out of range: the model's layers have 64 MLP neurons \(0\.\.63\)/);
});

test("--layers, --heads, --freeze, --analyses", () => {
  assert.deepEqual(parseLayers("3,0-1"), [0, 1, 3]);
  throwsUser(() => parseLayers("1,0-2"), /--layers: 1 is listed twice/);
  throwsUser(() => checkLayers([0, 12], 12), /layer 12 is out of range: the model has 12 layers \(0\.\.11\)/);
  assert.deepEqual(parseHeads("regression,token"), ["regression", "token"]);
  throwsUser(() => parseHeads("regression,linear"), /--heads: "linear" is not one of regression, classification, token/);
  throwsUser(() => parseFreezeModes("frozen,frozen"), /"frozen" is listed twice/);
  assert.deepEqual(parseAnalyses("none"), []);
  assert.deepEqual(parseAnalyses("patching,weights"), ["patching", "weights"]);
  throwsUser(() => parseAnalyses("weights,residual"), /"residual" is not one of weights, patching/);
});

test("settingsDifferences names each differing setting", () => {
  const a = { layers: [2, 3], training: { lr_frozen: 0.001, epochs: 20 }, heads: ["regression"] } as unknown as SweepSettings;
  const b = { layers: [2, 3], training: { lr_frozen: 0.01, epochs: 20 }, heads: ["regression", "token"] } as unknown as SweepSettings;
  assert.deepEqual(settingsDifferences(a, b), ['training.lr_frozen: 0.001 ≠ 0.01', 'heads: ["regression"] ≠ ["regression","token"]']);
  assert.deepEqual(settingsDifferences(a, a), []);
});

test("makeTasks: frozen jobs grouped per layer and head (at least minTasks groups), everything else alone, each job once", () => {
  const s = { layers: [0, 1], heads: ["regression", "classification"], freeze: ["frozen", "partial"] } as unknown as SweepSettings;
  const jobs = allJobs(s, { "0": [0, 1, 2, 3, 4], "1": [7, 8] });
  assert.equal(jobs.length, (5 + 2) * 2 * 2);
  const tasks = makeTasks(jobs, 3, 4);
  const multi = tasks.filter((t) => t.multi);
  assert.ok(multi.every((t) => t.freeze === "frozen" && t.neurons.length <= 3));
  assert.deepEqual(multi.map((t) => [t.layer, t.head, t.neurons]), [
    [0, "regression", [0, 1, 2]], [0, "regression", [3, 4]], [0, "classification", [0, 1, 2]], [0, "classification", [3, 4]],
    [1, "regression", [7, 8]], [1, "classification", [7, 8]],
  ]);
  assert.deepEqual(multi.map((t) => t.id).slice(0, 3), ["L0-N0_2-regression-frozen-multi", "L0-N3_4-regression-frozen-multi", "L0-N0_2-classification-frozen-multi"]);
  assert.ok(tasks.filter((t) => !t.multi).every((t) => t.freeze === "partial" && t.neurons.length === 1));
  const covered = tasks.flatMap((t) => t.neurons.map((n) => `L${t.layer}-N${n}-${t.head}-${t.freeze}`)).sort();
  assert.deepEqual(covered, jobs.map((j) => j.id).sort());
});

test("topVarianceNeurons picks the highest training-split variances", () => {
  // 3 neurons, 6 examples; neuron 2 varies most on train, neuron 0 only on test (ignored)
  const acts = Float32Array.from([0, 1, 0, 0, 2, 5, 0, 1, -5, 0, 2, 5, 9, 0, 0, -9, 0, 0]);
  const split = Int32Array.from([0, 0, 0, 0, 2, 2]);
  assert.deepEqual(topVarianceNeurons(acts, split, 3, 1), [2]);
  assert.deepEqual(topVarianceNeurons(acts, split, 3, 2), [1, 2]);
  throwsUser(() => topVarianceNeurons(acts, split, 3, 4), /top-variance:4 asks for more neurons than the layer has \(3\)/);
});
