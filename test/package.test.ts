/**
 * The package as its users get it (issue 13): `npm pack`, installed from the tarball into an
 * empty project, then each entry point imported with plain `node` (ESM and require()), the
 * README's TypeScript client block run as written against a running server, the CLI from the
 * installed bin, and the client bundled for browsers with esbuild (no Node imports in it) and
 * called through fetch.
 */
import assert from "node:assert/strict";
import { mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { build } from "esbuild";
import { execa } from "execa";
import { startEnvironment, stopTestPostgres, type TestEnvironment } from "./helpers.js";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
after(() => stopTestPostgres());

describe("the npm package, installed from its tarball", () => {
  let scratch: string;
  let server: TestEnvironment;
  const node = (file: string, ...args: string[]) =>
    execa(process.execPath, [file, ...args], { cwd: scratch, reject: false, timeout: 60_000, env: { NODE_OPTIONS: "" } });

  before(async () => {
    scratch = await mkdtemp(path.join(tmpdir(), "runtara-package-"));
    server = await startEnvironment();
    const packed = await execa("npm", ["pack", "--silent", "--pack-destination", scratch], { cwd: root });
    const tarball = path.join(scratch, packed.stdout.trim().split("\n").pop()!);
    await writeFile(path.join(scratch, "package.json"), JSON.stringify({ name: "scratch", private: true, type: "module" }));
    // From npm's cache (CI's `npm ci` filled it); no install scripts are needed to import.
    await execa("npm", ["install", "--no-audit", "--no-fund", "--prefer-offline", "--ignore-scripts", tarball], { cwd: scratch, timeout: 300_000 });
  });
  after(async () => {
    await server?.close();
    await rm(scratch, { recursive: true, force: true });
  });

  it("ships compiled JavaScript and types, not TypeScript sources", async () => {
    const listed = await execa("npm", ["pack", "--dry-run", "--json"], { cwd: root });
    const files = (JSON.parse(listed.stdout) as [{ files: { path: string }[] }])[0].files.map((f) => f.path);
    assert.ok(files.includes("dist/src/client/index.js") && files.includes("dist/src/client/index.d.ts"), "client and its types");
    assert.ok(files.some((f) => /^migrations\/.*\.sql$/.test(f)), "migrations");
    assert.deepEqual(files.filter((f) => f.endsWith(".ts") && !f.endsWith(".d.ts")), [], "no .ts sources");
  });

  it("the README's client block runs as written from plain node", async () => {
    const readme = await readFile(path.join(root, "README.md"), "utf8");
    const block = /<!-- client-ts -->\n```js\n([\s\S]*?)```/.exec(readme)![1]!;
    assert.match(block, /http:\/\/localhost:8002/);
    const script = `${block.replace("http://localhost:8002", server.baseUrl)}\nconsole.log(JSON.stringify({ names: images.map((i) => i.name), totalCount: String(totalCount) }));\n`;
    await writeFile(path.join(scratch, "readme.mjs"), script);
    const r = await node("readme.mjs");
    assert.equal(r.exitCode, 0, r.stderr);
    assert.deepEqual(JSON.parse(r.stdout), { names: [], totalCount: "0" });
  });

  it("every entry point imports with plain node, as ES modules and through require()", async () => {
    await writeFile(
      path.join(scratch, "entries.mjs"),
      `import { createEnvironmentClient, EnvironmentService } from "runtara-environment/client";
import { HealthCheckResponseSchema } from "runtara-environment/gen/runtara/environment/v1/environment_pb.js";
import { step, sleep, runWorkflow } from "runtara-environment/sdk";
import { Environment } from "runtara-environment";
import { toJsonString } from "@bufbuild/protobuf";
const health = await createEnvironmentClient({ baseUrl: process.argv[2], transport: process.argv[3] }).healthCheck({});
console.log(JSON.stringify({ service: EnvironmentService.typeName, health: JSON.parse(toJsonString(HealthCheckResponseSchema, health)), sdk: [typeof step, typeof sleep, typeof runWorkflow], embed: typeof Environment }));
`,
    );
    for (const transport of ["connect", "grpc", "grpc-web"]) {
      const r = await node("entries.mjs", server.baseUrl, transport);
      assert.equal(r.exitCode, 0, `${transport}: ${r.stderr}`);
      const out = JSON.parse(r.stdout) as { service: string; health: { healthy: boolean }; sdk: string[]; embed: string };
      assert.equal(out.service, "runtara.environment.v1.EnvironmentService");
      assert.equal(out.health.healthy, true, transport);
      assert.deepEqual(out.sdk, ["function", "function", "function"]);
      assert.equal(out.embed, "function");
    }
    await writeFile(
      path.join(scratch, "entries.cjs"),
      `const { createEnvironmentClient } = require("runtara-environment/client");
createEnvironmentClient({ baseUrl: process.argv[2] }).healthCheck({}).then((h) => console.log(h.healthy));
`,
    );
    const cjs = await node("entries.cjs", server.baseUrl);
    assert.equal(cjs.exitCode, 0, cjs.stderr);
    assert.equal(cjs.stdout.trim(), "true");
  });

  it("the server bins answer --help and --version without starting anything", async () => {
    for (const bin of ["runtara-environment", "runtara-core"]) {
      const help = await node(path.join(scratch, "node_modules/.bin", bin), "--help");
      assert.equal(help.exitCode, 0, help.stderr);
      assert.match(help.stdout, new RegExp(`^usage: ${bin}\\n[\\s\\S]*environment variables`));
      const version = await node(path.join(scratch, "node_modules/.bin", bin), "--version");
      assert.match(version.stdout, /^\d+\.\d+\.\d+$/);
      const wrong = await node(path.join(scratch, "node_modules/.bin", bin), "--port", "1");
      assert.equal(wrong.exitCode, 2);
    }
    assert.deepEqual((await readdir(scratch)).filter((f) => f === ".data"), [], "no data directory was made");
  });

  it("the installed runtara bin runs without a TypeScript loader", async () => {
    const r = await node(path.join(scratch, "node_modules/.bin/runtara"), "--server", server.baseUrl, "-o", "json", "health");
    assert.equal(r.exitCode, 0, r.stderr);
    assert.equal((JSON.parse(r.stdout) as { healthy: boolean }).healthy, true);
  });

  it("bundles for browsers with esbuild (the fetch-based client, no Node imports) and calls the server through fetch", async () => {
    await writeFile(
      path.join(scratch, "browser.mjs"),
      `import { createEnvironmentClient } from "runtara-environment/client";
export async function check(baseUrl) {
  const env = createEnvironmentClient({ baseUrl, tenant: "acme" });
  const health = await env.healthCheck({});
  const images = await env.listImages({});
  let code;
  try { await env.getImage({ imageId: "not-a-uuid" }); } catch (e) { code = e.code; }
  return { healthy: health.healthy, total: String(images.totalCount), code };
}
`,
    );
    const result = await build({
      entryPoints: [path.join(scratch, "browser.mjs")],
      absWorkingDir: scratch,
      bundle: true,
      platform: "browser",
      format: "esm",
      write: false,
      logLevel: "silent",
      metafile: true,
    });
    const inputs = Object.keys(result.metafile.inputs);
    assert.ok(inputs.some((i) => i.includes("dist/src/client/browser.js")), "the browser build was chosen");
    assert.ok(!inputs.some((i) => i.includes("connect-node") || i.includes("/dist/src/client/index.js")), `no Node client: ${inputs.join(" ")}`);
    const bundle = result.outputFiles[0]!.text;
    assert.ok(!/from\s*"node:|require\("(node:)?(http2?|fs|net|tls)"\)/.test(bundle), "no Node built-ins");
    // Node's fetch stands in for a browser's here; the Chromium test runs it in a real one.
    await writeFile(path.join(scratch, "bundle.mjs"), bundle);
    await writeFile(path.join(scratch, "run-bundle.mjs"), `import { check } from "./bundle.mjs";\nconsole.log(JSON.stringify(await check(process.argv[2])));\n`);
    const r = await node("run-bundle.mjs", server.baseUrl);
    assert.equal(r.exitCode, 0, r.stderr);
    assert.deepEqual(JSON.parse(r.stdout), { healthy: true, total: "0", code: 3 /* INVALID_ARGUMENT */ });
  });
});
