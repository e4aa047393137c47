/**
 * A real browser (issue 13): headless Chromium (Debian's `chromium`) loads test/browser/page.ts,
 * bundled with esbuild and served from another origin than the API, which calls the API with
 * @connectrpc/connect-web over Connect and gRPC-Web: health, a 40 MiB resumable upload with a
 * dropped chunk, start, WatchInstance to COMPLETED, an error's code. CORS (preflights, exposed
 * headers) is checked by the browser itself: a wrong answer fails the page's calls.
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import http from "node:http";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { build } from "esbuild";
import { buildFixtures } from "./fixtures/build.js";
import { freePort, startEnvironment, stopTestPostgres, type TestEnvironment } from "./helpers.js";

const here = path.dirname(fileURLToPath(import.meta.url));
const IMAGE_BYTES = 40 * 1024 * 1024;
after(() => stopTestPostgres());

interface PageResult {
  ok: boolean;
  error?: string;
  healthConnect?: boolean;
  healthGrpcWeb?: boolean;
  requestIdVisible?: boolean;
  droppedCode?: number | string;
  resumedFrom?: number;
  progress?: number;
  image?: { imageId: string; size: number; sha256: boolean };
  instanceId?: string;
  statuses?: string[];
  connectError?: { code: number; message: string };
  grpcWebError?: { code: number; message: string };
}

/** The page's origin: the page, its script, the image to upload, and where the page reports. */
async function pageServer(script: string, image: Buffer): Promise<{ origin: string; result: Promise<PageResult>; close: () => void }> {
  let report!: (r: PageResult) => void;
  const result = new Promise<PageResult>((resolve) => (report = resolve));
  const server = http.createServer((req, res) => {
    if (req.url?.startsWith("/?") || req.url === "/") {
      res.writeHead(200, { "content-type": "text/html" }).end('<!doctype html><title>runtara</title><script type="module" src="/page.js"></script>');
    } else if (req.url === "/page.js") {
      res.writeHead(200, { "content-type": "text/javascript" }).end(script);
    } else if (req.url === "/workflow.bin") {
      res.writeHead(200, { "content-type": "application/octet-stream" }).end(image);
    } else if (req.url === "/result" && req.method === "POST") {
      let body = "";
      req.setEncoding("utf8").on("data", (d: string) => (body += d));
      req.on("end", () => {
        res.writeHead(204).end();
        report(JSON.parse(body) as PageResult);
      });
    } else {
      res.writeHead(404).end();
    }
  });
  const port = await freePort();
  await new Promise<void>((resolve) => server.listen(port, "127.0.0.1", resolve));
  return { origin: `http://127.0.0.1:${port}`, result, close: () => server.close() };
}

describe("a web page in headless Chromium", () => {
  let t: TestEnvironment;
  let page: Awaited<ReturnType<typeof pageServer>>;
  let profile: string;

  before(async () => {
    const bundled = await build({ entryPoints: [path.join(here, "browser/page.ts")], bundle: true, platform: "browser", format: "esm", write: false, logLevel: "silent" });
    // A static workflow binary padded to 40 MiB (the loader ignores what follows its segments).
    const binary = await readFile((await buildFixtures()).workflow);
    const image = Buffer.concat([binary, randomBytes(IMAGE_BYTES - binary.length)]);
    page = await pageServer(bundled.outputFiles[0]!.text, image);
    t = await startEnvironment({ corsOrigins: [page.origin] });
    profile = await mkdtemp(path.join(tmpdir(), "runtara-chromium-"));
  });
  after(async () => {
    page?.close();
    await t?.close();
    await rm(profile, { recursive: true, force: true });
  });

  it("calls the API over Connect and gRPC-Web, uploads 40 MiB resumably, follows an instance, reads an error's code", async () => {
    const chromium = spawn(
      "chromium",
      ["--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run", `--user-data-dir=${profile}`, `${page.origin}/?api=${encodeURIComponent(t.baseUrl)}`],
      { stdio: ["ignore", "ignore", "pipe"], detached: true },
    );
    let stderr = "";
    chromium.stderr!.setEncoding("utf8").on("data", (d: string) => (stderr += d));
    const exited = new Promise<string>((resolve) => chromium.once("error", (e) => resolve(String(e))).once("exit", (code) => resolve(`exit ${code}`)));
    let result: PageResult;
    try {
      const timeout = new Promise<never>((_, reject) => setTimeout(() => reject(new Error(`no result from the page in 120 s; chromium: ${stderr.slice(-2000)}`)), 120_000).unref());
      result = await Promise.race([page.result, timeout, exited.then((why) => Promise.reject(new Error(`chromium ended first (${why}; install Debian's chromium): ${stderr.slice(-2000)}`)))]);
    } finally {
      try {
        process.kill(-chromium.pid!, "SIGKILL");
      } catch {
        // already gone
      }
    }
    assert.equal(result.ok, true, result.error);
    assert.equal(result.healthConnect, true, "Connect from the page");
    assert.equal(result.healthGrpcWeb, true, "gRPC-Web from the page");
    assert.equal(result.requestIdVisible, true, "x-request-id is exposed to the page (Access-Control-Expose-Headers)");
    assert.equal(result.droppedCode, 1 /* Canceled */, "the dropped chunk failed in the page");
    assert.ok((result.progress ?? 0) >= 9, `chunks sent: ${result.progress}`);
    assert.deepEqual(result.image && { size: result.image.size, sha256: result.image.sha256 }, { size: IMAGE_BYTES, sha256: true });
    assert.deepEqual(result.statuses?.at(-1), "COMPLETED", String(result.statuses));
    for (const error of [result.connectError, result.grpcWebError]) {
      assert.equal(error?.code, 3 /* InvalidArgument */);
      assert.match(error!.message, /image_id/);
    }
    const [row] = await t.query("SELECT size_bytes FROM images WHERE image_id = $1 AND tenant_id = 'browser'", [result.image!.imageId]);
    assert.equal(Number(row?.size_bytes), IMAGE_BYTES);
    const [instance] = await t.query("SELECT status FROM instances WHERE instance_id = $1", [result.instanceId]);
    assert.equal(instance?.status, "completed");
  });

  it("the README's browser lines are the page's", async () => {
    const readme = await readFile(path.join(here, "../README.md"), "utf8");
    const block = /<!-- client-browser -->\n```ts\n([\s\S]*?)```/.exec(readme)![1]!;
    const source = await readFile(path.join(here, "browser/page.ts"), "utf8");
    for (const line of block.split("\n").map((l) => l.trim()).filter((l) => l !== "")) assert.ok(source.includes(line), `README line not in the page: ${line}`);
  });
});
