/** The notebooks use the library only through its public entry: `from "selfreport"` (notebooks/deno.json maps it to src/index.ts). */
import { test } from "node:test";
import assert from "node:assert/strict";
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { findRepoRoot } from "../src/tensor/backend/native.ts";
import * as api from "../src/index.ts";

const repo = findRepoRoot();
if (repo === null) throw new Error("cannot find the selfreport repository root from the test file");
const dir = join(repo, "notebooks");

test("notebooks/deno.json maps the bare specifier selfreport to the public entry", () => {
  const cfg = JSON.parse(readFileSync(join(dir, "deno.json"), "utf8")) as { imports?: Record<string, string> };
  assert.equal(cfg.imports?.["selfreport"], "../src/index.ts");
});

test("every notebook imports the library only from \"selfreport\", and only names it exports", () => {
  for (const f of readdirSync(dir).filter((n) => n.endsWith(".ipynb"))) {
    const nb = JSON.parse(readFileSync(join(dir, f), "utf8")) as { cells: Array<{ cell_type: string; source: string[] | string }> };
    const code = nb.cells.filter((c) => c.cell_type === "code").map((c) => (Array.isArray(c.source) ? c.source.join("") : c.source)).join("\n");
    const imports = [...code.matchAll(/^import\s+(?:type\s+)?\{([^}]*)\}\s+from\s+"([^"]+)"/gm)];
    assert.ok(imports.length > 0, `${f}: no imports found`);
    for (const [, names, from] of imports) {
      if (from!.startsWith("node:")) continue;
      assert.equal(from, "selfreport", `${f} imports from ${from}`);
      for (const raw of names!.split(",").map((n) => n.trim()).filter((n) => n !== "")) {
        if (raw.startsWith("type ")) continue; // types vanish at run time
        assert.ok(Object.hasOwn(api, raw), `${f} imports ${raw}, which src/index.ts does not export`);
      }
    }
  }
});
