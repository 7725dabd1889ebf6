/**
 * An error meant for the user: the CLI prints its message as one line, without a stack trace.
 * Its message names the bad value and what was expected.
 */
export class SelfreportError extends Error {
  override name = "SelfreportError";
}

/**
 * Long work (training, pre-training) stopped on Ctrl-C after saving its checkpoint. Library code
 * throws it instead of exiting the process; the CLI maps it to exit code 130 (128 + SIGINT).
 */
export class InterruptedError extends SelfreportError {
  override name = "InterruptedError";
  readonly exitCode = 130;
}
