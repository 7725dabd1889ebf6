/**
 * Every repository file that an error hint, the README or the docs name exists: a hint that sends
 * the user to a missing file is worse than none.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { existsSync, readdirSync, readFileSync, statSync } from "node:fs";
import { join, relative } from "node:path";
import { repoRoot } from "../src/model/resolve.ts";

const root = repoRoot();

function filesUnder(dir: string, ext: RegExp): string[] {
  const out: string[] = [];
  for (const name of readdirSync(dir)) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) out.push(...filesUnder(p, ext));
    else if (ext.test(name)) out.push(p);
  }
  return out;
}

/** Paths like docs/x.md, scripts/setup.sh, notebooks/y.ipynb named in a text (not dist/… build outputs). */
export function namedRepoPaths(text: string): string[] {
  const found = new Set<string>();
  for (const m of text.matchAll(/(?<![\w./-])((?:docs|scripts|notebooks|models|test|bench|src)\/[\w./-]*\.(?:md|sh|ts|mjs|ipynb|py|json))/g)) found.add(m[1]!);
  return [...found];
}

test("the path pattern finds what a hint names, and not build outputs", () => {
  assert.deepEqual(namedRepoPaths("see docs/real-gpt2.md, run `node dist/bench/run.js`, scripts/setup.sh."), ["docs/real-gpt2.md", "scripts/setup.sh"]);
});

test("every repository file named in src/, bin/, scripts/, README.md and docs/ exists", () => {
  const sources = [
    ...filesUnder(join(root, "src"), /\.ts$/), ...filesUnder(join(root, "bin"), /\.js$/), ...filesUnder(join(root, "scripts"), /\.(sh|mjs)$/),
    join(root, "README.md"), ...filesUnder(join(root, "docs"), /\.md$/),
  ];
  const missing: string[] = [];
  for (const file of sources) {
    for (const p of namedRepoPaths(readFileSync(file, "utf8"))) if (!existsSync(join(root, p))) missing.push(`${relative(root, file)} names ${p}`);
  }
  assert.deepEqual(missing, []);
});
