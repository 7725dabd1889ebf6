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
process.exitCode = await run(process.argv);
