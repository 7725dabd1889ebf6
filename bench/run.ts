/**
 * `npm run bench` (node dist/bench/run.js [section-name-filter...]): runs each bench section in
 * order and prints its rows as a markdown table. See bench/README.md for what each measures.
 *
 * To add a section: write `async function benchX(): Promise<BenchRow[]>` in bench/x.ts and add
 * one entry to SECTIONS. Every row of a section should have the same columns, in order.
 */
import { pathToFileURL } from "node:url";
import { benchSgemm } from "./sgemm.ts";
import { benchSweep } from "./sweep.ts";
import { benchKernels } from "./kernels.ts";
import { benchForward } from "./forward.ts";
import { benchPretrain } from "./pretrain.ts";
import { benchSelfreportStep, benchSelfreportFrozen } from "./selfreport.ts";
import { benchPatching } from "./patching.ts";

/** One table row: column name → cell (numbers are printed as given; format them in the section). */
export type BenchRow = Record<string, string | number>;

interface Section {
  /** Short name, matched by the command-line filter. */
  name: string;
  title: string;
  run: () => Promise<BenchRow[]>;
}

const SECTIONS: Section[] = [
  { name: "sgemm", title: "Dense matmul (sgemm), GFLOPS, median after warm-up", run: benchSgemm },
  { name: "kernels", title: "LayerNorm, GELU, softmax, causal attention at [8, 128, 768]: ms per call vs torch", run: benchKernels },
  { name: "forward", title: "GPT-2-small forward (runWithCache), tokens/s vs torch", run: benchForward },
  { name: "pretrain", title: "Pre-training step (4 × 128, vocab 50257, batch 16 × 128), tokens/s vs torch", run: benchPretrain },
  { name: "selfreport-step", title: "Unfrozen self-report step (GPT-2 small, batch 16 × 64), ms per step vs torch", run: benchSelfreportStep },
  { name: "selfreport-frozen", title: "Frozen head training: cached features vs re-running the base model, examples/s per epoch", run: benchSelfreportFrozen },
  { name: "patching", title: "Activation patching on GPT-2-small shapes: 500 inputs, batched path vs one forward per patch", run: benchPatching },
  { name: "sweep", title: "Sweep: frozen regression heads of one 768-wide layer, multi-output vs separate runs, jobs/hour", run: benchSweep },
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

async function main(filters: string[]): Promise<void> {
  const chosen = SECTIONS.filter((s) => filters.length === 0 || filters.some((f) => s.name.includes(f)));
  if (chosen.length === 0) {
    console.error(`bench: no section matches ${filters.join(", ")}; sections: ${SECTIONS.map((s) => s.name).join(", ")}`);
    process.exitCode = 1;
    return;
  }
  for (const section of chosen) {
    console.log(`\n## ${section.title}\n`);
    const rows = await section.run();
    console.log(markdownTable(rows));
  }
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  await main(process.argv.slice(2));
}
