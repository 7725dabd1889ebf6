/** Reading tensors as a person does: get, slice, toArray, argmax, topk, with errors naming the shape. */
import { test } from "node:test";
import assert from "node:assert/strict";
import { tensor, ShapeError, scalar } from "../../src/tensor/index.ts";

// t[b, p, n] = 100·b + 10·p + n, shape [2, 3, 4]
const t = tensor(Array.from({ length: 24 }, (_, i) => 100 * Math.floor(i / 12) + 10 * Math.floor((i % 12) / 4) + (i % 4)), [2, 3, 4]);

test("get reads one element, negative indices from the end", () => {
  assert.equal(t.get(1, 2, 3), 123);
  assert.equal(t.get(0, 1, 2), 12);
  assert.equal(t.get(-1, -1, -2), 122);
  assert.equal(scalar(7).get(), 7);
});

test("get errors name the index, the axis and the shape", () => {
  assert.throws(() => t.get(0, 3, 0), (e: unknown) => e instanceof ShapeError && e.message === "get(0, 3, 0): index 3 is out of range for axis 1 of shape [2, 3, 4] (size 3)");
  assert.throws(() => t.get(0, 1), (e: unknown) => e instanceof ShapeError && e.message === "get(0, 1): tensor has shape [2, 3, 4], give 3 indices, got 2");
  assert.throws(() => t.get(0, 1.5, 0), /index 1.5 is out of range for axis 1/);
});

test("slice: an index drops the axis, null keeps it, [start, end) ranges with negatives", () => {
  const a = t.slice(1, null, [1, 3]);
  assert.deepEqual(a.shape, [3, 2]);
  assert.deepEqual(a.toArray(), [[101, 102], [111, 112], [121, 122]]);
  const last = t.slice(null, -1); // t[:, -1]
  assert.deepEqual(last.shape, [2, 4]);
  assert.deepEqual(last.toArray(), [[20, 21, 22, 23], [120, 121, 122, 123]]);
  assert.deepEqual(t.slice([1]).shape, [1, 3, 4]); // t[1:]
  assert.deepEqual(t.slice(0, [-2]).toArray(), [[10, 11, 12, 13], [20, 21, 22, 23]]);
  assert.deepEqual(t.slice(0, 0, 0).shape, []);
  assert.equal(t.slice(0, 0, 0).item(), 0);
  assert.deepEqual(t.slice(null, [1, 1]).shape, [2, 0, 4]);
  const copy = t.slice();
  copy.data[0] = -1;
  assert.equal(t.data[0], 0, "slice copies");
});

test("slice errors name the spec and the shape", () => {
  assert.throws(() => t.slice(0, [2, 5]), (e: unknown) => e instanceof ShapeError && e.message === "slice(0, [2, 5]): range [2, 5] does not fit axis 1 of shape [2, 3, 4] (size 3)");
  assert.throws(() => t.slice(2), /slice\(2\): index 2 is out of range for axis 0 of shape \[2, 3, 4\]/);
  assert.throws(() => t.slice(0, 0, 0, 0), /tensor has shape \[2, 3, 4\], at most 3 specs, got 4/);
});

test("toArray nests one level per axis", () => {
  assert.deepEqual(tensor([1, 2, 3, 4, 5, 6], [2, 3]).toArray(), [[1, 2, 3], [4, 5, 6]]);
  assert.equal(scalar(2.5).toArray(), 2.5);
  assert.deepEqual(tensor([1, 2]).toArray(), [1, 2]);
});

test("argmax and topk along any axis, lowest index first on ties", () => {
  const x = tensor([1, 5, 5, 2, 9, 0, 3, 3], [2, 4]);
  assert.deepEqual(x.argmax().toArray(), [1, 0]);
  assert.deepEqual(x.argmax(0).toArray(), [1, 0, 0, 1]);
  const { values, indices } = x.topk(3);
  assert.deepEqual(values.toArray(), [[5, 5, 2], [9, 3, 3]]);
  assert.deepEqual(indices.toArray(), [[1, 2, 3], [0, 2, 3]]);
  assert.deepEqual(t.topk(2, 1).indices.toArray(), [[[2, 2, 2, 2], [1, 1, 1, 1]], [[2, 2, 2, 2], [1, 1, 1, 1]]]);
  assert.equal(tensor([3, 1, 4, 1, 5, 9, 2, 6]).argmax().item(), 5);
  assert.throws(() => x.topk(5), (e: unknown) => e instanceof ShapeError && e.message === "topk(5): k must be 1..4 (axis 1 of shape [2, 4])");
  assert.throws(() => x.argmax(2), /argmax: axis 2 is out of range for shape \[2, 4\]/);
});
