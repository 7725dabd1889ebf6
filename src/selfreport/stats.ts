/**
 * Statistics of activations and of predictions: distribution summaries, quantile bin edges, and
 * the metrics a predictor is judged by (MSE, MAE, Pearson r, Spearman ρ, R²). Plain float64 math.
 */

export interface ActivationStats {
  count: number;
  mean: number;
  std: number;
  min: number;
  max: number;
  /** Quantiles at 1, 5, 25, 50, 75, 95, 99 %. */
  quantiles: Record<string, number>;
  /** Fraction of values with |value| < 0.05·(max − min) + 1e-6: a "near zero" measure that works for any scale. */
  frac_near_zero: number;
}

export function mean(xs: ArrayLike<number>): number {
  let s = 0;
  for (let i = 0; i < xs.length; i++) s += xs[i]!;
  return xs.length === 0 ? NaN : s / xs.length;
}

/** Population standard deviation (divides by n), as numpy's default. */
export function std(xs: ArrayLike<number>): number {
  const m = mean(xs);
  let s = 0;
  for (let i = 0; i < xs.length; i++) s += (xs[i]! - m) ** 2;
  return Math.sqrt(s / xs.length);
}

/** Linear-interpolated quantile (numpy's default "linear" method) of already sorted values. */
export function quantileSorted(sorted: ArrayLike<number>, q: number): number {
  const n = sorted.length;
  if (n === 0) return NaN;
  const pos = q * (n - 1);
  const lo = Math.floor(pos);
  const hi = Math.min(n - 1, lo + 1);
  return sorted[lo]! + (sorted[hi]! - sorted[lo]!) * (pos - lo);
}

function sortedCopy(xs: ArrayLike<number>): Float64Array {
  return Float64Array.from(xs as ArrayLike<number>).sort();
}

export function activationStats(xs: ArrayLike<number>): ActivationStats {
  const sorted = sortedCopy(xs);
  const min = sorted[0] ?? NaN;
  const max = sorted[sorted.length - 1] ?? NaN;
  const tol = 0.05 * (max - min) + 1e-6;
  let near = 0;
  for (let i = 0; i < xs.length; i++) if (Math.abs(xs[i]!) < tol) near++;
  const quantiles: Record<string, number> = {};
  for (const q of [1, 5, 25, 50, 75, 95, 99]) quantiles[`q${q}`] = quantileSorted(sorted, q / 100);
  return { count: xs.length, mean: mean(xs), std: std(xs), min, max, quantiles, frac_near_zero: near / Math.max(1, xs.length) };
}

/**
 * numBins + 1 quantile edges (0, 1/k, …, 1) of the values. Repeated edges (many equal values, e.g.
 * a sparse neuron's zeros) are nudged apart by a tiny epsilon so every bin has positive width.
 */
export function quantileBinEdges(xs: ArrayLike<number>, numBins: number): number[] {
  const sorted = sortedCopy(xs);
  const edges: number[] = [];
  for (let i = 0; i <= numBins; i++) edges.push(quantileSorted(sorted, i / numBins));
  const span = Math.max(1e-6, (edges[numBins]! - edges[0]!) * 1e-6);
  for (let i = 1; i <= numBins; i++) if (edges[i]! <= edges[i - 1]!) edges[i] = edges[i - 1]! + span;
  return edges;
}

/** Bin index of a value under edges (values below the first edge go to bin 0, above the last to the last bin). */
export function binOf(value: number, edges: readonly number[]): number {
  const k = edges.length - 1;
  let lo = 0;
  let hi = k - 1;
  // the largest i in [0, k-1] with edges[i] <= value
  while (lo < hi) {
    const mid = (lo + hi + 1) >> 1;
    if (edges[mid]! <= value) lo = mid;
    else hi = mid - 1;
  }
  return lo;
}

/** Midpoints of the bins. */
export function binCentres(edges: readonly number[]): number[] {
  const c: number[] = [];
  for (let i = 0; i + 1 < edges.length; i++) c.push((edges[i]! + edges[i + 1]!) / 2);
  return c;
}

export function pearson(a: ArrayLike<number>, b: ArrayLike<number>): number {
  const ma = mean(a);
  const mb = mean(b);
  let sab = 0;
  let saa = 0;
  let sbb = 0;
  for (let i = 0; i < a.length; i++) {
    const da = a[i]! - ma;
    const db = b[i]! - mb;
    sab += da * db;
    saa += da * da;
    sbb += db * db;
  }
  return saa === 0 || sbb === 0 ? 0 : sab / Math.sqrt(saa * sbb);
}

/** Ranks with ties given their average rank (1-based). */
export function ranks(xs: ArrayLike<number>): Float64Array {
  const idx = Array.from({ length: xs.length }, (_, i) => i).sort((i, j) => xs[i]! - xs[j]!);
  const r = new Float64Array(xs.length);
  let i = 0;
  while (i < idx.length) {
    let j = i;
    while (j + 1 < idx.length && xs[idx[j + 1]!] === xs[idx[i]!]) j++;
    const avg = (i + j) / 2 + 1;
    for (let k = i; k <= j; k++) r[idx[k]!] = avg;
    i = j + 1;
  }
  return r;
}

export function spearman(a: ArrayLike<number>, b: ArrayLike<number>): number {
  return pearson(ranks(a), ranks(b));
}

export interface RegressionMetrics {
  n: number;
  mse: number;
  mae: number;
  pearson_r: number;
  spearman_rho: number;
  r2: number;
}

/** Metrics of predictions against targets. R² = 1 − SSE/SST with SST around the targets' own mean. */
export function regressionMetrics(pred: ArrayLike<number>, target: ArrayLike<number>): RegressionMetrics {
  const n = target.length;
  let sse = 0;
  let sae = 0;
  const mt = mean(target);
  let sst = 0;
  for (let i = 0; i < n; i++) {
    const d = pred[i]! - target[i]!;
    sse += d * d;
    sae += Math.abs(d);
    sst += (target[i]! - mt) ** 2;
  }
  return {
    n,
    mse: sse / n,
    mae: sae / n,
    pearson_r: pearson(pred, target),
    spearman_rho: spearman(pred, target),
    r2: sst === 0 ? 0 : 1 - sse / sst,
  };
}
