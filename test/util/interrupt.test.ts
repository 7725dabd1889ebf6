/**
 * The interrupt flag and its handlers in-process (the real-signal tests are test/cli/interrupt.test.ts):
 * handlers exist only inside a section and only when the CLI allowed them; the first signal sets the
 * flag, the second exits at once with 130 (143 after SIGTERM); the resume line names the command.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { allowCooperativeInterrupts, interruptibleSection, interruptSignal, Interrupted, runStepsInterruptibly } from "../../src/util/interrupt.ts";
import { interruptedLine, resumeCommand } from "../../src/cli/interrupts.ts";

function withExitStub(fn: (exits: number[]) => void): void {
  const exit = process.exit;
  const exits: number[] = [];
  process.exit = ((code?: number): never => {
    exits.push(code ?? 0);
    return undefined as never;
  }) as typeof process.exit;
  try {
    fn(exits);
  } finally {
    process.exit = exit;
  }
}

test("without the CLI's permission a section installs nothing: Node's default handling stays", () => {
  const before = process.listenerCount("SIGINT");
  const s = interruptibleSection();
  assert.equal(process.listenerCount("SIGINT"), before);
  s.end();
});

test("inside a section: the first SIGINT sets the flag and prints one line, the second exits at once with 130", () => {
  const lines: string[] = [];
  const end = allowCooperativeInterrupts((l) => void lines.push(l));
  const before = process.listenerCount("SIGINT");
  const outer = interruptibleSection();
  const inner = interruptibleSection();
  assert.equal(process.listenerCount("SIGINT"), before + 1, "one handler for nested sections");
  assert.equal(process.listenerCount("SIGTERM"), before + 1);
  const handler = process.listeners("SIGINT").at(-1) as (s: NodeJS.Signals) => void;
  withExitStub((exits) => {
    handler("SIGINT");
    assert.equal(interruptSignal(), "SIGINT");
    assert.deepEqual(exits, []);
    assert.equal(lines.length, 1);
    assert.match(lines[0]!, /SIGINT received: stopping and keeping what is complete \(Ctrl-C again to quit at once\)/);
    handler("SIGINT");
    assert.deepEqual(exits, [130]);
  });
  inner.end();
  assert.equal(process.listenerCount("SIGINT"), before + 1, "the outer section keeps the handler");
  outer.end();
  assert.equal(process.listenerCount("SIGINT"), before);
  assert.equal(interruptSignal(), null);
  end();
});

test("SIGTERM: exit code 143; a step loop stops at the next step with Interrupted", async () => {
  const end = allowCooperativeInterrupts(() => {});
  let stepsRun = 0;
  function* steps(): Generator<void, string> {
    for (let i = 0; i < 100; i++) {
      stepsRun++;
      if (i === 4) (process.listeners("SIGTERM").at(-1) as (s: NodeJS.Signals) => void)("SIGTERM");
      yield;
    }
    return "done";
  }
  await assert.rejects(runStepsInterruptibly(steps(), () => `stopped after ${stepsRun} steps`), (e: unknown) => {
    assert.ok(e instanceof Interrupted);
    assert.equal(e.exitCode, 143);
    assert.equal(e.message, "stopped after 5 steps");
    return true;
  });
  end();
});

test("the line printed names the command that continues: --force dropped, --resume added once", () => {
  assert.equal(resumeCommand(["train", "--data", "my data.safetensors", "--force", "--out", "r"], "--resume"), "selfreport train --data 'my data.safetensors' --out r --resume");
  assert.equal(resumeCommand(["train", "--resume", "--out", "r"], "--resume"), "selfreport train --resume --out r");
  assert.equal(resumeCommand(["sweep", "--out", "s", "--force"], "rerun"), "selfreport sweep --out s");
  assert.equal(interruptedLine(new Interrupted("SIGINT", "stopped at step 3", { resume: "--resume" }), ["pretrain", "--out", "m"]), "selfreport: SIGINT: stopped at step 3; resume with: selfreport pretrain --out m --resume");
  assert.equal(interruptedLine(new Interrupted("SIGTERM", "stopped"), ["dataset"]), "selfreport: SIGTERM: stopped");
});
