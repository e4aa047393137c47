/**
 * `npm run bench` builds the checkout, then runs every benchmark, one child process each (so one's memory and processes
 * cannot weigh on the next), writes bench/results.json (figures, targets, the machine) and
 * regenerates the README's performance table from it. `npm run bench -- <name>...` runs only
 * those and replaces their entries in results.json; `--list` names them; `--render` only
 * regenerates the README table from results.json.
 */
import { spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { cpus, loadavg, release, tmpdir, totalmem } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { renderResultsTable, type BenchResult, type Results } from "./results.js";
import type { Figure } from "./lib.js";

const here = path.dirname(fileURLToPath(import.meta.url));
const RESULTS = path.join(here, "results.json");
const README = path.join(here, "..", "README.md");
// Modules the benches use, not benches themselves.
const NOT_BENCHES = new Set(["run", "lib", "results", "start-client"]);

const names = readdirSync(here)
  .filter((f) => f.endsWith(".ts") && !NOT_BENCHES.has(f.slice(0, -3)))
  .map((f) => f.slice(0, -3))
  .sort();
const args = process.argv.slice(2);
if (args.includes("--list") || args.includes("--help")) {
  process.stdout.write(`usage: npm run bench [-- <${names.join("|")}>...]\n`);
  process.exit(0);
}
if (args.includes("--render")) {
  renderReadme(JSON.parse(readFileSync(RESULTS, "utf8")) as Results);
  process.exit(0);
}
const unknown = args.filter((a) => !names.includes(a));
if (unknown.length > 0) {
  process.stderr.write(`unknown benchmark ${unknown.join(", ")}; usage: npm run bench [-- <${names.join("|")}>...]\n`);
  process.exit(2);
}

const previous: Results | undefined = existsSync(RESULTS) ? (JSON.parse(readFileSync(RESULTS, "utf8")) as Results) : undefined;
const results: Results = {
  machine: {
    cpus: cpus().length,
    cpuModel: cpus()[0]?.model ?? "unknown",
    memoryGiB: Math.round(totalmem() / 2 ** 30),
    kernel: release(),
    node: process.version,
    loadAtStart: loadavg().map((l) => Math.round(l * 100) / 100),
  },
  ranAt: new Date().toISOString(),
  benches: args.length > 0 && previous ? { ...previous.benches } : {},
};

// Some benches start the server as users do (dist/, and the launcher in dist/launcher): build
// them from this checkout first, or they measure whatever was built last.
const build = spawnSync("npm", ["run", "--silent", "build"], { stdio: "inherit", cwd: path.join(here, "..") });
if (build.status !== 0) {
  process.stderr.write("npm run build failed: the benches would run an old build\n");
  process.exit(1);
}

const scratch = mkdtempSync(path.join(tmpdir(), "runtara-bench-"));
let failed = 0;
try {
  for (const name of args.length > 0 ? args : names) {
    process.stdout.write(`\n=== bench ${name} ===\n`);
    const file = path.join(scratch, `${name}.json`);
    const t0 = performance.now();
    const run = spawnSync(process.execPath, ["--import", "tsx", path.join(here, `${name}.ts`)], {
      stdio: "inherit",
      env: { ...process.env, BENCH_RESULTS: file },
    });
    const seconds = Math.round((performance.now() - t0) / 100) / 10;
    const ok = run.status === 0;
    if (!ok) failed++;
    const figures: Figure[] = existsSync(file) ? (JSON.parse(readFileSync(file, "utf8")) as Figure[]) : [];
    const entry: BenchResult = { ok, seconds, ranAt: new Date().toISOString(), figures };
    results.benches[name] = entry;
  }
} finally {
  rmSync(scratch, { recursive: true, force: true });
}

writeFileSync(RESULTS, `${JSON.stringify(results, null, 2)}\n`);
process.stdout.write(`\nwrote ${path.relative(process.cwd(), RESULTS)}\n`);
renderReadme(results);
process.exit(failed > 0 ? 1 : 0);

/** The README's table between its markers, from `r`. */
function renderReadme(r: Results): void {
  const readme = readFileSync(README, "utf8");
  const [start, end] = ["<!-- bench-results:start -->", "<!-- bench-results:end -->"];
  const from = readme.indexOf(start);
  const to = readme.indexOf(end);
  if (from >= 0 && to > from) writeFileSync(README, `${readme.slice(0, from + start.length)}\n${renderResultsTable(r)}${readme.slice(to)}`);
  if (from >= 0) process.stdout.write("wrote the README's performance table\n");
}
