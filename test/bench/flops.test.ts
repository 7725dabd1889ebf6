// The bench's matmul FLOP counts (bench/flops.ts) and roofline cell, against numbers worked out by hand.
import { test } from "node:test";
import assert from "node:assert/strict";
import { blockFlopsPerToken, forwardFlops, trainStepFlops, attentionFlopsPerSequence } from "../../bench/flops.ts";
import { rooflineCell } from "../../bench/util.ts";

const GPT2_SMALL = { nLayers: 12, dModel: 768, dMlp: 3072, dVocab: 50257 };

test("one block's products per token: W_QKV 3C², W_O C², W_in and W_out C·d_mlp each, 2 FLOPs per multiply-add", () => {
  assert.equal(blockFlopsPerToken(GPT2_SMALL), 2 * (3 * 768 * 768 + 768 * 768 + 768 * 3072 + 3072 * 768)); // 14 155 776
  assert.equal(blockFlopsPerToken(GPT2_SMALL), 14_155_776);
  assert.equal(attentionFlopsPerSequence(128, 768), 2 * 2 * 128 * 128 * 768);
});

test("GPT-2-small forward at 8 × 128 with the unembedding is 257.8 GFLOP; the unfrozen step at 16 × 64 is 3 × its forward", () => {
  assert.equal(forwardFlops(GPT2_SMALL, 8, 128, { unembed: true }), 257_825_439_744);
  const fwd = forwardFlops(GPT2_SMALL, 16, 64, { unembed: false });
  assert.equal(trainStepFlops(fwd), 529_086_283_776);
  assert.equal(forwardFlops(GPT2_SMALL, 16, 64, { unembed: false, layers: 3 }), fwd / 4);
});

test("rooflineCell: achieved rate over the reference, with the target beside; n/a without a time", () => {
  assert.equal(rooflineCell(85e9, 1, 100, 85), "85 % (target ≥ 85 %)");
  assert.equal(rooflineCell(50e9, 2, 100, null), "25 %");
  assert.equal(rooflineCell(1e9, null, 100, 85), "n/a");
});

test("Qwen2-0.5B shapes: GQA's K/V are [896, 128] and the gated MLP has three [896, 4864] products", () => {
  const qwen = { nLayers: 24, dModel: 896, dMlp: 4864, dVocab: 151936, dKv: 2 * 64, gatedMlp: true };
  assert.equal(blockFlopsPerToken(qwen), 2 * (896 * 896 + 2 * 896 * 128 + 896 * 896 + 3 * 896 * 4864)); // 29 818 880
  assert.equal(blockFlopsPerToken(qwen), 29_818_880);
  // 4 × 128 tokens: 24 blocks, scores over 896 query-head dims, the 151936-row unembedding
  assert.equal(forwardFlops(qwen, 4, 128, { unembed: true }), 24 * (512 * 29_818_880 + 4 * 4 * 128 * 128 * 896) + 2 * 512 * 896 * 151936);
});
