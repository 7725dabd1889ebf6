/**
 * `selfreport sweep` (many neurons × heads × freezing modes into one folder, locally on worker
 * threads or through a Redis queue) and `selfreport worker` (takes queued sweep tasks).
 * See docs/sweeps.md.
 */
import { availableParallelism } from "node:os";
import { Option, type Command } from "commander";
import { SelfreportError } from "../../errors.ts";
import { info, progress } from "../../util/progress.ts";
import { defaultLr } from "../../selfreport/train.ts";
import { addTrainingOptions, trainingSettingsFromFlags, type TrainingFlags } from "../training-options.ts";
import { SOLVERS, type Solver } from "../../selfreport/ridge.ts";
import { WEIGHTS_DEFAULTS } from "../../analysis/weights.ts";
import { PATCHING_DEFAULTS } from "../../analysis/patching.ts";
import type { HeadType } from "../../selfreport/predictor.ts";
import type { FreezeMode } from "../../selfreport/run.ts";
import { parseAnalyses, parseFreezeModes, parseHeads, parseLayers, parseNeuronSpec, makeTasks, sweepTraining, type AnalysisName, type NeuronSpec } from "../../sweep/spec.ts";
import { openSweep } from "../../sweep/prepare.ts";
import { runTasksLocally } from "../../sweep/local.ts";
import { writeResults, summaryLines } from "../../sweep/results.ts";
import { enqueueSweep, parseQueueUrl, reachRedis, runQueueWorker, QUEUE_TIMEOUT_DEFAULT_S } from "../../sweep/queue.ts";
import { interruptible } from "../interrupts.ts";
import { parseChoice, parseFloatOption, parseIntOption } from "../options.ts";

interface SweepCliOptions extends TrainingFlags {
  model: string; layers: number[]; neurons: NeuronSpec; heads: HeadType[]; freeze: FreezeMode[]; unfreezeLast: number; analyses: AnalysisName[];
  workers: number; groupSize: number; corpus: string; n: number; maxLen: number; dataSeed: number; weights: "raw" | "tl";
  lr: number; lrFinetune: number; solver?: Solver; weightsMaxExamples: number; patchingInputs: number; patchingControls: number;
  queue?: string; queueTimeout: number; wait: boolean; attempts: number; retryFailed: boolean; force: boolean; out: string;
}

function parseSweepRoot(value: string): { from: string; to: string } {
  const i = value.indexOf("=");
  if (i <= 0 || i === value.length - 1) throw new SelfreportError(`--sweep-root must be FROM=TO (two folder paths), got "${value}"`);
  return { from: value.slice(0, i), to: value.slice(i + 1) };
}

/**
 * With several worker threads in one process, OpenBLAS's own thread pool (one thread per core by
 * default, shared by the whole process) makes the threads' matrix products queue and spin; one BLAS
 * thread per caller is faster (bench/sweep.ts). Set before anything loads the BLAS library, and only
 * when the user has not chosen.
 */
function oneBlasThreadPerWorker(workers: number): void {
  if (workers > 1 && process.env["OPENBLAS_NUM_THREADS"] === undefined) {
    process.env["OPENBLAS_NUM_THREADS"] = "1";
    info(`${workers} worker threads: OPENBLAS_NUM_THREADS=1 (set it yourself to override)`);
  }
}

export function registerSweepCommands(program: Command): void {
  const sweepCmd = program
    .command("sweep")
    .description("train and analyse self-report heads for many neurons: one job per (layer, neuron, head, freezing), resumable, on worker threads or a Redis queue")
    .requiredOption("--model <dir|name>", "base model directory or name")
    .requiredOption("--layers <list>", "layers, e.g. 2,3 or 0-11", parseLayers)
    .requiredOption("--neurons <spec>", "neurons of each layer: ranges like 0-63,100 or top-variance:K", parseNeuronSpec)
    .addOption(new Option("--heads <list>", "head types, comma-separated (regression, classification, token)").argParser(parseHeads).default(["regression"] as HeadType[], "regression"))
    .addOption(new Option("--freeze <list>", "freezing modes, comma-separated (frozen, partial, unfrozen)").argParser(parseFreezeModes).default(["frozen"] as FreezeMode[], "frozen"))
    .option("--unfreeze-last <K>", "with partial: the last K blocks up to the feature layer train", parseIntOption("--unfreeze-last", 1), 1)
    .addOption(new Option("--analyses <list>", "analyses per job: weights, patching, or none").argParser(parseAnalyses).default([] as AnalysisName[], "none"))
    .addOption(new Option("--workers <n>", "worker threads").argParser(parseIntOption("--workers", 1, 256)).default(availableParallelism(), `the number of cores, ${availableParallelism()}`))
    .option("--group-size <n>", "frozen regression neurons trained together as one multi-output head", parseIntOption("--group-size", 1), 512)
    .option("--corpus <brown|FILE>", "text for the examples: the Brown corpus or a .txt / .jsonl file", "brown")
    .option("--n <count>", "examples (shared by every job)", parseIntOption("--n", 10), 20000)
    .option("--max-len <tokens>", "longest prefix", parseIntOption("--max-len", 2), 64)
    .option("--data-seed <seed>", "seed of the example sampling", parseIntOption("--data-seed"), 0)
    .option("--weights <raw|tl>", "weight processing of the base model", parseChoice<"raw" | "tl">("--weights", ["raw", "tl"]), "tl")
    .option("--solver <ridge|adamw>", "how frozen regression heads are fitted: ridge = closed form, λ chosen on the validation split; adamw = gradient training (default: ridge; other heads and modes always use adamw)", parseChoice<Solver>("--solver", SOLVERS))
    .option("--lr <rate>", "peak learning rate of frozen heads", parseFloatOption("--lr", 0), defaultLr("frozen"))
    .option("--lr-finetune <rate>", "peak learning rate of partial/unfrozen runs", parseFloatOption("--lr-finetune", 0), defaultLr("unfrozen"));
  addTrainingOptions(sweepCmd)
    .option("--weights-max-examples <n>", "weights analysis: examples for covariance and gradients", parseIntOption("--weights-max-examples", 1), WEIGHTS_DEFAULTS.maxExamples)
    .option("--patching-inputs <n>", "patching analysis: inputs patched", parseIntOption("--patching-inputs", 3), 200)
    .option("--patching-controls <k>", "patching analysis: random control neurons", parseIntOption("--patching-controls", 0), PATCHING_DEFAULTS.controls)
    .option("--queue <redis://HOST:PORT>", "enqueue the tasks on this Redis for `selfreport worker` processes instead of running them here", parseQueueUrl)
    .option("--queue-timeout <s>", "with --queue: give up when Redis cannot be reached (or is lost) for this many seconds", parseIntOption("--queue-timeout", 1), QUEUE_TIMEOUT_DEFAULT_S)
    .option("--no-wait", "with --queue: return once the tasks are enqueued (re-run the command later to write the results)")
    .option("--attempts <n>", "with --queue: attempts per task before it is recorded as failed", parseIntOption("--attempts", 1, 100), 3)
    .option("--retry-failed", "run jobs recorded as failed again", false)
    .option("--force", "the folder holds a sweep with other settings: delete its results and start over", false)
    .requiredOption("--out <dir>", "sweep folder")
    .action(interruptible(async (o: SweepCliOptions) => {
      const t0 = Date.now();
      if (!o.wait && o.queue === undefined) throw new SelfreportError("--no-wait only applies with --queue (tasks run in this process otherwise, so it always waits); add --queue redis://HOST:PORT or drop --no-wait");
      if (o.solver === "ridge" && !(o.heads.includes("regression") && o.freeze.includes("frozen"))) {
        throw new SelfreportError(`--solver ridge fits frozen regression heads; this sweep has none (--heads ${o.heads.join(",")} --freeze ${o.freeze.join(",")}); drop --solver`);
      }
      // an unreachable Redis is found out before the examples are prepared
      if (o.queue !== undefined) await reachRedis(o.queue, o.queueTimeout);
      if (o.queue === undefined) oneBlasThreadPerWorker(o.workers);
      const opened = openSweep({
        model: o.model, weights: o.weights, layers: o.layers, neurons: o.neurons, heads: o.heads, freeze: o.freeze,
        unfreezeLast: o.freeze.includes("partial") ? o.unfreezeLast : null, analyses: o.analyses, corpus: o.corpus, n: o.n, maxLen: o.maxLen,
        dataSeed: o.dataSeed, groupSize: o.groupSize, out: o.out, force: o.force,
        training: sweepTraining(trainingSettingsFromFlags(o, o.lr), o.lrFinetune, o.solver ?? "ridge"),
        analysisOptions: { weights_max_examples: o.weightsMaxExamples, patching_inputs: o.patchingInputs, patching_controls: o.patchingControls },
      }, { retryFailed: o.retryFailed, cleanStages: o.queue === undefined });
      // the sweep folder is locked by openSweep until this command ends
      try {
        const { manifest, jobs, pending } = opened;
        info(`sweep ${o.out}: ${jobs.length} jobs, ${jobs.length - pending.length} finished earlier, ${pending.length} to run`);
        if (o.queue !== undefined) {
          const r = await enqueueSweep({ url: o.queue, sweepDir: o.out, manifest, pending, attempts: o.attempts, wait: o.wait, timeoutS: o.queueTimeout });
          if (!o.wait) {
            console.log(`enqueued ${r.tasks} task(s); re-run this command (it skips finished jobs) to wait for them and write the results`);
            return;
          }
        } else if (pending.length > 0) {
          const tasks = makeTasks(pending, manifest.settings.group_size, o.workers);
          const bar = progress("sweep", pending.length, ["failed"]);
          let done = 0;
          let failed = 0;
          try {
            await runTasksLocally(o.out, manifest, tasks, o.workers, (task, results) => {
              const mine = results.filter((r) => task.neurons.includes(r.neuron));
              done += mine.length;
              failed += mine.filter((r) => r.status === "failed").length;
              bar.update(Math.min(done, pending.length), { failed });
            });
          } finally {
            bar.stop();
          }
        }
        const { files, table } = await writeResults(o.out, manifest.settings, jobs);
        for (const line of summaryLines(table.rows)) console.log(line);
        const failedRows = table.rows.filter((r) => r.status === "failed");
        for (const r of failedRows.slice(0, 5)) console.log(`failed: ${r.id}: ${r.error}`);
        if (failedRows.length > 5) console.log(`… and ${failedRows.length - 5} more failed jobs (see results.csv)`);
        if (table.missing.length > 0) console.log(`${table.missing.length} job(s) not finished yet (re-run the same command to continue)`);
        console.log(`wrote ${files.length} files to ${o.out} in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
      } finally {
        opened.release();
      }
    }));

  program
    .command("worker")
    .description("take sweep tasks from a Redis queue (see `selfreport sweep --queue`) and run them; any number of machines sharing the sweep folder")
    .requiredOption("--queue <redis://HOST:PORT>", "the Redis the sweep was enqueued on", parseQueueUrl)
    .option("--concurrency <n>", "tasks at once (one worker thread each)", parseIntOption("--concurrency", 1, 64), 1)
    .option("--lock-ms <ms>", "a task whose worker is silent this long goes back to the queue", parseIntOption("--lock-ms", 1000), 30000)
    .option("--stalled-ms <ms>", "how often to look for tasks of dead workers", parseIntOption("--stalled-ms", 500), 30000)
    .option("--max-stalled <n>", "times a task may be taken back from a dead worker before it fails", parseIntOption("--max-stalled", 1, 100), 3)
    .option("--max-tasks <n>", "exit after this many tasks (0 = no limit)", parseIntOption("--max-tasks", 0), 0)
    .option("--exit-when-idle <s>", "exit once the queue has been empty this many seconds (0 = never)", parseIntOption("--exit-when-idle", 0), 0)
    .option("--queue-timeout <s>", "give up when Redis cannot be reached (or is lost) for this many seconds", parseIntOption("--queue-timeout", 1), QUEUE_TIMEOUT_DEFAULT_S)
    .option("--sweep-root <FROM=TO>", "the sweep folders are under FROM on the enqueuing machine and under TO here", parseSweepRoot)
    .action(interruptible(async (o: { queue: string; queueTimeout: number; concurrency: number; lockMs: number; stalledMs: number; maxStalled: number; maxTasks: number; exitWhenIdle: number; sweepRoot?: { from: string; to: string } }) => {
      oneBlasThreadPerWorker(o.concurrency);
      const n = await runQueueWorker({
        url: o.queue, concurrency: o.concurrency, lockMs: o.lockMs, stalledMs: o.stalledMs, maxStalled: o.maxStalled, maxTasks: o.maxTasks,
        idleExitSeconds: o.exitWhenIdle, timeoutS: o.queueTimeout, ...(o.sweepRoot !== undefined ? { sweepRoot: o.sweepRoot } : {}),
      });
      console.log(`worker ran ${n} task(s)`);
    }));
}
