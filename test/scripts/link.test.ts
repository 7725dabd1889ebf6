/**
 * scripts/link.sh (the last step of scripts/setup.sh), run as a real child process with its bin
 * directory and Jupyter data directory in a temporary folder: `selfreport` ends up on PATH running
 * this clone, the Deno kernel is (re-)registered pointing at this clone's deno, a stale link and a
 * stale kernel from another clone are replaced, and a second run changes nothing.
 */
import { test, after } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync, mkdirSync, readFileSync, readlinkSync, realpathSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { repoRoot } from "../../src/model/resolve.ts";

const repo = realpathSync(repoRoot());
const root = mkdtempSync(join(tmpdir(), "selfreport-link-"));
after(() => rmSync(root, { recursive: true, force: true }));
const version = (JSON.parse(readFileSync(join(repo, "package.json"), "utf8")) as { version: string }).version;

function link(home: string, path = process.env["PATH"] ?? ""): { code: number | null; out: string; err: string } {
  const r = spawnSync("bash", [join(repo, "scripts", "link.sh")], {
    env: { ...process.env, SELFREPORT_BIN_DIR: join(home, "bin"), XDG_DATA_HOME: join(home, "data"), PATH: path },
    encoding: "utf8",
  });
  return { code: r.status, out: r.stdout, err: r.stderr };
}

/** The kernel's executable, resolved (deno records the path it was started by: node_modules/.bin/deno, a symlink). */
const kernelArgv0 = (home: string): string => realpathSync((JSON.parse(readFileSync(join(home, "data", "jupyter", "kernels", "deno", "kernel.json"), "utf8")) as { argv: string[] }).argv[0]!);
const ourDeno = realpathSync(join(repo, "node_modules", ".bin", "deno"));

test("a fresh run links selfreport onto PATH and registers the kernel; `selfreport` then runs this clone", () => {
  const home = join(root, "fresh");
  const bin = join(home, "bin");
  const r = link(home, `${bin}:${process.env["PATH"]}`);
  assert.equal(r.code, 0, r.err);
  assert.equal(r.err, "");
  assert.equal(readlinkSync(join(bin, "selfreport")), join(repo, "bin", "selfreport.js"));
  assert.equal(kernelArgv0(home), ourDeno);
  assert.deepEqual(r.out.trim().split("\n"), [
    `setup: linked ${join(bin, "selfreport")} -> ${join(repo, "bin", "selfreport.js")}`,
    `setup: registered the Deno Jupyter kernel in ${join(home, "data", "jupyter", "kernels", "deno")} (running ${ourDeno})`,
  ]);
  const run = spawnSync("selfreport", ["--version"], { env: { ...process.env, PATH: `${bin}:${process.env["PATH"]}` }, encoding: "utf8", cwd: root });
  assert.equal(run.status, 0, run.stderr);
  assert.equal(run.stdout.trim(), version);

  // again: nothing to change, and no "could not register" for the kernel that now exists
  const again = link(home, `${bin}:${process.env["PATH"]}`);
  assert.equal(again.code, 0, again.err);
  assert.equal(again.out.split("\n")[0], `setup: ${join(bin, "selfreport")} already runs ${join(repo, "bin", "selfreport.js")}`);
  assert.ok(!again.out.includes("could not") && !again.err.includes("could not"), again.out + again.err);
  assert.equal(kernelArgv0(home), ourDeno);
});

test("another clone's link and kernel are replaced; a bin directory off PATH is named; a real file is left alone", () => {
  const home = join(root, "stale");
  mkdirSync(join(home, "bin"), { recursive: true });
  symlinkSync("/elsewhere/selfreport/bin/selfreport.js", join(home, "bin", "selfreport"));
  const kernelDir = join(home, "data", "jupyter", "kernels", "deno");
  mkdirSync(kernelDir, { recursive: true });
  writeFileSync(join(kernelDir, "kernel.json"), JSON.stringify({ argv: ["/elsewhere/selfreport/node_modules/deno/deno", "jupyter", "--kernel", "--conn", "{connection_file}"], display_name: "Deno", language: "typescript" }));
  const r = link(home);
  assert.equal(r.code, 0, r.err);
  assert.equal(readlinkSync(join(home, "bin", "selfreport")), join(repo, "bin", "selfreport.js"));
  assert.ok(r.out.includes(" (it pointed at /elsewhere/selfreport/bin/selfreport.js)"), r.out);
  assert.ok(r.out.includes(`setup: ${join(home, "bin")} is not on your PATH: add it`), r.out);
  assert.equal(kernelArgv0(home), ourDeno);

  const file = join(root, "file");
  mkdirSync(join(file, "bin"), { recursive: true });
  writeFileSync(join(file, "bin", "selfreport"), "#!/bin/sh\necho mine\n");
  const kept = link(file);
  assert.equal(kept.code, 1);
  assert.equal(kept.err.trim(), `setup: ${join(file, "bin", "selfreport")} exists and is not a symlink, so it was left alone; remove it and rerun bash scripts/link.sh`);
  assert.equal(readFileSync(join(file, "bin", "selfreport"), "utf8"), "#!/bin/sh\necho mine\n");
  assert.equal(kernelArgv0(file), ourDeno, "the kernel is registered all the same");
});

test("scripts/setup.sh ends with scripts/link.sh", () => {
  const lines = readFileSync(join(repo, "scripts", "setup.sh"), "utf8").trim().split("\n");
  assert.equal(lines.at(-1), "bash scripts/link.sh");
});
