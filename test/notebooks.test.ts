/**
 * Executes every notebook in notebooks/ headless (`jupyter nbconvert --to notebook --execute`, the
 * Deno kernel) and fails on any cell error.
 *
 * Before that it builds what the notebooks read, small: a model (the shipped models/brown-gpt2-mini
 * when its model.safetensors exists, else a tiny random GPT-2 from makeTinyRun with GPT-2's
 * tokenizer files), a 240-example Brown dataset for a suggested neuron, a frozen and an unfrozen
 * regression run, and some of their analyses (as `npm run demo` does, with small sizes; the
 * notebooks compute the others, so that both branches of each loading cell run: see CASES). Then
 * it executes 00, 01 and 02 on both runs, and 03 on the unfrozen run: six notebook runs. Each must
 * run every code cell without error, show its plots, and print what the library says about the same
 * summary (the verdict, the "not run" command).
 *
 * Needs jupyter-nbconvert and the Deno kernel; without them the test fails and says to run
 * `bash scripts/setup.sh`.
 */
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, relative } from "node:path";
import { findRepoRoot } from "../src/tensor/backend/native.ts";
import { loadModel } from "../src/model/load.ts";
import { loadTokenizer, writeTokenizerFiles } from "../src/model/tokenizer.ts";
import { loadCorpus } from "../src/data/corpus.ts";
import { layerNeuronStats, suggestTargets } from "../src/lm/neurons.ts";
import { buildDataset, writeDataset } from "../src/selfreport/dataset.ts";
import { train, TRAIN_DEFAULTS, type TrainOptions } from "../src/selfreport/train.ts";
import { loadAnalysisContext, writeAnalysisOutput } from "../src/analysis/context.ts";
import { weightsAnalysis, weightsPlots } from "../src/analysis/weights.ts";
import { patchingAnalysis, patchingPlots } from "../src/analysis/patching.ts";
import { residualAnalysis, residualPlots } from "../src/analysis/residual.ts";
import { readAnalysis } from "../src/report/html.ts";
import { weightsVerdict, patchingVerdict, residualVerdict } from "../src/report/verdicts.ts";
import { makeTinyRun } from "./helpers/run-fixture.ts";

process.env["SELFREPORT_QUIET"] = "1";
const repo = findRepoRoot();
if (repo === null) throw new Error("cannot find the selfreport repository root from the test file");
const notebooksDir = join(repo, "notebooks");
const root = mkdtempSync(join(tmpdir(), "selfreport-notebooks-"));
after(() => {
  if (process.env["SELFREPORT_KEEP_TMP"] === "1") console.log(`notebooks: kept ${root}`);
  else rmSync(root, { recursive: true, force: true });
});

const SETUP_HINT = "run `bash scripts/setup.sh` (it installs jupyter-nbconvert, python3-nbclient, jupyter-client and python3-ipykernel and registers the Deno Jupyter kernel)";

/** Why the notebooks cannot run here, or null when jupyter nbconvert and a working Deno kernel are present. */
function missingTools(): string | null {
  const nb = spawnSync("jupyter", ["nbconvert", "--version"], { encoding: "utf8" });
  if (nb.error !== undefined || nb.status !== 0) return `\`jupyter nbconvert\` is not available (${nb.error?.message ?? nb.stderr.trim().split("\n").pop()})`;
  const ks = spawnSync("jupyter", ["kernelspec", "list", "--json"], { encoding: "utf8" });
  if (ks.status !== 0) return `\`jupyter kernelspec list\` failed: ${ks.stderr.trim().split("\n").pop()}`;
  const specs = (JSON.parse(ks.stdout) as { kernelspecs: Record<string, { resource_dir: string; spec: { argv: string[] } }> }).kernelspecs;
  const deno = specs["deno"];
  if (deno === undefined) return `the Deno Jupyter kernel is not registered (kernels: ${Object.keys(specs).join(", ") || "none"})`;
  const bin = deno.spec.argv[0]!;
  if (!existsSync(bin)) return `the Deno kernel points at ${bin}, which does not exist`;
  return null;
}

interface Runs {
  modelDir: string;
  shippedModel: boolean;
  frozen: string;
  unfrozen: string;
  setupSeconds: number;
}

let runs: Runs | null = null;
const timings: string[] = [];
let toolsProblem: string | null = null;

function trainOptions(data: string, out: string, extra: Partial<TrainOptions>): TrainOptions {
  return {
    ...TRAIN_DEFAULTS, data, out, head: "regression", freeze: "frozen", unfreezeLast: null, epochs: 3, batchSize: 32, lr: 1e-3,
    hiddenDim: null, activation: null, numClasses: null, resume: false, force: true, ...extra,
  };
}

/** The model, dataset, runs and analyses the notebooks read (see the file comment). */
async function buildRuns(): Promise<Runs> {
  const t0 = Date.now();
  const shipped = join(repo!, "models", "brown-gpt2-mini");
  const shippedModel = existsSync(join(shipped, "model.safetensors"));
  let modelDir = shipped;
  if (!shippedModel) {
    const fx = makeTinyRun(join(root, "tiny"), { model: { nLayers: 2, dModel: 32, nHeads: 2, nCtx: 64, dVocab: 50257 } });
    writeTokenizerFiles(fx.modelDir);
    modelDir = fx.modelDir;
  }
  // As `npm run demo` does, name the model relative to the repository root (when the test runs there):
  // the runs then record a relative base_model_dir, which the notebooks (working in notebooks/) must handle.
  if (process.cwd() === repo) modelDir = relative(repo, modelDir);
  const { model, dir } = loadModel(modelDir, { weights: "tl" });
  const tok = loadTokenizer(dir);
  const layer = Math.min(2, model.cfg.nLayers - 1);
  const corpus = loadCorpus("brown", { categories: ["a"] });
  const stats = layerNeuronStats(model, tok, corpus.split("heldout"), layer, { maxTokens: 2000, label: null });
  const neuron = suggestTargets(stats.neurons, 1)[0]?.neuron ?? 0;
  const ds = buildDataset(model, tok, corpus.documents, {
    modelName: dir, modelDir: dir, weights: "tl", layer, neuron, layerType: "mlp_post", tokenPos: "last",
    n: 240, maxLen: 24, balance: false, seed: 0, corpusName: "brown a",
  });
  const data = join(root, "data.safetensors");
  writeDataset(data, ds, (ids) => tok.decode(ids));
  const frozen = join(root, "frozen-regression");
  const unfrozen = join(root, "unfrozen-regression");
  await train(trainOptions(data, frozen, { epochs: 4 }));
  await train(trainOptions(data, unfrozen, { freeze: "unfrozen", epochs: 1 }));
  // Saved: frozen weights; unfrozen patching and residual. The notebooks compute the others
  // themselves, so that each loading cell's two branches both run (see the tests below).
  const fctx = loadAnalysisContext(frozen);
  const w = weightsAnalysis(fctx, { maxExamples: 240 });
  writeAnalysisOutput(join(frozen, "analysis", "weights"), "weights", fctx.run, w, await weightsPlots(w));
  const uctx = loadAnalysisContext(unfrozen);
  const p = patchingAnalysis(uctx, { nInputs: 40, controls: 5, bootstrap: 200 });
  writeAnalysisOutput(join(unfrozen, "analysis", "patching"), "patching", uctx.run, p, await patchingPlots(p));
  const r = residualAnalysis(uctx, { nInputs: 40 });
  writeAnalysisOutput(join(unfrozen, "analysis", "residual"), "residual", uctx.run, r, await residualPlots(r));
  return { modelDir, shippedModel, frozen, unfrozen, setupSeconds: (Date.now() - t0) / 1000 };
}

before(async () => {
  toolsProblem = missingTools();
  if (toolsProblem === null) runs = await buildRuns();
});

interface Output {
  output_type: string;
  name?: string;
  text?: string | string[];
  data?: Record<string, unknown>;
  ename?: string;
  evalue?: string;
}

interface Cell {
  cell_type: string;
  execution_count?: number | null;
  outputs?: Output[];
}

interface Executed {
  seconds: number;
  cells: Cell[];
  stdout: string;
  svgs: number;
}

const joinText = (t: unknown): string => (Array.isArray(t) ? t.join("") : typeof t === "string" ? t : "");

/** Per code cell, the kinds of output it has (for failure messages): e.g. "3:stream,execute_result". */
function outline(cells: readonly Cell[]): string {
  return cells.filter((c) => c.cell_type === "code").map((c, i) => `${i + 1}:${(c.outputs ?? []).map((o) => o.output_type).join(",") || "-"}`).join(" ");
}

/**
 * Runs one notebook through nbconvert with the given environment. Fails at once on a non-zero exit
 * (nbconvert exits 1 when a cell's execute_reply reports an error), an error output, or a cell that
 * did not run; these come from the kernel's replies and are reliable.
 */
async function execute(name: string, env: Record<string, string>, tag: string): Promise<Executed> {
  if (toolsProblem !== null) assert.fail(`cannot run the notebooks: ${toolsProblem}; ${SETUP_HINT}`);
  const outDir = join(root, "executed", tag);
  const t0 = Date.now();
  const child = spawn("jupyter", ["nbconvert", "--to", "notebook", "--execute", "--ExecutePreprocessor.timeout=300", "--output-dir", outDir, join(notebooksDir, name)], {
    env: { ...process.env, ...env }, stdio: ["ignore", "pipe", "pipe"],
  });
  let stderr = "";
  child.stderr.on("data", (d: Buffer) => void (stderr += d.toString()));
  const code = await new Promise<number | null>((res) => child.on("close", res));
  const seconds = (Date.now() - t0) / 1000;
  const lines = stderr.split("\n").filter((l) => l.trim() !== "" && !/Debugger warning|frozen modules|PYDEVD|Note: Debugging|-Xfrozen_modules|is unstable and might change/.test(l));
  assert.equal(code, 0, `${name} (${tag}) failed, exit code ${code}:\n${lines.slice(-25).join("\n")}`);
  const nb = JSON.parse(readFileSync(join(outDir, name), "utf8")) as { cells: Cell[] };
  const codeCells = nb.cells.filter((c) => c.cell_type === "code");
  let stdout = "";
  let svgs = 0;
  codeCells.forEach((c, i) => {
    assert.ok(typeof c.execution_count === "number", `${name} (${tag}): code cell ${i + 1} did not run`);
    for (const o of c.outputs ?? []) {
      assert.notEqual(o.output_type, "error", `${name} (${tag}): code cell ${i + 1} raised ${o.ename}: ${o.evalue}`);
      if (o.output_type === "stream" && o.name === "stdout") stdout += joinText(o.text);
      if (o.output_type === "stream" && o.name === "stderr") assert.doesNotMatch(joinText(o.text), /error/i, `${name} (${tag}): code cell ${i + 1} wrote an error to stderr`);
      const svg = o.data?.["image/svg+xml"];
      if (typeof svg === "string" || Array.isArray(svg)) svgs++;
      const html = o.data?.["text/html"];
      if (typeof html === "string" || Array.isArray(html)) svgs += (joinText(html).match(/<svg/g) ?? []).length;
    }
  });
  return { seconds, cells: nb.cells, stdout, svgs };
}

/**
 * execute() then the content checks. Deno 2.9's kernel sometimes publishes a cell's "idle" status
 * before that cell's output messages, and nbclient drops what arrives after "idle" (measured here:
 * under load, about one cell in ten loses its output, most often early in the notebook). So when a
 * notebook ran without error but an expected output is missing, it runs again, up to 3 times in all,
 * and says so. Errors are never retried.
 */
async function runNotebook(name: string, env: Record<string, string>, tag: string, check: (ex: Executed) => void): Promise<Executed> {
  for (let attempt = 1; ; attempt++) {
    const ex = await execute(name, env, `${tag}-${attempt}`);
    try {
      check(ex);
      timings.push(`${name.slice(0, 2)}/${tag} ${ex.seconds.toFixed(1)} s${attempt > 1 ? ` (attempt ${attempt})` : ""}`);
      return ex;
    } catch (e) {
      if (!(e instanceof assert.AssertionError) || attempt === 3) {
        if (e instanceof assert.AssertionError) e.message += ` (outputs per code cell: ${outline(ex.cells)})`;
        throw e;
      }
      console.log(`notebooks: ${name} (${tag}) ran without error but an output is missing (${e.message.split("\n")[0]}; outputs per code cell: ${outline(ex.cells)}); running it again`);
    }
  }
}

function must(): Runs {
  if (toolsProblem !== null) assert.fail(`cannot run the notebooks: ${toolsProblem}; ${SETUP_HINT}`);
  assert.ok(runs !== null);
  return runs;
}

function env(r: Runs, extra: Record<string, string> = {}): Record<string, string> {
  return { SELFREPORT_RUN: r.frozen, SELFREPORT_UNFROZEN_RUN: r.unfrozen, SELFREPORT_MODEL: r.modelDir, SELFREPORT_QUICKSTART_OUT: join(root, "quickstart"), ...extra };
}

function verdictLine(v: { level: string; headline: string }): string {
  return `[${v.level}] ${v.headline}`;
}

after(() => {
  if (runs !== null) console.log(`notebooks: setup ${runs.setupSeconds.toFixed(1)} s on ${runs.shippedModel ? "models/brown-gpt2-mini" : "a tiny random model"}; ${timings.join(", ")}`);
});

test("every notebook in notebooks/ is one this test runs", () => {
  assert.deepEqual(readdirSync(notebooksDir).filter((f) => f.endsWith(".ipynb")).sort(), ["00_quickstart.ipynb", "01_weights_analysis.ipynb", "02_activation_patching.ipynb", "03_residual_analysis.ipynb"]);
});

test("00_quickstart: explorer, dataset and a frozen regression run through the library", async () => {
  const r = must();
  await runNotebook("00_quickstart.ipynb", env(r), "quickstart", (ex) => {
    assert.ok(ex.svgs >= 2, `00_quickstart showed ${ex.svgs} plots, expected the std histogram and the training curve`);
    assert.match(ex.stdout, /matmul backend: (native|js)/);
    assert.match(ex.stdout, /most active neurons of blocks\.\d+\.mlp\.hook_post at the last token: \d+, \d+, \d+/, "the HookedTransformer cell (runWithCache, topk) ran");
    assert.match(ex.stdout, /wrote .*quickstart\/L\d+N\d+\.safetensors/);
  });
  const run = join(root, "quickstart", "frozen-regression");
  assert.ok(existsSync(join(run, "config.json")) && existsSync(join(run, "metrics.json")), "the quickstart run directory is incomplete");
});

/**
 * Which branch of each analysis notebook's loading cell runs where (setup saved frozen/weights,
 * unfrozen/patching and unfrozen/residual):
 *   01 on the frozen run reads its saved summary; on the unfrozen run it computes one;
 *   02 on the frozen run computes; on the unfrozen run it reads;
 *   03 on the unfrozen run reads (its compute branch is the same call with residualAnalysis).
 */
const CASES: Array<{ nb: "01" | "02"; run: "frozen" | "unfrozen"; branch: "read" | "computed" }> = [
  { nb: "01", run: "frozen", branch: "read" },
  { nb: "02", run: "frozen", branch: "computed" },
  { nb: "01", run: "unfrozen", branch: "computed" },
  { nb: "02", run: "unfrozen", branch: "read" },
];

for (const c of CASES) {
  const runOf = (r: Runs): string => (c.run === "frozen" ? r.frozen : r.unfrozen);
  if (c.nb === "01") {
    test(`01_weights_analysis on the ${c.run} run (analysis ${c.branch})`, async () => {
      const r = must();
      const runDir = runOf(r);
      await runNotebook("01_weights_analysis.ipynb", env(r, { SELFREPORT_RUN: runDir }), `01-${c.run}`, (ex) => {
        assert.ok(ex.svgs >= 4, `01 showed ${ex.svgs} plots, expected the 3 histograms and the W_out PCA`);
        assert.ok(ex.stdout.includes(`run ${runDir}\n`), "01 did not open the run it was given");
        if (c.branch === "read") {
          const saved = readAnalysis(join(runDir, "analysis"), "weights");
          assert.ok(saved.status === "ok");
          assert.ok(ex.stdout.includes(`read ${join(runDir, "analysis", "weights", "summary.json")}`), "01 did not say it read the saved summary");
          assert.ok(ex.stdout.includes(verdictLine(weightsVerdict(saved.summary))), "the notebook's verdict differs from weightsVerdict on the saved summary");
        } else {
          assert.match(ex.stdout, /weights analysis not run in .*: computed now with the library/);
          assert.match(ex.stdout, /^\[(yes|partly|no|not assessable)\] /m);
        }
      });
    });
  } else {
    test(`02_activation_patching on the ${c.run} run (analysis ${c.branch})`, async () => {
      const r = must();
      const runDir = runOf(r);
      await runNotebook("02_activation_patching.ipynb", env(r, { SELFREPORT_RUN: runDir }), `02-${c.run}`, (ex) => {
        assert.ok(ex.svgs >= 4, `02 showed ${ex.svgs} plots, expected scatter, sensitivity, controls and direct vs total`);
        assert.match(ex.stdout, /Δpred ×2/);
        if (c.branch === "read") {
          const saved = readAnalysis(join(runDir, "analysis"), "patching");
          assert.ok(saved.status === "ok");
          assert.ok(ex.stdout.includes(`read ${join(runDir, "analysis", "patching", "summary.json")}`), "02 did not say it read the saved summary");
          assert.ok(ex.stdout.includes(verdictLine(patchingVerdict(saved.summary))), "the notebook's verdict differs from patchingVerdict on the saved summary");
        } else {
          assert.match(ex.stdout, /patching analysis not run in .*: computed now with the library/);
          assert.match(ex.stdout, /^\[(yes|partly|no|not assessable)\] /m);
        }
      });
    });
  }
}

test("03_residual_analysis on the unfrozen run (analysis read)", async () => {
  const r = must();
  const saved = readAnalysis(join(r.unfrozen, "analysis"), "residual");
  assert.ok(saved.status === "ok");
  const patching = readAnalysis(join(r.unfrozen, "analysis"), "patching");
  assert.ok(patching.status === "ok");
  await runNotebook("03_residual_analysis.ipynb", env(r), "03-unfrozen", (ex) => {
    assert.ok(ex.svgs >= 5, `03 showed ${ex.svgs} plots, expected the 5 residual plots`);
    assert.ok(ex.stdout.includes(`read ${join(r.unfrozen, "analysis", "residual", "summary.json")}`), "03 did not say it read the saved summary");
    assert.ok(ex.stdout.includes(verdictLine(residualVerdict(saved.summary))), "the notebook's verdict differs from residualVerdict on the saved summary");
    assert.ok(ex.stdout.includes(`weights: not run (selfreport analyze weights --run ${r.unfrozen} --out ${join(r.unfrozen, "analysis", "weights")})`), "03 does not list the missing weights analysis with its command");
    assert.ok(ex.stdout.includes(`patching: ${patchingVerdict(patching.summary).headline}`), "03 does not show the patching verdict");
  });
});
