/**
 * A tiny seeded PRNG for tests (independent of src/tensor/random.ts, so tests do not depend on
 * the code they check).
 *
 *   const rng = mulberry32(42);   rng() → uniform float in [0, 1)
 *   randn(rng)                    → one standard normal sample (Box–Muller)
 *   randnArray(rng, n)            → Float32Array [n] of standard normals
 */

/** mulberry32: a 32-bit state generator; returns () → float in [0, 1). */
export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** One standard normal sample from `rng` (Box–Muller; 1 − u keeps the log finite). */
export function randn(rng: () => number): number {
  const u = 1 - rng();
  const v = rng();
  return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * v);
}

/** A Float32Array [n] of standard normals. */
export function randnArray(rng: () => number, n: number): Float32Array {
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = randn(rng);
  return out;
}
