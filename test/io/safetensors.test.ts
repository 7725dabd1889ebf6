import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import fc from "fast-check";
import {
  bfloat16ToFloat32,
  float16ToFloat32,
  float32ToFloat16,
  readSafetensors,
  readSafetensorsHeader,
  writeSafetensors,
} from "../../src/io/safetensors.ts";
import { SelfreportError } from "../../src/errors.ts";

const dir = mkdtempSync(join(tmpdir(), "selfreport-st-"));
let fileNo = 0;
const fresh = (name = "t"): string => join(dir, `${name}-${fileNo++}.safetensors`);

/** A safetensors file from a header (object or raw text) and data bytes; `len` overrides the length field. */
function makeFile(header: unknown, data: number[] = [], len?: bigint): string {
  const text = typeof header === "string" ? header : JSON.stringify(header);
  const h = Buffer.from(text, "utf8");
  const buf = Buffer.alloc(8 + h.length + data.length);
  buf.writeBigUInt64LE(len ?? BigInt(h.length), 0);
  h.copy(buf, 8);
  Buffer.from(data).copy(buf, 8 + h.length);
  const p = fresh("hand");
  writeFileSync(p, buf);
  return p;
}

function le32(values: number[], kind: "f" | "i"): number[] {
  const b = Buffer.alloc(values.length * 4);
  values.forEach((v, i) => (kind === "f" ? b.writeFloatLE(v, i * 4) : b.writeInt32LE(v, i * 4)));
  return [...b];
}

// ───────────────────────── round trips ─────────────────────────

test("F32, F16, I32 round-trip with metadata; keys sorted, header padded to 8 with spaces, data aligned", () => {
  const p = fresh();
  const f32 = Float32Array.from([1.5, -2.25, 3.4028234663852886e38, 1e-45, -0, Infinity]);
  const f16src = Float32Array.from([1, -2, 0.1, 65504, 1e-7, 70000]);
  const i32 = Int32Array.from([0, -1, 2147483647, -2147483648, 50256]);
  writeSafetensors(
    p,
    {
      zeta: { dtype: "F32", shape: [2, 3], data: f32 },
      alpha: { dtype: "F16", shape: [6], data: f16src },
      mid: { dtype: "I32", shape: [5], data: i32 },
      scalar: { dtype: "F32", shape: [], data: Float32Array.of(7) },
      empty: { dtype: "F16", shape: [0, 4], data: new Float32Array(0) },
    },
    { b: "2", a: "1" },
  );
  const bytes = readFileSync(p);
  const n = Number(bytes.readBigUInt64LE(0));
  assert.equal(n % 8, 0);
  const headerText = bytes.subarray(8, 8 + n).toString("utf8");
  assert.match(headerText, /^\{"__metadata__":\{"b":"2","a":"1"\},"alpha":.*"empty":.*"mid":.*"scalar":.*"zeta":.*\} *$/);
  const header = JSON.parse(headerText) as Record<string, { data_offsets: [number, number]; dtype: string }>;
  for (const [k, e] of Object.entries(header)) {
    if (k === "__metadata__") continue;
    const size = e.dtype === "F16" ? 2 : 4;
    assert.equal(e.data_offsets[0] % size, 0, `${k} aligned`);
  }

  const { tensors, metadata } = readSafetensors(p);
  assert.deepEqual(metadata, { a: "1", b: "2" });
  assert.deepEqual([...tensors.keys()], ["alpha", "empty", "mid", "scalar", "zeta"]);
  assert.deepEqual(tensors.get("zeta"), { dtype: "F32", shape: [2, 3], data: f32 });
  assert.ok(Object.is(tensors.get("zeta")!.data[4], -0));
  assert.deepEqual(tensors.get("mid"), { dtype: "I32", shape: [5], data: i32 });
  assert.deepEqual(tensors.get("scalar"), { dtype: "F32", shape: [], data: Float32Array.of(7) });
  assert.deepEqual(tensors.get("empty"), { dtype: "F16", shape: [0, 4], data: new Float32Array(0) });
  const half = tensors.get("alpha")!;
  assert.equal(half.dtype, "F16");
  assert.deepEqual([...half.data], [1, -2, 0.0999755859375, 65504, 1.1920928955078125e-7, Infinity]);
});

test("F16 round trip is exact for every float16 value (fast-check over random float32 arrays: read = re-rounded)", () => {
  fc.assert(
    fc.property(fc.array(fc.float({ noNaN: true }), { maxLength: 40 }), (values) => {
      const p = fresh("prop");
      const x = Float32Array.from(values);
      writeSafetensors(p, { x: { dtype: "F16", shape: [x.length], data: x } });
      const y = readSafetensors(p).tensors.get("x")!.data;
      for (let i = 0; i < x.length; i++) {
        const want = float16ToFloat32(referenceHalfBits(x[i]!));
        if (!Object.is(y[i], want)) return false;
      }
      return true;
    }),
    { numRuns: 60 },
  );
});

test("writeSafetensors writes exactly the expected bytes", () => {
  const p = fresh();
  writeSafetensors(p, { w: { dtype: "F32", shape: [2], data: Float32Array.of(1, -2) } });
  const json = '{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}'; // 54 bytes → padded to 56
  const want = [...Buffer.from([56, 0, 0, 0, 0, 0, 0, 0]), ...Buffer.from(json + "  "), 0x00, 0x00, 0x80, 0x3f, 0x00, 0x00, 0x00, 0xc0];
  assert.deepEqual([...readFileSync(p)], want);
});

test("a hand-made file (bytes written one by one) reads F32, F16, BF16, I32, I64 and metadata", () => {
  const data = [
    ...le32([1, -2.5], "f"), // a: F32 [2] at 0..8
    0x00, 0x3c, 0x00, 0xc0, 0xff, 0x7b, 0x01, 0x00, 0x00, 0x7c, 0x00, 0x80, // b: F16 [6] at 8..20: 1, -2, 65504, 2^-24, inf, -0
    0x80, 0x3f, 0x40, 0xc0, 0x20, 0x3e, 0x00, 0x00, // c: BF16 [2, 2] at 20..28: 1, -3, 0.15625, 0
    ...le32([7, -8], "i"), // d: I32 [2] at 28..36
    0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f, 0, 0, 0, 0, 0x00, 0x00, 0x00, 0x80, 0xff, 0xff, 0xff, 0xff, // e: I64 [3] at 36..60: -1, 2^31-1, -2^31
  ];
  const p = makeFile(
    {
      __metadata__: { format: "pt", note: "hand made" },
      a: { dtype: "F32", shape: [2], data_offsets: [0, 8] },
      b: { dtype: "F16", shape: [6], data_offsets: [8, 20] },
      c: { dtype: "BF16", shape: [2, 2], data_offsets: [20, 28] },
      d: { dtype: "I32", shape: [2], data_offsets: [28, 36] },
      e: { dtype: "I64", shape: [3], data_offsets: [36, 60] },
    },
    data,
  );
  const { tensors, metadata } = readSafetensors(p);
  assert.deepEqual(metadata, { format: "pt", note: "hand made" });
  assert.deepEqual(tensors.get("a"), { dtype: "F32", shape: [2], data: Float32Array.of(1, -2.5) });
  assert.deepEqual(tensors.get("b"), { dtype: "F16", shape: [6], data: Float32Array.of(1, -2, 65504, 2 ** -24, Infinity, -0) });
  assert.ok(Object.is(tensors.get("b")!.data[5], -0));
  assert.deepEqual(tensors.get("c"), { dtype: "BF16", shape: [2, 2], data: Float32Array.of(1, -3, 0.15625, 0) });
  assert.deepEqual(tensors.get("d"), { dtype: "I32", shape: [2], data: Int32Array.of(7, -8) });
  assert.deepEqual(tensors.get("e"), { dtype: "I64", shape: [3], data: Int32Array.of(-1, 2147483647, -2147483648) });

  const h = readSafetensorsHeader(p);
  assert.deepEqual(h.tensors.get("e"), { dtype: "I64", shape: [3], dataOffsets: [36, 60] });
  assert.equal(h.fileSize, h.dataStart + 60);
  assert.deepEqual(h.metadata, { format: "pt", note: "hand made" });
});

test("a header with trailing spaces and no __metadata__ reads, and gaps between tensors are tolerated", () => {
  const p = makeFile('{"x":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}     ', [0, 0, 0, 0, ...le32([3], "f")]);
  const { tensors, metadata } = readSafetensors(p);
  assert.deepEqual(metadata, {});
  assert.deepEqual([...tensors.get("x")!.data], [3]);
});

// ───────────────────────── header errors ─────────────────────────

function throwsNaming(p: string, ...parts: string[]): void {
  for (const read of [readSafetensors, readSafetensorsHeader]) {
    assert.throws(
      () => read(p),
      (e: unknown) => {
        assert.ok(e instanceof SelfreportError, `expected a SelfreportError, got ${String(e)}`);
        assert.ok(e.message.includes(p), `message names the file: ${e.message}`);
        for (const part of parts) assert.ok(e.message.includes(part), `message ${JSON.stringify(e.message)} should contain ${JSON.stringify(part)}`);
        return true;
      },
    );
  }
}

const ok = (over: Record<string, unknown> = {}): Record<string, unknown> => ({ dtype: "F32", shape: [2], data_offsets: [0, 8], ...over });

test("header errors: each names the file, the tensor and the problem", () => {
  const d8 = [0, 0, 0, 0, 0, 0, 0, 0];
  const p0 = fresh("short");
  writeFileSync(p0, Buffer.from([1, 2, 3]));
  throwsNaming(p0, "fewer than the 8-byte");
  throwsNaming(makeFile({ x: ok() }, d8, 10_000n), "header length 10000", "larger than the rest of the file");
  throwsNaming(makeFile({ x: ok() }, d8, 2n ** 63n), "larger than the rest of the file");
  throwsNaming(makeFile("{}", [], 1n), "too small");
  throwsNaming(makeFile('{"x": {"dtype": "F32",', d8), "not valid JSON");
  throwsNaming(makeFile("[1, 2]", d8), "not a JSON object");
  throwsNaming(makeFile("null    ", d8), "not a JSON object");
  const badUtf8 = fresh("utf8");
  writeFileSync(badUtf8, Buffer.concat([Buffer.from([4, 0, 0, 0, 0, 0, 0, 0]), Buffer.from([0x7b, 0xff, 0xfe, 0x7d])]));
  throwsNaming(badUtf8, "not valid UTF-8");
  throwsNaming(makeFile({ x: 5 }, d8), 'tensor "x"', "must be an object");
  throwsNaming(makeFile({ x: ok({ dtype: "X9" }) }, d8), 'tensor "x"', 'unknown dtype "X9"');
  throwsNaming(makeFile({ x: ok({ dtype: "F64", shape: [1] }) }, d8), 'tensor "x"', "dtype F64 is not supported");
  throwsNaming(makeFile({ x: ok({ dtype: "toString" }) }, d8), 'tensor "x"', 'unknown dtype "toString"');
  throwsNaming(makeFile({ x: ok({ dtype: 4 }) }, d8), 'tensor "x"', '"dtype" must be a string');
  throwsNaming(makeFile({ x: ok({ shape: [-2] }) }, d8), 'tensor "x"', '"shape" must be an array of non-negative integers');
  throwsNaming(makeFile({ x: ok({ shape: [2.5] }) }, d8), 'tensor "x"', '"shape"');
  throwsNaming(makeFile({ x: ok({ shape: "2" }) }, d8), 'tensor "x"', '"shape"');
  throwsNaming(makeFile({ x: ok({ data_offsets: [0] }) }, d8), 'tensor "x"', '"data_offsets" must be [begin, end]');
  throwsNaming(makeFile({ x: ok({ data_offsets: [-8, 0] }) }, d8), 'tensor "x"', '"data_offsets"');
  throwsNaming(makeFile({ x: ok({ shape: [0], data_offsets: [8, 0] }) }, d8), 'tensor "x"', "begin is after end");
  throwsNaming(makeFile({ x: ok({ data_offsets: [4, 12] }) }, d8), 'tensor "x"', "past the end of the data area (8 bytes)");
  throwsNaming(makeFile({ x: ok({ shape: [3] }) }, d8), 'tensor "x"', "needs 12 bytes", "span 8");
  throwsNaming(makeFile({ x: ok({ dtype: "F16" }) }, d8), 'tensor "x"', "needs 4 bytes", "span 8");
  throwsNaming(
    makeFile({ x: ok(), y: ok({ shape: [1], data_offsets: [4, 8] }) }, d8),
    'tensor "y"',
    'overlap those of "x"',
  );
  throwsNaming(makeFile({ __metadata__: { k: 1 }, x: ok() }, d8), '"__metadata__" value "k" must be a string');
  throwsNaming(makeFile({ __metadata__: ["a"], x: ok() }, d8), '"__metadata__" must be an object');
  const p64 = makeFile({ big: { dtype: "I64", shape: [2], data_offsets: [0, 16] } }, [1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0]);
  assert.throws(() => readSafetensors(p64), (e: unknown) => e instanceof SelfreportError && e.message.includes(p64) && e.message.includes('tensor "big"') && e.message.includes("4294967296") && e.message.includes("int32"));
  throwsNaming(join(dir, "does-not-exist.safetensors"), "cannot read");
});

test("zero-sized tensors may share an offset with others", () => {
  const p = makeFile({ x: ok(), e: { dtype: "F32", shape: [0], data_offsets: [0, 0] } }, le32([1, 2], "f"));
  const t = readSafetensors(p).tensors;
  assert.deepEqual([...t.get("x")!.data], [1, 2]);
  assert.equal(t.get("e")!.data.length, 0);
});

test("writeSafetensors refuses bad input with the tensor's name, and writes nothing", () => {
  const p = fresh("bad");
  const cases: [Parameters<typeof writeSafetensors>[1], string][] = [
    [{ w: { dtype: "F32", shape: [3], data: new Float32Array(2) } }, 'tensor "w": shape [3] has 3 elements but the data has 2'],
    [{ w: { dtype: "I32", shape: [2], data: new Float32Array(2) } }, "needs an Int32Array"],
    [{ w: { dtype: "F16", shape: [2], data: new Int32Array(2) } }, "needs a Float32Array"],
    [{ w: { dtype: "F32", shape: [-1], data: new Float32Array(0) } }, "non-negative integers"],
    [{ __metadata__: { dtype: "F32", shape: [0], data: new Float32Array(0) } }, "reserved"],
  ];
  for (const [tensors, msg] of cases) {
    assert.throws(() => writeSafetensors(p, tensors), (e: unknown) => e instanceof SelfreportError && e.message.includes(p) && e.message.includes(msg));
  }
  const notStrings: Record<string, string> = JSON.parse('{"n": 3}') as Record<string, string>; // as from untyped JSON
  assert.throws(
    () => writeSafetensors(p, {}, notStrings),
    (e: unknown) => e instanceof SelfreportError && e.message.includes('metadata "n" must be a string'),
  );
  assert.throws(() => readFileSync(p));
});

// ───────────────────────── float16 / bfloat16 conversion ─────────────────────────

/** Every finite non-negative float16 value, in increasing order (bits 0x0000…0x7bff). */
const HALVES: number[] = Array.from({ length: 0x7c00 }, (_, h) => (h < 0x400 ? h * 2 ** -24 : (1 + (h & 0x3ff) / 1024) * 2 ** ((h >> 10) - 15)));

/** Independent reference: the nearest float16 by search over all of them (ties to even bits). */
function referenceHalfBits(x: number): number {
  const v = Math.fround(x);
  if (Number.isNaN(v)) return 0x7e00;
  const sign = v < 0 || Object.is(v, -0) ? 0x8000 : 0;
  const a = Math.abs(v);
  if (a >= 65520) return sign | 0x7c00; // 65504 + half an ulp (16) and above round to infinity
  let lo = 0;
  let hi = HALVES.length - 1;
  while (hi - lo > 1) {
    const mid = (lo + hi) >> 1;
    if (HALVES[mid]! <= a) lo = mid;
    else hi = mid;
  }
  if (a >= HALVES[hi]!) return sign | hi;
  const dLo = a - HALVES[lo]!;
  const dHi = HALVES[hi]! - a;
  return sign | (dLo < dHi ? lo : dHi < dLo ? hi : lo % 2 === 0 ? lo : hi);
}

test("float16ToFloat32 decodes every bit pattern; float32ToFloat16 inverts it exactly", () => {
  for (let h = 0; h < 0x10000; h++) {
    const v = float16ToFloat32(h);
    const exp = (h >> 10) & 0x1f;
    if (exp === 0x1f && (h & 0x3ff) !== 0) {
      assert.ok(Number.isNaN(v), `0x${h.toString(16)} is NaN`);
      assert.ok(Number.isNaN(float16ToFloat32(float32ToFloat16(v))));
      continue;
    }
    const expect = (h & 0x8000 ? -1 : 1) * (exp === 0x1f ? Infinity : HALVES[h & 0x7fff]!);
    if (!Object.is(v, expect)) assert.fail(`0x${h.toString(16)}: got ${v}, want ${expect}`);
    if (float32ToFloat16(v) !== h) assert.fail(`0x${h.toString(16)} → ${v} → 0x${float32ToFloat16(v).toString(16)}`);
  }
});

test("float32ToFloat16 rounds to nearest even: subnormals, overflow, signed zero, NaN", () => {
  const cases: [number, number][] = [
    [0, 0x0000],
    [-0, 0x8000],
    [1, 0x3c00],
    [1 + 2 ** -11, 0x3c00], // exactly halfway between 1 and 1+2^-10: to even (1)
    [1 + 3 * 2 ** -11, 0x3c02], // halfway between 1+2^-10 (odd) and 1+2^-9: to even
    [1 + 2 ** -11 + 2 ** -20, 0x3c01], // just above halfway
    [65504, 0x7bff],
    [65519.99, 0x7bff],
    [65520, 0x7c00], // halfway to 2^16: to even = infinity
    [1e10, 0x7c00],
    [-1e10, 0xfc00],
    [Infinity, 0x7c00],
    [-Infinity, 0xfc00],
    [2 ** -24, 0x0001],
    [2 ** -25, 0x0000], // halfway between 0 and the smallest subnormal: to even (0)
    [2 ** -25 * 1.0000001, 0x0001],
    [3 * 2 ** -25, 0x0002], // 1.5 units: to even (2)
    [5 * 2 ** -25, 0x0002], // 2.5 units: to even (2)
    [-(2 ** -26), 0x8000],
    [2 ** -14, 0x0400], // smallest normal
    [2 ** -14 - 2 ** -25, 0x0400], // the largest subnormal + half an ulp rounds up into the normals
    [1e-45, 0x0000], // a float32 subnormal
  ];
  for (const [x, bits] of cases) {
    assert.equal(float32ToFloat16(x), bits, `${x} → 0x${float32ToFloat16(x).toString(16)}, want 0x${bits.toString(16)}`);
    assert.equal(referenceHalfBits(x), bits, `reference for ${x}`);
  }
  const nan = float32ToFloat16(NaN);
  assert.equal(nan & 0x7c00, 0x7c00);
  assert.notEqual(nan & 0x3ff, 0);
});

test("float32ToFloat16 agrees with a brute-force nearest-float16 search on random float32 values", () => {
  fc.assert(
    fc.property(fc.float({ noNaN: true }), (x) => float32ToFloat16(x) === referenceHalfBits(x)),
    { numRuns: 20000 },
  );
  // and densely around the subnormal/normal boundary and the top of the range
  for (let i = 0; i < 5000; i++) {
    for (const scale of [2 ** -14, 65504, 2 ** -24]) {
      const x = scale * (0.5 + i / 2500);
      assert.equal(float32ToFloat16(x), referenceHalfBits(x), String(x));
    }
  }
});

test("bfloat16ToFloat32 is the top half of a float32", () => {
  assert.equal(bfloat16ToFloat32(0x3f80), 1);
  assert.equal(bfloat16ToFloat32(0xc040), -3);
  assert.equal(bfloat16ToFloat32(0x7f80), Infinity);
  assert.ok(Number.isNaN(bfloat16ToFloat32(0x7fc0)));
  assert.equal(bfloat16ToFloat32(0x0001), 2 ** -133);
});
