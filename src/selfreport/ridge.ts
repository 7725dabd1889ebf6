/**
 * The exact solver for frozen linear regression heads: closed-form ridge regression on the cached
 * features, the penalty chosen on the validation split.
 *
 * For each neuron k, with the training split's features x_i [C] and standardised targets y_ik
 * (the labels the AdamW trainer fits: (a − mean)/std), the head output.weight w_k [C], output.bias b_k is
 *   minimise  (1/n) Σ_i (y_ik − x_i·w_k − b_k)² + λ_k ‖w_k‖²       (the intercept is not penalised)
 *   ⇔  (S + λ_k I) w_k = c_k,   b_k = ȳ_k − x̄·w_k
 * with x̄, ȳ_k the training means, S = X̃ᵀX̃/n [C, C] the population covariance of the centred
 * training features and c_k = X̃ᵀỹ_k/n. Features are centred, not standardised: w and b are the head's
 * own weights in the units it reads, so head.safetensors, predict and the analyses need nothing new.
 *
 * Penalty grid: λ = α · tr(S)/C (α times the mean eigenvalue of S) for α = 10^-8, 10^-7.5, …, 10^2
 * (21 values, RIDGE_ALPHAS). Each neuron takes the λ with the lowest validation MSE (standardised);
 * ties go to the larger λ.
 *
 * One eigendecomposition S = V diag(s) Vᵀ (float64, symEig) serves every λ and every neuron:
 * w_k(λ) = V · (z_k ⊘ (s + λ)) with z_k = Vᵀ c_k. The basis (means, V, s, the validation rows
 * projected on V) depends only on the features and the splits, so a sweep computes it once and
 * reuses it for every layer (ridgeBasis, then ridgeFit per group of neurons).
 *
 * Precision: S, c, z and the weights are float64 (plain JS loops); only the validation predictions
 * used to compare the grid's penalties go through sgemm in float32 (the choice of λ; the reported
 * metrics are recomputed from the stored float32 head, as for AdamW).
 */
import { getBackend } from "../tensor/index.ts";
import { symEig } from "../analysis/linalg.ts";
import { SelfreportError } from "../errors.ts";

export const SOLVERS = ["ridge", "adamw"] as const;
export type Solver = (typeof SOLVERS)[number];

/** α of λ = α · tr(S)/C: 10^-8 … 10^2 in half decades. */
export const RIDGE_ALPHAS: readonly number[] = Array.from({ length: 21 }, (_, j) => Math.pow(10, -8 + 0.5 * j));

/** What a frozen linear regression head trains with unless told: ridge; everything else only has AdamW. */
export function defaultSolver(o: { head: string; freeze: string; hiddenDim: number | null; dropout?: number }): Solver {
  return ridgeApplies(o) === null ? "ridge" : "adamw";
}

/** null when the ridge solver applies to these options, else the reason it does not (for one error line). */
export function ridgeApplies(o: { head: string; freeze: string; hiddenDim: number | null; dropout?: number }): string | null {
  if (o.head !== "regression") return `the ridge solver fits linear regression heads only, not --head ${o.head}; use --solver adamw`;
  if (o.freeze !== "frozen") return `the ridge solver needs fixed features (--freeze frozen), not --freeze ${o.freeze}; use --solver adamw`;
  if (o.hiddenDim !== null) return `the ridge solver fits a linear head; --hidden-dim ${o.hiddenDim} needs --solver adamw`;
  if ((o.dropout ?? 0) > 0) return `the ridge solver has no dropout; --dropout ${o.dropout} needs --solver adamw`;
  return null;
}

/** Everything about the features and splits that every neuron's solve shares. */
export interface RidgeBasis {
  C: number;
  /** Training rows and validation rows (indices into the feature matrix). */
  train: number[];
  val: number[];
  /** Training feature means [C]. */
  mean: Float64Array;
  /** Eigenvalues of S (clamped at 0) [C] and eigenvectors as the columns of V [C, C] (row-major). */
  s: Float64Array;
  V: Float64Array;
  /** The penalties of the grid: λ_j = α_j · tr(S)/C. */
  lambdas: Float64Array;
  alphas: readonly number[];
  /** The centred training features, transposed: [C, nTrain] (column c of X̃ contiguous). */
  XtT: Float64Array;
  /** The validation rows centred by the training mean, projected on V: [nVal, C], float32 for sgemm. */
  valProj: Float32Array;
}

/** The basis of features X [n, C] (row-major float32) for the given training/validation rows. */
export function ridgeBasis(X: Float32Array, C: number, train: readonly number[], val: readonly number[], alphas: readonly number[] = RIDGE_ALPHAS): RidgeBasis {
  const n = train.length;
  if (n === 0 || val.length === 0) throw new SelfreportError(`ridge: needs training and validation examples, got ${n} and ${val.length}`);
  if (alphas.length === 0 || alphas.some((a) => !(a >= 0) || !Number.isFinite(a))) throw new SelfreportError(`ridge: the penalty grid must be non-negative numbers, got [${alphas.join(", ")}]`);
  const mean = new Float64Array(C);
  for (const i of train) for (let c = 0; c < C; c++) mean[c]! += X[i * C + c]!;
  for (let c = 0; c < C; c++) mean[c]! /= n;
  const XtT = new Float64Array(C * n);
  train.forEach((i, r) => {
    for (let c = 0; c < C; c++) XtT[c * n + r] = X[i * C + c]! - mean[c]!;
  });
  // S = X̃ᵀX̃ / n
  const S = crossTT(XtT, C, XtT, C, n);
  for (let i = 0; i < C * C; i++) S[i]! /= n;
  let trace = 0;
  for (let c = 0; c < C; c++) trace += S[c * C + c]!;
  const eig = symEig(S, C);
  const s = Float64Array.from(eig.values, (v) => Math.max(0, v));
  const V = new Float64Array(C * C);
  eig.vectors.forEach((v, j) => {
    for (let c = 0; c < C; c++) V[c * C + j] = v[c]!;
  });
  const lambdas = Float64Array.from(alphas, (a) => (a * trace) / C);
  const nv = val.length;
  const valProj = new Float32Array(nv * C);
  const row = new Float64Array(C);
  const proj = new Float64Array(C);
  val.forEach((i, r) => {
    for (let c = 0; c < C; c++) row[c] = X[i * C + c]! - mean[c]!;
    proj.fill(0);
    for (let c = 0; c < C; c++) {
      const x = row[c]!;
      const o = c * C;
      for (let j = 0; j < C; j++) proj[j]! += x * V[o + j]!;
    }
    for (let j = 0; j < C; j++) valProj[r * C + j] = proj[j]!;
  });
  return { C, train: [...train], val: [...val], mean, s, V, lambdas, alphas: [...alphas], XtT, valProj };
}

/**
 * out [p, q] = Aᵀ-rows · Bᵀ-rows: out[a, b] = Σ_r AT[a, r] · BT[b, r] for AT [p, n], BT [q, n]
 * (both "transposed": one feature per contiguous row), float64, 2×2 register blocks.
 */
function crossTT(AT: Float64Array, p: number, BT: Float64Array, q: number, n: number): Float64Array {
  const out = new Float64Array(p * q);
  const sym = AT === BT && p === q;
  for (let a = 0; a < p; a += 2) {
    const a2 = a + 1 < p;
    const oa = a * n;
    const ob = (a + 1) * n;
    for (let b = sym ? a - (a % 2) : 0; b < q; b += 2) {
      const b2 = b + 1 < q;
      const o0 = b * n;
      const o1 = (b + 1) * n;
      let s00 = 0, s01 = 0, s10 = 0, s11 = 0;
      if (a2 && b2) {
        for (let r = 0; r < n; r++) {
          const x0 = AT[oa + r]!;
          const x1 = AT[ob + r]!;
          const y0 = BT[o0 + r]!;
          const y1 = BT[o1 + r]!;
          s00 += x0 * y0;
          s01 += x0 * y1;
          s10 += x1 * y0;
          s11 += x1 * y1;
        }
      } else {
        for (let r = 0; r < n; r++) {
          const x0 = AT[oa + r]!;
          const x1 = a2 ? AT[ob + r]! : 0;
          const y0 = BT[o0 + r]!;
          const y1 = b2 ? BT[o1 + r]! : 0;
          s00 += x0 * y0;
          s01 += x0 * y1;
          s10 += x1 * y0;
          s11 += x1 * y1;
        }
      }
      out[a * q + b] = s00;
      if (b2) out[a * q + b + 1] = s01;
      if (a2) {
        out[(a + 1) * q + b] = s10;
        if (b2) out[(a + 1) * q + b + 1] = s11;
      }
      if (sym) {
        out[b * q + a] = s00;
        if (a2) out[b * q + a + 1] = s10;
        if (b2) {
          out[(b + 1) * q + a] = s01;
          if (a2) out[(b + 1) * q + a + 1] = s11;
        }
      }
    }
  }
  return out;
}

export interface RidgeFit {
  /** output.weight of each neuron [K, C] and output.bias [K], float64 (standardised target units). */
  W: Float64Array;
  b: Float64Array;
  /** Per neuron: index into the grid of the chosen penalty, λ, α and its validation MSE. */
  choice: Int32Array;
  lambda: Float64Array;
  alpha: Float64Array;
  valLoss: Float64Array;
  /** Validation MSE of every (grid point, neuron): [G, K]. */
  gridValLoss: Float64Array;
}

/** Neurons per block of the float64 cross product (bounds the transposed targets to blockK · nTrain values). */
const BLOCK_K = 128;

/**
 * Ridge heads for K targets Y [n, K] (row-major; the standardised labels of every example, only the
 * basis's training and validation rows are read), one λ per neuron chosen on the validation rows.
 */
export function ridgeFit(basis: RidgeBasis, Y: Float32Array, K: number): RidgeFit {
  const { C, train, val, mean, s, V, lambdas, XtT, valProj } = basis;
  const n = train.length;
  const nv = val.length;
  const G = lambdas.length;
  let lastRow = 0;
  for (const i of train) lastRow = Math.max(lastRow, i);
  for (const i of val) lastRow = Math.max(lastRow, i);
  if (!Number.isInteger(K) || K < 1 || Y.length % K !== 0 || Y.length / K <= lastRow) throw new SelfreportError(`ridge: targets have ${Y.length} values, too few for ${K} neurons and the split's rows`);
  // ---- training means ȳ and z = Vᵀ c (c = X̃ᵀỹ / n; ỹ need not be centred: X̃ has zero column sums)
  const ybar = new Float64Array(K);
  for (const i of train) for (let k = 0; k < K; k++) ybar[k]! += Y[i * K + k]!;
  for (let k = 0; k < K; k++) ybar[k]! /= n;
  const Z = new Float64Array(C * K); // [C, K]
  const YT = new Float64Array(Math.min(K, BLOCK_K) * n);
  for (let k0 = 0; k0 < K; k0 += BLOCK_K) {
    const kb = Math.min(BLOCK_K, K - k0);
    train.forEach((i, r) => {
      for (let a = 0; a < kb; a++) YT[a * n + r] = Y[i * K + k0 + a]! - ybar[k0 + a]!;
    });
    const c = crossTT(XtT, C, YT, kb, n); // [C, kb]
    // Z[:, k0 … k0+kb) = Vᵀ c / n  (row j of Vᵀ is eigenvector j)
    const zj = new Float64Array(kb);
    for (let j = 0; j < C; j++) {
      zj.fill(0);
      for (let cc = 0; cc < C; cc++) {
        const v = V[cc * C + j]!;
        const o = cc * kb;
        for (let a = 0; a < kb; a++) zj[a]! += v * c[o + a]!;
      }
      for (let a = 0; a < kb; a++) Z[j * K + k0 + a] = zj[a]! / n;
    }
  }
  // ---- validation MSE of every penalty: pred = ȳ + valProj · (z ⊘ (s + λ))
  const be = getBackend();
  const U = new Float32Array(C * K);
  const P = new Float32Array(nv * K);
  const gridValLoss = new Float64Array(G * K);
  const yv = new Float64Array(nv * K);
  val.forEach((i, r) => {
    for (let k = 0; k < K; k++) yv[r * K + k] = Y[i * K + k]! - ybar[k]!;
  });
  for (let g = 0; g < G; g++) {
    const lam = lambdas[g]!;
    for (let j = 0; j < C; j++) {
      const d = s[j]! + lam;
      const inv = d > 0 ? 1 / d : 0;
      for (let k = 0; k < K; k++) U[j * K + k] = Z[j * K + k]! * inv;
    }
    be.sgemm(false, false, nv, K, C, 1, valProj, C, U, K, 0, P, K);
    const off = g * K;
    for (let r = 0; r < nv; r++) {
      for (let k = 0; k < K; k++) {
        const e = P[r * K + k]! - yv[r * K + k]!;
        gridValLoss[off + k]! += e * e;
      }
    }
    for (let k = 0; k < K; k++) gridValLoss[off + k]! /= nv;
  }
  // ---- per neuron: the best penalty (scanning from the largest, so ties keep the larger λ), then w = V u, b = ȳ − x̄·w
  const choice = new Int32Array(K);
  const W = new Float64Array(K * C);
  const b = new Float64Array(K);
  const lambda = new Float64Array(K);
  const alpha = new Float64Array(K);
  const valLoss = new Float64Array(K);
  const u = new Float64Array(C);
  for (let k = 0; k < K; k++) {
    let best = G - 1;
    for (let g = G - 2; g >= 0; g--) if (gridValLoss[g * K + k]! < gridValLoss[best * K + k]!) best = g;
    choice[k] = best;
    const lam = lambdas[best]!;
    lambda[k] = lam;
    alpha[k] = basis.alphas[best]!;
    valLoss[k] = gridValLoss[best * K + k]!;
    for (let j = 0; j < C; j++) {
      const d = s[j]! + lam;
      u[j] = d > 0 ? Z[j * K + k]! / d : 0;
    }
    let xw = 0;
    for (let c = 0; c < C; c++) {
      let acc = 0;
      for (let j = 0; j < C; j++) acc += V[c * C + j]! * u[j]!;
      W[k * C + c] = acc;
      xw += mean[c]! * acc;
    }
    b[k] = ybar[k]! - xw;
  }
  return { W, b, choice, lambda, alpha, valLoss, gridValLoss };
}

/** The grid, as the run's config and the log state it. */
export const RIDGE_GRID_TEXT = "λ = α · tr(S)/C for α = 10^-8, 10^-7.5, …, 10^2 (S: covariance of the centred training features)";
