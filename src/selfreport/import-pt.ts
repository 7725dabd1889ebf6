/**
 * Imports a run of the original Python tool: its `config.json` and the head's PyTorch state dict
 * (`head.pt`, read by the safe unpickler in src/io/torch-pickle.ts, which builds only tensors,
 * OrderedDicts and plain values), into a selfreport run directory that every analysis can read.
 *
 * What is translated, and said in `config.imported.notes`:
 *   - digit_tokens [48…57] (ASCII codes: an old bug of the Python tool; in GPT-2's vocabulary these
 *     ids are the letters "Q"…"Z") become GPT-2's digit tokens [15…24]; the head's trained rows are kept.
 *   - layer_type "mlp_out" keeps its meaning: dimension N of blocks.L.hook_mlp_out, a residual-stream
 *     coordinate, not MLP neuron N. A missing layer_type is taken as "mlp_post".
 *   - feature_layer −1 (or missing) means the last layer.
 *   - head_type decides the head (as in the Python tool); an unknown or missing head_config.class_name
 *     is replaced by head_type's class. A regression config may lack bin_edges (or have null): none are stored.
 *   - fields the Python config lacks get selfreport's defaults (freeze_mode frozen, token_pos last,
 *     weights "tl" = TransformerLens's from_pretrained processing, which the Python tool used).
 * The base model must be local: `--model DIR`, or base_model_name when it resolves to a local directory
 * (a path, a model in models/, or the local Hugging Face cache; see src/model/resolve.ts). Nothing is downloaded.
 */
import { existsSync, readFileSync } from "node:fs";
import { resolve } from "node:path";
import { Tensor } from "../tensor/index.ts";
import { readTorchFile, TorchTensor } from "../io/torch-pickle.ts";
import { loadModel, saveModel } from "../model/load.ts";
import { resolveModelDir } from "../model/resolve.ts";
import { SelfreportError } from "../errors.ts";
import { checkRunConfig } from "../io/schema.ts";
import { expectFolderPath } from "../io/paths.ts";
import { validateTarget, type LayerType, type TokenPos } from "./dataset.ts";
import {
  GPT2_DIGIT_TOKENS, ASCII_DIGIT_CODES, HEAD_TYPES, checkHeadParams, headClassName, headShapes, headTypeOf,
  type HeadConfig, type HeadParams, type HeadType, type HiddenActivation,
} from "./predictor.ts";
import { checkOutput } from "../io/outputs.ts";
import { withOutputFolderSync } from "../io/folder.ts";
import type { HookedTransformer } from "../model/transformer.ts";
import { FREEZE_MODES, RUN_FORMAT_VERSION, removeRunFiles, writeRun, finetunedDir, type FreezeMode, type RunConfig } from "./run.ts";

export interface ImportOptions {
  /** The Python tool's head state dict (torch.save of a dict of tensors). */
  headPath: string;
  /** The Python tool's run config.json. */
  configPath: string;
  outDir: string;
  /** Local Hugging Face directory of the base model (default: base_model_name when it is a directory). */
  modelDir?: string;
  /** Weight processing the Python run used (default "tl": TransformerLens's from_pretrained). */
  weights?: "raw" | "tl";
  /** For unfrozen/partial runs: the fine-tuned model, a local Hugging Face directory. */
  finetunedDir?: string;
  /** Overwrite an existing run directory. */
  force?: boolean;
}

export interface ImportResult {
  config: RunConfig;
  /** Everything that was translated or assumed (also stored in config.imported.notes). */
  notes: string[];
}

type Json = null | boolean | number | string | Json[] | { [k: string]: Json };

function field(cfg: Record<string, Json>, key: string, path: string): Json {
  if (!(key in cfg)) throw new SelfreportError(`${path}: field "${key}" is missing`);
  return cfg[key]!;
}

function num(v: Json, what: string, integer = false): number {
  if (typeof v !== "number" || !Number.isFinite(v) || (integer && !Number.isInteger(v))) {
    throw new SelfreportError(`${what} must be ${integer ? "an integer" : "a finite number"}, got ${JSON.stringify(v)}`);
  }
  return v;
}

function numList(v: Json, what: string): number[] {
  if (!Array.isArray(v)) throw new SelfreportError(`${what} must be a list of numbers, got ${JSON.stringify(v)}`);
  return v.map((x, i) => num(x, `${what}[${i}]`));
}

/** The head tensors by state-dict name, with a shared "head." / "module." prefix removed. */
function headTensors(path: string, cfg: HeadConfig): HeadParams {
  const { tensors } = readTorchFile(path);
  const wanted = headShapes(cfg).map(([n]) => n);
  let names = [...tensors.keys()];
  for (const prefix of ["module.", "head.", "state_dict."]) {
    if (names.length > 0 && names.every((n) => n.startsWith(prefix)) && !wanted.every((w) => names.includes(w))) names = names.map((n) => n.slice(prefix.length));
  }
  const head: HeadParams = new Map();
  [...tensors.values()].forEach((t: TorchTensor, i) => {
    const name = names[i]!;
    if (!wanted.includes(name)) return;
    if (!(t.data instanceof Float32Array)) throw new SelfreportError(`${path}: "${name}" is a ${t.dtype} tensor, expected floating point`);
    head.set(name, new Tensor(t.data, t.shape));
  });
  const extra = names.filter((n) => !wanted.includes(n));
  if (head.size < wanted.length) {
    const missing = wanted.filter((w) => !head.has(w));
    throw new SelfreportError(`${path}: the ${cfg.class_name} needs tensors ${wanted.join(", ")}; missing ${missing.join(", ")}${extra.length > 0 ? ` (the file has ${extra.join(", ")})` : ""}`);
  }
  checkHeadParams(cfg, head, path);
  return head;
}

export function importPythonRun(o: ImportOptions): ImportResult {
  const notes: string[] = [];
  for (const [what, p] of [["--head", o.headPath], ["--config", o.configPath]] as const) {
    if (!existsSync(p)) throw new SelfreportError(`${what} ${p} does not exist`);
  }
  const outDir = resolve(o.outDir);
  expectFolderPath(o.outDir, "--out", "a run directory");
  const existed = checkOutput(outDir, { kind: "run", inputs: [o.headPath, o.configPath, o.modelDir, o.finetunedDir], force: o.force === true }).exists;

  let raw: Json;
  try {
    raw = JSON.parse(readFileSync(o.configPath, "utf8")) as Json;
  } catch (e) {
    throw new SelfreportError(`${o.configPath}: not valid JSON (${(e as Error).message})`);
  }
  if (raw === null || typeof raw !== "object" || Array.isArray(raw)) throw new SelfreportError(`${o.configPath}: expected a JSON object`);
  const pc = raw;
  const path = o.configPath;
  if ("format_version" in pc) throw new SelfreportError(`${path} is already a selfreport run config (format_version ${JSON.stringify(pc["format_version"])}); nothing to import`);

  // ---- the head
  const headType = field(pc, "head_type", path);
  if (typeof headType !== "string" || !HEAD_TYPES.includes(headType as HeadType)) {
    throw new SelfreportError(`${path}: head_type ${JSON.stringify(headType)} is not one of ${HEAD_TYPES.join(", ")}`);
  }
  const hcRaw = field(pc, "head_config", path);
  if (hcRaw === null || typeof hcRaw !== "object" || Array.isArray(hcRaw)) throw new SelfreportError(`${path}: head_config must be an object`);
  const hidden = hcRaw["hidden_dim"] ?? null;
  const activation = hcRaw["activation"] ?? null;
  if (activation !== null && !["relu", "gelu", "tanh"].includes(String(activation))) throw new SelfreportError(`${path}: head_config.activation ${JSON.stringify(activation)} is not relu, gelu or tanh`);
  // The Python tool reads head_type; head_config.class_name is informational there. A class name
  // selfreport does not know is replaced by head_type's (with a note); a known one must agree.
  const knownClass = headClassName(headType as HeadType);
  const rawClass = hcRaw["class_name"];
  const classKnown = HEAD_TYPES.some((t) => headClassName(t) === rawClass);
  if (!classKnown) notes.push(`head_config.class_name ${rawClass == null ? "was missing" : `${JSON.stringify(rawClass)} is not a class selfreport knows`}: taken as ${knownClass} from head_type "${headType}"`);
  const headCfg: HeadConfig = {
    class_name: classKnown ? (rawClass as HeadConfig["class_name"]) : knownClass,
    input_dim: num(field(hcRaw, "input_dim", `${path} head_config`), "head_config.input_dim", true),
    dropout: hcRaw["dropout"] == null ? 0 : num(hcRaw["dropout"], "head_config.dropout"),
    hidden_dim: hidden === null ? null : num(hidden, "head_config.hidden_dim", true),
    activation: hidden === null ? null : ((activation ?? "relu") as HiddenActivation),
    num_classes: hcRaw["num_classes"] == null ? null : num(hcRaw["num_classes"], "head_config.num_classes", true),
    digit_tokens: hcRaw["digit_tokens"] == null ? null : numList(hcRaw["digit_tokens"], "head_config.digit_tokens"),
  };
  if (headTypeOf(headCfg) !== headType) throw new SelfreportError(`${path}: head_type "${headType}" disagrees with head_config.class_name "${headCfg.class_name}"`);
  if (headType === "token") {
    const d = headCfg.digit_tokens;
    if (d === null) {
      headCfg.digit_tokens = [...GPT2_DIGIT_TOKENS];
      notes.push("head_config.digit_tokens was missing: set to GPT-2's digit tokens 15–24");
    } else if (d.length === 10 && d.every((v, i) => v === ASCII_DIGIT_CODES[i])) {
      headCfg.digit_tokens = [...GPT2_DIGIT_TOKENS];
      notes.push("head_config.digit_tokens were the ASCII codes 48–57 (an old bug of the Python tool: in GPT-2's vocabulary those ids are the letters \"Q\"…\"Z\"); replaced by GPT-2's digit tokens 15–24. The head's trained rows are kept.");
    } else if (!(d.length === 10 && d.every((v, i) => v === GPT2_DIGIT_TOKENS[i]))) {
      throw new SelfreportError(`${path}: head_config.digit_tokens ${JSON.stringify(d)} are neither GPT-2's digit tokens 15–24 nor the ASCII codes 48–57`);
    }
    if (headCfg.num_classes === null) headCfg.num_classes = 10;
    if (headCfg.num_classes !== 10) throw new SelfreportError(`${path}: a token head needs 10 bins, got num_classes ${headCfg.num_classes}`);
  }
  if (headType === "classification" && headCfg.num_classes === null) throw new SelfreportError(`${path}: head_config.num_classes is missing for a classification head`);
  const head = headTensors(o.headPath, headCfg);

  // ---- the target
  const layer = num(field(pc, "target_layer", path), "target_layer", true);
  const neuron = num(field(pc, "target_neuron", path), "target_neuron", true);
  let layerType: LayerType = "mlp_post";
  if (pc["layer_type"] == null) notes.push("layer_type was missing: taken as mlp_post (neuron N of blocks.L.mlp.hook_post)");
  else if (pc["layer_type"] === "mlp_out") {
    layerType = "mlp_out";
    notes.push(`layer_type mlp_out kept as the Python tool read it: dimension ${neuron} of blocks.${layer}.hook_mlp_out (a residual-stream coordinate of the MLP's output), not MLP neuron ${neuron}`);
  } else if (pc["layer_type"] !== "mlp_post") throw new SelfreportError(`${path}: layer_type ${JSON.stringify(pc["layer_type"])} is not mlp_post or mlp_out`);
  let tokenPos: TokenPos = "last";
  const tp = pc["token_pos"];
  if (tp == null) notes.push('token_pos was missing: taken as "last"');
  else if (tp === "last" || tp === -1) tokenPos = "last";
  else tokenPos = num(tp, "token_pos", true);
  // The Python tool writes no bin_edges (or null) for a regression head, which does not use them.
  let binEdges: number[] = [];
  if (headType === "regression" && pc["bin_edges"] == null) notes.push(`bin_edges was ${"bin_edges" in pc ? "null" : "missing"}: none stored (a regression head does not use bins)`);
  else binEdges = numList(field(pc, "bin_edges", path), "bin_edges");
  const mean = num(field(pc, "activation_mean", path), "activation_mean");
  const std = num(field(pc, "activation_std", path), "activation_std");
  const freeze = (pc["freeze_mode"] ?? "frozen") as FreezeMode;
  if (!FREEZE_MODES.includes(freeze)) throw new SelfreportError(`${path}: freeze_mode ${JSON.stringify(freeze)} is not one of ${FREEZE_MODES.join(", ")}`);
  if (pc["freeze_mode"] == null) notes.push("freeze_mode was missing: taken as frozen (only the head was trained)");

  // ---- the base model: local files only
  const baseName = typeof pc["base_model_name"] === "string" ? pc["base_model_name"] : "";
  let modelDir = o.modelDir;
  if (modelDir === undefined) {
    if (baseName === "") throw new SelfreportError(`${path}: base_model_name is missing; pass --model DIR (a local Hugging Face GPT-2 directory)`);
    try {
      modelDir = resolveModelDir(baseName);
    } catch (e) {
      throw new SelfreportError(`base_model_name ${JSON.stringify(baseName)} is not available locally (${(e as Error).message}); pass --model DIR (a local Hugging Face GPT-2 directory; nothing is downloaded)`);
    }
  }
  const weights = o.weights ?? "tl";
  const model = loadModel(modelDir, { weights }).model;
  validateTarget(model, layer, neuron, layerType);
  const C = model.cfg.dModel;
  if (pc["d_model"] != null && pc["d_model"] !== C) throw new SelfreportError(`${path}: d_model ${JSON.stringify(pc["d_model"])} but the model in ${modelDir} has d_model ${C}`);
  if (headCfg.input_dim !== C) throw new SelfreportError(`${path}: head_config.input_dim ${headCfg.input_dim} but the model in ${modelDir} has d_model ${C}`);
  const flRaw = pc["feature_layer"];
  const featureLayer = flRaw == null || flRaw === -1 ? model.cfg.nLayers - 1 : num(flRaw, "feature_layer", true);
  model.checkLayer(featureLayer, "feature_layer");
  if (headType === "token") {
    for (const id of headCfg.digit_tokens!) if (id >= model.cfg.dVocab) throw new SelfreportError(`digit token id ${id} is out of range for the model's vocabulary (${model.cfg.dVocab})`);
  }
  if (headType !== "regression" && binEdges.length !== headCfg.num_classes! + 1) {
    throw new SelfreportError(`${path}: ${binEdges.length} bin_edges give ${binEdges.length - 1} bins, but the head has ${headCfg.num_classes} classes`);
  }

  // ---- fine-tuned weights
  let ft: HookedTransformer | null = null;
  if (freeze !== "frozen") {
    if (o.finetunedDir === undefined) throw new SelfreportError(`${path}: a run with freeze_mode ${freeze} needs its fine-tuned model; pass --finetuned DIR (a local Hugging Face directory)`);
    ft = loadModel(o.finetunedDir, { weights }).model;
    if (ft.cfg.dModel !== C || ft.cfg.nLayers !== model.cfg.nLayers) throw new SelfreportError(`--finetuned ${o.finetunedDir}: its shape (${ft.cfg.nLayers} layers, d_model ${ft.cfg.dModel}) differs from the base model's`);
  } else if (o.finetunedDir !== undefined) notes.push("--finetuned ignored: the run is frozen");

  const config: RunConfig = {
    format_version: RUN_FORMAT_VERSION,
    head_type: headType as HeadType,
    target_layer: layer,
    target_neuron: neuron,
    layer_type: layerType,
    token_pos: tokenPos,
    feature_layer: featureLayer,
    head_config: headCfg,
    base_model_name: baseName !== "" ? baseName : resolve(modelDir),
    base_model_dir: resolve(modelDir),
    weights,
    d_model: C,
    bin_edges: binEdges,
    activation_mean: mean,
    activation_std: std,
    freeze_mode: freeze,
    unfreeze_last: freeze === "partial" ? (pc["unfreeze_last"] == null ? null : num(pc["unfreeze_last"], "unfreeze_last", true)) : null,
    dataset: { path: "", n: 0, layer, neuron, model_dir: resolve(modelDir) },
    training: {},
    imported: { from: resolve(o.headPath), notes },
  };
  // the same check every reader of a run makes: a run that could not be loaded is never written
  checkRunConfig(config as unknown as Record<string, unknown>, path);
  // everything checked: write (one writer at a time; a failure leaves nothing it created)
  withOutputFolderSync(outDir, (folder) => {
    if (existed && o.force === true) {
      removeRunFiles(outDir); // the old run goes only now, so a refused import changes nothing
      folder.markStart();
    }
    if (ft !== null) saveModel(ft, finetunedDir(outDir), { processed: weights });
    writeRun(outDir, { config, head, headMetadata: { imported_from: resolve(o.headPath) } });
  });
  return { config, notes };
}
