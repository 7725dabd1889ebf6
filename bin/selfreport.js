#!/usr/bin/env node
// The `selfreport` command: runs the compiled CLI (npm ci / npm run build compiles src/ to dist/).
import { existsSync } from "node:fs";
import { fileURLToPath } from "node:url";

const main = new URL("../dist/src/cli/main.js", import.meta.url);
if (!existsSync(fileURLToPath(main))) {
  console.error("selfreport: the TypeScript sources are not compiled yet; run `npm run build` (or `npm ci`) in the selfreport directory first");
  process.exit(1);
}
const { run } = await import(main.href);
// Exit as soon as the command is done, with its code: a client of a Redis that went away (or any other
// handle left open after an error) must not keep the process alive. stdout/stderr writes to files and
// pipes are synchronous on Linux, so nothing printed is lost.
process.exit(await run(process.argv));
