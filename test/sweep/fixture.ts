/**
 * A tiny model that goes with GPT-2's tokenizer (d_model 16, 2 layers, 64 MLP neurons, vocabulary
 * 50257) and a small synthetic .jsonl corpus, for sweep tests through the real dataset builder.
 */
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { makeTinyHfModel } from "../helpers/tiny-model.ts";
import { mulberry32 } from "../helpers/rng.ts";

const WORDS = [
  "the", "cat", "sat", "on", "a", "mat", "and", "dog", "ran", "to", "house", "of", "river", "in", "green", "old", "man", "said", "that",
  "it", "was", "cold", "night", "when", "she", "came", "home", "with", "bread", "7", "12", "years", "ago", "we", "saw", "three", "birds",
];

export interface SweepFixture {
  modelDir: string;
  corpus: string;
}

export function makeSweepFixture(dir: string, o: { docs?: number; seed?: number } = {}): SweepFixture {
  const modelDir = join(dir, "model");
  makeTinyHfModel(modelDir, { nLayers: 2, dModel: 16, nHeads: 2, nCtx: 32, dVocab: 50257, seed: o.seed ?? 1 });
  const rng = mulberry32(o.seed ?? 1);
  const lines: string[] = [];
  for (let d = 0; d < (o.docs ?? 80); d++) {
    const words: string[] = [];
    const len = 30 + Math.floor(rng() * 40);
    for (let w = 0; w < len; w++) words.push(WORDS[Math.floor(rng() * WORDS.length)]!);
    lines.push(JSON.stringify({ id: `doc${d}`, text: words.join(" ") + "." }));
  }
  mkdirSync(dir, { recursive: true });
  const corpus = join(dir, "corpus.jsonl");
  writeFileSync(corpus, lines.join("\n") + "\n");
  return { modelDir, corpus };
}
