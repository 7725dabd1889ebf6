/**
 * `selfreport report --sweep`: a real sweep on a tiny model (weights and patching analyses, one
 * injected failure) gives one page with every job in the table, each finished job linked to its own
 * run report (written beside it), the four plots, escaped strings; a sweep without analyses says which
 * plots are absent; the errors; and the page in headless Chromium: no console error (the sorting
 * script runs under the page's Content-Security-Policy), no request, charts drawn, the table sorts,
 * a job link opens the job's report.
 */
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { pathToFileURL } from "node:url";
import { buildSweepReportHtml, writeSweepReport } from "../../src/report/sweep.ts";
import type { JobResult } from "../../src/sweep/jobs.ts";
import { runCapture } from "../helpers/cli.ts";
import { makeSweepFixture, type SweepFixture } from "../sweep/fixture.ts";

process.env["SELFREPORT_QUIET"] = "1";

let root = "";
let fx: SweepFixture;
let sweep = "";
let plain = "";
const FAILED = "L0-N1-classification-frozen";

before(async () => {
  root = mkdtempSync(join(tmpdir(), "sweep-report-"));
  fx = makeSweepFixture(join(root, "fx"), { docs: 60 });
  sweep = join(root, "sweep");
  process.env["SELFREPORT_SWEEP_FAIL_JOBS"] = FAILED;
  try {
    const r = await runCapture([
      "sweep", "--model", fx.modelDir, "--layers", "0,1", "--neurons", "0-3", "--heads", "regression,classification", "--analyses", "weights,patching",
      "--corpus", fx.corpus, "--n", "150", "--max-len", "12", "--weights", "raw", "--epochs", "2", "--workers", "1", "--patching-inputs", "12",
      "--weights-max-examples", "60", "--out", sweep,
    ]);
    assert.equal(r.code, 0, r.lines.join("\n"));
  } finally {
    delete process.env["SELFREPORT_SWEEP_FAIL_JOBS"];
  }
  plain = join(root, "plain");
  const r2 = await runCapture([
    "sweep", "--model", fx.modelDir, "--layers", "1", "--neurons", "0-2", "--corpus", fx.corpus, "--n", "150", "--max-len", "12",
    "--weights", "raw", "--epochs", "1", "--workers", "1", "--out", plain,
  ]);
  assert.equal(r2.code, 0, r2.lines.join("\n"));
});
after(() => rmSync(root, { recursive: true, force: true }));

function rowsOf(html: string): string[] {
  return Array.from(html.matchAll(/<tr class="(done|failed)">([\s\S]*?)<\/tr>/g), (m) => m[2]!);
}

test("report --sweep: every job in the table, each finished job linked to its own report, the four plots", async () => {
  const out = join(root, "pages", "sweep.html");
  const r = await runCapture(["report", "--sweep", sweep, "--out", out]);
  assert.equal(r.code, 0, r.lines.join("\n"));
  assert.deepEqual(r.lines, [`wrote ${out}: 16 of 16 jobs (15 done, 1 failed, 0 not finished), 4 plots; 15 job reports written, 15 linked`]);
  const html = readFileSync(out, "utf8");
  const rows = rowsOf(html);
  assert.equal(rows.length, 16);
  const results = JSON.parse(readFileSync(join(sweep, "results.json"), "utf8")) as { rows: JobResult[] };
  for (const job of results.rows) {
    const row = rows.find((x) => x.includes(`>${job.id}<`));
    assert.ok(row !== undefined, job.id);
    if (job.status === "done") {
      const href = /<a href="([^"]+)">/.exec(row)![1]!;
      assert.equal(href, `../sweep/jobs/${job.id}/report.html`);
      const target = resolve(dirname(out), href);
      assert.ok(existsSync(target), target);
      // the job's own report found its analyses and its training curve
      const page = readFileSync(target, "utf8");
      assert.ok(!page.includes("not run") && !page.includes("No training curve"), job.id);
      // the row shows the job's numbers, with the raw value to sort by
      assert.ok(row.includes(`data-sort="${job.test_r}"`), `${job.id}: test r ${job.test_r}`);
      assert.ok(row.includes(`data-sort="${job.weights_rank_w_out}"`), `${job.id}: rank`);
    } else {
      assert.equal(job.id, FAILED);
      assert.ok(!row.includes("<a "), "a failed job has no report");
      assert.match(row, /<td data-sort="failed" title="injected failure \(SELFREPORT_SWEEP_FAIL_JOBS\) in L0-N1-classification-frozen">failed<\/td>/);
    }
  }
  for (const name of ["predictability-vs-std", "predictability-vs-sparsity", "cosine-rank", "patching-slope"]) {
    assert.match(html, new RegExp(`<figure class="plot"><svg[\\s\\S]*?<figcaption>${name}</figcaption>`), name);
  }
  assert.ok(!html.includes("Not shown:"));
  // the page is a report (src/io/outputs.ts): replaced only with --force; another file never
  const refused = await runCapture(["report", "--sweep", sweep, "--out", out]);
  assert.notEqual(refused.code, 0);
  assert.match(refused.lines.join("\n"), /already holds a selfreport report; pass --force to replace it/);
  assert.equal(readFileSync(out, "utf8"), html, "a refused report leaves the page as it was");
  const notes = join(root, "pages", "notes.html");
  writeFileSync(notes, "<p>my notes</p>");
  const other = await runCapture(["report", "--sweep", sweep, "--out", notes, "--force"]);
  assert.notEqual(other.code, 0);
  assert.match(other.lines.join("\n"), /never replaced, not even with --force/);
  assert.equal(readFileSync(notes, "utf8"), "<p>my notes</p>");
  // a second run writes no job report again unless asked
  const again = await runCapture(["report", "--sweep", sweep, "--out", out, "--force"]);
  assert.match(again.lines[0]!, /; 0 job reports written, 15 linked$/);
  const rewrite = await runCapture(["report", "--sweep", sweep, "--out", out, "--force", "--rewrite-job-reports"]);
  assert.match(rewrite.lines[0]!, /; 15 job reports written, 15 linked$/);
});

test("report --sweep without analyses: the absent distributions are named; --no-job-reports links nothing", async () => {
  const out = join(plain, "report.html");
  const r = await runCapture(["report", "--sweep", plain, "--out", out, "--no-job-reports"]);
  assert.equal(r.code, 0, r.lines.join("\n"));
  assert.deepEqual(r.lines, [`wrote ${out}: 3 of 3 jobs (3 done, 0 failed, 0 not finished), 2 plots; 0 job reports written, 0 linked`]);
  const html = readFileSync(out, "utf8");
  assert.equal(rowsOf(html).length, 3);
  assert.ok(!html.includes("<a href"));
  assert.match(html, /Not shown: the W_out cosine-rank distribution .*; the patching-slope distribution/);
  assert.match(html, /\(3 finished jobs have none\)/);
});

test("the page escapes what it reads", async () => {
  const { inputs } = await writeSweepReport({ sweepDir: plain, out: join(root, "pages", "x.html"), noJobReports: true });
  inputs.manifest.settings.data.corpus = `<script>alert(1)</script>"`;
  inputs.rows[0]!.error = `<img src=x onerror="alert(2)">`;
  const html = buildSweepReportHtml(inputs);
  assert.ok(html.includes("&lt;script&gt;alert(1)&lt;/script&gt;&quot;"));
  assert.ok(!html.includes("<img"));
  assert.equal((html.match(/<script>/g) ?? []).length, 1, "only the sorting script");
});

test("errors: --run on a sweep hints at --sweep; --sweep on a run, neither or both, --analyses with --sweep: one line each", async () => {
  const out = join(root, "pages", "e.html");
  const cases: Array<[string[], RegExp]> = [
    [["--run", sweep], /is a sweep folder, not a run directory: .*`selfreport report --sweep .*sweep --out FILE\.html` reports the whole sweep$/],
    [["--sweep", join(sweep, "jobs", "L1-N2-regression-frozen")], /is not a sweep folder: sweep\.json is missing; it is a run directory: `selfreport report --run .*L1-N2-regression-frozen`$/],
    [["--sweep", join(root, "nope")], /sweep folder .*nope does not exist$/],
    [[], /give either --run RUN_DIR \(one run\) or --sweep SWEEP_DIR \(a whole sweep\)$/],
    [["--run", sweep, "--sweep", sweep], /give either --run/],
    [["--sweep", sweep, "--analyses", sweep], /--analyses applies to --run only/],
  ];
  for (const [args, re] of cases) {
    const r = await runCapture(["report", ...args, "--out", out]);
    assert.equal(r.code, 1, args.join(" "));
    assert.equal(r.lines.length, 1, r.lines.join("\n"));
    assert.match(r.lines[0]!, re);
  }
  assert.ok(!existsSync(out));
});

const CHROMIUM = "/usr/bin/chromium";

test("headless Chromium: no console error, no request, charts drawn, the table sorts, a job link opens its report", { skip: existsSync(CHROMIUM) ? false : `${CHROMIUM} is absent (install Debian's chromium: bash scripts/setup.sh)` }, async () => {
  const file = join(root, "pages", "browser.html");
  await writeSweepReport({ sweepDir: sweep, out: file });
  const { chromium } = await import("playwright-core");
  const browser = await chromium.launch({ executablePath: CHROMIUM, args: ["--no-sandbox", "--disable-gpu"] });
  try {
    const page = await browser.newPage();
    const problems: string[] = [];
    const url = pathToFileURL(file).href;
    const jobPrefix = pathToFileURL(join(sweep, "jobs")).href + "/";
    page.on("console", (m) => void (m.type() === "error" && problems.push(`console error: ${m.text()}`)));
    page.on("pageerror", (e) => void problems.push(`page error: ${e.message}`));
    await page.route("**/*", (route) => {
      const u = route.request().url();
      if (u === url || (u.startsWith(jobPrefix) && u.endsWith("/report.html"))) return route.continue();
      problems.push(`request: ${u}`);
      return route.abort();
    });
    await page.goto(url, { waitUntil: "load" });
    const boxes = await page.$$eval("svg", (svgs) => svgs.map((s) => {
      const r = s.getBoundingClientRect();
      return { w: r.width, h: r.height };
    }));
    assert.equal(boxes.length, 4);
    for (const b of boxes) assert.ok(b.w > 50 && b.h > 50, `chart ${b.w}×${b.h}`);

    /** The cells of one column, top to bottom (the header text without its sort arrow). */
    const column = async (head: string): Promise<string[]> => (await page.evaluate(`(() => {
      const heads = Array.from(document.querySelectorAll("#results thead th")).map((th) => th.textContent.replace(/[▲▼ ]+$/, ""));
      const i = heads.indexOf(${JSON.stringify(head)});
      return Array.from(document.querySelectorAll("#results tbody tr")).map((tr) => tr.cells[i].textContent);
    })()`)) as string[];
    const results = JSON.parse(readFileSync(join(sweep, "results.json"), "utf8")) as { rows: JobResult[] };
    const byR = results.rows.filter((r) => r.test_r !== null).sort((a, b) => a.test_r! - b.test_r!).map((r) => r.id);
    await page.click("#results thead th:has-text('test r')");
    const asc = await column("job");
    assert.deepEqual(asc, [...byR, FAILED], "ascending by test r, the failed job (no number) last");
    assert.equal(await page.getAttribute("#results thead th:has-text('test r')", "aria-sort"), "ascending");
    await page.click("#results thead th:has-text('test r')");
    assert.deepEqual(await column("job"), [...[...byR].reverse(), FAILED], "descending, empty still last");
    await page.click("#results thead th:has-text('head')");
    const heads = await column("head");
    assert.deepEqual(heads, [...heads].sort(), "text columns sort alphabetically");
    // a job link opens that job's run report
    const id = byR[0]!;
    await Promise.all([page.waitForNavigation(), page.click(`#results a:has-text('${id}')`)]);
    assert.equal(page.url(), `${jobPrefix}${id}/report.html`);
    const m = /^L(\d+)-N(\d+)-/.exec(id)!;
    assert.match(await page.title(), new RegExp(`layer ${m[1]} neuron ${m[2]} `));
    assert.deepEqual(problems, [], problems.join("; "));
  } finally {
    await browser.close();
  }
});
