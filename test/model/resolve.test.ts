import { test, afterEach } from "node:test";
import assert from "node:assert/strict";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, utimesSync, writeFileSync } from "node:fs";
import { homedir, tmpdir } from "node:os";
import { join } from "node:path";
import { hfHubCache, repoRoot, resolveModelDir } from "../../src/model/resolve.ts";
import { SelfreportError } from "../../src/errors.ts";

const ENV_KEYS = ["HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HOME", "XDG_CACHE_HOME"] as const;
const saved = Object.fromEntries(ENV_KEYS.map((k) => [k, process.env[k]]));

afterEach(() => {
  for (const k of ENV_KEYS) {
    if (saved[k] === undefined) delete process.env[k];
    else process.env[k] = saved[k];
  }
});

/** Points every Hugging Face variable at a fresh empty cache; returns the hub folder. */
function freshCache(): string {
  const hub = join(mkdtempSync(join(tmpdir(), "selfreport-hf-")), "hub");
  mkdirSync(hub, { recursive: true });
  for (const k of ENV_KEYS) delete process.env[k];
  process.env["HF_HUB_CACHE"] = hub;
  return hub;
}

/** A cached snapshot `models--<repo>/snapshots/<rev>` with the given files. */
function snapshot(hub: string, repoFolder: string, rev: string, files: string[] = ["config.json", "model.safetensors"]): string {
  const dir = join(hub, repoFolder, "snapshots", rev);
  mkdirSync(dir, { recursive: true });
  for (const f of files) writeFileSync(join(dir, f), "{}");
  return dir;
}

function refMain(hub: string, repoFolder: string, rev: string): void {
  mkdirSync(join(hub, repoFolder, "refs"), { recursive: true });
  writeFileSync(join(hub, repoFolder, "refs", "main"), rev + "\n");
}

test("a directory with config.json is used as is; one without is refused", () => {
  const dir = mkdtempSync(join(tmpdir(), "selfreport-model-"));
  assert.throws(() => resolveModelDir(dir), (e: unknown) => e instanceof SelfreportError && e.message.includes(dir) && e.message.includes("config.json"));
  writeFileSync(join(dir, "config.json"), "{}");
  assert.equal(resolveModelDir(dir), dir);
  assert.throws(() => resolveModelDir(join(dir, "nope", "x")), (e: unknown) => e instanceof SelfreportError && e.message.includes("does not exist"));
  assert.throws(() => resolveModelDir("  "), SelfreportError);
});

test("gpt2 and gpt2-small are found as models--gpt2 or models--openai-community--gpt2, preferring refs/main", () => {
  const hub = freshCache();
  snapshot(hub, "models--openai-community--gpt2", "aaaa");
  const main = snapshot(hub, "models--openai-community--gpt2", "bbbb");
  refMain(hub, "models--openai-community--gpt2", "bbbb");
  for (const name of ["gpt2", "gpt2-small", "openai-community/gpt2"]) assert.equal(resolveModelDir(name), main, name);

  const bare = snapshot(hub, "models--gpt2", "cccc");
  assert.equal(resolveModelDir("gpt2"), bare, "the bare name's folder is tried first");
  assert.equal(resolveModelDir("openai-community/gpt2"), main);
});

test("without refs/main: a snapshot with model.safetensors, else the newest with config.json", () => {
  const hub = freshCache();
  const old = snapshot(hub, "models--gpt2-medium", "r1", ["config.json"]);
  const newer = snapshot(hub, "models--gpt2-medium", "r2", ["config.json"]);
  snapshot(hub, "models--gpt2-medium", "r3", ["vocab.json"]); // no config.json: never chosen
  utimesSync(old, new Date(1_000_000_000_000), new Date(1_000_000_000_000));
  utimesSync(newer, new Date(1_700_000_000_000), new Date(1_700_000_000_000));
  assert.equal(resolveModelDir("gpt2-medium"), newer);
  const withWeights = snapshot(hub, "models--openai-community--gpt2-medium", "w", ["config.json", "model.safetensors"]);
  assert.equal(resolveModelDir("gpt2-medium"), newer, "the first alias with any snapshot wins");
  assert.equal(resolveModelDir("openai-community/gpt2-medium"), withWeights);
  const best = snapshot(hub, "models--gpt2-medium", "r0", ["config.json", "model.safetensors"]);
  utimesSync(best, new Date(1_000_000_000_000), new Date(1_000_000_000_000));
  assert.equal(resolveModelDir("gpt2-medium"), best);
  // refs/main naming a snapshot without config.json falls back to the others
  refMain(hub, "models--gpt2-medium", "r3");
  assert.equal(resolveModelDir("gpt2-medium"), best);
});

test("any org/name maps to models--org--name", () => {
  const hub = freshCache();
  const dir = snapshot(hub, "models--someone--tiny-gpt2", "0123");
  refMain(hub, "models--someone--tiny-gpt2", "0123");
  assert.equal(resolveModelDir("someone/tiny-gpt2"), dir);
});

test("the cache folder comes from HF_HUB_CACHE, HUGGINGFACE_HUB_CACHE, HF_HOME/hub, XDG_CACHE_HOME, ~/.cache", () => {
  assert.equal(hfHubCache({ HF_HUB_CACHE: "/a/hub", HF_HOME: "/b" }), "/a/hub");
  assert.equal(hfHubCache({ HUGGINGFACE_HUB_CACHE: "/old", HF_HOME: "/b" }), "/old");
  assert.equal(hfHubCache({ HF_HOME: "/b" }), "/b/hub");
  assert.equal(hfHubCache({ HF_HOME: "", XDG_CACHE_HOME: "/x" }), "/x/huggingface/hub");
  assert.equal(hfHubCache({}), join(homedir(), ".cache", "huggingface", "hub"));
  assert.equal(hfHubCache({ HF_HOME: "~/hf" }), join(homedir(), "hf", "hub"));

  const home = mkdtempSync(join(tmpdir(), "selfreport-hfhome-"));
  for (const k of ENV_KEYS) delete process.env[k];
  process.env["HF_HOME"] = home;
  const dir = snapshot(join(home, "hub"), "models--distilbert--distilgpt2", "d1");
  assert.equal(resolveModelDir("distilgpt2"), dir);
});

test("the repository root is found from this file, and brown-gpt2-mini is looked for in <root>/models", () => {
  const root = repoRoot();
  assert.equal((JSON.parse(readFileSync(join(root, "package.json"), "utf8")) as { name: string }).name, "selfreport");
  freshCache();
  const shipped = join(root, "models", "brown-gpt2-mini");
  if (existsSync(join(shipped, "config.json"))) {
    assert.equal(resolveModelDir("brown-gpt2-mini"), shipped);
  } else {
    assert.throws(() => resolveModelDir("brown-gpt2-mini"), (e: unknown) => e instanceof SelfreportError && e.message.includes(shipped));
  }
});

test("when nothing is found, the error lists every place looked at and how to place the files", () => {
  const hub = freshCache();
  mkdirSync(join(hub, "models--gpt2", "snapshots", "empty"), { recursive: true });
  assert.throws(
    () => resolveModelDir("gpt2-small"),
    (e: unknown) => {
      assert.ok(e instanceof SelfreportError);
      const m = e.message;
      for (const part of [
        join(repoRoot(), "models", "gpt2-small"),
        join(hub, "models--gpt2", "snapshots"),
        join(hub, "models--openai-community--gpt2", "snapshots"),
        "huggingface-cli download openai-community/gpt2 --local-dir DIR",
        "--model DIR",
        "never downloads",
      ]) {
        assert.ok(m.includes(part), `${JSON.stringify(m)} should mention ${part}`);
      }
      assert.ok(!m.includes("\n"), "one line");
      return true;
    },
  );
  assert.throws(() => resolveModelDir("org/name"), (e: unknown) => e instanceof SelfreportError && e.message.includes(join(hub, "models--org--name")) && e.message.includes("huggingface-cli download org/name"));
  assert.throws(() => resolveModelDir("constructor"), (e: unknown) => e instanceof SelfreportError && e.message.includes("models--constructor"));
  assert.throws(() => resolveModelDir("../escape"), (e: unknown) => e instanceof SelfreportError && e.message.includes("does not exist"));
});
