// Builds the OpenBLAS Node-API addon (native/) at `npm ci`. Never fails the install:
// when the build is impossible, selfreport falls back to its pure TypeScript kernels
// and says so in one line.
import { spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = dirname(dirname(fileURLToPath(import.meta.url)));
const nativeDir = join(root, "native");
if (!existsSync(join(nativeDir, "binding.gyp"))) process.exit(0);

const gyp = join(dirname(process.execPath), "..", "lib", "node_modules", "npm", "node_modules", "node-gyp", "bin", "node-gyp.js");
// Offline machines cannot fetch Node headers; point node-gyp at the ones installed beside node.
const localHeaders = join(dirname(process.execPath), "..");
const nodedir = process.env.npm_config_nodedir ??
  (existsSync(join(localHeaders, "include", "node", "node_api.h")) ? localHeaders : undefined);
const args = existsSync(gyp) ? [gyp, "rebuild", ...(nodedir ? [`--nodedir=${nodedir}`] : [])] : ["-e", "process.exit(1)"];
const result = spawnSync(process.execPath, args, { cwd: nativeDir, encoding: "utf8" });
if (result.status === 0) {
  console.log("selfreport: native OpenBLAS backend built (native/build/Release/selfreport_blas.node)");
} else {
  const why = (result.stderr || result.stdout || "node-gyp not found").trim().split("\n").filter((l) => /error/i.test(l)).slice(0, 1).join(" ");
  console.log(`selfreport: native OpenBLAS backend not built (${why || "build failed"}); using the pure TypeScript backend. Install libopenblas-dev and re-run npm ci for full speed.`);
}
