/**
 * Corpus text → token ids. Documents are joined into one stream with GPT-2's <|endoftext|>
 * between them (as GPT-2 was trained), which is what language-model pre-training samples from.
 */
import type { Tokenizer } from "../model/tokenizer.ts";

export interface TextDocument {
  id: string;
  text: string;
}

/** One Int32Array: doc₀ tokens, eos, doc₁ tokens, eos, … */
export function tokenizeDocuments(tok: Tokenizer, docs: readonly TextDocument[]): Int32Array {
  const parts: number[][] = [];
  let total = 0;
  for (const d of docs) {
    const ids = tok.encode(d.text);
    parts.push(ids);
    total += ids.length + 1;
  }
  const out = new Int32Array(total);
  let o = 0;
  for (const ids of parts) {
    out.set(ids, o);
    o += ids.length;
    out[o++] = tok.eosId;
  }
  return out;
}
