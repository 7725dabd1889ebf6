/**
 * Finds a model directory from what a researcher types after --model. Never downloads.
 *
 *   an existing directory        used as is (it must hold config.json)
 *   brown-gpt2-mini, any name    <repo root>/models/<name>, when it holds config.json
 *   gpt2, gpt2-small (TL's name) the local Hugging Face cache, as models--gpt2 or models--openai-community--gpt2
 *   gpt2-medium/-large/-xl       likewise (bare and openai-community/ names)
 *   distilgpt2                   models--distilgpt2 or models--distilbert--distilgpt2
 *   org/name                     models--org--name
 *
 * The Hugging Face cache is $HF_HUB_CACHE, else $HUGGINGFACE_HUB_CACHE (its older name), else
 * $HF_HOME/hub, else $XDG_CACHE_HOME/huggingface/hub, else ~/.cache/huggingface/hub. A cached model
 * is `models--org--name/snapshots/<revision>/`; the revision named in `refs/main` is preferred,
 * otherwise a snapshot holding model.safetensors, otherwise the newest one with config.json.
 */
import { existsSync, readFileSync, readdirSync, statSync } from "node:fs";
import { homedir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { SelfreportError } from "../errors.ts";

/** Names that mean the same Hugging Face repository, in the order they are tried. */
const ALIASES: Record<string, string[]> = {
  gpt2: ["gpt2", "openai-community/gpt2"],
  "gpt2-small": ["gpt2", "openai-community/gpt2"],
  "openai-community/gpt2": ["openai-community/gpt2", "gpt2"],
  "gpt2-medium": ["gpt2-medium", "openai-community/gpt2-medium"],
  "openai-community/gpt2-medium": ["openai-community/gpt2-medium", "gpt2-medium"],
  "gpt2-large": ["gpt2-large", "openai-community/gpt2-large"],
  "openai-community/gpt2-large": ["openai-community/gpt2-large", "gpt2-large"],
  "gpt2-xl": ["gpt2-xl", "openai-community/gpt2-xl"],
  "openai-community/gpt2-xl": ["openai-community/gpt2-xl", "gpt2-xl"],
  distilgpt2: ["distilgpt2", "distilbert/distilgpt2"],
  "distilbert/distilgpt2": ["distilbert/distilgpt2", "distilgpt2"],
};

/** A model name: `name` or `org/name` (Hugging Face's allowed characters). */
const NAME = /^[A-Za-z0-9][\w.-]*(\/[A-Za-z0-9][\w.-]*)?$/;

/** The directory of the model named or located by `nameOrDir` (see the top of this file). */
export function resolveModelDir(nameOrDir: string): string {
  if (nameOrDir.trim() === "") throw new SelfreportError(`--model is empty: give a model directory or a name such as gpt2 or brown-gpt2-mini`);
  if (isDirectory(nameOrDir)) {
    if (!existsSync(join(nameOrDir, "config.json"))) {
      throw new SelfreportError(`${nameOrDir} is a directory but has no config.json (a model directory holds config.json, model.safetensors and the tokenizer files)`);
    }
    return nameOrDir;
  }
  if (!NAME.test(nameOrDir) || nameOrDir.includes("..")) {
    throw new SelfreportError(`model directory ${nameOrDir} does not exist (and it is not a model name such as gpt2 or org/name)`);
  }

  const looked: string[] = [];
  if (!nameOrDir.includes("/")) {
    const root = repoRoot();
    const local = join(root, "models", nameOrDir);
    if (existsSync(join(local, "config.json"))) return local;
    looked.push(local);
  }

  const cache = hfHubCache();
  const repos = Object.hasOwn(ALIASES, nameOrDir) ? ALIASES[nameOrDir]! : [nameOrDir];
  for (const repo of repos) {
    const repoDir = join(cache, `models--${repo.replace("/", "--")}`);
    const snap = pickSnapshot(repoDir);
    if (snap !== undefined) return snap;
    looked.push(`${join(repoDir, "snapshots")}/<revision>`);
  }

  const hfName = repos.find((r) => r.includes("/")) ?? nameOrDir;
  throw new SelfreportError(
    `model "${nameOrDir}" was not found on this machine: it is not a directory, and selfreport never downloads. Looked in: ${looked.join("; ")}. ` +
      `To use it: on a machine with network run \`huggingface-cli download ${hfName} --local-dir DIR\` ` +
      `(or \`huggingface-cli download ${hfName}\` to fill the cache at ${cache}, then copy that folder here), ` +
      `copy DIR to this machine and pass \`--model DIR\`; DIR must hold config.json, model.safetensors and vocab.json + merges.txt (or tokenizer.json). ` +
      `Set HF_HUB_CACHE or HF_HOME if your cache is elsewhere.`,
  );
}

/** The Hugging Face hub cache folder from the environment (see the top of this file). */
export function hfHubCache(env: NodeJS.ProcessEnv = process.env): string {
  const nonEmpty = (v: string | undefined): string | undefined => (v !== undefined && v !== "" ? v : undefined);
  const direct = nonEmpty(env["HF_HUB_CACHE"]) ?? nonEmpty(env["HUGGINGFACE_HUB_CACHE"]);
  if (direct !== undefined) return expandHome(direct);
  const hfHome = nonEmpty(env["HF_HOME"]) ?? join(nonEmpty(env["XDG_CACHE_HOME"]) ?? join(homedir(), ".cache"), "huggingface");
  return join(expandHome(hfHome), "hub");
}

/** The snapshot folder to use in `models--org--name`, or undefined when none holds config.json. */
function pickSnapshot(repoDir: string): string | undefined {
  const snapshots = join(repoDir, "snapshots");
  if (!isDirectory(snapshots)) return undefined;
  const refMain = join(repoDir, "refs", "main");
  if (existsSync(refMain)) {
    const rev = readFileSync(refMain, "utf8").trim();
    const dir = join(snapshots, rev);
    if (rev !== "" && !rev.includes("/") && existsSync(join(dir, "config.json"))) return dir;
  }
  const candidates = readdirSync(snapshots)
    .map((rev) => join(snapshots, rev))
    .filter((dir) => existsSync(join(dir, "config.json")))
    .map((dir) => ({ dir, weights: existsSync(join(dir, "model.safetensors")), mtime: statSync(dir).mtimeMs }))
    .sort((a, b) => Number(b.weights) - Number(a.weights) || b.mtime - a.mtime || (a.dir < b.dir ? -1 : 1));
  return candidates[0]?.dir;
}

let cachedRoot: string | undefined;

/**
 * The repository root: the nearest folder above this file whose package.json is named "selfreport"
 * (this file runs from src/model/ under tsx/deno and from dist/src/model/ after tsc).
 */
export function repoRoot(): string {
  if (cachedRoot !== undefined) return cachedRoot;
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    const pkg = join(dir, "package.json");
    if (existsSync(pkg)) {
      try {
        if ((JSON.parse(readFileSync(pkg, "utf8")) as { name?: unknown }).name === "selfreport") return (cachedRoot = dir);
      } catch {
        // not ours (or unreadable): keep walking up
      }
    }
    const parent = dirname(dir);
    if (parent === dir) throw new SelfreportError(`cannot find the selfreport package root above ${fileURLToPath(import.meta.url)}`);
    dir = parent;
  }
}

function isDirectory(p: string): boolean {
  try {
    return statSync(p).isDirectory();
  } catch {
    return false;
  }
}

function expandHome(p: string): string {
  return p === "~" || p.startsWith("~/") ? join(homedir(), p.slice(1)) : resolve(p);
}
