/**
 * Tokenizers from a Hugging Face `tokenizer.json` (the format of the Rust `tokenizers` crate), for
 * the BPE models of causal LMs:
 *
 *   - byte-level BPE (GPT-2, GPT-NeoX/Pythia, Llama 3, Qwen2): a `Split` pre-tokenizer with the
 *     file's Oniguruma regex (translated by onig-regex.ts) and/or `ByteLevel` (GPT-2's regex, bytes
 *     mapped to printable characters), decoded by the `ByteLevel` decoder;
 *   - SentencePiece-style BPE (Llama 2, Mistral): a `Prepend("▁")` + `Replace(" " → "▁")`
 *     normalizer or a `Metaspace` pre-tokenizer, `byte_fallback` to `<0xNN>` pieces for characters
 *     outside the vocabulary, `unk_token`, decoded by `Replace("▁" → " ")`, `ByteFallback`, `Fuse`,
 *     `Strip` (or `Metaspace`).
 *
 * The steps and their order are the crate's: split the text on added tokens; normalise each other
 * part; pre-tokenise; BPE each piece, merging the adjacent pair with the lowest merge rank (the
 * leftmost on ties) one at a time, exactly as `tokenizers`' `Word::merge_all`; with
 * `ignore_merges` (Llama 3) a piece that is itself a vocabulary token is that token.
 *
 * Added tokens marked `special` (`<s>`, `<|endoftext|>`, `<|begin_of_text|>`…) are recognised in the
 * text only with `{ allowSpecial: true }`, like the GPT-2 tokenizer: a corpus containing the literal
 * string must not inject control tokens. Non-special added tokens are always matched, as the crate
 * does; `normalized: false` ones in the raw text, `normalized: true` ones in the normalised text,
 * with `lstrip`/`rstrip`/`single_word` as the crate applies them.
 *
 * BOS/EOS: `encode(text, { addSpecialTokens: true })` adds what the post-processor's
 * `TemplateProcessing` adds (Llama 2/3: BOS first), or, when tokenizer_config.json sets
 * `add_bos_token`/`add_eos_token`, what those say (as transformers' Llama fast tokenizer does).
 * Without it nothing is added, like the GPT-2 tokenizer. `bosId`/`eosId`/`padId` come from
 * tokenizer_config.json's `bos_token`/`eos_token`/`pad_token` when present.
 */
import { existsSync } from "node:fs";
import { join } from "node:path";
import { SelfreportError } from "../errors.ts";
import { onigToJs, WHITE_SPACE } from "./onig-regex.ts";
import {
  encodeBatchWith,
  gpt2FilesHint,
  isObject,
  readJson,
  tokenizerFromFiles,
  type AddedToken,
  type DecodeOptions,
  type EncodeBatchOptions,
  type EncodedBatch,
  type EncodeOptions,
  type Tokenizer,
} from "./tokenizer.ts";

/** GPT-2's pre-tokenisation regex as written in tokenizer.json files (Oniguruma syntax). */
export const GPT2_ONIG_PATTERN = "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

/** GPT-2's reversible map from bytes to printable characters (byte b → BYTES_TO_CHARS[b]). */
const BYTES_TO_CHARS: readonly string[] = (() => {
  const table = new Array<string>(256);
  const printable = (b: number): boolean => (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
  let n = 0;
  for (let b = 0; b < 256; b++) table[b] = printable(b) ? String.fromCharCode(b) : String.fromCharCode(256 + n++);
  return table;
})();
const CHARS_TO_BYTES: ReadonlyMap<string, number> = new Map(BYTES_TO_CHARS.map((c, b) => [c, b]));

/** Entries beyond this size empty the BPE cache (one entry per distinct piece). */
const CACHE_LIMIT = 100_000;
/** Longer pieces (whole SentencePiece segments, which have no pre-tokenizer) are not cached. */
const CACHE_MAX_PIECE = 256;

/** A piece of text on its way through the pipeline; `atStart`: it begins the whole input. */
interface Piece {
  text: string;
  atStart: boolean;
}

type Normalizer = (s: string) => string;
type PreTokenizer = (pieces: Piece[]) => Piece[];
type Decoder = (tokens: string[]) => string[];

type Behavior = "Removed" | "Isolated" | "MergedWithPrevious" | "MergedWithNext" | "Contiguous";

interface JsonAddedToken extends AddedToken {
  lstrip: boolean;
  singleWord: boolean;
  /** Matched in the normalised text (as normalizer(content)) rather than in the raw text. */
  normalized: boolean;
  rstrip: boolean;
}

/** The BPE model of a tokenizer.json. */
interface Bpe {
  vocab: Map<string, number>;
  /** (left id · base + right id) → [rank, merged id]. */
  merges: Map<number, [number, number]>;
  base: number;
  unkId: number | undefined;
  fuseUnk: boolean;
  byteFallback: boolean;
  /** byte → id of "<0xNN>" (when byte_fallback). */
  byteIds: (number | undefined)[];
  ignoreMerges: boolean;
}

export class JsonTokenizer implements Tokenizer {
  readonly vocabSize: number;
  readonly eosId: number;
  readonly bosId: number | null;
  readonly padId: number | null;
  readonly addBos: boolean;
  readonly specialTokens: readonly AddedToken[];
  /** The file it was read from (for messages). */
  readonly source: string;
  private readonly model: Bpe;
  private readonly idToTok: (string | undefined)[];
  private readonly added: Map<string, JsonAddedToken>;
  private readonly addedById: Map<number, JsonAddedToken>;
  /** Added-token matchers on the raw text / the normalised text, with and without special tokens. */
  private readonly rawMatchers: { all: Matcher | undefined; plain: Matcher | undefined };
  private readonly normMatchers: { all: Matcher | undefined; plain: Matcher | undefined };
  private readonly normalizer: Normalizer | undefined;
  private readonly preTokenizer: PreTokenizer | undefined;
  private readonly decoder: Decoder | undefined;
  private readonly prefixIds: readonly number[];
  private readonly suffixIds: readonly number[];
  private readonly cache = new Map<string, number[]>();

  constructor(json: unknown, source: string, config: unknown = undefined, configSource = "tokenizer_config.json") {
    this.source = source;
    const bad = (field: string, problem: string): SelfreportError => new SelfreportError(`${source}: ${field}: ${problem}`);
    if (!isObject(json)) throw new SelfreportError(`${source}: expected a Hugging Face tokenizer.json (a JSON object with a "model")`);
    if (!isObject(json["model"])) throw bad("model", `missing; expected an object with "type": "BPE"`);
    this.model = parseBpe(json["model"], bad);

    // vocabulary and added tokens
    this.idToTok = [];
    for (const [tok, id] of this.model.vocab) {
      const prev = this.idToTok[id];
      if (prev !== undefined) throw bad("model.vocab", `tokens ${JSON.stringify(prev)} and ${JSON.stringify(tok)} share id ${id}`);
      this.idToTok[id] = tok;
    }
    this.added = new Map();
    this.addedById = new Map();
    const rawAdded = json["added_tokens"] ?? [];
    if (!Array.isArray(rawAdded)) throw bad("added_tokens", "expected an array");
    rawAdded.forEach((t, i) => {
      if (!isObject(t) || typeof t["content"] !== "string" || t["content"] === "" || !isId(t["id"])) {
        throw bad(`added_tokens[${i}]`, `expected a non-empty string "content" and a non-negative integer "id", got ${JSON.stringify(t)}`);
      }
      const special = t["special"] === true;
      const tok: JsonAddedToken = {
        id: t["id"], content: t["content"], special, lstrip: t["lstrip"] === true, rstrip: t["rstrip"] === true,
        singleWord: t["single_word"] === true, normalized: t["normalized"] === undefined ? !special : t["normalized"] === true,
      };
      const inVocab = this.idToTok[tok.id];
      if (inVocab !== undefined && inVocab !== tok.content) throw bad(`added_tokens[${i}]`, `${JSON.stringify(tok.content)} reuses id ${tok.id} of ${JSON.stringify(inVocab)}`);
      this.idToTok[tok.id] = tok.content;
      this.added.set(tok.content, tok);
      this.addedById.set(tok.id, tok);
    });
    this.vocabSize = this.idToTok.length;
    const all = [...this.added.values()];
    this.specialTokens = all.filter((t) => t.special).map((t) => ({ id: t.id, content: t.content, special: true }));

    this.normalizer = json["normalizer"] == null ? undefined : parseNormalizer(json["normalizer"], "normalizer", bad);
    const norm = this.normalizer ?? ((x: string): string => x);
    const raw = all.filter((t) => !t.normalized);
    const normed = all.filter((t) => t.normalized);
    this.rawMatchers = { all: matcher(raw, (x) => x), plain: matcher(raw.filter((t) => !t.special), (x) => x) };
    this.normMatchers = { all: matcher(normed, norm), plain: matcher(normed.filter((t) => !t.special), norm) };
    this.preTokenizer = json["pre_tokenizer"] == null ? undefined : parsePreTokenizer(json["pre_tokenizer"], "pre_tokenizer", bad);
    this.decoder = json["decoder"] == null ? undefined : parseDecoder(json["decoder"], "decoder", bad);

    // special ids: tokenizer_config.json first, then the post-processor, then the usual names
    const cfgBad = (field: string, problem: string): SelfreportError => new SelfreportError(`${configSource}: ${field}: ${problem}`);
    const cfg = config === undefined ? {} : config;
    if (!isObject(cfg)) throw new SelfreportError(`${configSource}: expected a JSON object`);
    const cfgToken = (field: string): number | null | undefined => {
      const v = cfg[field];
      if (v === undefined) return undefined;
      if (v === null) return null;
      const content = typeof v === "string" ? v : isObject(v) && typeof v["content"] === "string" ? v["content"] : undefined;
      if (content === undefined) throw cfgBad(field, `expected a token string or {"content": …}, got ${JSON.stringify(v)}`);
      const id = this.tokenToId(content);
      if (id === undefined) throw cfgBad(field, `${JSON.stringify(content)} is not a token of ${source}`);
      return id;
    };
    const template = json["post_processor"] == null ? { prefix: [], suffix: [] } : parsePostProcessor(json["post_processor"], "post_processor", bad);
    const cfgBos = cfgToken("bos_token");
    const cfgEos = cfgToken("eos_token");
    const cfgPad = cfgToken("pad_token");
    this.bosId = cfgBos !== undefined ? cfgBos : template.prefix.length > 0 ? template.prefix[0]! : null;
    const eos = cfgEos ?? template.suffix.at(-1) ?? firstDefined(["</s>", "<|endoftext|>", "<|end_of_text|>", "<eos>"].map((t) => this.tokenToId(t)));
    if (eos === undefined) {
      throw new SelfreportError(`${source}: no end-of-text token: ${configSource} has no eos_token and the vocabulary has none of "</s>", "<|endoftext|>", "<|end_of_text|>", "<eos>"`);
    }
    this.eosId = eos;
    this.padId = cfgPad ?? null;
    const addBos = cfg["add_bos_token"];
    const addEos = cfg["add_eos_token"];
    for (const [k, v] of [["add_bos_token", addBos], ["add_eos_token", addEos]] as const) {
      if (v !== undefined && typeof v !== "boolean") throw cfgBad(k, `expected true or false, got ${JSON.stringify(v)}`);
    }
    if (typeof addBos === "boolean" || typeof addEos === "boolean") {
      if (addBos === true && this.bosId === null) throw cfgBad("add_bos_token", "is true but there is no bos_token");
      this.prefixIds = addBos === true ? [this.bosId!] : typeof addBos === "boolean" ? [] : template.prefix;
      this.suffixIds = addEos === true ? [this.eosId] : typeof addEos === "boolean" ? [] : template.suffix;
    } else {
      this.prefixIds = template.prefix;
      this.suffixIds = template.suffix;
    }
    this.addBos = this.bosId !== null && this.prefixIds[0] === this.bosId;
  }

  /**
   * Token ids of `text` (see the top of this file for added tokens and addSpecialTokens): added
   * tokens with `normalized: false` are found in the raw text, the rest of it is normalised, then
   * added tokens with `normalized: true` are found in the normalised text, as the crate does.
   */
  encode(text: string, opts: EncodeOptions = {}): number[] {
    const out: number[] = opts.addSpecialTokens === true ? [...this.prefixIds] : [];
    const which = opts.allowSpecial === true ? "all" : "plain";
    for (const seg of splitAdded(text, this.rawMatchers[which])) {
      if (seg.id !== undefined) {
        out.push(seg.id);
        continue;
      }
      const normalized = this.normalizer === undefined ? seg.text : this.normalizer(seg.text);
      for (const piece of splitAdded(normalized, this.normMatchers[which])) {
        if (piece.id !== undefined) out.push(piece.id);
        else this.encodeNormalized(piece.text, seg.start === 0 && piece.start === 0, out);
      }
    }
    if (opts.addSpecialTokens === true) out.push(...this.suffixIds);
    return out;
  }

  /** Text of `ids` through the file's decoder; invalid UTF-8 decodes to U+FFFD. */
  decode(ids: ArrayLike<number>, opts: DecodeOptions = {}): string {
    const tokens: string[] = [];
    for (let i = 0; i < ids.length; i++) {
      const id = ids[i]!;
      const tok = Number.isInteger(id) ? this.idToTok[id] : undefined;
      if (tok === undefined) throw new SelfreportError(`token id ${String(id)} is not in the vocabulary of ${this.source} (${this.vocabSize} ids)`);
      if (opts.skipSpecialTokens === true && this.addedById.get(id)?.special === true) continue;
      tokens.push(tok);
    }
    return this.decoder === undefined ? tokens.join(" ") : this.decoder(tokens).join("");
  }

  encodeBatch(texts: readonly string[], opts: EncodeBatchOptions = {}): EncodedBatch {
    return encodeBatchWith(this, texts, { ...opts, padId: opts.padId ?? this.padId ?? this.eosId });
  }

  /** Id of a vocabulary token in the file's spelling ("Ġthe", "▁the", "<0x0A>") or of an added token. */
  tokenToId(token: string): number | undefined {
    return this.added.get(token)?.id ?? this.model.vocab.get(token);
  }

  /** The file's spelling of id's token (added tokens: their text). */
  idToToken(id: number): string | undefined {
    return Number.isInteger(id) ? this.idToTok[id] : undefined;
  }

  /** BPE ids of normalised text without added tokens (`atStart`: it begins the input). */
  private encodeNormalized(normalized: string, atStart: boolean, out: number[]): void {
    if (normalized.length === 0) return;
    const pieces = this.preTokenizer === undefined ? [{ text: normalized, atStart }] : this.preTokenizer([{ text: normalized, atStart }]);
    for (const p of pieces) {
      let ids = this.cache.get(p.text);
      if (ids === undefined) {
        ids = bpe(this.model, p.text, this.source);
        if (p.text.length <= CACHE_MAX_PIECE) {
          if (this.cache.size >= CACHE_LIMIT) this.cache.clear();
          this.cache.set(p.text, ids);
        }
      }
      for (const id of ids) out.push(id);
    }
  }
}

// ───────────────────────── added tokens ─────────────────────────

/** Finds added tokens: a regex of their (normalised) texts, longest first, and text → token. */
interface Matcher {
  re: RegExp;
  byText: Map<string, JsonAddedToken>;
}

function matcher(tokens: JsonAddedToken[], norm: (s: string) => string): Matcher | undefined {
  const byText = new Map<string, JsonAddedToken>();
  for (const t of tokens) {
    const key = norm(t.content);
    if (key.length > 0 && !byText.has(key)) byText.set(key, t);
  }
  const re = alternation([...byText.keys()]);
  return re === undefined ? undefined : { re, byText };
}

/** The Unicode \w of Rust's regex crate (single_word boundaries). */
const WORD_CHAR = /[\p{Alphabetic}\p{M}\p{Nd}\p{Pc}\p{Join_Control}]/u;

/**
 * Splits text into added tokens and the text between them (the crate's `find_matches`): a
 * single_word token must not touch word characters; lstrip/rstrip take the whitespace beside it.
 */
function splitAdded(text: string, m: Matcher | undefined): { text: string; start: number; id?: number }[] {
  if (m === undefined || text.length === 0) return [{ text, start: 0 }];
  const out: { text: string; start: number; id?: number }[] = [];
  let last = 0;
  for (const match of text.matchAll(m.re)) {
    const tok = m.byText.get(match[0])!;
    let start = match.index;
    let end = start + match[0].length;
    if (tok.singleWord) {
      const before = start === 0 ? "" : String.fromCodePoint(text.codePointAt(start - 1 - (isLowSurrogate(text, start - 1) ? 1 : 0))!);
      const after = end === text.length ? "" : String.fromCodePoint(text.codePointAt(end)!);
      if (WORD_CHAR.test(before) || WORD_CHAR.test(after)) continue;
    }
    if (tok.lstrip) while (start > last && isWhiteSpace(text[start - 1]!)) start--;
    if (tok.rstrip) while (end < text.length && isWhiteSpace(text[end]!)) end++;
    if (start > last) out.push({ text: text.slice(last, start), start: last });
    out.push({ text: text.slice(start, end), start, id: tok.id });
    last = end;
  }
  if (last < text.length) out.push({ text: text.slice(last), start: last });
  return out;
}

function isLowSurrogate(s: string, i: number): boolean {
  const c = s.charCodeAt(i);
  return c >= 0xdc00 && c <= 0xdfff && i > 0;
}

// ───────────────────────── BPE ─────────────────────────

function parseBpe(model: Record<string, unknown>, bad: (field: string, problem: string) => SelfreportError): Bpe {
  if (model["type"] !== "BPE") {
    throw bad("model.type", `${JSON.stringify(model["type"])} is not supported; expected "BPE" (byte-level BPE as GPT-2/Llama 3/Qwen2/GPT-NeoX, or SentencePiece BPE as Llama 2/Mistral)`);
  }
  for (const field of ["continuing_subword_prefix", "end_of_word_suffix"]) {
    const v = model[field];
    if (v !== undefined && v !== null && v !== "") throw bad(`model.${field}`, `${JSON.stringify(v)} is not supported (the supported BPE models have none)`);
  }
  const dropout = model["dropout"];
  if (dropout !== undefined && dropout !== null && dropout !== 0) throw bad("model.dropout", `${JSON.stringify(dropout)}: BPE dropout makes encoding random; expected null`);
  const rawVocab = model["vocab"];
  if (!isObject(rawVocab)) throw bad("model.vocab", "missing; expected an object mapping tokens to ids");
  const vocab = new Map<string, number>();
  let base = 0;
  for (const [tok, id] of Object.entries(rawVocab)) {
    if (!isId(id)) throw bad("model.vocab", `token ${JSON.stringify(tok)} has id ${JSON.stringify(id)}, expected a non-negative integer`);
    vocab.set(tok, id);
    base = Math.max(base, id + 1);
  }
  const rawMerges = model["merges"];
  if (!Array.isArray(rawMerges)) throw bad("model.merges", `missing; expected an array of "a b" strings or ["a", "b"] pairs`);
  const merges = new Map<number, [number, number]>();
  rawMerges.forEach((m, rank) => {
    let pair: [string, string] | undefined;
    if (typeof m === "string") {
      const parts = m.split(" ");
      if (parts.length === 2 && parts[0] !== "" && parts[1] !== "") pair = [parts[0]!, parts[1]!];
    } else if (Array.isArray(m) && m.length === 2 && typeof m[0] === "string" && typeof m[1] === "string") {
      pair = [m[0], m[1]];
    }
    if (pair === undefined) throw bad(`model.merges[${rank}]`, `expected "a b" or ["a", "b"], got ${JSON.stringify(m)}`);
    const [a, b] = pair;
    const ia = vocab.get(a);
    const ib = vocab.get(b);
    const iab = vocab.get(a + b);
    if (ia === undefined || ib === undefined || iab === undefined) {
      const missing = [a, b, a + b].filter((t) => !vocab.has(t)).map((t) => JSON.stringify(t)).join(", ");
      throw bad(`model.merges[${rank}]`, `${JSON.stringify(m)} uses tokens that are not in model.vocab: ${missing}`);
    }
    merges.set(ia * base + ib, [rank, iab]); // a repeated pair keeps its last rank, as the crate's HashMap does
  });
  const unk = model["unk_token"];
  let unkId: number | undefined;
  if (unk !== undefined && unk !== null) {
    if (typeof unk !== "string") throw bad("model.unk_token", `expected a string or null, got ${JSON.stringify(unk)}`);
    unkId = vocab.get(unk);
    if (unkId === undefined) throw bad("model.unk_token", `${JSON.stringify(unk)} is not in model.vocab`);
  }
  const byteFallback = model["byte_fallback"] === true;
  const byteIds = Array.from({ length: 256 }, (_, b) => vocab.get(`<0x${b.toString(16).toUpperCase().padStart(2, "0")}>`));
  return { vocab, merges, base, unkId, fuseUnk: model["fuse_unk"] === true, byteFallback, byteIds, ignoreMerges: model["ignore_merges"] === true };
}

/** BPE of one piece as ids (the crate's `BPE::merge_word` then `Word::merge_all`). */
function bpe(m: Bpe, piece: string, source: string): number[] {
  if (m.ignoreMerges) {
    const whole = m.vocab.get(piece);
    if (whole !== undefined) return [whole];
  }
  const syms: number[] = [];
  let unk: number | undefined; // a pending unk (fused with the next unknown characters when fuse_unk)
  for (const ch of piece) {
    const id = m.vocab.get(ch);
    if (id !== undefined) {
      if (unk !== undefined) syms.push(unk);
      unk = undefined;
      syms.push(id);
      continue;
    }
    if (m.byteFallback) {
      const bytes = Buffer.from(ch, "utf8");
      const ids = Array.from(bytes, (b) => m.byteIds[b]);
      if (ids.every((x) => x !== undefined)) {
        // like the crate, byte pieces do not flush a pending unk first
        for (const x of ids) syms.push(x);
        continue;
      }
    }
    if (m.unkId === undefined) {
      throw new SelfreportError(`${source}: ${JSON.stringify(ch)} (U+${ch.codePointAt(0)!.toString(16).toUpperCase().padStart(4, "0")}) is not in the vocabulary and the model has no unk_token or byte fallback for it`);
    }
    if (unk !== undefined && !m.fuseUnk) syms.push(unk);
    unk = m.unkId;
  }
  if (unk !== undefined) syms.push(unk);
  return mergeAll(m, syms);
}

/**
 * Applies merges: repeatedly the current adjacent pair with the lowest rank, the leftmost on ties,
 * one occurrence at a time (a heap with stale entries skipped, as `Word::merge_all`).
 */
function mergeAll(m: Bpe, syms: number[]): number[] {
  const n = syms.length;
  if (n < 2) return syms;
  const prev = Int32Array.from({ length: n }, (_, i) => i - 1);
  const next = Int32Array.from({ length: n }, (_, i) => (i + 1 < n ? i + 1 : -1));
  const alive = new Uint8Array(n).fill(1);
  const heap = new MergeHeap();
  for (let i = 0; i + 1 < n; i++) {
    const mg = m.merges.get(syms[i]! * m.base + syms[i + 1]!);
    if (mg !== undefined) heap.push(mg[0], i, mg[1]);
  }
  for (;;) {
    const top = heap.pop();
    if (top === undefined) break;
    const [, pos, newId] = top;
    if (alive[pos] === 0 || next[pos] === -1) continue;
    const right = next[pos]!;
    const cur = m.merges.get(syms[pos]! * m.base + syms[right]!);
    if (cur === undefined || cur[1] !== newId) continue;
    syms[pos] = newId;
    alive[right] = 0;
    const after = next[right]!;
    next[pos] = after;
    if (after !== -1) prev[after] = pos;
    const before = prev[pos]!;
    if (before !== -1) {
      const mg = m.merges.get(syms[before]! * m.base + newId);
      if (mg !== undefined) heap.push(mg[0], before, mg[1]);
    }
    if (after !== -1) {
      const mg = m.merges.get(newId * m.base + syms[after]!);
      if (mg !== undefined) heap.push(mg[0], pos, mg[1]);
    }
  }
  const out: number[] = [];
  for (let i = 0; i !== -1; i = next[i]!) out.push(syms[i]!);
  return out;
}

/** A binary min-heap of [rank, pos, newId], ordered by rank then pos. */
class MergeHeap {
  private readonly items: [number, number, number][] = [];
  push(rank: number, pos: number, newId: number): void {
    const a = this.items;
    a.push([rank, pos, newId]);
    let i = a.length - 1;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (!less(a[i]!, a[p]!)) break;
      [a[i], a[p]] = [a[p]!, a[i]!];
      i = p;
    }
  }
  pop(): [number, number, number] | undefined {
    const a = this.items;
    if (a.length === 0) return undefined;
    const top = a[0]!;
    const last = a.pop()!;
    if (a.length > 0) {
      a[0] = last;
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        const r = l + 1;
        let s = i;
        if (l < a.length && less(a[l]!, a[s]!)) s = l;
        if (r < a.length && less(a[r]!, a[s]!)) s = r;
        if (s === i) break;
        [a[i], a[s]] = [a[s]!, a[i]!];
        i = s;
      }
    }
    return top;
  }
}
const less = (x: [number, number, number], y: [number, number, number]): boolean => x[0] < y[0] || (x[0] === y[0] && x[1] < y[1]);

// ───────────────────────── normalizers ─────────────────────────

type Bad = (field: string, problem: string) => SelfreportError;

function parseNormalizer(n: unknown, field: string, bad: Bad): Normalizer {
  if (!isObject(n)) throw bad(field, `expected an object with a "type", got ${JSON.stringify(n)}`);
  switch (n["type"]) {
    case "Sequence": {
      const list = n["normalizers"];
      if (!Array.isArray(list)) throw bad(`${field}.normalizers`, "expected an array");
      const steps = list.map((x, i) => parseNormalizer(x, `${field}.normalizers[${i}]`, bad));
      return (s) => steps.reduce((acc, f) => f(acc), s);
    }
    case "Prepend": {
      const p = n["prepend"];
      if (typeof p !== "string") throw bad(`${field}.prepend`, "expected a string");
      return (s) => (s.length === 0 ? s : p + s);
    }
    case "Replace": {
      const re = patternOf(n["pattern"], `${field}.pattern`, bad);
      const content = n["content"];
      if (typeof content !== "string") throw bad(`${field}.content`, "expected a string");
      return (s) => s.replace(re, () => content);
    }
    case "NFC":
    case "NFD":
    case "NFKC":
    case "NFKD": {
      const form = n["type"];
      return (s) => s.normalize(form);
    }
    case "Lowercase":
      return (s) => s.toLowerCase();
    default:
      throw bad(`${field}.type`, `${JSON.stringify(n["type"])} is not supported; expected one of Sequence, Prepend, Replace, NFC, NFD, NFKC, NFKD, Lowercase`);
  }
}

/** A tokenizer.json pattern ({"String": …} or {"Regex": …}) as a global RegExp. */
function patternOf(p: unknown, field: string, bad: Bad): RegExp {
  if (isObject(p) && typeof p["String"] === "string") return new RegExp(escapeRegExp(p["String"]), "gu");
  if (isObject(p) && typeof p["Regex"] === "string") {
    try {
      return onigToJs(p["Regex"], field);
    } catch (e) {
      throw bad(field, (e as Error).message.replace(`${field}: `, ""));
    }
  }
  throw bad(field, `expected {"String": …} or {"Regex": …}, got ${JSON.stringify(p)}`);
}

// ───────────────────────── pre-tokenizers ─────────────────────────

function parsePreTokenizer(p: unknown, field: string, bad: Bad): PreTokenizer {
  if (!isObject(p)) throw bad(field, `expected an object with a "type", got ${JSON.stringify(p)}`);
  switch (p["type"]) {
    case "Sequence": {
      const list = p["pretokenizers"];
      if (!Array.isArray(list)) throw bad(`${field}.pretokenizers`, "expected an array");
      const steps = list.map((x, i) => parsePreTokenizer(x, `${field}.pretokenizers[${i}]`, bad));
      return (pieces) => steps.reduce((acc, f) => f(acc), pieces);
    }
    case "Split": {
      const re = patternOf(p["pattern"], `${field}.pattern`, bad);
      const behavior = behaviorOf(p["behavior"], `${field}.behavior`, bad);
      const invert = p["invert"] === true;
      return (pieces) => {
        const out: Piece[] = [];
        for (const piece of pieces) for (const q of split(piece, re, behavior, invert)) out.push(q);
        return out;
      };
    }
    case "ByteLevel": {
      const addPrefixSpace = p["add_prefix_space"] === true;
      const useRegex = p["use_regex"] !== false;
      const re = onigToJs(GPT2_ONIG_PATTERN, field);
      return (pieces) => {
        const out: Piece[] = [];
        for (const piece of pieces) {
          const text = addPrefixSpace && !piece.text.startsWith(" ") ? ` ${piece.text}` : piece.text;
          if (!useRegex) {
            out.push({ text: byteLevel(text), atStart: piece.atStart });
            continue;
          }
          for (const q of split({ text, atStart: piece.atStart }, re, "Isolated", false)) out.push({ text: byteLevel(q.text), atStart: q.atStart });
        }
        return out;
      };
    }
    case "Metaspace": {
      const replacement = p["replacement"] ?? "▁";
      if (typeof replacement !== "string" || Array.from(replacement).length !== 1) throw bad(`${field}.replacement`, `expected one character, got ${JSON.stringify(replacement)}`);
      const scheme = prependScheme(p, field, bad);
      const doSplit = p["split"] !== false;
      return (pieces) =>
        pieces.flatMap((piece) => {
          let text = piece.text.replaceAll(" ", replacement);
          if ((scheme === "always" || (scheme === "first" && piece.atStart)) && !text.startsWith(replacement)) text = replacement + text;
          const q = { text, atStart: piece.atStart };
          return doSplit ? split(q, new RegExp(escapeRegExp(replacement), "gu"), "MergedWithNext", false) : [q];
        });
    }
    case "Digits": {
      const re = p["individual_digits"] === true ? /\p{N}/gu : /\p{N}+/gu;
      return (pieces) => pieces.flatMap((piece) => split(piece, re, "Isolated", false));
    }
    default:
      throw bad(`${field}.type`, `${JSON.stringify(p["type"])} is not supported; expected one of Sequence, Split, ByteLevel, Metaspace, Digits`);
  }
}

function behaviorOf(b: unknown, field: string, bad: Bad): Behavior {
  const all: Behavior[] = ["Removed", "Isolated", "MergedWithPrevious", "MergedWithNext", "Contiguous"];
  if (typeof b === "string" && (all as string[]).includes(b)) return b as Behavior;
  throw bad(field, `${JSON.stringify(b)}; expected one of ${all.join(", ")}`);
}

function prependScheme(p: Record<string, unknown>, field: string, bad: Bad): "always" | "first" | "never" {
  const s = p["prepend_scheme"];
  if (s === "always" || s === "first" || s === "never") return s;
  if (s !== undefined) throw bad(`${field}.prepend_scheme`, `${JSON.stringify(s)}; expected "always", "first" or "never"`);
  return p["add_prefix_space"] === false ? "never" : "always"; // the older format
}

/** The crate's `NormalizedString::split` with the matches of `re` as delimiters. */
function split(piece: Piece, re: RegExp, behavior: Behavior, invert: boolean): Piece[] {
  const text = piece.text;
  if (behavior === "Isolated") {
    // every match and every gap is a piece
    const out: Piece[] = [];
    let prev = 0;
    for (const m of text.matchAll(re)) {
      const start = m.index;
      if (m[0].length === 0) continue;
      if (prev !== start) out.push({ text: text.slice(prev, start), atStart: piece.atStart && prev === 0 });
      out.push({ text: m[0], atStart: piece.atStart && start === 0 });
      prev = start + m[0].length;
    }
    if (prev !== text.length) out.push({ text: text.slice(prev), atStart: piece.atStart && prev === 0 });
    return out;
  }
  const spans: [number, number, boolean][] = [];
  let prev = 0;
  for (const m of text.matchAll(re)) {
    const start = m.index;
    const end = start + m[0].length;
    if (start === end) continue;
    if (prev !== start) spans.push([prev, start, invert]);
    spans.push([start, end, !invert]);
    prev = end;
  }
  if (prev !== text.length) spans.push([prev, text.length, invert]);
  const merged: [number, number][] = [];
  switch (behavior) {
    case "Removed":
      for (const [s, e, isMatch] of spans) if (!isMatch) merged.push([s, e]);
      break;
    case "MergedWithPrevious": {
      // a match joins the piece before it, unless that piece is a match too
      let previousMatch = false;
      for (const [s, e, isMatch] of spans) {
        if (isMatch && !previousMatch && merged.length > 0) merged[merged.length - 1]![1] = e;
        else merged.push([s, e]);
        previousMatch = isMatch;
      }
      break;
    }
    case "MergedWithNext": {
      // a match joins the piece after it, unless that piece is a match too (the crate walks backwards)
      let nextMatch = false;
      for (let k = spans.length - 1; k >= 0; k--) {
        const [s, e, isMatch] = spans[k]!;
        if (isMatch && !nextMatch && merged.length > 0) merged[merged.length - 1]![0] = s;
        else merged.push([s, e]);
        nextMatch = isMatch;
      }
      merged.reverse();
      break;
    }
    case "Contiguous": {
      // runs of pieces with the same match state join
      let previousMatch = false;
      for (const [s, e, isMatch] of spans) {
        if (isMatch === previousMatch && merged.length > 0) merged[merged.length - 1]![1] = e;
        else merged.push([s, e]);
        previousMatch = isMatch;
      }
      break;
    }
  }
  return merged.filter(([s, e]) => e > s).map(([s, e]) => ({ text: text.slice(s, e), atStart: piece.atStart && s === 0 }));
}

/** UTF-8 bytes of text as byte-level characters (ASCII printable characters map to themselves). */
function byteLevel(text: string): string {
  let out = "";
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c >= 0x80) {
      out = "";
      break;
    }
    out += BYTES_TO_CHARS[c]!;
  }
  if (out.length === text.length) return out;
  out = "";
  for (const b of Buffer.from(text, "utf8")) out += BYTES_TO_CHARS[b]!;
  return out;
}

// ───────────────────────── post-processors ─────────────────────────

function parsePostProcessor(p: unknown, field: string, bad: Bad): { prefix: number[]; suffix: number[] } {
  if (!isObject(p)) throw bad(field, `expected an object with a "type", got ${JSON.stringify(p)}`);
  switch (p["type"]) {
    case "ByteLevel":
      return { prefix: [], suffix: [] };
    case "Sequence": {
      const list = p["processors"];
      if (!Array.isArray(list)) throw bad(`${field}.processors`, "expected an array");
      const prefix: number[] = [];
      const suffix: number[] = [];
      list.forEach((x, i) => {
        const t = parsePostProcessor(x, `${field}.processors[${i}]`, bad);
        prefix.unshift(...t.prefix);
        suffix.push(...t.suffix);
      });
      return { prefix, suffix };
    }
    case "TemplateProcessing": {
      const single = p["single"];
      const specials = p["special_tokens"];
      if (!Array.isArray(single)) throw bad(`${field}.single`, "expected an array");
      if (!isObject(specials)) throw bad(`${field}.special_tokens`, "expected an object");
      const prefix: number[] = [];
      const suffix: number[] = [];
      let seenA = false;
      single.forEach((item, i) => {
        if (isObject(item) && isObject(item["Sequence"])) {
          if (item["Sequence"]["id"] !== "A" || seenA) throw bad(`${field}.single[${i}]`, `expected one sequence "A" in a single-text template`);
          seenA = true;
          return;
        }
        const name = isObject(item) && isObject(item["SpecialToken"]) ? item["SpecialToken"]["id"] : undefined;
        if (typeof name !== "string") throw bad(`${field}.single[${i}]`, `expected {"SpecialToken": …} or {"Sequence": …}, got ${JSON.stringify(item)}`);
        const spec = specials[name];
        const ids = isObject(spec) ? spec["ids"] : undefined;
        if (!Array.isArray(ids) || !ids.every(isId)) throw bad(`${field}.special_tokens.${name}.ids`, "expected an array of ids");
        (seenA ? suffix : prefix).push(...(ids as number[]));
      });
      if (!seenA) throw bad(`${field}.single`, `has no {"Sequence": {"id": "A"}}`);
      return { prefix, suffix };
    }
    default:
      throw bad(`${field}.type`, `${JSON.stringify(p["type"])} is not supported; expected one of TemplateProcessing, ByteLevel, Sequence`);
  }
}

// ───────────────────────── decoders ─────────────────────────

function parseDecoder(d: unknown, field: string, bad: Bad): Decoder {
  if (!isObject(d)) throw bad(field, `expected an object with a "type", got ${JSON.stringify(d)}`);
  switch (d["type"]) {
    case "Sequence": {
      const list = d["decoders"];
      if (!Array.isArray(list)) throw bad(`${field}.decoders`, "expected an array");
      const steps = list.map((x, i) => parseDecoder(x, `${field}.decoders[${i}]`, bad));
      return (tokens) => steps.reduce((acc, f) => f(acc), tokens);
    }
    case "ByteLevel":
      return (tokens) => {
        const bytes: number[] = [];
        for (const t of tokens) {
          const mapped = Array.from(t, (c) => CHARS_TO_BYTES.get(c));
          if (mapped.every((b) => b !== undefined)) bytes.push(...(mapped as number[]));
          else bytes.push(...Buffer.from(t, "utf8"));
        }
        return [Buffer.from(bytes).toString("utf8")];
      };
    case "Replace": {
      const re = patternOf(d["pattern"], `${field}.pattern`, bad);
      const content = d["content"];
      if (typeof content !== "string") throw bad(`${field}.content`, "expected a string");
      return (tokens) => tokens.map((t) => t.replace(re, () => content));
    }
    case "ByteFallback":
      return (tokens) => {
        const out: string[] = [];
        let bytes: number[] = [];
        const flush = (): void => {
          if (bytes.length === 0) return;
          try {
            out.push(new TextDecoder("utf-8", { fatal: true, ignoreBOM: true }).decode(Uint8Array.from(bytes)));
          } catch {
            for (let k = 0; k < bytes.length; k++) out.push("\ufffd");
          }
          bytes = [];
        };
        for (const t of tokens) {
          const m = /^<0x([0-9A-Fa-f]{2})>$/.exec(t);
          if (m !== null) {
            bytes.push(parseInt(m[1]!, 16));
            continue;
          }
          flush();
          out.push(t);
        }
        flush();
        return out;
      };
    case "Fuse":
      return (tokens) => [tokens.join("")];
    case "Strip": {
      const content = d["content"];
      const start = d["start"];
      const stop = d["stop"];
      if (typeof content !== "string" || Array.from(content).length !== 1) throw bad(`${field}.content`, "expected one character");
      if (!isId(start) || !isId(stop)) throw bad(field, `expected non-negative integers "start" and "stop"`);
      return (tokens) =>
        tokens.map((t) => {
          const cs = Array.from(t);
          let a = 0;
          while (a < start && a < cs.length && cs[a] === content) a++;
          let b = cs.length;
          while (cs.length - b < stop && b > a && cs[b - 1] === content) b--;
          return cs.slice(a, b).join("");
        });
    }
    case "Metaspace": {
      const replacement = d["replacement"] ?? "▁";
      if (typeof replacement !== "string" || Array.from(replacement).length !== 1) throw bad(`${field}.replacement`, "expected one character");
      const scheme = prependScheme(d, field, bad);
      // as the crate: in the first token every replacement character is dropped unless the scheme is "never"
      return (tokens) => tokens.map((t, i) => Array.from(t, (c) => (c === replacement ? (i === 0 && scheme !== "never" ? "" : " ") : c)).join(""));
    }
    default:
      throw bad(`${field}.type`, `${JSON.stringify(d["type"])} is not supported; expected one of Sequence, ByteLevel, Replace, ByteFallback, Fuse, Strip, Metaspace`);
  }
}

// ───────────────────────── loading ─────────────────────────

/** Reads a tokenizer.json (and, when given and present, its tokenizer_config.json). */
export function tokenizerFromJsonFile(path: string, configPath?: string): JsonTokenizer {
  const json = readJson(path);
  const config = configPath !== undefined && existsSync(configPath) ? readJson(configPath) : undefined;
  return new JsonTokenizer(json, path, config, configPath ?? "tokenizer_config.json");
}

/**
 * The tokenizer of a model directory: `tokenizer.json` (+ `tokenizer_config.json` when present) if
 * there is one, else GPT-2's `vocab.json` + `merges.txt` (+ `added_tokens.json`). One error naming
 * the files looked for when there is neither.
 */
export function loadTokenizer(dir: string): Tokenizer {
  const tj = join(dir, "tokenizer.json");
  if (existsSync(tj)) return tokenizerFromJsonFile(tj, join(dir, "tokenizer_config.json"));
  const vocab = join(dir, "vocab.json");
  const merges = join(dir, "merges.txt");
  if (existsSync(vocab) && existsSync(merges)) return tokenizerFromFiles(vocab, merges, join(dir, "added_tokens.json"));
  const missing = existsSync(vocab) ? "merges.txt is missing" : existsSync(merges) ? "vocab.json is missing" : "no tokenizer files";
  throw new SelfreportError(
    `${dir}: ${missing}: a model directory needs vocab.json + merges.txt or tokenizer.json. ` +
      `OpenAI's encoder.json and vocab.bpe are vocab.json and merges.txt renamed: copy them in under those names${gpt2FilesHint()}; without a tokenizer, give token ids (activations --tokens)`,
  );
}

/**
 * The ids of the ten digit tokens "0"…"9" (GPT-2: 15…24): for each digit, the vocabulary token that
 * is exactly that digit and decodes to it, which a model emits to answer with the digit. Throws
 * naming the digit when it is not one token of the vocabulary.
 */
export function digitTokenIds(tok: Tokenizer): number[] {
  return Array.from({ length: 10 }, (_, d) => {
    const s = String(d);
    const id = tok.tokenToId(s);
    if (id === undefined || tok.decode([id]) !== s) {
      const pieces = tok.encode(s).map((i) => JSON.stringify(tok.idToToken(i)));
      throw new SelfreportError(
        `the digit ${JSON.stringify(s)} is not a single token of this tokenizer (${id === undefined ? "no vocabulary entry" : `token ${id} decodes to ${JSON.stringify(tok.decode([id]))}`}; "${s}" encodes as ${pieces.join(" + ") || "nothing"}); a digit-answer head needs the ten digits as single tokens`,
      );
    }
    return id;
  });
}

// ───────────────────────── helpers ─────────────────────────


function isId(v: unknown): v is number {
  return typeof v === "number" && Number.isSafeInteger(v) && v >= 0;
}

function firstDefined<T>(xs: (T | undefined)[]): T | undefined {
  return xs.find((x) => x !== undefined);
}

function escapeRegExp(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\/]/g, "\\$&");
}

/** A global regex matching any of `strings`, longest first (undefined for none). */
function alternation(strings: string[]): RegExp | undefined {
  if (strings.length === 0) return undefined;
  return new RegExp([...strings].sort((a, b) => b.length - a.length).map(escapeRegExp).join("|"), "gu");
}

const WS_RE = new RegExp(`^[${WHITE_SPACE}]$`, "u");
function isWhiteSpace(ch: string): boolean {
  return WS_RE.test(ch);
}
