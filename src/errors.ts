/**
 * An error meant for the user: the CLI prints its message as one line, without a stack trace.
 * Its message names the bad value and what was expected.
 */
export class SelfreportError extends Error {
  override name = "SelfreportError";
}
