/**
 * Secure by default, the HTTP side (issue 9: C1, M5, M8, L2, L4, L7): loopback bind, refusal
 * of an open non-loopback start, API keys checked before the body, keys reloaded, Host
 * allowlist, liveness-only health, TLS on both ports with client certificates for core,
 * connection limits and CORS. Real servers (in-process and the CLI), real sockets, openssl
 * certificates made here.
 */
import assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import { chmod, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { setMaxListeners } from "node:events";
import http from "node:http";
import http2 from "node:http2";
import net from "node:net";
import { networkInterfaces, tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";
import { gzipSync } from "node:zlib";
import { Code, ConnectError, createClient, type Interceptor } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport, createGrpcWebTransport } from "@connectrpc/connect-node";
import { pino } from "pino";
import { CoreService } from "../gen/runtara/core/v1/core_pb.js";
import { InstanceStatus } from "../gen/runtara/core/v1/types_pb.js";
import { Health } from "../gen/grpc/health/v1/health_pb.js";
import { EnvironmentService, RunnerType } from "../gen/runtara/environment/v1/environment_pb.js";
import { compileOptions } from "../src/config.js";
import { ApiKeys } from "../src/server/api-keys.js";
import { healthService } from "../src/server/health.js";
import { buildFixtures } from "./fixtures/build.js";
import {
  environmentClient,
  eventually,
  freePort,
  freshDatabase,
  rejectsWithCode,
  startCli,
  startEnvironment,
  stopTestPostgres,
  type TestEnvironment,
  ociSkip,
} from "./helpers.js";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const TENANT = "tenant-http";
const KEY = "key-http-0123456789abcdef";
const ociSkipReason = await ociSkip();

after(() => stopTestPostgres());

const bearer =
  (key: string): Interceptor =>
  (next) =>
  (req) => {
    req.header.set("authorization", `Bearer ${key}`);
    return next(req);
  };

async function keysFile(dir: string, lines: string): Promise<string> {
  const file = path.join(dir, "keys");
  await writeFile(file, lines, { mode: 0o600 });
  return file;
}

/** Writes `request` raw to a socket and resolves with everything read until the server closes (or 5 s). */
function rawExchange(target: net.NetConnectOpts, request: string): Promise<string> {
  return new Promise((resolve) => {
    const socket = net.connect(target);
    let answer = "";
    const done = () => resolve(answer);
    socket.setTimeout(5_000, () => socket.destroy());
    socket.on("connect", () => socket.write(request));
    socket.on("data", (d) => (answer += d.toString("latin1")));
    socket.on("close", done);
    socket.on("error", done);
  });
}

/** Resident memory of a process, bytes. */
async function rssOf(pid: number): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, "utf8");
  return Number(/VmRSS:\s+(\d+) kB/.exec(status)![1]) * 1024;
}

/**
 * Sends `size` bytes as a Connect JSON body over HTTP/1.1 without a key (chunked: without a
 * content-length); resolves with the status (or the error).
 */
function unauthenticatedUpload(
  port: number,
  size: number,
  chunk: Buffer,
  rpcPath = "/runtara.environment.v1.EnvironmentService/RegisterImage",
  chunked = false,
): Promise<number | string> {
  return new Promise((resolve) => {
    const req = http.request({
      host: "127.0.0.1",
      port,
      method: "POST",
      path: rpcPath,
      headers: { "content-type": "application/json", ...(chunked ? {} : { "content-length": size }) },
      agent: false,
    });
    req.on("response", (res) => {
      res.resume();
      resolve(res.statusCode!);
    });
    req.on("error", (e) => resolve((e as NodeJS.ErrnoException).code ?? e.message));
    let sent = 0;
    const pump = () => {
      while (sent < size) {
        const n = Math.min(chunk.length, size - sent);
        sent += n;
        if (!req.write(n === chunk.length ? chunk : chunk.subarray(0, n))) return void req.once("drain", pump);
      }
      req.end();
    };
    pump();
  });
}

describe("listening and authentication (C1, L7)", () => {
  it("binds loopback by default: a non-loopback address of the machine is refused", async () => {
    assert.equal(compileOptions({}).httpHost, "127.0.0.1");
    const hostIp = Object.values(networkInterfaces())
      .flat()
      .find((a) => a && a.family === "IPv4" && !a.internal)?.address;
    assert.ok(hostIp, "the machine has a non-loopback IPv4 address to try");
    const t = await startEnvironment({ httpHost: compileOptions({}).httpHost });
    try {
      const result = await new Promise<string>((resolve) => {
        const s = net.connect(t.env.address.port, hostIp);
        s.once("connect", () => (s.destroy(), resolve("connected")));
        s.once("error", (e: NodeJS.ErrnoException) => resolve(e.code ?? e.message));
      });
      assert.equal(result, "ECONNREFUSED", `${hostIp}:${t.env.address.port}`);
    } finally {
      await t.close();
    }
  });

  it("refuses to start on a non-loopback address without API keys (exit 2, naming the variables)", async () => {
    const run = (vars: Record<string, string>) =>
      spawnSync(process.execPath, ["dist/src/cli/environment.js"], {
        cwd: root,
        env: { PATH: process.env.PATH, HOME: process.env.HOME, RUNTARA_DATABASE_URL: "postgres://127.0.0.1:1/none", ...vars },
        encoding: "utf8",
        timeout: 30_000,
      });
    const refused = run({ RUNTARA_ENV_HTTP_HOST: "0.0.0.0" });
    assert.equal(refused.status, 2, refused.stderr);
    assert.match(refused.stderr, /RUNTARA_API_KEYS_FILE/);
    assert.match(refused.stderr, /RUNTARA_ALLOW_UNAUTHENTICATED=true/);
    // With the explicit opt-out the configuration passes (startup then fails on the unreachable database: exit 1).
    const optOutDir = await mkdtemp(path.join(tmpdir(), "runtara-optout-"));
    try {
      const optedOut = run({ RUNTARA_ENV_HTTP_HOST: "0.0.0.0", RUNTARA_ALLOW_UNAUTHENTICATED: "true", DATA_DIR: optOutDir });
      assert.equal(optedOut.status, 1, optedOut.stderr);
    } finally {
      await rm(optOutDir, { recursive: true, force: true });
    }
  });

  it("a keys file readable by group or others is refused", async () => {
    const dir = await mkdtemp(path.join(tmpdir(), "runtara-keys-"));
    try {
      const file = await keysFile(dir, `${TENANT} ${KEY}\n`);
      await chmod(file, 0o644);
      await assert.rejects(ApiKeys.load(file, pino({ level: "silent" })), /RUNTARA_API_KEYS_FILE: .*\(mode 644\); chmod 600/);
      await chmod(file, 0o640);
      await assert.rejects(ApiKeys.load(file, pino({ level: "silent" })), /mode 640/);
      // The server refuses it at start like any invalid configuration: exit 2, naming the variable.
      const refused = spawnSync(process.execPath, ["dist/src/cli/environment.js"], {
        cwd: root,
        env: { PATH: process.env.PATH, HOME: process.env.HOME, RUNTARA_DATABASE_URL: "postgres://127.0.0.1:1/none", RUNTARA_API_KEYS_FILE: file, DATA_DIR: path.join(dir, "data") },
        encoding: "utf8",
        timeout: 30_000,
      });
      assert.equal(refused.status, 2, refused.stderr);
      assert.match(refused.stderr, /invalid configuration: RUNTARA_API_KEYS_FILE: .*mode 640/);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  describe("the server as `npm start` runs it, with API keys", () => {
    let dir: string;
    let file: string;
    let port: number;
    let corePort: number;
    let cli: ReturnType<typeof startCli>;
    let db: Awaited<ReturnType<typeof freshDatabase>>;
    const client = (key?: string) =>
      createClient(EnvironmentService, createConnectTransport({ baseUrl: `http://127.0.0.1:${port}`, httpVersion: "1.1", interceptors: key ? [bearer(key)] : [] }));

    before(async () => {
      dir = await mkdtemp(path.join(tmpdir(), "runtara-http-"));
      file = await keysFile(dir, `${TENANT} ${KEY}\n`);
      db = await freshDatabase();
      port = await freePort();
      corePort = await freePort();
      cli = startCli({
        RUNTARA_DATABASE_URL: db.url,
        DATA_DIR: path.join(dir, "data"),
        RUNTARA_ENV_HTTP_PORT: String(port),
        RUNTARA_CORE_ADDR: `127.0.0.1:${corePort}`,
        RUNTARA_API_KEYS_FILE: file,
      });
      await cli.waitFor("environment listening");
    });
    after(async () => {
      cli.child.kill("SIGTERM");
      await cli.exited;
      await db.drop();
      await rm(dir, { recursive: true, force: true });
    });

    it("30 parallel unauthenticated 60 MiB bodies are refused unread: RSS grows less than 64 MiB", async (t) => {
      const before = await rssOf(cli.child.pid!);
      const chunk = Buffer.alloc(1024 * 1024, 0x61);
      const answers = await Promise.all(Array.from({ length: 30 }, () => unauthenticatedUpload(port, 60 * 1024 * 1024, chunk)));
      const grown = (await rssOf(cli.child.pid!)) - before;
      for (const a of answers) assert.ok(a === 401 || a === "EPIPE" || a === "ECONNRESET", `answer ${a}`);
      assert.ok(answers.includes(401), `at least one client read its 401: ${answers.join(",")}`);
      t.diagnostic(`server RSS grew ${(grown / 1048576).toFixed(1)} MiB over 30 refused 60 MiB bodies; answers: ${answers.join(",")}`);
      assert.ok(grown < 64 * 1024 * 1024, `server RSS grew ${(grown / 1048576).toFixed(1)} MiB`);
      // The same over HTTP/2: the stream is answered and reset, the session stays usable.
      const session = http2.connect(`http://127.0.0.1:${port}`);
      try {
        const status = await new Promise<number>((resolve, reject) => {
          const stream = session.request({ ":method": "POST", ":path": "/runtara.environment.v1.EnvironmentService/RegisterImage", "content-type": "application/json" });
          stream.on("response", (h) => resolve(Number(h[":status"])));
          stream.on("error", reject);
          stream.write(chunk);
        });
        assert.equal(status, 401);
      } finally {
        session.close();
      }
      await rejectsWithCode(client().listImages({ tenantId: TENANT }), Code.Unauthenticated, "missing API key");
      assert.equal((await client(KEY).listImages({ tenantId: TENANT })).totalCount, 0n, "a keyed client is served afterwards");
    });

    it("no Host, or one no URL can hold (or a path read as one), is answered 400 on 8002, core and the core socket; the server lives on", async () => {
      const paths = ["/grpc.health.v1.Health/Check", "/runtara.environment.v1.EnvironmentService/HealthCheck", "/runtara.core.v1.InstanceService/Register"];
      const targets: net.NetConnectOpts[] = [{ port }, { port: corePort }, { path: path.join(dir, "data", "sockets", "core.sock") }];
      for (const target of targets) {
        // A valid call first, so the host "localhost" has been seen valid on this target.
        assert.match(await rawExchange(target, `POST ${paths[0]} HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}`), /^HTTP\/1\.1 200 /);
        for (const request of [
          (p: string) => `POST ${p} HTTP/1.0\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}`,
          (p: string) => `POST ${p} HTTP/1.1\r\nhost: x:99999\r\ncontent-type: application/json\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}`,
          (p: string) => `POST ${p} HTTP/1.1\r\nhost: localhost:99999\r\ncontent-type: application/grpc\r\ncontent-length: 0\r\nconnection: close\r\n\r\n`,
          // A valid host (seen valid before), and a path the URL parser reads as a host.
          (p: string) => `POST /\\x:99999${p} HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}`,
          (p: string) => `POST //x:99999${p} HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}`,
        ]) {
          for (const p of paths) {
            const answer = await rawExchange(target, request(p));
            assert.match(answer, /^HTTP\/1\.[01] (400|200) /, `${JSON.stringify(target)} ${request(p).split("\r\n")[0]}: ${answer.slice(0, 200)}`);
            assert.match(answer, /invalid_argument|grpc-status: 3/, answer.slice(0, 400));
          }
        }
      }
      // A bad path is named as the path, not blamed on the host.
      const badPath = await rawExchange({ port }, `POST //x:99999${paths[0]} HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}`);
      assert.match(badPath, /the request path \\"\/\/x:99999\/grpc.health.v1.Health\/Check\\" is not a URL path/, badPath.slice(0, 400));
      // HTTP/2 with an :authority no URL can hold, on both ports.
      for (const p of [port, corePort]) {
        const session = http2.connect(`http://127.0.0.1:${p}`);
        try {
          const status = await new Promise<number>((resolve, reject) => {
            const stream = session.request({ ":method": "POST", ":path": paths[0], ":authority": "x:99999", "content-type": "application/json" });
            stream.on("response", (h) => resolve(Number(h[":status"])));
            stream.on("error", reject);
            stream.end("{}");
          });
          assert.equal(status, 400);
        } finally {
          session.close();
        }
      }
      assert.equal(cli.child.exitCode, null, "the server is still running");
      assert.equal((await client(KEY).healthCheck({})).healthy, true);
    });

    it("methods open without a key read at most 64 KiB: a large or gzip-bomb body is refused at its first frame", async (t) => {
      const before = await rssOf(cli.child.pid!);
      const health = createClient(Health, createGrpcTransport({ baseUrl: `http://127.0.0.1:${port}` }));
      await rejectsWithCode(health.check({ service: "x".repeat(100_000) }), Code.ResourceExhausted);
      // 30 × 60 MiB declared Connect bodies to the open HealthCheck and grpc.health.
      const chunk = Buffer.alloc(1024 * 1024, 0x20);
      const answers = await Promise.all(
        Array.from({ length: 30 }, (_, i) =>
          unauthenticatedUpload(port, 60 * 1024 * 1024, chunk, i % 2 ? "/grpc.health.v1.Health/Check" : "/runtara.environment.v1.EnvironmentService/HealthCheck"),
        ),
      );
      for (const a of answers) assert.ok(a === 429 || a === "EPIPE" || a === "ECONNRESET", `answer ${a}`);
      // A 64 MiB gzip bomb (64 KiB compressed) to grpc.health over gRPC.
      const bomb = gzipSync(Buffer.alloc(64 * 1024 * 1024));
      const frame = Buffer.alloc(5);
      frame.writeUInt8(1, 0);
      frame.writeUInt32BE(bomb.length, 1);
      const session = http2.connect(`http://127.0.0.1:${port}`);
      try {
        const grpcStatus = await new Promise<string>((resolve, reject) => {
          const stream = session.request({ ":method": "POST", ":path": "/grpc.health.v1.Health/Check", "content-type": "application/grpc", "grpc-encoding": "gzip", te: "trailers" });
          let status = "";
          stream.on("response", (h) => (status = String(h["grpc-status"] ?? "")));
          stream.on("trailers", (h) => (status = String(h["grpc-status"] ?? status)));
          stream.on("close", () => resolve(status));
          stream.on("error", reject);
          stream.resume();
          stream.end(Buffer.concat([frame, bomb]));
        });
        assert.equal(grpcStatus, String(Code.ResourceExhausted));
      } finally {
        session.close();
      }
      // Chunked (no content-length) bodies, on 8002 and core: refused once past the cap; the
      // request closing while its answer is sent must not take the server down.
      for (const p of [port, corePort, port]) {
        const status = await unauthenticatedUpload(p, 20 * 1024 * 1024, chunk, "/grpc.health.v1.Health/Check", true);
        assert.ok(status === 429 || status === "EPIPE" || status === "ECONNRESET", `chunked: ${status}`);
      }
      await new Promise((r) => setTimeout(r, 500));
      assert.equal(cli.child.exitCode, null, "the server is still running");
      const grown = (await rssOf(cli.child.pid!)) - before;
      t.diagnostic(`server RSS grew ${(grown / 1048576).toFixed(1)} MiB over 30 open-method 60 MiB bodies, 3 chunked 20 MiB ones and a 64 MiB gzip bomb`);
      assert.ok(grown < 64 * 1024 * 1024, `server RSS grew ${(grown / 1048576).toFixed(1)} MiB`);
      assert.equal((await health.check({})).status, 1, "health is served afterwards");
    });

    it("every protocol gets its own form of UNAUTHENTICATED before the body is read", async () => {
      const base = `http://127.0.0.1:${port}`;
      for (const transport of [
        createGrpcTransport({ baseUrl: base }),
        createGrpcWebTransport({ baseUrl: base, httpVersion: "1.1" }),
        createConnectTransport({ baseUrl: base, httpVersion: "2", useBinaryFormat: true }),
      ]) {
        const c = createClient(EnvironmentService, transport);
        await rejectsWithCode(c.listImages({ tenantId: TENANT }), Code.Unauthenticated, "missing API key");
        async function* upload() {
          yield { payload: { case: "header" as const, value: { tenantId: TENANT, name: "x", binarySize: 1n } } };
        }
        await rejectsWithCode(c.registerImageStream(upload()), Code.Unauthenticated, "missing API key");
      }
    });

    it("HealthCheck without a key tells only whether the service is healthy", async () => {
      const anonymous = await client().healthCheck({});
      assert.equal(anonymous.healthy, true);
      assert.equal(anonymous.version, "");
      assert.equal(anonymous.activeInstances, 0n);
      assert.equal(anonymous.uptimeMs, 0n);
      const keyed = await client(KEY).healthCheck({});
      assert.notEqual(keyed.version, "");
      assert.equal(keyed.databaseReachable, true);
    });

    it("the keys file is reloaded on SIGHUP and when it changes", async () => {
      const next = "key-http-second-0123456789";
      await writeFile(file, `${TENANT} ${next}\n`, { mode: 0o600 });
      cli.child.kill("SIGHUP");
      assert.ok(await eventually(async () => (await client(next).listImages({ tenantId: TENANT }).then(() => true, () => false)), 5_000));
      await rejectsWithCode(client(KEY).listImages({ tenantId: TENANT }), Code.Unauthenticated, "invalid API key");
      // No signal: the change alone is noticed.
      const third = "key-http-third-0123456789";
      await writeFile(file, `${TENANT} ${third}\n# changed\n`, { mode: 0o600 });
      assert.ok(await eventually(async () => (await client(third).listImages({ tenantId: TENANT }).then(() => true, () => false)), 5_000));
      // A broken edit keeps the keys in force.
      await writeFile(file, "garbage\n", { mode: 0o600 });
      cli.child.kill("SIGHUP");
      await new Promise((r) => setTimeout(r, 1_500));
      assert.equal((await client(third).listImages({ tenantId: TENANT })).totalCount, 0n);
      assert.equal(cli.child.exitCode, null, "still running");
    });
  });
});

describe("without API keys on loopback: Host allowlist (M8), CORS (L4), limits (M5)", () => {
  let t: TestEnvironment;
  before(async () => {
    t = await startEnvironment({ allowedHosts: ["runtara.internal"], corsOrigins: ["http://console.test"], bodyIdleTimeoutMs: 1_000 });
  });
  after(() => t.close());

  const withHost = (host: string) =>
    new Promise<{ status: number; body: string; vary: string | undefined }>((resolve, reject) => {
      const req = http.request(
        { host: "127.0.0.1", port: t.env.address.port, method: "POST", path: "/runtara.environment.v1.EnvironmentService/ListImages", headers: { host, "content-type": "application/json" } },
        (res) => {
          let body = "";
          res.setEncoding("utf8").on("data", (d: string) => (body += d));
          res.on("end", () => resolve({ status: res.statusCode!, body, vary: res.headers.vary }));
        },
      );
      req.on("error", reject);
      req.end(JSON.stringify({ tenantId: TENANT }));
    });

  it("answers only Host names that cannot be rebound (IP literals, localhost) and the configured ones", async () => {
    const port = t.env.address.port;
    const refused = await withHost(`attacker.example:${port}`);
    assert.equal(refused.status, 403);
    assert.match(refused.body, /permission_denied.*RUNTARA_ALLOWED_HOSTS/);
    for (const host of [`127.0.0.1:${port}`, `localhost:${port}`, `[::1]:${port}`, `runtara.internal:${port}`, "runtara.internal"]) {
      assert.equal((await withHost(host)).status, 200, host);
    }
  });

  it("CORS on 8002 only, Vary: Origin on every answer, no echo of other origins", async () => {
    const preflight = (port: number, origin: string) =>
      fetch(`http://127.0.0.1:${port}/runtara.environment.v1.EnvironmentService/ListImages`, {
        method: "OPTIONS",
        headers: { origin, "access-control-request-method": "POST" },
      });
    const ok = await preflight(t.env.address.port, "http://console.test");
    assert.equal(ok.headers.get("access-control-allow-origin"), "http://console.test");
    const other = await preflight(t.env.address.port, "http://evil.test");
    assert.equal(other.headers.get("access-control-allow-origin"), null);
    assert.equal(other.headers.get("vary"), "Origin");
    assert.equal((await withHost("127.0.0.1")).vary, "Origin");
    const core = await preflight(t.env.coreAddress!.port, "http://console.test");
    assert.equal(core.headers.get("access-control-allow-origin"), null, "core answers no CORS");
  });

  it("1,000 idle sockets and 200 idle HTTP/2 sessions do not keep a normal client from being served", async () => {
    const port = t.env.address.port;
    const sockets = await Promise.all(
      Array.from({ length: 1_000 }, () => new Promise<net.Socket>((resolve) => {
        const s = net.connect(port, "127.0.0.1", () => resolve(s));
        s.on("error", () => resolve(s));
      })),
    );
    const sessions = Array.from({ length: 200 }, () => {
      const s = http2.connect(`http://127.0.0.1:${port}`);
      s.on("error", () => {});
      return s;
    });
    try {
      const started = Date.now();
      const health = await environmentClient(t.baseUrl, "connect-json-h1").healthCheck({}, { timeoutMs: 5_000 });
      assert.equal(health.healthy, true);
      assert.ok(Date.now() - started < 5_000);
    } finally {
      for (const s of sockets) s.destroy();
      for (const s of sessions) s.destroy();
    }
  });

  it("a stalled request body is cut off after the idle timeout; a quiet watch response is not", async () => {
    const port = t.env.address.port;
    const outcome = await new Promise<string>((resolve) => {
      const req = http.request({
        host: "127.0.0.1",
        port,
        method: "POST",
        path: "/runtara.environment.v1.EnvironmentService/ListImages",
        headers: { "content-type": "application/json", "content-length": 100 },
      });
      req.on("response", (res) => resolve(`status ${res.statusCode}`));
      req.on("error", (e: NodeJS.ErrnoException) => resolve(e.code ?? e.message));
      req.write("{"); // and nothing more
    });
    assert.equal(outcome, "ECONNRESET");
    // A server stream that says nothing for longer than the body timeout stays open.
    const abort = new AbortController();
    const healthStreams = createClient(Health, createGrpcTransport({ baseUrl: t.baseUrl }));
    const seen: number[] = [];
    const watching = (async () => {
      for await (const r of healthStreams.watch({ service: "" }, { signal: abort.signal })) seen.push(r.status);
    })().catch(() => {});
    await new Promise((r) => setTimeout(r, 2_500));
    abort.abort();
    await watching;
    assert.deepEqual(seen, [1], "one SERVING, and the stream was still open after 2.5 s");
  });

  it("reflection streams that talk without reading are capped per listener; health checks are still answered", async () => {
    const session = http2.connect(t.baseUrl);
    try {
      const request = Buffer.from([0, 0, 0, 0, 2, 0x3a, 0]); // one gRPC frame: list_services ""
      const statuses = await Promise.all(
        Array.from(
          { length: 40 },
          () =>
            new Promise<string>((resolve) => {
              const stream = session.request({ ":method": "POST", ":path": "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo", "content-type": "application/grpc", te: "trailers" });
              stream.on("response", (h) => resolve(String(h["grpc-status"] ?? "open")));
              stream.on("error", () => resolve("error"));
              stream.write(Buffer.concat(Array(1000).fill(request)));
            }),
        ),
      );
      assert.equal(statuses.filter((s) => s === "open").length, 16, statuses.join(","));
      assert.equal(statuses.filter((s) => s === String(Code.ResourceExhausted)).length, 24, statuses.join(","));
      const health = createClient(Health, createGrpcTransport({ baseUrl: t.baseUrl }));
      assert.equal((await health.check({}, { timeoutMs: 5_000 })).status, 1, "a health check is answered meanwhile");
    } finally {
      session.destroy();
    }
  });

  it("health watches open at once are capped (anyone may open one): past the cap RESOURCE_EXHAUSTED, freed ones count again", async () => {
    const service = healthService([], async () => true, 2);
    const abort = new AbortController();
    const ctx = { signal: abort.signal } as Parameters<NonNullable<typeof service.watch>>[1];
    const open = () => service.watch!({ service: "" } as never, ctx)[Symbol.asyncIterator]();
    const [a, b] = [open(), open()];
    assert.equal((await a.next()).value.status, 1);
    assert.equal((await b.next()).value.status, 1);
    await assert.rejects(open().next(), (e: unknown) => ConnectError.from(e).code === Code.ResourceExhausted);
    await a.return!(undefined);
    const c = open();
    assert.equal((await c.next()).value.status, 1, "a closed watch frees its place");
    abort.abort();
    await Promise.all([b.return!(undefined), c.return!(undefined)]);
  });

  it("health probes are shared: 300 Health/Watch streams hold no more database connections than the pool", async () => {
    const abort = new AbortController();
    setMaxListeners(0, abort.signal);
    const clients = [0, 1].map(() => createClient(Health, createGrpcTransport({ baseUrl: t.baseUrl })));
    let serving = 0;
    // All at once, like watchers reconnecting together: past the open-bodies cap a watcher is
    // told RESOURCE_EXHAUSTED and retries, as a client should.
    const watchOnce = async (i: number) => {
      for await (const r of clients[i % 2]!.watch({ service: "" }, { signal: abort.signal })) if (r.status === 1) serving++;
    };
    const streams = Array.from({ length: 300 }, (_, i) =>
      (async () => {
        for (;;) {
          try {
            return await watchOnce(i);
          } catch (e) {
            if (ConnectError.from(e).code !== Code.ResourceExhausted || abort.signal.aborted) return;
            await new Promise((r) => setTimeout(r, 100));
          }
        }
      })(),
    );
    try {
      assert.ok(await eventually(async () => serving === 300, 15_000), `${serving} of 300 streams report SERVING`);
      const [{ n }] = (await t.query(`SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = current_database()`)) as [{ n: number }];
      assert.ok(n <= t.env.options.dbPoolSize + 4, `${n} database connections`);
      assert.equal((await environmentClient(t.baseUrl).healthCheck({}, { timeoutMs: 2_000 })).healthy, true);
    } finally {
      abort.abort();
      await Promise.all(streams);
    }
  });
});

describe("TLS on both ports (M8)", () => {
  let dir: string;
  let pki: { ca: Buffer; cert: string; key: string; clientCa: string; clientCert: string; clientKey: string; strangerCert: string; strangerKey: string };

  before(async () => {
    dir = await mkdtemp(path.join(tmpdir(), "runtara-tls-"));
    const f = (name: string) => path.join(dir, name);
    const openssl = (...args: string[]) => execFileSync("openssl", args, { cwd: dir, stdio: "pipe" });
    const issue = (name: string, cn: string, ca: string, ext: string) => {
      openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f(`${name}.key`), "-subj", `/CN=${cn}`, "-out", f(`${name}.csr`));
      writeFileSyncText(f(`${name}.ext`), ext);
      openssl("x509", "-req", "-in", f(`${name}.csr`), "-CA", f(`${ca}.crt`), "-CAkey", f(`${ca}.key`), "-CAcreateserial", "-days", "2", "-extfile", f(`${name}.ext`), "-out", f(`${name}.crt`));
    };
    for (const ca of ["ca", "client-ca"]) {
      openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", f(`${ca}.key`), "-subj", `/CN=runtara test ${ca}`, "-days", "2", "-out", f(`${ca}.crt`));
    }
    issue("server", "localhost", "ca", "subjectAltName=DNS:localhost,IP:127.0.0.1\n");
    issue("client", "environment", "client-ca", "extendedKeyUsage=clientAuth\n");
    issue("stranger", "stranger", "ca", "extendedKeyUsage=clientAuth\n");
    for (const name of ["server", "client", "stranger", "ca", "client-ca"]) await chmod(f(`${name}.key`), 0o600);
    pki = {
      ca: await readFile(f("ca.crt")),
      cert: f("server.crt"),
      key: f("server.key"),
      clientCa: f("client-ca.crt"),
      clientCert: f("client.crt"),
      clientKey: f("client.key"),
      strangerCert: f("stranger.crt"),
      strangerKey: f("stranger.key"),
    };
  });
  after(() => rm(dir, { recursive: true, force: true }));

  it("8002 speaks TLS with ALPN h2 and http/1.1: Connect, gRPC and gRPC-Web; cleartext is not answered", async () => {
    const t = await startEnvironment({ tlsCertFile: pki.cert, tlsKeyFile: pki.key });
    try {
      const base = `https://localhost:${t.env.address.port}`;
      const nodeOptions = { ca: pki.ca };
      for (const transport of [
        createConnectTransport({ baseUrl: base, httpVersion: "2", nodeOptions }),
        createConnectTransport({ baseUrl: base, httpVersion: "1.1", nodeOptions }),
        createGrpcTransport({ baseUrl: base, nodeOptions }),
        createGrpcWebTransport({ baseUrl: base, httpVersion: "1.1", nodeOptions }),
      ]) {
        const c = createClient(EnvironmentService, transport);
        assert.equal((await c.healthCheck({})).healthy, true);
        assert.equal((await c.listImages({ tenantId: TENANT })).totalCount, 0n);
      }
      await assert.rejects(environmentClient(`http://127.0.0.1:${t.env.address.port}`, "connect-json-h1").healthCheck({}, { timeoutMs: 3_000 }));
      // A client that does not trust the CA is refused by its own TLS stack.
      await assert.rejects(createClient(EnvironmentService, createConnectTransport({ baseUrl: base, httpVersion: "1.1" })).healthCheck({}), /certificate/);
    } finally {
      await t.close();
    }
  });

  it("a native SDK workflow reaches core over https:// (RUNTARA_SKIP_CERT_VERIFICATION passed on) and completes", async () => {
    const t = await startEnvironment({ tlsCertFile: pki.cert, tlsKeyFile: pki.key, skipCertVerification: true });
    try {
      const client = createClient(EnvironmentService, createConnectTransport({ baseUrl: `https://localhost:${t.env.address.port}`, httpVersion: "2", nodeOptions: { ca: pki.ca } }));
      const tsx = createRequire(import.meta.url).resolve("tsx");
      const script = `#!/bin/sh\nexec "${process.execPath}" --import "${tsx}" "${path.join(root, "test/scripts/long-step.ts")}"\n`;
      const { imageId } = await client.registerImage({ tenantId: TENANT, name: "sdk", binary: new TextEncoder().encode(script), runnerType: RunnerType.NATIVE });
      const { instanceId } = await client.startInstance({ tenantId: TENANT, imageId, env: { STEP_MS: "50" } });
      let last;
      for await (const r of client.watchInstance({ tenantId: TENANT, instanceId }, { timeoutMs: 60_000 })) last = r.instance!;
      assert.equal(last!.status, InstanceStatus.COMPLETED, `${last!.error} ${last!.stderr}`);
      const [row] = (await t.query(`SELECT 1 FROM instance_events WHERE instance_id = $1 AND event_type = 'registered'`, [instanceId])) as unknown[];
      assert.ok(row, "the workflow registered with core over TLS");
    } finally {
      await t.close();
    }
  });

  it("core over TLS with client certificates: CoreService needs one, instances reach core through TLS and complete", { skip: ociSkipReason }, async () => {
    const t = await startEnvironment({
      tlsCertFile: pki.cert,
      tlsKeyFile: pki.key,
      coreClientCaFile: pki.clientCa,
      coreClientCertFile: pki.clientCert,
      coreClientKeyFile: pki.clientKey,
    });
    try {
      const envClient = createClient(EnvironmentService, createConnectTransport({ baseUrl: `https://localhost:${t.env.address.port}`, httpVersion: "2", nodeOptions: { ca: pki.ca } }));
      const binary = await readFile((await buildFixtures()).workflow);
      const { imageId } = await envClient.registerImage({ tenantId: TENANT, name: "wf", binary, runnerType: RunnerType.OCI });
      const { instanceId } = await envClient.startInstance({ tenantId: TENANT, imageId, env: { WORKFLOW_MODE: "complete" } });
      let last;
      for await (const r of envClient.watchInstance({ tenantId: TENANT, instanceId }, { timeoutMs: 60_000 })) last = r.instance!;
      assert.equal(last!.status, InstanceStatus.COMPLETED, `${last!.error} ${last!.stderr}`);
      // Through the environment's core client (which presents its certificate).
      assert.equal((await envClient.listCheckpoints({ tenantId: TENANT, instanceId })).checkpoints.length, 1);

      const coreBase = `https://localhost:${t.env.coreAddress!.port}`;
      const coreClient = (extra: object) =>
        createClient(CoreService, createConnectTransport({ baseUrl: coreBase, httpVersion: "2", nodeOptions: { ca: pki.ca, ...extra } }));
      await rejectsWithCode(coreClient({}).healthCheck({}), Code.Unauthenticated, "client certificate");
      const stranger = { cert: await readFile(pki.strangerCert), key: await readFile(pki.strangerKey) };
      await rejectsWithCode(coreClient(stranger).healthCheck({}), Code.Unauthenticated, "client certificate");
      const own = { cert: await readFile(pki.clientCert), key: await readFile(pki.clientKey) };
      // A valid certificate passes the TLS check; the management token is still needed.
      await rejectsWithCode(coreClient(own).healthCheck({}), Code.Unauthenticated, /token|authorization/i);
    } finally {
      await t.close();
    }
  });
});

function writeFileSyncText(file: string, text: string): void {
  execFileSync("sh", ["-c", `cat > "$1"`, "sh", file], { input: text });
}
