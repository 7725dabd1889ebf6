/**
 * The dense-matmul backends (src/tensor/backend/) against the float64 triple-loop reference,
 * on awkward shapes, every transpose combination, padded leading dimensions, offset views,
 * alpha/beta variants (beta = 0 over NaN), and the strided-batched form; plus the argument
 * errors and the SELFREPORT_BACKEND selection.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { availableBackends, chooseBackend } from "../../src/tensor/backend/index.ts";
import { jsBackend, sgemmReference } from "../../src/tensor/backend/js.ts";
import { findRepoRoot, loadNativeBackend, QUIET_BLAS_HELPERS } from "../../src/tensor/backend/native.ts";
import { runNativeChild } from "../helpers/native-child.ts";
import { mulberry32, randn } from "../helpers/rng.ts";

const backends = availableBackends();
const U32 = 2 ** -24; // float32 unit roundoff

/** One operand stored [rows, cols] with row stride ld, as a view starting `offset` elements into a larger buffer. */
interface Stored {
  view: Float32Array;
  ld: number;
}

/** A random matrix stored [rows, cols] with row stride cols + pad, at an offset into its buffer; padding holds junk. */
function storedMatrix(rng: () => number, rows: number, cols: number, pad: number, offset: number): Stored {
  const ld = Math.max(1, cols + pad);
  const span = rows === 0 || cols === 0 ? 0 : (rows - 1) * ld + cols;
  const buf = new Float32Array(offset + span + pad);
  for (let i = 0; i < buf.length; i++) buf[i] = 1000 + i; // junk that must never be read into the result
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) buf[offset + r * ld + c] = randn(rng);
  return { view: buf.subarray(offset), ld };
}

/** op(X) stored shape for an operand: rows × cols of what is in memory. */
function storedShape(trans: boolean, opRows: number, opCols: number): [number, number] {
  return trans ? [opCols, opRows] : [opRows, opCols];
}

/**
 * Asserts every C element within atol + rtol·|ref| + u·√K·S, where S is the sum of absolute
 * terms |alpha|·Σ|a||b| + |beta·c| (the natural scale of float32 summation error); prints the worst.
 */
function assertGemmClose(
  what: string, got: Float32Array, ref: Float32Array, scale: Float32Array,
  M: number, N: number, K: number, ldc: number,
): void {
  const atol = 1e-5, rtol = 1e-5;
  let worst = -1, worstRatio = 0;
  for (let i = 0; i < M; i++) {
    for (let j = 0; j < N; j++) {
      const k = i * ldc + j;
      const tol = atol + rtol * Math.abs(ref[k]) + U32 * Math.sqrt(Math.max(1, K)) * scale[k];
      const ratio = Math.abs(got[k] - ref[k]) / tol;
      if (!(ratio <= worstRatio)) { // NaN-safe: a NaN ratio always becomes the worst
        worstRatio = Number.isNaN(ratio) ? Infinity : ratio;
        worst = k;
      }
    }
  }
  if (worstRatio > 1) {
    const i = Math.floor(worst / ldc), j = worst % ldc;
    assert.fail(`${what}: worst difference at C[${i}, ${j}]: got ${got[worst]}, reference ${ref[worst]}, ` +
      `|diff| = ${Math.abs(got[worst] - ref[worst])} is ${worstRatio.toFixed(2)}× the tolerance`);
  }
}

interface Case {
  M: number; N: number; K: number;
  transA: boolean; transB: boolean;
  pad: number; offset: number;
  alpha: number; beta: number;
}

/** Sets up one sgemm case: operands, C (NaN-filled when beta = 0), its reference and error scale. */
function makeCase(c: Case, seed: number) {
  const rng = mulberry32(seed);
  const [ar, ac] = storedShape(c.transA, c.M, c.K);
  const [br, bc] = storedShape(c.transB, c.K, c.N);
  const A = storedMatrix(rng, ar, ac, c.pad, c.offset);
  const B = storedMatrix(rng, br, bc, c.pad, c.offset);
  const C0 = storedMatrix(rng, c.M, c.N, c.pad, c.offset);
  if (c.beta === 0) for (let i = 0; i < c.M; i++) C0.view.fill(NaN, i * C0.ld, i * C0.ld + c.N);
  const ref = C0.view.slice();
  sgemmReference(c.transA, c.transB, c.M, c.N, c.K, c.alpha, A.view, A.ld, B.view, B.ld, c.beta, ref, C0.ld);
  // scale = |alpha|·|A|·|B| + |beta|·|C|
  const absA = A.view.map(Math.abs), absB = B.view.map(Math.abs), scale = C0.view.map(Math.abs);
  sgemmReference(c.transA, c.transB, c.M, c.N, c.K, Math.abs(c.alpha), absA, A.ld, absB, B.ld, Math.abs(c.beta), scale, C0.ld);
  return { A, B, C0, ref, scale };
}

const SHAPES: [number, number, number][] = [
  [1, 1, 1], [7, 13, 5], [65, 33, 129], [4, 4, 4], [5, 1, 9], [1, 6, 3],
  [0, 5, 3], [4, 0, 3], [3, 4, 0],         // empty products: C = beta·C (or nothing)
  [2, 3, 300], [131, 6, 2], [3, 2053, 2],  // cross the js kernel's KC, MC and NC block edges
];
const SCALARS: [number, number][] = [[1, 0], [1, 1], [1, 0.3], [0.5, 0], [0.5, 1], [0.5, 0.3]];
const TRANS: [boolean, boolean][] = [[false, false], [false, true], [true, false], [true, true]];

function describe(c: Case): string {
  return `${c.M}×${c.N}×${c.K} transA=${c.transA} transB=${c.transB} pad=${c.pad} alpha=${c.alpha} beta=${c.beta}`;
}

test("the native backend loads whenever the addon was built", () => {
  const root = findRepoRoot();
  assert.ok(root !== null, "findRepoRoot() found no package.json named selfreport above the test");
  const built = existsSync(join(root, "native", "build", "Release", "selfreport_blas.node"));
  const loaded = loadNativeBackend();
  if (built) assert.ok(loaded.ok, `addon is built but does not load: ${loaded.ok ? "" : loaded.reason}`);
  assert.deepEqual(backends.map((b) => b.name), loaded.ok ? ["native", "js"] : ["js"]);
});

for (const backend of backends) {
  test(`${backend.name}: sgemm matches the float64 reference (shapes × transposes × ld × alpha/beta)`, () => {
    let seed = 1;
    for (const [M, N, K] of SHAPES) {
      for (const [transA, transB] of TRANS) {
        for (const [pad, offset] of [[0, 0], [3, 5]]) {
          for (const [alpha, beta] of SCALARS) {
            const c: Case = { M, N, K, transA, transB, pad, offset, alpha, beta };
            const { A, B, C0, ref, scale } = makeCase(c, seed++);
            const C = C0.view.slice();
            backend.sgemm(transA, transB, M, N, K, alpha, A.view, A.ld, B.view, B.ld, beta, C, C0.ld);
            assertGemmClose(`${backend.name} sgemm ${describe(c)}`, C, ref, scale, M, N, K, C0.ld);
            // Padding of C (between rows and after the last) is untouched.
            for (let k = 0; k < C.length; k++) {
              const inside = Math.floor(k / C0.ld) < M && k % C0.ld < N;
              if (!inside) assert.ok(Object.is(C[k], C0.view[k]), `${backend.name} sgemm ${describe(c)}: wrote C padding at ${k}`);
            }
          }
        }
      }
    }
  });

  test(`${backend.name}: alpha = 0 scales C by beta and does not read A or B`, () => {
    const A = new Float32Array(6).fill(NaN), B = new Float32Array(6).fill(NaN);
    const C = new Float32Array([1, 2, 3, 4]);
    backend.sgemm(false, false, 2, 2, 3, 0, A, 3, B, 2, 0.5, C, 2);
    assert.deepEqual([...C], [0.5, 1, 1.5, 2]);
  });

  test(`${backend.name}: sgemmStridedBatched matches per-matrix reference (gaps, broadcast stride 0)`, () => {
    let seed = 1000;
    for (const [M, N, K] of [[1, 1, 1], [7, 13, 5], [33, 17, 65]] as [number, number, number][]) {
      for (const [transA, transB] of TRANS) {
        for (const [alpha, beta] of [[1, 0], [0.5, 0.3], [1, 1]] as [number, number][]) {
          for (const broadcastB of [false, true]) {
            const rng = mulberry32(seed++);
            const batch = 3, pad = 2;
            const [ar, ac] = storedShape(transA, M, K);
            const [br, bc] = storedShape(transB, K, N);
            const lda = ac + pad, ldb = bc + pad, ldc = N + pad;
            const strideA = ar * lda + 7, strideB = broadcastB ? 0 : br * ldb + 4, strideC = M * ldc + 5;
            const A = Float32Array.from({ length: (batch - 1) * strideA + ar * lda }, () => randn(rng));
            const B = Float32Array.from({ length: (broadcastB ? 0 : (batch - 1) * strideB) + br * ldb }, () => randn(rng));
            const C0 = Float32Array.from({ length: (batch - 1) * strideC + M * ldc }, () => (beta === 0 ? NaN : randn(rng)));
            const ref = C0.slice(), scale = C0.map(Math.abs);
            const absA = A.map(Math.abs), absB = B.map(Math.abs);
            for (let i = 0; i < batch; i++) {
              sgemmReference(transA, transB, M, N, K, alpha, A.subarray(i * strideA), lda, B.subarray(i * strideB), ldb,
                beta, ref.subarray(i * strideC), ldc);
              sgemmReference(transA, transB, M, N, K, alpha, absA.subarray(i * strideA), lda, absB.subarray(i * strideB), ldb,
                beta, scale.subarray(i * strideC), ldc);
            }
            const C = C0.slice();
            backend.sgemmStridedBatched(transA, transB, M, N, K, alpha, A, lda, strideA, B, ldb, strideB, beta, C, ldc, strideC, batch);
            for (let i = 0; i < batch; i++) {
              assertGemmClose(
                `${backend.name} sgemmStridedBatched ${M}×${N}×${K} transA=${transA} transB=${transB} alpha=${alpha} beta=${beta} strideB=${strideB} matrix ${i}`,
                C.subarray(i * strideC), ref.subarray(i * strideC), scale.subarray(i * strideC), M, N, K, ldc);
            }
          }
        }
      }
    }
  });

  test(`${backend.name}: too-short arrays and bad arguments throw clear errors`, () => {
    const A = new Float32Array(6), B = new Float32Array(12), C = new Float32Array(8);
    // A [M=2, K=3] with lda 3 needs 6 elements; give it 5.
    assert.throws(() => backend.sgemm(false, false, 2, 4, 3, 1, A.subarray(1), 3, B, 4, 0, C, 4),
      { name: "RangeError", message: /sgemm: A is too short: stored \[M, K\] = \[2, 3\] with lda = 3 needs 6 elements, the Float32Array has 5/ });
    assert.throws(() => backend.sgemm(false, true, 2, 4, 3, 1, A, 3, B.subarray(1), 3, 0, C, 4),
      { name: "RangeError", message: /B is too short: stored \[N, K\] \(transB\) = \[4, 3\]/ });
    assert.throws(() => backend.sgemm(false, false, 2, 4, 3, 1, A, 3, B, 4, 0, C, 5),
      { name: "RangeError", message: /C is too short: .*ldc = 5 needs 9 elements, the Float32Array has 8/ });
    assert.throws(() => backend.sgemm(false, false, 2, 4, 3, 1, A, 2, B, 4, 0, C, 4),
      { name: "RangeError", message: /lda = 2 must be >= max\(1, 3\)/ });
    // Reflect.apply: a call the types would reject, as plain JavaScript callers can make it.
    assert.throws(() => Reflect.apply(backend.sgemm, backend, [false, false, 2, 4, 3, 1, new Float64Array(6), 3, B, 4, 0, C, 4]),
      { name: "TypeError", message: /A must be a Float32Array/ });
    assert.throws(() => backend.sgemm(false, false, 2.5, 4, 3, 1, A, 3, B, 4, 0, C, 4),
      { name: "RangeError", message: /M must be an integer/ });
    assert.throws(() => backend.sgemm(false, false, -1, 4, 3, 1, A, 3, B, 4, 0, C, 4),
      { name: "RangeError", message: /M must be an integer/ });
    // Batched: 2 C matrices [2, 4] with stride 8 need 16 elements.
    assert.throws(
      () => backend.sgemmStridedBatched(false, false, 2, 4, 3, 1, A, 3, 0, B, 4, 0, 0, C, 4, 8, 2),
      { name: "RangeError", message: /sgemmStridedBatched: C is too short: 2 matrices .* strideC = 8 need 16 elements, the Float32Array has 8/ });
  });
}

test("native and js agree on a 128×256×64 product (1e-5 relative)", (t) => {
  const native = backends.find((b) => b.name === "native");
  if (native === undefined) { t.skip("native backend unavailable"); return; }
  const rng = mulberry32(7);
  const M = 128, N = 256, K = 64;
  const A = Float32Array.from({ length: M * K }, () => randn(rng)); // [M, K]
  const B = Float32Array.from({ length: K * N }, () => randn(rng)); // [K, N]
  const Cn = new Float32Array(M * N), Cj = new Float32Array(M * N); // [M, N]
  native.sgemm(false, false, M, N, K, 1, A, K, B, N, 0, Cn, N);
  jsBackend.sgemm(false, false, M, N, K, 1, A, K, B, N, 0, Cj, N);
  let rms = 0;
  for (const v of Cj) rms += v * v;
  rms = Math.sqrt(rms / Cj.length);
  let worst = 0, at = 0;
  for (let k = 0; k < Cj.length; k++) {
    const rel = Math.abs(Cn[k] - Cj[k]) / (Math.abs(Cj[k]) + rms);
    if (!(rel <= worst)) { worst = Number.isNaN(rel) ? Infinity : rel; at = k; }
  }
  assert.ok(worst <= 1e-5, `worst relative difference ${worst} at C[${Math.floor(at / N)}, ${at % N}]: native ${Cn[at]}, js ${Cj[at]} (rms ${rms})`);
});

test("SELFREPORT_BACKEND: js and native are honoured; any other value is an error naming it", () => {
  assert.equal(chooseBackend("js", () => assert.fail("js must not warn")).name, "js");
  assert.throws(() => chooseBackend("cuda", () => {}),
    { name: "SelfreportError", message: /SELFREPORT_BACKEND="cuda" is not a backend; allowed values: "native", "js"/ });
  const native = loadNativeBackend();
  if (native.ok) assert.equal(chooseBackend("native", () => {}).name, "native");
  else assert.throws(() => chooseBackend("native", () => {}), { message: /SELFREPORT_BACKEND=native, but the native OpenBLAS backend cannot load/ });
});

test("getBackend() reads SELFREPORT_BACKEND in a fresh process (js is silent, a bad value throws)", () => {
  const ext = import.meta.url.endsWith(".ts") ? ".ts" : ".js";
  const indexPath = fileURLToPath(new URL(`../../src/tensor/backend/index${ext}`, import.meta.url));
  const script = `import(${JSON.stringify(indexPath)}).then((m) => { m.getBackend(); console.log(m.getBackend().name); })`;
  const run = (value: string) => spawnSync(process.execPath, ["--input-type=module", "-e", script], {
    encoding: "utf8", env: { ...process.env, SELFREPORT_BACKEND: value },
  });
  const js = run("js");
  assert.equal(js.status, 0, js.stderr);
  assert.equal(js.stdout.trim(), "js");
  assert.equal(js.stderr, "", "SELFREPORT_BACKEND=js must print nothing on stderr");
  const bad = run("gpu");
  assert.notEqual(bad.status, 0);
  assert.match(bad.stderr, /SELFREPORT_BACKEND="gpu" is not a backend; allowed values: "native", "js"/);
  const dflt = run("");
  assert.equal(dflt.status, 0, dflt.stderr);
  const native = loadNativeBackend();
  if (native.ok) assert.equal(dflt.stderr, "", "the default must be silent when native loads");
  else {
    // Exactly one fallback line, even though getBackend() was called twice.
    assert.equal(dflt.stderr.trim().split("\n").length, 1, dflt.stderr);
    assert.match(dflt.stderr, /^selfreport: native OpenBLAS backend unavailable \(.*\); using the pure TypeScript backend \(slower\)\.$/m);
  }
});

test("with the native addon loaded, fresh op outputs reuse freed heap memory instead of page-faulting (SELFREPORT_KEEP_MEMORY=0 restores glibc's defaults)", (t) => {
  const native = loadNativeBackend();
  if (!native.ok || native.info.keepMemory !== "on") { t.skip("needs the native addon on glibc"); return; }
  const ext = import.meta.url.endsWith(".ts") ? ".ts" : ".js";
  const indexPath = fileURLToPath(new URL(`../../src/tensor/index${ext}`, import.meta.url));
  // 60 GELUs of 8 MB (2048 pages) each, a full GC after each so the output is freed before the next.
  const script = `import(${JSON.stringify(indexPath)}).then((T) => {
    const n = 2 * 1024 * 1024;
    const x = new T.Tensor(new Float32Array(n).fill(0.5), [n]);
    const once = () => { T.noGrad(() => T.geluNew(x)); gc(); };
    once(); once();
    const f0 = process.resourceUsage().minorPageFault;
    for (let i = 0; i < 60; i++) once();
    console.log((process.resourceUsage().minorPageFault - f0) / 60);
  })`;
  const faultsPerOp = (keep: string): number => {
    const r = spawnSync(process.execPath, ["--expose-gc", "--input-type=module", "-e", script], {
      encoding: "utf8", env: { ...process.env, SELFREPORT_BACKEND: "native", SELFREPORT_KEEP_MEMORY: keep },
    });
    assert.equal(r.status, 0, r.stderr);
    return Number(r.stdout.trim());
  };
  const kept = faultsPerOp("1");
  const fresh = faultsPerOp("0");
  assert.ok(kept < 2048 / 8, `kept memory: ${kept} page faults per 8 MB output, expected under 256`);
  assert.ok(fresh > 2 * kept, `glibc defaults: ${fresh} page faults per output, expected well above the kept ${kept}`);
});

test("OpenBLAS's helper threads sleep right after a product (OPENBLAS_THREAD_TIMEOUT=4 while the library loads, then removed); a value the user set is kept", (t) => {
  const native = loadNativeBackend();
  if (!native.ok || native.info.numThreads < 2) { t.skip("needs the native addon with 2 or more BLAS threads"); return; }
  // Three 512³ products on all BLAS threads, then the main thread blocks for 300 ms: the process's CPU
  // time in that wait is what the helper threads spend spinning (OpenBLAS's default: 2^28 cycles).
  const body = `
    const n = 512, A = new Float32Array(n * n).fill(0.5), C = new Float32Array(n * n);
    for (let i = 0; i < 3; i++) be.sgemm(false, false, n, n, n, 1, A, n, A, n, 0, C, n);
    const c0 = process.cpuUsage();
    Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 300);
    const c = process.cpuUsage(c0);
    console.log(JSON.stringify({ idleMs: (c.user + c.system) / 1000, read: m.loadNativeBackend().info.threadTimeout, env: process.env.OPENBLAS_THREAD_TIMEOUT ?? null }));`;
  const run = (value: string | undefined): { idleMs: number; read: string; env: string | null } =>
    JSON.parse(runNativeChild(body, { OPENBLAS_THREAD_TIMEOUT: value })) as { idleMs: number; read: string; env: string | null };
  const ours = run(undefined);
  assert.equal(ours.read, QUIET_BLAS_HELPERS);
  assert.equal(ours.env, null, "our setting must not reach child processes");
  assert.ok(ours.idleMs < 30, `helpers spun ${ours.idleMs} ms of CPU in a 300 ms wait, expected asleep (< 30 ms)`);
  const users = run("28");
  assert.deepEqual([users.read, users.env], ["28", "28"]);
  assert.ok(users.idleMs > 50, `with OpenBLAS's default timeout the helpers spun only ${users.idleMs} ms; the check above would prove nothing`);
});
