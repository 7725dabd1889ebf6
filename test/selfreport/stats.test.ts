/**
 * src/selfreport/stats.ts on hand-worked cases: every expected value below was computed on paper
 * (or from its definition in float64 here), never by the code under test.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import {
  mean, std, quantileSorted, activationStats, quantileBinEdges, binOf, binCentres, pearson, ranks, spearman, regressionMetrics,
} from "../../src/selfreport/stats.ts";
import { close } from "../helpers/close.ts";


test("mean and population std", () => {
  close(mean([1, 2, 3, 4]), 2.5, 0, "mean");
  close(std([1, 2, 3, 4]), Math.sqrt(1.25), 1e-15, "std divides by n");
  close(std([7, 7, 7]), 0, 0, "std of a constant");
  assert.ok(Number.isNaN(mean([])));
});

test("quantileSorted is numpy's linear interpolation", () => {
  const s = [1, 2, 3, 4];
  close(quantileSorted(s, 0), 1, 0, "q0");
  close(quantileSorted(s, 0.25), 1.75, 1e-15, "q25: pos 0.75");
  close(quantileSorted(s, 0.5), 2.5, 1e-15, "q50");
  close(quantileSorted(s, 1), 4, 0, "q100");
  close(quantileSorted([10], 0.3), 10, 0, "one value");
  assert.ok(Number.isNaN(quantileSorted([], 0.5)));
});

test("activationStats of 0..9 (shuffled): mean, std, extremes, quantiles, near-zero fraction", () => {
  const s = activationStats([3, 9, 0, 7, 1, 8, 2, 6, 4, 5]);
  assert.equal(s.count, 10);
  close(s.mean, 4.5, 1e-15, "mean");
  close(s.std, Math.sqrt(8.25), 1e-15, "std");
  assert.equal(s.min, 0);
  assert.equal(s.max, 9);
  const expected: Record<string, number> = { q1: 0.09, q5: 0.45, q25: 2.25, q50: 4.5, q75: 6.75, q95: 8.55, q99: 8.91 };
  assert.deepEqual(Object.keys(s.quantiles), Object.keys(expected));
  for (const [k, v] of Object.entries(expected)) close(s.quantiles[k]!, v, 1e-12, k);
  // tolerance 0.05·(9 − 0) + 1e-6 = 0.450001: only the 0 is near zero
  close(s.frac_near_zero, 0.1, 0, "frac_near_zero");
});

test("activationStats: a sparse neuron (mostly zeros) counts its zeros as near zero", () => {
  const s = activationStats([0, 0, 0, 0, 0, 0, -0.01, 0.04, 1, 2]);
  // tolerance 0.05·2.01 + 1e-6 = 0.100501: the six zeros, −0.01 and 0.04
  close(s.frac_near_zero, 0.8, 0, "frac_near_zero");
});

test("quantileBinEdges: equal-count edges; repeated edges nudged apart; a constant input", () => {
  assert.deepEqual(quantileBinEdges([9, 0, 3, 6, 1, 2, 4, 5, 7, 8], 3), [0, 3, 6, 9]);
  // positions 0, 2.25, 4.5, 6.75, 9 of [0×8, 1, 2] → 0, 0, 0, 0, 2; span = max(1e-6, 2·1e-6) = 2e-6
  const sparse = quantileBinEdges([0, 0, 0, 0, 0, 0, 0, 0, 1, 2], 4);
  assert.equal(sparse.length, 5);
  close(sparse[0]!, 0, 0, "edge 0");
  close(sparse[1]!, 2e-6, 1e-18, "edge 1");
  close(sparse[2]!, 4e-6, 1e-18, "edge 2");
  close(sparse[3]!, 6e-6, 1e-18, "edge 3");
  close(sparse[4]!, 2, 0, "edge 4");
  const constant = quantileBinEdges([5, 5, 5], 2);
  close(constant[0]!, 5, 0, "constant edge 0");
  close(constant[1]!, 5 + 1e-6, 1e-15, "constant edge 1");
  close(constant[2]!, 5 + 2e-6, 1e-15, "constant edge 2");
  for (const e of [sparse, constant]) for (let i = 1; i < e.length; i++) assert.ok(e[i]! > e[i - 1]!, `edges increase: ${e}`);
});

test("binOf: half-open bins [e_i, e_i+1), clamped at both ends", () => {
  const edges = [0, 1, 2, 3];
  const cases: Array<[number, number]> = [[-1, 0], [0, 0], [0.999, 0], [1, 1], [1.5, 1], [2, 2], [2.5, 2], [3, 2], [100, 2]];
  for (const [v, bin] of cases) assert.equal(binOf(v, edges), bin, `binOf(${v})`);
  assert.equal(binOf(5, [0, 10]), 0, "one bin");
});

test("binCentres are the midpoints", () => {
  assert.deepEqual(binCentres([0, 1, 3, 7]), [0.5, 2, 5]);
});

test("pearson: ±1 for exact lines, a hand-worked 0.8, 0 for a constant input", () => {
  close(pearson([1, 2, 3], [2, 4, 6]), 1, 1e-15, "positive line");
  close(pearson([1, 2, 3], [3, 2, 1]), -1, 1e-15, "negative line");
  // deviations (−1.5, −0.5, 0.5, 1.5) and (−1.5, 0.5, −0.5, 1.5): Σab = 4, Σa² = Σb² = 5
  close(pearson([1, 2, 3, 4], [1, 3, 2, 4]), 0.8, 1e-15, "hand-worked");
  assert.equal(pearson([1, 1, 1], [1, 2, 3]), 0);
  assert.equal(pearson([1, 2, 3], [4, 4, 4]), 0);
});

test("ranks give ties their average rank; spearman on ties and monotone maps", () => {
  assert.deepEqual(Array.from(ranks([10, 20, 20, 30])), [1, 2.5, 2.5, 4]);
  assert.deepEqual(Array.from(ranks([3, 1, 3, 3])), [3, 1, 3, 3]);
  close(spearman([1, 2, 3, 4], [1, 4, 9, 16]), 1, 1e-15, "monotone");
  close(spearman([1, 2, 3, 4], [16, 9, 4, 1]), -1, 1e-15, "anti-monotone");
  // ranks (1, 2.5, 2.5, 4) vs (1, 2, 3, 4): Σab = 4.5, Σa² = 4.5, Σb² = 5
  close(spearman([1, 2, 2, 3], [1, 2, 3, 4]), 4.5 / Math.sqrt(4.5 * 5), 1e-15, "with a tie");
  assert.equal(spearman([2, 2, 2], [1, 2, 3]), 0);
});

test("regressionMetrics on a hand-worked case, and R² of the mean is 0", () => {
  const m = regressionMetrics([1, 2, 3], [1, 2, 4]);
  assert.equal(m.n, 3);
  close(m.mse, 1 / 3, 1e-15, "mse");
  close(m.mae, 1 / 3, 1e-15, "mae");
  // SST around 7/3: (16 + 1 + 25)/9 = 42/9; R² = 1 − 1/(42/9)
  close(m.r2, 1 - 9 / 42, 1e-15, "r2");
  close(m.pearson_r, 3 / Math.sqrt(2 * (42 / 9)), 1e-15, "pearson");
  close(m.spearman_rho, 1, 1e-15, "spearman");
  const base = regressionMetrics([7 / 3, 7 / 3, 7 / 3], [1, 2, 4]);
  close(base.r2, 0, 1e-15, "mean predictor R²");
  assert.equal(base.pearson_r, 0);
  assert.equal(regressionMetrics([1, 2], [5, 5]).r2, 0, "constant target: R² defined as 0");
});
