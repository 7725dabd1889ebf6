/**
 * Ordinary least squares y = slope·x + intercept with t-based 95 % confidence intervals, and the
 * Student t quantile they need. Plain float64 math.
 *
 *   linearFit(x, y)     slope, intercept, R², standard errors, 95 % intervals (df = n − 2)
 *   tQuantile(p, df)    the p-quantile of Student's t with df degrees of freedom (exact, by bisection
 *                       on the CDF, which is a regularised incomplete beta function)
 */

export interface LinearFit {
  n: number;
  slope: number;
  intercept: number;
  /** 1 − SSE/SST; null when y does not vary. */
  r2: number | null;
  /** Standard errors (null when df < 1). */
  slope_se: number | null;
  intercept_se: number | null;
  /** Degrees of freedom n − 2. */
  df: number;
  /** The 0.975 quantile of t(df) the intervals use (null when df < 1). */
  t975: number | null;
  slope_ci95: [number, number] | null;
  intercept_ci95: [number, number] | null;
}

/** Sufficient statistics of (x, y) pairs; they add, so fits of pooled groups are cheap (bootstrap). */
export interface Moments {
  n: number;
  sx: number;
  sy: number;
  sxx: number;
  sxy: number;
  syy: number;
}

export function emptyMoments(): Moments {
  return { n: 0, sx: 0, sy: 0, sxx: 0, sxy: 0, syy: 0 };
}

export function addPair(m: Moments, x: number, y: number): void {
  m.n++;
  m.sx += x;
  m.sy += y;
  m.sxx += x * x;
  m.sxy += x * y;
  m.syy += y * y;
}

export function addMoments(into: Moments, m: Moments, times = 1): void {
  into.n += times * m.n;
  into.sx += times * m.sx;
  into.sy += times * m.sy;
  into.sxx += times * m.sxx;
  into.sxy += times * m.sxy;
  into.syy += times * m.syy;
}

/** OLS slope from moments; null when x does not vary (Sxx ≤ minSxx). */
export function slopeOf(m: Moments, minSxx = 0): number | null {
  if (m.n < 2) return null;
  const Sxx = m.sxx - (m.sx * m.sx) / m.n;
  if (!(Sxx > minSxx)) return null;
  return (m.sxy - (m.sx * m.sy) / m.n) / Sxx;
}

/**
 * The least-squares line through (x_i, y_i). Centred sums (two passes) for accuracy.
 * Returns null when n < 2 or x does not vary (Sxx ≤ minSxx).
 */
export function linearFit(x: ArrayLike<number>, y: ArrayLike<number>, minSxx = 0): LinearFit | null {
  const n = x.length;
  if (y.length !== n) throw new Error(`linearFit: ${n} x values but ${y.length} y values`);
  if (n < 2) return null;
  let mx = 0;
  let my = 0;
  for (let i = 0; i < n; i++) {
    mx += x[i]!;
    my += y[i]!;
  }
  mx /= n;
  my /= n;
  let Sxx = 0;
  let Sxy = 0;
  let Syy = 0;
  for (let i = 0; i < n; i++) {
    const dx = x[i]! - mx;
    const dy = y[i]! - my;
    Sxx += dx * dx;
    Sxy += dx * dy;
    Syy += dy * dy;
  }
  if (!(Sxx > minSxx)) return null;
  const slope = Sxy / Sxx;
  const intercept = my - slope * mx;
  const sse = Math.max(0, Syy - slope * Sxy);
  const df = n - 2;
  const r2 = Syy > 0 ? 1 - sse / Syy : null;
  if (df < 1) return { n, slope, intercept, r2, slope_se: null, intercept_se: null, df, t975: null, slope_ci95: null, intercept_ci95: null };
  const s2 = sse / df; // residual variance
  const slopeSe = Math.sqrt(s2 / Sxx);
  const interceptSe = Math.sqrt(s2 * (1 / n + (mx * mx) / Sxx));
  const t = tQuantile(0.975, df);
  return {
    n, slope, intercept, r2, slope_se: slopeSe, intercept_se: interceptSe, df, t975: t,
    slope_ci95: [slope - t * slopeSe, slope + t * slopeSe],
    intercept_ci95: [intercept - t * interceptSe, intercept + t * interceptSe],
  };
}

// ---------------------------------------------------------------------------------------------
// Student's t

/** ln Γ(x) for x > 0 (Lanczos, g = 7, 9 terms: ~15 significant digits). */
export function lnGamma(x: number): number {
  const c = [
    0.99999999999980993, 676.5203681218851, -1259.1392167224028, 771.32342877765313, -176.61502916214059,
    12.507343278686905, -0.13857109526572012, 9.9843695780195716e-6, 1.5056327351493116e-7,
  ];
  if (x < 0.5) return Math.log(Math.PI / Math.abs(Math.sin(Math.PI * x))) - lnGamma(1 - x);
  const z = x - 1;
  let a = c[0]!;
  const t = z + 7.5;
  for (let i = 1; i < 9; i++) a += c[i]! / (z + i);
  return 0.5 * Math.log(2 * Math.PI) + (z + 0.5) * Math.log(t) - t + Math.log(a);
}

/** Continued fraction of the incomplete beta function (modified Lentz, Numerical Recipes' betacf). */
function betaContinuedFraction(a: number, b: number, x: number): number {
  const tiny = 1e-300;
  let c = 1;
  let d = 1 - ((a + b) * x) / (a + 1);
  if (Math.abs(d) < tiny) d = tiny;
  d = 1 / d;
  let h = d;
  for (let m = 1; m <= 300; m++) {
    const m2 = 2 * m;
    let aa = (m * (b - m) * x) / ((a + m2 - 1) * (a + m2));
    d = 1 + aa * d;
    if (Math.abs(d) < tiny) d = tiny;
    c = 1 + aa / c;
    if (Math.abs(c) < tiny) c = tiny;
    d = 1 / d;
    h *= d * c;
    aa = (-(a + m) * (a + b + m) * x) / ((a + m2) * (a + m2 + 1));
    d = 1 + aa * d;
    if (Math.abs(d) < tiny) d = tiny;
    c = 1 + aa / c;
    if (Math.abs(c) < tiny) c = tiny;
    d = 1 / d;
    const del = d * c;
    h *= del;
    if (Math.abs(del - 1) < 1e-15) break;
  }
  return h;
}

/** The regularised incomplete beta function I_x(a, b). */
export function incompleteBeta(x: number, a: number, b: number): number {
  if (x <= 0) return 0;
  if (x >= 1) return 1;
  const lnFront = lnGamma(a + b) - lnGamma(a) - lnGamma(b) + a * Math.log(x) + b * Math.log(1 - x);
  // the continued fraction converges fast for x < (a+1)/(a+b+2); use the symmetry otherwise
  if (x < (a + 1) / (a + b + 2)) return (Math.exp(lnFront) * betaContinuedFraction(a, b, x)) / a;
  return 1 - (Math.exp(lnFront) * betaContinuedFraction(b, a, 1 - x)) / b;
}

/** P(T ≤ t) for Student's t with df degrees of freedom. */
export function tCdf(t: number, df: number): number {
  const tail = 0.5 * incompleteBeta(df / (df + t * t), df / 2, 0.5);
  return t >= 0 ? 1 - tail : tail;
}

/** The p-quantile of Student's t with df > 0 degrees of freedom (bisection to ~1e-12). */
export function tQuantile(p: number, df: number): number {
  if (!(p > 0 && p < 1)) throw new Error(`tQuantile: p must be in (0, 1), got ${p}`);
  if (!(df > 0)) throw new Error(`tQuantile: df must be positive, got ${df}`);
  if (p === 0.5) return 0;
  if (p < 0.5) return -tQuantile(1 - p, df);
  let lo = 0;
  let hi = 1;
  while (tCdf(hi, df) < p) hi *= 2;
  for (let i = 0; i < 200 && hi - lo > 1e-12 * Math.max(1, hi); i++) {
    const mid = (lo + hi) / 2;
    if (tCdf(mid, df) < p) lo = mid;
    else hi = mid;
  }
  return (lo + hi) / 2;
}
