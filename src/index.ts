/**
 * selfreport's public API: `import { HookedTransformer } from "selfreport"`.
 *
 * What is exported here is the stable surface (docs/api.md): the model, its cache and hooks, the
 * tensor type, and the selfreport pipeline the notebooks use (corpus → neuron explorer → dataset →
 * training → analyses → verdicts). Everything else under src/ is internal and may change.
 */

// The model (TransformerLens-style)
export { HookedTransformer } from "./api/hooked-transformer.ts";
export type {
  ModelInput, FromPretrainedOptions, ToTokensOptions, RunOptions, RunWithCacheOptions, RunWithHooksOptions,
  ModelGenerateOptions, ModelGenerateResult, RunResult, BlockWeights,
} from "./api/hooked-transformer.ts";
export { ActivationCache } from "./api/activation-cache.ts";
export type { AccumulatedResidOptions, DecomposeResidOptions, ApplyLnOptions, LogitAttrsOptions, TokenTargets, StackOptions } from "./api/activation-cache.ts";
export { getActName } from "./api/act-name.ts";
export { BLOCK_HOOKS, hookNames } from "./model/hooks.ts";
export type { Hook, HookFn, HookFilter, HookContext } from "./model/hooks.ts";
export { tokenBatch } from "./model/transformer.ts";
export type { TokenBatch } from "./model/transformer.ts";
export type { ModelConfig } from "./model/config.ts";
export type { WeightProcessing } from "./model/process.ts";
export { loadModel, saveModel } from "./model/load.ts";
export { resolveModelDir } from "./model/resolve.ts";
export type { Tokenizer, EncodeOptions, DecodeOptions, EncodeBatchOptions, EncodedBatch, AddedToken } from "./model/tokenizer.ts";
export { loadTokenizer, digitTokenIds } from "./model/tokenizer-json.ts";

// Tensors
export { Tensor, ShapeError, NanError, tensor, scalar, zeros, ones, full, noGrad } from "./tensor/tensor.ts";
export type { Shape, SliceSpec, NestedNumbers } from "./tensor/tensor.ts";
export { getBackend } from "./tensor/backend/index.ts";

// Errors: a SelfreportError's message names the bad value and what was expected.
export { SelfreportError } from "./errors.ts";
// Ctrl-C / SIGTERM during training: the run saved its checkpoint; exitCode is 130 / 143 (the CLI exits with it).
export { Interrupted } from "./util/interrupt.ts";

// Text and the neuron explorer
export { loadCorpus } from "./data/corpus.ts";
export type { Corpus, Doc, SplitName } from "./data/corpus.ts";
export { layerNeuronStats, suggestTargets, topActivations, TARGET_RULE } from "./lm/neurons.ts";
export type { NeuronStats, LayerStats, TopActivation } from "./lm/neurons.ts";

// Self-report: datasets, training, runs
export { buildDataset, writeDataset, readDataset } from "./selfreport/dataset.ts";
export type { Dataset } from "./selfreport/dataset.ts";
export { train, TRAIN_DEFAULTS, defaultLr } from "./selfreport/train.ts";
export type { TrainOptions, TrainResult } from "./selfreport/train.ts";
export { loadRun } from "./selfreport/run.ts";
export type { Run, RunConfig, FreezeMode } from "./selfreport/run.ts";

// Analyses, plots and verdicts
export { loadAnalysisContext, selectInputs } from "./analysis/context.ts";
export type { AnalysisContext } from "./analysis/context.ts";
export { weightsAnalysis, weightsPlots } from "./analysis/weights.ts";
export type { Comparison, WeightsSummary } from "./analysis/weights.ts";
export { patchingAnalysis, patchingPlots, runPatches } from "./analysis/patching.ts";
export { residualAnalysis, residualPlots } from "./analysis/residual.ts";
export { readAnalysis, analysisCommand, notebookFigures } from "./report/html.ts";
export { weightsVerdict, patchingVerdict, residualVerdict, rankLimit, THRESHOLDS } from "./report/verdicts.ts";
export type { Verdict, VerdictLevel } from "./report/verdicts.ts";
export { histogram, renderSvg } from "./report/charts.ts";
