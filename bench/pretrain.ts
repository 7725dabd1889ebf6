/**
 * Pre-training throughput: tokens per second of one full training step (forward, next-token
 * cross-entropy over the whole vocabulary, backward, gradient clipping, AdamW update) for the shipped
 * model's shape, against the same step in PyTorch.
 *
 *   shape  4 layers, d_model 128, 4 heads, d_mlp 512, n_ctx 128, vocab 50257, tied embeddings;
 *          batch 16 × 128 tokens (PRETRAIN_DEFAULTS of src/lm/pretrain.ts)
 *   ours   the step of src/lm/pretrain.ts: sampleWindows from a random token stream,
 *          model.nextTokenLoss (fused unembedding + cross-entropy), loss.item(), zeroGrad, backward,
 *          clipGradNorm(1.0), AdamW (β 0.9/0.95, weight decay 0.1 except on 1-d tensors, b_U frozen)
 *   torch  one /usr/bin/python3 subprocess, torch.set_num_threads(2): HF GPT-2 math written out in
 *          plain torch (as bench/forward.ts), logits = ln_f(x)·wteᵀ [B·T, V], F.cross_entropy,
 *          loss.item(), backward, clip_grad_norm_(1.0), torch.optim.AdamW with the same settings
 * Median of RUNS steps after WARMUP; ours/torch is the ratio of tokens/s (> 1: we are faster).
 * Roofline: 3 × the forward's matmul FLOPs (bench/flops.ts: 4 blocks + the unembedding; every weight
 * trains) ÷ seconds, as a fraction of the reference sgemm GFLOP/s measured right before each timed step
 * (util.ts timeRunsPaired); ours' fraction is the median of the per-step fractions. Target ≥ 75 %.
 * Peak RSS: this section's Node process (run.ts runs each section in a child) and torch's subprocess.
 */
import { Rng, backward, adamW, clipGradNorm, getBackend } from "../src/tensor/index.ts";
import { makeConfig } from "../src/model/config.ts";
import { HookedTransformer } from "../src/model/transformer.ts";
import { sampleWindows, PRETRAIN_DEFAULTS } from "../src/lm/pretrain.ts";
import type { BenchRow } from "./run.ts";
import { envCount, median, runTorch, isNumberArray, fmtMs, speedRatio, nodePeakRssMb, PYTHON, type TorchCommon,
  sgemmRefText, rooflineCell, gflopsCell, timeRunsPaired, pairedSummary, pctCell, type PairedRuns } from "./util.ts";
import { forwardFlops, trainStepFlops } from "./flops.ts";

const SIZES = { nLayers: PRETRAIN_DEFAULTS.layers, dModel: PRETRAIN_DEFAULTS.dModel, nHeads: PRETRAIN_DEFAULTS.heads, nCtx: PRETRAIN_DEFAULTS.ctx, dVocab: 50257 };
const BATCH = PRETRAIN_DEFAULTS.batchSize;
const POS = PRETRAIN_DEFAULTS.ctx;
const LR = PRETRAIN_DEFAULTS.lr;
const WEIGHT_DECAY = PRETRAIN_DEFAULTS.weightDecay;
const GRAD_CLIP = PRETRAIN_DEFAULTS.gradClip;
const WARMUP = 2;
/** BENCH_PRETRAIN_RUNS overrides the number of timed steps (default 10). */
const RUNS = envCount("BENCH_PRETRAIN_RUNS", 10);

/** A random "training stream" of token ids (speed does not depend on the values). */
function randomStream(n: number, vocab: number): Int32Array {
  const out = new Int32Array(n);
  let s = 4321;
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    out[i] = s % vocab;
  }
  return out;
}

/** Median seconds of one training step, built exactly as pretrain() builds its loop. */
function timeOurs(): PairedRuns {
  const cfg = makeConfig(SIZES);
  const model = HookedTransformer.init(cfg, 1234);
  const trainable = model.parameters().filter((t) => t !== model.b_U);
  for (const t of trainable) t.requiresGrad = true;
  const noDecay = new Set(trainable.filter((t) => t.ndim < 2));
  const opt = adamW(trainable, { beta1: 0.9, beta2: 0.95, weightDecay: WEIGHT_DECAY, noDecay });
  const stream = randomStream(200_000, cfg.dVocab);
  let step = 0;
  const once = (): void => {
    const { batch, targets } = sampleWindows(stream, BATCH, POS, new Rng(step++));
    const loss = model.nextTokenLoss(batch, targets);
    if (!Number.isFinite(loss.item())) throw new Error("bench pretrain: loss is not finite");
    opt.zeroGrad();
    backward(loss);
    clipGradNorm(trainable, GRAD_CLIP);
    opt.step(LR);
  };
  return timeRunsPaired(once, WARMUP, RUNS);
}

/** The torch side: prints {"version", "threads", "maxrss_kb", "seconds": [...], "loss"} as JSON. */
const TORCH_SCRIPT = `
import json, math, resource, sys, time
import torch
import torch.nn.functional as F
L, C, H, M, NCTX, V, B, T, warmup, runs = (int(a) for a in sys.argv[1:11])
lr, wd, clip = (float(a) for a in sys.argv[11:14])
torch.set_num_threads(2)
torch.manual_seed(0)
DH = C // H
def r(*s): return (torch.randn(*s) * 0.02).requires_grad_()
def ones(n): return torch.ones(n).requires_grad_()
def zeros(n): return torch.zeros(n).requires_grad_()
wte, wpe = r(V, C), r(NCTX, C)
layers = [dict(ln1w=ones(C), ln1b=zeros(C), attn_w=r(C, 3 * C), attn_b=zeros(3 * C), proj_w=r(C, C), proj_b=zeros(C),
               ln2w=ones(C), ln2b=zeros(C), fc_w=r(C, M), fc_b=zeros(M), out_w=r(M, C), out_b=zeros(C)) for _ in range(L)]
lnfw, lnfb = ones(C), zeros(C)
params = [wte, wpe, lnfw, lnfb] + [t for p in layers for t in p.values()]
opt = torch.optim.AdamW([{"params": [p for p in params if p.dim() >= 2], "weight_decay": wd},
                         {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}], lr=lr, betas=(0.9, 0.95))
causal = torch.tril(torch.ones(NCTX, NCTX, dtype=torch.bool))
def conv1d(x, w, b): return torch.addmm(b, x.reshape(-1, x.shape[-1]), w).reshape(*x.shape[:-1], -1)
def gelu_new(x): return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3.0))))
def heads(x): return x.view(B, T, H, DH).permute(0, 2, 1, 3)
def loss_of(ids, targets):
    x = wte[ids] + wpe[:T][None]
    mask = causal[None, None, :T, :T]
    for p in layers:
        a = F.layer_norm(x, (C,), p["ln1w"], p["ln1b"], 1e-5)
        q, k, v = conv1d(a, p["attn_w"], p["attn_b"]).split(C, dim=2)
        s = torch.matmul(heads(q), heads(k).transpose(-1, -2)) / math.sqrt(DH)
        s = torch.where(mask, s, torch.tensor(torch.finfo(s.dtype).min))
        z = torch.matmul(torch.softmax(s, dim=-1), heads(v)).permute(0, 2, 1, 3).reshape(B, T, C)
        x = x + conv1d(z, p["proj_w"], p["proj_b"])
        x = x + conv1d(gelu_new(conv1d(F.layer_norm(x, (C,), p["ln2w"], p["ln2b"], 1e-5), p["fc_w"], p["fc_b"])), p["out_w"], p["out_b"])
    logits = torch.matmul(F.layer_norm(x, (C,), lnfw, lnfb, 1e-5).reshape(B * T, C), wte.T)  # [B·T, V]
    return F.cross_entropy(logits, targets.reshape(-1))
stream = torch.randint(0, V, (200000,))
def step():
    starts = torch.randint(0, len(stream) - T, (B,))
    ids = torch.stack([stream[s:s + T] for s in starts.tolist()])
    targets = torch.stack([stream[s + 1:s + T + 1] for s in starts.tolist()])
    loss = loss_of(ids, targets)
    value = loss.item()
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, clip)
    opt.step()
    return value
for _ in range(warmup): step()
ts = []
for _ in range(runs):
    t0 = time.perf_counter(); loss = step(); ts.append(time.perf_counter() - t0)
print(json.dumps({"version": torch.__version__, "threads": torch.get_num_threads(), "seconds": ts, "loss": loss,
                  "maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
`;

interface TorchPretrain extends TorchCommon {
  seconds: number[];
}

export async function benchPretrain(): Promise<BenchRow[]> {
  const { nLayers, dModel, nHeads, nCtx, dVocab } = SIZES;
  const flops = trainStepFlops(forwardFlops({ nLayers, dModel, dMlp: 4 * dModel, dVocab }, BATCH, POS, { unembed: true }));
  const { seconds: ours, ref, pct } = pairedSummary(timeOurs(), flops);
  const rssMb = nodePeakRssMb();
  const torch = runTorch<TorchPretrain>(
    TORCH_SCRIPT,
    [nLayers, dModel, nHeads, 4 * dModel, nCtx, dVocab, BATCH, POS, WARMUP, RUNS, LR, WEIGHT_DECAY, GRAD_CLIP],
    (r) => isNumberArray(r.seconds),
  );
  const theirs = "error" in torch ? null : median(torch.seconds);
  const tokS = (s: number): number => (BATCH * POS) / s;
  console.log([
    `${nLayers} layers, d_model ${dModel}, ${nHeads} heads, d_mlp ${4 * dModel}, n_ctx ${nCtx}, vocab ${dVocab}, tied; batch ${BATCH} × ${POS}`,
    `AdamW + clip ${GRAD_CLIP}; backend ${getBackend().name}`,
    "error" in torch ? `torch: ${torch.error}` : `torch ${torch.version}, ${torch.threads} threads (${PYTHON})`,
    `median of ${RUNS} steps after ${WARMUP} warm-up`,
    `${(flops / 1e9).toFixed(0)} GFLOP of matmuls per step (3 × forward); ${sgemmRefText(ref)}`,
  ].join("; ") + "\n");
  const rows: BenchRow[] = [{
    implementation: `selfreport (${getBackend().name})`,
    "tokens/s": tokS(ours).toFixed(0),
    "ms / step": fmtMs(ours),
    "peak RSS MB": rssMb.toFixed(0),
    "GFLOP/s": gflopsCell(flops, ours),
    "of sgemm": pctCell(pct, 75),
    "ours/torch": speedRatio(ours, theirs),
  }];
  if (!("error" in torch) && theirs !== null) {
    rows.push({
      implementation: `torch ${torch.version}`,
      "tokens/s": tokS(theirs).toFixed(0),
      "ms / step": fmtMs(theirs),
      "peak RSS MB": (torch.maxrss_kb / 1024).toFixed(0),
      "GFLOP/s": gflopsCell(flops, theirs),
      "of sgemm": rooflineCell(flops, theirs, ref.gflops, null),
      "ours/torch": "",
    });
  }
  return rows;
}
