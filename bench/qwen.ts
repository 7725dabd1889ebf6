/**
 * A Qwen2-0.5B-shaped model (Qwen2ForCausalLM: hidden 896, 24 layers, 14 heads, 2 key-value heads,
 * intermediate 4864, vocab 151936, tied embeddings, q/k/v biases, rope_theta 1e6, rms eps 1e-6;
 * 494 M parameters), random weights. Two measurements:
 *
 *   forward  tokens/s of HookedTransformer.runWithCache at batch 4 × 128 under noGrad, caching
 *            `blocks.12.mlp.hook_post`, raw weights built in memory (HookedTransformer.init), against
 *            a PyTorch peer in the same run: plain torch in one /usr/bin/python3 subprocess
 *            (2 threads, no_grad) running Qwen2's math on random weights of the same shapes (RMSNorm,
 *            rotate-half rotary, GQA attention with a causal mask, SwiGLU MLP, tied unembedding, HF's
 *            [out, in] linear layout). Median of RUNS after WARMUP. Roofline as bench/flops.ts counts
 *            it (GQA's [896, 128] K/V products, the gated MLP's three matrices, the unembedding).
 *   memory   a random checkpoint of the same shape written to a temp folder in the Hugging Face layout
 *            (config.json + model.safetensors.index.json + F16 shards, written one shard at a time),
 *            then `selfreport activations --tokens (4 × 128) --hook blocks.12.mlp.hook_post` run in a
 *            child process with `--weights raw` and `--weights tl`; its peak RSS (/usr/bin/time %M, or
 *            the child's maxRSS from process.resourceUsage). Target ≤ 4 GB.
 *
 * BENCH_QWEN_RUNS overrides the timed runs (default 3); BENCH_QWEN_MEMORY=0 skips the memory rows.
 */
import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, rmSync, statSync, readdirSync } from "node:fs";
import { tmpdir, loadavg } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { noGrad } from "../src/tensor/index.ts";
import { getBackend } from "../src/tensor/backend/index.ts";
import { configFromHf, type ModelConfig } from "../src/model/config.ts";
import { HookedTransformer, type TokenBatch } from "../src/model/transformer.ts";
import { writeSafetensors, type WritableTensor } from "../src/io/safetensors.ts";
import { writeJsonAtomic } from "../src/io/atomic.ts";
import type { BenchRow } from "./run.ts";
import { envCount, filledNormal, median, timeRuns, nodePeakRssMb, randomTokens, runTorch, isNumberArray, sgemmReference, sgemmRefText, forwardRows, type TorchCommon } from "./util.ts";
import { forwardFlops } from "./flops.ts";

const BATCH = 4;
const POS = 128;
const WARMUP = 1;
const RUNS = envCount("BENCH_QWEN_RUNS", 3);
const CACHED_LAYER = 12;
const CACHED = `blocks.${CACHED_LAYER}.mlp.hook_post`;
/** Layers per safetensors shard of the written checkpoint (the embedding and final norm get a shard of their own). */
const LAYERS_PER_SHARD = 4;

/** Qwen2-0.5B's config.json (the fields selfreport and the torch script read). */
export const QWEN2_05B_CONFIG: Record<string, unknown> = {
  architectures: ["Qwen2ForCausalLM"],
  model_type: "qwen2",
  hidden_size: 896,
  num_hidden_layers: 24,
  num_attention_heads: 14,
  num_key_value_heads: 2,
  intermediate_size: 4864,
  vocab_size: 151936,
  max_position_embeddings: 32768,
  tie_word_embeddings: true,
  rope_theta: 1000000.0,
  rms_norm_eps: 1e-6,
  hidden_act: "silu",
  use_sliding_window: false,
  torch_dtype: "float16",
};

/** The torch side: prints {"version", "threads", "seconds": [...], "maxrss_kb", "params"} as JSON. */
const TORCH_SCRIPT = `
import json, math, resource, sys, time
import torch
C, L, H, HKV, M, V, B, T, warmup, runs, cached_layer = (int(a) for a in sys.argv[1:12])
theta, eps = float(sys.argv[12]), float(sys.argv[13])
torch.set_num_threads(2)
torch.manual_seed(0)
DH = C // H
REP = H // HKV
def r(*s): return torch.randn(*s) * 0.02
embed = r(V, C)
layers = [dict(ln1=torch.ones(C), q_w=r(H * DH, C), q_b=r(H * DH), k_w=r(HKV * DH, C), k_b=r(HKV * DH), v_w=r(HKV * DH, C), v_b=r(HKV * DH),
               o_w=r(C, H * DH), ln2=torch.ones(C), gate_w=r(M, C), up_w=r(M, C), down_w=r(C, M)) for _ in range(L)]
norm_w = torch.ones(C)
params = embed.numel() + norm_w.numel() + sum(t.numel() for p in layers for t in p.values())
F = torch.nn.functional
def rms(x, w): return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w
inv_freq = 1.0 / (theta ** (torch.arange(0, DH, 2, dtype=torch.float32) / DH))
freqs = torch.outer(torch.arange(T, dtype=torch.float32), inv_freq)
emb = torch.cat((freqs, freqs), dim=-1)
cos, sin = emb.cos()[None, None], emb.sin()[None, None]
def rotate_half(x): return torch.cat((-x[..., DH // 2:], x[..., :DH // 2]), dim=-1)
causal = torch.tril(torch.ones(T, T, dtype=torch.bool))[None, None]
def forward(ids):
    x = embed[ids]
    cached = None
    for i, p in enumerate(layers):
        a = rms(x, p["ln1"])
        q = F.linear(a, p["q_w"], p["q_b"]).view(B, T, H, DH).transpose(1, 2)
        k = F.linear(a, p["k_w"], p["k_b"]).view(B, T, HKV, DH).transpose(1, 2)
        v = F.linear(a, p["v_w"], p["v_b"]).view(B, T, HKV, DH).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        k = torch.repeat_interleave(k, REP, dim=1)
        v = torch.repeat_interleave(v, REP, dim=1)
        s = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(DH)
        s = torch.where(causal, s, torch.tensor(torch.finfo(s.dtype).min))
        z = torch.matmul(torch.softmax(s, dim=-1), v).transpose(1, 2).reshape(B, T, H * DH)
        x = x + F.linear(z, p["o_w"])
        m = rms(x, p["ln2"])
        post = F.silu(F.linear(m, p["gate_w"])) * F.linear(m, p["up_w"])
        if i == cached_layer: cached = post
        x = x + F.linear(post, p["down_w"])
    return F.linear(rms(x, norm_w), embed), cached
ids = torch.randint(0, V, (B, T))
with torch.no_grad():
    for _ in range(warmup): forward(ids)
    ts = []
    for _ in range(runs):
        t0 = time.perf_counter(); forward(ids); ts.append(time.perf_counter() - t0)
print(json.dumps({"version": torch.__version__, "threads": torch.get_num_threads(), "seconds": ts, "params": params,
                  "maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
`;

interface TorchResult extends TorchCommon { seconds: number[]; params: number }

function qwenConfig(): ModelConfig {
  return configFromHf(QWEN2_05B_CONFIG, "Qwen2-0.5B config");
}

function timeTorch(cfg: ModelConfig): TorchResult | { error: string } {
  const args = [cfg.dModel, cfg.nLayers, cfg.nHeads, cfg.nKeyValueHeads ?? cfg.nHeads, cfg.dMlp, cfg.dVocab, BATCH, POS, WARMUP, RUNS, CACHED_LAYER, cfg.rotaryBase ?? 10000, cfg.lnEps];
  return runTorch<TorchResult>(TORCH_SCRIPT, args, (r) => isNumberArray(r.seconds) && typeof r.params === "number");
}

function timeOurs(model: HookedTransformer, batch: TokenBatch): number {
  const once = (): void => {
    const { logits, cache } = noGrad(() => model.runWithCache(batch, [CACHED]));
    if (logits === null || !cache.has(CACHED)) throw new Error("bench qwen: no logits or cache");
  };
  return median(timeRuns(once, WARMUP, RUNS));
}

// ---------------------------------------------------------------------------------------------
// The checkpoint on disk

/** One shard's tensors, HF names and [out, in] layout, random N(0, 0.02) (norm weights 1), F16. */
function shardTensors(cfg: ModelConfig, layers: number[], withEmbedding: boolean, seed: number): Record<string, WritableTensor> {
  const { dModel: C, nHeads: H, dHead: Dh, dMlp: M, dVocab: V } = cfg;
  const Hkv = cfg.nKeyValueHeads ?? H;
  const out: Record<string, WritableTensor> = {};
  let s = seed;
  const rand = (name: string, shape: number[]): void => {
    out[name] = { dtype: "F16", shape, data: filledNormal(shape.reduce((a, b) => a * b, 1), s++, 0.02) };
  };
  const ones = (name: string, n: number): void => {
    out[name] = { dtype: "F16", shape: [n], data: new Float32Array(n).fill(1) };
  };
  if (withEmbedding) {
    rand("model.embed_tokens.weight", [V, C]);
    ones("model.norm.weight", C);
  }
  for (const l of layers) {
    const h = `model.layers.${l}`;
    ones(`${h}.input_layernorm.weight`, C);
    ones(`${h}.post_attention_layernorm.weight`, C);
    rand(`${h}.self_attn.q_proj.weight`, [H * Dh, C]);
    rand(`${h}.self_attn.q_proj.bias`, [H * Dh]);
    rand(`${h}.self_attn.k_proj.weight`, [Hkv * Dh, C]);
    rand(`${h}.self_attn.k_proj.bias`, [Hkv * Dh]);
    rand(`${h}.self_attn.v_proj.weight`, [Hkv * Dh, C]);
    rand(`${h}.self_attn.v_proj.bias`, [Hkv * Dh]);
    rand(`${h}.self_attn.o_proj.weight`, [C, H * Dh]);
    rand(`${h}.mlp.gate_proj.weight`, [M, C]);
    rand(`${h}.mlp.up_proj.weight`, [M, C]);
    rand(`${h}.mlp.down_proj.weight`, [C, M]);
  }
  return out;
}

/**
 * Writes a random Qwen2-0.5B-shaped checkpoint into `dir` (config.json, F16 shards and their
 * model.safetensors.index.json), one shard at a time so that at most one shard is in memory.
 * Returns the parameter count.
 */
export function writeRandomQwenCheckpoint(dir: string, layersPerShard = LAYERS_PER_SHARD): number {
  const cfg = qwenConfig();
  const groups: { layers: number[]; embedding: boolean }[] = [{ layers: [], embedding: true }];
  for (let l = 0; l < cfg.nLayers; l += layersPerShard) groups.push({ layers: Array.from({ length: Math.min(layersPerShard, cfg.nLayers - l) }, (_, i) => l + i), embedding: false });
  const weightMap: Record<string, string> = {};
  let totalBytes = 0;
  let nParams = 0;
  groups.forEach((g, i) => {
    const file = `model-${String(i + 1).padStart(5, "0")}-of-${String(groups.length).padStart(5, "0")}.safetensors`;
    const tensors = shardTensors(cfg, g.layers, g.embedding, 1000 * (i + 1));
    for (const [name, t] of Object.entries(tensors)) {
      weightMap[name] = file;
      nParams += t.data.length;
      totalBytes += 2 * t.data.length;
    }
    writeSafetensors(join(dir, file), tensors, { format: "pt" });
  });
  writeJsonAtomic(join(dir, "model.safetensors.index.json"), { metadata: { total_size: totalBytes }, weight_map: weightMap });
  writeJsonAtomic(join(dir, "config.json"), QWEN2_05B_CONFIG);
  return nParams;
}

/** Peak RSS (MB) and wall seconds of `selfreport activations` on `dir`, or the reason it failed. */
function activationsRss(dir: string, weights: "raw" | "tl", out: string): { rssMb: number; seconds: number } | { error: string } {
  const bin = fileURLToPath(new URL("../../bin/selfreport.js", import.meta.url));
  const tokens = randomTokens(BATCH, POS, 151936, 777);
  const rows: string[] = [];
  for (let b = 0; b < BATCH; b++) rows.push("--tokens", Array.from(tokens.ids.subarray(b * POS, (b + 1) * POS)).join(","));
  const cliArgs = [bin, "activations", "--model", dir, ...rows, "--hook", CACHED, "--weights", weights, "--out", out, "--force"];
  const useTime = existsSync("/usr/bin/time");
  const t0 = process.hrtime.bigint();
  const r = useTime
    ? spawnSync("/usr/bin/time", ["-f", "maxrss_kb=%M", process.execPath, ...cliArgs], { encoding: "utf8" })
    : spawnSync(process.execPath, ["--import", "data:text/javascript,process.on('exit',()=>process.stderr.write('maxrss_kb='+process.resourceUsage().maxRSS+'\\n'))", ...cliArgs], { encoding: "utf8" });
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  if (r.status !== 0) return { error: `activations --weights ${weights} failed (exit ${r.status ?? r.signal}): ${r.stderr.trim().split("\n").slice(-2).join(" ")}` };
  const m = /maxrss_kb=(\d+)/.exec(r.stderr);
  if (m === null) return { error: `no peak RSS in the child's output: ${r.stderr.trim().slice(-200)}` };
  return { rssMb: Number(m[1]) / 1024, seconds };
}

function dirBytes(dir: string): number {
  return readdirSync(dir).reduce((a, f) => a + statSync(join(dir, f)).size, 0);
}

export async function benchQwen(): Promise<BenchRow[]> {
  const cfg = qwenConfig();
  const load = loadavg().map((x) => x.toFixed(1)).join(", ");
  const model = HookedTransformer.init(cfg, 0);
  let nParams = 0;
  for (const t of model.params.values()) nParams += t.size;
  const ours = timeOurs(model, randomTokens(BATCH, POS, cfg.dVocab, 12345));
  const rssMb = nodePeakRssMb();
  const torch = timeTorch(cfg);
  const ref = await sgemmReference();
  const flops = forwardFlops({ nLayers: cfg.nLayers, dModel: cfg.dModel, dMlp: cfg.dMlp, dVocab: cfg.dVocab, dKv: (cfg.nKeyValueHeads ?? cfg.nHeads) * cfg.dHead, gatedMlp: true }, BATCH, POS, { unembed: true });
  console.log([
    `Qwen2-0.5B shapes (24 × 896, 14 heads / 2 KV heads, d_mlp 4864 gated, vocab 151936 tied; ${(nParams / 1e6).toFixed(0)} M parameters), random weights, batch ${BATCH} × ${POS}, caching ${CACHED}`,
    `backend ${getBackend().name}`,
    "error" in torch ? `torch: ${torch.error}` : `torch ${torch.version}, ${torch.threads} threads`,
    `median of ${RUNS} after ${WARMUP} warm-up`,
    `${(flops / 1e9).toFixed(0)} GFLOP of matmuls per batch; ${sgemmRefText(ref)}`,
    `load average at start ${load} (shared machine)`,
  ].join("; ") + "\n");
  const rows: BenchRow[] = forwardRows({
    tokensPerBatch: BATCH * POS, oursSeconds: ours, oursRssMb: rssMb, flops, refGflops: ref.gflops, targetPct: 85, torch,
    ratioTarget: "target ≥ 1.0", first: { measure: "forward" },
  });
  if (process.env["BENCH_QWEN_MEMORY"] === "0") return rows;
  const dir = mkdtempSync(join(tmpdir(), "selfreport-bench-qwen-"));
  try {
    const modelDir = join(dir, "model");
    mkdirSync(modelDir);
    const written = writeRandomQwenCheckpoint(modelDir);
    const sizeMb = dirBytes(modelDir) / 2 ** 20;
    for (const weights of ["raw", "tl"] as const) {
      const r = activationsRss(modelDir, weights, join(dir, `acts-${weights}.safetensors`));
      rows.push({
        measure: `activations --weights ${weights}`,
        implementation: `selfreport CLI, ${(written / 1e6).toFixed(0)} M params, F16 shards ${sizeMb.toFixed(0)} MB`,
        "tokens/s": "error" in r ? "n/a" : "",
        "ms / batch": "error" in r ? r.error : `${(r.seconds * 1000).toFixed(0)} (whole command)`,
        "peak RSS MB": "error" in r ? "n/a" : `${r.rssMb.toFixed(0)} (target ≤ 4096)`,
        "GFLOP/s": "",
        "of sgemm": "",
        "ours/torch": "",
      });
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  return rows;
}
