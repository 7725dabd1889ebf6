/** src/analysis/linalg.ts against hand-computed values and against each other. */
import { test } from "node:test";
import assert from "node:assert/strict";
import { Rng } from "../../src/tensor/index.ts";
import * as la from "../../src/analysis/linalg.ts";

/** Asserts |a − b| ≤ atol + rtol·|b| everywhere, naming the worst element. */
function assertClose(actual: ArrayLike<number>, expected: ArrayLike<number>, atol: number, what: string, rtol = 0): void {
  assert.equal(actual.length, expected.length, `${what}: length ${actual.length} ≠ ${expected.length}`);
  let worst = -1;
  let worstErr = 0;
  for (let i = 0; i < expected.length; i++) {
    const err = Math.abs(actual[i]! - expected[i]!) - rtol * Math.abs(expected[i]!);
    if (!(err <= worstErr) || Number.isNaN(actual[i]!)) {
      worstErr = Number.isNaN(actual[i]!) ? Infinity : err;
      worst = i;
    }
  }
  if (worst >= 0 && worstErr > atol) assert.fail(`${what}: worst difference at ${worst}: ${actual[worst]} vs ${expected[worst]} (allowed ${atol} + ${rtol}·|ref|)`);
}

function randomSymmetricPsd(n: number, rank: number, seed: number): Float64Array {
  const rng = new Rng(seed);
  const B = Float64Array.from({ length: n * rank }, () => rng.normal());
  const A = new Float64Array(n * n);
  for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) for (let k = 0; k < rank; k++) A[i * n + j]! += B[i * rank + k]! * B[j * rank + k]!;
  return A;
}

test("dot, norm, cosine, unit, centred, variance: hand values", () => {
  assert.equal(la.dot([1, 2, 3], [4, 5, 6]), 32);
  assert.equal(la.norm([3, 4]), 5);
  assertClose([la.cosine([1, 0], [1, 1])], [Math.SQRT1_2], 1e-15, "cosine");
  assertClose([la.cosine([1, -2], [-2, 4])], [-1], 1e-15, "opposite vectors");
  assert.equal(la.cosine([0, 0], [1, 1]), 0, "a zero vector has cosine 0");
  assertClose(la.unit([3, 4]), [0.6, 0.8], 1e-15, "unit");
  assertClose(la.centred([1, 2, 6]), [-2, -1, 3], 1e-15, "centred");
  assert.equal(la.variance([1, 2, 3, 4]), 1.25);
  assertClose(la.scaled([1, -2], 3), [3, -6], 0, "scaled");
});

test("covariance and column means of a small matrix: hand values (population, divides by n)", () => {
  // rows (1, 2), (3, 6), (5, 10): x has variance 8/3, y = 2x has 32/3, covariance 16/3
  const X = [1, 2, 3, 6, 5, 10];
  assertClose(la.columnMeans(X, 3, 2), [3, 6], 1e-15, "means");
  assertClose(la.covariance(X, 3, 2), [8 / 3, 16 / 3, 16 / 3, 32 / 3], 1e-14, "covariance");
  assertClose(la.matVec([1, 2, 3, 4, 5, 6], [1, 0, -1], 2, 3), [-2, -2], 0, "matVec");
});

test("symEig and jacobiEig: a 2×2 and a 3×3 by hand", () => {
  for (const eig of [la.symEig, la.jacobiEig]) {
  const e = eig([2, 1, 1, 2], 2);
  assertClose(e.values, [3, 1], 1e-14, "2×2 eigenvalues");
  assertClose([Math.abs(la.dot(e.vectors[0]!, [Math.SQRT1_2, Math.SQRT1_2]))], [1], 1e-14, "2×2 first eigenvector ∝ (1, 1)");
  assertClose([Math.abs(la.dot(e.vectors[1]!, [Math.SQRT1_2, -Math.SQRT1_2]))], [1], 1e-14, "2×2 second eigenvector ∝ (1, −1)");
  // [[2, 0, 0], [0, 3, 4], [0, 4, 9]]: eigenvalues 11, 2, 1 (the 2×2 block has trace 12, determinant 11)
  const f = eig([2, 0, 0, 0, 3, 4, 0, 4, 9], 3);
  assertClose(f.values, [11, 2, 1], 1e-13, "3×3 eigenvalues");
  assertClose([Math.abs(la.dot(f.vectors[0]!, la.unit([0, 1, 2])))], [1], 1e-13, "3×3 top eigenvector ∝ (0, 1, 2)");
  }
});

function checkEigen(A: Float64Array, n: number, e: la.Eigen, what: string): void {
  let worst = 0;
  e.vectors.forEach((v, k) => {
    const Av = la.matVec(A, v, n, n);
    for (let i = 0; i < n; i++) worst = Math.max(worst, Math.abs(Av[i]! - e.values[k]! * v[i]!));
    for (let j = 0; j < n; j++) {
      const d = la.dot(v, e.vectors[j]!);
      assert.ok(Math.abs(d - (j === k ? 1 : 0)) < 1e-12, `${what}: vectors ${k}, ${j} have dot ${d}`);
    }
  });
  let scale = 1;
  for (let i = 0; i < n * n; i++) scale = Math.max(scale, Math.abs(A[i]!));
  assert.ok(worst < 1e-11 * scale, `${what}: worst |Av − λv| = ${worst}`);
  for (let k = 1; k < n; k++) assert.ok(e.values[k - 1]! >= e.values[k]!, `${what}: values sorted descending`);
}

test("symEig (Householder + QL) and jacobiEig (reference): A v = λ v, orthonormal, same spectrum", () => {
  const cases: Array<[string, Float64Array, number]> = [];
  const n = 30;
  const A = randomSymmetricPsd(n, n, 1);
  for (let i = 0; i < n; i++) A[i * n + i]! -= 20; // indefinite
  cases.push(["random indefinite 30×30", A, n]);
  cases.push(["rank 3 PSD 25×25 (22 zero eigenvalues)", randomSymmetricPsd(25, 3, 6), 25]);
  const I = new Float64Array(16);
  for (let i = 0; i < 4; i++) I[i * 4 + i] = 2;
  cases.push(["2·I (all eigenvalues equal)", I, 4]);
  cases.push(["1×1", Float64Array.of(-3), 1]);
  cases.push(["zero 3×3", new Float64Array(9), 3]);
  for (const [what, M, m] of cases) {
    const fast = la.symEig(M, m);
    const ref = la.jacobiEig(M, m);
    checkEigen(M, m, fast, `symEig ${what}`);
    checkEigen(M, m, ref, `jacobiEig ${what}`);
    assertClose(fast.values, ref.values, 1e-10, `${what}: eigenvalues`, 1e-12);
  }
});

test("topEigenvalue: power iteration agrees with symEig", () => {
  const A = randomSymmetricPsd(30, 30, 8);
  assertClose([la.topEigenvalue(A, 30)], [la.symEig(A, 30).values[0]!], 1e-6, "top eigenvalue", 1e-7);
  assert.equal(la.topEigenvalue(new Float64Array(9), 3), 0, "zero matrix");
  assertClose([la.topEigenvalue([2, 1, 1, 2], 2)], [3], 1e-9, "2×2 by hand");
});

test("pca: points on a line plus a small orthogonal spread", () => {
  // 200 points t·(1, 2)/√5 + s·(2, −1)/√5 with t ~ N(0, 3²), s ~ N(0, 0.1²)
  const rng = new Rng(3);
  const n = 200;
  const X = new Float64Array(n * 2);
  for (let i = 0; i < n; i++) {
    const t = 3 * rng.normal();
    const s = 0.1 * rng.normal();
    X[2 * i] = (t + 2 * s) / Math.sqrt(5) + 7;
    X[2 * i + 1] = (2 * t - s) / Math.sqrt(5) - 1;
  }
  const p = la.pca(X, n, 2, 2);
  assert.ok(Math.abs(la.dot(p.components[0]!, la.unit([1, 2]))) > 0.9999, `PC1 ${p.components[0]}`);
  assertClose([p.explainedRatio[0]! + p.explainedRatio[1]!], [1], 1e-12, "two PCs explain everything in 2-D");
  const S = la.covariance(X, n, 2);
  assertClose([p.variances[0]!], [la.symEig(S, 2).values[0]!], 1e-10, "PC1 variance = top eigenvalue of the covariance");
});

test("cholesky, solveLower, mulLowerT: hand values and a random round trip", () => {
  // [[4, 2], [2, 3]] = L Lᵀ with L = [[2, 0], [1, √2]]
  const L = la.cholesky([4, 2, 2, 3], 2);
  assertClose(L, [2, 0, 1, Math.SQRT2], 1e-15, "L");
  assertClose(la.solveLower(L, [2, 1 + Math.SQRT2], 2), [1, 1], 1e-15, "L⁻¹ b");
  assertClose(la.mulLowerT(L, [1, 1], 2), [3, Math.SQRT2], 1e-15, "Lᵀ b");
  assert.throws(() => la.cholesky([1, 2, 2, 1], 2), /not positive definite/);
  const n = 12;
  const A = randomSymmetricPsd(n, n + 3, 4);
  const M = la.cholesky(A, n);
  const b = Float64Array.from({ length: n }, (_, i) => Math.sin(i));
  // L Lᵀ x = b  ⇔  x = L⁻ᵀ L⁻¹ b; check A (L⁻ᵀ… ) via: (L⁻¹ b)·(L⁻¹ b) = bᵀ A⁻¹ b and (Lᵀ b)·(Lᵀ b) = bᵀ A b
  const Ab = la.matVec(A, b, n, n);
  const LTb = la.mulLowerT(M, b, n);
  assertClose([la.dot(LTb, LTb)], [la.dot(b, Ab)], 1e-9, "bᵀ A b", 1e-12);
  const y = la.solveLower(M, Ab, n); // = Lᵀ b
  assertClose(y, LTb, 1e-9, "L⁻¹ A b = Lᵀ b", 1e-9);
});
