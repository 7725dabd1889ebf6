/**
 * The training flags, registered in one place for `selfreport train` and `selfreport sweep`: each is
 * one field of the snake_case TrainingSettings record (src/selfreport/run.ts), with the defaults of
 * TRAINING_DEFAULTS. The learning rate is each command's own (`train --lr` defaults by freezing mode,
 * `sweep` has one rate for frozen heads and one for fine-tuning).
 */
import type { Command } from "commander";
import { TRAINING_DEFAULTS } from "../selfreport/train.ts";
import type { TrainingSettings } from "../selfreport/run.ts";
import { parseFloatOption, parseIntOption } from "./options.ts";

/** What commander gives for the flags addTrainingOptions registers. */
export interface TrainingFlags {
  featureLayer: number;
  epochs: number;
  batchSize: number;
  weightDecay: number;
  warmup: number;
  gradClip: number;
  patience: number;
  seed: number;
}

export function addTrainingOptions(cmd: Command): Command {
  const d = TRAINING_DEFAULTS;
  return cmd
    .option("--feature-layer <L>", "the head reads resid_post of this layer (-1 = last)", parseIntOption("--feature-layer", -1), d.feature_layer)
    .option("--epochs <n>", "maximum epochs", parseIntOption("--epochs", 1), d.epochs)
    .option("--batch-size <n>", "examples per step", parseIntOption("--batch-size", 1), d.batch_size)
    .option("--weight-decay <wd>", "AdamW decoupled weight decay", parseFloatOption("--weight-decay", 0), d.weight_decay)
    .option("--warmup <steps>", "linear warm-up steps before cosine decay", parseIntOption("--warmup", 0), d.warmup)
    .option("--grad-clip <norm>", "global gradient-norm clip (0 = off)", parseFloatOption("--grad-clip", 0), d.grad_clip)
    .option("--patience <epochs>", "early stopping: epochs without validation improvement", parseIntOption("--patience", 1), d.patience)
    .option("--seed <seed>", "training seed (head init, shuffling, dropout)", parseIntOption("--seed"), d.seed);
}

/** The settings record of the flags, with the command's learning rate. */
export function trainingSettingsFromFlags(o: TrainingFlags, lr: number): TrainingSettings {
  return {
    feature_layer: o.featureLayer, epochs: o.epochs, batch_size: o.batchSize, lr, weight_decay: o.weightDecay, warmup: o.warmup,
    grad_clip: o.gradClip, patience: o.patience, seed: o.seed,
  };
}
