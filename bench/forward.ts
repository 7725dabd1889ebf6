/**
 * GPT-2-small forward throughput: tokens per second of HookedTransformer.runWithCache at batch 8 × 128
 * positions under noGrad, caching `blocks.6.mlp.hook_post` (what a neuron-reading analysis does), against
 * the same-shaped GPT-2 forward in PyTorch.
 *
 *   ours    HookedTransformer.init (random weights: 12 layers, d_model 768, 12 heads, d_mlp 3072,
 *           n_ctx 1024, vocab 50257, tied), raw weights; median of RUNS after WARMUP; logits included
 *   torch   one /usr/bin/python3 subprocess, torch.set_num_threads(2), torch.no_grad(): a random torch
 *           model of the same shape running HF's GPT-2 math (Conv1D as addmm, q·kᵀ/√Dh with a causal
 *           mask, softmax, HF's gelu_new formula, tied lm_head); only throughput is compared, so the
 *           weights need not match (torch 1.13 cannot read safetensors anyway). Same batch, runs, warm-up.
 *   ours/torch  ratio of tokens/s (> 1: we are faster). "n/a" when torch is not importable.
 * Peak RSS: process.resourceUsage().maxRSS of this section's Node process (run.ts runs each section
 * in a child), and the subprocess's ru_maxrss for torch.
 * Roofline: matmul FLOPs of the forward (bench/flops.ts: 12 blocks + the unembedding) ÷ seconds, as a
 * fraction of the reference sgemm GFLOP/s measured right before each timed run (util.ts timeRunsPaired);
 * ours' fraction is the median of the per-run fractions. Target ≥ 85 %.
 */
import { spawnSync } from "node:child_process";
import { noGrad } from "../src/tensor/index.ts";
import { getBackend } from "../src/tensor/backend/index.ts";
import { makeConfig } from "../src/model/config.ts";
import { HookedTransformer, type TokenBatch } from "../src/model/transformer.ts";
import type { BenchRow } from "./run.ts";
import { PYTHON, envCount, nodePeakRssMb, sgemmRefText, forwardRows, timeRunsPaired, pairedSummary, type PairedRuns } from "./util.ts";
import { forwardFlops } from "./flops.ts";

const BATCH = 8;
const POS = 128;
const WARMUP = 2;
/** BENCH_FORWARD_RUNS overrides the number of timed runs (default 7). */
const RUNS = envCount("BENCH_FORWARD_RUNS", 7);
const CACHED = "blocks.6.mlp.hook_post";
const SIZES = { nLayers: 12, dModel: 768, nHeads: 12, nCtx: 1024, dVocab: 50257 };

/** Token ids from a fixed LCG (values do not matter for speed). */
function tokens(): TokenBatch {
  const ids = new Int32Array(BATCH * POS);
  let s = 12345;
  for (let i = 0; i < ids.length; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    ids[i] = s % SIZES.dVocab;
  }
  return { ids, batch: BATCH, len: POS };
}

/** The torch side: prints {"version", "threads", "seconds": [...], "maxrss_kb"} as JSON. */
const TORCH_SCRIPT = `
import json, math, resource, sys, time
import torch
L, C, H, NCTX, V, B, T, warmup, runs = (int(a) for a in sys.argv[1:10])
torch.set_num_threads(2)
torch.manual_seed(0)
M, DH = 4 * C, C // H
def r(*s): return torch.randn(*s) * 0.02
wte, wpe = r(V, C), r(NCTX, C)
layers = [dict(ln1w=torch.ones(C), ln1b=torch.zeros(C), attn_w=r(C, 3 * C), attn_b=torch.zeros(3 * C), proj_w=r(C, C), proj_b=torch.zeros(C),
               ln2w=torch.ones(C), ln2b=torch.zeros(C), fc_w=r(C, M), fc_b=torch.zeros(M), out_w=r(M, C), out_b=torch.zeros(C)) for _ in range(L)]
lnfw, lnfb = torch.ones(C), torch.zeros(C)
causal = torch.tril(torch.ones(NCTX, NCTX, dtype=torch.bool))
def conv1d(x, w, b): return torch.addmm(b, x.reshape(-1, x.shape[-1]), w).reshape(*x.shape[:-1], -1)
def gelu_new(x): return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3.0))))
def heads(x): return x.view(B, T, H, DH).permute(0, 2, 1, 3)
def forward(ids):
    x = wte[ids] + wpe[:T][None]
    mask = causal[None, None, :T, :T]
    cached = None
    for i, p in enumerate(layers):
        a = torch.nn.functional.layer_norm(x, (C,), p["ln1w"], p["ln1b"], 1e-5)
        q, k, v = conv1d(a, p["attn_w"], p["attn_b"]).split(C, dim=2)
        s = torch.matmul(heads(q), heads(k).transpose(-1, -2)) / math.sqrt(DH)
        s = torch.where(mask, s, torch.tensor(torch.finfo(s.dtype).min))
        z = torch.matmul(torch.softmax(s, dim=-1), heads(v)).permute(0, 2, 1, 3).reshape(B, T, C)
        x = x + conv1d(z, p["proj_w"], p["proj_b"])
        post = gelu_new(conv1d(torch.nn.functional.layer_norm(x, (C,), p["ln2w"], p["ln2b"], 1e-5), p["fc_w"], p["fc_b"]))
        if i == 6: cached = post
        x = x + conv1d(post, p["out_w"], p["out_b"])
    return torch.matmul(torch.nn.functional.layer_norm(x, (C,), lnfw, lnfb, 1e-5), wte.T), cached
ids = torch.randint(0, V, (B, T))
with torch.no_grad():
    for _ in range(warmup): forward(ids)
    ts = []
    for _ in range(runs):
        t0 = time.perf_counter(); forward(ids); ts.append(time.perf_counter() - t0)
print(json.dumps({"version": torch.__version__, "threads": torch.get_num_threads(), "seconds": ts,
                  "maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
`;

interface TorchResult { version: string; threads: number; seconds: number[]; maxrss_kb: number }

function isTorchResult(x: unknown): x is TorchResult {
  if (typeof x !== "object" || x === null) return false;
  const r = x as Record<string, unknown>;
  return typeof r.version === "string" && typeof r.threads === "number" && typeof r.maxrss_kb === "number" &&
    Array.isArray(r.seconds) && r.seconds.every((s) => typeof s === "number");
}

/** torch's timings, or the reason it could not be measured. */
function timeTorch(): TorchResult | { error: string } {
  const probe = spawnSync(PYTHON, ["-c", "import torch"], { encoding: "utf8" });
  if (probe.status !== 0) return { error: `${PYTHON} cannot import torch` };
  const { nLayers, dModel, nHeads, nCtx, dVocab } = SIZES;
  const args = [nLayers, dModel, nHeads, nCtx, dVocab, BATCH, POS, WARMUP, RUNS].map(String);
  const run = spawnSync(PYTHON, ["-c", TORCH_SCRIPT, ...args], { encoding: "utf8", maxBuffer: 1 << 20 });
  if (run.status !== 0) return { error: `torch script failed: ${run.stderr.trim().split("\n").pop() ?? ""}` };
  let parsed: unknown = null;
  try {
    parsed = JSON.parse(run.stdout);
  } catch {
    // reported below
  }
  return isTorchResult(parsed) ? parsed : { error: `torch script printed ${run.stdout.trim().slice(0, 200)}` };
}

/** Seconds of each timed forward (runWithCache, noGrad) after warm-up, each paired with a reference sgemm burst. */
function timeOurs(model: HookedTransformer, batch: TokenBatch): PairedRuns {
  const once = (): void => {
    const { logits, cache } = noGrad(() => model.runWithCache(batch, [CACHED]));
    if (logits === null || !cache.has(CACHED)) throw new Error("bench forward: no logits or cache");
  };
  return timeRunsPaired(once, WARMUP, RUNS);
}

export async function benchForward(): Promise<BenchRow[]> {
  const model = HookedTransformer.init(makeConfig(SIZES), 0);
  const flops = forwardFlops({ nLayers: SIZES.nLayers, dModel: SIZES.dModel, dMlp: 4 * SIZES.dModel, dVocab: SIZES.dVocab }, BATCH, POS, { unembed: true });
  const { seconds: ours, ref, pct } = pairedSummary(timeOurs(model, tokens()), flops);
  const rssMb = nodePeakRssMb();
  const torch = timeTorch();
  console.log([
    `GPT-2 small shapes (12 × 768, 12 heads, d_mlp 3072, vocab 50257), batch ${BATCH} × ${POS}, caching ${CACHED}`,
    `backend ${getBackend().name}`,
    "error" in torch ? `torch: ${torch.error}` : `torch ${torch.version}, ${torch.threads} threads (${PYTHON})`,
    `median of ${RUNS} after ${WARMUP} warm-up`,
    `${(flops / 1e9).toFixed(0)} GFLOP of matmuls per batch; ${sgemmRefText(ref)}`,
  ].join("; ") + "\n");
  return forwardRows({ tokensPerBatch: BATCH * POS, oursSeconds: ours, oursRssMb: rssMb, flops, refGflops: ref.gflops, oursPct: pct, targetPct: 85, torch });
}
