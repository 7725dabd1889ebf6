/**
 * The non-matmul kernels of a GPT-2-small block at B·T = 8 × 128, d_model 768, one call each,
 * forward alone and forward + backward, against the same ops in PyTorch:
 *
 *   layerNorm    x [8, 128, 768], w, b [768]        (lnScale → lnNormalize → affineLast, as the model runs it)
 *   geluNew      x [8, 128, 768]                    (tanh approximation; torch: F.gelu(approximate="tanh"))
 *   softmax      x [8, 128, 768] over the last axis
 *   causalAttention  q, k, v [8, 128, 12, 64]       (scores → causal mask → softmax → z, fused; torch
 *                written out as HF GPT-2 does it: permute to heads, q·kᵀ/√Dh, where(mask), softmax,
 *                ·v, permute back to [B, T, C])
 *
 *   ours   the ops of src/tensor/ops on the active backend (native OpenBLAS unless SELFREPORT_BACKEND=js);
 *          forward under noGrad; forward + backward = op, then backward() with a fixed upstream
 *          gradient into inputs (and LayerNorm's w, b) that require grad, grads dropped between calls
 *   torch  one /usr/bin/python3 subprocess, torch.set_num_threads(2): forward under torch.no_grad();
 *          forward + backward = op, then out.backward(g), grads set to None between calls
 * Median of RUNS after WARMUP, per call; ours/torch is the ratio of speeds (> 1: we are faster).
 */
import { Tensor, noGrad, backward, layerNorm, geluNew, softmax, causalAttention, getBackend } from "../src/tensor/index.ts";
import type { BenchRow } from "./run.ts";
import { envCount, median, timeRuns, filledNormal, runTorch, isNumberArray, fmtMs, speedRatio, nodePeakRssMb, PYTHON, type TorchCommon } from "./util.ts";

const [B, T, C, H] = [8, 128, 768, 12];
const DH = C / H;
const WARMUP = 3;
/** BENCH_KERNELS_RUNS overrides the number of timed calls per op and pass (default 20). */
const RUNS = envCount("BENCH_KERNELS_RUNS", 20);

type KernelName = "layerNorm" | "geluNew" | "softmax" | "causalAttention";
const KERNELS: readonly KernelName[] = ["layerNorm", "geluNew", "softmax", "causalAttention"];
const SHAPE_OF: Record<KernelName, string> = {
  layerNorm: `[${B}, ${T}, ${C}]`,
  geluNew: `[${B}, ${T}, ${C}]`,
  softmax: `[${B}, ${T}, ${C}]`,
  causalAttention: `q, k, v [${B}, ${T}, ${H}, ${DH}]`,
};

/** One op on fresh inputs: the call itself, and the tensors whose grads it fills. */
interface Case {
  run: () => Tensor;
  leaves: Tensor[];
}

function makeCase(name: KernelName): Case {
  const x = new Tensor(filledNormal(B * T * C, 1), [B, T, C], true); //                 [B, T, C]
  switch (name) {
    case "layerNorm": {
      const w = new Tensor(filledNormal(C, 2, 0.1).map((v) => 1 + v), [C], true); //    [C]
      const b = new Tensor(filledNormal(C, 3, 0.1), [C], true); //                       [C]
      return { run: () => layerNorm(x, w, b, 1e-5), leaves: [x, w, b] };
    }
    case "geluNew":
      return { run: () => geluNew(x), leaves: [x] };
    case "softmax":
      return { run: () => softmax(x), leaves: [x] };
    case "causalAttention": {
      const [q, k, v] = [4, 5, 6].map((seed) => new Tensor(filledNormal(B * T * C, seed), [B, T, H, DH], true)) as [Tensor, Tensor, Tensor]; // [B, T, H, Dh]
      return { run: () => causalAttention(q, k, v), leaves: [q, k, v] };
    }
  }
}

/** Median seconds of [forward, forward + backward] for one op. */
function timeOurs(name: KernelName): [number, number] {
  const c = makeCase(name);
  const forward = median(timeRuns(() => void noGrad(c.run), WARMUP, RUNS));
  const gOut = filledNormal(B * T * C, 7); // upstream gradient, same size as every op's output
  const both = median(timeRuns(() => {
    for (const t of c.leaves) t.grad = null;
    backward(c.run(), gOut);
  }, WARMUP, RUNS));
  return [forward, both];
}

/** The torch side: prints {"version", "threads", "maxrss_kb", "forward": {op: [s...]}, "backward": {...}}. */
const TORCH_SCRIPT = `
import json, math, resource, sys, time
import torch
import torch.nn.functional as F
B, T, C, H, warmup, runs = (int(a) for a in sys.argv[1:7])
torch.set_num_threads(2)
torch.manual_seed(0)
DH = C // H
causal = torch.tril(torch.ones(T, T, dtype=torch.bool))[None, None]
def attention(q, k, v):
    q, k, v = (t.permute(0, 2, 1, 3) for t in (q, k, v))  # [B, H, T, Dh]
    s = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(DH)
    s = torch.where(causal, s, torch.tensor(torch.finfo(s.dtype).min))
    return torch.matmul(torch.softmax(s, dim=-1), v).permute(0, 2, 1, 3).reshape(B, T, C)
def case(name):
    x = torch.randn(B, T, C, requires_grad=True)
    if name == "layerNorm":
        w = (1 + 0.1 * torch.randn(C)).requires_grad_()
        b = (0.1 * torch.randn(C)).requires_grad_()
        return (lambda: F.layer_norm(x, (C,), w, b, 1e-5)), [x, w, b]
    if name == "geluNew": return (lambda: F.gelu(x, approximate="tanh")), [x]
    if name == "softmax": return (lambda: torch.softmax(x, dim=-1)), [x]
    q, k, v = (torch.randn(B, T, H, DH, requires_grad=True) for _ in range(3))
    return (lambda: attention(q, k, v)), [q, k, v]
def timed(fn):
    for _ in range(warmup): fn()
    ts = []
    for _ in range(runs):
        t0 = time.perf_counter(); fn(); ts.append(time.perf_counter() - t0)
    return ts
fwd, both = {}, {}
g = torch.randn(B, T, C)
for name in ["layerNorm", "geluNew", "softmax", "causalAttention"]:
    run, leaves = case(name)
    with torch.no_grad():
        fwd[name] = timed(run)
    def step():
        for t in leaves: t.grad = None
        run().backward(g)  # every output is [B, T, C] (attention's after the reshape)
    both[name] = timed(step)
print(json.dumps({"version": torch.__version__, "threads": torch.get_num_threads(), "forward": fwd, "backward": both,
                  "maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
`;

interface TorchKernels extends TorchCommon {
  forward: Record<string, number[]>;
  backward: Record<string, number[]>;
}

function validKernels(r: Record<string, unknown>): boolean {
  const ok = (o: unknown): boolean => typeof o === "object" && o !== null && KERNELS.every((k) => isNumberArray((o as Record<string, unknown>)[k]));
  return ok(r.forward) && ok(r.backward);
}

export async function benchKernels(): Promise<BenchRow[]> {
  const ours = new Map(KERNELS.map((k) => [k, timeOurs(k)] as const));
  const rssMb = nodePeakRssMb();
  const torch = runTorch<TorchKernels>(TORCH_SCRIPT, [B, T, C, H, WARMUP, RUNS], validKernels);
  console.log([
    `B·T = ${B} × ${T}, d_model ${C}, ${H} heads of ${DH}`,
    `backend ${getBackend().name}`,
    "error" in torch ? `torch: ${torch.error}` : `torch ${torch.version}, ${torch.threads} threads (${PYTHON})`,
    `median of ${RUNS} after ${WARMUP} warm-up`,
    "peak RSS: this section's process (all ops), torch's subprocess",
  ].join("; ") + "\n");
  const rows: BenchRow[] = [];
  for (const name of KERNELS) {
    const [fwd, both] = ours.get(name)!;
    for (const [pass, mine, theirs] of [
      ["forward", fwd, "error" in torch ? null : median(torch.forward[name]!)],
      ["forward + backward", both, "error" in torch ? null : median(torch.backward[name]!)],
    ] as const) {
      rows.push({
        op: name,
        shape: SHAPE_OF[name],
        pass,
        "ours ms": fmtMs(mine),
        "torch ms": theirs === null ? "n/a" : fmtMs(theirs),
        "ours/torch": speedRatio(mine, theirs),
        "peak RSS MB ours": rssMb.toFixed(0),
        "peak RSS MB torch": "error" in torch ? "n/a" : (torch.maxrss_kb / 1024).toFixed(0),
      });
    }
  }
  return rows;
}
