import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { brownToText, detokenize, isHeadline, parseTaggedLine, splitTagged } from "../../src/data/brown.ts";
import { corpusStats, formatCorpusStats, loadCorpus, splitOf, type Corpus } from "../../src/data/corpus.ts";
import { SelfreportError } from "../../src/errors.ts";

// ───────────────────────── detokenisation ─────────────────────────

/** One tagged sentence per argument, each on its own indented line (= its own paragraph). */
function paragraphs(...lines: string[]): string {
  return lines.map((l) => `\n\n\t${l}`).join("");
}

test("splitTagged splits at the last slash and keeps tag suffixes", () => {
  assert.deepEqual(splitTagged("and/or/cc"), { word: "and/or", tag: "cc" });
  assert.deepEqual(splitTagged("1-1/2/cd"), { word: "1-1/2", tag: "cd" });
  assert.deepEqual(splitTagged("County/nn-tl-hl"), { word: "County", tag: "nn-tl-hl" });
  assert.deepEqual(splitTagged("--/---hl"), { word: "--", tag: "---hl" });
  assert.deepEqual(splitTagged("bare"), { word: "bare", tag: "" });
  assert.deepEqual(parseTaggedLine("\tThe/at jury/nn ./.  "), [
    { word: "The", tag: "at" },
    { word: "jury", tag: "nn" },
    { word: ".", tag: "." },
  ]);
});

test("double quotes: `` and '' become \" attached inwards, with . and , moved inside the closing quote", () => {
  const raw = paragraphs(
    "``/`` Only/rb a/at relative/jj handful/nn of/in such/jj reports/nns was/bedz received/vbn ''/'' ,/, the/at jury/nn said/vbd ,/, ``/`` considering/in the/at interest/nn ''/'' ./.",
    "It/pps found/vbd ``/`` no/at evidence/nn ''/'' that/cs any/dti irregularities/nns took/vbd place/nn ./.",
    "He/pps asked/vbd ,/, ``/`` Why/wrb ''/'' ?/. ?/.",
  );
  assert.equal(
    brownToText(raw),
    [
      '"Only a relative handful of such reports was received," the jury said, "considering the interest."',
      'It found "no evidence" that any irregularities took place.',
      'He asked, "Why?"',
    ].join("\n\n"),
  );
});

test("possessives and contractions: Brown's single tokens and split 's / n't tokens", () => {
  assert.equal(brownToText(paragraphs("Atlanta's/np$ voters/nns don't/do* know/vb the/at students'/nns$ plans/nns ./.")), "Atlanta's voters don't know the students' plans.");
  assert.equal(detokenize(["John", "'s", "dog", "does", "n't", "bark", ",", "they", "'re", "sure", "and", "I", "'ll", "go", "."]), "John's dog doesn't bark, they're sure and I'll go.");
  // Words that start with an apostrophe but are not clitics keep their space.
  assert.equal(detokenize(["get", "'em", "'round", "in", "'61", "."]), "get 'em 'round in '61.");
});

test("punctuation, brackets, dashes and abbreviations", () => {
  const raw = paragraphs(
    "Yes/rb ;/. ;/. no/rb :/: maybe/rb (/( see/vb [/( below/rb ]/) )/) ,/, 5/cd %/nn !/. !/.",
    "It/pps was/bedz won/vbn by/in Ivan/np Allen/np Jr./np ./.",
    "He/pps came/vbd --/-- late/rb --/-- and/cc left/vbd ./.",
  );
  assert.equal(brownToText(raw), ["Yes; no: maybe (see [below]), 5%!", "It was won by Ivan Allen Jr.", "He came -- late -- and left."].join("\n\n"));
});

test("slashes inside words, inch marks and single quotes", () => {
  assert.equal(brownToText(paragraphs("Use/vb 1/2/cd and/or/cc 1-1/2/cd bars/nns of/in 1/8''/nn ''/'' brass/nn ./.")), 'Use 1/2 and/or 1-1/2 bars of 1/8" brass.');
  assert.equal(
    brownToText(paragraphs("He/pps said/vbd ,/, ``/`` You'll/ppss+md think/vb ,/, '/' You're/ppss+ber my/pp$ man/nn '/' ''/'' ./.")),
    "He said, \"You'll think, 'You're my man.'\"",
  );
  assert.equal(brownToText(paragraphs("more/ap '/' pro/jj '/' letters/nns than/in '/' con/jj '/' ./.")), "more 'pro' letters than 'con'.");
});

test("tag suffixes: -tl words are ordinary text, -hl lines are headlines of their own", () => {
  assert.equal(isHeadline(parseTaggedLine("Merger/nn-hl proposed/vbn-hl")), true);
  assert.equal(isHeadline(parseTaggedLine("``/`` Must/md-hl solve/vb-hl problem/nn-hl ''/''")), true);
  assert.equal(isHeadline(parseTaggedLine("The/at Fulton/np-tl County/nn-tl Grand/jj-tl Jury/nn-tl said/vbd ./.")), false);
  const raw = [
    "",
    "",
    "\tThe/at Fulton/np-tl County/nn-tl Grand/jj-tl Jury/nn-tl met/vbd ./.",
    "",
    "",
    "",
    "Merger/nn-hl proposed/vbn-hl ",
    "However/wrb ,/, the/at jury/nn said/vbd so/rb ./.",
    "It/pps urged/vbd action/nn ./.",
    "Colquitt/np-hl ",
    "--/-- After/in a/at long/jj controversy/nn ,/, it/pps ended/vbd ./.",
    "",
  ].join("\n");
  assert.equal(
    brownToText(raw),
    ["The Fulton County Grand Jury met.", "Merger proposed", "However, the jury said so. It urged action.", "Colquitt -- After a long controversy, it ended."].join("\n\n"),
  );
});

test("paragraphs: indented lines open one, unindented lines continue it, a line broken mid-sentence is rejoined", () => {
  const raw = [
    "",
    "\tFirst/od sentence/nn ./.",
    "Second/od sentence/nn ./.",
    "",
    "",
    "\tA/at new/jj paragraph/nn ends/vbz on/in a/at",
    "",
    "",
    "broken/vbn line/nn ./.",
    "",
    "",
    "",
    "",
    "Another/dt article/nn ./.",
  ].join("\n");
  assert.equal(brownToText(raw), ["First sentence. Second sentence.", "A new paragraph ends on a broken line.", "Another article."].join("\n\n"));
});

// ───────────────────────── the Brown corpus ─────────────────────────

let brownCache: Corpus | undefined;
function brown(): Corpus {
  if (brownCache === undefined) {
    const t0 = performance.now();
    brownCache = loadCorpus("brown");
    console.log(`Brown corpus loaded in ${(performance.now() - t0).toFixed(0)} ms`);
  }
  return brownCache;
}

test("Brown: 500 documents, ~1.0–1.2 M words, clean text", () => {
  const c = brown();
  assert.equal(c.documents.length, 500);
  const stats = corpusStats(c);
  console.log(formatCorpusStats(stats));
  assert.ok(stats.total.words >= 1.0e6 && stats.total.words <= 1.2e6, `words ${stats.total.words}`);
  assert.equal(new Set(c.documents.map((d) => d.id)).size, 500);
  assert.deepEqual([...new Set(c.documents.map((d) => d.category))].join(""), "abcdefghjklmnpr");
  const ids = c.documents.map((d) => d.id);
  assert.deepEqual(ids, [...ids].sort());
  for (const d of c.documents) {
    assert.equal(d.category, d.id[1]);
    assert.ok(d.text.length > 5000, `${d.id} has only ${d.text.length} characters`);
    // No tokenisation left: no Brown quote tokens, no space before punctuation or after "(",
    // no double spaces or triple newlines, no word/tag pairs.
    const bad = /``|''| [,;?!).](?=\s|$)|\( |  |\n\n\n|[a-z]\/(?:at|nn|np|in|jj|vb[dgnz]?|cc|cd|rb)\b/.exec(d.text);
    if (bad !== null) assert.fail(`${d.id}: suspicious "${bad[0]}" in …${d.text.slice(Math.max(0, bad.index - 40), bad.index + 40)}…`);
  }
  assert.ok(c.documents[0].text.startsWith("The Fulton County Grand Jury said Friday an investigation of Atlanta's recent primary election produced \"no evidence\" that any irregularities took place.\n\n"));
});

test("Brown split: every 10th file held out, deterministic and disjoint, kept under a category filter", () => {
  const c = brown();
  const train = c.split("train").map((d) => d.id);
  const held = c.split("heldout").map((d) => d.id);
  assert.equal(held.length, 50);
  assert.equal(train.length, 450);
  assert.equal(held[0], "ca10");
  assert.ok(held.includes("cr09"));
  assert.equal(train.filter((id) => held.includes(id)).length, 0);
  assert.deepEqual([...train, ...held].sort(), c.documents.map((d) => d.id));
  // Deterministic: a fresh load gives the same split; and split() returns copies.
  const again = loadCorpus("brown");
  assert.deepEqual(again.split("heldout").map((d) => d.id), held);
  c.split("train").pop();
  assert.equal(c.split("train").length, 450);
  // Every genre is represented in the held-out split.
  assert.equal(new Set(c.split("heldout").map((d) => d.category)).size, 15);
  const fiction = loadCorpus("brown", { categories: ["k", "l"] });
  assert.ok(fiction.documents.every((d) => d.category === "k" || d.category === "l"));
  assert.deepEqual(fiction.split("heldout").map((d) => d.id), held.filter((id) => id[1] === "k" || id[1] === "l"));
});

test("splitOf: 10 % held out; small corpora still hold one out", () => {
  const n = 25;
  assert.deepEqual(Array.from({ length: n }, (_, i) => i).filter((i) => splitOf(i, n) === "heldout"), [9, 19]);
  assert.deepEqual([0, 1, 2].map((i) => splitOf(i, 3)), ["train", "train", "heldout"]);
  assert.deepEqual([splitOf(0, 1)], ["train"]);
});

// ───────────────────────── user files ─────────────────────────

const dir = mkdtempSync(join(tmpdir(), "selfreport-corpus-"));
function file(name: string, content: string): string {
  const p = join(dir, name);
  writeFileSync(p, content);
  return p;
}

test(".txt: one document per blank-line-separated block", () => {
  const p = file("blocks.txt", "\uFEFFFirst document,\nsecond line.\r\n\r\n\n  Second document.\n   \nThird.\n\n");
  const c = loadCorpus(p);
  assert.deepEqual(c.documents, [
    { id: "blocks-0", text: "First document,\nsecond line." },
    { id: "blocks-1", text: "  Second document." },
    { id: "blocks-2", text: "Third." },
  ]);
  assert.deepEqual(c.split("heldout").map((d) => d.id), ["blocks-2"]);
  assert.equal(loadCorpus(file("one.txt", "Just one\ndocument.\n")).documents.length, 1);
});

test(".txt: <|endoftext|> lines separate documents, keeping their paragraphs", () => {
  const p = file("eot.txt", "Para one.\n\nPara two.\n<|endoftext|>\nDoc two.\n<|endoftext|>\n\n");
  assert.deepEqual(loadCorpus(p).documents, [
    { id: "eot-0", text: "Para one.\n\nPara two." },
    { id: "eot-1", text: "Doc two." },
  ]);
});

test(".jsonl: text and optional id per line; blank lines and empty texts skipped", () => {
  const lines = ['{"id": "alpha", "text": "Hello there."}', "", '{"text": "No id here.", "meta": 1}', '{"id": 7, "text": "Numeric id."}', '{"text": "   "}'];
  const c = loadCorpus(file("docs.jsonl", lines.join("\n") + "\n"));
  assert.deepEqual(c.documents, [
    { id: "alpha", text: "Hello there." },
    { id: "docs-3", text: "No id here." },
    { id: "7", text: "Numeric id." },
  ]);
  assert.deepEqual(c.split("train").map((d) => d.id), ["alpha", "docs-3"]);
  assert.deepEqual(c.split("heldout").map((d) => d.id), ["7"]);
});

// ───────────────────────── errors ─────────────────────────

function throwsUser(fn: () => unknown, pattern: RegExp): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof SelfreportError, `expected a SelfreportError, got ${String(e)}`);
    assert.match(e.message, pattern);
    return true;
  });
}

test("errors: missing, unreadable, unknown extension, empty", () => {
  throwsUser(() => loadCorpus(join(dir, "nope.txt")), /corpus file not found: .*nope\.txt \(give "brown" or a \.txt \/ \.jsonl file\)/);
  throwsUser(() => loadCorpus("browne"), /corpus file not found: browne/);
  const d = join(dir, "folder.txt");
  mkdirSync(d);
  throwsUser(() => loadCorpus(d), /cannot read corpus file .*folder\.txt: it is not a regular file/);
  throwsUser(() => loadCorpus(file("data.csv", "a,b\n1,2\n")), /unsupported extension "\.csv": use \.txt or \.jsonl, or "brown"/);
  throwsUser(() => loadCorpus(file("noext", "text")), /unsupported extension "\(none\)"/);
  throwsUser(() => loadCorpus(file("empty.txt", "")), /corpus .*empty\.txt is empty: it has no document with any text/);
  throwsUser(() => loadCorpus(file("blank.txt", "\n  \n\t\n")), /is empty/);
  throwsUser(() => loadCorpus(file("empty.jsonl", "\n\n")), /is empty/);
  throwsUser(() => loadCorpus("brown", { categories: ["a", "z"] }), /unknown Brown categories z/);
  throwsUser(() => loadCorpus(file("x.txt", "a"), { categories: ["a"] }), /Brown corpus only/);
});

test("errors: bad .jsonl lines name their line number", () => {
  throwsUser(() => loadCorpus(file("bad1.jsonl", '{"text": "ok"}\n{"text": oops}\n')), /bad1\.jsonl line 2 is not valid JSON/);
  throwsUser(() => loadCorpus(file("bad2.jsonl", '{"text": "ok"}\n\n{"body": "x"}\n')), /bad2\.jsonl line 3 has no "text" field/);
  throwsUser(() => loadCorpus(file("bad3.jsonl", '{"text": 42}\n')), /line 1 has a "text" field that is not a string \(number\)/);
  throwsUser(() => loadCorpus(file("bad4.jsonl", '["text"]\n')), /line 1 is not a JSON object/);
  throwsUser(() => loadCorpus(file("bad5.jsonl", '{"id": "a", "text": "x"}\n{"id": "a", "text": "y"}\n')), /line 2 repeats the id "a" of line 1/);
  throwsUser(() => loadCorpus(file("bad6.jsonl", '{"id": {"k": 1}, "text": "x"}\n')), /line 1 has an "id" that is neither a string nor a number/);
});
