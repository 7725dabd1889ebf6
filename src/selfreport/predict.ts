/**
 * Predictions of a trained run on new text, beside the real activation of the target neuron
 * (in the base model, which is what the dataset's targets are; for fine-tuned runs also in the
 * fine-tuned model, which may have changed the neuron it reports).
 */
import { noGrad } from "../tensor/index.ts";
import type { HookedTransformer } from "../model/transformer.ts";
import type { Tokenizer } from "../model/tokenizer.ts";
import { SelfreportError } from "../errors.ts";
import { runTarget, targetHook } from "./target.ts";
import { headForward, predictionsFromOutput, readFeatures } from "./predictor.ts";
import type { Run } from "./run.ts";

export interface Prediction {
  prompt: string;
  tokens: number;
  position: number;
  predicted: number;
  actual: number;
  /** The target neuron in the fine-tuned model (unfrozen/partial runs only). */
  actualFinetuned: number | null;
}

/** Read position of a prompt of `length` tokens under the run's token_pos. */
export function readPosition(tokenPos: "last" | number, length: number, label: string): number {
  if (tokenPos === "last") return length - 1;
  if (tokenPos >= length) throw new SelfreportError(`${label} has ${length} tokens, but the run reads position ${tokenPos}`);
  return tokenPos;
}

/** Target activation of each prompt at its read position: [B]. */
export function targetActivations(model: HookedTransformer, run: Run, batch: { ids: Int32Array; batch: number; len: number; attentionMask: Uint8Array }, positions: ArrayLike<number>): Float32Array {
  const c = run.config;
  const hook = targetHook(runTarget(c));
  const { cache } = noGrad(() => model.runWithCache(batch, [hook], { stopAtLayer: c.target_layer + 1 }));
  const A = cache.get(hook)!; // [B, T, width]
  const width = A.shape[2]!;
  return Float32Array.from({ length: batch.batch }, (_, b) => A.data[(b * batch.len + positions[b]!) * width + c.target_neuron]!);
}

export function predictPrompts(run: Run, runModel: HookedTransformer, baseModel: HookedTransformer, tok: Tokenizer, prompts: readonly string[]): Prediction[] {
  if (prompts.length === 0) throw new SelfreportError("give at least one --prompt");
  const batch = tok.encodeBatch(prompts);
  const positions = batch.lengths.map((len, i) => {
    if (len === 0) throw new SelfreportError(`prompt ${i + 1} is empty`);
    if (len > baseModel.cfg.nCtx) throw new SelfreportError(`prompt ${i + 1} has ${len} tokens, more than the model's n_positions ${baseModel.cfg.nCtx}`);
    return readPosition(run.config.token_pos, len, `prompt ${i + 1}`);
  });
  const pred = noGrad(() => {
    const feats = readFeatures(runModel, batch, positions, run.config.feature_layer);
    return predictionsFromOutput(run.headType, headForward(run.config.head_config, run.head, feats, runModel), run.readout);
  });
  const actual = targetActivations(baseModel, run, batch, positions);
  const ft = runModel === baseModel ? null : targetActivations(runModel, run, batch, positions);
  return prompts.map((prompt, i) => ({
    prompt, tokens: batch.lengths[i]!, position: positions[i]!, predicted: pred[i]!, actual: actual[i]!, actualFinetuned: ft === null ? null : ft[i]!,
  }));
}
