/**
 * Operating it (issue 13): /healthz and /readyz for Kubernetes probes, /metrics in Prometheus'
 * format (checked by `promtool check metrics`) with the figures real work leaves behind,
 * who may read metrics once API keys are on, the separate RUNTARA_METRICS_ADDR listener, and
 * logs that probes do not flood.
 */
import assert from "node:assert/strict";
import http from "node:http";
import { chmod, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { execa } from "execa";
import { Code } from "@connectrpc/connect";
import { InstanceStatus, SignalType } from "../gen/runtara/core/v1/types_pb.js";
import { RunnerType } from "../gen/runtara/environment/v1/environment_pb.js";
import { buildFixtures } from "./fixtures/build.js";
import { environmentClient, freePort, freshDatabase, rejectsWithCode, startCli, startEnvironment, stopTestPostgres, waitUntil, type TestEnvironment } from "./helpers.js";

after(() => stopTestPostgres());

/** Parses Prometheus text into `name{labels}` → value. */
function samples(text: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of text.split("\n")) {
    const m = /^([a-zA-Z_:][\w:]*(?:\{[^}]*\})?) (\S+)$/.exec(line);
    if (m) out.set(m[1]!, Number(m[2]));
  }
  return out;
}

async function promtool(text: string): Promise<void> {
  const r = await execa("promtool", ["check", "metrics"], { input: text, reject: false });
  assert.notEqual(r.exitCode, undefined, "promtool runs (Debian's prometheus package; .ci/run installs it)");
  assert.equal(r.exitCode, 0, `promtool check metrics: ${r.stdout}${r.stderr}`);
}

describe("probes and metrics without API keys", () => {
  let t: TestEnvironment;
  let metricsPort: number;
  before(async () => {
    metricsPort = await freePort();
    t = await startEnvironment({ metricsAddr: `127.0.0.1:${metricsPort}` });
  });
  after(() => t?.close());

  it("/healthz and /readyz answer GET and HEAD; other methods get 405", async () => {
    const healthz = await fetch(`${t.baseUrl}/healthz`);
    assert.equal(healthz.status, 200);
    assert.equal(await healthz.text(), "ok\n");
    const readyz = await fetch(`${t.baseUrl}/readyz`);
    assert.equal(readyz.status, 200);
    assert.deepEqual(await readyz.json(), { database: "ok", core: "ok" });
    assert.equal((await fetch(`${t.baseUrl}/readyz`, { method: "HEAD" })).status, 200);
    const post = await fetch(`${t.baseUrl}/metrics`, { method: "POST", body: "x" });
    assert.equal(post.status, 405);
    assert.equal(post.headers.get("allow"), "GET, HEAD");
  });

  it("/metrics counts RPCs by method and code, launches, uploads, signals and instances by status, and passes promtool", async () => {
    const env = environmentClient(t.baseUrl);
    const binary = await readFile((await buildFixtures()).workflow);
    const { imageId } = await env.registerImage({ tenantId: "ops", name: "wf", binary, runnerType: RunnerType.NATIVE });
    const { instanceId } = await env.startInstance({ tenantId: "ops", imageId, env: { WORKFLOW_MODE: "sleep", SLEEP_MS: "300" } });
    await waitUntil(async () => (await env.getInstanceStatus({ tenantId: "ops", instanceId })).instance?.status === InstanceStatus.COMPLETED, 30_000);
    await rejectsWithCode(env.getInstanceStatus({ tenantId: "ops", instanceId: "3f2504e0-4f89-41d3-9a0c-0305e82c3301" }), Code.NotFound);
    await rejectsWithCode(env.sendSignal({ tenantId: "ops", instanceId, signalType: SignalType.PAUSE }), Code.FailedPrecondition);

    const text = await (await fetch(`${t.baseUrl}/metrics`)).text();
    await promtool(text);
    const m = samples(text);
    const rpc = (method: string, code: string) => m.get(`runtara_rpc_duration_seconds_count{method="runtara.environment.v1.EnvironmentService/${method}",code="${code}"}`) ?? 0;
    assert.equal(rpc("StartInstance", "ok"), 1);
    assert.equal(rpc("GetInstanceStatus", "not_found"), 1);
    assert.ok(rpc("GetInstanceStatus", "ok") >= 1);
    assert.ok((m.get(`runtara_rpc_duration_seconds_count{method="runtara.core.v1.InstanceService/Register",code="ok"}`) ?? 0) >= 2, "core's RPCs too (first run and the wake)");
    assert.equal(m.get(`runtara_launches_total{runner="native"}`), 2, "the start and the wake");
    assert.equal(m.get(`runtara_launch_failures_total{runner="native"}`) ?? 0, 0);
    assert.equal(m.get("runtara_wake_lag_seconds_count"), 1);
    assert.equal(m.get('runtara_signal_delivery_seconds_count{kind="pause"}') ?? 0, 0, "a refused signal was not delivered");
    assert.equal(m.get("runtara_image_upload_bytes_total"), binary.length);
    assert.equal(m.get('runtara_instances{status="completed"}'), 1);
    assert.ok((m.get("runtara_db_pool_idle_connections") ?? -1) >= 0);
    assert.equal(m.get("runtara_db_pool_waiting_clients"), 0);
    assert.equal(m.get("runtara_db_listener_reconnects_total"), 0);
    assert.ok((m.get("process_resident_memory_bytes") ?? 0) > 0, "process metrics");
  });

  it("RUNTARA_METRICS_ADDR serves the same endpoints alone", async () => {
    const base = `http://127.0.0.1:${metricsPort}`;
    assert.equal((await fetch(`${base}/healthz`)).status, 200);
    assert.equal((await fetch(`${base}/readyz`)).status, 200);
    const scraped = await fetch(`${base}/metrics`);
    assert.match(scraped.headers.get("content-type") ?? "", /^text\/plain; version=0\.0\.4/);
    assert.match(await scraped.text(), /^runtara_launches_total\{runner="native"\} 2$/m);
    const rpc = await fetch(`${base}/runtara.environment.v1.EnvironmentService/HealthCheck`, { method: "POST", headers: { "content-type": "application/json" }, body: "{}" });
    assert.equal(rpc.status, 404, "no RPCs there");
    // A page whose name was re-pointed at this address (DNS rebinding) sends its own Host.
    const rebound = await new Promise<number>((resolve, reject) =>
      http.get({ host: "127.0.0.1", port: metricsPort, path: "/metrics", headers: { host: "evil.example" } }, (res) => resolve(res.resume().statusCode!)).on("error", reject),
    );
    assert.equal(rebound, 403);
  });
});

describe("/readyz when core is gone", () => {
  it("answers 503 naming what is unreachable, while /healthz still answers 200", async () => {
    // A separate core that is not running: the environment starts (it retries core), but is not ready.
    const t = await startEnvironment({ embedCore: false, coreAddr: `127.0.0.1:${await freePort()}` });
    try {
      const r = await fetch(`${t.baseUrl}/readyz`);
      assert.equal(r.status, 503);
      assert.deepEqual(await r.json(), { database: "ok", core: "unreachable" });
      assert.equal((await fetch(`${t.baseUrl}/healthz`)).status, 200);
    } finally {
      await t.close();
    }
  });
});

describe("metrics with API keys on", () => {
  let dir: string;
  let keysFile: string;
  before(async () => {
    dir = await mkdtemp(path.join(tmpdir(), "runtara-ops-"));
    keysFile = path.join(dir, "keys");
    await writeFile(keysFile, "acme acme-key-0123456789abcdef\nmonitoring monitoring-key-0123456789\n");
    await chmod(keysFile, 0o600);
  });
  after(() => rm(dir, { recursive: true, force: true }));

  it("only the keys of RUNTARA_METRICS_TENANT read /metrics; probes need no key", async () => {
    const t = await startEnvironment({ apiKeysFile: keysFile, metricsTenant: "monitoring" });
    try {
      const get = (key?: string) => fetch(`${t.baseUrl}/metrics`, key ? { headers: { authorization: `Bearer ${key}` } } : {});
      const none = await get();
      assert.equal(none.status, 401);
      assert.match(await none.text(), /missing API key/);
      assert.equal((await get("wrong-key-0123456789abcdef")).status, 401);
      const tenant = await get("acme-key-0123456789abcdef");
      assert.equal(tenant.status, 403, "a tenant's key does not see every tenant's figures");
      assert.match(await tenant.text(), /may not read metrics/);
      const ok = await get("monitoring-key-0123456789");
      assert.equal(ok.status, 200);
      const lower = await fetch(`${t.baseUrl}/metrics`, { headers: { authorization: "bearer monitoring-key-0123456789" } });
      assert.equal(lower.status, 200, "the auth scheme is case-insensitive");
      await promtool(await ok.text());
      assert.equal((await fetch(`${t.baseUrl}/healthz`)).status, 200);
      assert.equal((await fetch(`${t.baseUrl}/readyz`)).status, 200);
    } finally {
      await t.close();
    }
  });

  it("without RUNTARA_METRICS_TENANT nobody reads /metrics on the management port, and the answer says where to look", async () => {
    const t = await startEnvironment({ apiKeysFile: keysFile });
    try {
      const r = await fetch(`${t.baseUrl}/metrics`, { headers: { authorization: "Bearer acme-key-0123456789abcdef" } });
      assert.equal(r.status, 403);
      assert.match(await r.text(), /RUNTARA_METRICS_TENANT.*RUNTARA_METRICS_ADDR/);
    } finally {
      await t.close();
    }
  });
});

describe("logs as npm start writes them", () => {
  it("probes and health checks stay out of the info log; LOG_FORMAT=pretty gives readable lines; a bad LOG_FORMAT exits 2", async () => {
    const db = await freshDatabase();
    const dir = await mkdtemp(path.join(tmpdir(), "runtara-ops-log-"));
    try {
      for (const format of ["json", "pretty"]) {
        const port = await freePort();
        const server = startCli({
          RUNTARA_DATABASE_URL: db.url,
          DATA_DIR: path.join(dir, format),
          RUNTARA_ENV_HTTP_PORT: String(port),
          RUNTARA_CORE_ADDR: `127.0.0.1:${await freePort()}`,
          LOG_FORMAT: format,
        });
        try {
          await server.waitFor("environment listening");
          const env = environmentClient(`http://127.0.0.1:${port}`);
          for (let i = 0; i < 5; i++) await env.healthCheck({});
          await fetch(`http://127.0.0.1:${port}/metrics`);
          await fetch(`http://127.0.0.1:${port}/readyz`);
          await env.listImages({ tenantId: "logs" });
          await server.waitFor("ListImages");
          assert.doesNotMatch(server.stdout(), /HealthCheck/, `${format}: health checks are at debug`);
          const lines = server.stdout().trim().split("\n");
          if (format === "json") assert.ok(lines.every((l) => l.startsWith("{")), "JSON lines");
          else {
            assert.ok(lines.every((l) => !l.startsWith("{")), `readable lines: ${lines[0]}`);
            assert.match(server.stdout(), /INFO.*environment listening/);
          }
        } finally {
          server.child.kill("SIGTERM");
          assert.equal(await server.exited, 0);
        }
      }
      const bad = startCli({ RUNTARA_DATABASE_URL: db.url, DATA_DIR: path.join(dir, "bad"), LOG_FORMAT: "xml" });
      assert.equal(await bad.exited, 2);
      assert.match(bad.stderr(), /LOG_FORMAT must be json or pretty/);
    } finally {
      await db.drop();
      await rm(dir, { recursive: true, force: true });
    }
  });
});
