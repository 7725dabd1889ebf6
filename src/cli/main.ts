/**
 * The `selfreport` command line: one sub-command per file in ./commands, registered here.
 * User errors (SelfreportError) print as one line; anything else prints one line too, with the
 * stack only when SELFREPORT_DEBUG=1.
 */
import { Command, CommanderError } from "commander";
import { SelfreportError, describeSystemError, isSystemError } from "../errors.ts";
import { Interrupted } from "../util/interrupt.ts";
import { interruptedLine } from "./interrupts.ts";
import { ShapeError, NanError } from "../tensor/index.ts";
import { registerModelCommands } from "./commands/model.ts";
import { registerSelfreportCommands } from "./commands/selfreport.ts";
import { registerAnalyzeCommands } from "./commands/analyze.ts";
import { registerLmCommands } from "./commands/lm.ts";
import { registerReportCommands } from "./commands/report.ts";
import { registerSweepCommands } from "./commands/sweep.ts";
import { registerDemo } from "./commands/demo.ts";

export type Register = (program: Command) => void;

/** Every command group; each registers its sub-commands. */
const groups: Register[] = [registerModelCommands, registerSelfreportCommands, registerAnalyzeCommands, registerLmCommands, registerReportCommands, registerSweepCommands, registerDemo];

export function buildProgram(): Command {
  const program = new Command("selfreport")
    .description("Train a language model to report one of its own MLP neurons, then find out how it does it.")
    .version("0.1.0")
    .showHelpAfterError("(run with --help for usage)")
    .exitOverride();
  for (const register of groups) register(program);
  return program;
}

/** Runs the CLI; returns the process exit code. */
export async function run(argv: readonly string[]): Promise<number> {
  const program = buildProgram();
  try {
    await program.parseAsync([...argv]);
    return 0;
  } catch (e) {
    if (e instanceof Interrupted) {
      console.error(interruptedLine(e, argv.slice(2)));
      return e.exitCode;
    }
    return reportError(e);
  }
}

export function reportError(e: unknown): number {
  if (e instanceof Interrupted) {
    console.error(`selfreport: ${e.signal}: ${e.message}`);
    return e.exitCode;
  }
  if (e instanceof CommanderError) {
    // commander already printed its message (or the help/version text)
    return e.exitCode === 0 ? 0 : 2;
  }
  if (e instanceof SelfreportError || e instanceof ShapeError || e instanceof NanError) {
    console.error(`selfreport: error: ${oneLine(e.message)}`);
    return 1;
  }
  if (isSystemError(e)) {
    // a file-system call failed outside the wrapped writers: say which path and what was expected, not the errno text
    console.error(`selfreport: error: ${oneLine(describeSystemError(e))}`);
    if (process.env["SELFREPORT_DEBUG"] === "1") console.error(e.stack);
    return 1;
  }
  if (e instanceof RangeError && /Invalid (typed )?array length|Array buffer allocation failed/.test(e.message)) {
    console.error(`selfreport: error: a size read from an input file is too large to allocate (${e.message}); the file is corrupt or not what it claims to be`);
    if (process.env["SELFREPORT_DEBUG"] === "1") console.error(e.stack);
    return 1;
  }
  const err = e instanceof Error ? e : new Error(String(e));
  if (process.env["SELFREPORT_DEBUG"] === "1") console.error(err.stack);
  else console.error(`selfreport: error: ${oneLine(err.message)} (set SELFREPORT_DEBUG=1 for the stack trace)`);
  return 1;
}

/** Messages print on one line (a JSON parser's message quotes the text around the error, newlines included). */
function oneLine(message: string): string {
  return message.replace(/\s*\n\s*/g, " ").trim();
}
