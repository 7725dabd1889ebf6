/**
 * What selfreport accepts from disk, one check per file kind, used by every reader of that kind:
 *
 *   checkDatasetMeta      a dataset's `selfreport` metadata record (readDataset)
 *   checkDatasetArrays    a dataset's arrays: lengths, read positions inside each prefix, finite targets, splits
 *   checkRunConfig        a run's config.json (readRunConfig, and import-pt on what it is about to write)
 *   checkFiniteTensor     head tensors (checkHeadParams) and model weights (readHfParams): no NaN or ±Inf
 *   checkAnalysisSummary  an analysis folder's summary.json (the report, the notebooks)
 *
 * Each problem throws one SelfreportError naming the file, the field and the expected value:
 *   `run/config.json: field "target_layer" must be a non-negative integer, got "2"`.
 * What can only be checked against a model (a layer past the model's last, a neuron past its width)
 * is checked where the model is loaded: checkTargetFitsModel.
 */
import { SelfreportError } from "../errors.ts";

export type JsonObject = Record<string, unknown>;

export function isJsonObject(v: unknown): v is JsonObject {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/** A value as the user would write it in the file (NaN and ±Infinity by name; long values cut). */
export function showValue(v: unknown): string {
  if (v === undefined) return "nothing";
  if (typeof v === "number") return Number.isNaN(v) ? "NaN" : String(v);
  const s = JSON.stringify(v) ?? String(v);
  return s.length > 60 ? `${s.slice(0, 57)}...` : s;
}

export function fieldError(file: string, field: string, expected: string, got: unknown): SelfreportError {
  if (got === undefined) return new SelfreportError(`${file}: field "${field}" is missing (expected ${expected})`);
  return new SelfreportError(`${file}: field "${field}" must be ${expected}, got ${showValue(got)}`);
}

/** The value at a dotted path ("head_config.input_dim"), undefined when any part is missing. */
export function fieldAt(obj: JsonObject, path: string): unknown {
  let v: unknown = obj;
  for (const key of path.split(".")) v = isJsonObject(v) ? v[key] : undefined;
  return v;
}

/** Typed field checks on one JSON object of one file; `prefix` names nested objects in messages. */
export class Fields {
  constructor(readonly obj: JsonObject, readonly file: string, readonly prefix = "") {}

  name(key: string): string {
    return this.prefix === "" ? key : `${this.prefix}.${key}`;
  }

  fail(key: string, expected: string): never {
    throw fieldError(this.file, this.name(key), expected, fieldAt(this.obj, key));
  }

  has(key: string): boolean {
    return this.obj[key] !== undefined && this.obj[key] !== null;
  }

  /** A safe integer in [min, max]. */
  int(key: string, min = 0, max = Number.MAX_SAFE_INTEGER): number {
    const v = this.obj[key];
    if (typeof v !== "number" || !Number.isSafeInteger(v) || v < min || v > max) {
      this.fail(key, min === 0 && max === Number.MAX_SAFE_INTEGER ? "a non-negative integer" : max === Number.MAX_SAFE_INTEGER ? `an integer ≥ ${min}` : `an integer in ${min}..${max}`);
    }
    return v;
  }

  intOrNull(key: string, min = 0, max = Number.MAX_SAFE_INTEGER): number | null {
    return this.obj[key] === null ? null : this.int(key, min, max);
  }

  /** A finite number; `positive` asks for > 0, `min`/`below` bound it. */
  num(key: string, o: { positive?: boolean; min?: number; below?: number } = {}): number {
    const v = this.obj[key];
    const what = o.positive ? "a positive finite number" : o.min !== undefined && o.below !== undefined ? `a number in [${o.min}, ${o.below})` : o.min !== undefined ? `a finite number ≥ ${o.min}` : "a finite number";
    if (typeof v !== "number" || !Number.isFinite(v) || (o.positive === true && !(v > 0)) || (o.min !== undefined && v < o.min) || (o.below !== undefined && v >= o.below)) this.fail(key, what);
    return v;
  }

  str(key: string): string {
    const v = this.obj[key];
    if (typeof v !== "string") this.fail(key, "a string");
    return v;
  }

  bool(key: string): boolean {
    const v = this.obj[key];
    if (typeof v !== "boolean") this.fail(key, "true or false");
    return v;
  }

  oneOf<T extends string>(key: string, choices: readonly T[]): T {
    const v = this.obj[key];
    if (typeof v !== "string" || !(choices as readonly string[]).includes(v)) this.fail(key, `one of ${choices.map((c) => JSON.stringify(c)).join(", ")}`);
    return v as T;
  }

  object(key: string): Fields {
    const v = this.obj[key];
    if (!isJsonObject(v)) this.fail(key, "an object");
    return new Fields(v, this.file, this.name(key));
  }

  /** A list of finite numbers, of `length` when given, non-decreasing when asked. */
  numbers(key: string, o: { length?: number; nondecreasing?: boolean } = {}): number[] {
    const v = this.obj[key];
    const what = `a list of ${o.length ?? ""}${o.length !== undefined ? " " : ""}finite numbers${o.nondecreasing ? " in non-decreasing order" : ""}`;
    if (!Array.isArray(v) || (o.length !== undefined && v.length !== o.length)) this.fail(key, what);
    v.forEach((x: unknown, i) => {
      if (typeof x !== "number" || !Number.isFinite(x)) throw fieldError(this.file, `${this.name(key)}[${i}]`, "a finite number", x);
      if (o.nondecreasing && i > 0 && x < (v[i - 1] as number)) throw fieldError(this.file, `${this.name(key)}[${i}]`, `≥ the previous edge ${v[i - 1] as number} (${what})`, x);
    });
    return v as number[];
  }

  /** `"last"` or a non-negative integer below `below`. */
  tokenPos(key: string, below = Number.MAX_SAFE_INTEGER): "last" | number {
    const v = this.obj[key];
    if (v === "last") return v;
    if (typeof v !== "number" || !Number.isSafeInteger(v) || v < 0 || v >= below) this.fail(key, below === Number.MAX_SAFE_INTEGER ? `"last" or a non-negative index` : `"last" or an index in 0..${below - 1}`);
    return v;
  }
}

// ───────────────────────────── datasets ─────────────────────────────

const LAYER_TYPES = ["mlp_post", "mlp_out"] as const;
const WEIGHTS = ["raw", "tl"] as const;

/** The hook a dataset's target is read from (as src/selfreport/dataset.ts targetHookName). */
function hookOf(layer: number, layerType: string): string {
  return layerType === "mlp_post" ? `blocks.${layer}.mlp.hook_post` : `blocks.${layer}.hook_mlp_out`;
}

/**
 * The dataset metadata record, after its format and version are known to be selfreport's. Field by
 * field as DatasetMeta in src/selfreport/dataset.ts.
 */
export function checkDatasetMeta(meta: JsonObject, file: string): void {
  const f = new Fields(meta, file);
  f.str("model_dir");
  f.str("model_name");
  f.oneOf("weights", WEIGHTS);
  const layer = f.int("layer");
  f.int("neuron");
  const layerType = f.oneOf("layer_type", LAYER_TYPES);
  const hook = f.str("hook");
  if (hook !== hookOf(layer, layerType)) f.fail("hook", JSON.stringify(hookOf(layer, layerType)) + " (from layer and layer_type)");
  const maxLen = f.int("max_len", 1);
  f.tokenPos("token_pos", maxLen);
  f.int("n", 1);
  const stats = f.object("stats");
  stats.num("mean");
  stats.num("std", { min: 0 });
  stats.num("min");
  stats.num("max");
  const numBins = f.int("num_bins", 1);
  f.numbers("bin_edges", { length: numBins + 1, nondecreasing: true });
}

/** The arrays of a dataset (shapes already checked): each read position inside its own prefix, finite targets, known splits. */
export function checkDatasetArrays(
  a: { tokens: Int32Array; lengths: Int32Array; positions: Int32Array; targets: Float32Array; split: Int32Array; window: Int32Array },
  meta: { n: number; max_len: number; token_pos: "last" | number },
  file: string,
): void {
  const { n, max_len: L, token_pos: tokenPos } = meta;
  for (let i = 0; i < n; i++) {
    const len = a.lengths[i]!;
    if (len < 1 || len > L) throw new SelfreportError(`${file}: lengths[${i}] must be in 1..${L} (max_len), got ${len}`);
    const pos = a.positions[i]!;
    const want = tokenPos === "last" ? len - 1 : tokenPos;
    if (pos !== want) {
      throw new SelfreportError(`${file}: positions[${i}] must be ${want} (${tokenPos === "last" ? `the last token of its ${len}-token prefix` : `token_pos ${tokenPos}`}${pos >= len ? "; it points past the prefix" : ""}), got ${pos}`);
    }
    if (tokenPos !== "last" && pos >= len) throw new SelfreportError(`${file}: positions[${i}] = ${pos} is past its ${len}-token prefix (token_pos ${tokenPos})`);
    const t = a.targets[i]!;
    if (!Number.isFinite(t)) throw new SelfreportError(`${file}: targets[${i}] is ${t}: the dataset's target activations must be finite numbers (rebuild the dataset; a model with non-finite weights gives NaN targets)`);
    const s = a.split[i]!;
    if (s !== 0 && s !== 1 && s !== 2) throw new SelfreportError(`${file}: split[${i}] must be 0 (train), 1 (validation) or 2 (test), got ${s}`);
    if (a.window[i]! < 0) throw new SelfreportError(`${file}: window[${i}] must be a non-negative window index, got ${a.window[i]!}`);
  }
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < a.lengths[i]!; j++) {
      const id = a.tokens[i * L + j]!;
      if (id < 0) throw new SelfreportError(`${file}: tokens[${i}][${j}] must be a token id ≥ 0, got ${id}`);
    }
  }
}

// ───────────────────────────── run configs ─────────────────────────────

const HEAD_CLASSES = { RegressionHead: "regression", ClassificationHead: "classification", TokenHead: "token" } as const;

/**
 * A run's config.json (RunConfig in src/selfreport/run.ts), after its format_version is known to be
 * selfreport's: every field the analyses and the predictor read.
 */
export function checkRunConfig(cfg: JsonObject, file: string): void {
  const f = new Fields(cfg, file);
  const headType = f.oneOf("head_type", ["regression", "classification", "token"] as const);
  f.int("target_layer");
  f.int("target_neuron");
  f.oneOf("layer_type", LAYER_TYPES);
  f.tokenPos("token_pos");
  f.int("feature_layer");
  const hc = f.object("head_config");
  const className = hc.oneOf("class_name", Object.keys(HEAD_CLASSES) as Array<keyof typeof HEAD_CLASSES>);
  if (HEAD_CLASSES[className] !== headType) hc.fail("class_name", `"${Object.keys(HEAD_CLASSES).find((k) => HEAD_CLASSES[k as keyof typeof HEAD_CLASSES] === headType)}" (head_type is "${headType}")`);
  const inputDim = hc.int("input_dim", 1);
  hc.num("dropout", { min: 0, below: 1 });
  const hidden = hc.intOrNull("hidden_dim", 1);
  if (hidden === null) {
    if (hc.obj["activation"] !== null && hc.obj["activation"] !== undefined) hc.fail("activation", "null (there is no hidden layer: hidden_dim is null)");
  } else hc.oneOf("activation", ["relu", "gelu", "tanh"] as const);
  let numClasses: number | null = null;
  if (headType === "regression") {
    if (hc.obj["num_classes"] !== null && hc.obj["num_classes"] !== undefined) hc.fail("num_classes", "null for a regression head");
  } else numClasses = headType === "token" ? hc.int("num_classes", 10, 10) : hc.int("num_classes", 2);
  if (headType === "token") {
    const d = hc.obj["digit_tokens"];
    if (!Array.isArray(d) || d.length !== 10 || !d.every((x) => typeof x === "number" && Number.isSafeInteger(x) && x >= 0)) hc.fail("digit_tokens", "a list of 10 token ids");
  }
  f.str("base_model_dir");
  f.oneOf("weights", WEIGHTS);
  if (cfg["d_model"] !== undefined) {
    const dModel = f.int("d_model", 1);
    if (inputDim !== dModel) hc.fail("input_dim", `${dModel} (d_model)`);
  }
  f.numbers("bin_edges", { nondecreasing: true, ...(numClasses !== null ? { length: numClasses + 1 } : {}) });
  f.num("activation_mean");
  f.num("activation_std", { positive: true });
  const freeze = f.oneOf("freeze_mode", ["frozen", "unfrozen", "partial"] as const);
  if (freeze === "partial") f.int("unfreeze_last", 1);
  const ds = f.object("dataset");
  ds.str("path");
}

/**
 * The run's target and feature layer against the model it runs on: a layer past the model's last or
 * a neuron past its width is refused here, before anything is computed from it.
 */
export function checkTargetFitsModel(
  cfg: { target_layer: number; target_neuron: number; layer_type: string; feature_layer?: number },
  model: { nLayers: number; dMlp: number; dModel: number },
  file: string,
  fields: { layer: string; neuron: string } = { layer: "target_layer", neuron: "target_neuron" },
): void {
  const { nLayers, dMlp, dModel } = model;
  if (cfg.target_layer >= nLayers) throw fieldError(file, fields.layer, `a layer of the model, 0..${nLayers - 1}`, cfg.target_layer);
  const width = cfg.layer_type === "mlp_post" ? dMlp : dModel;
  if (cfg.target_neuron >= width) {
    throw fieldError(file, fields.neuron, `${cfg.layer_type === "mlp_post" ? "an MLP neuron" : "a residual dimension"} of the model, 0..${width - 1}`, cfg.target_neuron);
  }
  if (cfg.feature_layer !== undefined && cfg.feature_layer >= nLayers) throw fieldError(file, "feature_layer", `a layer of the model, 0..${nLayers - 1}`, cfg.feature_layer);
}

// ───────────────────────────── tensors ─────────────────────────────

/** Index of the first NaN or ±Inf in data[from, to), or -1. */
function firstNonFinite(data: Float32Array, from: number, to: number): number {
  for (let i = from; i < to; i++) {
    const x = data[i]!;
    if (x - x !== 0) return i; // NaN − NaN and Inf − Inf are NaN
  }
  return -1;
}

/**
 * Throws unless every value of the tensor is finite (one pass; the first bad element is named). The
 * pass goes in chunks of 64 Ki values, so that the loop is optimised after the first chunk instead
 * of running a whole embedding matrix unoptimised (GPT-2 small's 124 M values: about 0.5 s on a busy 2-core machine).
 */
export function checkFiniteTensor(data: Float32Array, file: string, name: string, what: string): void {
  const CHUNK = 1 << 16;
  for (let s = 0; s < data.length; s += CHUNK) {
    const i = firstNonFinite(data, s, Math.min(data.length, s + CHUNK));
    if (i >= 0) throw new SelfreportError(`${file}: ${what} "${name}" holds ${data[i]!} at element ${i}; expected finite numbers`);
  }
}

// ───────────────────────────── analysis summaries ─────────────────────────────

export type AnalysisKind = "weights" | "patching" | "residual";
type FieldKind = "number" | "string" | "object" | "array" | "object|null" | "number|null";

/** The fields each analysis's verdict and report section read. */
const SUMMARY_FIELDS: Record<AnalysisKind, Array<[string, FieldKind]>> = {
  weights: [
    ["target.layer", "number"], ["target.neuron", "number"], ["target.layer_type", "string"], ["target.d_model", "number"], ["reading", "object"], ["pattern.comparisons", "object"],
    ["head.type", "string"], ["head.method", "string"], ["examples.n_used", "number"], ["examples.n_dataset", "number"], ["examples.features", "string"],
    ["examples.prediction_activation_r", "number"], ["direct_write", "object"], ["notes", "array"],
  ],
  patching: [
    ["target.neuron", "number"], ["fit", "object|null"], ["fit_bootstrap", "object"], ["controls.k", "number"], ["controls.n_defined", "number"], ["controls.percentile_abs", "number|null"],
    ["inputs.n_used", "number"], ["settings", "array"], ["direct", "object"], ["notes", "array"],
  ],
  residual: [
    ["target.freeze_mode", "string"], ["target.feature_layer", "number"], ["target.layer", "number"], ["target.d_model", "number"], ["inputs.n_used", "number"], ["readout", "object"],
    ["predictions.base.r_with_target", "number"], ["predictions.finetuned.r_with_target", "number"], ["layers", "array"], ["neuron.r", "number"], ["notes", "array"],
  ],
};

const KIND_TEXT: Record<FieldKind, string> = {
  number: "a number", string: "a string", object: "an object", array: "a list", "object|null": "an object or null", "number|null": "a number or null",
};

/** The value at a dotted path of `obj`, or throws naming the file, the path and the expected kind. */
export function requireField(obj: JsonObject, path: string, kind: FieldKind, file: string): unknown {
  const v = fieldAt(obj, path);
  const ok =
    kind === "number" ? typeof v === "number" :
    kind === "string" ? typeof v === "string" :
    kind === "object" ? isJsonObject(v) :
    kind === "array" ? Array.isArray(v) :
    kind === "object|null" ? v === null || isJsonObject(v) :
    v === null || typeof v === "number";
  if (!ok) throw fieldError(file, path, KIND_TEXT[kind], v);
  return v;
}

/** An analysis folder's summary.json: analysis `name`'s, with every field the report reads. */
export function checkAnalysisSummary(name: AnalysisKind, summary: JsonObject, file: string): void {
  if (summary["analysis"] !== name) throw fieldError(file, "analysis", JSON.stringify(name), summary["analysis"]);
  for (const [field, kind] of SUMMARY_FIELDS[name]) requireField(summary, field, kind, file);
}
