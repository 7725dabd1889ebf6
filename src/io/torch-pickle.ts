/**
 * Reads files written by PyTorch's `torch.save` (the zip format, torch ≥ 1.6) without Python and
 * without running anything from the file.
 *
 * Layout of the zip (the top folder's name varies: "archive", or the file's stem):
 *   <top>/data.pkl       the pickled object; each tensor's storage is a persistent id
 *                        ('storage', torch.FloatStorage, '<key>', '<location>', numel)
 *   <top>/data/<key>     the raw bytes of that storage
 *   <top>/byteorder      "little" or "big" (absent in old files: little)
 *   <top>/version, <top>/.data/…   ignored
 *
 * The unpickler is a small stack machine for the protocol-2 opcodes torch.save emits (plus the
 * protocol-4 framing ones, harmless). It is safe by construction: it builds only plain values
 * (None, bool, int, float, str, bytes, list, tuple, dict) and tensors, and a GLOBAL is accepted only
 * from the allowlist below (OrderedDict, the tensor/parameter rebuild functions and the storage
 * classes). Any other global (os.system, builtins.eval, numpy …) is refused the moment it is read,
 * with an error naming it, so nothing it refers to is ever called or even constructed.
 *
 * Result: `root`, the unpickled object (dicts as Map, lists and tuples as arrays, tensors as
 * TorchTensor), and two flat views of it: `tensors` (every tensor, keyed by its dotted path, as in a
 * state dict) and `values` (every other leaf). Float tensors (float32/16, bfloat16, float64) are
 * read into Float32Array, integer and bool ones into Int32Array (int64 values must fit in int32).
 * Views are materialised: a tensor's storage offset and strides (e.g. a transpose) are applied and
 * the data returned contiguous, row-major.
 */
import { closeSync, fstatSync, openSync, readSync } from "node:fs";
import { inflateRawSync } from "node:zlib";
import { SelfreportError } from "../errors.ts";
import { float16ArrayToFloat32, int64ToInt32, LITTLE_ENDIAN_HOST, swapBytes } from "./safetensors.ts";

export type TorchDtype = "float32" | "float16" | "bfloat16" | "float64" | "int64" | "int32" | "int16" | "int8" | "uint8" | "bool";

export class TorchTensor {
  constructor(
    readonly dtype: TorchDtype,
    readonly shape: number[],
    /** Contiguous row-major values: Float32Array for float dtypes, Int32Array for the others. */
    readonly data: Float32Array | Int32Array,
  ) {}
}

export type PyKey = string | number | bigint | boolean | null;
export type PyValue = null | boolean | number | bigint | string | Uint8Array | PyValue[] | Map<PyKey, PyValue> | TorchTensor;

export interface TorchFile {
  root: PyValue;
  /** Every tensor in root, keyed by its path of dict keys / list indices joined with "." ("" for a bare tensor). */
  tensors: Map<string, TorchTensor>;
  /** Every non-tensor leaf (and every list without tensors), keyed the same way. */
  values: Map<string, PyValue>;
}

/** Storage classes: dtype, bytes per element. */
const STORAGES: Record<string, [TorchDtype, number]> = {
  FloatStorage: ["float32", 4],
  HalfStorage: ["float16", 2],
  BFloat16Storage: ["bfloat16", 2],
  DoubleStorage: ["float64", 8],
  LongStorage: ["int64", 8],
  IntStorage: ["int32", 4],
  ShortStorage: ["int16", 2],
  CharStorage: ["int8", 1],
  ByteStorage: ["uint8", 1],
  BoolStorage: ["bool", 1],
};

/** The only globals a pickle may name. Everything else is refused. */
const ALLOWED_FUNCTIONS = new Set([
  "collections.OrderedDict",
  "torch._utils._rebuild_tensor",
  "torch._utils._rebuild_tensor_v2",
  "torch._utils._rebuild_parameter",
  "torch._utils._rebuild_parameter_with_state",
]);

class PyGlobal {
  constructor(readonly qualname: string) {}
}

/** A storage named by a persistent id (exported for the unpickler's options type). */
export class StorageRef {
  constructor(
    readonly key: string,
    readonly dtype: TorchDtype,
    readonly itemSize: number,
    readonly numel: number,
  ) {}
}

/** What the unpickler builds before the result is checked: values plus not-yet-consumed globals and storages. */
type Raw = null | boolean | number | bigint | string | Uint8Array | Raw[] | Map<PyKey, Raw> | TorchTensor | PyGlobal | StorageRef;

/** Sentinel pushed by MARK. */
const MARK = Symbol("mark");
type StackItem = Raw | typeof MARK;

// ───────────────────────── public entry ─────────────────────────

/** Reads a torch.save file (see the top of this file). */
export function readTorchFile(path: string): TorchFile {
  let fd: number;
  try {
    fd = openSync(path, "r");
  } catch (e) {
    throw new SelfreportError(`cannot read ${path}: ${(e as Error).message}`, { cause: e });
  }
  try {
    const zip = new ZipReader(fd, path);
    const pkl = [...zip.entries.keys()].find((n) => /^[^/]+\/data\.pkl$/.test(n));
    if (pkl === undefined) throw new SelfreportError(`${path}: not a torch.save file (the zip has no <folder>/data.pkl)`);
    const top = pkl.slice(0, -"data.pkl".length);
    const byteorderEntry = zip.entries.get(`${top}byteorder`);
    const byteorder = byteorderEntry === undefined ? "little" : new TextDecoder().decode(zip.read(byteorderEntry)).trim();
    if (byteorder !== "little" && byteorder !== "big") throw new SelfreportError(`${path}: unknown byteorder "${byteorder}"`);

    const storages = new Map<string, Float32Array | Int32Array>();
    const loadStorage = (ref: StorageRef): Float32Array | Int32Array => {
      const cached = storages.get(ref.key);
      if (cached !== undefined) return cached;
      const entry = zip.entries.get(`${top}data/${ref.key}`);
      if (entry === undefined) throw new SelfreportError(`${path}: storage "${ref.key}" is missing from the archive (${top}data/${ref.key})`);
      const bytes = zip.read(entry);
      if (bytes.byteLength < ref.numel * ref.itemSize) {
        throw new SelfreportError(`${path}: storage "${ref.key}" has ${bytes.byteLength} bytes, fewer than ${ref.numel} ${ref.dtype} elements need`);
      }
      const data = decodeStorage(bytes.subarray(0, ref.numel * ref.itemSize), ref, byteorder === "little", path);
      storages.set(ref.key, data);
      return data;
    };
    const root = unpickle(zip.read(zip.entries.get(pkl)!), { source: path, loadStorage });
    const tensors = new Map<string, TorchTensor>();
    const values = new Map<string, PyValue>();
    flatten(root, "", tensors, values);
    return { root, tensors, values };
  } finally {
    closeSync(fd);
  }
}

function flatten(v: PyValue, prefix: string, tensors: Map<string, TorchTensor>, values: Map<string, PyValue>): void {
  const at = (k: string): string => (prefix === "" ? k : `${prefix}.${k}`);
  if (v instanceof TorchTensor) tensors.set(prefix, v);
  else if (v instanceof Map) for (const [k, x] of v) flatten(x, at(String(k)), tensors, values);
  else if (Array.isArray(v) && containsTensor(v)) v.forEach((x, i) => flatten(x, at(String(i)), tensors, values));
  else values.set(prefix, v);
}

function containsTensor(v: PyValue): boolean {
  if (v instanceof TorchTensor) return true;
  if (v instanceof Map) return [...v.values()].some(containsTensor);
  if (Array.isArray(v)) return v.some(containsTensor);
  return false;
}

function decodeStorage(bytes: Uint8Array, ref: StorageRef, little: boolean, path: string): Float32Array | Int32Array {
  const n = ref.numel;
  // `bytes` is a fresh buffer from the zip reader: use it in place when aligned (else copy), in host byte order
  const own = bytes.byteOffset % 8 === 0 ? bytes : new Uint8Array(bytes);
  if (little !== LITTLE_ENDIAN_HOST && ref.itemSize > 1 && ref.dtype !== "int64") swapBytes(own, ref.itemSize);
  const buf = own.buffer;
  const at = own.byteOffset;
  switch (ref.dtype) {
    case "float32":
      return new Float32Array(buf, at, n);
    case "float16":
      return float16ArrayToFloat32(new Uint16Array(buf, at, n));
    case "bfloat16": {
      const raw = new Uint16Array(buf, at, n);
      const out = new Float32Array(n);
      const bits = new Uint32Array(out.buffer);
      for (let i = 0; i < n; i++) bits[i] = raw[i]! << 16;
      return out;
    }
    case "float64":
      return Float32Array.from(new Float64Array(buf, at, n));
    case "int64":
      return int64ToInt32(own, little, (i, v) => new SelfreportError(`${path}: storage "${ref.key}" (int64): element ${i} = ${v} does not fit in int32`));
    case "int32":
      return new Int32Array(buf, at, n);
    case "int16":
      return Int32Array.from(new Int16Array(buf, at, n));
    case "int8":
      return Int32Array.from(new Int8Array(buf, at, n));
    case "uint8":
    case "bool":
      return Int32Array.from(own);
  }
}

/** The most elements one tensor may have (a typed array's limit is about 2^32 on 64-bit Node). */
const MAX_ELEMENTS = 2 ** 31 - 1;

/** Applies a view (offset, sizes, strides) to a storage: a contiguous copy. */
function rebuildTensor(storage: Float32Array | Int32Array, ref: StorageRef, offset: number, size: number[], stride: number[], where: string): TorchTensor {
  if (size.length !== stride.length) throw new SelfreportError(`${where}: tensor size [${size}] and stride [${stride}] differ in length`);
  const numel = size.reduce((a, b) => a * b, 1);
  if (numel === 0) return new TorchTensor(ref.dtype, size, storage instanceof Float32Array ? new Float32Array(0) : new Int32Array(0));
  // checked before allocating: a huge size (e.g. [1, 2^40]) must be refused, not fail as "Invalid typed array length"
  let last = offset;
  for (let k = 0; k < size.length; k++) last += (size[k]! - 1) * stride[k]!;
  if (last >= storage.length) {
    throw new SelfreportError(`${where}: tensor view (offset ${offset}, size [${size}], stride [${stride}]) reaches element ${last} of a storage of ${storage.length}`);
  }
  if (numel > MAX_ELEMENTS) throw new SelfreportError(`${where}: tensor of size [${size}] has ${numel} elements; at most ${MAX_ELEMENTS} are supported`);
  const out = storage instanceof Float32Array ? new Float32Array(numel) : new Int32Array(numel);
  let contiguous = true;
  for (let k = size.length - 1, expect = 1; k >= 0; k--) {
    if (size[k] !== 1 && stride[k] !== expect) contiguous = false;
    expect *= size[k]!;
  }
  if (contiguous) {
    out.set(storage.subarray(offset, offset + numel));
    return new TorchTensor(ref.dtype, size, out);
  }
  const D = size.length;
  const idx = new Array<number>(D).fill(0);
  let src = offset;
  for (let i = 0; i < numel; i++) {
    out[i] = storage[src]!;
    for (let k = D - 1; k >= 0; k--) {
      idx[k]!++;
      src += stride[k]!;
      if (idx[k]! < size[k]!) break;
      src -= size[k]! * stride[k]!;
      idx[k] = 0;
    }
  }
  return new TorchTensor(ref.dtype, size, out);
}

// ───────────────────────── unpickler ─────────────────────────

export interface UnpickleOptions {
  /** Names the file in errors. */
  source: string;
  /** Returns the decoded storage of a persistent id. */
  loadStorage: (ref: StorageRef) => Float32Array | Int32Array;
}

/** Unpickles `bytes` with the allowlist above. Exported for tests. */
export function unpickle(bytes: Uint8Array, opts: UnpickleOptions): PyValue {
  const { source } = opts;
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const utf8 = new TextDecoder("utf-8", { fatal: true });
  const stack: StackItem[] = [];
  const memo = new Map<number, StackItem>();
  let pos = 0;

  const fail = (problem: string): SelfreportError => new SelfreportError(`${source}: cannot unpickle data.pkl: ${problem}`);
  const need = (n: number): number => {
    if (n < 0 || pos + n > bytes.byteLength) throw fail(`truncated at byte ${pos} (needs ${n} more)`);
    const at = pos;
    pos += n;
    return at;
  };
  const u8 = (): number => bytes[need(1)]!;
  const u16 = (): number => view.getUint16(need(2), true);
  const u32 = (): number => view.getUint32(need(4), true);
  const u64 = (): number => {
    const v = view.getBigUint64(need(8), true);
    if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw fail(`length ${v} is too large`);
    return Number(v);
  };
  const str = (n: number): string => {
    const at = need(n);
    try {
      return utf8.decode(bytes.subarray(at, at + n));
    } catch {
      throw fail(`invalid UTF-8 string at byte ${at}`);
    }
  };
  const line = (): string => {
    const end = bytes.indexOf(0x0a, pos);
    if (end < 0) throw fail(`unterminated line at byte ${pos}`);
    const s = new TextDecoder("latin1").decode(bytes.subarray(pos, end));
    pos = end + 1;
    return s;
  };
  const pop = (): StackItem => {
    if (stack.length === 0) throw fail(`stack underflow at byte ${pos}`);
    return stack.pop()!;
  };
  const top = (): StackItem => {
    if (stack.length === 0) throw fail(`stack underflow at byte ${pos}`);
    return stack[stack.length - 1]!;
  };
  const popMark = (): StackItem[] => {
    const i = stack.lastIndexOf(MARK);
    if (i < 0) throw fail(`no MARK on the stack at byte ${pos}`);
    const items = stack.splice(i);
    items.shift();
    return items;
  };
  const value = (x: StackItem, what: string): Raw => {
    if (x === MARK) throw fail(`${what} is a MARK`);
    return x;
  };
  const dictOf = (x: StackItem, what: string): Map<PyKey, Raw> => {
    if (!(x instanceof Map)) throw fail(`${what} expects a dict`);
    return x;
  };
  const listOf = (x: StackItem, what: string): Raw[] => {
    if (!Array.isArray(x)) throw fail(`${what} expects a list`);
    return x;
  };
  const key = (x: StackItem): PyKey => {
    if (x === null || typeof x === "string" || typeof x === "number" || typeof x === "bigint" || typeof x === "boolean") return x;
    throw fail(`unsupported dict key type at byte ${pos}`);
  };
  const int = (x: bigint): number | bigint => (x >= BigInt(Number.MIN_SAFE_INTEGER) && x <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(x) : x);
  const long = (n: number): number | bigint => {
    const at = need(n);
    if (n === 0) return 0;
    let v = 0n;
    for (let i = n - 1; i >= 0; i--) v = (v << 8n) | BigInt(bytes[at + i]!);
    if (bytes[at + n - 1]! & 0x80) v -= 1n << BigInt(8 * n);
    return int(v);
  };
  const global = (module: string, name: string): PyGlobal => {
    const q = `${module}.${name}`;
    if (module === "torch" && Object.hasOwn(STORAGES, name)) return new PyGlobal(q);
    if (ALLOWED_FUNCTIONS.has(q)) return new PyGlobal(q);
    throw new SelfreportError(
      `${source}: refusing to load: the pickle refers to ${q}, which is not allowed in a state dict ` +
        `(allowed: ${[...ALLOWED_FUNCTIONS].join(", ")}, torch.*Storage). Save plain tensors and numbers, or convert the file to safetensors.`,
    );
  };

  for (;;) {
    const at = pos;
    const op = u8();
    switch (op) {
      case 0x80: // PROTO
        u8();
        break;
      case 0x95: // FRAME
        need(8);
        break;
      case 0x2e: // STOP
        if (stack.length !== 1) throw fail(`STOP with ${stack.length} items on the stack`);
        return checked(value(stack[0]!, "the pickled object"));
      case 0x28: // MARK
        stack.push(MARK);
        break;
      case 0x30: // POP
        pop();
        break;
      case 0x31: // POP_MARK
        popMark();
        break;
      case 0x32: // DUP
        stack.push(top());
        break;
      case 0x4e: // NONE
        stack.push(null);
        break;
      case 0x88: // NEWTRUE
        stack.push(true);
        break;
      case 0x89: // NEWFALSE
        stack.push(false);
        break;
      case 0x4a: // BININT
        stack.push(view.getInt32(need(4), true));
        break;
      case 0x4b: // BININT1
        stack.push(u8());
        break;
      case 0x4d: // BININT2
        stack.push(u16());
        break;
      case 0x8a: // LONG1
        stack.push(long(u8()));
        break;
      case 0x8b: // LONG4
        stack.push(long(u32()));
        break;
      case 0x47: // BINFLOAT (big-endian)
        stack.push(view.getFloat64(need(8), false));
        break;
      case 0x58: // BINUNICODE
        stack.push(str(u32()));
        break;
      case 0x8c: // SHORT_BINUNICODE
        stack.push(str(u8()));
        break;
      case 0x8d: // BINUNICODE8
        stack.push(str(u64()));
        break;
      case 0x54: // BINSTRING (Python 2 str)
      case 0x55: {
        // SHORT_BINSTRING
        const n = op === 0x54 ? view.getInt32(need(4), true) : u8();
        const b = need(n);
        stack.push(new TextDecoder("latin1").decode(bytes.subarray(b, b + n)));
        break;
      }
      case 0x42: // BINBYTES
      case 0x43: // SHORT_BINBYTES
      case 0x8e: {
        // BINBYTES8
        const n = op === 0x42 ? u32() : op === 0x43 ? u8() : u64();
        const b = need(n);
        stack.push(bytes.slice(b, b + n));
        break;
      }
      case 0x29: // EMPTY_TUPLE
        stack.push([]);
        break;
      case 0x85: // TUPLE1
        stack.push([value(pop(), "TUPLE1 item")]);
        break;
      case 0x86: {
        // TUPLE2
        const b = value(pop(), "TUPLE2 item");
        const a = value(pop(), "TUPLE2 item");
        stack.push([a, b]);
        break;
      }
      case 0x87: {
        // TUPLE3
        const c = value(pop(), "TUPLE3 item");
        const b = value(pop(), "TUPLE3 item");
        const a = value(pop(), "TUPLE3 item");
        stack.push([a, b, c]);
        break;
      }
      case 0x74: // TUPLE
      case 0x6c: // LIST
        stack.push(popMark().map((x) => value(x, op === 0x74 ? "TUPLE item" : "LIST item")));
        break;
      case 0x5d: // EMPTY_LIST
        stack.push([]);
        break;
      case 0x7d: // EMPTY_DICT
        stack.push(new Map());
        break;
      case 0x64: {
        // DICT
        const items = popMark();
        if (items.length % 2 !== 0) throw fail(`DICT with an odd number of items`);
        const d = new Map<PyKey, Raw>();
        for (let i = 0; i < items.length; i += 2) d.set(key(items[i]!), value(items[i + 1]!, "dict value"));
        stack.push(d);
        break;
      }
      case 0x61: {
        // APPEND
        const v = value(pop(), "APPEND item");
        listOf(top(), "APPEND").push(v);
        break;
      }
      case 0x65: {
        // APPENDS
        const items = popMark().map((x) => value(x, "APPENDS item"));
        listOf(top(), "APPENDS").push(...items);
        break;
      }
      case 0x73: {
        // SETITEM
        const v = value(pop(), "SETITEM value");
        const k = key(pop());
        dictOf(top(), "SETITEM").set(k, v);
        break;
      }
      case 0x75: {
        // SETITEMS
        const items = popMark();
        if (items.length % 2 !== 0) throw fail(`SETITEMS with an odd number of items`);
        const d = dictOf(top(), "SETITEMS");
        for (let i = 0; i < items.length; i += 2) d.set(key(items[i]!), value(items[i + 1]!, "dict value"));
        break;
      }
      case 0x71: // BINPUT
        memo.set(u8(), top());
        break;
      case 0x72: // LONG_BINPUT
        memo.set(u32(), top());
        break;
      case 0x94: // MEMOIZE
        memo.set(memo.size, top());
        break;
      case 0x68: // BINGET
      case 0x6a: {
        // LONG_BINGET
        const i = op === 0x68 ? u8() : u32();
        if (!memo.has(i)) throw fail(`memo entry ${i} does not exist`);
        stack.push(memo.get(i)!);
        break;
      }
      case 0x63: {
        // GLOBAL "module\nname\n"
        const module = line();
        const name = line();
        stack.push(global(module, name));
        break;
      }
      case 0x93: {
        // STACK_GLOBAL
        const name = pop();
        const module = pop();
        if (typeof module !== "string" || typeof name !== "string") throw fail(`STACK_GLOBAL needs two strings`);
        stack.push(global(module, name));
        break;
      }
      case 0x51: {
        // BINPERSID
        const pid = pop();
        if (!Array.isArray(pid) || pid[0] !== "storage" || pid.length < 5) throw fail(`unsupported persistent id ${describe(pid)}`);
        const [, cls, k, , numel] = pid;
        if (!(cls instanceof PyGlobal) || !cls.qualname.startsWith("torch.") || !Object.hasOwn(STORAGES, cls.qualname.slice(6))) throw fail(`persistent id with a storage type that is not a torch storage class`);
        if (typeof k !== "string" || typeof numel !== "number" || !Number.isSafeInteger(numel) || numel < 0) throw fail(`malformed storage persistent id ${describe(pid)}`);
        const [dtype, itemSize] = STORAGES[cls.qualname.slice(6)]!;
        stack.push(new StorageRef(k, dtype, itemSize, numel));
        break;
      }
      case 0x52: {
        // REDUCE
        const args = pop();
        const fn = pop();
        if (!(fn instanceof PyGlobal)) throw fail(`REDUCE on something that is not an allowed global`);
        if (!Array.isArray(args)) throw fail(`REDUCE ${fn.qualname} without an argument tuple`);
        stack.push(call(fn.qualname, args));
        break;
      }
      case 0x62: {
        // BUILD: only the attribute dict of an OrderedDict (state_dict._metadata), which is dropped
        const state = pop();
        const obj = top();
        if (obj instanceof Map && (state === null || state instanceof Map)) break;
        if (obj instanceof TorchTensor && (state === null || (state instanceof Map && state.size === 0))) break;
        throw fail(`BUILD on an unsupported object at byte ${at}`);
      }
      default:
        throw fail(`unsupported pickle opcode 0x${op.toString(16).padStart(2, "0")}${op >= 0x20 && op < 0x7f ? ` ('${String.fromCharCode(op)}')` : ""} at byte ${at}`);
    }
  }

  /** The result must be plain values and tensors: a global or storage left over was never consumed. */
  function checked(x: Raw): PyValue {
    const walk = (v: Raw): void => {
      if (v instanceof PyGlobal) throw fail(`the result holds a reference to ${v.qualname}, not a value`);
      if (v instanceof StorageRef) throw fail(`the result holds a bare storage ("${v.key}"), not a tensor`);
      if (Array.isArray(v)) v.forEach(walk);
      else if (v instanceof Map) for (const x of v.values()) walk(x);
    };
    walk(x);
    return x as PyValue;
  }

  function call(fn: string, args: Raw[]): Raw {
    switch (fn) {
      case "collections.OrderedDict": {
        const d = new Map<PyKey, Raw>();
        if (args.length === 0) return d;
        const pairs = args[0];
        if (args.length === 1 && Array.isArray(pairs)) {
          for (const p of pairs) {
            if (!Array.isArray(p) || p.length !== 2) throw fail(`OrderedDict argument is not a list of pairs`);
            d.set(key(p[0]!), p[1]!);
          }
          return d;
        }
        throw fail(`unsupported OrderedDict arguments`);
      }
      case "torch._utils._rebuild_tensor":
      case "torch._utils._rebuild_tensor_v2": {
        const [storage, offset, size, stride] = args;
        if (!(storage instanceof StorageRef)) throw fail(`${fn}: the first argument is not a storage`);
        const ints = (x: StackItem, what: string): number[] => {
          if (!Array.isArray(x) || !x.every((v) => typeof v === "number" && Number.isSafeInteger(v) && v >= 0)) throw fail(`${fn}: ${what} must be a tuple of non-negative ints, got ${describe(x)}`);
          return x as number[];
        };
        if (typeof offset !== "number" || !Number.isSafeInteger(offset) || offset < 0) throw fail(`${fn}: storage offset must be a non-negative int`);
        return rebuildTensor(opts.loadStorage(storage), storage, offset, [...ints(size!, "size")], [...ints(stride!, "stride")], `${source}: storage "${storage.key}"`);
      }
      case "torch._utils._rebuild_parameter":
      case "torch._utils._rebuild_parameter_with_state": {
        const data = args[0];
        if (!(data instanceof TorchTensor)) throw fail(`${fn}: the first argument is not a tensor`);
        return data;
      }
      default:
        throw fail(`${fn} cannot be called`);
    }
  }
}

function describe(v: unknown): string {
  try {
    const s = JSON.stringify(v, (_k, x: unknown) => (typeof x === "bigint" ? x.toString() : x instanceof PyGlobal ? x.qualname : x));
    return s === undefined ? String(v) : s.length > 80 ? `${s.slice(0, 77)}...` : s;
  } catch {
    return String(v);
  }
}

// ───────────────────────── zip ─────────────────────────

interface ZipEntry {
  name: string;
  method: number;
  compressedSize: number;
  size: number;
  localHeaderOffset: number;
}

/** The central directory of a zip file (zip64 included) and stored/deflated entry reads. */
class ZipReader {
  readonly entries = new Map<string, ZipEntry>();
  private readonly fileSize: number;

  constructor(
    private readonly fd: number,
    private readonly path: string,
  ) {
    this.fileSize = fstatSync(fd).size;
    const head = this.bytes(0, Math.min(4, this.fileSize));
    if (head.length < 4 || head[0] !== 0x50 || head[1] !== 0x4b) {
      throw new SelfreportError(`${path}: not a zip file; only the zip format of torch.save (PyTorch ≥ 1.6) is supported: re-save it with a recent torch, or convert it to safetensors`);
    }
    const tailLen = Math.min(this.fileSize, 22 + 0xffff);
    const tailStart = this.fileSize - tailLen;
    const tail = this.bytes(tailStart, tailLen);
    const tv = new DataView(tail.buffer, tail.byteOffset, tail.byteLength);
    let eocd = -1;
    for (let i = tail.length - 22; i >= 0; i--) {
      if (tv.getUint32(i, true) === 0x06054b50) {
        eocd = i;
        break;
      }
    }
    if (eocd < 0) throw this.bad("no end-of-central-directory record");
    let count = tv.getUint16(eocd + 10, true);
    let cdSize = tv.getUint32(eocd + 12, true);
    let cdOffset = tv.getUint32(eocd + 16, true);
    if (count === 0xffff || cdSize === 0xffffffff || cdOffset === 0xffffffff) {
      const loc = eocd - 20;
      if (loc < 0 || tv.getUint32(loc, true) !== 0x07064b50) throw this.bad("zip64 end-of-central-directory locator missing");
      const z64 = this.bytes(num(tv.getBigUint64(loc + 8, true)), 56);
      const zv = new DataView(z64.buffer, z64.byteOffset, z64.byteLength);
      if (zv.getUint32(0, true) !== 0x06064b50) throw this.bad("bad zip64 end-of-central-directory record");
      count = num(zv.getBigUint64(32, true));
      cdSize = num(zv.getBigUint64(40, true));
      cdOffset = num(zv.getBigUint64(48, true));
    }
    if (cdOffset + cdSize > this.fileSize) throw this.bad("central directory outside the file");
    const cd = this.bytes(cdOffset, cdSize);
    const cv = new DataView(cd.buffer, cd.byteOffset, cd.byteLength);
    let p = 0;
    for (let i = 0; i < count; i++) {
      if (p + 46 > cd.length || cv.getUint32(p, true) !== 0x02014b50) throw this.bad(`bad central directory entry ${i}`);
      const method = cv.getUint16(p + 10, true);
      let compressedSize = cv.getUint32(p + 20, true);
      let size = cv.getUint32(p + 24, true);
      const nameLen = cv.getUint16(p + 28, true);
      const extraLen = cv.getUint16(p + 30, true);
      const commentLen = cv.getUint16(p + 32, true);
      let localHeaderOffset = cv.getUint32(p + 42, true);
      if (p + 46 + nameLen + extraLen > cd.length) throw this.bad(`central directory entry ${i} is truncated`);
      const name = new TextDecoder().decode(cd.subarray(p + 46, p + 46 + nameLen));
      // zip64 extra field: the 64-bit values of the fields that are 0xFFFFFFFF, in this order
      for (let e = p + 46 + nameLen; e + 4 <= p + 46 + nameLen + extraLen; ) {
        const id = cv.getUint16(e, true);
        const len = cv.getUint16(e + 2, true);
        if (id === 0x0001) {
          let q = e + 4;
          const next = (): number => {
            if (q + 8 > e + 4 + len) throw this.bad(`zip64 extra field of "${name}" is too short`);
            const v = num(cv.getBigUint64(q, true));
            q += 8;
            return v;
          };
          if (size === 0xffffffff) size = next();
          if (compressedSize === 0xffffffff) compressedSize = next();
          if (localHeaderOffset === 0xffffffff) localHeaderOffset = next();
        }
        e += 4 + len;
      }
      this.entries.set(name, { name, method, compressedSize, size, localHeaderOffset });
      p += 46 + nameLen + extraLen + commentLen;
    }
  }

  /** The uncompressed bytes of an entry. */
  read(e: ZipEntry): Uint8Array {
    const h = this.bytes(e.localHeaderOffset, 30);
    const hv = new DataView(h.buffer, h.byteOffset, h.byteLength);
    if (hv.getUint32(0, true) !== 0x04034b50) throw this.bad(`bad local header for "${e.name}"`);
    const start = e.localHeaderOffset + 30 + hv.getUint16(26, true) + hv.getUint16(28, true);
    if (start + e.compressedSize > this.fileSize) throw this.bad(`entry "${e.name}" reaches past the end of the file`);
    const raw = this.bytes(start, e.compressedSize);
    if (e.method === 0) {
      if (e.compressedSize !== e.size) throw this.bad(`stored entry "${e.name}" has different sizes`);
      return raw;
    }
    if (e.method === 8) {
      let out: Buffer;
      try {
        out = inflateRawSync(raw);
      } catch (err) {
        throw this.bad(`entry "${e.name}" does not inflate (${(err as Error).message})`);
      }
      if (out.byteLength !== e.size) throw this.bad(`entry "${e.name}" inflates to ${out.byteLength} bytes, expected ${e.size}`);
      return out;
    }
    throw this.bad(`entry "${e.name}" uses compression method ${e.method} (only stored and deflated are supported)`);
  }

  private bytes(position: number, length: number): Uint8Array {
    if (position < 0 || position + length > this.fileSize) throw this.bad(`read of ${length} bytes at ${position} is outside the file`);
    const out = new Uint8Array(length);
    let off = 0;
    while (off < length) {
      const got = readSync(this.fd, out, off, Math.min(length - off, 1 << 30), position + off);
      if (got === 0) throw this.bad(`unexpected end of file`);
      off += got;
    }
    return out;
  }

  private bad(problem: string): SelfreportError {
    return new SelfreportError(`${this.path}: corrupt zip archive: ${problem}`);
  }
}

function num(v: bigint): number {
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw new SelfreportError(`zip value ${v} is too large`);
  return Number(v);
}
