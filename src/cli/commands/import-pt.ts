/** `selfreport import-pt --head head.pt --config config.json --out RUN_DIR [--model DIR] [--weights tl|raw] [--finetuned DIR] [--force]`. */
import type { Command } from "commander";
import { importPythonRun } from "../../selfreport/import-pt.ts";
import { runTarget, targetLabel } from "../../selfreport/target.ts";
import { parseChoice } from "../options.ts";

export function registerImportPt(program: Command): void {
  program
    .command("import-pt")
    .description("import a run of the Python tool (head.pt state dict + config.json) into a run directory; safe unpickler, no code from the file runs")
    .requiredOption("--head <head.pt>", "the head's PyTorch state dict")
    .requiredOption("--config <config.json>", "the Python run's config.json")
    .requiredOption("--out <run_dir>", "run directory to write")
    .option("--model <dir>", "local Hugging Face directory of the base model (default: base_model_name, if it is a directory)")
    .option("--weights <tl|raw>", "weight processing the Python run used (TransformerLens from_pretrained = tl)", parseChoice<"raw" | "tl">("--weights", ["raw", "tl"]), "tl")
    .option("--finetuned <dir>", "unfrozen/partial runs: the fine-tuned model, a local Hugging Face directory")
    .option("--force", "overwrite an existing run directory", false)
    .action((o: { head: string; config: string; out: string; model?: string; weights: "raw" | "tl"; finetuned?: string; force: boolean }) => {
      const { config, notes } = importPythonRun({
        headPath: o.head, configPath: o.config, outDir: o.out, weights: o.weights, force: o.force,
        ...(o.model !== undefined ? { modelDir: o.model } : {}), ...(o.finetuned !== undefined ? { finetunedDir: o.finetuned } : {}),
      });
      for (const n of notes) console.warn(`note: ${n}`);
      console.log(`imported a ${config.freeze_mode} ${config.head_type} run for ${targetLabel(runTarget(config))} into ${o.out}`);
    });
}
