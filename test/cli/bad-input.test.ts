/**
 * Bad input through the real command line: every row runs `node bin/selfreport.js …` in a child
 * process on a tiny model and asserts
 *   - the exit code,
 *   - a message (regex) naming the value and what was expected, on one line,
 *   - no stack trace ("    at " lines) and no raw errno text (EEXIST:, ENOENT:, "Invalid typed array length"),
 *   - that every file that existed before the rows ran is byte-identical afterwards and that no row
 *     left a new file behind.
 * The fixtures (model, dataset, trained run, and each row's bad copy) are built once, in-process;
 * the rows then run two at a time.
 */
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve, dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { crc32 } from "node:zlib";
import { readSafetensors, writeSafetensors, type WritableTensor } from "../../src/io/safetensors.ts";
import { loadModel } from "../../src/model/load.ts";
import { loadTokenizer } from "../../src/model/tokenizer.ts";
import { buildDataset, writeDataset } from "../../src/selfreport/dataset.ts";
import { train, TRAIN_DEFAULTS } from "../../src/selfreport/train.ts";
import { makeTinyHfModel, writeHfSafetensors } from "../helpers/tiny-model.ts";
import { makeDocs } from "../helpers/text-docs.ts";

process.env["SELFREPORT_QUIET"] = "1";

const here = dirname(fileURLToPath(import.meta.url));
const BIN = resolve(here, "../../../bin/selfreport.js");

const root = mkdtempSync(join(tmpdir(), "selfreport-bad-input-"));
after(() => rmSync(root, { recursive: true, force: true }));

// ───────────────────────────── fixtures ─────────────────────────────

const modelDir = join(root, "model");
const tiny = makeTinyHfModel(modelDir, { dVocab: 50257, nLayers: 2, dModel: 16, nHeads: 2, nCtx: 16, seed: 4 });
const corpus = join(root, "docs.txt");
writeFileSync(corpus, makeDocs(30, 60, 8).map((d) => d.text).join("\n\n") + "\n");
const dataPath = join(root, "data.safetensors");
const data2Path = join(root, "data-pos2.safetensors");
const runDir = join(root, "run");
const rows = join(root, "rows");
mkdirSync(rows);

function buildData(path: string, tokenPos: "last" | number): void {
  const { model, dir } = loadModel(modelDir, { weights: "raw" });
  const tok = loadTokenizer(dir);
  const docs = readFileSync(corpus, "utf8").split("\n\n").map((text, i) => ({ id: `doc-${i}`, text }));
  const ds = buildDataset(model, tok, docs, {
    modelName: modelDir, modelDir: dir, weights: "raw", layer: 1, neuron: 5, layerType: "mlp_post", tokenPos, n: 120, maxLen: 8, balance: false, seed: 3, corpusName: corpus,
  });
  writeDataset(path, ds, (ids) => tok.decode(ids));
}

/** A copy of the dataset with its metadata and/or arrays edited (the arrays by name, as read). */
function badDataset(name: string, edit: (meta: Record<string, unknown>, arrays: Map<string, Float32Array | Int32Array>) => void): string {
  const { tensors, metadata } = readSafetensors(dataPath);
  const meta = JSON.parse(metadata["selfreport"]!) as Record<string, unknown>;
  const arrays = new Map([...tensors].map(([k, t]) => [k, t.data.slice()]));
  edit(meta, arrays);
  const out: Record<string, WritableTensor> = {};
  for (const [k, t] of tensors) out[k] = { dtype: t.dtype === "F32" ? "F32" : "I32", shape: t.shape, data: arrays.get(k)! } as WritableTensor;
  const path = join(rows, `${name}.safetensors`);
  writeSafetensors(path, out, { selfreport: JSON.stringify(meta) });
  return path;
}

/** A copy of the trained run with its config.json edited (as text, so that any JSON value can be written). */
function badRun(name: string, edit: (cfg: Record<string, unknown>) => void, configText?: (text: string) => string): string {
  const dir = join(rows, name);
  cpSync(runDir, dir, { recursive: true });
  const cfg = JSON.parse(readFileSync(join(dir, "config.json"), "utf8")) as Record<string, unknown>;
  edit(cfg);
  const text = JSON.stringify(cfg, null, 2);
  writeFileSync(join(dir, "config.json"), configText ? configText(text) : text);
  return dir;
}

/** A copy of the model with one value of one tensor replaced. */
function badModel(name: string, tensor: string, value: number): string {
  const dir = join(rows, name);
  cpSync(modelDir, dir, { recursive: true });
  const weights = new Map([...tiny.weights].map(([k, t]) => [k, { shape: t.shape, data: t.data.slice() }]));
  weights.get(tensor)!.data[3] = value;
  writeHfSafetensors(join(dir, "model.safetensors"), weights);
  return dir;
}

/** A zip of stored entries (what torch.save writes), for hand-made .pt files. */
function writeStoredZip(path: string, entries: Array<[string, Buffer]>): void {
  const local: Buffer[] = [];
  const central: Buffer[] = [];
  let offset = 0;
  for (const [name, data] of entries) {
    const nameBytes = Buffer.from(name, "utf8");
    const crc = crc32(data);
    const lh = Buffer.alloc(30);
    lh.writeUInt32LE(0x04034b50, 0);
    lh.writeUInt16LE(20, 4);
    lh.writeUInt32LE(crc, 14);
    lh.writeUInt32LE(data.length, 18);
    lh.writeUInt32LE(data.length, 22);
    lh.writeUInt16LE(nameBytes.length, 26);
    const ch = Buffer.alloc(46);
    ch.writeUInt32LE(0x02014b50, 0);
    ch.writeUInt16LE(20, 4);
    ch.writeUInt16LE(20, 6);
    ch.writeUInt32LE(crc, 16);
    ch.writeUInt32LE(data.length, 20);
    ch.writeUInt32LE(data.length, 24);
    ch.writeUInt16LE(nameBytes.length, 28);
    ch.writeUInt32LE(offset, 42);
    local.push(lh, nameBytes, data);
    central.push(ch, nameBytes);
    offset += 30 + nameBytes.length + data.length;
  }
  const cd = Buffer.concat(central);
  const end = Buffer.alloc(22);
  end.writeUInt32LE(0x06054b50, 0);
  end.writeUInt16LE(entries.length, 8);
  end.writeUInt16LE(entries.length, 10);
  end.writeUInt32LE(cd.length, 12);
  end.writeUInt32LE(offset, 16);
  writeFileSync(path, Buffer.concat([...local, cd, end]));
}

/**
 * A regression head.pt for d_model 16 (output.weight [1, 16], output.bias [1]) written by hand:
 * `weight` gives its 16 values; `size` replaces output.weight's size in the pickle (e.g. [1, 2^40]).
 */
function headPt(name: string, weight: Float32Array, size?: bigint[]): string {
  const str = (s: string): number[] => [0x58, s.length, 0, 0, 0, ...Buffer.from(s, "latin1")];
  const glob = (m: string, n: string): number[] => [0x63, ...Buffer.from(`${m}\n${n}\n`, "latin1")];
  const int = (v: bigint): number[] => {
    if (v < 256n) return [0x4b, Number(v)];
    const bytes: number[] = [];
    for (let x = v; x > 0n; x >>= 8n) bytes.push(Number(x & 0xffn));
    if (bytes[bytes.length - 1]! >= 0x80) bytes.push(0);
    return [0x8a, bytes.length, ...bytes];
  };
  const tuple = (xs: bigint[]): number[] => [0x28, ...xs.flatMap(int), 0x74];
  const tensor = (key: string, numel: number, sz: bigint[], stride: bigint[]): number[] => [
    ...glob("torch._utils", "_rebuild_tensor_v2"), 0x28,
    0x28, ...str("storage"), ...glob("torch", "FloatStorage"), ...str(key), ...str("cpu"), 0x4b, numel, 0x74, 0x51,
    0x4b, 0, ...tuple(sz), ...tuple(stride), 0x89, ...glob("collections", "OrderedDict"), 0x29, 0x52, 0x74, 0x52,
  ];
  const pkl = [
    0x80, 0x02, ...glob("collections", "OrderedDict"), 0x29, 0x52, 0x28,
    ...str("output.weight"), ...tensor("0", 16, size ?? [1n, 16n], [16n, 1n]),
    ...str("output.bias"), ...tensor("1", 1, [1n], [1n]),
    0x75, 0x2e,
  ];
  const path = join(rows, `${name}.pt`);
  writeStoredZip(path, [
    ["head/data.pkl", Buffer.from(pkl)],
    ["head/data/0", Buffer.from(weight.buffer, weight.byteOffset, weight.byteLength)],
    ["head/data/1", Buffer.from(Float32Array.of(0.5).buffer)],
    ["head/version", Buffer.from("3\n")],
  ]);
  return path;
}

/** A Python-tool config.json for a regression head on the tiny model. */
function pyConfig(name: string, o: Record<string, unknown> = {}): string {
  const path = join(rows, `${name}.json`);
  writeFileSync(path, JSON.stringify({
    head_type: "regression", head_config: { class_name: "RegressionHead", input_dim: 16, dropout: 0, hidden_dim: null },
    target_layer: 1, target_neuron: 5, layer_type: "mlp_post", token_pos: "last", feature_layer: -1,
    bin_edges: Array.from({ length: 11 }, (_, i) => i / 10), activation_mean: 0.25, activation_std: 2, base_model_name: modelDir, d_model: 16, ...o,
  }));
  return path;
}

// ───────────────────────────── rows ─────────────────────────────

interface Row {
  name: string;
  /** Arguments after `selfreport`, computed once the fixtures exist. */
  args: () => string[];
  code: number;
  /** Matched against stderr (or stdout with `on: "stdout"`). */
  message: RegExp;
  on?: "stderr" | "stdout";
}

const trainArgs = (data: string, out: string, ...more: string[]): string[] => ["train", "--data", data, "--head", "regression", "--epochs", "1", "--out", out, ...more];
const predictArgs = (run: string): string[] => ["predict", "--run", run, "--prompt", "the cat sat on the mat"];

const paths: Record<string, string> = {};
const p = (k: string): string => {
  const v = paths[k];
  if (v === undefined) throw new Error(`fixture ${k} was not built`);
  return v;
};

const ROWS: Row[] = [
  // ---- dataset metadata and arrays (read by train and by the analyses)
  { name: "dataset layer \"two\"", args: () => trainArgs(p("dsLayerTwo"), join(rows, "out-a")), code: 1, message: /data-layer-two\.safetensors: field "layer" must be a non-negative integer, got "two"$/ },
  { name: "dataset neuron -3", args: () => trainArgs(p("dsNeuronNeg"), join(rows, "out-b")), code: 1, message: /: field "neuron" must be a non-negative integer, got -3$/ },
  { name: "dataset layer 1e308", args: () => trainArgs(p("dsLayerHuge"), join(rows, "out-c")), code: 1, message: /: field "layer" must be a non-negative integer, got 1e\+308$/ },
  { name: "dataset layer past the model's", args: () => trainArgs(p("dsLayer7"), join(rows, "out-d")), code: 1, message: /: field "layer" must be a layer of the model, 0\.\.1, got 7$/ },
  { name: "dataset positions[i] past the prefix", args: () => trainArgs(p("dsPosPast"), join(rows, "out-e")), code: 1, message: /: positions\[4\] must be \d+ \(the last token of its \d+-token prefix; it points past the prefix\), got \d+$/ },
  { name: "dataset NaN targets", args: () => trainArgs(p("dsNanTarget"), join(rows, "out-f")), code: 1, message: /: targets\[2\] is NaN: the dataset's target activations must be finite numbers/ },
  { name: "dataset bin_edges out of order", args: () => trainArgs(p("dsEdges"), join(rows, "out-g")), code: 1, message: /: field "bin_edges\[2\]" must be ≥ the previous edge/ },

  // ---- run configs and heads (read by predict and the analyses)
  { name: "run target_neuron 1e12", args: () => predictArgs(p("runNeuronHuge")), code: 1, message: /config\.json: field "target_neuron" must be an MLP neuron of the model, 0\.\.63, got 1000000000000$/ },
  { name: "run target_layer \"2\"", args: () => predictArgs(p("runLayerString")), code: 1, message: /config\.json: field "target_layer" must be a non-negative integer, got "2"$/ },
  { name: "run activation_std 0", args: () => predictArgs(p("runStd0")), code: 1, message: /config\.json: field "activation_std" must be a positive finite number, got 0$/ },
  { name: "run activation_std negative", args: () => predictArgs(p("runStdNeg")), code: 1, message: /field "activation_std" must be a positive finite number, got -1\.5$/ },
  { name: "run activation_std NaN (written as null)", args: () => predictArgs(p("runStdNull")), code: 1, message: /field "activation_std" must be a positive finite number, got null$/ },
  { name: "run activation_std NaN (a bare NaN)", args: () => predictArgs(p("runStdNaN")), code: 1, message: /run-std-nan\/config\.json: not valid JSON \(Unexpected token 'N'/ },
  { name: "run NaN head", args: () => predictArgs(p("runNanHead")), code: 1, message: /head\.safetensors: head tensor "output\.weight" holds NaN at element 3; expected finite numbers$/ },
  { name: "analyze patching a run with activation_std 0", args: () => ["analyze", "patching", "--run", p("runStd0"), "--out", join(rows, "out-s")], code: 1, message: /run-std0\/config\.json: field "activation_std" must be a positive finite number, got 0$/ },
  { name: "report on a run with target_layer \"2\"", args: () => ["report", "--run", p("runLayerString"), "--out", join(rows, "out-t.html")], code: 1, message: /run-layer-string\/config\.json: field "target_layer" must be a non-negative integer, got "2"$/ },
  { name: "analyze residual with a dataset whose targets are NaN", args: () => ["analyze", "residual", "--run", runDir, "--data", p("dsNanTarget"), "--out", join(rows, "out-u")], code: 1, message: /data-nan-target\.safetensors: targets\[2\] is NaN/ },
  { name: "analyze a run whose feature_layer is past the model's", args: () => ["analyze", "weights", "--run", p("runFeature9"), "--out", join(rows, "out-h")], code: 1, message: /field "feature_layer" must be a layer of the model, 0\.\.1, got 9$/ },

  // ---- models
  { name: "model with a NaN weight", args: () => ["dataset", "--model", p("modelNaN"), "--layer", "1", "--neuron", "5", "--corpus", corpus, "--n", "20", "--max-len", "8", "--out", join(rows, "out-i.safetensors")], code: 1, message: /model\.safetensors: tensor "h\.0\.mlp\.c_fc\.weight" holds NaN at element 3; expected finite numbers$/ },
  { name: "inspect a model with a NaN weight", args: () => ["inspect", "--model", p("modelNaN")], code: 1, message: /tensor "h\.0\.mlp\.c_fc\.weight" holds NaN at element 3; expected finite numbers$/ },
  { name: "activations of a model with an Inf weight", args: () => ["activations", "--model", p("modelInf"), "--prompt", "the cat", "--hook", "blocks.0.mlp.hook_post", "--out", join(rows, "out-r.safetensors")], code: 1, message: /tensor "wte\.weight" holds Infinity at element 3/ },
  { name: "model with an Inf weight", args: () => ["generate", "--model", p("modelInf"), "--prompt", "the cat"], code: 1, message: /model\.safetensors: tensor "wte\.weight" holds Infinity at element 3; expected finite numbers$/ },

  // ---- import-pt
  { name: "import-pt activation_std 0", args: () => ["import-pt", "--head", p("ptGood"), "--config", p("pyStd0"), "--model", modelDir, "--out", join(rows, "out-j")], code: 1, message: /py-std0\.json: field "activation_std" must be a positive finite number, got 0$/ },
  { name: "import-pt NaN head", args: () => ["import-pt", "--head", p("ptNaN"), "--config", p("pyGood"), "--model", modelDir, "--out", join(rows, "out-k")], code: 1, message: /nan-head\.pt: head tensor "output\.weight" holds NaN at element 3; expected finite numbers$/ },
  { name: "import-pt a [1, 2^40] head", args: () => ["import-pt", "--head", p("ptHuge"), "--config", p("pyGood"), "--model", modelDir, "--out", join(rows, "out-l")], code: 1, message: /huge-head\.pt.*size \[1,1099511627776\].*reaches element 1099511627775 of a storage of 16$/ },

  // ---- outputs that are not what they must be (checked before any work)
  { name: "train --out FILE", args: () => trainArgs(dataPath, p("aFile")), code: 1, message: /--out \S+a-file\.txt is a file; expected a run directory \(a folder, or a path that does not exist yet\)$/ },
  { name: "analyze patching --out FILE", args: () => ["analyze", "patching", "--run", runDir, "--out", p("aFile")], code: 1, message: /--out \S+a-file\.txt is a file; expected an analysis output folder/ },
  { name: "analyze weights --out under a file", args: () => ["analyze", "weights", "--run", runDir, "--out", join(p("aFile"), "sub")], code: 1, message: /a-file\.txt is a file, so no folder can be made under it; expected an analysis output folder$/ },
  // (Node's recursive mkdirSync never returns under /proc: folders are made one by one, src/io/paths.ts makeFolders)
  { name: "train --out on a file system where no folder can be made", args: () => trainArgs(dataPath, "/proc/selfreport-no-such/run"), code: 1, message: /cannot create folder \/proc\/selfreport-no-such\/run: folder \/proc\/selfreport-no-such cannot be made there/ },

  // ---- conflicting flags
  { name: "train --activation without --hidden-dim", args: () => trainArgs(dataPath, join(rows, "out-m"), "--activation", "relu"), code: 1, message: /--activation relu needs --hidden-dim N/ },
  { name: "train --resume --force", args: () => trainArgs(dataPath, join(rows, "out-n"), "--resume", "--force"), code: 1, message: /--resume and --force contradict each other/ },
  { name: "sweep --no-wait without --queue", args: () => ["sweep", "--model", modelDir, "--layers", "1", "--neurons", "0-3", "--no-wait", "--out", join(rows, "out-o")], code: 1, message: /--no-wait only applies with --queue/ },

  // ---- a dataset that is not the run's
  { name: "analyze with a dataset of another token_pos", args: () => ["analyze", "weights", "--run", runDir, "--data", data2Path, "--out", join(rows, "out-p")], code: 1, message: /does not belong to run .*: token_pos 2 ≠ run's "last"$/ },

  // ---- analysis summaries (the report shows an unreadable one, naming the field)
  { name: "report with a summary lacking a field", args: () => ["report", "--run", runDir, "--analyses", p("analyses"), "--out", join(rows, "out-q.html")], code: 0, on: "stdout", message: /unreadable: weights \(\S+summary\.json: field "target\.layer" is missing \(expected a number\)\)/ },
];

// ───────────────────────────── running ─────────────────────────────

interface Result {
  code: number | null;
  stdout: string;
  stderr: string;
  ms: number;
  /** The row's inputs (every argument naming an existing file or folder under root): hashes before and after it ran. */
  inputsBefore: Map<string, string>;
  inputsAfter: Map<string, string>;
  /** --out paths that did not exist before the row, and whether each exists after it. */
  newOutputs: Array<[string, boolean]>;
}

function inputsOf(args: readonly string[]): Map<string, string> {
  const out = new Map<string, string>();
  for (const a of args) {
    if (!a.startsWith(root) || !existsSync(a)) continue;
    if (statSync(a).isDirectory()) snapshot(a, out);
    else out.set(a, createHash("sha256").update(readFileSync(a)).digest("hex"));
  }
  return out;
}

async function runRow(row: Row): Promise<Result> {
  const args = row.args();
  const outs = args.flatMap((a, i) => (args[i - 1] === "--out" && !existsSync(a) ? [a] : []));
  const inputsBefore = inputsOf(args);
  const r = await runCli(args);
  return { ...r, inputsBefore, inputsAfter: inputsOf(args), newOutputs: outs.map((o) => [o, existsSync(o)]) };
}

function runCli(args: string[]): Promise<Omit<Result, "inputsBefore" | "inputsAfter" | "newOutputs">> {
  const t0 = Date.now();
  return new Promise((resolveRun, reject) => {
    const child = spawn(process.execPath, [BIN, ...args], { cwd: root, env: { ...process.env, SELFREPORT_QUIET: "1", SELFREPORT_DEBUG: "" }, stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (c: Buffer) => void (stdout += c.toString()));
    child.stderr.on("data", (c: Buffer) => void (stderr += c.toString()));
    child.on("error", reject);
    child.on("close", (code) => resolveRun({ code, stdout, stderr, ms: Date.now() - t0 }));
  });
}

/** Every file under dir → sha256 of its bytes. */
function snapshot(dir: string, out = new Map<string, string>()): Map<string, string> {
  for (const name of readdirSync(dir)) {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) snapshot(path, out);
    else out.set(path, createHash("sha256").update(readFileSync(path)).digest("hex"));
  }
  return out;
}

const results = new Map<string, Result>();
let before0 = new Map<string, string>();
let totalMs = 0;

before(async () => {
  buildData(dataPath, "last");
  buildData(data2Path, 2);
  await train({ ...TRAIN_DEFAULTS, data: dataPath, out: runDir, head: "regression", unfreezeLast: null, epochs: 1, lr: 1e-3, hiddenDim: null, activation: null, numClasses: null, resume: false, force: false });

  paths["dsLayerTwo"] = badDataset("data-layer-two", (m) => void (m["layer"] = "two"));
  paths["dsNeuronNeg"] = badDataset("data-neuron-neg", (m) => void (m["neuron"] = -3));
  paths["dsLayerHuge"] = badDataset("data-layer-huge", (m) => void (m["layer"] = 1e308));
  paths["dsLayer7"] = badDataset("data-layer7", (m) => {
    m["layer"] = 7;
    m["hook"] = "blocks.7.mlp.hook_post";
  });
  paths["dsPosPast"] = badDataset("data-pos-past", (_, a) => {
    const lengths = a.get("lengths")!;
    a.get("positions")![4] = lengths[4]! + 2; // past its own prefix: inside another example's tokens
  });
  paths["dsNanTarget"] = badDataset("data-nan-target", (_, a) => void (a.get("targets")![2] = NaN));
  paths["dsEdges"] = badDataset("data-edges", (m) => {
    const e = [...(m["bin_edges"] as number[])];
    [e[1], e[2]] = [e[2]! + 1, e[1]!];
    m["bin_edges"] = e;
  });

  paths["runNeuronHuge"] = badRun("run-neuron-huge", (c) => void (c["target_neuron"] = 1e12));
  paths["runLayerString"] = badRun("run-layer-string", (c) => void (c["target_layer"] = "2"));
  paths["runStd0"] = badRun("run-std0", (c) => void (c["activation_std"] = 0));
  paths["runStdNeg"] = badRun("run-std-neg", (c) => void (c["activation_std"] = -1.5));
  paths["runStdNull"] = badRun("run-std-null", (c) => void (c["activation_std"] = NaN)); // JSON.stringify writes NaN as null
  paths["runStdNaN"] = badRun("run-std-nan", (c) => void (c["activation_std"] = 12345.5), (t) => t.replace("12345.5", "NaN"));
  paths["runFeature9"] = badRun("run-feature9", (c) => void (c["feature_layer"] = 9));
  const nanHead = badRun("run-nan-head", () => {});
  const head = readSafetensors(join(nanHead, "head.safetensors")).tensors;
  const w = head.get("output.weight")!.data.slice() as Float32Array;
  w[3] = NaN;
  writeSafetensors(join(nanHead, "head.safetensors"), { "output.weight": { dtype: "F32", shape: head.get("output.weight")!.shape, data: w }, "output.bias": { dtype: "F32", shape: [1], data: head.get("output.bias")!.data as Float32Array } });
  paths["runNanHead"] = nanHead;

  paths["modelNaN"] = badModel("model-nan", "h.0.mlp.c_fc.weight", NaN);
  paths["modelInf"] = badModel("model-inf", "wte.weight", Infinity);

  const good = Float32Array.from({ length: 16 }, (_, i) => (i - 8) / 16);
  paths["ptGood"] = headPt("good-head", good);
  const withNaN = good.slice();
  withNaN[3] = NaN;
  paths["ptNaN"] = headPt("nan-head", withNaN);
  paths["ptHuge"] = headPt("huge-head", good, [1n, 2n ** 40n]);
  paths["pyGood"] = pyConfig("py-good");
  paths["pyStd0"] = pyConfig("py-std0", { activation_std: 0 });

  paths["aFile"] = join(rows, "a-file.txt");
  writeFileSync(paths["aFile"], "not a folder\n");
  const analyses = join(rows, "analyses");
  mkdirSync(join(analyses, "weights"), { recursive: true });
  writeFileSync(join(analyses, "weights", "summary.json"), JSON.stringify({ analysis: "weights", target: { neuron: 5 }, notes: [] }));
  paths["analyses"] = analyses;

  before0 = snapshot(root);
  const t0 = Date.now();
  const queue = [...ROWS];
  const worker = async (): Promise<void> => {
    for (let row = queue.shift(); row !== undefined; row = queue.shift()) results.set(row.name, await runRow(row));
  };
  await Promise.all([worker(), worker()]);
  totalMs = Date.now() - t0;
});

for (const row of ROWS) {
  test(`bad input: ${row.name}`, () => {
    const r = results.get(row.name);
    assert.ok(r !== undefined, "the row ran");
    const where = `\n--- stdout\n${r.stdout}\n--- stderr\n${r.stderr}`;
    assert.equal(r.code, row.code, `exit code${where}`);
    const text = row.on === "stdout" ? r.stdout : r.stderr;
    if (row.on !== "stdout") {
      const lines = r.stderr.trimEnd().split("\n");
      assert.equal(lines.length, 1, `one line on stderr${where}`);
      assert.match(lines[0]!, /^selfreport: error: /, where);
    }
    assert.match(text.trimEnd(), row.message, where);
    for (const out of [r.stdout, r.stderr]) {
      assert.ok(!/^ {4}at /m.test(out), `no stack trace${where}`);
      assert.ok(!/\b(EEXIST|ENOENT|ENOTDIR|EACCES|EROFS):|Invalid typed array length|SELFREPORT_DEBUG/.test(out), `no raw errno text, no crash hint${where}`);
    }
    assert.ok(r.inputsBefore.size > 0 || row.name.includes("/proc"), "the row names at least one input file");
    const inputsAfter = new Map([...r.inputsBefore.keys()].map((k) => [k, r.inputsAfter.get(k)]));
    assert.deepEqual(inputsAfter, r.inputsBefore, "every input file of the row is byte-identical afterwards");
    if (row.code !== 0) assert.deepEqual(r.newOutputs.filter(([, exists]) => exists), [], "a failed command leaves no --out behind");
  });
}

test("bad input: every pre-existing file is byte-identical, and no row left a file behind", () => {
  const after0 = snapshot(root);
  const changed = [...before0].filter(([k, h]) => after0.get(k) !== h).map(([k]) => k);
  const added = [...after0.keys()].filter((k) => !before0.has(k) && !k.endsWith("out-q.html"));
  assert.deepEqual(changed, [], "changed or removed files");
  assert.deepEqual(added, [], "files left behind");
});

after(() => {
  // timing, for the record (wall time depends on the machine's load, so it is printed, not asserted)
  for (const row of ROWS) console.log(`  ${String(results.get(row.name)?.ms).padStart(6)} ms  ${row.name}`);
  console.log(`bad-input: ${ROWS.length} rows in ${(totalMs / 1000).toFixed(1)} s`);
});
