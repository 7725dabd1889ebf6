/** One scalar against its expected value: |actual − expected| ≤ tol, with a message that names it. */
import assert from "node:assert/strict";

export function close(actual: number, expected: number, tol: number, what: string): void {
  assert.ok(Math.abs(actual - expected) <= tol, `${what}: ${actual} vs ${expected} (difference ${Math.abs(actual - expected)}, tolerance ${tol})`);
}
