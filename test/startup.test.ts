import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { chmod, mkdtemp, rm } from "node:fs/promises";
import net from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import { after, describe, it } from "node:test";
import { pino } from "pino";
import { Environment } from "../src/environment.js";
import { readdir, stat } from "node:fs/promises";
import {
  environmentClient,
  eventually,
  freePort,
  freshDatabase,
  isAlive,
  patternBytes,
  sha256Hex,
  startCli,
  startEnvironment,
  stopTestPostgres,
  type Cli,
  type TransportKind,
  stagingDir,
} from "./helpers.js";

const run = promisify(execFile);
const ENV = "runtara.environment.v1.EnvironmentService";

after(() => stopTestPostgres());

/** Waits for exit, failing (and killing the process) after `ms`. */
async function exitWithin(cli: Cli, ms: number): Promise<number | string> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      cli.child.kill("SIGKILL");
      reject(new Error(`did not exit within ${ms} ms; stdout: ${cli.stdout()}\nstderr: ${cli.stderr()}`));
    }, ms);
  });
  try {
    return await Promise.race([cli.exited, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** PIDs of processes whose command line mentions `text`. */
async function processesMentioning(text: string): Promise<string[]> {
  try {
    const { stdout } = await run("pgrep", ["-f", text]);
    return stdout.split("\n").filter((l) => l.trim() !== "");
  } catch (e) {
    if ((e as { code?: number }).code === 1) return []; // pgrep: nothing matched
    throw e;
  }
}

/** After a failed test: stops the CLI and any postgres it left running from `dataDir`. */
async function killLeftovers(cli: Cli, dataDir: string) {
  if (cli.child.exitCode === null && cli.child.signalCode === null) {
    cli.child.kill("SIGKILL");
    await cli.exited;
  }
  for (const pid of await processesMentioning(dataDir)) {
    try {
      process.kill(Number(pid), "SIGQUIT"); // postgres: immediate shutdown
    } catch {
      // already gone
    }
  }
  const deadline = Date.now() + 5_000;
  while ((await processesMentioning(dataDir)).length > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
}

describe("the CLI (npm start)", () => {
  it("stops with npm: npm killed by its pid (it does not pass SIGTERM on) takes the server down gracefully", async () => {
    const db = await freshDatabase();
    const dataDir = await mkdtemp(path.join(tmpdir(), "runtara-npm-"));
    const cli = startCli(
      {
        RUNTARA_DATABASE_URL: db.url,
        DATA_DIR: dataDir,
        RUNTARA_ENV_HTTP_PORT: String(await freePort()),
        RUNTARA_ENV_HTTP_HOST: "127.0.0.1",
        RUNTARA_CORE_ADDR: `127.0.0.1:${await freePort()}`,
      },
      true,
    );
    let serverPid: number | undefined;
    try {
      await cli.waitFor("environment listening", 60_000);
      serverPid = (JSON.parse(cli.stdout().split("\n").find((l) => l.includes("environment listening"))!) as { pid: number }).pid;
      assert.notEqual(serverPid, cli.child.pid, "npm runs the server as its child");
      cli.child.kill("SIGTERM");
      assert.ok(await eventually(async () => !isAlive(serverPid!), 15_000), `the server (pid ${serverPid}) outlived npm: ${cli.stdout().slice(-2000)}`);
      assert.match(cli.stdout(), /npm, which started this server, has exited/);
      assert.match(cli.stdout(), /environment stopped/);
    } finally {
      if (serverPid !== undefined && isAlive(serverPid)) process.kill(serverPid, "SIGKILL");
      cli.child.kill("SIGKILL");
      await db.drop();
      await rm(dataDir, { recursive: true, force: true });
    }
  });

  it("starts, answers curl, and exits 0 on SIGTERM", async () => {
    const db = await freshDatabase();
    const dataDir = await mkdtemp(path.join(tmpdir(), "runtara-cli-"));
    const port = await freePort();
    const cli = startCli({
      RUNTARA_DATABASE_URL: db.url,
      DATA_DIR: dataDir,
      RUNTARA_ENV_HTTP_PORT: String(port),
      RUNTARA_ENV_HTTP_HOST: "127.0.0.1",
      // The embedded core gets a free port too, so parallel runs do not collide on 8001.
      RUNTARA_CORE_ADDR: `127.0.0.1:${await freePort()}`,
    });
    try {
      await cli.waitFor("environment listening");
      const { stdout } = await run("curl", ["-sS", "-H", "Content-Type: application/json", "-d", "{}", `http://127.0.0.1:${port}/${ENV}/HealthCheck`]);
      const health = JSON.parse(stdout);
      assert.equal(health.healthy, true);
      assert.equal(health.databaseReachable, true);
      const bin = Buffer.from(patternBytes(2000, 1)).toString("base64");
      const reg = await run("curl", [
        "-sS",
        "-H",
        "Content-Type: application/json",
        "-d",
        JSON.stringify({ tenantId: "cli", name: "from-curl", binary: bin }),
        `http://127.0.0.1:${port}/${ENV}/RegisterImage`,
      ]);
      assert.equal(JSON.parse(reg.stdout).image.sha256, sha256Hex(patternBytes(2000, 1)));
      cli.child.kill("SIGTERM");
      assert.equal(await exitWithin(cli, 10_000), 0);
      assert.match(cli.stdout(), /environment stopped/);
      // (Read after exit, when all output is flushed.) Logs are JSON lines, one per RPC with method, code and request id.
      const rpcLine = cli
        .stdout()
        .split("\n")
        .filter((l) => l.startsWith("{"))
        .map((l) => JSON.parse(l))
        .find((l) => l.method === `${ENV}/RegisterImage`);
      assert.ok(rpcLine, "an RPC log line");
      assert.equal(rpcLine.code, "Ok");
      assert.ok(rpcLine.requestId);
    } finally {
      cli.child.kill("SIGKILL");
      await db.drop();
      await rm(dataDir, { recursive: true, force: true });
    }
  });

  it("exits non-zero naming the variable when RUNTARA_ENV_HTTP_PORT is invalid", async () => {
    const cli = startCli({ RUNTARA_ENV_HTTP_PORT: "not-a-port", RUNTARA_DATABASE_URL: "postgres://unused@127.0.0.1:1/x" });
    const code = await exitWithin(cli, 15_000);
    assert.notEqual(code, 0);
    assert.match(cli.stderr(), /RUNTARA_ENV_HTTP_PORT/);
  });

  it("fails startup with a non-zero exit when the port is already in use", async () => {
    const db = await freshDatabase();
    const dataDir = await mkdtemp(path.join(tmpdir(), "runtara-cli-"));
    const blocker = net.createServer();
    await new Promise<void>((resolve) => blocker.listen(0, "127.0.0.1", resolve));
    const port = (blocker.address() as net.AddressInfo).port;
    const cli = startCli({
      RUNTARA_DATABASE_URL: db.url,
      DATA_DIR: dataDir,
      RUNTARA_ENV_HTTP_PORT: String(port),
      RUNTARA_ENV_HTTP_HOST: "127.0.0.1",
      RUNTARA_CORE_ADDR: `127.0.0.1:${await freePort()}`,
    });
    try {
      const code = await exitWithin(cli, 20_000);
      assert.notEqual(code, 0);
      assert.match(cli.stdout() + cli.stderr(), /EADDRINUSE/);
      assert.doesNotMatch(cli.stdout(), /environment listening/);
    } finally {
      cli.child.kill("SIGKILL");
      blocker.close();
      await db.drop();
      await rm(dataDir, { recursive: true, force: true });
    }
  });
});

describe("zero-setup database", () => {
  it("npm start with no database URL runs an embedded PostgreSQL and SIGTERM stops both (exit 0)", async () => {
    const dataDir = await mkdtemp(path.join(tmpdir(), "runtara-cli-embedded-"));
    await chmod(dataDir, 0o755);
    const port = await freePort();
    const cli = startCli({
      DATA_DIR: dataDir,
      RUNTARA_ENV_HTTP_PORT: String(port),
      RUNTARA_ENV_HTTP_HOST: "127.0.0.1",
      RUNTARA_CORE_ADDR: `127.0.0.1:${await freePort()}`,
    });
    try {
      await cli.waitFor("environment listening", 60_000);
      assert.match(cli.stdout(), /using embedded PostgreSQL/);
      const { stdout } = await run("curl", ["-sS", "-H", "Content-Type: application/json", "-d", "{}", `http://127.0.0.1:${port}/${ENV}/HealthCheck`]);
      assert.equal(JSON.parse(stdout).databaseReachable, true);
      assert.ok((await processesMentioning(dataDir)).length > 0, "postgres runs from the data dir");
      cli.child.kill("SIGTERM");
      assert.equal(await exitWithin(cli, 15_000), 0);
      assert.deepEqual(await processesMentioning(dataDir), [], "no postgres process left");
    } finally {
      await killLeftovers(cli, dataDir);
      await rm(dataDir, { recursive: true, force: true });
    }
  });

  it("after a kill -9 of npm start, the next start stops the embedded PostgreSQL left running and keeps the data", async () => {
    const dataDir = await mkdtemp(path.join(tmpdir(), "runtara-cli-killed-"));
    await chmod(dataDir, 0o755);
    const port = await freePort();
    const vars = { DATA_DIR: dataDir, RUNTARA_ENV_HTTP_PORT: String(port), RUNTARA_ENV_HTTP_HOST: "127.0.0.1", RUNTARA_CORE_ADDR: `127.0.0.1:${await freePort()}` };
    let cli = startCli(vars);
    try {
      await cli.waitFor("environment listening", 60_000);
      const client = environmentClient(`http://127.0.0.1:${port}`);
      const { imageId } = await client.registerImage({ tenantId: "solo", name: "survivor", binary: patternBytes(500, 3) });
      cli.child.kill("SIGKILL");
      await cli.exited;
      assert.ok((await processesMentioning(dataDir)).length > 0, "its PostgreSQL outlived the kill");
      cli = startCli(vars);
      await cli.waitFor("environment listening", 60_000);
      assert.match(cli.stdout(), /stopping the embedded PostgreSQL an environment that died left running/);
      assert.equal((await client.getImage({ tenantId: "solo", imageId })).image?.name, "survivor");
      cli.child.kill("SIGTERM");
      assert.equal(await exitWithin(cli, 15_000), 0);
      assert.deepEqual(await processesMentioning(dataDir), [], "no postgres process left");
    } finally {
      await killLeftovers(cli, dataDir);
      await rm(dataDir, { recursive: true, force: true });
    }
  });

  it("runs on an embedded PostgreSQL under DATA_DIR, keeps data across restarts, and leaves no process behind", async () => {
    // The postgres user must be able to traverse the data dir's parents; mkdtemp makes 0700.
    const dataDir = await mkdtemp(path.join(tmpdir(), "runtara-embedded-"));
    await chmod(dataDir, 0o755);
    const options = { dataDir, httpPort: 0, httpHost: "127.0.0.1", coreAddr: "127.0.0.1:0", logger: pino({ level: "silent" }), shutdownGraceMs: 1_000 };
    try {
      const first = new Environment(options);
      let imageId: string;
      try {
        await first.start();
        assert.match(first.databaseUrl, /^postgres:\/\/postgres:[^@]+@127\.0\.0\.1:\d+\/postgres$/);
        assert.ok((await processesMentioning(dataDir)).length > 0, "a postgres process runs from the data dir");
        const client = environmentClient(`http://127.0.0.1:${first.address.port}`);
        const health = await client.healthCheck({});
        assert.equal(health.databaseReachable, true);
        const reg = await client.registerImage({ tenantId: "solo", name: "embedded", binary: patternBytes(500, 2) });
        imageId = reg.imageId;
      } finally {
        await first.stop();
      }
      assert.deepEqual(await processesMentioning(dataDir), [], "no postgres process left after stop");

      const second = new Environment(options);
      try {
        await second.start();
        const client = environmentClient(`http://127.0.0.1:${second.address.port}`);
        const got = await client.getImage({ tenantId: "solo", imageId });
        assert.equal(got.image?.name, "embedded");
      } finally {
        await second.stop();
      }
      assert.deepEqual(await processesMentioning(dataDir), [], "no postgres process left after the second stop");
    } finally {
      await rm(dataDir, { recursive: true, force: true });
    }
  });
});

describe("graceful stop", () => {
  for (const kind of ["connect-binary-h2", "connect-json-h1"] as TransportKind[]) {
    it(`lets an upload in flight finish and refuses new connections (${kind})`, async () => {
      const t = await startEnvironment();
      try {
        const client = environmentClient(t.baseUrl, kind);
        const first = patternBytes(1024 * 1024, 1);
        const second = patternBytes(1024 * 1024, 2);
        let release!: () => void;
        const gate = new Promise<void>((resolve) => (release = resolve));
        async function* body() {
          yield { payload: { case: "header" as const, value: { tenantId: "stop", name: "in-flight", binarySize: 2n * 1024n * 1024n } } };
          yield { payload: { case: "chunk" as const, value: first } };
          await gate;
          yield { payload: { case: "chunk" as const, value: second } };
        }
        const call = client.registerImageStream(body());
        const staging = stagingDir(t);
        const receiving = await eventually(async () => {
          for (const dir of await readdir(staging)) {
            if (((await stat(path.join(staging, dir, "binary")).catch(() => undefined))?.size ?? 0) > 0) return true;
          }
          return false;
        });
        assert.ok(receiving, "the server is receiving the upload");
        const stopping = t.env.stop();
        // New connections are refused while the call in flight continues.
        await assert.rejects(fetch(`${t.baseUrl}/${ENV}/HealthCheck`, { method: "POST", headers: { "Content-Type": "application/json" }, body: "{}" }));
        release();
        const res = await call;
        assert.equal(res.image?.sizeBytes, 2n * 1024n * 1024n);
        assert.equal(res.image?.sha256, sha256Hex(first, second));
        await stopping;
      } finally {
        await t.close();
      }
    });
  }
});

describe("stop during start", () => {
  // Each delay lands stop() in a different step of the start sequence (database, migrations,
  // pool, core, recovery, server, workers); stop right after start() is the earliest.
  for (const delayMs of [0, 5, 30, 120, 400]) {
    it(`stop() ${delayMs} ms into start() leaves nothing running: no port, no connection, no worker`, async () => {
      const database = await freshDatabase();
      const dataDir = await mkdtemp(path.join(tmpdir(), "runtara-stop-during-start-"));
      const [port, corePort] = [await freePort(), await freePort()];
      const env = new Environment({
        databaseUrl: database.url,
        dataDir,
        httpPort: port,
        httpHost: "127.0.0.1",
        coreAddr: `127.0.0.1:${corePort}`,
        logger: pino({ level: "silent" }),
        shutdownGraceMs: 500,
      });
      try {
        const starting = env.start();
        await new Promise((r) => setTimeout(r, delayMs));
        const stopped = env.stop();
        const outcome = await starting.then(
          () => "started",
          (e: unknown) => (e as Error).name,
        );
        await stopped;
        // Either the sequence noticed the stop (StoppedDuringStart) or it had finished first;
        // both end stopped.
        assert.ok(["started", "StoppedDuringStart"].includes(outcome), `start() ended with ${outcome}`);
        assert.throws(() => env.address, /not started/);
        for (const p of [port, corePort]) {
          await new Promise<void>((resolve, reject) => {
            const probe = net.createServer().once("error", reject);
            probe.listen(p, "127.0.0.1", () => probe.close(() => resolve()));
          });
        }
        const admin = new URL(database.url);
        const name = admin.pathname.slice(1);
        admin.pathname = "/postgres";
        const { default: pg } = await import("pg");
        const client = new pg.Client({ connectionString: admin.toString() });
        await client.connect();
        try {
          const open = await eventually(async () => {
            const r = await client.query("SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = $1", [name]);
            return r.rows[0].n === 0;
          }, 3_000);
          assert.ok(open, "every database connection of the environment is closed");
        } finally {
          await client.end();
        }
        await assert.rejects(env.start(), /cannot start/);
      } finally {
        await env.stop();
        await database.drop();
        await rm(dataDir, { recursive: true, force: true });
      }
    });
  }
});
