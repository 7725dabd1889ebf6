/**
 * The body of a sweep worker thread (started by local.ts): runs the tasks it is sent, one at a
 * time, with one JobRunner (so the model, examples and features are loaded once per thread).
 *
 *   in:  { task: Task }
 *   out: { type: "done", taskId, results: JobResult[] } | { type: "error", taskId, message }
 */
import { parentPort, workerData, threadId } from "node:worker_threads";
import { JobRunner, workerName } from "./jobs.ts";
import type { SweepManifest, Task } from "./spec.ts";

export interface ThreadData {
  sweepDir: string;
  manifest: SweepManifest;
}

export type ThreadRequest = { task: Task };
export type ThreadReply =
  | { type: "done"; taskId: string; results: import("./jobs.ts").JobResult[] }
  | { type: "error"; taskId: string; message: string };

if (parentPort !== null) {
  const port = parentPort;
  const data = workerData as ThreadData;
  const runner = new JobRunner(data.sweepDir, data.manifest, workerName(`#${threadId}`));
  port.on("message", (msg: ThreadRequest) => {
    runner.runTask(msg.task).then(
      (results) => port.postMessage({ type: "done", taskId: msg.task.id, results } satisfies ThreadReply),
      (e: unknown) => {
        const message = e instanceof Error ? e.message : String(e);
        let results: import("./jobs.ts").JobResult[] = [];
        try {
          results = runner.failTask(msg.task, message);
        } catch {
          // the folder itself is unusable; the main thread reports the error
        }
        port.postMessage(results.length > 0 ? ({ type: "done", taskId: msg.task.id, results } satisfies ThreadReply) : ({ type: "error", taskId: msg.task.id, message } satisfies ThreadReply));
      },
    );
  });
}
