/**
 * Small float64 linear algebra for the analyses: vectors, covariance, a symmetric eigensolver
 * (Householder + QL, with cyclic Jacobi beside it as the reference), PCA, and Cholesky (for
 * whitening). Everything is row-major in Float64Arrays.
 *
 * Glossary: n rows (examples), d columns (dimensions), k eigenpairs.
 */

export type Vec = Float64Array;

export function dot(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i]! * b[i]!;
  return s;
}

export function norm(a: ArrayLike<number>): number {
  return Math.sqrt(dot(a, a));
}

/** a·b / (|a| |b|); 0 when either vector is zero. */
export function cosine(a: ArrayLike<number>, b: ArrayLike<number>): number {
  const na = norm(a);
  const nb = norm(b);
  return na === 0 || nb === 0 ? 0 : dot(a, b) / (na * nb);
}

export function scaled(a: ArrayLike<number>, s: number): Vec {
  return Float64Array.from(a, (v) => v * s);
}

export function unit(a: ArrayLike<number>): Vec {
  const n = norm(a);
  return scaled(a, n === 0 ? 0 : 1 / n);
}

/** a minus its mean over components: the projection off the all-ones direction (what LayerNorm sees). */
export function centred(a: ArrayLike<number>): Vec {
  let m = 0;
  for (let i = 0; i < a.length; i++) m += a[i]!;
  m /= a.length;
  return Float64Array.from(a, (v) => v - m);
}

/** Column means of X [n, d]. */
export function columnMeans(X: ArrayLike<number>, n: number, d: number): Vec {
  const mu = new Float64Array(d);
  for (let r = 0; r < n; r++) for (let j = 0; j < d; j++) mu[j]! += X[r * d + j]!;
  for (let j = 0; j < d; j++) mu[j]! /= n;
  return mu;
}

/** Population covariance (divides by n) of the rows of X [n, d] → [d, d]. */
export function covariance(X: ArrayLike<number>, n: number, d: number): Vec {
  const mu = columnMeans(X, n, d);
  const cols = new Float64Array(d * n); // centred X, transposed: column j is contiguous
  for (let r = 0; r < n; r++) for (let j = 0; j < d; j++) cols[j * n + r] = X[r * d + j]! - mu[j]!;
  const S = new Float64Array(d * d);
  for (let i = 0; i < d; i++) {
    const oi = i * n;
    for (let j = i; j < d; j++) {
      const oj = j * n;
      let s = 0;
      for (let r = 0; r < n; r++) s += cols[oi + r]! * cols[oj + r]!;
      S[i * d + j] = S[j * d + i] = s / n;
    }
  }
  return S;
}

/** A [rows, cols] · x [cols] → [rows]. */
export function matVec(A: ArrayLike<number>, x: ArrayLike<number>, rows: number, cols: number): Vec {
  const y = new Float64Array(rows);
  for (let i = 0; i < rows; i++) {
    let s = 0;
    for (let j = 0; j < cols; j++) s += A[i * cols + j]! * x[j]!;
    y[i] = s;
  }
  return y;
}

export interface Eigen {
  /** Eigenvalues, largest first. */
  values: Vec;
  /** Unit eigenvectors, in the order of `values`. */
  vectors: Vec[];
}

/**
 * All eigenpairs of a symmetric matrix A [n, n]: Householder reduction to a tridiagonal matrix,
 * then the implicit QL algorithm (tred2 + tql2 of EISPACK, as in JAMA). O(n³): about 2 s for
 * n = 768 in plain JS. `jacobiEig` below is the slow, obviously-correct reference it is tested against.
 */
export function symEig(A: ArrayLike<number>, n: number): Eigen {
  const V = Float64Array.from(A); // [n, n]; becomes the accumulated orthogonal transformation
  const d = new Float64Array(n); //  diagonal
  const e = new Float64Array(n); //  sub-diagonal
  // V is stored transposed (V(i, j) of the algorithm is V[j·n + i]) so that the inner loops, which
  // walk down columns of V, run over contiguous memory; A is symmetric, so the copy needs no transpose.
  // ---- tred2: Householder tridiagonalisation
  for (let j = 0; j < n; j++) d[j] = V[j * n + (n - 1)]!;
  for (let i = n - 1; i > 0; i--) {
    let scale = 0;
    let h = 0;
    for (let k = 0; k < i; k++) scale += Math.abs(d[k]!);
    if (scale === 0) {
      e[i] = d[i - 1]!;
      for (let j = 0; j < i; j++) {
        d[j] = V[j * n + (i - 1)]!;
        V[j * n + i] = 0;
        V[i * n + j] = 0;
      }
    } else {
      for (let k = 0; k < i; k++) {
        d[k]! /= scale;
        h += d[k]! * d[k]!;
      }
      let f = d[i - 1]!;
      let g = Math.sqrt(h);
      if (f > 0) g = -g;
      e[i] = scale * g;
      h -= f * g;
      d[i - 1] = f - g;
      for (let j = 0; j < i; j++) e[j] = 0;
      for (let j = 0; j < i; j++) {
        f = d[j]!;
        V[i * n + j] = f;
        g = e[j]! + V[j * n + j]! * f;
        for (let k = j + 1; k <= i - 1; k++) {
          g += V[j * n + k]! * d[k]!;
          e[k]! += V[j * n + k]! * f;
        }
        e[j] = g;
      }
      f = 0;
      for (let j = 0; j < i; j++) {
        e[j]! /= h;
        f += e[j]! * d[j]!;
      }
      const hh = f / (h + h);
      for (let j = 0; j < i; j++) e[j]! -= hh * d[j]!;
      for (let j = 0; j < i; j++) {
        f = d[j]!;
        g = e[j]!;
        for (let k = j; k <= i - 1; k++) V[j * n + k]! -= f * e[k]! + g * d[k]!;
        d[j] = V[j * n + (i - 1)]!;
        V[j * n + i] = 0;
      }
    }
    d[i] = h;
  }
  for (let i = 0; i < n - 1; i++) { // accumulate the transformations
    V[i * n + (n - 1)] = V[i * n + i]!;
    V[i * n + i] = 1;
    const h = d[i + 1]!;
    if (h !== 0) {
      for (let k = 0; k <= i; k++) d[k] = V[(i + 1) * n + k]! / h;
      for (let j = 0; j <= i; j++) {
        let g = 0;
        for (let k = 0; k <= i; k++) g += V[(i + 1) * n + k]! * V[j * n + k]!;
        for (let k = 0; k <= i; k++) V[j * n + k]! -= g * d[k]!;
      }
    }
    for (let k = 0; k <= i; k++) V[(i + 1) * n + k] = 0;
  }
  for (let j = 0; j < n; j++) {
    d[j] = V[j * n + (n - 1)]!;
    V[j * n + (n - 1)] = 0;
  }
  V[(n - 1) * n + (n - 1)] = 1;
  e[0] = 0;

  // ---- tql2: implicit QL on the tridiagonal matrix; rotations combine columns of V = rows of W
  const W = V; // row i of W = column i of V
  for (let i = 1; i < n; i++) e[i - 1] = e[i]!;
  e[n - 1] = 0;
  let f = 0;
  let tst1 = 0;
  const eps = 2 ** -52;
  for (let l = 0; l < n; l++) {
    tst1 = Math.max(tst1, Math.abs(d[l]!) + Math.abs(e[l]!));
    let m = l;
    while (m < n && Math.abs(e[m]!) > eps * tst1) m++;
    if (m > l) {
      do {
        let g = d[l]!;
        let p = (d[l + 1]! - g) / (2 * e[l]!);
        let r = Math.hypot(p, 1);
        if (p < 0) r = -r;
        d[l] = e[l]! / (p + r);
        d[l + 1] = e[l]! * (p + r);
        const dl1 = d[l + 1]!;
        let h = g - d[l]!;
        for (let i = l + 2; i < n; i++) d[i]! -= h;
        f += h;
        p = d[m]!;
        let c = 1;
        let c2 = c;
        let c3 = c;
        const el1 = e[l + 1]!;
        let s = 0;
        let s2 = 0;
        for (let i = m - 1; i >= l; i--) {
          c3 = c2;
          c2 = c;
          s2 = s;
          g = c * e[i]!;
          h = c * p;
          r = Math.hypot(p, e[i]!);
          e[i + 1] = s * r;
          s = e[i]! / r;
          c = p / r;
          p = c * d[i]! - s * g;
          d[i + 1] = h + s * (c * g + s * d[i]!);
          const oi = i * n;
          const oj = (i + 1) * n;
          for (let k = 0; k < n; k++) {
            const wk = W[oj + k]!;
            W[oj + k] = s * W[oi + k]! + c * wk;
            W[oi + k] = c * W[oi + k]! - s * wk;
          }
        }
        p = (-s * s2 * c3 * el1 * e[l]!) / dl1;
        e[l] = s * p;
        d[l] = c * p;
      } while (Math.abs(e[l]!) > eps * tst1);
    }
    d[l] = d[l]! + f;
    e[l] = 0;
  }
  const order = Array.from({ length: n }, (_, i) => i).sort((i, j) => d[j]! - d[i]!);
  return { values: Float64Array.from(order, (i) => d[i]!), vectors: order.map((i) => W.slice(i * n, (i + 1) * n)) };
}

/**
 * The reference eigensolver: cyclic Jacobi rotations, each zeroing one off-diagonal pair, swept
 * until the off-diagonal mass is negligible. Slow (O(n³) per sweep, many sweeps) but plainly right.
 */
export function jacobiEig(A: ArrayLike<number>, n: number, maxSweeps = 60): Eigen {
  const a = Float64Array.from(A);
  const V = new Float64Array(n * n); // columns are eigenvectors
  for (let i = 0; i < n; i++) V[i * n + i] = 1;
  let total = 0;
  for (let i = 0; i < n * n; i++) total += a[i]! * a[i]!;
  for (let sweep = 0; sweep < maxSweeps; sweep++) {
    let off = 0;
    for (let p = 0; p < n; p++) for (let q = p + 1; q < n; q++) off += a[p * n + q]! * a[p * n + q]!;
    if (off <= 1e-30 * total || off === 0) break;
    for (let p = 0; p < n; p++) {
      for (let q = p + 1; q < n; q++) {
        const apq = a[p * n + q]!;
        if (apq === 0) continue;
        // rotation J in the (p, q) plane with tan φ = t chosen so that (JᵀAJ)[p, q] = 0
        const theta = (a[q * n + q]! - a[p * n + p]!) / (2 * apq);
        const t = Math.sign(theta || 1) / (Math.abs(theta) + Math.sqrt(theta * theta + 1));
        const c = 1 / Math.sqrt(t * t + 1);
        const s = t * c;
        for (let k = 0; k < n; k++) { // A ← A J (columns p, q)
          const akp = a[k * n + p]!;
          const akq = a[k * n + q]!;
          a[k * n + p] = c * akp - s * akq;
          a[k * n + q] = s * akp + c * akq;
        }
        for (let k = 0; k < n; k++) { // A ← Jᵀ A (rows p, q)
          const apk = a[p * n + k]!;
          const aqk = a[q * n + k]!;
          a[p * n + k] = c * apk - s * aqk;
          a[q * n + k] = s * apk + c * aqk;
        }
        for (let k = 0; k < n; k++) { // V ← V J
          const vkp = V[k * n + p]!;
          const vkq = V[k * n + q]!;
          V[k * n + p] = c * vkp - s * vkq;
          V[k * n + q] = s * vkp + c * vkq;
        }
      }
    }
  }
  const order = Array.from({ length: n }, (_, i) => i).sort((i, j) => a[j * n + j]! - a[i * n + i]!);
  return {
    values: Float64Array.from(order, (i) => a[i * n + i]!),
    vectors: order.map((i) => Float64Array.from({ length: n }, (_, k) => V[k * n + i]!)),
  };
}

/** The largest eigenvalue of a symmetric PSD matrix A [n, n] by power iteration (Rayleigh quotient). */
export function topEigenvalue(A: ArrayLike<number>, n: number, maxIter = 500, tol = 1e-10): number {
  let v: Vec = unit(Float64Array.from({ length: n }, (_, i) => 1 + Math.sin(i + 1)));
  let lambda = 0;
  for (let it = 0; it < maxIter; it++) {
    const Av = matVec(A, v, n, n);
    const next = dot(v, Av);
    const nv = norm(Av);
    if (nv === 0) return 0;
    v = scaled(Av, 1 / nv);
    if (Math.abs(next - lambda) <= tol * Math.abs(next)) return next;
    lambda = next;
  }
  return lambda;
}

/** The k principal directions of the rows of X [n, d] (population covariance), their variances and explained-variance ratios. */
export function pca(X: ArrayLike<number>, n: number, d: number, k: number): { components: Vec[]; variances: Vec; explainedRatio: Vec; totalVariance: number } {
  const S = covariance(X, n, d);
  let total = 0;
  for (let i = 0; i < d; i++) total += S[i * d + i]!;
  const e = symEig(S, d);
  const variances = e.values.slice(0, k).map((v) => Math.max(0, v));
  return {
    components: e.vectors.slice(0, k),
    variances,
    explainedRatio: variances.map((v) => (total > 0 ? v / total : 0)),
    totalVariance: total,
  };
}

/** Lower-triangular L with A = L Lᵀ for a symmetric positive definite A [n, n]; throws if A is not. */
export function cholesky(A: ArrayLike<number>, n: number): Vec {
  const L = new Float64Array(n * n);
  for (let i = 0; i < n; i++) {
    for (let j = 0; j <= i; j++) {
      let s = A[i * n + j]!;
      for (let k = 0; k < j; k++) s -= L[i * n + k]! * L[j * n + k]!;
      if (i === j) {
        if (!(s > 0)) throw new Error(`cholesky: matrix is not positive definite (pivot ${i} is ${s})`);
        L[i * n + i] = Math.sqrt(s);
      } else {
        L[i * n + j] = s / L[j * n + j]!;
      }
    }
  }
  return L;
}

/** y = L⁻¹ b for lower-triangular L [n, n] (forward substitution). */
export function solveLower(L: ArrayLike<number>, b: ArrayLike<number>, n: number): Vec {
  const y = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    let s = b[i]!;
    for (let k = 0; k < i; k++) s -= L[i * n + k]! * y[k]!;
    y[i] = s / L[i * n + i]!;
  }
  return y;
}

/** y = Lᵀ b for lower-triangular L [n, n]. */
export function mulLowerT(L: ArrayLike<number>, b: ArrayLike<number>, n: number): Vec {
  const y = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    let s = 0;
    for (let k = i; k < n; k++) s += L[k * n + i]! * b[k]!;
    y[i] = s;
  }
  return y;
}

/** Population variance (divides by n). */
export function variance(xs: ArrayLike<number>): number {
  const n = xs.length;
  let m = 0;
  for (let i = 0; i < n; i++) m += xs[i]!;
  m /= n;
  let s = 0;
  for (let i = 0; i < n; i++) s += (xs[i]! - m) ** 2;
  return s / n;
}
