/**
 * Optimizers and schedules: AdamW (decoupled weight decay, as torch.optim.AdamW), SGD with
 * momentum, global-norm gradient clipping, and linear warm-up followed by cosine decay.
 */
import type { Tensor } from "./tensor.ts";
import { getBackend } from "./backend/index.ts";

export interface Optimizer {
  /** Applies one update with learning rate `lr` to every parameter that has a gradient. */
  step(lr: number): void;
  zeroGrad(): void;
  /** Optimizer state for checkpoints: named Float32Arrays plus the step count. */
  state(): { step: number; buffers: Map<string, Float32Array> };
  loadState(state: { step: number; buffers: Map<string, Float32Array> }): void;
}

export interface AdamWOptions {
  beta1?: number;
  beta2?: number;
  eps?: number;
  weightDecay?: number;
  /** Parameters (by index in the params list) that get no weight decay, e.g. biases and LayerNorm. */
  noDecay?: ReadonlySet<Tensor>;
}

export function adamW(params: readonly Tensor[], opts: AdamWOptions = {}): Optimizer {
  const b1 = opts.beta1 ?? 0.9;
  const b2 = opts.beta2 ?? 0.999;
  const eps = opts.eps ?? 1e-8;
  const wd = opts.weightDecay ?? 0.01;
  const m = params.map((p) => new Float32Array(p.size));
  const v = params.map((p) => new Float32Array(p.size));
  let t = 0;
  return {
    step(lr: number): void {
      t++;
      const bc1 = 1 - Math.pow(b1, t);
      const bc2 = 1 - Math.pow(b2, t);
      const be = getBackend();
      params.forEach((p, i) => {
        if (p.grad === null) return;
        const decay = opts.noDecay?.has(p) ? 0 : wd;
        be.adamwUpdate(p.data, p.grad, m[i]!, v[i]!, p.size, lr, b1, b2, eps, 1 - lr * decay, bc1, bc2);
      });
    },
    zeroGrad(): void {
      for (const p of params) if (p.grad) p.grad.fill(0);
    },
    state() {
      const buffers = new Map<string, Float32Array>();
      params.forEach((_, i) => {
        buffers.set(`m.${i}`, m[i]!);
        buffers.set(`v.${i}`, v[i]!);
      });
      return { step: t, buffers };
    },
    loadState(state): void {
      t = state.step;
      params.forEach((p, i) => {
        for (const [name, arr] of [[`m.${i}`, m[i]!], [`v.${i}`, v[i]!]] as const) {
          const src = state.buffers.get(name);
          if (!src || src.length !== p.size) throw new Error(`AdamW: optimizer state "${name}" is missing or has the wrong size for parameter ${i} (${p.size} elements)`);
          arr.set(src);
        }
      });
    },
  };
}

export interface SgdOptions {
  momentum?: number;
  weightDecay?: number;
}

export function sgd(params: readonly Tensor[], opts: SgdOptions = {}): Optimizer {
  const mu = opts.momentum ?? 0;
  const wd = opts.weightDecay ?? 0;
  const buf = params.map((p) => new Float32Array(p.size));
  let t = 0;
  return {
    step(lr: number): void {
      t++;
      params.forEach((p, i) => {
        const g = p.grad;
        if (g === null) return;
        const P = p.data;
        const B = buf[i]!;
        for (let j = 0; j < P.length; j++) {
          const gj = g[j]! + wd * P[j]!;
          B[j] = mu * B[j]! + gj;
          P[j]! -= lr * (mu === 0 ? gj : B[j]!);
        }
      });
    },
    zeroGrad(): void {
      for (const p of params) if (p.grad) p.grad.fill(0);
    },
    state() {
      return { step: t, buffers: new Map(params.map((_, i) => [`momentum.${i}`, buf[i]!] as const)) };
    },
    loadState(state): void {
      t = state.step;
      params.forEach((p, i) => {
        const src = state.buffers.get(`momentum.${i}`);
        if (!src || src.length !== p.size) throw new Error(`SGD: optimizer state "momentum.${i}" is missing or has the wrong size`);
        buf[i]!.set(src);
      });
    },
  };
}

/** Scales all gradients so that their global L2 norm is at most maxNorm. Returns the norm before clipping. */
export function clipGradNorm(params: readonly Tensor[], maxNorm: number): number {
  const be = getBackend();
  let ss = 0;
  for (const p of params) if (p.grad !== null) ss += be.sumSquares(p.grad, p.grad.length);
  const norm = Math.sqrt(ss);
  if (maxNorm > 0 && norm > maxNorm) {
    const k = maxNorm / (norm + 1e-6);
    for (const p of params) if (p.grad !== null) be.scaleInPlace(p.grad, p.grad.length, k);
  }
  return norm;
}

export interface ScheduleOptions {
  /** Peak learning rate, reached at the end of warm-up. */
  lr: number;
  warmupSteps: number;
  totalSteps: number;
  /** Final learning rate as a fraction of the peak (default 0.1). */
  minRatio?: number;
}

/** Linear warm-up from ~0 to lr over warmupSteps, then cosine decay to lr·minRatio at totalSteps. */
export function warmupCosine(o: ScheduleOptions): (step: number) => number {
  const minLr = o.lr * (o.minRatio ?? 0.1);
  return (step: number): number => {
    if (step < o.warmupSteps) return (o.lr * (step + 1)) / o.warmupSteps;
    if (step >= o.totalSteps) return minLr;
    const progress = (step - o.warmupSteps) / Math.max(1, o.totalSteps - o.warmupSteps);
    return minLr + 0.5 * (o.lr - minLr) * (1 + Math.cos(Math.PI * progress));
  };
}
