/** Writing rendered charts to disk. */
import { renameSync, rmSync, writeFileSync } from "node:fs";
import { SelfreportError } from "../errors.ts";

/**
 * Writes an SVG string atomically: to `<path>.tmp-<pid>` first, then renamed over `path`, so a
 * reader never sees half a file (an interrupted run leaves the old chart or none).
 */
export function writeSvg(path: string, svg: string): void {
  if (!svg.trimStart().startsWith("<svg")) throw new SelfreportError(`refusing to write ${path}: the content is not an SVG document`);
  const tmp = `${path}.tmp-${process.pid}`;
  try {
    writeFileSync(tmp, svg, "utf8");
    renameSync(tmp, path);
  } catch (e) {
    rmSync(tmp, { force: true });
    throw new SelfreportError(`cannot write ${path}: ${(e as Error).message}`);
  }
}
