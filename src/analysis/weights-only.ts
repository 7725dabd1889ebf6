/**
 * The weights analysis without examples, for a run that has no dataset (an imported run, before
 * `selfreport dataset` was run for it). What needs only the weights is computed exactly as
 * weightsAnalysis computes it: the head's reading direction, its cosines with the neuron's
 * W_in/W_out (or e_n) against the random-direction null, their ranks in the layer and overall, the
 * direct-write geometry and the PCA of W_out. Everything that needs examples (the activation
 * pattern, whitened cosines, residual anisotropy, per-example gradients, the direct-write variance
 * share, r(prediction, activation)) is listed in `skipped`, each with the commands that add it.
 *
 * A head with a hidden layer has no reading direction without examples (it is the mean gradient
 * over them), so it is refused with those commands.
 */
import { join } from "node:path";
import { SelfreportError } from "../errors.ts";
import type { HookedTransformer } from "../model/transformer.ts";
import { targetHookName } from "../selfreport/dataset.ts";
import type { Run } from "../selfreport/run.ts";
import { datasetCommandFor } from "./context.ts";
import { checkRunTarget, wInFolding, headDirection, neuronVector, readingComparisons, round6, wOutPcaOf, type VectorKind, type WeightsSummary } from "./weights.ts";
import * as la from "./linalg.ts";

export interface SkippedMeasure {
  /** The summary field that a run with a dataset would have. */
  field: string;
  what: string;
  /** The commands that add it. */
  command: string;
}

export interface WeightsOnlySummary extends Pick<WeightsSummary, "null_model" | "vectors" | "reading" | "w_out_pca" | "layer_cosines" | "notes"> {
  /** "weights only": computed without examples. */
  mode: "weights only";
  /** As in the full summary, without the readout correlation (it needs examples). */
  w_in: { ln2_already_folded: boolean; note: string } | null;
  target: WeightsSummary["target"];
  head: Omit<WeightsSummary["head"], "hidden_dim"> & { hidden_dim: null };
  /** Where the neuron's direct write meets the head, from the weights alone. */
  direct_write: {
    applicable: boolean;
    note: string;
    /** cos(head direction, write vector): the reading comparison with W_out[n, :] (or e_n). */
    cosine: number;
    /** |W_out[n, :]| (1 for e_n): residual change per unit of activation. */
    write_norm: number;
    /**
     * Prediction change (activation units) per unit of the neuron's activation through its direct
     * write: std·output.weight·W_out[n, :] for a linear regression head (exact: its gradient is
     * constant); null for bin heads, whose gradient depends on the softmax at each example.
     */
    w_dot_write: number | null;
  };
  skipped: SkippedMeasure[];
}

/** The commands that give a run without a dataset one, then rerun the weights analysis with it (replacing this weight-only one: --force). */
export function withDataCommand(run: Run, outDir: string): string {
  const file = join(run.dir, "dataset.safetensors");
  return `${datasetCommandFor(run, file)} && selfreport analyze weights --run ${run.dir} --data ${file} --out ${outDir} --force`;
}

export function weightsOnlyAnalysis(run: Run, model: HookedTransformer, outDir: string): WeightsOnlySummary {
  const c = run.config;
  const { dModel: C, dMlp: M, nLayers } = model.cfg;
  const layer = c.target_layer;
  const neuron = c.target_neuron;
  checkRunTarget(run, model);
  const command = withDataCommand(run, outDir);
  if (c.head_config.hidden_dim !== null) {
    throw new SelfreportError(`run ${run.dir} has no dataset, and its head has a hidden layer, whose reading direction is the mean gradient over examples; add one with \`${command}\``);
  }
  const notes: string[] = ["no dataset: only the measures that need no examples were computed (see skipped)"];
  const isPost = c.layer_type === "mlp_post";

  const { direction: rawDirection, method, unfolded } = headDirection(run, model, new Float64Array(C));
  const w = la.unit(rawDirection); // [C]
  if (la.norm(rawDirection) === 0) notes.push("the head's reading direction is zero: every cosine below is 0");

  const { vectors, folded, reading, layerCos, note } = readingComparisons(model, layer, neuron, isPost, w);
  if (note !== null) notes.push(note);
  if (c.freeze_mode !== "frozen") notes.push(`${c.freeze_mode} run: the weights are the fine-tuned model's`);

  const writeKind: VectorKind = isPost ? "W_out" : "e_n";
  const writer = neuronVector(model, writeKind, layer, neuron); // [C]
  const readsAfterWrite = c.feature_layer >= layer;
  const linearRegression = run.headType === "regression";
  const writeName = isPost ? "W_out[n, :]" : `e_${neuron}`;
  const directWrite: WeightsOnlySummary["direct_write"] = {
    applicable: readsAfterWrite,
    note: !readsAfterWrite
      ? `the head reads layer ${c.feature_layer}, before the target layer ${layer} writes: there is no direct write to read`
      : linearRegression
        ? `w_dot_write = activation_std·output.weight·${writeName}: the prediction's change per unit of activation through the direct write (exact for a linear regression head)`
        : `w_dot_write needs examples: a ${run.headType} head's gradient depends on its softmax at each example`,
    cosine: reading[writeKind]!.cosine,
    write_norm: la.norm(writer),
    w_dot_write: readsAfterWrite && linearRegression ? c.activation_std * la.dot(rawDirection, writer) : null,
  };
  if (!readsAfterWrite) notes.push(directWrite.note);

  const skip = (field: string, what: string): SkippedMeasure => ({ field, what, command });
  const skipped: SkippedMeasure[] = [
    skip("examples", "r(prediction, activation) over the dataset"),
    skip("pattern", "the activation pattern Σw/(wᵀΣw) and its cosines and ranks"),
    skip("whitened", "cosines in the whitened basis"),
    skip("w_in.readout_correlation", "the correlation of what the head and W_in[:, n] read over the dataset"),
    skip("residual", "residual-stream anisotropy (participation ratio, top PC, mean share)"),
    skip("gradient", "per-example gradients: mean, mean share, principal directions"),
    skip("direct_write.share", "the direct-write share of the prediction's variance"),
  ];

  return {
    mode: "weights only",
    target: {
      layer, neuron, layer_type: c.layer_type, hook: targetHookName(layer, c.layer_type), feature_layer: c.feature_layer,
      d_model: C, d_mlp: M, n_layers: nLayers, weights: c.weights, freeze_mode: c.freeze_mode,
    },
    null_model: { mean: 0, std: 1 / Math.sqrt(C), description: `cosine of two independent random directions in ${C} dimensions: mean 0, std 1/√${C}` },
    head: {
      type: run.headType, hidden_dim: null, method, direction: round6(w),
      cosine_unfolded_vs_folded: unfolded === null ? null : la.cosine(unfolded, rawDirection),
    },
    vectors,
    w_in: isPost ? wInFolding(folded, model) : null,
    reading,
    direct_write: directWrite,
    w_out_pca: isPost ? wOutPcaOf(model, layer, neuron, w) : null,
    layer_cosines: layerCos,
    notes,
    skipped,
  };
}
