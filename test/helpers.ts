import { fileURLToPath } from "node:url";
import { spawn, type ChildProcess } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { mkdtemp, readdir, rm } from "node:fs/promises";
import net from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import pg from "pg";
import { pino } from "pino";
import { Code, ConnectError, createClient, type Client, type Interceptor, type Transport } from "@connectrpc/connect";
import { InstanceService } from "../gen/runtara/core/v1/instance_pb.js";
import { createConnectTransport, createGrpcTransport, createGrpcWebTransport } from "@connectrpc/connect-node";
import type { MessageInitShape } from "@bufbuild/protobuf";
import {
  EnvironmentService,
  type ImageUploadHeaderSchema,
  type RegisterImageStreamRequestSchema,
} from "../gen/runtara/environment/v1/environment_pb.js";
import { Environment, type EnvironmentRuntimeOptions } from "../src/environment.js";
import { startEmbeddedPostgres, type EmbeddedDatabase } from "../src/db/index.js";
import { createRunners } from "../src/runner/index.js";

/**
 * Admin URL of the PostgreSQL the tests use: RUNTARA_TEST_DATABASE_URL, else the server on
 * 127.0.0.1:5432 when it answers, else an embedded PostgreSQL started for this test process.
 */
let adminUrl: Promise<string> | undefined;
let embedded: EmbeddedDatabase | undefined;

async function reachable(url: string): Promise<boolean> {
  const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 2_000 });
  try {
    await client.connect();
    await client.end();
    return true;
  } catch {
    return false;
  }
}

function resolveAdminUrl(): Promise<string> {
  adminUrl ??= (async () => {
    const configured = process.env.RUNTARA_TEST_DATABASE_URL;
    if (configured) return configured;
    const local = "postgres://postgres@127.0.0.1:5432/postgres";
    if (await reachable(local)) return local;
    const dir = await mkdtemp(path.join(tmpdir(), "runtara-test-pg-"));
    embedded = await startEmbeddedPostgres(dir, pino({ level: "silent" }));
    return embedded.url;
  })();
  return adminUrl;
}

export interface TestDatabase {
  url: string;
  drop(): Promise<void>;
}

/** A new empty database on the test server; drop() removes it. */
export async function freshDatabase(): Promise<TestDatabase> {
  const admin = await resolveAdminUrl();
  const name = `runtara_test_${randomBytes(6).toString("hex")}`;
  const client = new pg.Client({ connectionString: admin });
  await client.connect();
  await client.query(`CREATE DATABASE ${name}`);
  await client.end();
  const url = new URL(admin);
  url.pathname = `/${name}`;
  return {
    url: url.toString(),
    async drop() {
      const c = new pg.Client({ connectionString: admin });
      await c.connect();
      await c.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
      await c.end();
    },
  };
}

export interface TestEnvironment {
  env: Environment;
  baseUrl: string;
  dataDir: string;
  database: TestDatabase;
  /** A direct connection for assertions on stored rows. */
  query<T extends pg.QueryResultRow = pg.QueryResultRow>(text: string, values?: unknown[]): Promise<T[]>;
  close(): Promise<void>;
}

/** A process row of an instance that is no longer pending or running: its exit is not yet handled. */
const EXITING = `SELECT 1 FROM running_processes p JOIN instances i ON i.instance_id = p.instance_id
  WHERE i.status NOT IN ('pending', 'running') LIMIT 1`;

function isStarted(env: Environment): boolean {
  try {
    return env.databaseUrl !== "";
  } catch {
    return false; // stopped already (the getters throw once stop() has run)
  }
}

/** Starts a real Environment on a free port with its own database and data directory. */
export async function startEnvironment(options: EnvironmentRuntimeOptions = {}): Promise<TestEnvironment> {
  // A caller-supplied database belongs to the caller, who drops it.
  const database: TestDatabase = options.databaseUrl
    ? { url: options.databaseUrl, drop: async () => {} }
    : await freshDatabase();
  const dataDir = await mkdtemp(path.join(tmpdir(), "runtara-test-data-"));
  const env = new Environment({
    databaseUrl: database.url,
    dataDir,
    httpPort: 0,
    httpHost: "127.0.0.1",
    coreAddr: "127.0.0.1:0",
    logger: pino({ level: process.env.TEST_LOG_LEVEL ?? "silent" }),
    shutdownGraceMs: 2_000,
    ...options,
  });
  try {
    await env.start();
  } catch (e) {
    await database.drop();
    await rm(dataDir, { recursive: true, force: true });
    throw e;
  }
  const pool = new pg.Pool({ connectionString: database.url, max: 2 });
  return {
    env,
    baseUrl: `http://127.0.0.1:${env.address.port}`,
    dataDir,
    database,
    async query(text, values) {
      return (await pool.query(text, values)).rows;
    },
    async close() {
      // A workflow whose instance has moved on (ended, paused, asleep) may still be exiting: let
      // the environment settle that exit (container, cgroup, network namespace and its pasta)
      // before it stops, or they outlive the test with nobody to adopt them (the database is
      // dropped). Running workflows stay detached, as a stop leaves them.
      if (isStarted(env)) await eventually(async () => (await pool.query(EXITING)).rowCount === 0, 10_000);
      await env.stop();
      await endPool(pool);
      await database.drop();
      await rm(dataDir, { recursive: true, force: true });
    },
  };
}

/**
 * pg.Pool's end() resolves once it has asked each client to end, before their sockets close,
 * and leaves the pool's idle-error listener on them: a DROP DATABASE ... WITH (FORCE) right
 * after can reach a closing backend, whose "terminating connection" is then thrown from the
 * pool as an uncaught 'error'. This waits until every client is gone.
 */
export async function endPool(pool: pg.Pool): Promise<void> {
  let open = pool.totalCount;
  const gone = new Promise<void>((resolve) => {
    if (open === 0) resolve();
    pool.on("remove", () => --open === 0 && resolve());
  });
  pool.on("error", () => {}); // a closing client's last words; nothing is using it
  await pool.end();
  await gone;
}

/** Stops the embedded PostgreSQL if this process started one. Call from a top-level after(). */
export async function stopTestPostgres(): Promise<void> {
  await embedded?.stop();
  embedded = undefined;
}

export type TransportKind = "connect-json-h1" | "connect-binary-h2" | "grpc-web-h1" | "grpc-h2";

export function transport(baseUrl: string, kind: TransportKind): Transport {
  switch (kind) {
    case "connect-json-h1":
      return createConnectTransport({ baseUrl, httpVersion: "1.1", useBinaryFormat: false });
    case "connect-binary-h2":
      return createConnectTransport({ baseUrl, httpVersion: "2", useBinaryFormat: true });
    case "grpc-web-h1":
      return createGrpcWebTransport({ baseUrl, httpVersion: "1.1" });
    case "grpc-h2":
      return createGrpcTransport({ baseUrl });
  }
}

export function environmentClient(baseUrl: string, kind: TransportKind = "connect-binary-h2"): Client<typeof EnvironmentService> {
  return createClient(EnvironmentService, transport(baseUrl, kind));
}

// ---------------------------------------------------------------------------------------------
// Image fixtures (appended for the image registry tests and the upload benchmark).

/** Deterministic pseudo-random bytes (fast; not crypto): the same seed gives the same bytes. */
export function patternBytes(size: number, seed = 1): Uint8Array {
  const out = new Uint8Array(size);
  const view = new DataView(out.buffer);
  let x = (seed * 2654435761) >>> 0 || 1;
  let i = 0;
  for (; i + 4 <= size; i += 4) {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    view.setUint32(i, x, true);
  }
  for (; i < size; i++) out[i] = (x >>> ((i % 4) * 8)) & 0xff;
  return out;
}

export function sha256Hex(...parts: Uint8Array[]): string {
  const h = createHash("sha256");
  for (const p of parts) h.update(p);
  return h.digest("hex");
}

type UploadHeaderInit = MessageInitShape<typeof ImageUploadHeaderSchema>;
type StreamMessage = MessageInitShape<typeof RegisterImageStreamRequestSchema>;

/** The messages of a RegisterImageStream call: a header, then the given chunks. */
export async function* uploadMessages(header: UploadHeaderInit, chunks: Iterable<Uint8Array> | AsyncIterable<Uint8Array>): AsyncGenerator<StreamMessage> {
  yield { payload: { case: "header", value: header } };
  for await (const chunk of chunks) yield { payload: { case: "chunk", value: chunk } };
}

/** Splits bytes into chunks of `size` (the last one may be shorter). */
export function* chunksOf(bytes: Uint8Array, size: number): Generator<Uint8Array> {
  for (let i = 0; i < bytes.byteLength; i += size) yield bytes.subarray(i, Math.min(i + size, bytes.byteLength));
}

/** Where this environment stages uploads: images/.staging/<replica id>/. */
export function stagingDir(t: TestEnvironment): string {
  return path.join(t.dataDir, "images", ".staging", t.env.options.replicaId);
}

/** imageTree of a registry with no images and no upload in progress. */
export function emptyImageTree(t: TestEnvironment): string[] {
  return [".staging/", `.staging/${t.env.options.replicaId}/`];
}

/**
 * Everything under DATA_DIR/images, as relative paths (directories end with "/"). A clean
 * registry with no images is exactly emptyImageTree(t).
 */
export async function imageTree(dataDir: string): Promise<string[]> {
  const root = path.join(dataDir, "images");
  const out: string[] = [];
  const walk = async (dir: string, rel: string) => {
    let entries;
    try {
      entries = await readdir(dir, { withFileTypes: true });
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === "ENOENT") return;
      throw e;
    }
    for (const entry of entries) {
      const r = rel === "" ? entry.name : `${rel}/${entry.name}`;
      if (entry.isDirectory()) {
        out.push(`${r}/`);
        await walk(path.join(dir, entry.name), r);
      } else {
        out.push(r);
      }
    }
  };
  await walk(root, "");
  return out.sort();
}

/** Polls `check` until it returns true or `timeoutMs` passes; returns the last result. */
export async function eventually(check: () => Promise<boolean>, timeoutMs = 5_000, intervalMs = 50): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await check()) return true;
    if (Date.now() >= deadline) return false;
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}

/** Like `eventually`, but a timeout is an error. */
export async function waitUntil(check: () => Promise<boolean>, timeoutMs = 30_000): Promise<void> {
  if (!(await eventually(check, timeoutMs))) throw new Error(`condition not met within ${timeoutMs} ms`);
}

/** Whether a process with this pid exists (signal 0). */
export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** A TCP port that was free a moment ago on 127.0.0.1. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address() as net.AddressInfo;
      server.close(() => resolve(port));
    });
  });
}

/** Awaits `call`, asserting it fails with `code` and (when given) a message containing or matching each of `mentions`. */
export async function rejectsWithCode(call: Promise<unknown>, code: Code, ...mentions: (string | RegExp)[]): Promise<ConnectError> {
  try {
    await call;
  } catch (e) {
    const err = ConnectError.from(e);
    if (err.code !== code) {
      throw new Error(`expected ${Code[code]}, got ${Code[err.code]}: ${err.rawMessage}`, { cause: e });
    }
    for (const m of mentions) {
      const found = typeof m === "string" ? err.rawMessage.includes(m) : m.test(err.rawMessage);
      if (!found) throw new Error(`expected the message to mention ${String(m)}, got: ${err.rawMessage}`);
    }
    return err;
  }
  throw new Error(`expected ${Code[code]}, but the call succeeded`);
}

/** Token nonces of the rows insertInstance wrote, so their tokens can be minted synchronously. */
const insertedNonces = new Map<string, string>();

/** The instance token of a row insertInstance wrote, as a launch would mint it. */
export function tokenOf(t: TestEnvironment, instanceId: string): string {
  const nonce = insertedNonces.get(instanceId);
  if (nonce === undefined) throw new Error(`instance ${instanceId} was not inserted by insertInstance`);
  return t.env.tokens.instanceToken(instanceId, nonce);
}

/** The instance token of a row (its nonce read from the database); for a missing id, a well-formed one. */
export async function instanceToken(t: TestEnvironment, instanceId: string): Promise<string> {
  const [row] = await t.query<{ token_nonce: string }>("SELECT token_nonce FROM instances WHERE instance_id = $1", [instanceId]);
  return t.env.tokens.instanceToken(instanceId, row?.token_nonce ?? randomBytes(16).toString("hex"));
}

/** A client acting as one instance (bearer token of `instanceId`, or `token` when given). */
export function instanceClient(t: TestEnvironment, instanceId: string, token?: string) {
  let bearer: Promise<string> | undefined;
  const auth: Interceptor = (next) => async (req) => {
    bearer ??= token === undefined ? instanceToken(t, instanceId) : Promise.resolve(token);
    req.header.set("authorization", `Bearer ${await bearer}`);
    return next(req);
  };
  const address = t.env.coreAddress;
  if (!address) throw new Error("core is not embedded in this test environment");
  return createClient(InstanceService, createConnectTransport({ baseUrl: `http://127.0.0.1:${address.port}`, httpVersion: "2", interceptors: [auth] }));
}

/**
 * Inserts an instance row the way StartInstance does before launching (test fixture for
 * driving InstanceService without a runner).
 */
export async function insertInstance(
  t: TestEnvironment,
  opts: { tenantId?: string; instanceId?: string; input?: unknown; status?: string } = {},
): Promise<string> {
  const instanceId = opts.instanceId ?? `inst-${randomBytes(6).toString("hex")}`;
  const nonce = randomBytes(16).toString("hex");
  await t.query(`INSERT INTO instances (instance_id, tenant_id, status, input, token_nonce) VALUES ($1, $2, $3, $4, $5)`, [
    instanceId,
    opts.tenantId ?? "tenant-a",
    opts.status ?? "pending",
    Buffer.from(JSON.stringify(opts.input ?? {})),
    nonce,
  ]);
  insertedNonces.set(instanceId, nonce);
  return instanceId;
}

export interface Cli {
  child: ChildProcess;
  stdout(): string;
  stderr(): string;
  /** Resolves with the exit code (or the signal name) once the process is gone and its output read. */
  exited: Promise<number | string>;
  /** Resolves when stdout contains `text`; rejects if the process exits first. */
  waitFor(text: string, timeoutMs?: number): Promise<void>;
}

/**
 * Starts the CLI exactly as `npm start` does, with only the given variables (plus PATH/HOME);
 * `viaNpm`: through npm itself (`child` is then npm, the server its child).
 */
export function startCli(vars: Record<string, string>, viaNpm = false): Cli {
  const [command, args] = viaNpm ? ["npm", ["start", "--silent"]] : [process.execPath, ["dist/src/cli/environment.js"]];
  const child = spawn(command, args, {
    cwd: path.resolve(path.dirname(fileURLToPath(import.meta.url)), ".."),
    env: { PATH: process.env.PATH ?? "/usr/bin:/bin", HOME: process.env.HOME ?? "/root", ...vars },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let out = "";
  let err = "";
  child.stdout!.setEncoding("utf8").on("data", (d: string) => (out += d));
  child.stderr!.setEncoding("utf8").on("data", (d: string) => (err += d));
  const exited = new Promise<number | string>((resolve) => child.once("close", (code, signal) => resolve(code ?? signal ?? -1)));
  return {
    child,
    stdout: () => out,
    stderr: () => err,
    exited,
    waitFor(text, timeoutMs = 30_000) {
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`no "${text}" within ${timeoutMs} ms; stdout: ${out}\nstderr: ${err}`)), timeoutMs);
        const check = () => {
          if (out.includes(text)) {
            clearTimeout(timer);
            child.stdout!.off("data", check);
            resolve();
          }
        };
        child.stdout!.on("data", check);
        check();
        exited.then((code) => {
          clearTimeout(timer);
          if (!out.includes(text)) reject(new Error(`exited (${code}) before "${text}"; stdout: ${out}\nstderr: ${err}`));
        });
      });
    },
  };
}

/**
 * `skip` option of OCI suites: false when an OCI runtime works here; else the reason, except
 * in CI, where a missing runtime must fail the suite rather than skip it.
 */
export async function ociSkip(): Promise<string | false> {
  const problem = await createRunners()
    .oci.runtime()
    .then(
      () => undefined,
      (e: unknown) => (e as Error).message,
    );
  return problem !== undefined && process.env.CI !== "true" ? `no usable OCI runtime: ${problem}` : false;
}
