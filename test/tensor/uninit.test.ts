/**
 * Ops allocate their big outputs with emptyF32 (reused heap memory, not zeroed), so each such op must
 * write every entry. This test fills freed heap memory with NaN first (in a child process, where it
 * can force garbage collections), then checks that every op's output and gradients are finite and
 * the same bits as on fresh memory, on every backend.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { fileURLToPath } from "node:url";
import { availableBackends } from "../../src/tensor/backend/index.ts";
import { emptyF32 } from "../../src/tensor/tensor.ts";

test("emptyF32 gives n elements; small sizes are zeroed", () => {
  assert.equal(emptyF32(100_000).length, 100_000);
  assert.deepEqual(emptyF32(10), new Float32Array(10));
});

for (const backend of availableBackends()) {
  test(`${backend.name}: every op using emptyF32 writes its whole output, also over NaN-filled reused memory`, () => {
    const ext = import.meta.url.endsWith(".ts") ? ".ts" : ".js";
    const indexPath = fileURLToPath(new URL(`../../src/tensor/index${ext}`, import.meta.url));
    const script = `import(${JSON.stringify(indexPath)}).then((T) => {
      let s = 1;
      const rnd = (n, scale = 1) => Float32Array.from({ length: n }, () => { s = (Math.imul(s, 1664525) + 1013904223) >>> 0; return (s / 2 ** 32 - 0.5) * scale; });
      const t = (shape, grad = true) => new T.Tensor(rnd(shape.reduce((a, b) => a * b, 1)), shape, grad);
      const [B, L, H, Dh] = [2, 37, 3, 24];
      const C = H * Dh;
      const x = t([B, L, C]), w = t([C]), b = t([C]), W = t([C, 2 * C]), bias = t([2 * C]), q = t([B, L, H, Dh]), k = t([B, L, H, Dh]), v = t([B, L, H, Dh]);
      const ids = Int32Array.from({ length: B * L }, (_, i) => (i * 7) % 50);
      const E = t([50, C]), row = t([C]), col = t([B, L, 1]);
      const cases = {
        linear: () => T.linear(x, W, bias), linearNoBias: () => T.linear(x, W, null),
        matmul: () => T.matmul(x, W), matmulT: () => T.matmul(x, E, { transB: true }), matmulBatched: () => T.matmul(x, x, { transB: true }),
        gelu: () => T.geluNew(x), softmax: () => T.softmax(x), layerNorm: () => T.layerNorm(x, w, b, 1e-5),
        add: () => T.add(x, x), addRow: () => T.add(x, row), mulCol: () => T.mul(x, col), div: () => T.div(x, T.addScalar(T.square(x), 1)),
        affineScalar: () => T.affineScalar(x, 2, 1), exp: () => T.exp(x), permute: () => T.permute(x, [2, 0, 1]),
        embedding: () => T.embedding(E, ids, [B, L]), attention: () => T.causalAttention(q, k, v),
        scoresApply: () => T.attnApply(T.softmax(T.attnScores(q, k)), v),
      };
      const leaves = [x, w, b, W, bias, q, k, v, E, row, col];
      const run = (f) => {
        for (const l of leaves) l.grad = null;
        const out = f();
        T.backward(out, Float32Array.from({ length: out.size }, (_, i) => Math.sin(i)));
        return [out.data.slice(), ...leaves.map((l) => (l.grad ? l.grad.slice() : null))];
      };
      const poison = () => { // big NaN-filled buffers, freed: their memory is what the next allocations reuse
        for (let i = 0; i < 8; i++) Buffer.allocUnsafeSlow(64 * 1024 * (1 << (i % 4))).fill(0xff);
        gc();
      };
      const bad = [];
      for (const [name, f] of Object.entries(cases)) {
        const fresh = run(f);
        for (let r = 0; r < 3; r++) {
          poison();
          const again = run(f);
          again.forEach((a, i) => {
            if (a === null) return;
            if (a.some((v) => !Number.isFinite(v))) bad.push(name + " output " + i + " has a non-finite entry");
            else if (Buffer.compare(Buffer.from(a.buffer), Buffer.from(fresh[i].buffer)) !== 0) bad.push(name + " output " + i + " differs from fresh memory");
          });
        }
      }
      console.log(JSON.stringify(bad));
    })`;
    const r = spawnSync(process.execPath, ["--expose-gc", "--input-type=module", "-e", script], {
      encoding: "utf8", env: { ...process.env, SELFREPORT_BACKEND: backend.name },
    });
    assert.equal(r.status, 0, r.stderr);
    assert.deepEqual(JSON.parse(r.stdout.trim()), []);
  });
}
