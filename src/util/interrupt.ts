/**
 * Ctrl-C during long work: the first SIGINT sets a flag that the training loop checks between
 * steps (it then saves a checkpoint and exits cleanly); a second SIGINT exits at once.
 */
export interface InterruptFlag {
  readonly requested: boolean;
  dispose(): void;
}

export function onInterrupt(message = "interrupt received: saving a checkpoint before exiting (Ctrl-C again to quit now)"): InterruptFlag {
  let requested = false;
  const handler = (): void => {
    if (requested) process.exit(130);
    requested = true;
    process.stderr.write(`\n${message}\n`);
  };
  process.on("SIGINT", handler);
  process.on("SIGTERM", handler);
  return {
    get requested() {
      return requested;
    },
    dispose() {
      process.off("SIGINT", handler);
      process.off("SIGTERM", handler);
    },
  };
}
