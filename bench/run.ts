// `npm run bench -- <name>` runs bench/<name>.ts; with no name it lists the benchmarks.
import { readdirSync } from "node:fs";

const names = readdirSync(new URL(".", import.meta.url))
  .filter((f) => f.endsWith(".ts") && f !== "run.ts" && f !== "lib.ts")
  .map((f) => f.slice(0, -3));
const name = process.argv[2];
if (name === undefined || !names.includes(name)) {
  process.stderr.write(`usage: npm run bench -- <${names.join("|")}>\n`);
  process.exit(name === undefined ? 0 : 2);
}
await import(`./${name}.ts`);
