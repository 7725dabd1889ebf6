/**
 * Translates the Oniguruma regexes of Hugging Face tokenizer.json files (the Rust `tokenizers`
 * crate compiles `Split` patterns with Oniguruma, Ruby syntax) into JavaScript `u` regexes with the
 * same matches:
 *
 *   - `\s` is Unicode White_Space (JavaScript's `\s` adds U+FEFF and lacks U+0085), `\d` is
 *     `\p{Nd}`, `\w` is letters, marks, decimal digits and connector punctuation, `\b` a boundary
 *     of that `\w`; `.` is anything but "\n"; `^`/`$` are line anchors (Ruby syntax), `\A`/`\z`/`\Z`
 *     string anchors;
 *   - `(?i:…)` (and `(?i)` to the end of its group): letters become both cases, in and out of
 *     classes (JavaScript in Node 20 has no inline modifiers);
 *   - possessive `?+ *+ ++` and atomic groups `(?>…)` become `(?=(?<aN>…))\k<aN>` (a lookahead
 *     does not backtrack into its match, so this is atomic); `X{n,m}+` is a repeated repeat, as in
 *     Ruby syntax; `{,n}` is `{0,n}`;
 *   - `\x{HHHH}` is a code point; an escaped punctuation character is that character.
 *
 * Constructs whose meaning would change (backreferences, nested classes and `&&`, POSIX brackets,
 * `\h`, `\G`, `\K`, `\R`, `\X`, negated shorthands inside a class) throw a SelfreportError naming
 * the construct, rather than match something else.
 */
import { SelfreportError } from "../errors.ts";

/** Unicode White_Space (what Oniguruma's Unicode `\s` matches), for use inside a class. */
export const WHITE_SPACE = "\\t\\n\\v\\f\\r \\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000";
/** Oniguruma's Unicode `\w`, for use inside a class. */
const WORD = "\\p{L}\\p{M}\\p{Nd}\\p{Pc}";

/** Characters that must be escaped to stand for themselves in a JavaScript `u` regex. */
const SYNTAX = new Set("^$\\.*+?()[]{}|/".split(""));

interface Group {
  /** Case-insensitive before the group opened (restored when it closes). */
  ciBefore: boolean;
  /** Text emitted when the group closes. */
  closer: string;
  /** Where the group starts in the output (the atom a quantifier after it repeats). */
  outStart: number;
}

/** The JavaScript source (for flags "gu") of an Oniguruma pattern; `where` names it in errors. */
export function onigToJsSource(pattern: string, where: string): string {
  const fail = (what: string, at: number): SelfreportError =>
    new SelfreportError(`${where}: the regex ${JSON.stringify(pattern)} uses ${what} at offset ${at}, which is not supported`);
  const cps = Array.from(pattern);
  let i = 0;
  let out = "";
  let ci = false;
  let atomStart = -1;
  let atomics = 0;
  const groups: Group[] = [];

  const peek = (k = 0): string | undefined => cps[i + k];

  /** Reads `{…}` after \p / \x; returns the inside. */
  const braced = (): string => {
    if (peek() !== "{") throw fail("an escape without {…}", i);
    const end = cps.indexOf("}", i);
    if (end < 0) throw fail("an unclosed {", i);
    const inside = cps.slice(i + 1, end).join("");
    i = end + 1;
    return inside;
  };

  /** An escape (after the backslash) that means a set; returns class contents or undefined. */
  const escapeSet = (c: string, inClass: boolean): { text: string; negated: boolean } | undefined => {
    switch (c) {
      case "s": return { text: WHITE_SPACE, negated: false };
      case "S": return { text: WHITE_SPACE, negated: true };
      case "d": return { text: "\\p{Nd}", negated: false };
      case "D": return { text: "\\p{Nd}", negated: true };
      case "w": return { text: WORD, negated: false };
      case "W": return { text: WORD, negated: true };
      case "p":
      case "P": {
        let name = braced();
        let neg = c === "P";
        if (name.startsWith("^")) {
          name = name.slice(1);
          neg = !neg;
        }
        if (!/^[A-Za-z_=]+$/.test(name)) throw fail(`the property \\${c}{${name}}`, i);
        const text = `\\p{${name}}`;
        if (inClass && neg) return { text: `\\P{${name}}`, negated: false };
        return { text, negated: neg };
      }
      default: return undefined;
    }
  };

  /** A single-character escape (after the backslash) as a code point, or undefined. */
  const escapeChar = (c: string): number | undefined => {
    switch (c) {
      case "t": return 0x09;
      case "n": return 0x0a;
      case "v": return 0x0b;
      case "f": return 0x0c;
      case "r": return 0x0d;
      case "a": return 0x07;
      case "e": return 0x1b;
      case "0": return 0;
      case "x": {
        if (peek() === "{") {
          const hex = braced();
          if (!/^[0-9A-Fa-f]{1,6}$/.test(hex)) throw fail(`\\x{${hex}}`, i);
          return parseInt(hex, 16);
        }
        const hex = (peek() ?? "") + (peek(1) ?? "");
        if (!/^[0-9A-Fa-f]{2}$/.test(hex)) throw fail("\\x without two hex digits", i);
        i += 2;
        return parseInt(hex, 16);
      }
      case "u": {
        const hex = cps.slice(i, i + 4).join("");
        if (!/^[0-9A-Fa-f]{4}$/.test(hex)) throw fail("\\u without four hex digits", i);
        i += 4;
        return parseInt(hex, 16);
      }
      default:
        if (/[A-Za-z0-9]/.test(c)) return undefined;
        return c.codePointAt(0)!;
    }
  };

  /** Both cases of a code point (itself when it has no other case). */
  const cases = (cp: number): number[] => {
    const ch = String.fromCodePoint(cp);
    const set = new Set([cp]);
    for (const v of [ch.toLowerCase(), ch.toUpperCase()]) if (Array.from(v).length === 1) set.add(v.codePointAt(0)!);
    return [...set];
  };

  const classChar = (cp: number): string => {
    const ch = String.fromCodePoint(cp);
    if ("\\]^-[".includes(ch)) return `\\${ch}`;
    if (cp < 0x20 || cp === 0x7f || (cp >= 0x80 && cp < 0xa0) || cp === 0x2028 || cp === 0x2029) return `\\u{${cp.toString(16)}}`;
    return ch;
  };

  /** Parses a class starting after "[" (i at its first character); returns JavaScript source. */
  const parseClass = (): string => {
    const start = i - 1;
    let negated = false;
    if (peek() === "^") {
      negated = true;
      i++;
    }
    const items: string[] = [];
    let first = true;
    /** Previous literal code point (for ranges), or undefined. */
    let prevLit: number | undefined;
    for (;;) {
      const c = peek();
      if (c === undefined) throw fail("an unclosed [", start);
      if (c === "]" && !first) {
        i++;
        break;
      }
      first = false;
      if (c === "[") throw fail("a nested class or POSIX bracket [", i);
      if (c === "&" && peek(1) === "&") throw fail("a class intersection &&", i);
      // a range lo-hi
      if (c === "-" && prevLit !== undefined && peek(1) !== undefined && peek(1) !== "]") {
        i++;
        let hi: number;
        const h = peek()!;
        i++;
        if (h === "\\") {
          const e = peek();
          if (e === undefined) throw fail("a trailing backslash", i);
          i++;
          const cp = escapeChar(e);
          if (cp === undefined) throw fail(`a range ending in \\${e}`, i);
          hi = cp;
        } else if (h === "[") {
          throw fail("a range ending in a class", i);
        } else {
          hi = h.codePointAt(0)!;
        }
        const lo = prevLit;
        if (hi < lo) throw fail("a reversed range", i);
        items.pop();
        items.push(`${classChar(lo)}-${classChar(hi)}`);
        if (ci) {
          // the other case of each ASCII letter run inside the range
          for (const [a, z, delta] of [[0x41, 0x5a, 0x20], [0x61, 0x7a, -0x20]] as const) {
            const l = Math.max(lo, a);
            const u = Math.min(hi, z);
            if (l <= u) items.push(`${classChar(l + delta)}-${classChar(u + delta)}`);
          }
          if (hi > 0x7f) throw fail("a non-ASCII range inside (?i)", i);
        }
        prevLit = undefined;
        continue;
      }
      i++;
      if (c === "\\") {
        const e = peek();
        if (e === undefined) throw fail("a trailing backslash", i);
        i++;
        const set = escapeSet(e, true);
        if (set !== undefined) {
          if (set.negated) throw fail(`\\${e} inside a class`, i);
          items.push(set.text);
          prevLit = undefined;
          continue;
        }
        const cp = escapeChar(e);
        if (cp === undefined) throw fail(`the escape \\${e}`, i);
        items.push((ci ? cases(cp) : [cp]).map(classChar).join(""));
        prevLit = cp;
        continue;
      }
      const cp = c.codePointAt(0)!;
      items.push((ci ? cases(cp) : [cp]).map(classChar).join(""));
      prevLit = cp;
    }
    return `[${negated ? "^" : ""}${items.join("")}]`;
  };

  /** Emits an atom (remembering where it starts, for a quantifier after it). */
  const atom = (text: string): void => {
    atomStart = out.length;
    out += text;
  };

  const literal = (cp: number): void => {
    const cs = ci ? cases(cp) : [cp];
    if (cs.length > 1) return atom(`[${cs.map(classChar).join("")}]`);
    const ch = String.fromCodePoint(cp);
    // outside a class only syntax characters take a backslash ("\\-" is an error in a u regex)
    atom(SYNTAX.has(ch) ? `\\${ch}` : "[-^".includes(ch) ? ch : classChar(cp));
  };

  /** Possessive/atomic: (?=(?<aN>X))\k<aN> for the output from `from`. */
  const makeAtomic = (from: number): void => {
    const name = `a${atomics++}`;
    out = `${out.slice(0, from)}(?=(?<${name}>${out.slice(from)}))\\k<${name}>`;
    atomStart = from;
  };

  while (i < cps.length) {
    const c = cps[i]!;
    i++;
    switch (c) {
      case "\\": {
        const e = peek();
        if (e === undefined) throw fail("a trailing backslash", i);
        i++;
        if (e === "A") atom("^");
        else if (e === "z") atom("$");
        else if (e === "Z") atom("(?=\\n?$)");
        else if (e === "b" || e === "B") {
          const at = `(?:(?<=[${WORD}])(?![${WORD}])|(?<![${WORD}])(?=[${WORD}]))`;
          atom(e === "b" ? at : `(?!${at})`);
        } else {
          const set = escapeSet(e, false);
          if (set !== undefined) {
            atom(set.text.startsWith("\\p{") && !set.text.includes("\\p{", 1) ? (set.negated ? set.text.replace("\\p{", "\\P{") : set.text) : `[${set.negated ? "^" : ""}${set.text}]`);
          } else {
            if (/[1-9]/.test(e)) throw fail(`the backreference \\${e}`, i - 2);
            const cp = escapeChar(e);
            if (cp === undefined) throw fail(`the escape \\${e}`, i - 2);
            literal(cp);
          }
        }
        break;
      }
      case "[":
        atom(parseClass());
        break;
      case "(": {
        const start = out.length;
        if (peek() === "?") {
          const rest = cps.slice(i + 1, i + 4).join("");
          if (rest.startsWith(":")) {
            i += 2;
            groups.push({ ciBefore: ci, closer: ")", outStart: start });
            out += "(?:";
          } else if (rest.startsWith("=") || rest.startsWith("!")) {
            i += 2;
            groups.push({ ciBefore: ci, closer: ")", outStart: start });
            out += `(?${rest[0]}`;
          } else if (rest.startsWith("<=") || rest.startsWith("<!")) {
            i += 3;
            groups.push({ ciBefore: ci, closer: ")", outStart: start });
            out += `(?${rest.slice(0, 2)}`;
          } else if (rest.startsWith(">")) {
            i += 2;
            const name = `a${atomics++}`;
            groups.push({ ciBefore: ci, closer: `))\\k<${name}>`, outStart: start });
            out += `(?=(?<${name}>`;
          } else if (/^<[A-Za-z_]/.test(rest)) {
            const end = cps.indexOf(">", i);
            if (end < 0) throw fail("an unclosed group name", i);
            const name = cps.slice(i + 2, end).join("");
            if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(name)) throw fail(`the group name ${JSON.stringify(name)}`, i);
            i = end + 1;
            groups.push({ ciBefore: ci, closer: ")", outStart: start });
            out += `(?<${name}>`;
          } else {
            // flags: (?i) (?-i) (?i:…) (?-i:…)
            const m = /^\?(-?)([a-zA-Z]+)([:)])/.exec(cps.slice(i, i + 12).join(""));
            if (m === null || m[2] !== "i") throw fail(`the group (${cps.slice(i, i + 4).join("")}`, i - 1);
            i += m[0].length;
            const on = m[1] !== "-";
            if (m[3] === ":") {
              groups.push({ ciBefore: ci, closer: ")", outStart: start });
              out += "(?:";
              ci = on;
            } else {
              ci = on; // to the end of the enclosing group
            }
          }
        } else {
          groups.push({ ciBefore: ci, closer: ")", outStart: start });
          out += "(";
        }
        atomStart = -1;
        break;
      }
      case ")": {
        const g = groups.pop();
        if (g === undefined) throw fail("an unmatched )", i - 1);
        out += g.closer;
        ci = g.ciBefore;
        atomStart = g.outStart;
        break;
      }
      case "|":
        out += "|";
        atomStart = -1;
        break;
      case "*":
      case "+":
      case "?":
      case "{": {
        let q: string = c;
        if (c === "{") {
          const end = cps.indexOf("}", i);
          const body = end < 0 ? "" : cps.slice(i, end).join("");
          const m = /^(\d*)(,?)(\d*)$/.exec(body);
          if (end < 0 || m === null || (m[1] === "" && m[3] === "") || (m[1] === "" && m[2] === "")) {
            literal(0x7b); // a literal "{"
            break;
          }
          i = end + 1;
          q = `{${m[1] === "" ? "0" : m[1]}${m[2]}${m[3]}}`;
        }
        if (atomStart < 0) throw fail(`the quantifier ${q} with nothing to repeat`, i - 1);
        const from = atomStart;
        out += q;
        if (peek() === "?") {
          i++;
          out += "?";
        } else if (peek() === "+") {
          if (c === "{") {
            // Ruby syntax: X{n,m}+ repeats X{n,m}
            out = `${out.slice(0, from)}(?:${out.slice(from)})`;
            atomStart = from;
            break;
          }
          i++;
          makeAtomic(from);
          break;
        }
        atomStart = from;
        break;
      }
      case ".":
        atom("[^\\n]");
        break;
      case "^":
        atom("(?<![^\\n])");
        break;
      case "$":
        atom("(?![^\\n])");
        break;
      default:
        literal(c.codePointAt(0)!);
    }
  }
  if (groups.length > 0) throw fail("an unclosed (", pattern.length);
  return out;
}

/** The Oniguruma pattern as a global Unicode JavaScript RegExp (see the top of this file). */
export function onigToJs(pattern: string, where: string): RegExp {
  const src = onigToJsSource(pattern, where);
  try {
    return new RegExp(src, "gu");
  } catch (e) {
    throw new SelfreportError(`${where}: the regex ${JSON.stringify(pattern)} (as JavaScript ${JSON.stringify(src)}) does not compile: ${(e as Error).message}`);
  }
}
