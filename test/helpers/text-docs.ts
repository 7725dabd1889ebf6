/**
 * Small seeded English-like documents for the self-report tests (no corpus download, no Brown):
 *   makeDocs(count, words, seed) → [{ id: "doc-0", text }, …]
 * Words are drawn from a fixed list, so GPT-2's tokenizer gives about one token per word and two
 * documents practically never share an 8-token window.
 */
import { mulberry32 } from "./rng.ts";

const WORDS = (
  "the cat sat on a mat while dog ran across field farmer watched from porch river was cold but they swam " +
  "it anyway then went home she said that morning light fell through window kitchen table bread butter " +
  "old man walked slowly down street toward market where fish fruit were sold children played near fountain " +
  "bright red ball rolled under bench bird sang tree wind moved leaves quietly city woke up people hurried " +
  "train station clock struck nine teacher opened book class listened story about king queen castle hill"
).split(" ");

export interface TextDoc {
  id: string;
  text: string;
}

export function makeDocs(count: number, words: number, seed: number): TextDoc[] {
  const rng = mulberry32(seed);
  return Array.from({ length: count }, (_, d) => {
    const w: string[] = [];
    for (let i = 0; i < words; i++) w.push(WORDS[Math.floor(rng() * WORDS.length)]!);
    return { id: `doc-${d}`, text: w.join(" ") + "." };
  });
}
