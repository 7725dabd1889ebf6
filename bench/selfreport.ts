/**
 * Self-report training speed, two sections (`node dist/bench/run.js selfreport` runs both):
 *
 * selfreport-step: one unfrozen training step on GPT-2-small shapes (12 layers, d_model 768, 12 heads,
 *   d_mlp 3072, vocab 50257), batch 16 × 64 tokens, against the same step in PyTorch.
 *   ours   the unfrozen path of src/selfreport/train.ts with its defaults: readFeatures (forward with
 *          stopAtLayer = 12, attention mask of ones) → resid_post of the last block at the last position
 *          [16, 768] → headForward (regression head, Linear(768 → 1), which stays at its seeded
 *          initialisation in unfrozen mode) → mse against standardised targets → loss.item(), zeroGrad,
 *          backward through the whole model, clipGradNorm(1.0), AdamW (lr 1e-4, weight decay 0.01
 *          except on 1-d tensors) over every model parameter except unembed.* (ln_final is in the
 *          list but gets no gradient, as in the trainer)
 *   torch  one /usr/bin/python3 subprocess, torch.set_num_threads(2): HF GPT-2 math in plain torch
 *          (as bench/forward.ts), x[:, -1] → F.linear → F.mse_loss → loss.item(), backward,
 *          clip_grad_norm_(1.0), torch.optim.AdamW with the same parameter groups and settings
 *   Median of RUNS steps after WARMUP; ours/torch is the ratio of speeds (> 1: we are faster).
 *   Roofline: 3 × the forward's matmul FLOPs (bench/flops.ts: 12 blocks, no unembedding; every block
 *   trains) ÷ seconds, as a fraction of the reference sgemm GFLOP/s measured right before each timed
 *   step (util.ts timeRunsPaired); ours' fraction is the median of the per-step fractions. Target ≥ 75 %.
 *
 * selfreport-frozen: what the frozen feature cache buys. Examples per second of one training epoch
 *   of the regression head over N_EXAMPLES examples, batch 64 (TRAIN_DEFAULTS), GPT-2-small widths:
 *   cached  the frozen path of train.ts: indexSelect rows of cached features [N, 768] → headForward →
 *           mse → backward → clipGradNorm → AdamW over the head. Median of EPOCHS full epochs after one.
 *   re-run  the same step, but each batch's features come from the base model's forward (readFeatures,
 *           model frozen so no graph is recorded) over 64 examples padded to their longest, lengths
 *           4..64 tokens (the dataset default max_len 64). Median of RERUN_BATCHES batches after one,
 *           times ceil(N / 64) batches: an extrapolated epoch.
 *   speed-up = cached examples/s ÷ re-run examples/s.
 *   Roofline (re-run row): the base model's forward matmul FLOPs per batch (12 blocks over the padded
 *   batch) ÷ seconds per batch; the cached row does [64, 768]·[768, 1] products, far from any roofline.
 * Neither side includes the trainer's per-step JSONL log line or progress bar.
 * Peak RSS: this section's Node process (run.ts runs each section in a child) and torch's subprocess.
 */
import { Tensor, Rng, backward, adamW, clipGradNorm, mse, indexSelect, getBackend } from "../src/tensor/index.ts";
import { makeConfig, type ModelConfig } from "../src/model/config.ts";
import { HookedTransformer, type TokenBatch } from "../src/model/transformer.ts";
import { makeHeadConfig, initHead, headForward, readFeatures } from "../src/selfreport/predictor.ts";
import { TRAIN_DEFAULTS, defaultLr } from "../src/selfreport/train.ts";
import type { BenchRow } from "./run.ts";
import {
  envCount, median, timeRuns, filledNormal, randomTokens, runTorch, isNumberArray, fmtMs, speedRatio, nodePeakRssMb, PYTHON, type TorchCommon,
  sgemmReference, sgemmRefText, rooflineCell, gflopsCell, timeRunsPaired, pairedSummary, pctCell, type PairedRuns,
} from "./util.ts";
import { forwardFlops, trainStepFlops } from "./flops.ts";

const SIZES = { nLayers: 12, dModel: 768, nHeads: 12, nCtx: 1024, dVocab: 50257 };
const STEP_BATCH = 16;
const STEP_POS = 64;
const STEP_WARMUP = 1;
/** BENCH_SELFREPORT_RUNS overrides the number of timed unfrozen steps (default 5). */
const STEP_RUNS = envCount("BENCH_SELFREPORT_RUNS", 5);

const N_EXAMPLES = 20000;
const MAX_LEN = 64;
const FROZEN_BATCH = TRAIN_DEFAULTS.batchSize;
/** BENCH_FROZEN_EPOCHS: timed epochs over the cached features (default 3, after 1 warm-up). */
const EPOCHS = envCount("BENCH_FROZEN_EPOCHS", 3);
/** BENCH_RERUN_BATCHES: timed batches that re-run the base model (default 3, after 1 warm-up). */
const RERUN_BATCHES = envCount("BENCH_RERUN_BATCHES", 3);

const featureLayerOf = (cfg: ModelConfig): number => cfg.nLayers - 1;

// ---------------------------------------------------------------------------------------------
// selfreport-step

/** Seconds of each timed unfrozen training step, built as train() builds it for --freeze unfrozen, each paired with a reference sgemm burst. */
function timeOursStep(): PairedRuns {
  const model = HookedTransformer.init(makeConfig(SIZES), 0);
  const featureLayer = featureLayerOf(model.cfg);
  const headCfg = makeHeadConfig("regression", { inputDim: model.cfg.dModel });
  const head = initHead(headCfg, TRAIN_DEFAULTS.seed, model); // stays fixed in unfrozen mode
  const trainable = [...model.params].filter(([name]) => !name.startsWith("unembed.")).map(([, t]) => t);
  for (const t of trainable) t.requiresGrad = true;
  const opt = adamW(trainable, { weightDecay: TRAIN_DEFAULTS.weightDecay, noDecay: new Set(trainable.filter((t) => t.ndim < 2)) });
  const batch = randomTokens(STEP_BATCH, STEP_POS, model.cfg.dVocab, 99);
  const positions = new Int32Array(STEP_BATCH).fill(STEP_POS - 1); // read at the last position
  const targets = new Tensor(filledNormal(STEP_BATCH, 11), [STEP_BATCH]); // standardised activations
  let step = 0;
  const once = (): void => {
    const feats = readFeatures(model, batch, positions, featureLayer); //                 [B, C]
    const out = headForward(headCfg, head, feats, model, { training: true, rng: new Rng(step++) }); // [B]
    const loss = mse(out, targets);
    if (!Number.isFinite(loss.item())) throw new Error("bench selfreport-step: loss is not finite");
    opt.zeroGrad();
    backward(loss);
    clipGradNorm(trainable, TRAIN_DEFAULTS.gradClip);
    opt.step(defaultLr("unfrozen"));
  };
  return timeRunsPaired(once, STEP_WARMUP, STEP_RUNS);
}

/** The torch side: prints {"version", "threads", "maxrss_kb", "seconds": [...]} as JSON. */
const TORCH_STEP_SCRIPT = `
import json, math, resource, sys, time
import torch
import torch.nn.functional as F
L, C, H, NCTX, V, B, T, warmup, runs = (int(a) for a in sys.argv[1:10])
lr, wd, clip = (float(a) for a in sys.argv[10:13])
torch.set_num_threads(2)
torch.manual_seed(0)
M, DH = 4 * C, C // H
def r(*s): return (torch.randn(*s) * 0.02).requires_grad_()
def ones(n): return torch.ones(n).requires_grad_()
def zeros(n): return torch.zeros(n).requires_grad_()
wte, wpe = r(V, C), r(NCTX, C)
layers = [dict(ln1w=ones(C), ln1b=zeros(C), attn_w=r(C, 3 * C), attn_b=zeros(3 * C), proj_w=r(C, C), proj_b=zeros(C),
               ln2w=ones(C), ln2b=zeros(C), fc_w=r(C, M), fc_b=zeros(M), out_w=r(M, C), out_b=zeros(C)) for _ in range(L)]
lnfw, lnfb = ones(C), zeros(C)  # in the optimizer, never on the path (as in our trainer)
head_w, head_b = torch.empty(1, C).uniform_(-C ** -0.5, C ** -0.5), torch.empty(1).uniform_(-C ** -0.5, C ** -0.5)  # fixed
params = [wte, wpe, lnfw, lnfb] + [t for p in layers for t in p.values()]
opt = torch.optim.AdamW([{"params": [p for p in params if p.dim() >= 2], "weight_decay": wd},
                         {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}], lr=lr)
causal = torch.tril(torch.ones(NCTX, NCTX, dtype=torch.bool))
def conv1d(x, w, b): return torch.addmm(b, x.reshape(-1, x.shape[-1]), w).reshape(*x.shape[:-1], -1)
def gelu_new(x): return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3.0))))
def heads(x): return x.view(B, T, H, DH).permute(0, 2, 1, 3)
def resid_post(ids):
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
    return x
ids = torch.randint(0, V, (B, T))
y = torch.randn(B)
def step():
    out = F.linear(resid_post(ids)[:, -1], head_w, head_b).squeeze(-1)  # [B]
    loss = F.mse_loss(out, y)
    value = loss.item()
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, clip)
    opt.step()
    return value
for _ in range(warmup): step()
ts = []
for _ in range(runs):
    t0 = time.perf_counter(); step(); ts.append(time.perf_counter() - t0)
print(json.dumps({"version": torch.__version__, "threads": torch.get_num_threads(), "seconds": ts,
                  "maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
`;

interface TorchStep extends TorchCommon {
  seconds: number[];
}

export async function benchSelfreportStep(): Promise<BenchRow[]> {
  const { nLayers, dModel, nHeads, nCtx, dVocab } = SIZES;
  const flops = trainStepFlops(forwardFlops({ nLayers, dModel, dMlp: 4 * dModel, dVocab }, STEP_BATCH, STEP_POS, { unembed: false }));
  const { seconds: ours, ref, pct } = pairedSummary(timeOursStep(), flops);
  const rssMb = nodePeakRssMb();
  const torch = runTorch<TorchStep>(
    TORCH_STEP_SCRIPT,
    [nLayers, dModel, nHeads, nCtx, dVocab, STEP_BATCH, STEP_POS, STEP_WARMUP, STEP_RUNS, defaultLr("unfrozen"), TRAIN_DEFAULTS.weightDecay, TRAIN_DEFAULTS.gradClip],
    (r) => isNumberArray(r.seconds),
  );
  const theirs = "error" in torch ? null : median(torch.seconds);
  console.log([
    `GPT-2 small shapes (12 × 768, 12 heads, d_mlp 3072, vocab 50257), batch ${STEP_BATCH} × ${STEP_POS}, regression head on resid_post of block 11 at the last position`,
    `unfrozen: backward through the whole model, AdamW + clip ${TRAIN_DEFAULTS.gradClip}; backend ${getBackend().name}`,
    "error" in torch ? `torch: ${torch.error}` : `torch ${torch.version}, ${torch.threads} threads (${PYTHON})`,
    `median of ${STEP_RUNS} steps after ${STEP_WARMUP} warm-up`,
    `${(flops / 1e9).toFixed(0)} GFLOP of matmuls per step (3 × forward); ${sgemmRefText(ref)}`,
  ].join("; ") + "\n");
  const exS = (s: number): number => STEP_BATCH / s;
  const rows: BenchRow[] = [{
    implementation: `selfreport (${getBackend().name})`,
    "ms / step": fmtMs(ours),
    "examples/s": exS(ours).toFixed(1),
    "peak RSS MB": rssMb.toFixed(0),
    "GFLOP/s": gflopsCell(flops, ours),
    "of sgemm": pctCell(pct, 75),
    "ours/torch": speedRatio(ours, theirs),
  }];
  if (!("error" in torch) && theirs !== null) {
    rows.push({
      implementation: `torch ${torch.version}`,
      "ms / step": fmtMs(theirs),
      "examples/s": exS(theirs).toFixed(1),
      "peak RSS MB": (torch.maxrss_kb / 1024).toFixed(0),
      "GFLOP/s": gflopsCell(flops, theirs),
      "of sgemm": rooflineCell(flops, theirs, ref.gflops, null),
      "ours/torch": "",
    });
  }
  return rows;
}

// ---------------------------------------------------------------------------------------------
// selfreport-frozen

/** The head, its AdamW and one training step on given features, as train.ts's frozen loop runs it. */
function headTrainer(dModel: number): (feats: () => Tensor, idx: readonly number[], labels: Float32Array) => void {
  const headCfg = makeHeadConfig("regression", { inputDim: dModel });
  const head = initHead(headCfg, TRAIN_DEFAULTS.seed, null);
  const params = [...head.values()];
  for (const t of params) t.requiresGrad = true;
  const opt = adamW(params, { weightDecay: TRAIN_DEFAULTS.weightDecay, noDecay: new Set(params.filter((t) => t.ndim < 2)) });
  let step = 0;
  return (feats, idx, labels) => {
    const out = headForward(headCfg, head, feats(), null, { training: true, rng: new Rng(step++) }); // [B]
    const loss = mse(out, new Tensor(Float32Array.from(idx, (i) => labels[i]!), [idx.length]));
    if (!Number.isFinite(loss.item())) throw new Error("bench selfreport-frozen: loss is not finite");
    opt.zeroGrad();
    backward(loss);
    clipGradNorm(params, TRAIN_DEFAULTS.gradClip);
    opt.step(defaultLr("frozen"));
  };
}

/** A batch of `idx.length` examples of random lengths 4..MAX_LEN, right-padded to the longest, as exampleBatch builds it. */
function exampleLikeBatch(n: number, vocab: number, rng: Rng): TokenBatch & { positions: Int32Array } {
  const lengths = Array.from({ length: n }, () => 4 + rng.int(MAX_LEN - 3));
  const T = Math.max(...lengths);
  const tokens = randomTokens(n, T, vocab, rng.int(1 << 30));
  const attentionMask = new Uint8Array(n * T);
  lengths.forEach((len, b) => attentionMask.fill(1, b * T, b * T + len));
  return { ...tokens, attentionMask, positions: Int32Array.from(lengths, (len) => len - 1) };
}

export async function benchSelfreportFrozen(): Promise<BenchRow[]> {
  const cfg = makeConfig(SIZES);
  const C = cfg.dModel;
  const labels = filledNormal(N_EXAMPLES, 21);
  const batchesPerEpoch = Math.ceil(N_EXAMPLES / FROZEN_BATCH);
  const all = Array.from({ length: N_EXAMPLES }, (_, i) => i);

  // cached: whole epochs over features [N, C]
  const features = new Tensor(filledNormal(N_EXAMPLES * C, 22), [N_EXAMPLES, C]); //    [N, C]
  const cachedStep = headTrainer(C);
  let epoch = 0;
  const cachedEpoch = (): void => {
    const order = new Rng(7919 * epoch++).shuffle([...all]);
    for (let s = 0; s < batchesPerEpoch; s++) {
      const idx = order.slice(s * FROZEN_BATCH, (s + 1) * FROZEN_BATCH);
      cachedStep(() => indexSelect(features, 0, idx), idx, labels); //                   [b, C]
    }
  };
  const cachedSeconds = median(timeRuns(cachedEpoch, 1, EPOCHS));
  const cachedRssMb = nodePeakRssMb();

  // re-run: a few batches through the frozen base model, extrapolated to an epoch
  const model = HookedTransformer.init(cfg, 0); // parameters do not require grad: frozen
  const featureLayer = featureLayerOf(cfg);
  const rerunStep = headTrainer(C);
  const rng = new Rng(5);
  const order = rng.shuffle([...all]);
  let s = 0;
  const batchFlops: number[] = []; // matmul FLOPs of each batch's forward (padded), warm-up first
  const rerunBatch = (): void => {
    const idx = order.slice(s * FROZEN_BATCH, (s + 1) * FROZEN_BATCH);
    s = (s + 1) % batchesPerEpoch;
    const batch = exampleLikeBatch(idx.length, cfg.dVocab, rng);
    batchFlops.push(forwardFlops({ nLayers: cfg.nLayers, dModel: C, dMlp: cfg.dMlp, dVocab: cfg.dVocab }, batch.batch, batch.len, { unembed: false }));
    rerunStep(() => readFeatures(model, batch, batch.positions, featureLayer), idx, labels); // [b, C]
  };
  const rerunBatchSeconds = median(timeRuns(rerunBatch, 1, RERUN_BATCHES));
  const rerunSeconds = rerunBatchSeconds * batchesPerEpoch;
  const rssMb = nodePeakRssMb();
  const timedFlops = batchFlops.slice(1);
  const rerunFlops = timedFlops.reduce((a, b) => a + b, 0) / timedFlops.length; // mean per timed batch
  const ref = await sgemmReference();

  console.log([
    `regression head on d_model ${C} features, ${N_EXAMPLES} examples, batch ${FROZEN_BATCH} (${batchesPerEpoch} steps per epoch), AdamW + clip ${TRAIN_DEFAULTS.gradClip}`,
    `re-run: GPT-2 small shapes (12 × 768), prefixes of 4..${MAX_LEN} tokens padded to the longest, median of ${RERUN_BATCHES} batch${RERUN_BATCHES === 1 ? "" : "es"} after 1 warm-up × ${batchesPerEpoch} (extrapolated)`,
    `cached: median of ${EPOCHS} epochs after 1 warm-up; backend ${getBackend().name}; peak RSS: this section's process so far`,
    `re-run roofline: mean ${(rerunFlops / 1e9).toFixed(1)} GFLOP of matmuls per padded batch ÷ median s per batch; ${sgemmRefText(ref)}`,
  ].join("; ") + "\n");
  const exS = (sec: number): number => N_EXAMPLES / sec;
  return [
    {
      path: `cached features [${N_EXAMPLES}, ${C}]`,
      "s / epoch": cachedSeconds.toFixed(cachedSeconds < 10 ? 2 : 0),
      "examples/s": exS(cachedSeconds).toFixed(0),
      measured: `${EPOCHS} full epoch${EPOCHS === 1 ? "" : "s"}`,
      "peak RSS MB": cachedRssMb.toFixed(0),
      "of sgemm": "n/a (head only)",
      "speed-up": `${(rerunSeconds / cachedSeconds).toFixed(0)}×`,
    },
    {
      path: "re-run base model forward per batch",
      "s / epoch": rerunSeconds.toFixed(rerunSeconds < 10 ? 2 : 0),
      "examples/s": exS(rerunSeconds).toFixed(1),
      measured: `${RERUN_BATCHES} batch${RERUN_BATCHES === 1 ? "" : "es"} × ${batchesPerEpoch}`,
      "peak RSS MB": rssMb.toFixed(0),
      "of sgemm": rooflineCell(rerunFlops, rerunBatchSeconds, ref.gflops, 85),
      "speed-up": "1×",
    },
  ];
}
