/**
 * The package as another project gets it: `npm pack` this repository (dist/ as built), install the
 * tarball into a fresh temporary project (`npm install --omit=dev --prefer-offline`: dependencies
 * from the npm cache or the registry; the install script builds the native addon there), then, in
 * that project:
 *   - consumer.mjs imports only "selfreport", loads the shipped model brown-gpt2-mini, caches
 *     blocks.2.mlp.hook_post, zero-ablates one neuron with a hook (the logits change, the neuron
 *     reads 0 after), checks that decomposeResid sums to resid_post to 1e-5, and that deep imports
 *     are refused by the exports map;
 *   - the installed CLI's `selfreport activations` writes the same hook for the same prompts, and its
 *     values equal runWithCache's exactly (bit for bit);
 *   - check.ts type-checks against the installed declarations (a wrong call must be a type error).
 * Slow (about two minutes: the install and the native build).
 */
import { test, after } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { findRepoRoot } from "../../src/tensor/backend/native.ts";
import { readSafetensors } from "../../src/io/safetensors.ts";

const repo = findRepoRoot();
if (repo === null) throw new Error("cannot find the selfreport repository root from the test file");
const root = mkdtempSync(join(tmpdir(), "selfreport-packed-"));
after(() => {
  if (process.env["SELFREPORT_KEEP_TMP"] === "1") console.log(`packed-install: kept ${root}`);
  else rmSync(root, { recursive: true, force: true });
});

const HOOK = "blocks.2.mlp.hook_post";
const NEURON = 7;
const PROMPTS = ["The jury said the election was conducted", "It was a cold morning in"];

const CONSUMER = `
import { writeFileSync } from "node:fs";
import { HookedTransformer, getActName, ActivationCache } from "selfreport";

const out = {};
const model = HookedTransformer.fromPretrained("brown-gpt2-mini");
out.dir = model.dir;
const prompts = ${JSON.stringify(PROMPTS)};
const hook = getActName("post", 2);
out.hook = hook;

// every hook cached (the default): the residual decomposition needs embed, attn_out and mlp_out
const { logits, cache } = model.runWithCache(prompts);
out.isCache = cache instanceof ActivationCache;
out.postShape = cache.get(hook).shape;
writeFileSync("api-post.bin", Buffer.from(cache.get(hook).data.buffer));
writeFileSync("api-logits.bin", Buffer.from(logits.data.buffer));

// only the hook asked for
const only = model.runWithCache(prompts, { names: [hook] });
out.onlyNames = [...only.cache.keys()];
out.sameAsFull = Buffer.compare(Buffer.from(only.cache.get(hook).data.buffer), Buffer.from(cache.get(hook).data.buffer)) === 0;

// zero-ablate one neuron at every position
const n = ${NEURON};
const ablate = [hook, (post) => { const x = post.clone(); for (let i = n; i < x.size; i += x.shape[2]) x.data[i] = 0; return x; }];
const ablated = model.runWithHooks(prompts, { fwdHooks: [ablate] });
let maxChange = 0;
for (let i = 0; i < logits.size; i++) maxChange = Math.max(maxChange, Math.abs(ablated.logits.data[i] - logits.data[i]));
out.ablationMaxLogitChange = maxChange;
out.cleanNeuron = cache.get(hook).get(0, 3, n);
const seen = model.runWithCache(prompts, { names: [hook], fwdHooks: [ablate] });
out.ablatedNeuron = seen.cache.get(hook).get(0, 3, n);

// decomposeResid(nLayers) sums to the final resid_post
const L = model.cfg.nLayers;
const [stack, labels] = cache.decomposeResid(L, { returnLabels: true });
const post = cache.get("resid_post", L - 1);
let maxDiff = 0;
for (let i = 0; i < post.size; i++) {
  let s = 0;
  for (let c = 0; c < stack.shape[0]; c++) s += stack.data[c * post.size + i];
  maxDiff = Math.max(maxDiff, Math.abs(s - post.data[i]));
}
out.decomposeLabels = labels;
out.decomposeMaxDiff = maxDiff;

// the exports map: internal files are not importable
try { await import("selfreport/dist/src/model/load.js"); out.deepImport = "allowed"; } catch (e) { out.deepImport = e.code; }
out.backend = (await import("selfreport")).getBackend().name;
console.log(JSON.stringify(out));
`;

const CHECK_TS = `
import { HookedTransformer, type Tensor, type Hook } from "selfreport";
const model: HookedTransformer = HookedTransformer.fromPretrained("brown-gpt2-mini", { weights: "tl" });
const { logits, cache } = model.runWithCache("The cat", { names: ["blocks.2.mlp.hook_post"] });
const post: Tensor = cache.get("post", 2);
const v: number = post.get(0, -1, 3);
const hooks: Hook[] = [["blocks.0.hook_resid_post", (x: Tensor) => x]];
const r = model.runWithHooks("The cat", { fwdHooks: hooks });
const text: string = model.generate("The", { maxNewTokens: 2 }).text;
// @ts-expect-error names must be hook names, not a number
model.runWithCache("The cat", { names: 3 });
void [logits, v, r, text];
`;

function sh(cmd: string, args: readonly string[], cwd: string, timeoutMs: number): string {
  const r = spawnSync(cmd, args, { cwd, encoding: "utf8", timeout: timeoutMs, env: { ...process.env, npm_config_audit: "false", npm_config_fund: "false", npm_config_update_notifier: "false" } });
  assert.equal(r.status, 0, `${cmd} ${args.join(" ")} failed (exit ${r.status}${r.error ? `, ${r.error.message}` : ""}):\n${(r.stderr || r.stdout).trim().split("\n").slice(-15).join("\n")}`);
  return r.stdout;
}

test("the packed package installs into a fresh project and its public API works there", { timeout: 900_000 }, () => {
  const t0 = Date.now();
  sh("npm", ["pack", "--ignore-scripts", "--pack-destination", root], repo, 300_000);
  const tarball = readdirSync(root).find((f) => f.endsWith(".tgz"));
  assert.ok(tarball !== undefined, "npm pack wrote no tarball");
  const tPack = Date.now();

  const project = join(root, "consumer");
  sh("mkdir", ["-p", project], root, 10_000);
  writeFileSync(join(project, "package.json"), JSON.stringify({ name: "consumer", version: "1.0.0", private: true, type: "module" }));
  sh("npm", ["install", "--omit=dev", "--prefer-offline", "--no-audit", "--no-fund", join(root, tarball)], project, 600_000);
  const tInstall = Date.now();

  const installed = JSON.parse(readFileSync(join(project, "node_modules", "selfreport", "package.json"), "utf8")) as { files?: string[] };
  assert.ok(Array.isArray(installed.files));

  writeFileSync(join(project, "consumer.mjs"), CONSUMER);
  const out = JSON.parse(sh(process.execPath, ["consumer.mjs"], project, 300_000).trim().split("\n").pop()!) as {
    dir: string; hook: string; isCache: boolean; postShape: number[]; onlyNames: string[]; sameAsFull: boolean;
    ablationMaxLogitChange: number; cleanNeuron: number; ablatedNeuron: number; decomposeLabels: string[]; decomposeMaxDiff: number;
    deepImport: string; backend: string;
  };
  assert.equal(out.dir, join(project, "node_modules", "selfreport", "models", "brown-gpt2-mini"), "the shipped model is found inside the installed package");
  assert.equal(out.hook, HOOK);
  assert.ok(out.isCache);
  assert.deepEqual(out.onlyNames, [HOOK], "names limits the cache");
  assert.ok(out.sameAsFull, "caching one hook gives the same values as caching all");
  assert.ok(out.ablationMaxLogitChange > 1e-4, `zero-ablating neuron ${NEURON} changed the logits by at most ${out.ablationMaxLogitChange}`);
  assert.notEqual(out.cleanNeuron, 0);
  assert.equal(out.ablatedNeuron, 0, "the cache after the ablation hook sees the neuron at 0");
  assert.deepEqual(out.decomposeLabels, ["embed", "pos_embed", "0_attn_out", "0_mlp_out", "1_attn_out", "1_mlp_out", "2_attn_out", "2_mlp_out", "3_attn_out", "3_mlp_out"]);
  assert.ok(out.decomposeMaxDiff < 1e-5, `decomposeResid sums to resid_post within ${out.decomposeMaxDiff}`);
  assert.equal(out.deepImport, "ERR_PACKAGE_PATH_NOT_EXPORTED");

  // The installed CLI writes the same activations, bit for bit.
  sh(process.execPath, [join("node_modules", ".bin", "selfreport"), "activations", "--model", "brown-gpt2-mini", ...PROMPTS.flatMap((p) => ["--prompt", p]), "--hook", HOOK, "--out", "cli.safetensors"], project, 300_000);
  const cli = readSafetensors(join(project, "cli.safetensors")).tensors;
  const cliPost = cli.get(HOOK)!;
  assert.deepEqual(cliPost.shape, out.postShape);
  assert.ok(Buffer.from((cliPost.data as Float32Array).buffer).equals(readFileSync(join(project, "api-post.bin"))), "runWithCache and `selfreport activations` differ");
  assert.ok(Buffer.from((cli.get("logits")!.data as Float32Array).buffer).equals(readFileSync(join(project, "api-logits.bin"))), "the logits differ from the CLI's");

  // The declarations type-check a consumer, and are real types (a wrong call is an error).
  writeFileSync(join(project, "check.ts"), CHECK_TS);
  writeFileSync(join(project, "tsconfig.json"), JSON.stringify({ compilerOptions: { module: "NodeNext", moduleResolution: "NodeNext", target: "ES2022", strict: true, noEmit: true, skipLibCheck: true, types: [] }, files: ["check.ts"] }));
  sh(process.execPath, [join(repo, "node_modules", "typescript", "bin", "tsc"), "-p", "tsconfig.json"], project, 300_000);
  console.log(`packed-install: pack ${((tPack - t0) / 1000).toFixed(1)} s, install ${((tInstall - tPack) / 1000).toFixed(1)} s, checks ${((Date.now() - tInstall) / 1000).toFixed(1)} s; backend ${out.backend}; ablation max |Δlogit| ${out.ablationMaxLogitChange.toExponential(3)}; decomposeResid max error ${out.decomposeMaxDiff.toExponential(2)}`);
});
