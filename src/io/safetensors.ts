/**
 * safetensors files (https://github.com/huggingface/safetensors):
 *
 *   [8 bytes]  N, the header length, unsigned 64-bit little-endian
 *   [N bytes]  JSON header: { "<name>": { "dtype": "F32", "shape": [2, 3], "data_offsets": [begin, end] },
 *                             "__metadata__": { "<key>": "<string value>" } }
 *              (Hugging Face pads it with spaces so that the data starts at a multiple of 8)
 *   [rest]     the data area; offsets are relative to its start; values are little-endian, row-major
 *
 * Reading: F32, F16, BF16 → Float32Array; I32, I64 → Int32Array (I64 values must fit in int32).
 * Writing: F32 and F16 (from a Float32Array), I32 (from an Int32Array).
 *
 * The header is validated before any data is read; every problem throws one SelfreportError that
 * names the file, the tensor and what is wrong. Gaps between tensors are tolerated (the format does
 * not need them, but they are harmless); overlapping byte ranges are not. Unknown fields in a tensor
 * entry are ignored.
 *
 * Files are read tensor by tensor with positioned reads, straight into the output arrays, so a
 * file larger than 2 GiB loads and peak memory is the tensors themselves.
 */
import { closeSync, fstatSync, openSync, readSync } from "node:fs";
import { writeFileAtomic } from "./atomic.ts";
import { SelfreportError } from "../errors.ts";

export type SafetensorsDtype = "F32" | "F16" | "BF16" | "I32" | "I64";
export type WritableDtype = "F32" | "F16" | "I32";

/** Bytes per element of each dtype this module reads. */
const DTYPE_BYTES: Record<SafetensorsDtype, number> = { F32: 4, F16: 2, BF16: 2, I32: 4, I64: 8 };

/** dtypes of the format that this module does not read (named in the error). */
const OTHER_DTYPES = new Set(["F64", "F8_E4M3", "F8_E5M2", "I8", "I16", "U8", "U16", "U32", "U64", "BOOL"]);

/** Hugging Face refuses headers above 100 MB; so do we (a corrupt length would otherwise allocate). */
const MAX_HEADER_BYTES = 100_000_000;

/** Positioned reads are split into chunks of at most this many bytes. */
const MAX_READ = 1 << 30;

export interface SafetensorsTensor {
  dtype: SafetensorsDtype;
  shape: number[];
  data: Float32Array | Int32Array;
}

export interface SafetensorsFile {
  tensors: Map<string, SafetensorsTensor>;
  metadata: Record<string, string>;
}

export interface SafetensorsHeaderEntry {
  dtype: SafetensorsDtype;
  shape: number[];
  /** [begin, end) byte offsets relative to the start of the data area. */
  dataOffsets: [number, number];
}

export interface SafetensorsHeader {
  /** In the file's order of names (JSON key order). */
  tensors: Map<string, SafetensorsHeaderEntry>;
  metadata: Record<string, string>;
  /** Byte offset of the data area in the file (8 + header length). */
  dataStart: number;
  /** Size of the file in bytes. */
  fileSize: number;
}

export interface WritableTensor {
  dtype: WritableDtype;
  shape: readonly number[];
  /** F32/F16: a Float32Array; I32: an Int32Array; exactly prod(shape) elements, row-major. */
  data: Float32Array | Int32Array;
}

// ───────────────────────── reading ─────────────────────────

/** Reads and validates only the header (cheap: two small reads). */
export function readSafetensorsHeader(path: string): SafetensorsHeader {
  const fd = openForRead(path);
  try {
    return readHeaderFd(fd, path);
  } finally {
    closeSync(fd);
  }
}

/** Reads every tensor of a safetensors file, converted as described at the top of this file. */
export function readSafetensors(path: string): SafetensorsFile {
  const fd = openForRead(path);
  try {
    const header = readHeaderFd(fd, path);
    const tensors = new Map<string, SafetensorsTensor>();
    for (const [name, e] of header.tensors) {
      const n = e.shape.reduce((a, b) => a * b, 1);
      const position = header.dataStart + e.dataOffsets[0];
      tensors.set(name, { dtype: e.dtype, shape: [...e.shape], data: readTensorData(fd, path, name, e.dtype, n, position) });
    }
    return { tensors, metadata: header.metadata };
  } finally {
    closeSync(fd);
  }
}

/**
 * Reads one tensor of a file whose header was read with readSafetensorsHeader, converted like
 * readSafetensors does: for loading a model one tensor at a time, so that the file's tensors are
 * never all held at once in float32 beside what they are turned into.
 */
export function readSafetensorsTensor(path: string, header: SafetensorsHeader, name: string): Float32Array | Int32Array {
  const e = header.tensors.get(name);
  if (e === undefined) throw new SelfreportError(`${path}: no tensor "${name}"`);
  const fd = openForRead(path);
  try {
    return readTensorData(fd, path, name, e.dtype, e.shape.reduce((a, b) => a * b, 1), header.dataStart + e.dataOffsets[0]);
  } finally {
    closeSync(fd);
  }
}

function openForRead(path: string): number {
  try {
    return openSync(path, "r");
  } catch (e) {
    throw new SelfreportError(`cannot read ${path}: ${(e as Error).message}`, { cause: e });
  }
}

function readHeaderFd(fd: number, path: string): SafetensorsHeader {
  const bad = (problem: string): SelfreportError => new SelfreportError(`${path}: not a valid safetensors file: ${problem}`);
  const fileSize = fstatSync(fd).size;
  if (fileSize < 8) throw bad(`the file has ${fileSize} bytes, fewer than the 8-byte header length`);
  const lenBytes = new Uint8Array(8);
  readExactly(fd, lenBytes, 0, path);
  const len64 = new DataView(lenBytes.buffer).getBigUint64(0, true);
  if (len64 > BigInt(fileSize - 8)) throw bad(`the header length ${len64} is larger than the rest of the file (${fileSize - 8} bytes)`);
  const headerLen = Number(len64);
  if (headerLen > MAX_HEADER_BYTES) throw bad(`the header length ${headerLen} exceeds the ${MAX_HEADER_BYTES}-byte limit`);
  if (headerLen < 2) throw bad(`the header length ${headerLen} is too small for a JSON object`);
  const headerBytes = new Uint8Array(headerLen);
  readExactly(fd, headerBytes, 8, path);

  let text: string;
  try {
    text = new TextDecoder("utf-8", { fatal: true }).decode(headerBytes);
  } catch {
    throw bad("the header is not valid UTF-8");
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw bad(`the header is not valid JSON (${(e as Error).message})`);
  }
  if (!isPlainObject(json)) throw bad("the header is not a JSON object");

  const dataStart = 8 + headerLen;
  const dataSize = fileSize - dataStart;
  const metadata: Record<string, string> = {};
  const tensors = new Map<string, SafetensorsHeaderEntry>();
  for (const [name, entry] of Object.entries(json)) {
    if (name === "__metadata__") {
      if (!isPlainObject(entry)) throw bad(`"__metadata__" must be an object of strings, got ${describe(entry)}`);
      for (const [k, v] of Object.entries(entry)) {
        if (typeof v !== "string") throw bad(`"__metadata__" value "${k}" must be a string, got ${describe(v)}`);
        metadata[k] = v;
      }
      continue;
    }
    const badT = (problem: string): SelfreportError => new SelfreportError(`${path}: not a valid safetensors file: tensor "${name}": ${problem}`);
    if (!isPlainObject(entry)) throw badT(`the entry must be an object, got ${describe(entry)}`);
    const dtype = entry["dtype"];
    if (typeof dtype !== "string") throw badT(`"dtype" must be a string, got ${describe(dtype)}`);
    if (!Object.hasOwn(DTYPE_BYTES, dtype)) {
      const known = Object.keys(DTYPE_BYTES).join(", ");
      throw badT(OTHER_DTYPES.has(dtype) ? `dtype ${dtype} is not supported (supported: ${known})` : `unknown dtype "${dtype}" (supported: ${known})`);
    }
    const shape = entry["shape"];
    if (!Array.isArray(shape) || !shape.every((d) => Number.isSafeInteger(d) && (d as number) >= 0)) {
      throw badT(`"shape" must be an array of non-negative integers, got ${describe(shape)}`);
    }
    const offsets = entry["data_offsets"];
    if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every((o) => Number.isSafeInteger(o) && (o as number) >= 0)) {
      throw badT(`"data_offsets" must be [begin, end] with non-negative integers, got ${describe(offsets)}`);
    }
    const [begin, end] = offsets as [number, number];
    if (begin > end) throw badT(`data_offsets [${begin}, ${end}]: begin is after end`);
    if (end > dataSize) throw badT(`data_offsets [${begin}, ${end}] reach past the end of the data area (${dataSize} bytes)`);
    const numel = (shape as number[]).reduce((a, b) => a * b, 1);
    const bytes = DTYPE_BYTES[dtype as SafetensorsDtype];
    if (end - begin !== numel * bytes) {
      throw badT(`shape [${shape.join(", ")}] of ${dtype} needs ${numel * bytes} bytes but data_offsets [${begin}, ${end}] span ${end - begin}`);
    }
    tensors.set(name, { dtype: dtype as SafetensorsDtype, shape: shape as number[], dataOffsets: [begin, end] });
  }

  // No two tensors may share bytes (zero-sized tensors occupy none).
  const byBegin = [...tensors].filter(([, e]) => e.dataOffsets[1] > e.dataOffsets[0]).sort((a, b) => a[1].dataOffsets[0] - b[1].dataOffsets[0]);
  for (let i = 1; i < byBegin.length; i++) {
    const [prevName, prev] = byBegin[i - 1]!;
    const [name, cur] = byBegin[i]!;
    if (cur.dataOffsets[0] < prev.dataOffsets[1]) {
      throw new SelfreportError(
        `${path}: not a valid safetensors file: tensor "${name}": data_offsets [${cur.dataOffsets.join(", ")}] overlap those of "${prevName}" [${prev.dataOffsets.join(", ")}]`,
      );
    }
  }
  return { tensors, metadata, dataStart, fileSize };
}

function readTensorData(fd: number, path: string, name: string, dtype: SafetensorsDtype, n: number, position: number): Float32Array | Int32Array {
  switch (dtype) {
    case "F32": {
      const out = new Float32Array(n);
      readExactly(fd, bytesOf(out), position, path);
      if (!LITTLE_ENDIAN_HOST) swapBytes(bytesOf(out), 4);
      return out;
    }
    case "I32": {
      const out = new Int32Array(n);
      readExactly(fd, bytesOf(out), position, path);
      if (!LITTLE_ENDIAN_HOST) swapBytes(bytesOf(out), 4);
      return out;
    }
    case "F16": {
      const raw = new Uint16Array(n);
      readExactly(fd, bytesOf(raw), position, path);
      if (!LITTLE_ENDIAN_HOST) swapBytes(bytesOf(raw), 2);
      return float16ArrayToFloat32(raw);
    }
    case "BF16": {
      const raw = new Uint16Array(n);
      readExactly(fd, bytesOf(raw), position, path);
      if (!LITTLE_ENDIAN_HOST) swapBytes(bytesOf(raw), 2);
      const out = new Float32Array(n);
      const bits = new Uint32Array(out.buffer);
      for (let i = 0; i < n; i++) bits[i] = raw[i]! << 16;
      return out;
    }
    case "I64": {
      const raw = new Uint8Array(n * 8);
      readExactly(fd, raw, position, path);
      return int64ToInt32(raw, true, (i, v) => new SelfreportError(`${path}: tensor "${name}" (I64): element ${i} = ${v} does not fit in int32`));
    }
  }
}

/**
 * Converts little- (or big-) endian int64 bytes to an Int32Array; `outOfRange(i, value)` builds the
 * error for the first value outside [-2^31, 2^31).
 */
export function int64ToInt32(bytes: Uint8Array, littleEndian: boolean, outOfRange: (index: number, value: bigint) => Error): Int32Array {
  const n = bytes.byteLength / 8;
  const out = new Int32Array(n);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  for (let i = 0; i < n; i++) {
    const lo = view.getInt32(i * 8 + (littleEndian ? 0 : 4), littleEndian);
    const hi = view.getInt32(i * 8 + (littleEndian ? 4 : 0), littleEndian);
    if (hi !== lo >> 31) throw outOfRange(i, view.getBigInt64(i * 8, littleEndian));
    out[i] = lo;
  }
  return out;
}

function readExactly(fd: number, into: Uint8Array, position: number, path: string): void {
  let off = 0;
  while (off < into.byteLength) {
    const want = Math.min(MAX_READ, into.byteLength - off);
    const got = readSync(fd, into, off, want, position + off);
    if (got === 0) throw new SelfreportError(`${path}: unexpected end of file at byte ${position + off}`);
    off += got;
  }
}

// ───────────────────────── writing ─────────────────────────

/**
 * Writes tensors (keys sorted in the header) and optional string metadata, atomically.
 * The header is padded with spaces to a multiple of 8 bytes, as Hugging Face does. In the data area,
 * 4-byte dtypes come before 2-byte ones (each group in key order), so every tensor is aligned to its
 * element size, which memory-mapping readers rely on.
 */
export function writeSafetensors(path: string, tensors: Record<string, WritableTensor>, metadata?: Record<string, string>): void {
  const names = Object.keys(tensors).sort();
  const bad = (name: string, problem: string): SelfreportError => new SelfreportError(`cannot write ${path}: tensor "${name}": ${problem}`);
  const layout = names.map((name) => {
    const t = tensors[name]!;
    if (name === "__metadata__") throw bad(name, `the name "__metadata__" is reserved`);
    if (name.length === 0) throw bad(name, "empty tensor name");
    if (t.dtype !== "F32" && t.dtype !== "F16" && t.dtype !== "I32") throw bad(name, `dtype ${String(t.dtype)} cannot be written (F32, F16 or I32)`);
    if (!t.shape.every((d) => Number.isSafeInteger(d) && d >= 0)) throw bad(name, `shape [${t.shape.join(", ")}] must hold non-negative integers`);
    const numel = t.shape.reduce((a, b) => a * b, 1);
    const wantFloat = t.dtype !== "I32";
    if (wantFloat && !(t.data instanceof Float32Array)) throw bad(name, `dtype ${t.dtype} needs a Float32Array`);
    if (!wantFloat && !(t.data instanceof Int32Array)) throw bad(name, `dtype I32 needs an Int32Array`);
    if (t.data.length !== numel) throw bad(name, `shape [${t.shape.join(", ")}] has ${numel} elements but the data has ${t.data.length}`);
    return { name, t, bytes: t.dtype === "F16" ? 2 : 4, numel };
  });
  if (metadata !== undefined) {
    for (const [k, v] of Object.entries(metadata)) {
      if (typeof v !== "string") throw new SelfreportError(`cannot write ${path}: metadata "${k}" must be a string, got ${describe(v)}`);
    }
  }

  const dataOrder = [...layout].sort((a, b) => b.bytes - a.bytes || (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  const offsets = new Map<string, [number, number]>();
  let pos = 0;
  for (const l of dataOrder) {
    offsets.set(l.name, [pos, pos + l.numel * l.bytes]);
    pos += l.numel * l.bytes;
  }
  const header: Record<string, unknown> = {};
  if (metadata !== undefined && Object.keys(metadata).length > 0) header["__metadata__"] = metadata;
  for (const l of layout) header[l.name] = { dtype: l.t.dtype, shape: [...l.t.shape], data_offsets: offsets.get(l.name) };
  const json = Buffer.from(JSON.stringify(header), "utf8");
  const padded = Math.ceil(json.byteLength / 8) * 8;
  const head = Buffer.alloc(8 + padded, 0x20);
  head.writeBigUInt64LE(BigInt(padded), 0);
  json.copy(head, 8);

  const chunks: Uint8Array[] = [head];
  for (const l of dataOrder) {
    if (l.t.dtype === "F16") {
      const half = float32ArrayToFloat16(l.t.data as Float32Array);
      if (!LITTLE_ENDIAN_HOST) swapBytes(bytesOf(half), 2);
      chunks.push(bytesOf(half));
    } else if (LITTLE_ENDIAN_HOST) {
      chunks.push(bytesOf(l.t.data));
    } else {
      const copy = new Uint8Array(bytesOf(l.t.data));
      swapBytes(copy, 4);
      chunks.push(copy);
    }
  }
  writeFileAtomic(path, chunks);
}

// ───────────────────────── float16 / bfloat16 ─────────────────────────

const f32Scratch = new Float32Array(1);
const u32Scratch = new Uint32Array(f32Scratch.buffer);

/**
 * IEEE 754 binary16 bits of `x`, rounded to nearest, ties to even. `x` is first rounded to float32
 * (the arrays converted here are float32). Overflow gives ±Infinity, values below half the smallest
 * subnormal (2^-25) give ±0 (the sign is kept), NaN stays NaN (quiet, top payload bits kept).
 */
export function float32ToFloat16(x: number): number {
  f32Scratch[0] = x;
  const b = u32Scratch[0]!;
  const sign = (b >>> 16) & 0x8000;
  const exp = (b >>> 23) & 0xff;
  const mant = b & 0x7fffff;
  if (exp === 0xff) return mant !== 0 ? sign | 0x7e00 | (mant >>> 13) : sign | 0x7c00;
  const e = exp - 127 + 15; // biased half exponent
  if (e >= 0x1f) return sign | 0x7c00;
  if (e >= 1) {
    // normal: keep 10 mantissa bits, round the 13 dropped ones; a carry may bump the exponent (up to Infinity)
    const half = (e << 10) | (mant >>> 13);
    const rest = mant & 0x1fff;
    return sign | (rest > 0x1000 || (rest === 0x1000 && (half & 1) === 1) ? half + 1 : half);
  }
  // subnormal half (or zero): value = full · 2^(exp-150) = (full >> shift) units of 2^-24
  const shift = 14 - e; // ≥ 14
  if (shift > 24) return sign; // below 2^-25: rounds to zero
  const full = mant | 0x800000; // exp ≥ 1 here: float32 subnormals (exp 0) are far below 2^-25
  const q = full >>> shift;
  const rest = full & ((1 << shift) - 1);
  const halfway = 1 << (shift - 1);
  return sign | (rest > halfway || (rest === halfway && (q & 1) === 1) ? q + 1 : q);
}

let halfTable: Float32Array | undefined;

/** All 65536 binary16 values as float32 (built once, 256 KiB). */
function float16Table(): Float32Array {
  if (halfTable !== undefined) return halfTable;
  const table = new Float32Array(65536);
  const bits = new Uint32Array(table.buffer);
  for (let h = 0; h < 65536; h++) {
    const sign = (h & 0x8000) << 16;
    const exp = (h >>> 10) & 0x1f;
    const mant = h & 0x3ff;
    if (exp === 0x1f) bits[h] = sign | 0x7f800000 | (mant << 13);
    else if (exp === 0) table[h] = (sign ? -1 : 1) * mant * 2 ** -24;
    else bits[h] = sign | ((exp - 15 + 127) << 23) | (mant << 13);
  }
  halfTable = table;
  return table;
}

/** The value of binary16 bits `h` (exact: every half is a float32). */
export function float16ToFloat32(h: number): number {
  return float16Table()[h & 0xffff]!;
}

/** Converts binary16 bits to float32 values. */
export function float16ArrayToFloat32(half: Uint16Array): Float32Array {
  const table = float16Table();
  const out = new Float32Array(half.length);
  for (let i = 0; i < half.length; i++) out[i] = table[half[i]!]!;
  return out;
}

/** Converts float32 values to binary16 bits (round to nearest even). */
export function float32ArrayToFloat16(x: Float32Array): Uint16Array {
  const out = new Uint16Array(x.length);
  for (let i = 0; i < x.length; i++) out[i] = float32ToFloat16(x[i]!);
  return out;
}

/** The value of bfloat16 bits `h`. */
export function bfloat16ToFloat32(h: number): number {
  u32Scratch[0] = (h & 0xffff) << 16;
  return f32Scratch[0]!;
}

// ───────────────────────── helpers ─────────────────────────

export const LITTLE_ENDIAN_HOST = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

function bytesOf(a: Float32Array | Int32Array | Uint16Array): Uint8Array {
  return new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
}

/** Reverses the byte order of each `size`-byte element in place. */
export function swapBytes(bytes: Uint8Array, size: number): void {
  for (let i = 0; i + size <= bytes.length; i += size) {
    for (let a = i, b = i + size - 1; a < b; a++, b--) {
      const t = bytes[a]!;
      bytes[a] = bytes[b]!;
      bytes[b] = t;
    }
  }
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function describe(v: unknown): string {
  const s = JSON.stringify(v);
  if (s === undefined) return typeof v;
  return s.length > 60 ? `${s.slice(0, 57)}...` : s;
}
