import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import http from "node:http";
import { promisify } from "node:util";
import zlib from "node:zlib";
import { after, before, describe, it } from "node:test";
import { fromBinary } from "@bufbuild/protobuf";
import { FileDescriptorProtoSchema } from "@bufbuild/protobuf/wkt";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import type { Compression } from "@connectrpc/connect/protocol";
import { serverCompressions, Slots, takingTurns } from "../src/server/compression.js";
import { patternBytes, sha256Hex, startEnvironment, stopTestPostgres, type TestEnvironment } from "./helpers.js";

const run = promisify(execFile);
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
const ENV = "runtara.environment.v1.EnvironmentService";
const b64 = (b: Uint8Array) => Buffer.from(b).toString("base64");
const jsonB64 = (v: unknown) => Buffer.from(JSON.stringify(v)).toString("base64");

after(() => stopTestPostgres());

// ---------------------------------------------------------------------------------------------
// Connect JSON over HTTP/1.1 with plain fetch (and curl)

interface JsonAnswer {
  status: number;
  headers: Headers;
  body: Record<string, any>;
}

async function connectJson(baseUrl: string, method: string, body: unknown, headers: Record<string, string> = {}): Promise<JsonAnswer> {
  const res = await fetch(`${baseUrl}/${ENV}/${method}`, {
    method: "POST",
    headers: { "Content-Type": "application/json", ...headers },
    body: JSON.stringify(body),
  });
  const text = await res.text();
  return { status: res.status, headers: res.headers, body: text === "" ? {} : JSON.parse(text) };
}

/** POST over HTTP/1.1 without decoding the answer (fetch would undo Content-Encoding). */
function fetchRaw(url: string, body: string, acceptEncoding: string): Promise<{ status: number; headers: http.IncomingHttpHeaders; body: Buffer }> {
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method: "POST", headers: { "content-type": "application/json", "accept-encoding": acceptEncoding } }, (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (c: Buffer) => chunks.push(c));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }));
      res.on("error", reject);
    });
    req.on("error", reject);
    req.end(body);
  });
}

/** A Connect streaming envelope: flags, big-endian length, payload. */
function envelope(flags: number, payload: Uint8Array): Buffer {
  const head = Buffer.alloc(5);
  head.writeUInt8(flags, 0);
  head.writeUInt32BE(payload.byteLength, 1);
  return Buffer.concat([head, payload]);
}

function parseEnvelopes(buf: Buffer): { flags: number; json: any }[] {
  const out: { flags: number; json: any }[] = [];
  for (let i = 0; i < buf.length; ) {
    const flags = buf.readUInt8(i);
    const len = buf.readUInt32BE(i + 1);
    out.push({ flags, json: JSON.parse(buf.subarray(i + 5, i + 5 + len).toString("utf8")) });
    i += 5 + len;
  }
  return out;
}

/** RegisterImageStream as Connect streaming JSON (application/connect+json) over HTTP/1.1. */
async function connectJsonUpload(baseUrl: string, header: Record<string, unknown>, chunks: Uint8Array[]) {
  const messages = [{ header }, ...chunks.map((c) => ({ chunk: b64(c) }))];
  const body = Buffer.concat(messages.map((m) => envelope(0, Buffer.from(JSON.stringify(m)))));
  const res = await fetch(`${baseUrl}/${ENV}/RegisterImageStream`, {
    method: "POST",
    headers: { "Content-Type": "application/connect+json", "Connect-Protocol-Version": "1" },
    body,
  });
  assert.equal(res.status, 200, "connect streaming answers 200 and reports errors in the end-stream message");
  const frames = parseEnvelopes(Buffer.from(await res.arrayBuffer()));
  const end = frames.find((f) => f.flags & 0x02);
  assert.ok(end, "an end-stream message");
  return { message: frames.find((f) => (f.flags & 0x02) === 0)?.json, end: end.json };
}

describe("Connect JSON over HTTP/1.1", () => {
  let t: TestEnvironment;
  before(async () => {
    t = await startEnvironment();
  });
  after(() => t?.close());

  it("serves every image RPC to plain fetch, with bytes as base64 and int64 as strings", async () => {
    const health = await connectJson(t.baseUrl, "HealthCheck", {});
    assert.equal(health.status, 200);
    assert.equal(health.body.healthy, true);
    assert.equal(health.body.databaseReachable, true);
    assert.equal(typeof health.body.uptimeMs === "string" || health.body.uptimeMs === undefined, true);

    const binary = patternBytes(4096, 21);
    const reg = await connectJson(t.baseUrl, "RegisterImage", {
      // proto3 JSON accepts the original snake_case names as well as lowerCamelCase.
      tenant_id: "json",
      name: "via-fetch",
      description: "from fetch",
      binary: b64(binary),
      runnerType: "RUNNER_TYPE_NATIVE",
      metadata: jsonB64({ owner: "ops" }),
      sha256: sha256Hex(binary),
    });
    assert.equal(reg.status, 200, JSON.stringify(reg.body));
    assert.match(reg.body.imageId, UUID);
    const image = reg.body.image;
    assert.equal(image.tenantId, "json");
    assert.equal(image.name, "via-fetch");
    assert.equal(image.runnerType, "RUNNER_TYPE_NATIVE");
    assert.equal(image.sizeBytes, "4096");
    assert.equal(image.sha256, sha256Hex(binary));
    assert.deepEqual(JSON.parse(Buffer.from(image.metadata, "base64").toString()), { owner: "ops" });
    assert.ok(!Number.isNaN(Date.parse(image.createdAt)), "created_at is an RFC 3339 string");

    const got = await connectJson(t.baseUrl, "GetImage", { tenantId: "json", imageId: reg.body.imageId });
    assert.equal(got.status, 200);
    assert.deepEqual(got.body.image, image);

    const list = await connectJson(t.baseUrl, "ListImages", { tenantId: "json", namePrefix: "via-" });
    assert.equal(list.status, 200);
    assert.deepEqual(
      list.body.images.map((i: { imageId: string }) => i.imageId),
      [reg.body.imageId],
    );
    assert.equal(list.body.totalCount, "1");

    const del = await connectJson(t.baseUrl, "DeleteImage", { tenantId: "json", imageId: reg.body.imageId });
    assert.equal(del.status, 200);
    assert.deepEqual(del.body, {});
    const gone = await connectJson(t.baseUrl, "GetImage", { tenantId: "json", imageId: reg.body.imageId });
    assert.equal(gone.status, 404);
    assert.equal(gone.body.code, "not_found");
  });

  it("maps errors to Connect codes and HTTP statuses, naming the field", async () => {
    const bad = await connectJson(t.baseUrl, "GetImage", { tenantId: "json", imageId: "not-a-uuid" });
    assert.equal(bad.status, 400);
    assert.equal(bad.body.code, "invalid_argument");
    assert.match(bad.body.message, /image_id/);

    const binary = b64(patternBytes(10, 1));
    assert.equal((await connectJson(t.baseUrl, "RegisterImage", { tenantId: "json", name: "twice", binary, tag: "v1" })).status, 200);
    const dup = await connectJson(t.baseUrl, "RegisterImage", { tenantId: "json", name: "twice", binary, tag: "v1" });
    assert.equal(dup.status, 409);
    assert.equal(dup.body.code, "already_exists");

    const big = await connectJson(t.baseUrl, "RegisterImage", { tenantId: "json", name: "big", binary: b64(patternBytes(16 * 1024 * 1024 + 1, 2)) });
    assert.equal(big.body.code, "resource_exhausted");
    assert.match(big.body.message, /RegisterImageStream/);

    const unknownField = await connectJson(t.baseUrl, "ListImages", { tenantId: "json", limit: "many" });
    assert.equal(unknownField.body.code, "invalid_argument");
  });

  it("accepts RegisterImageStream as Connect streaming JSON", async () => {
    const data = patternBytes(300_000, 5);
    const chunks = [data.subarray(0, 100_000), data.subarray(100_000, 200_000), data.subarray(200_000)];
    const ok = await connectJsonUpload(t.baseUrl, { tenantId: "json", name: "streamed", binarySize: "300000", sha256: sha256Hex(data) }, chunks);
    assert.equal(ok.end.error, undefined);
    assert.equal(ok.message.image.sizeBytes, "300000");
    assert.equal(ok.message.image.sha256, sha256Hex(data));
    assert.equal(ok.message.image.runnerType, "RUNNER_TYPE_OCI");

    const mismatch = await connectJsonUpload(t.baseUrl, { tenantId: "json", name: "mismatch", binarySize: "300000", sha256: "a".repeat(64) }, chunks);
    assert.equal(mismatch.message, undefined);
    assert.equal(mismatch.end.error.code, "invalid_argument");
    assert.match(mismatch.end.error.message, /sha256/);
    const rows = await t.query("SELECT 1 FROM images WHERE name = 'mismatch'");
    assert.equal(rows.length, 0);
  });

  it("answers curl over HTTP/1.1 and over h2c with prior knowledge", async () => {
    const url = `${t.baseUrl}/${ENV}/ListImages`;
    const args = ["-sS", "-i", "-X", "POST", "-H", "Content-Type: application/json", "-d", '{"tenantId":"json"}', url];
    const h1 = await run("curl", args);
    assert.match(h1.stdout, /^HTTP\/1\.1 200/);
    assert.match(h1.stdout, /x-request-id: \S+/i);
    const h1Body = JSON.parse(h1.stdout.slice(h1.stdout.indexOf("\r\n\r\n") + 4));
    assert.ok(Array.isArray(h1Body.images));
    assert.ok(BigInt(h1Body.totalCount) >= 1n);

    const h2 = await run("curl", ["--http2-prior-knowledge", ...args]);
    assert.match(h2.stdout, /^HTTP\/2 200/);
    const h2Body = JSON.parse(h2.stdout.slice(h2.stdout.indexOf("\r\n\r\n") + 4));
    assert.deepEqual(h2Body, h1Body);

    const health = await run("curl", ["-sS", "-H", "Content-Type: application/json", "-d", "{}", `${t.baseUrl}/${ENV}/HealthCheck`]);
    assert.equal(JSON.parse(health.stdout).healthy, true);
  });

  it("compresses a large answer with the encoding the client lists first: gzip or br", async () => {
    for (let i = 0; i < 8; i++) {
      const binary = patternBytes(64, 100 + i);
      const reg = await connectJson(t.baseUrl, "RegisterImage", {
        tenantId: "compressed",
        name: `image-${i}`,
        description: "d".repeat(300),
        binary: b64(binary),
        runnerType: "RUNNER_TYPE_NATIVE",
      });
      assert.equal(reg.status, 200, JSON.stringify(reg.body));
    }
    for (const [accept, encoding, decode] of [
      ["br, gzip", "br", zlib.brotliDecompressSync],
      ["gzip, br", "gzip", zlib.gunzipSync],
    ] as const) {
      const res = await fetchRaw(`${t.baseUrl}/${ENV}/ListImages`, JSON.stringify({ tenantId: "compressed" }), accept);
      assert.equal(res.status, 200);
      assert.equal(res.headers["content-encoding"], encoding);
      const body = JSON.parse(decode(res.body).toString("utf8"));
      assert.equal(body.images.length, 8);
    }
  });

  it("decompresses request bodies in turns: compressing clients are served, bombs refused", async () => {
    const url = `${t.baseUrl}/${ENV}/ListImages`;
    // 317 bytes that expand to 200 MiB (quality 5: 1 s here, the default 11 takes 10 s).
    const bomb = zlib.brotliCompressSync(Buffer.alloc(200 * 1024 * 1024), { params: { [zlib.constants.BROTLI_PARAM_QUALITY]: 5 } });
    // A connection each (no keep-alive reuse): an idle socket the server closes at its
    // keep-alive timeout just as the client reuses it would fail with ECONNRESET.
    const post = (body: Buffer, encoding: string) =>
      new Promise<number>((resolve, reject) => {
        const req = http.request(url, { method: "POST", agent: false, headers: { "content-type": "application/json", "content-encoding": encoding } }, (res) => {
          res.resume();
          res.on("end", () => resolve(res.statusCode ?? 0));
        });
        req.on("error", reject);
        req.end(body);
      });
    // A client that compresses every request, 20 at once: each waits its turn, none is refused.
    const gz = zlib.gzipSync(JSON.stringify({ tenantId: "compressed" }));
    assert.deepEqual(await Promise.all(Array.from({ length: 20 }, () => post(gz, "gzip"))), Array(20).fill(200));
    // Each bomb is refused at the read limit (RESOURCE_EXHAUSTED).
    assert.deepEqual(await Promise.all(Array.from({ length: 6 }, () => post(bomb, "br"))), Array(6).fill(429));
  });

  it("lets at most the given number of decompressions run at once, the rest in order", async () => {
    let running = 0;
    let most = 0;
    const order: number[] = [];
    const releases: (() => void)[] = [];
    const slow: Compression = {
      name: "slow",
      compress: async (b) => new Uint8Array(b),
      decompress: async (b) => {
        most = Math.max(most, ++running);
        await new Promise<void>((r) => releases.push(r));
        running--;
        order.push(b[0]!);
        return new Uint8Array(b);
      },
    };
    const limited = takingTurns(slow, new Slots(2));
    const all = Promise.all([0, 1, 2, 3, 4, 5].map((i) => limited.decompress(new Uint8Array([i]), 10)));
    for (let done = 0; done < 6; done++) {
      while (releases.length === 0) await new Promise((r) => setImmediate(r));
      releases.shift()!();
    }
    await all;
    assert.equal(most, 2);
    assert.deepEqual(order, [0, 1, 2, 3, 4, 5]);
  });

  it("compresses answers on either side of the on-loop size limit so that they decode to the same bytes", async () => {
    const decoders: Record<string, (b: Uint8Array) => Buffer> = { gzip: zlib.gunzipSync, br: zlib.brotliDecompressSync };
    assert.deepEqual(serverCompressions.map((c) => c.name), ["gzip", "br"]);
    for (const c of serverCompressions) {
      for (const size of [2048, 64 * 1024, 64 * 1024 + 1, 1024 * 1024]) {
        const plain = Buffer.from("instance ".repeat(size / 9 + 1).slice(0, size));
        const packed = await c.compress(plain);
        assert.ok(packed.byteLength < plain.byteLength / 10, `${c.name} ${size}: ${packed.byteLength} bytes`);
        assert.ok(decoders[c.name]!(packed).equals(plain), `${c.name} ${size} round trip`);
      }
    }
  });

  it("sets x-request-id on answers and on errors, echoing a sane client-supplied one", async () => {
    const generated = await connectJson(t.baseUrl, "HealthCheck", {});
    assert.match(generated.headers.get("x-request-id") ?? "", UUID);
    const echoed = await connectJson(t.baseUrl, "HealthCheck", {}, { "x-request-id": "trace-123" });
    assert.equal(echoed.headers.get("x-request-id"), "trace-123");
    const replaced = await connectJson(t.baseUrl, "HealthCheck", {}, { "x-request-id": "bad id with spaces" });
    assert.match(replaced.headers.get("x-request-id") ?? "", UUID);
    const failed = await connectJson(t.baseUrl, "GetImage", { tenantId: "json", imageId: "x" }, { "x-request-id": "trace-err" });
    assert.equal(failed.status, 400);
    assert.equal(failed.headers.get("x-request-id"), "trace-err");
  });

  it("answers a CORS preflight without an Access-Control-Allow-Origin when no origin is configured", async () => {
    const res = await preflight(t.baseUrl, "http://example.test");
    assert.equal(res.headers["access-control-allow-origin"], undefined);
  });
});

// ---------------------------------------------------------------------------------------------
// CORS

function preflight(baseUrl: string, origin: string): Promise<http.IncomingMessage> {
  return new Promise((resolve, reject) => {
    const req = http.request(`${baseUrl}/${ENV}/HealthCheck`, {
      method: "OPTIONS",
      headers: {
        Origin: origin,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type,connect-protocol-version",
      },
    });
    req.on("response", (res) => {
      res.resume();
      res.on("end", () => resolve(res));
    });
    req.on("error", reject);
    req.end();
  });
}

describe("CORS", () => {
  let t: TestEnvironment;
  before(async () => {
    t = await startEnvironment({ corsOrigins: ["http://example.test"] });
  });
  after(() => t?.close());

  it("answers a preflight from an allowed origin", async () => {
    const res = await preflight(t.baseUrl, "http://example.test");
    assert.equal(res.statusCode, 204);
    assert.equal(res.headers["access-control-allow-origin"], "http://example.test");
    assert.match(String(res.headers["access-control-allow-methods"]), /POST/);
    assert.match(String(res.headers["access-control-allow-headers"]), /content-type/i);
    assert.match(String(res.headers["access-control-allow-headers"]), /connect-protocol-version/i);
  });

  it("does not allow another origin", async () => {
    const res = await preflight(t.baseUrl, "http://evil.test");
    assert.equal(res.headers["access-control-allow-origin"], undefined);
  });

  it("marks actual responses for the allowed origin and exposes the request id", async () => {
    const ok = await connectJson(t.baseUrl, "HealthCheck", {}, { Origin: "http://example.test" });
    assert.equal(ok.status, 200);
    assert.equal(ok.headers.get("access-control-allow-origin"), "http://example.test");
    assert.match(ok.headers.get("access-control-expose-headers") ?? "", /x-request-id/i);
    const other = await connectJson(t.baseUrl, "HealthCheck", {}, { Origin: "http://evil.test" });
    assert.equal(other.headers.get("access-control-allow-origin"), null);
  });
});

// ---------------------------------------------------------------------------------------------
// gRPC from an independent implementation: @grpc/grpc-js + @grpc/proto-loader

const loaderOptions: protoLoader.Options = {
  keepCase: true,
  longs: String,
  enums: String,
  defaults: true,
  oneofs: true,
  includeDirs: ["proto", "third_party"],
};

type GrpcClient = grpc.Client & Record<string, any>;

function grpcClient(address: string, protoFile: string, service: string): GrpcClient {
  const definition = grpc.loadPackageDefinition(protoLoader.loadSync(protoFile, loaderOptions));
  const Ctor = service.split(".").reduce<any>((o, k) => o[k], definition) as typeof grpc.Client;
  return new Ctor(address, grpc.credentials.createInsecure()) as GrpcClient;
}

function unary<T = any>(client: GrpcClient, method: string, request: unknown): Promise<T> {
  return new Promise((resolve, reject) => {
    client[method](request, (err: grpc.ServiceError | null, res: T) => (err ? reject(err) : resolve(res)));
  });
}

async function grpcRejects(call: Promise<unknown>, code: grpc.status, mention?: string): Promise<grpc.ServiceError> {
  try {
    await call;
  } catch (e) {
    const err = e as grpc.ServiceError;
    assert.equal(err.code, code, `expected ${grpc.status[code]}, got ${grpc.status[err.code]}: ${err.details}`);
    if (mention) assert.ok(err.details.includes(mention), `"${err.details}" mentions ${mention}`);
    return err;
  }
  assert.fail(`expected ${grpc.status[code]}`);
}

/** One bidi reflection exchange: sends each request, collects one response per request. */
function reflect(client: GrpcClient, requests: Record<string, unknown>[]): Promise<any[]> {
  return new Promise((resolve, reject) => {
    const call = client.ServerReflectionInfo() as grpc.ClientDuplexStream<unknown, any>;
    const responses: any[] = [];
    call.on("data", (r) => responses.push(r));
    call.on("error", reject);
    call.on("end", () => resolve(responses));
    for (const r of requests) call.write({ host: "", ...r });
    call.end();
  });
}

describe("gRPC via @grpc/grpc-js", () => {
  let t: TestEnvironment;
  let env: GrpcClient;
  let address: string;
  const clients: grpc.Client[] = [];
  before(async () => {
    t = await startEnvironment();
    address = `127.0.0.1:${t.env.address.port}`;
    env = grpcClient(address, "runtara/environment/v1/environment.proto", ENV);
    clients.push(env);
  });
  after(async () => {
    for (const c of clients) c.close();
    await t?.close();
  });

  it("calls HealthCheck", async () => {
    const res = await unary(env, "HealthCheck", {});
    assert.equal(res.healthy, true);
    assert.equal(res.database_reachable, true);
    assert.ok(res.version.length > 0);
  });

  it("registers, gets, lists and deletes images", async () => {
    const binary = Buffer.from(patternBytes(70_000, 33));
    const reg = await unary(env, "RegisterImage", {
      tenant_id: "grpc",
      name: "unary",
      binary,
      runner_type: "RUNNER_TYPE_NATIVE",
      metadata: Buffer.from(JSON.stringify({ a: 1 })),
      sha256: sha256Hex(binary),
    });
    assert.match(reg.image_id, UUID);
    assert.equal(reg.image.size_bytes, "70000");
    assert.equal(reg.image.runner_type, "RUNNER_TYPE_NATIVE");
    assert.equal(reg.image.sha256, sha256Hex(binary));
    assert.deepEqual(JSON.parse(reg.image.metadata.toString()), { a: 1 });

    const got = await unary(env, "GetImage", { tenant_id: "grpc", image_id: reg.image_id });
    assert.equal(got.image.name, "unary");
    assert.ok(Number(got.image.created_at.seconds) > 0);

    const list = await unary(env, "ListImages", { tenant_id: "grpc" });
    assert.deepEqual(
      list.images.map((i: any) => i.image_id),
      [reg.image_id],
    );
    assert.equal(list.total_count, "1");
    assert.equal(list.next_page_token, "");

    await unary(env, "DeleteImage", { tenant_id: "grpc", image_id: reg.image_id });
    await grpcRejects(unary(env, "GetImage", { tenant_id: "grpc", image_id: reg.image_id }), grpc.status.NOT_FOUND);
  });

  it("streams RegisterImageStream (client streaming)", async () => {
    const data = Buffer.from(patternBytes(5 * 1024 * 1024 + 3, 44));
    const res = await new Promise<any>((resolve, reject) => {
      const call = env.RegisterImageStream((err: grpc.ServiceError | null, r: any) => (err ? reject(err) : resolve(r)));
      call.write({ header: { tenant_id: "grpc", name: "streamed", binary_size: String(data.length), sha256: sha256Hex(data) } });
      for (let i = 0; i < data.length; i += 256 * 1024) call.write({ chunk: data.subarray(i, i + 256 * 1024) });
      call.end();
    });
    assert.equal(res.image.size_bytes, String(data.length));
    assert.equal(res.image.sha256, sha256Hex(data));
    assert.equal(res.image.runner_type, "RUNNER_TYPE_OCI");
    const [row] = await t.query("SELECT size_bytes::text AS size FROM images WHERE image_id = $1", [res.image_id]);
    assert.equal(row!.size, String(data.length));

    const mismatch = new Promise<any>((resolve, reject) => {
      const call = env.RegisterImageStream((err: grpc.ServiceError | null, r: any) => (err ? reject(err) : resolve(r)));
      call.write({ header: { tenant_id: "grpc", name: "short", binary_size: String(data.length + 10) } });
      call.write({ chunk: data });
      call.end();
    });
    await grpcRejects(mismatch, grpc.status.INVALID_ARGUMENT, "binary_size");
  });

  it("reports status codes with the field named", async () => {
    await grpcRejects(unary(env, "GetImage", { tenant_id: "../x", image_id: "00000000-0000-0000-0000-000000000000" }), grpc.status.INVALID_ARGUMENT, "tenant_id");
    await grpcRejects(unary(env, "ListImages", { tenant_id: "grpc", limit: 1001 }), grpc.status.INVALID_ARGUMENT, "limit");
    await grpcRejects(unary(env, "GetImage", { tenant_id: "grpc", image_id: "00000000-0000-0000-0000-000000000000" }), grpc.status.NOT_FOUND);
    const binary = Buffer.alloc(16 * 1024 * 1024 + 1, 1);
    await grpcRejects(unary(env, "RegisterImage", { tenant_id: "grpc", name: "big", binary }), grpc.status.RESOURCE_EXHAUSTED, "RegisterImageStream");
  });

  it("answers grpc.health.v1.Health/Check", async () => {
    const health = grpcClient(address, "grpc/health/v1/health.proto", "grpc.health.v1.Health");
    clients.push(health);
    assert.equal((await unary(health, "Check", { service: "" })).status, "SERVING");
    assert.equal((await unary(health, "Check", { service: ENV })).status, "SERVING");
    await grpcRejects(unary(health, "Check", { service: "no.such.Service" }), grpc.status.NOT_FOUND);
  });

  for (const version of ["v1", "v1alpha"] as const) {
    it(`answers server reflection ${version}`, async () => {
      const client = grpcClient(address, `grpc/reflection/${version}/reflection.proto`, `grpc.reflection.${version}.ServerReflection`);
      clients.push(client);
      const [list, bySymbol, byFile, missing] = await reflect(client, [
        { list_services: "" },
        { file_containing_symbol: ENV },
        { file_by_filename: "runtara/environment/v1/environment.proto" },
        { file_containing_symbol: "no.such.Symbol" },
      ]);
      const services = list.list_services_response.service.map((s: { name: string }) => s.name);
      assert.ok(services.includes(ENV), `${services} includes ${ENV}`);
      assert.ok(services.includes("grpc.health.v1.Health"));
      assert.ok(services.includes(`grpc.reflection.${version}.ServerReflection`));

      for (const answer of [bySymbol, byFile]) {
        const files = answer.file_descriptor_response.file_descriptor_proto.map((b: Buffer) => fromBinary(FileDescriptorProtoSchema, b));
        const names = files.map((f: { name: string }) => f.name);
        assert.ok(names.includes("runtara/environment/v1/environment.proto"), String(names));
        assert.ok(names.includes("google/protobuf/timestamp.proto"), "dependencies are included");
        assert.ok(names.includes("runtara/core/v1/types.proto"), "dependencies are included");
        const envFile = files.find((f: { name: string }) => f.name === "runtara/environment/v1/environment.proto")!;
        const service = envFile.service.find((s: { name: string }) => s.name === "EnvironmentService");
        assert.ok(service, "the file declares EnvironmentService");
        const upload = service.method.find((m: { name: string }) => m.name === "RegisterImageStream");
        assert.equal(upload?.clientStreaming, true);
      }
      assert.equal(missing.error_response.error_code, 5);
    });
  }
});
