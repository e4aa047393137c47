import assert from "node:assert/strict";
import { readdir, readFile } from "node:fs/promises";
import path from "node:path";
import { describe, it } from "node:test";
import { fileURLToPath } from "node:url";

/**
 * The import rules of the architecture (README "Architecture"), checked on the source tree.
 * Paths are relative to the repository root; a relative import resolves to its .ts file.
 */
const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");

interface Import {
  from: string;
  to: string;
  typeOnly: boolean;
}

type Rule = { name: string; broken: (i: Import) => boolean };

const under = (dir: string) => (p: string) => p.startsWith(`${dir}/`);
const anyOf = (...dirs: string[]) => (p: string) => dirs.some((d) => p === d || p.startsWith(`${d}/`));
const isHandler = (p: string) => /^src\/server\/[a-z-]+-handlers\.ts$/.test(p);
const DOMAIN = anyOf("src/instances", "src/images", "src/core", "src/lifecycle", "src/db", "src/scheduler", "src/runner");

export const RULES: Rule[] = [
  {
    name: "src/instances reaches core only through the generated client (no src/instances -> src/core)",
    broken: (i) => under("src/instances")(i.from) && under("src/core")(i.to),
  },
  {
    name: "src/core imports src/server only in its composition root (src/core/runtime.ts)",
    broken: (i) => under("src/core")(i.from) && i.from !== "src/core/runtime.ts" && under("src/server")(i.to),
  },
  {
    name: "runners know nothing of the database or the services",
    broken: (i) =>
      under("src/runner")(i.from) &&
      (anyOf("src/db", "src/instances", "src/core", "src/server", "src/scheduler", "src/lifecycle", "src/images")(i.to) ||
        ["slonik", "pg"].includes(i.to)),
  },
  {
    name: "the SDK imports nothing of the server, the database or the runners",
    broken: (i) => under("src/sdk")(i.from) && ((under("src")(i.to) && !under("src/sdk")(i.to)) || ["slonik", "pg"].includes(i.to)),
  },
  {
    name: "RPC handlers take services as parameters: type-only imports from the domain, never a repository or the database",
    broken: (i) => isHandler(i.from) && ((DOMAIN(i.to) && !i.typeOnly) || i.to.endsWith("/repository.ts") || ["slonik", "pg"].includes(i.to)),
  },
  {
    name: "src/lifecycle is transport-free",
    broken: (i) =>
      under("src/lifecycle")(i.from) &&
      (anyOf("gen", "src/server", "src/protocol", "src/core", "src/instances", "src/scheduler", "src/runner")(i.to) ||
        i.to.startsWith("@connectrpc/") ||
        i.to.startsWith("@bufbuild/")),
  },
  {
    name: "the runtara CLI and the client reach the server only through the generated client (nothing of the server, database, runners or domain)",
    broken: (i) =>
      anyOf("src/cli/runtara", "src/cli/runtara.ts", "src/client")(i.from) &&
      ((under("src")(i.to) && !anyOf("src/cli/runtara", "src/client", "src/package.ts")(i.to)) || ["slonik", "pg"].includes(i.to)),
  },
  {
    name: "the web console runs in browsers: it imports only its own modules, the generated code, the browser client and browser libraries",
    broken: (i) =>
      under("src/console")(i.from) &&
      ((under("src")(i.to) && !anyOf("src/console", "src/client/browser.ts")(i.to)) || ["slonik", "pg", "pino"].includes(i.to) || i.to.startsWith("node:")),
  },
  {
    name: "protobuf only at the edge: gen/ is imported by src/server, src/protocol, src/sdk, the client and CLI, the core gateway and core's composition root",
    broken: (i) =>
      under("gen")(i.to) &&
      under("src")(i.from) &&
      !anyOf("src/server", "src/protocol", "src/sdk", "src/client", "src/cli/runtara", "src/console")(i.from) &&
      !["src/instances/core-gateway.ts", "src/core/runtime.ts"].includes(i.from),
  },
];

const IMPORT = /^\s*(import|export)\s+(type\s+)?(?:[^'";]*?\s+from\s+)?["']([^"']+)["']/gm;
const DYNAMIC = /\bimport\(\s*["']([^"']+)["']\s*\)/g;

/** The imports of one file, relative ones resolved to repository paths. */
export function importsOf(file: string, source: string): Import[] {
  const resolve = (spec: string) =>
    spec.startsWith(".") ? path.posix.normalize(path.posix.join(path.posix.dirname(file), spec)).replace(/\.js$/, ".ts") : spec;
  const found: Import[] = [];
  for (const m of source.matchAll(IMPORT)) found.push({ from: file, to: resolve(m[3]!), typeOnly: m[2] !== undefined });
  for (const m of source.matchAll(DYNAMIC)) found.push({ from: file, to: resolve(m[1]!), typeOnly: false });
  return found;
}

export function violations(imports: readonly Import[]): string[] {
  return imports.flatMap((i) => RULES.filter((r) => r.broken(i)).map((r) => `${i.from} -> ${i.to}: ${r.name}`));
}

async function sourceFiles(dir: string): Promise<string[]> {
  const entries = await readdir(path.join(ROOT, dir), { withFileTypes: true });
  const nested = await Promise.all(
    entries.map((e) => (e.isDirectory() ? sourceFiles(`${dir}/${e.name}`) : /\.tsx?$/.test(e.name) ? [`${dir}/${e.name}`] : [])),
  );
  return nested.flat();
}

describe("architecture", () => {
  it("src/ follows every import rule", async () => {
    const files = await sourceFiles("src");
    assert.ok(files.length > 50, `found only ${files.length} source files`);
    const imports = (await Promise.all(files.map(async (f) => importsOf(f, await readFile(path.join(ROOT, f), "utf8"))))).flat();
    assert.ok(imports.length > 200);
    assert.deepEqual(violations(imports), []);
  });

  it("each rule catches a breaking import", () => {
    const broken: [string, string][] = [
      ["src/instances/manager.ts", 'import { InstanceCalls } from "../core/instance-calls.js";'],
      ["src/core/instance-calls.ts", 'import { toConnectError } from "../server/errors.js";'],
      ["src/runner/native.ts", 'import { createDatabase } from "../db/index.js";'],
      ["src/sdk/workflow.ts", 'import { Environment } from "../environment.js";'],
      ["src/server/lifecycle-handlers.ts", 'import * as repo from "../instances/repository.js";'],
      ["src/server/lifecycle-handlers.ts", 'import { transitions } from "../lifecycle/index.js";'],
      ["src/lifecycle/transitions.ts", 'import { InstanceStatus } from "../../gen/runtara/core/v1/types_pb.js";'],
      ["src/instances/launcher.ts", 'import { RunnerType } from "../../gen/runtara/environment/v1/environment_pb.js";'],
      ["src/console/pages/instances.tsx", 'import { InstanceManager } from "../../instances/index.js";'],
      ["src/console/session.ts", 'import { readFile } from "node:fs";'],
    ];
    for (const [file, line] of broken) {
      assert.equal(violations(importsOf(file, line)).length > 0, true, `${file}: ${line} should break a rule`);
    }
    assert.deepEqual(violations(importsOf("src/server/lifecycle-handlers.ts", 'import type { InstanceManager } from "../instances/index.js";')), []);
    assert.deepEqual(violations(importsOf("src/console/session.ts", 'import { createEnvironmentClient } from "../client/browser.js";')), []);
  });

  it("reads multi-line, type-only, re-export and dynamic imports", () => {
    const found = importsOf(
      "src/a/b.ts",
      'import {\n  x,\n  y,\n} from "../c/d.js";\nimport type { T } from "./e.js";\nexport * from "./f.js";\nconst m = await import("pg");\n',
    );
    assert.deepEqual(found, [
      { from: "src/a/b.ts", to: "src/c/d.ts", typeOnly: false },
      { from: "src/a/b.ts", to: "src/a/e.ts", typeOnly: true },
      { from: "src/a/b.ts", to: "src/a/f.ts", typeOnly: false },
      { from: "src/a/b.ts", to: "pg", typeOnly: false },
    ]);
  });
});
