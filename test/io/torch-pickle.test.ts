/**
 * torch.save fixtures in test/fixtures/torch/ were made by make_fixtures.py (dev-only, torch 1.13);
 * the expected values below are written out by hand from that script.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { readTorchFile, TorchTensor, unpickle, type PyValue, type StorageRef } from "../../src/io/torch-pickle.ts";
import { repoRoot } from "../../src/model/resolve.ts";
import { SelfreportError } from "../../src/errors.ts";

const FIXTURES = join(repoRoot(), "test", "fixtures", "torch");
const fixture = (name: string): string => join(FIXTURES, name);

function assertTensor(t: TorchTensor | undefined, dtype: string, shape: number[], values: number[], what: string): void {
  assert.ok(t instanceof TorchTensor, `${what} is a tensor`);
  assert.equal(t.dtype, dtype, `${what} dtype`);
  assert.deepEqual(t.shape, shape, `${what} shape`);
  assert.equal(t.data.length, values.length, `${what} length`);
  for (let i = 0; i < values.length; i++) {
    if (!Object.is(t.data[i], values[i])) assert.fail(`${what}[${i}] = ${t.data[i]}, want ${values[i]}`);
  }
}

const HEAD_W = [0.5, -1, 2, 0.25, -0.125, 3, 0, 1.5];

test("a head state dict: output.weight [1, 8] and output.bias [1]", () => {
  const f = readTorchFile(fixture("head.pt"));
  assert.deepEqual([...f.tensors.keys()], ["output.weight", "output.bias"]);
  assertTensor(f.tensors.get("output.weight"), "float32", [1, 8], HEAD_W, "output.weight");
  assert.ok(f.tensors.get("output.weight")!.data instanceof Float32Array);
  assertTensor(f.tensors.get("output.bias"), "float32", [1], [0.75], "output.bias");
  assert.equal(f.values.size, 0);
  assert.ok(f.root instanceof Map);
});

test("the same archive with DEFLATE-compressed entries reads the same", () => {
  const f = readTorchFile(fixture("head_deflated.pt"));
  assertTensor(f.tensors.get("output.weight"), "float32", [1, 8], HEAD_W, "output.weight");
  assertTensor(f.tensors.get("output.bias"), "float32", [1], [0.75], "output.bias");
});

test("torch 2.x layout (top folder archive/, byteorder record) and a big-endian archive", () => {
  for (const name of ["head_archive.pt", "head_bigendian.pt"]) {
    const f = readTorchFile(fixture(name));
    assertTensor(f.tensors.get("output.weight"), "float32", [1, 8], HEAD_W, `${name} output.weight`);
    assertTensor(f.tensors.get("output.bias"), "float32", [1], [0.75], `${name} output.bias`);
  }
});

/**
 * Rewrites a zip so that every central-directory size and offset lives in a zip64 extra field and the
 * end record points to a zip64 end record (as torch writes files above 4 GiB).
 */
function toZip64(src: Buffer): Buffer {
  const eocd = src.lastIndexOf(Buffer.from([0x50, 0x4b, 0x05, 0x06]));
  const count = src.readUInt16LE(eocd + 10);
  const cdOffset = src.readUInt32LE(eocd + 16);
  const entries: Buffer[] = [];
  for (let i = 0, p = cdOffset; i < count; i++) {
    const nameLen = src.readUInt16LE(p + 28);
    const extraLen = src.readUInt16LE(p + 30);
    const commentLen = src.readUInt16LE(p + 32);
    const fixed = Buffer.from(src.subarray(p, p + 46));
    const name = src.subarray(p + 46, p + 46 + nameLen);
    const extra = Buffer.alloc(4 + 24);
    extra.writeUInt16LE(0x0001, 0);
    extra.writeUInt16LE(24, 2);
    extra.writeBigUInt64LE(BigInt(fixed.readUInt32LE(24)), 4); // uncompressed size
    extra.writeBigUInt64LE(BigInt(fixed.readUInt32LE(20)), 12); // compressed size
    extra.writeBigUInt64LE(BigInt(fixed.readUInt32LE(42)), 20); // local header offset
    for (const at of [20, 24, 42]) fixed.writeUInt32LE(0xffffffff, at);
    fixed.writeUInt16LE(extra.length, 30);
    fixed.writeUInt16LE(0, 32);
    entries.push(fixed, name, extra);
    p += 46 + nameLen + extraLen + commentLen;
  }
  const body = src.subarray(0, cdOffset);
  const cd = Buffer.concat(entries);
  const z64 = Buffer.alloc(56);
  z64.writeUInt32LE(0x06064b50, 0);
  z64.writeBigUInt64LE(44n, 4);
  z64.writeUInt16LE(45, 12);
  z64.writeUInt16LE(45, 14);
  z64.writeBigUInt64LE(BigInt(count), 24);
  z64.writeBigUInt64LE(BigInt(count), 32);
  z64.writeBigUInt64LE(BigInt(cd.length), 40);
  z64.writeBigUInt64LE(BigInt(body.length), 48);
  const loc = Buffer.alloc(20);
  loc.writeUInt32LE(0x07064b50, 0);
  loc.writeBigUInt64LE(BigInt(body.length + cd.length), 8);
  loc.writeUInt32LE(1, 16);
  const end = Buffer.alloc(22);
  end.writeUInt32LE(0x06054b50, 0);
  end.writeUInt16LE(0xffff, 8);
  end.writeUInt16LE(0xffff, 10);
  end.writeUInt32LE(0xffffffff, 12);
  end.writeUInt32LE(0xffffffff, 16);
  return Buffer.concat([body, cd, z64, loc, end]);
}

test("zip64 central directory and end records are read", () => {
  const dir = mkdtempSync(join(tmpdir(), "selfreport-torch-"));
  const p = join(dir, "hidden64.pt");
  writeFileSync(p, toZip64(readFileSync(fixture("hidden.pt"))));
  const f = readTorchFile(p);
  assertTensor(f.tensors.get("hidden.bias"), "float32", [3], [-1, 0, 1], "hidden.bias");
  assertTensor(f.tensors.get("output.weight"), "float32", [1, 3], [1, -2, 0.5], "output.weight");
});

test("a hidden-layer head saved from nn.Sequential.state_dict() (OrderedDict with _metadata, shared memo)", () => {
  const f = readTorchFile(fixture("hidden.pt"));
  assert.deepEqual([...f.tensors.keys()], ["hidden.weight", "hidden.bias", "output.weight", "output.bias"]);
  assertTensor(f.tensors.get("hidden.weight"), "float32", [3, 4], Array.from({ length: 12 }, (_, i) => i / 4), "hidden.weight");
  assertTensor(f.tensors.get("hidden.bias"), "float32", [3], [-1, 0, 1], "hidden.bias");
  assertTensor(f.tensors.get("output.weight"), "float32", [1, 3], [1, -2, 0.5], "output.weight");
  assertTensor(f.tensors.get("output.bias"), "float32", [1], [0.125], "output.bias");
});

test("plain values: int, float, string, big int, bool, None, list, tuple, nested dict, int64 and bool tensors", () => {
  const f = readTorchFile(fixture("values.pt"));
  const v = f.values;
  assert.equal(v.get("step"), 1234);
  assert.equal(v.get("lr"), 0.001);
  assert.equal(v.get("name"), "brown-gpt2-mini");
  assert.equal(v.get("big"), 2 ** 40);
  assert.equal(v.get("neg"), -7);
  assert.equal(v.get("flag"), true);
  assert.equal(v.get("nothing"), null);
  assert.deepEqual(v.get("sizes"), [1, 2, 3]);
  assert.deepEqual(v.get("pair"), [4, "x"]);
  assertTensor(f.tensors.get("nested.a"), "float32", [2], [1, 2], "nested.a");
  assertTensor(f.tensors.get("ids"), "int64", [3], [3, -1, 50256], "ids");
  assert.ok(f.tensors.get("ids")!.data instanceof Int32Array);
  assertTensor(f.tensors.get("mask"), "bool", [3], [1, 0, 1], "mask");
  const nested = (f.root as Map<string, PyValue>).get("nested");
  assert.ok(nested instanceof Map && nested.get("a") instanceof TorchTensor);
});

test("views: a transpose, a storage offset, a strided slice and a permutation are materialised row-major", () => {
  const f = readTorchFile(fixture("views.pt"));
  assertTensor(f.tensors.get("base"), "float32", [2, 3], [0, 1, 2, 3, 4, 5], "base");
  assertTensor(f.tensors.get("transposed"), "float32", [3, 2], [0, 3, 1, 4, 2, 5], "transposed");
  assertTensor(f.tensors.get("sliced"), "float32", [4], [3, 4, 5, 6], "sliced");
  assertTensor(f.tensors.get("strided"), "float32", [3], [1, 4, 7], "strided");
  // permuted[k, i, j] = cube[i, j, k] = 12 i + 4 j + k
  const permuted: number[] = [];
  for (let k = 0; k < 4; k++) for (let i = 0; i < 2; i++) for (let j = 0; j < 3; j++) permuted.push(12 * i + 4 * j + k);
  assertTensor(f.tensors.get("permuted"), "float32", [4, 2, 3], permuted, "permuted");
  // views of one storage are independent copies
  f.tensors.get("base")!.data[0] = 99;
  assert.equal(f.tensors.get("transposed")!.data[0], 0);
});

test("float16, bfloat16 and float64 tensors are read into Float32Array", () => {
  const f = readTorchFile(fixture("half.pt"));
  assertTensor(f.tensors.get("half"), "float16", [7], [1, -2.5, 65504, 2 ** -24, Infinity, -0, 0.333251953125], "half");
  assertTensor(f.tensors.get("bf16"), "bfloat16", [4], [1, -3, 0.15625, 2 ** 100], "bf16");
  assertTensor(f.tensors.get("double"), "float64", [2], [0.5, -1.25], "double");
});

test("a pickle that calls os.system is refused, naming the global, and nothing runs", () => {
  const marker = "/tmp/selfreport-pwned";
  rmSync(marker, { force: true });
  assert.throws(
    () => readTorchFile(fixture("malicious.pt")),
    (e: unknown) => {
      assert.ok(e instanceof SelfreportError);
      assert.ok(e.message.includes("posix.system"), e.message);
      assert.ok(e.message.includes("refusing"), e.message);
      assert.ok(e.message.includes("malicious.pt"), e.message);
      return true;
    },
  );
  assert.equal(existsSync(marker), false);
});

// ───────────────────────── the unpickler on hand-written pickles ─────────────────────────

const noStorage = (): never => {
  throw new Error("no storage expected");
};
const run = (bytes: number[], loadStorage: (ref: StorageRef) => Float32Array | Int32Array = noStorage): PyValue =>
  unpickle(Uint8Array.from(bytes), { source: "test.pkl", loadStorage });

const ascii = (s: string): number[] => [...Buffer.from(s, "latin1")];
const u32 = (n: number): number[] => [n & 0xff, (n >> 8) & 0xff, (n >> 16) & 0xff, (n >>> 24) & 0xff];
const str = (s: string): number[] => [0x58, ...u32(Buffer.byteLength(s)), ...Buffer.from(s, "utf8")]; // BINUNICODE
const glob = (module: string, name: string): number[] => [0x63, ...ascii(`${module}\n${name}\n`)]; // GLOBAL

test("unpickle: numbers, strings, containers and the memo", () => {
  const bytes = [
    0x80, 0x02, 0x7d, 0x71, 0x00, 0x28, // PROTO 2, EMPTY_DICT, BINPUT 0, MARK
    ...str("a"), 0x4a, 0xff, 0xff, 0xff, 0xff, // BININT -1
    ...str("b"), 0x47, 0x3f, 0xf8, 0, 0, 0, 0, 0, 0, // BINFLOAT 1.5 (big-endian)
    ...str("c"), 0x8a, 0x02, 0x00, 0x80, // LONG1 -32768
    ...str("d"), 0x8a, 0x09, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, // LONG1 2^64 → bigint
    ...str("e"), 0x8c, 0x03, ...Buffer.from("é!"), // SHORT_BINUNICODE
    ...str("f"), 0x5d, 0x71, 0x01, 0x28, 0x4b, 0x07, 0x4d, 0x00, 0x01, 0x4e, 0x88, 0x89, 0x65, // [7, 256, None, True, False]
    ...str("g"), 0x68, 0x01, // BINGET 1: the same list
    ...str("h"), 0x4b, 0x01, 0x4b, 0x02, 0x86, // TUPLE2 (1, 2)
    ...str("i"), 0x43, 0x02, 0xde, 0xad, // SHORT_BINBYTES
    0x75, 0x2e, // SETITEMS, STOP
  ];
  const d = run(bytes);
  assert.ok(d instanceof Map);
  assert.equal(d.get("a"), -1);
  assert.equal(d.get("b"), 1.5);
  assert.equal(d.get("c"), -32768);
  assert.equal(d.get("d"), 2n ** 64n);
  assert.equal(d.get("e"), "é!");
  assert.deepEqual(d.get("f"), [7, 256, null, true, false]);
  assert.equal(d.get("g"), d.get("f"));
  assert.deepEqual(d.get("h"), [1, 2]);
  assert.deepEqual(d.get("i"), Uint8Array.of(0xde, 0xad));
});

test("unpickle refuses globals off the allowlist (GLOBAL and STACK_GLOBAL) before anything is called", () => {
  const cases: [number[], string][] = [
    [[0x80, 0x02, ...glob("builtins", "eval"), ...str("1+1"), 0x85, 0x52, 0x2e], "builtins.eval"],
    [[0x80, 0x02, ...glob("os", "system"), 0x2e], "os.system"],
    [[0x80, 0x04, 0x8c, 0x02, ...ascii("os"), 0x8c, 0x06, ...ascii("system"), 0x93, 0x2e], "os.system"],
    [[0x80, 0x02, ...glob("torch", "load"), 0x2e], "torch.load"],
    [[0x80, 0x02, ...glob("torch", "constructor"), 0x2e], "torch.constructor"],
    [[0x80, 0x02, ...glob("torch.storage", "_load_from_bytes"), 0x2e], "torch.storage._load_from_bytes"],
    [[0x80, 0x02, ...glob("numpy.core.multiarray", "scalar"), 0x2e], "numpy.core.multiarray.scalar"],
  ];
  for (const [bytes, name] of cases) {
    assert.throws(() => run(bytes), (e: unknown) => e instanceof SelfreportError && e.message.includes(`refers to ${name}`) && e.message.includes("test.pkl"), name);
  }
});

test("unpickle errors: unsupported opcodes, truncation, a storage class left unused, calling a storage class", () => {
  const fails = (bytes: number[], part: string): void => {
    assert.throws(() => run(bytes), (e: unknown) => e instanceof SelfreportError && e.message.includes(part), part);
  };
  fails([0x80, 0x02, 0x69], "unsupported pickle opcode 0x69 ('i')"); // INST
  fails([0x80, 0x02, 0x81], "unsupported pickle opcode 0x81"); // NEWOBJ
  fails([0x80, 0x02, 0x58, 0x10, 0, 0, 0, 0x61], "truncated");
  fails([0x80, 0x02, 0x4b], "truncated");
  fails([0x80, 0x02, 0x4b, 0x01, 0x4b, 0x02, 0x2e], "STOP with 2 items");
  fails([0x80, 0x02, 0x68, 0x05, 0x2e], "memo entry 5");
  fails([0x80, 0x02, ...glob("torch", "FloatStorage"), 0x2e], "reference to torch.FloatStorage");
  fails([0x80, 0x02, ...glob("torch", "FloatStorage"), 0x29, 0x52, 0x2e], "cannot be called");
  fails([0x80, 0x02, 0x4b, 0x01, 0x51, 0x2e], "persistent id");
});

/** _rebuild_tensor_v2(storage('0', FloatStorage, numel), offset, size, stride, False, OrderedDict()) */
function tensorPickle(numel: number, offset: number, size: number[], stride: number[]): number[] {
  const tuple = (xs: number[]): number[] => [0x28, ...xs.flatMap((x) => [0x4b, x]), 0x74];
  return [
    0x80, 0x02, ...glob("torch._utils", "_rebuild_tensor_v2"),
    0x28, // MARK (args)
    0x28, ...str("storage"), ...glob("torch", "FloatStorage"), ...str("0"), ...str("cpu"), 0x4b, numel, 0x74, 0x51, // persistent id
    0x4b, offset, ...tuple(size), ...tuple(stride), 0x89, ...glob("collections", "OrderedDict"), 0x29, 0x52,
    0x74, 0x52, 0x2e,
  ];
}

test("unpickle rebuilds a tensor from a storage, and refuses a view outside its storage", () => {
  const storage = Float32Array.of(0, 1, 2, 3, 4, 5);
  const load = (ref: StorageRef): Float32Array => {
    assert.equal(ref.key, "0");
    assert.equal(ref.dtype, "float32");
    return storage;
  };
  const t = run(tensorPickle(6, 1, [2, 2], [1, 2]), load);
  assert.ok(t instanceof TorchTensor);
  assert.deepEqual(t.shape, [2, 2]);
  assert.deepEqual([...t.data], [1, 3, 2, 4]);
  assert.throws(() => run(tensorPickle(6, 3, [2, 2], [2, 1]), load), (e: unknown) => e instanceof SelfreportError && e.message.includes("reaches element 6"));
  const empty = run(tensorPickle(6, 0, [0, 3], [3, 1]), load);
  assert.ok(empty instanceof TorchTensor && empty.data.length === 0);
});

test("files that are not torch zip archives get a clear error", () => {
  const dir = mkdtempSync(join(tmpdir(), "selfreport-torch-"));
  const legacy = join(dir, "legacy.bin");
  writeFileSync(legacy, Buffer.from([0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19, 0x2e]));
  assert.throws(() => readTorchFile(legacy), (e: unknown) => e instanceof SelfreportError && e.message.includes(legacy) && e.message.includes("not a zip file"));
  const truncated = join(dir, "truncated.pt");
  writeFileSync(truncated, Buffer.from("PK\u0003\u0004 and then nothing useful"));
  assert.throws(() => readTorchFile(truncated), (e: unknown) => e instanceof SelfreportError && e.message.includes("end-of-central-directory"));
  assert.throws(() => readTorchFile(join(dir, "missing.pt")), (e: unknown) => e instanceof SelfreportError && e.message.includes("cannot read"));
});
