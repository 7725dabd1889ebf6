/**
 * The one rule every command that writes follows before it writes anything:
 *
 *   checkOutput(path, { kind, inputs, force })
 *
 * - never one of the command's own inputs (the same path, or an existing file inside an input folder);
 * - never a file that an existing run refers to (its dataset, see `registerRunOfDataset`);
 * - an existing output of the same kind is replaced only with --force (or continued with --resume);
 * - --force never replaces another kind: model, run, sweep, analysis folders, datasets, activation
 *   files, reports and neuron tables are told apart by their marker files (`kindOf`), and a folder
 *   holding anything else is never written into.
 *
 * The checks look at what is on disk, before any computation; a refused command changes nothing.
 */
import { existsSync, lstatSync, readdirSync, readFileSync, realpathSync, statSync, appendFileSync, openSync, readSync, closeSync } from "node:fs";
import { createHash } from "node:crypto";
import { basename, dirname, join, relative, resolve, sep, isAbsolute } from "node:path";
import { SelfreportError } from "../errors.ts";

export type FolderKind = "model" | "run" | "sweep" | "analysis";
export type FileKind = "dataset" | "activations" | "report" | "neuron-table";
export type OutputKind = FolderKind | FileKind;

/** What a path holds, as recognised by its marker files. */
export interface FoundKind {
  kind: OutputKind | "empty" | "other" | "folder" | "file";
  /** Why (the marker), for messages: e.g. "model.safetensors". */
  marker: string;
}

const FOLDER_KINDS: readonly string[] = ["model", "run", "sweep", "analysis"];

const KIND_NAMES: Record<OutputKind, string> = {
  model: "a model folder", run: "a run folder", sweep: "a sweep folder", analysis: "an analysis folder",
  dataset: "a selfreport dataset", activations: "an activations file", report: "a selfreport report", "neuron-table": "a neuron table (neurons --json)",
};

/** The lock file (src/io/lock.ts) and the temporaries of interrupted writes: not content of a folder. */
export function isScratchEntry(name: string): boolean {
  return name === ".selfreport.lock" || name.startsWith(".selfreport.lock.") || /^\..*\.tmp-\d+-/.test(name) || /\.tmp-\d+-[0-9a-f]+$/.test(name) || name.startsWith(".stage-");
}

/** Marker on the first line of every report (src/report/html.ts writes it). */
export const REPORT_MARKER = '<meta name="generator" content="selfreport report">';

function readJson(path: string): Record<string, unknown> | null {
  try {
    const v: unknown = JSON.parse(readFileSync(path, "utf8"));
    return v !== null && typeof v === "object" && !Array.isArray(v) ? (v as Record<string, unknown>) : null;
  } catch {
    return null;
  }
}

function head(path: string, bytes: number): Buffer {
  const fd = openSync(path, "r");
  try {
    const buf = Buffer.alloc(bytes);
    const n = readSync(fd, buf, 0, bytes, 0);
    return buf.subarray(0, n);
  } finally {
    closeSync(fd);
  }
}

/** The metadata of a safetensors file, or null when it is not one. */
function safetensorsMetadata(path: string): Record<string, string> | null {
  try {
    const b = head(path, 8);
    if (b.length < 8) return null;
    const len = Number(b.readBigUInt64LE(0));
    if (len <= 0 || len > 100_000_000) return null;
    const text = head(path, 8 + len).subarray(8).toString("utf8");
    const h = JSON.parse(text) as Record<string, unknown>;
    const meta = h["__metadata__"];
    return meta !== null && typeof meta === "object" ? (meta as Record<string, string>) : {};
  } catch {
    return null;
  }
}

function folderKind(dir: string): FoundKind {
  const entries = readdirSync(dir).filter((e) => !isScratchEntry(e));
  if (entries.length === 0) return { kind: "empty", marker: "" };
  const has = (e: string): boolean => entries.includes(e);
  if (has("sweep.json")) return { kind: "sweep", marker: "sweep.json" };
  const cfg = has("config.json") ? readJson(join(dir, "config.json")) : null;
  if (cfg !== null && ("head_type" in cfg || "format_version" in cfg)) return { kind: "run", marker: "config.json with head_type" };
  if (has("head.safetensors")) return { kind: "run", marker: "head.safetensors" };
  const state = existsSync(join(dir, "checkpoint", "state.json")) ? readJson(join(dir, "checkpoint", "state.json")) : null;
  if (state !== null && "fingerprint" in state) return { kind: "run", marker: "a training checkpoint" };
  for (const m of ["model.safetensors", "pytorch_model.bin", "vocab.json", "merges.txt", "tokenizer.json"]) if (has(m)) return { kind: "model", marker: m };
  if (cfg !== null && ("model_type" in cfg || "n_embd" in cfg || "n_layer" in cfg)) return { kind: "model", marker: "config.json of a model" };
  if (state !== null && "config" in state) return { kind: "model", marker: "a pre-training checkpoint" };
  if (has("summary.json") && readJson(join(dir, "summary.json"))?.["analysis"] !== undefined) return { kind: "analysis", marker: "summary.json" };
  if (has("jobs") || has("data") && existsSync(join(dir, "data", "examples.safetensors"))) return { kind: "sweep", marker: "jobs/" };
  if (has("train_log.jsonl")) return { kind: "run", marker: "train_log.jsonl" };
  return { kind: "other", marker: entries.slice(0, 3).join(", ") + (entries.length > 3 ? ", …" : "") };
}

function fileKind(path: string): FoundKind {
  const name = basename(path);
  // a sweep's shared data (data/examples.safetensors, data/L{l}.targets.safetensors) belongs to the sweep:
  // its jobs read it, so it is never replaced as a dataset of its own
  if (basename(dirname(path)) === "data" && folderKind(dirname(dirname(path))).kind === "sweep") {
    return { kind: "sweep", marker: `a file of ${KIND_NAMES.sweep} (data/ of ${dirname(dirname(path))})` };
  }
  if (name.endsWith(".safetensors")) {
    const meta = safetensorsMetadata(path);
    if (meta?.["selfreport"] !== undefined) return { kind: "dataset", marker: "selfreport metadata" };
    if (meta?.["prompts"] !== undefined) return { kind: "activations", marker: "prompts metadata" };
  } else if (/\.html?$/i.test(name)) {
    if (head(path, 4096).toString("utf8").includes(REPORT_MARKER)) return { kind: "report", marker: "generator selfreport report" };
  } else if (name.endsWith(".jsonl")) {
    const first = head(path, 65536).toString("utf8").split("\n")[0] ?? "";
    try {
      const rec = JSON.parse(first) as Record<string, unknown>;
      if ("activation" in rec && "split" in rec && "text" in rec) return { kind: "dataset", marker: "the text of a dataset" };
    } catch {
      // not JSON lines: another kind of file
    }
  } else if (name.endsWith(".json")) {
    const j = readJson(path);
    if (j !== null && "sparsity_definition" in j) return { kind: "neuron-table", marker: "sparsity_definition" };
  }
  // a file of a model, run or sweep folder belongs to that folder
  const parent = folderKind(dirname(path));
  if (FOLDER_KINDS.includes(parent.kind)) return { kind: parent.kind, marker: `a file of ${KIND_NAMES[parent.kind as OutputKind]} (${parent.marker})` };
  return { kind: "file", marker: "" };
}

/** What `path` holds (it must exist). */
export function kindOf(path: string): FoundKind {
  const st = statSync(path);
  if (st.isDirectory()) {
    const k = folderKind(path);
    return k;
  }
  return fileKind(path);
}

/** Absolute path with symbolic links of its existing part resolved (the part that does not exist yet kept as given). */
export function realPath(path: string): string {
  let p = resolve(path);
  const rest: string[] = [];
  for (;;) {
    try {
      return join(realpathSync(p), ...rest);
    } catch {
      const parent = dirname(p);
      if (parent === p) return resolve(path);
      rest.unshift(basename(p));
      p = parent;
    }
  }
}

function inside(child: string, parent: string): boolean {
  const r = relative(parent, child);
  return r !== "" && !r.startsWith("..") && !isAbsolute(r) && !r.split(sep).includes("..");
}

export interface CheckOutputOptions {
  kind: OutputKind;
  /** The paths the command reads (files or folders); undefined entries are skipped. */
  inputs?: ReadonlyArray<string | undefined>;
  force: boolean;
  /** An existing output of the same kind is continued (train/pretrain --resume, a sweep re-run). */
  resume?: boolean;
  /** The option that named the output, for messages (default --out). */
  option?: string;
  /** Mention --resume in the message for an existing output. */
  resumeHint?: boolean;
  /** Datasets: run folders this same command replaces (their reference to the dataset does not count). */
  replacing?: readonly string[];
}

/** Throws a one-line SelfreportError when writing `path` would break the rule above; returns whether it exists. */
export function checkOutput(path: string, o: CheckOutputOptions): { exists: boolean } {
  const opt = o.option ?? "--out";
  const out = realPath(path);
  for (const input of o.inputs ?? []) {
    if (input === undefined || input === "") continue;
    const inp = realPath(input);
    if (inp === out) throw new SelfreportError(`${opt} ${path} is also an input of this command (${input}); choose another ${opt}`);
    if (FOLDER_KINDS.includes(o.kind) && inside(inp, out)) {
      throw new SelfreportError(`${opt} ${path} holds ${input}, an input of this command; choose another ${opt}`);
    }
  }
  let st;
  try {
    st = lstatSync(out);
  } catch {
    return { exists: false };
  }
  const folderOut = FOLDER_KINDS.includes(o.kind);
  const isDir = st.isDirectory() || (st.isSymbolicLink() && statSync(out).isDirectory());
  if (folderOut && !isDir) throw new SelfreportError(`${opt} ${path} is a file; ${KIND_NAMES[o.kind].replace(/^an? /, "a ")} needs a folder there (choose another ${opt})`);
  if (!folderOut && isDir) throw new SelfreportError(`${opt} ${path} is a folder; expected a file name`);
  const found = kindOf(out);
  if (found.kind === "empty") return { exists: true };
  if (found.kind !== o.kind) {
    const what = found.kind === "other" ? `a folder with other files (${found.marker})`
      : found.kind === "file" ? "a file that selfreport did not write as " + KIND_NAMES[o.kind].replace(/^an? /, "")
        : found.marker.startsWith("a file of ") ? found.marker
          : `${KIND_NAMES[found.kind as OutputKind]} (${found.marker})`;
    throw new SelfreportError(`${opt} ${path} is ${what}, not ${KIND_NAMES[o.kind]}; it is never replaced, not even with --force; choose another ${opt}`);
  }
  if (o.kind === "dataset") {
    const user = runUsingDataset(out.replace(/\.jsonl$/, ".safetensors"), o.replacing ?? []);
    if (user !== null) throw new SelfreportError(`${opt} ${path} is the dataset of run ${user} (its config.json refers to it); it is never replaced, not even with --force; write the new dataset elsewhere`);
  }
  if (!o.force && !o.resume) {
    throw new SelfreportError(`${opt} ${path} already holds ${KIND_NAMES[o.kind].replace(/ folder$/, "")}; pass --force to replace it${o.resumeHint === true ? ", --resume to continue it" : ""}, or choose another ${opt}`);
  }
  return { exists: true };
}

// ---- runs that refer to a dataset --------------------------------------------------------------

/** Beside dataset D.safetensors, D.runs lists (one a line) the run folders trained on it. */
export function runsListPath(datasetPath: string): string {
  return datasetPath.replace(/\.safetensors$/, "") + ".runs";
}

/** Records that the run in `runDir` was trained on `datasetPath` (appends to the list beside it). */
export function registerRunOfDataset(datasetPath: string, runDir: string): void {
  const list = runsListPath(resolve(datasetPath));
  const run = resolve(runDir);
  const known = existsSync(list) ? readFileSync(list, "utf8").split("\n") : [];
  if (!known.includes(run)) appendFileSync(list, run + "\n");
}

/** A run folder whose config.json still names `datasetPath` as its dataset, or null. */
export function runUsingDataset(datasetPath: string, except: readonly string[] = []): string | null {
  const list = runsListPath(datasetPath);
  if (!existsSync(list)) return null;
  const skip = new Set(except.map(realPath));
  for (const run of readFileSync(list, "utf8").split("\n")) {
    if (run === "" || skip.has(realPath(run))) continue;
    const cfg = readJson(join(run, "config.json"));
    const ds = cfg?.["dataset"] as { path?: unknown } | undefined;
    if (typeof ds?.path === "string" && realPath(resolve(run, ds.path)) === realPath(datasetPath)) return run;
  }
  return null;
}

// ---- content hash -----------------------------------------------------------------------------

const hashMemo = new Map<string, { size: number; mtimeMs: number; sha256: string }>();

/** sha256 (hex) of a file's bytes; remembered per path while its size and mtime stay the same. */
export function fileSha256(path: string): string {
  const st = statSync(path);
  const key = resolve(path);
  const memo = hashMemo.get(key);
  if (memo !== undefined && memo.size === st.size && memo.mtimeMs === st.mtimeMs) return memo.sha256;
  const h = createHash("sha256");
  const fd = openSync(path, "r");
  try {
    const buf = Buffer.alloc(1 << 20);
    let n: number;
    while ((n = readSync(fd, buf, 0, buf.length, null)) > 0) h.update(buf.subarray(0, n));
  } finally {
    closeSync(fd);
  }
  const sha256 = h.digest("hex");
  hashMemo.set(key, { size: st.size, mtimeMs: st.mtimeMs, sha256 });
  return sha256;
}
