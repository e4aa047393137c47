import { randomBytes } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import pg from "pg";
import { pino } from "pino";
import { createClient, type Client, type Transport } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport, createGrpcWebTransport } from "@connectrpc/connect-node";
import { EnvironmentService } from "../gen/runtara/environment/v1/environment_pb.js";
import { Environment, type EnvironmentRuntimeOptions } from "../src/environment.js";
import { startEmbeddedPostgres, type EmbeddedDatabase } from "../src/db/index.js";

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

/** Starts a real Environment on a free port with its own database and data directory. */
export async function startEnvironment(options: EnvironmentRuntimeOptions = {}): Promise<TestEnvironment> {
  const database = await freshDatabase();
  const dataDir = await mkdtemp(path.join(tmpdir(), "runtara-test-data-"));
  const env = new Environment({
    databaseUrl: database.url,
    dataDir,
    httpPort: 0,
    httpHost: "127.0.0.1",
    logger: pino({ level: process.env.TEST_LOG_LEVEL ?? "silent" }),
    shutdownGraceMs: 2_000,
    ...options,
  });
  await env.start();
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
      await env.stop();
      await pool.end();
      await database.drop();
      await rm(dataDir, { recursive: true, force: true });
    },
  };
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
