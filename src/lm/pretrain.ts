/**
 * Pre-training a small GPT-2-architecture language model on a corpus (next-token cross-entropy),
 * with the project's own engine and GPT-2's real tokenizer and vocabulary.
 *
 * Batches are random windows of ctx+1 tokens from the training token stream; the window of step s
 * comes from an Rng seeded by (seed, s), so a resumed run sees exactly the batches it would have
 * seen. Checkpoints hold parameters + AdamW state; the result is written in the Hugging Face layout.
 */
import { existsSync, appendFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import {
  Rng, noGrad, backward, adamW, clipGradNorm, warmupCosine, getBackend,
} from "../tensor/index.ts";
import { HookedTransformer, type TokenBatch } from "../model/transformer.ts";
import { makeConfig, type ModelConfig } from "../model/config.ts";
import { saveModel } from "../model/load.ts";
import { loadTokenizer, writeTokenizerFiles } from "../model/tokenizer.ts";
import { loadCorpus } from "../data/corpus.ts";
import { tokenizeDocuments } from "../data/tokens.ts";
import { saveCheckpoint, loadCheckpoint, CHECKPOINT_VERSION } from "../io/checkpoint.ts";
import { writeJsonAtomic, writeFileAtomic } from "../io/atomic.ts";
import { checkOutput } from "../io/outputs.ts";
import { withOutputFolder, keepCheckpoint, truncateLogToStep } from "../io/folder.ts";
import { lineChart, renderSvg } from "../report/charts.ts";
import { progress, info } from "../util/progress.ts";
import { interruptibleSection, interruptSignal, Interrupted, yieldToEventLoop } from "../util/interrupt.ts";
import { SelfreportError } from "../errors.ts";

export interface PretrainOptions {
  corpus: string;
  out: string;
  layers: number;
  dModel: number;
  heads: number;
  ctx: number;
  steps: number;
  batchSize: number;
  lr: number;
  warmup: number;
  weightDecay: number;
  gradClip: number;
  seed: number;
  evalEvery: number;
  checkpointEvery: number;
  resume: boolean;
  force: boolean;
  dtype: "F32" | "F16";
  /** The command line, recorded in config.json for reproducibility. */
  command?: string;
}

export const PRETRAIN_DEFAULTS = {
  layers: 4, dModel: 128, heads: 4, ctx: 128, steps: 4000, batchSize: 16, lr: 3e-3, warmup: 200,
  weightDecay: 0.1, gradClip: 1.0, seed: 1234, evalEvery: 250, checkpointEvery: 250, dtype: "F16" as const,
};

export interface PretrainResult {
  heldoutLoss: number;
  heldoutPerplexity: number;
  unigramLoss: number;
  trainTokens: number;
  heldoutTokens: number;
  seconds: number;
  tokensPerSecond: number;
}

interface PretrainState {
  version: number;
  step: number;
  config: ModelConfig;
  options: Omit<PretrainOptions, "resume" | "force" | "command">;
  curve: Array<{ step: number; train: number; heldout?: number }>;
  seconds: number;
}

/** A random [B, ctx] batch of inputs and its next-token targets, drawn for one step. */
export function sampleWindows(stream: Int32Array, B: number, ctx: number, rng: Rng): { batch: TokenBatch; targets: Int32Array } {
  if (stream.length < ctx + 1) throw new SelfreportError(`corpus has ${stream.length} tokens, fewer than one window of ${ctx + 1}`);
  const ids = new Int32Array(B * ctx);
  const targets = new Int32Array(B * ctx);
  for (let b = 0; b < B; b++) {
    const start = rng.int(stream.length - ctx);
    ids.set(stream.subarray(start, start + ctx), b * ctx);
    targets.set(stream.subarray(start + 1, start + ctx + 1), b * ctx);
  }
  return { batch: { ids, batch: B, len: ctx }, targets };
}

/** Mean next-token loss over consecutive non-overlapping windows of a held-out stream. */
export function evaluateLoss(model: HookedTransformer, stream: Int32Array, ctx: number, maxWindows = 64, B = 8): number {
  const n = Math.min(maxWindows, Math.floor((stream.length - 1) / ctx));
  if (n === 0) throw new SelfreportError(`held-out text has ${stream.length} tokens, fewer than one window of ${ctx + 1}`);
  const stride = Math.floor((stream.length - 1 - ctx) / Math.max(1, n - 1));
  let total = 0;
  let count = 0;
  return noGrad(() => {
    for (let w0 = 0; w0 < n; w0 += B) {
      const bs = Math.min(B, n - w0);
      const ids = new Int32Array(bs * ctx);
      const targets = new Int32Array(bs * ctx);
      for (let b = 0; b < bs; b++) {
        const start = (w0 + b) * stride;
        ids.set(stream.subarray(start, start + ctx), b * ctx);
        targets.set(stream.subarray(start + 1, start + ctx + 1), b * ctx);
      }
      const loss = model.nextTokenLoss({ ids, batch: bs, len: ctx }, targets).item();
      total += loss * bs * ctx;
      count += bs * ctx;
    }
    return total / count;
  });
}

/** Cross-entropy (nats/token) of an add-one-smoothed unigram model fitted on train, on held-out. */
export function unigramLoss(train: Int32Array, heldout: Int32Array, vocab: number): number {
  const counts = new Float64Array(vocab).fill(1);
  for (let i = 0; i < train.length; i++) counts[train[i]!]!++;
  const total = train.length + vocab;
  let nll = 0;
  for (let i = 0; i < heldout.length; i++) nll -= Math.log(counts[heldout[i]!]! / total);
  return nll / heldout.length;
}

function validate(o: PretrainOptions): void {
  const ints: Array<[string, number, number]> = [
    ["--layers", o.layers, 1], ["--d-model", o.dModel, 1], ["--heads", o.heads, 1], ["--ctx", o.ctx, 2],
    ["--steps", o.steps, 1], ["--batch-size", o.batchSize, 1], ["--warmup", o.warmup, 0],
    ["--eval-every", o.evalEvery, 1], ["--checkpoint-every", o.checkpointEvery, 1],
  ];
  for (const [name, v, min] of ints) {
    if (!Number.isInteger(v) || v < min) throw new SelfreportError(`${name} must be an integer ≥ ${min}, got ${v}`);
  }
  if (o.dModel % o.heads !== 0) {
    throw new SelfreportError(`--d-model ${o.dModel} does not divide into ${o.heads} heads (d_head would be ${(o.dModel / o.heads).toFixed(2)}); choose a multiple of --heads`);
  }
  if (!(o.lr > 0)) throw new SelfreportError(`--lr must be positive, got ${o.lr}`);
}

export async function pretrain(o: PretrainOptions): Promise<PretrainResult> {
  validate(o);
  const out = o.out;
  const ckDir = join(out, "checkpoint");
  checkOutput(out, { kind: "model", inputs: [o.corpus === "brown" ? undefined : o.corpus], force: o.force, resume: o.resume, resumeHint: true });
  if (o.resume && !existsSync(join(ckDir, "state.json")) && !existsSync(join(`${ckDir}.old`, "state.json"))) {
    throw new SelfreportError(`--resume: no checkpoint in ${ckDir}`);
  }
  // one writer at a time; a failure removes what this command created, except a checkpoint to --resume from
  return withOutputFolder(out, () => pretrainInto(o), { keepOnFailure: keepCheckpoint });
}

/** Pre-training into the locked model folder `o.out`. */
async function pretrainInto(o: PretrainOptions): Promise<PretrainResult> {
  const out = o.out;
  const ckDir = join(out, "checkpoint");
  writeTokenizerFiles(out);
  const tok = loadTokenizer(out);

  info(`corpus: loading ${o.corpus}`);
  const corpus = loadCorpus(o.corpus);
  const trainStream = tokenizeDocuments(tok, corpus.split("train"));
  const heldStream = tokenizeDocuments(tok, corpus.split("heldout"));
  if (trainStream.length < o.batchSize * (o.ctx + 1)) {
    throw new SelfreportError(`corpus ${o.corpus} has ${trainStream.length} training tokens, fewer than one batch (${o.batchSize} × ${o.ctx + 1}); use a larger corpus or smaller --batch-size/--ctx`);
  }
  info(`corpus: ${trainStream.length.toLocaleString("en-US")} training tokens, ${heldStream.length.toLocaleString("en-US")} held-out tokens`);

  const cfg = makeConfig({ nLayers: o.layers, dModel: o.dModel, nHeads: o.heads, nCtx: o.ctx, dVocab: tok.vocabSize });
  const model = HookedTransformer.init(cfg, o.seed);
  // b_U stays 0 so the saved model is a plain Hugging Face GPT-2 (which has no unembedding bias).
  const trainable = model.parameters().filter((t) => t !== model.b_U);
  for (const t of trainable) t.requiresGrad = true;
  const noDecay = new Set(trainable.filter((t) => t.ndim < 2));
  const opt = adamW(trainable, { beta1: 0.9, beta2: 0.95, weightDecay: o.weightDecay, noDecay });
  const schedule = warmupCosine({ lr: o.lr, warmupSteps: o.warmup, totalSteps: o.steps, minRatio: 0.1 });
  const names = [...model.params.entries()].filter(([, t]) => t !== model.b_U).map(([n]) => n);

  let step = 0;
  let curve: PretrainState["curve"] = [];
  let secondsBefore = 0;
  const { resume: _r, force: _f, command: _c, ...recorded } = o;
  if (o.resume) {
    const ck = loadCheckpoint<PretrainState>(ckDir)!;
    const same = JSON.stringify(ck.state.config) === JSON.stringify(cfg);
    if (!same) throw new SelfreportError(`--resume: the checkpoint in ${ckDir} was made with another model size (${JSON.stringify(ck.state.config)})`);
    for (const n of names) {
      const src = ck.params.get(n);
      if (!src || src.data.length !== model.p(n).size) throw new SelfreportError(`--resume: checkpoint lacks parameter "${n}" or has the wrong size`);
      model.p(n).data.set(src.data);
    }
    opt.loadState(ck.optimizer);
    step = ck.state.step;
    curve = ck.state.curve;
    secondsBefore = ck.state.seconds;
    // the steps after the checkpoint ran before the kill and run again: their log lines go
    truncateLogToStep(join(out, "train_log.jsonl"), step);
    info(`resuming from step ${step} of ${o.steps}`);
  } else {
    rmSync(join(out, "train_log.jsonl"), { force: true });
  }

  const checkpoint = (): void => {
    saveCheckpoint<PretrainState>(ckDir, {
      params: new Map(names.map((n) => [n, { shape: model.p(n).shape, data: model.p(n).data }])),
      optimizer: opt.state(),
      state: { version: CHECKPOINT_VERSION, step, config: cfg, options: recorded, curve, seconds: secondsBefore + (Date.now() - t0) / 1000 },
    });
  };

  info(`model: ${cfg.nLayers} layers, d_model ${cfg.dModel}, ${cfg.nHeads} heads, ctx ${cfg.nCtx}, ${trainable.reduce((s, t) => s + t.size, 0).toLocaleString("en-US")} parameters; backend ${getBackend().name}`);
  const bar = progress("pretrain", o.steps, ["loss", "tok/s", "lr"], { start: step });
  const section = interruptibleSection();
  const t0 = Date.now();
  let tokensThisRun = 0;
  let ema = NaN;
  try {
    while (step < o.steps) {
      const lr = schedule(step);
      const { batch, targets } = sampleWindows(trainStream, o.batchSize, o.ctx, new Rng(o.seed * 1_000_003 + step));
      const loss = model.nextTokenLoss(batch, targets);
      const lossValue = loss.item();
      if (!Number.isFinite(lossValue)) {
        throw new SelfreportError(`loss became ${lossValue} at step ${step}; the last good checkpoint (step ${curve.at(-1)?.step ?? 0}) is in ${ckDir}; lower --lr and --resume`);
      }
      opt.zeroGrad();
      backward(loss);
      clipGradNorm(trainable, o.gradClip);
      opt.step(lr);
      step++;
      tokensThisRun += o.batchSize * o.ctx;
      ema = Number.isNaN(ema) ? lossValue : 0.95 * ema + 0.05 * lossValue;
      const tps = tokensThisRun / ((Date.now() - t0) / 1000);
      const point: PretrainState["curve"][number] = { step, train: lossValue };
      if (step % o.evalEvery === 0 || step === o.steps) point.heldout = evaluateLoss(model, heldStream, o.ctx);
      curve.push(point);
      appendFileSync(join(out, "train_log.jsonl"), JSON.stringify({ ...point, lr, tokens_per_s: Math.round(tps) }) + "\n");
      bar.update(step, { loss: ema.toFixed(3), "tok/s": Math.round(tps), lr: lr.toExponential(2) });
      // a turn of the event loop so that a SIGINT/SIGTERM handler can run at all (the loop is synchronous)
      await yieldToEventLoop();
      const signal = interruptSignal();
      if (step % o.checkpointEvery === 0 || signal !== null) checkpoint();
      if (signal !== null) throw new Interrupted(signal, `pre-training stopped at step ${step} of ${o.steps}; checkpoint saved in ${ckDir}`, { resume: "--resume" });
    }
  } finally {
    bar.stop();
    section.end();
  }
  checkpoint();

  const seconds = secondsBefore + (Date.now() - t0) / 1000;
  const heldoutLoss = evaluateLoss(model, heldStream, o.ctx, 256);
  const uni = unigramLoss(trainStream, heldStream, cfg.dVocab);
  const result: PretrainResult = {
    heldoutLoss,
    heldoutPerplexity: Math.exp(heldoutLoss),
    unigramLoss: uni,
    trainTokens: trainStream.length,
    heldoutTokens: heldStream.length,
    seconds,
    tokensPerSecond: (o.steps * o.batchSize * o.ctx) / seconds,
  };
  saveModel(model, out, {
    dtype: o.dtype,
    extraConfig: { selfreport: { trained_by: "selfreport pretrain", command: o.command ?? null, options: recorded, result } },
  });
  writeJsonAtomic(join(out, "pretrain_metrics.json"), { ...result, unigramPerplexity: Math.exp(uni), curve });
  const points = curve.flatMap((p) => [{ x: p.step, y: p.train, series: "train" }, ...(p.heldout !== undefined ? [{ x: p.step, y: p.heldout, series: "held-out" }] : [])]);
  writeFileAtomic(join(out, "loss_curve.svg"), await renderSvg(lineChart({ title: "Pre-training loss", x: "step", y: "cross-entropy (nats/token)", series: "series", data: points })));
  return result;
}
