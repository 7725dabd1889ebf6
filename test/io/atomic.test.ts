import { test } from "node:test";
import assert from "node:assert/strict";
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ensureDir, writeFileAtomic, writeJsonAtomic } from "../../src/io/atomic.ts";
import { SelfreportError } from "../../src/errors.ts";

const tmp = (): string => mkdtempSync(join(tmpdir(), "selfreport-atomic-"));

test("writeFileAtomic writes strings as UTF-8, bytes and chunk lists, and leaves no temporary file", () => {
  const dir = tmp();
  writeFileAtomic(join(dir, "a.txt"), "héllo ✓\n");
  assert.equal(readFileSync(join(dir, "a.txt"), "utf8"), "héllo ✓\n");
  writeFileAtomic(join(dir, "b.bin"), new Uint8Array([0, 1, 255]));
  assert.deepEqual([...readFileSync(join(dir, "b.bin"))], [0, 1, 255]);
  // a view into a larger buffer writes only the view
  const big = new Uint8Array([9, 9, 1, 2, 3, 9]);
  writeFileAtomic(join(dir, "c.bin"), [big.subarray(2, 5), new Uint8Array([4])]);
  assert.deepEqual([...readFileSync(join(dir, "c.bin"))], [1, 2, 3, 4]);
  writeFileAtomic(join(dir, "empty"), "");
  assert.equal(readFileSync(join(dir, "empty"), "utf8"), "");
  assert.deepEqual(readdirSync(dir).sort(), ["a.txt", "b.bin", "c.bin", "empty"]);
});

test("writeFileAtomic replaces an existing file and creates missing parent folders", () => {
  const dir = tmp();
  const p = join(dir, "x", "y", "f.txt");
  writeFileAtomic(p, "one");
  writeFileAtomic(p, "two");
  assert.equal(readFileSync(p, "utf8"), "two");
  assert.deepEqual(readdirSync(join(dir, "x", "y")), ["f.txt"]);
});

test("writeFileAtomic: on failure the old file is intact, the temporary file removed, the error a SelfreportError naming the path", () => {
  const dir = tmp();
  const p = join(dir, "target");
  writeFileSync(p, "old");
  // the target path is a folder: the rename fails after the temporary file was written
  const asDir = join(dir, "folder");
  mkdirSync(join(asDir, "inside"), { recursive: true });
  assert.throws(
    () => writeFileAtomic(asDir, "new"),
    (e: unknown) => e instanceof SelfreportError && e.message.includes(asDir),
  );
  assert.deepEqual(readdirSync(dir).sort(), ["folder", "target"]);
  assert.equal(readFileSync(p, "utf8"), "old");
});

test("writeFileAtomic in a read-only folder fails cleanly", { skip: process.getuid?.() === 0 ? "root ignores folder permissions" : false }, () => {
  const dir = tmp();
  const ro = join(dir, "ro");
  mkdirSync(ro);
  chmodSync(ro, 0o500);
  try {
    assert.throws(() => writeFileAtomic(join(ro, "f"), "x"), SelfreportError);
    assert.deepEqual(readdirSync(ro), []);
  } finally {
    chmodSync(ro, 0o700);
  }
});

test("writeJsonAtomic writes pretty JSON with a trailing newline", () => {
  const dir = tmp();
  const p = join(dir, "v.json");
  writeJsonAtomic(p, { a: 1, b: [true, null], c: "ü" });
  assert.equal(readFileSync(p, "utf8"), '{\n  "a": 1,\n  "b": [\n    true,\n    null\n  ],\n  "c": "ü"\n}\n');
  assert.throws(() => writeJsonAtomic(join(dir, "u.json"), undefined), SelfreportError);
  assert.equal(existsSync(join(dir, "u.json")), false);
});

test("ensureDir creates nested folders and accepts existing ones", () => {
  const dir = tmp();
  ensureDir(join(dir, "a", "b"));
  ensureDir(join(dir, "a", "b"));
  assert.ok(existsSync(join(dir, "a", "b")));
  writeFileSync(join(dir, "file"), "");
  assert.throws(() => ensureDir(join(dir, "file", "sub")), SelfreportError);
});
