/**
 * computeFeatures reads every example of a window from its longest member: it must refuse an example
 * whose read position lies outside its own prefix, or whose tokens are not the start of that member's
 * (either would silently read another example's features), and accept the dataset as built.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { SelfreportError } from "../../src/errors.ts";
import { computeFeatures } from "../../src/selfreport/features.ts";
import type { Dataset } from "../../src/selfreport/dataset.ts";
import { tinyRunFolder } from "../helpers/run-fixture.ts";

const { tinyRun } = tinyRunFolder("features");
const fx = tinyRun();

function copy(ds: Dataset): Dataset {
  return { ...ds, tokens: ds.tokens.slice(), lengths: ds.lengths.slice(), positions: ds.positions.slice() };
}

/** An example that is not the longest of its window (so its features come from another example's pass). */
function shorterMember(ds: Dataset): number {
  for (let i = 0; i < ds.meta.n; i++) {
    for (let j = 0; j < ds.meta.n; j++) if (j !== i && ds.window[j] === ds.window[i] && ds.lengths[j]! > ds.lengths[i]!) return i;
  }
  throw new Error("the fixture has no window with two examples of different lengths");
}

test("computeFeatures accepts the dataset as built", () => {
  const f = computeFeatures(fx.runModel, fx.dataset, fx.config.feature_layer);
  assert.deepEqual(f.shape, [fx.dataset.meta.n, fx.runModel.cfg.dModel]);
});

test("computeFeatures refuses a read position past the example's prefix", () => {
  const ds = copy(fx.dataset);
  const i = shorterMember(ds);
  ds.positions[i] = ds.lengths[i]!; // one past its last token: inside the longer example's tokens
  assert.throws(() => computeFeatures(fx.runModel, ds, fx.config.feature_layer), (e: unknown) =>
    e instanceof SelfreportError && e.message === `dataset example ${i}: read position ${ds.lengths[i]!} is outside its ${ds.lengths[i]!}-token prefix (expected 0..${ds.lengths[i]! - 1})`);
});

test("computeFeatures refuses an example whose tokens are not a prefix of its window's longest", () => {
  const ds = copy(fx.dataset);
  const i = shorterMember(ds);
  const L = ds.meta.max_len;
  ds.tokens[i * L] = (ds.tokens[i * L]! + 1) % fx.runModel.cfg.dVocab;
  assert.throws(() => computeFeatures(fx.runModel, ds, fx.config.feature_layer), (e: unknown) =>
    e instanceof SelfreportError && /^dataset example \d+: window \d+ groups it with example \d+, but its tokens are not a prefix of that example's \(token 0 differs\)/.test(e.message));
});
