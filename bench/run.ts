/**
 * `npm run bench` (node dist/bench/run.js [section-name-filter...]): runs each bench section in
 * order and prints its rows as a markdown table. See bench/README.md for what each measures.
 *
 * Each section runs in its own child process (`run.js --section NAME`), so the peak RSS a section
 * reports (process.resourceUsage().maxRSS) is that section's alone. When a chosen section reports a
 * roofline fraction, the parent first measures the reference sgemm rate once, in a child of its own,
 * and passes it to every section in BENCH_SGEMM_GFLOPS (a section run alone measures it itself).
 *
 * To add a section: write `async function benchX(): Promise<BenchRow[]>` in bench/x.ts and add
 * one entry to SECTIONS. Every row of a section should have the same columns, in order.
 */
import { spawnSync } from "node:child_process";
import { pathToFileURL } from "node:url";
import { benchSgemm } from "./sgemm.ts";
import { benchSweep } from "./sweep.ts";
import { benchKernels } from "./kernels.ts";
import { benchForward } from "./forward.ts";
import { benchPretrain } from "./pretrain.ts";
import { benchSelfreportStep, benchSelfreportFrozen } from "./selfreport.ts";
import { benchPatching } from "./patching.ts";
import { benchSweepLayer } from "./sweep-layer.ts";
import { benchQwen } from "./qwen.ts";
import { SGEMM_REF_ENV, measureSgemmGflops } from "./util.ts";

/** One table row: column name → cell (numbers are printed as given; format them in the section). */
export type BenchRow = Record<string, string | number>;

interface Section {
  /** Short name, matched by the command-line filter. */
  name: string;
  title: string;
  run: () => Promise<BenchRow[]>;
  /** True when the section needs the reference sgemm rate (a roofline column, or sweep-layer's context line). */
  roofline?: boolean;
}

const SECTIONS: Section[] = [
  { name: "sgemm", title: "Dense matmul (sgemm), GFLOPS, median after warm-up", run: benchSgemm },
  { name: "kernels", title: "LayerNorm, GELU, softmax, causal attention at [8, 128, 768]: ms per call vs torch", run: benchKernels },
  { name: "forward", title: "GPT-2-small forward (runWithCache), tokens/s vs torch", run: benchForward, roofline: true },
  { name: "pretrain", title: "Pre-training step (4 × 128, vocab 50257, batch 16 × 128), tokens/s vs torch", run: benchPretrain, roofline: true },
  { name: "selfreport-step", title: "Unfrozen self-report step (GPT-2 small, batch 16 × 64), ms per step vs torch", run: benchSelfreportStep, roofline: true },
  { name: "selfreport-frozen", title: "Frozen head training: cached features vs re-running the base model, examples/s per epoch", run: benchSelfreportFrozen },
  { name: "patching", title: "Activation patching on GPT-2-small shapes: 500 inputs, batched path vs one forward per patch", run: benchPatching, roofline: true },
  { name: "sweep", title: "Sweep: frozen regression heads of one 768-wide layer, multi-output vs separate runs, jobs/hour", run: benchSweep },
  { name: "qwen", title: "Qwen2-0.5B-shaped model (random weights): forward tokens/s vs torch at 4 × 128, and peak RSS of `selfreport activations`", run: benchQwen, roofline: true },
  { name: "sweep-layer", title: "Whole-model sweep cost: one GPT-2-small layer, all three frozen heads, extrapolated to 12 × 3072 neurons", run: benchSweepLayer, roofline: true },
];

/** Rows → a markdown table; columns are the union of the rows' keys in first-seen order. */
export function markdownTable(rows: BenchRow[]): string {
  const columns: string[] = [];
  for (const row of rows) for (const key of Object.keys(row)) if (!columns.includes(key)) columns.push(key);
  const cell = (row: BenchRow, c: string): string => String(row[c] ?? "");
  return [
    `| ${columns.join(" | ")} |`,
    `|${columns.map(() => "---").join("|")}|`,
    ...rows.map((row) => `| ${columns.map((c) => cell(row, c)).join(" | ")} |`),
  ].join("\n");
}

/** Runs one section in this process and prints its title and table. */
async function runSection(section: Section): Promise<void> {
  console.log(`\n## ${section.title}\n`);
  const rows = await section.run();
  console.log(markdownTable(rows));
}

/** Runs this file again as a child with `args`, output inherited; returns its exit status. */
function child(args: string[], env: NodeJS.ProcessEnv, capture: boolean): { status: number; stdout: string } {
  const r = spawnSync(process.execPath, [process.argv[1]!, ...args], { env, stdio: capture ? ["ignore", "pipe", "inherit"] : "inherit", encoding: "utf8" });
  return { status: r.status ?? 1, stdout: r.stdout ?? "" };
}

async function main(argv: string[]): Promise<void> {
  if (argv[0] === "--sgemm-reference") {
    console.log(JSON.stringify({ gflops: await measureSgemmGflops() }));
    return;
  }
  if (argv[0] === "--section") {
    const section = SECTIONS.find((s) => s.name === argv[1]);
    if (section === undefined) throw new Error(`bench: no section named ${argv[1] ?? "(missing)"}`);
    await runSection(section);
    return;
  }
  const filters = argv;
  // a filter that is a section's whole name picks that section alone ("sweep" is not "sweep-layer")
  const matches = (name: string, f: string): boolean => SECTIONS.some((s) => s.name === f) ? name === f : name.includes(f);
  const chosen = SECTIONS.filter((s) => filters.length === 0 || filters.some((f) => matches(s.name, f)));
  if (chosen.length === 0) {
    console.error(`bench: no section matches ${filters.join(", ")}; sections: ${SECTIONS.map((s) => s.name).join(", ")}`);
    process.exitCode = 1;
    return;
  }
  const env = { ...process.env };
  if (chosen.some((s) => s.roofline === true) && env[SGEMM_REF_ENV] === undefined) {
    const ref = child(["--sgemm-reference"], env, true);
    let gflops = NaN;
    try {
      if (ref.status === 0) gflops = Number((JSON.parse(ref.stdout) as { gflops: unknown }).gflops);
    } catch {
      // each section then measures its own reference
    }
    if (Number.isFinite(gflops) && gflops > 0) {
      env[SGEMM_REF_ENV] = String(gflops);
      console.log(`\nreference sgemm for the roofline columns: ${gflops.toFixed(1)} GFLOP/s (mean of the 3 GPT-2-small shapes of the sgemm section, measured once for this run)`);
    }
  }
  for (const section of chosen) {
    const { status } = child(["--section", section.name], env, false);
    if (status !== 0) {
      console.error(`bench: section ${section.name} failed (exit ${status})`);
      process.exitCode = 1;
    }
  }
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  await main(process.argv.slice(2));
}
