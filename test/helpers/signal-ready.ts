/**
 * Preloaded (node --import) into a `selfreport` child by spawnCli({ markSignals }): creates the file
 * named by SELFREPORT_TEST_SIGNAL_MARK once the command has installed its SIGINT handler, so a test
 * sends its signal to the command rather than to Node's start-up (which would just end the process).
 */
import { writeFileSync } from "node:fs";

const mark = process.env["SELFREPORT_TEST_SIGNAL_MARK"];
if (mark !== undefined) {
  const timer = setInterval(() => {
    if (process.listenerCount("SIGINT") > 0) {
      writeFileSync(mark, "");
      clearInterval(timer);
    }
  }, 10);
  timer.unref();
}
