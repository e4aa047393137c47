import assert from "node:assert/strict";
import { mkdir, mkdtemp, readFile, rm, stat } from "node:fs/promises";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { InstanceStatus, TerminationReason } from "../gen/runtara/core/v1/types_pb.js";
import { RunnerType } from "../gen/runtara/environment/v1/environment_pb.js";
import { buildFixtures } from "./fixtures/build.js";
import { pino } from "pino";
import { randomUUID } from "node:crypto";
import { ChannelHub, createDatabase, Listener } from "../src/db/index.js";
import { Supervisor } from "../src/instances/supervisor.js";
import { DEFAULT_LIMITS, NativeRunner } from "../src/runner/index.js";
import { Spawner } from "../src/runner/spawner.js";
import {
  endPool,
  environmentClient,
  freePort,
  freshDatabase,
  insertInstance,
  isAlive as alive,
  ociSkip,
  startCli,
  startEnvironment,
  stopTestPostgres,
  waitUntil as waitFor,
  type Cli,
  type TestDatabase,
} from "./helpers.js";
import { tmpdir } from "node:os";
import { execa } from "execa";
import pg from "pg";

const TENANT = "tenant-sup";
const ociSkipReason = await ociSkip();




describe("supervision", () => {
  after(stopTestPostgres);

  it("an instance that stops heartbeating is killed and FAILED heartbeat_timeout; an untracked silent one is orphaned", async () => {
    const t = await startEnvironment({ heartbeatTimeoutMs: 2_000, heartbeatCheckIntervalMs: 500 });
    try {
      const env = environmentClient(t.baseUrl);
      const binary = await readFile((await buildFixtures()).workflow);
      const { imageId } = await env.registerImage({ tenantId: TENANT, name: "wf", binary, runnerType: RunnerType.NATIVE });
      const { instanceId } = await env.startInstance({ tenantId: TENANT, imageId, env: { WORKFLOW_MODE: "hang" } });
      const pid = (await t.query(`SELECT pid FROM running_processes WHERE instance_id = $1`, [instanceId]))[0]!.pid as number;
      // An instance no environment tracks, silent for a while.
      await t.query(
        `INSERT INTO instances (instance_id, tenant_id, status, heartbeat_at, started_at) VALUES ('orphan-1', $1, 'running', now() - interval '1 minute', now() - interval '1 minute')`,
        [TENANT],
      );
      await waitFor(async () => (await env.getInstanceStatus({ tenantId: TENANT, instanceId })).instance!.status === InstanceStatus.FAILED);
      const s = (await env.getInstanceStatus({ tenantId: TENANT, instanceId })).instance!;
      assert.equal(s.terminationReason, TerminationReason.HEARTBEAT_TIMEOUT);
      await waitFor(async () => !alive(pid), 5_000);
      await waitFor(async () => (await env.getInstanceStatus({ tenantId: TENANT, instanceId: "orphan-1" })).instance!.status === InstanceStatus.FAILED);
      assert.equal((await env.getInstanceStatus({ tenantId: TENANT, instanceId: "orphan-1" })).instance!.terminationReason, TerminationReason.ORPHANED);
    } finally {
      await t.close();
    }
  });

  describe("kill -9 of the environment process", () => {
    let db: TestDatabase;
    let dataDir: string;
    let port: number;
    let corePort: number;
    let current: Cli | undefined;

    const launch = async () => {
      const cli = startCli({
        RUNTARA_DATABASE_URL: db.url,
        DATA_DIR: dataDir,
        RUNTARA_ENV_HTTP_PORT: String(port),
        RUNTARA_CORE_ADDR: `127.0.0.1:${corePort}`,
        RUNTARA_REPLICA_ID: "recovery-test",
        RUNTARA_WAKE_RECONCILE_INTERVAL_MS: "500",
        RUNTARA_NATIVE_RUNNER: "enabled", // the CLI binds 0.0.0.0 by default, where native is off
      });
      current = cli;
      launched.push(cli);
      await cli.waitFor("environment listening");
      return cli;
    };
    const launched: Cli[] = [];

    before(async () => {
      db = await freshDatabase();
      dataDir = await mkdtemp(path.join(tmpdir(), "runtara-recovery-"));
      port = await freePort();
      corePort = await freePort();
    });
    after(async () => {
      // Every environment a test started, also one a failed test left behind.
      for (const cli of launched) cli.child.kill("SIGTERM");
      await Promise.all(launched.map((cli) => cli.exited));
      await db.drop();
      await rm(dataDir, { recursive: true, force: true });
    });

    it("running instances are adopted and complete, due sleepers wake, nothing runs twice", async () => {
      const first = await launch();
      const env = environmentClient(`http://127.0.0.1:${port}`);
      const binary = await readFile((await buildFixtures()).workflow);
      const { imageId } = await env.registerImage({ tenantId: TENANT, name: "wf", binary, runnerType: RunnerType.NATIVE });
      const running = await Promise.all(
        [0, 1, 2].map(async () => (await env.startInstance({ tenantId: TENANT, imageId, env: { WORKFLOW_MODE: "slow", SLOW_MS: "6000" } })).instanceId),
      );
      const sleeping = (await env.startInstance({ tenantId: TENANT, imageId, env: { WORKFLOW_MODE: "sleep", SLEEP_MS: "1500" } })).instanceId;
      const pool = new pg.Pool({ connectionString: db.url, max: 2 });
      try {
        const statusOf = async (id: string) => (await pool.query(`SELECT status FROM instances WHERE instance_id = $1`, [id])).rows[0]!.status as string;
        await waitFor(async () => (await Promise.all(running.map(statusOf))).every((s) => s === "running"));
        await waitFor(async () => (await statusOf(sleeping)) === "suspended");
        // ...and its process has exited and been recorded (a row left for a process that is gone
        // meets the wake at restart: the H3/H4 race, not what this test is about).
        await waitFor(async () => (await pool.query(`SELECT 1 FROM running_processes WHERE instance_id = $1`, [sleeping])).rows.length === 0);
        const pids = (await pool.query(`SELECT pid FROM running_processes WHERE instance_id = ANY($1)`, [running])).rows.map((r) => r.pid as number);
        assert.equal(pids.length, 3);

        first.child.kill("SIGKILL");
        await first.exited;
        assert.ok(pids.every(alive), "the workflows survive the environment's death");
        await new Promise((r) => setTimeout(r, 1_500)); // the sleeper comes due while nobody runs

        await launch();
        for (const id of [...running, sleeping]) {
          await waitFor(async () => (await statusOf(id)) === "completed", 30_000);
        }
        const registered = await pool.query(
          `SELECT instance_id, count(*)::int AS n FROM instance_events WHERE event_type = 'registered' AND instance_id = ANY($1) GROUP BY instance_id`,
          [[...running, sleeping]],
        );
        const counts = Object.fromEntries(registered.rows.map((r) => [r.instance_id, r.n]));
        for (const id of running) assert.equal(counts[id], 1, "a running instance was not started again");
        assert.equal(counts[sleeping], 2, "the sleeper ran once before and once after its wake");
        await waitFor(async () => (await pool.query(`SELECT 1 FROM running_processes`)).rowCount === 0, 10_000);
      } finally {
        await endPool(pool);
      }
    });

    it("a container that ended while the environment was down leaves no network namespace or pasta behind", { skip: ociSkipReason }, async () => {
      current?.child.kill("SIGTERM"); // the previous test's environment holds the ports
      await current?.exited;
      const first = await launch();
      const env = environmentClient(`http://127.0.0.1:${port}`);
      const binary = await readFile((await buildFixtures()).workflow);
      const { imageId } = await env.registerImage({ tenantId: TENANT, name: "wf-oci", binary, runnerType: RunnerType.OCI });
      const { instanceId } = await env.startInstance({ tenantId: TENANT, imageId, env: { WORKFLOW_MODE: "slow", SLOW_MS: "1500", RETRIES: "12" } });
      const netns = `/run/netns/runtara-${instanceId}`;
      const pool = new pg.Pool({ connectionString: db.url, max: 1 });
      try {
        await waitFor(async () => (await pool.query(`SELECT 1 FROM running_processes WHERE instance_id = $1`, [instanceId])).rows.length === 1);
        const { pid } = (await pool.query(`SELECT pid FROM running_processes WHERE instance_id = $1`, [instanceId])).rows[0] as { pid: number };
        assert.ok(await stat(netns), "an isolated container has its own namespace");
        first.child.kill("SIGKILL");
        await first.exited;
        // The workflow cannot reach core now; it gives up (after 3 s: RETRIES) and its container ends, unwatched.
        await waitFor(async () => !alive(pid), 60_000);
        await launch();
        await waitFor(async () => (await stat(netns).catch(() => null)) === null, 15_000);
        await waitFor(async () => !(await execa("pgrep", ["-f", `netns/runtara-${instanceId}`], { reject: false })).stdout.trim(), 10_000);
      } finally {
        await endPool(pool);
      }
    });
  });

  it("a terminal status reaching a launch between listening and tracking, in the record or after, ends the run", async (t) => {
    const te = await startEnvironment();
    const logger = pino({ level: "silent" });
    const db = await createDatabase({ url: te.database.url, poolSize: 2, logger });
    const listener = new Listener(te.database.url, logger);
    const hub = new ChannelHub(listener, "runtara_instance");
    await listener.start();
    const supervisor = new Supervisor(db, hub, logger);
    const spawner = new Spawner();
    const runner = new NativeRunner({ spawner, owner: "suptest" });
    t.after(async () => {
      spawner.close();
      await listener.stop();
      await db.end();
      await te.close();
    });
    const sleeper = (await buildFixtures()).sleeper;
    const far = Date.now() + 3_600_000;
    /** A running sleeper, recorded as the environment records a launch. */
    const launch = async (instanceId: string) => {
      const runDir = path.join(te.dataDir, "runs", TENANT, instanceId);
      await mkdir(runDir, { recursive: true });
      const proc = await runner.launch({ instanceId, tenantId: TENANT, binaryPath: sleeper, bundlePath: "", runDir, env: {}, limits: DEFAULT_LIMITS, networkMode: "host" });
      const runId = randomUUID();
      await te.query(
        `INSERT INTO running_processes (instance_id, run_id, runner, container_id, pid, process_start_time, replica_id, host, run_dir, deadline, boot_id)
         VALUES ($1, $2, 'native', '', $3, $4, 'r', 'h', $5, now() + interval '1 hour', 'b')`,
        [instanceId, runId, proc.pid, proc.startTime.toString(), runDir],
      );
      return { proc, runId };
    };
    /** Resolves once the hub has delivered a hint naming `status` for the instance. */
    const heard = (instanceId: string, status: string) =>
      new Promise<void>((resolve) => {
        const off = hub.subscribe(instanceId, (payload) => payload.endsWith(` ${status}`) && (off(), resolve()));
      });
    const cancel = (instanceId: string) => te.query("UPDATE instances SET status = 'cancelled', termination_reason = 'cancelled', finished_at = now() WHERE instance_id = $1", [instanceId]);

    // Cancelled after listening, before tracking: the hint waits for the hand-over.
    const early = await insertInstance(te, { tenantId: TENANT });
    const earlyRun = await launch(early);
    const earlyListener = supervisor.listen(early);
    const earlyHeard = heard(early, "cancelled");
    await cancel(early);
    await earlyHeard;
    supervisor.track(early, earlyRun.runId, earlyRun.proc, far, { listener: earlyListener, status: "pending" });

    // Cancelled before the record, which read it: no hint comes after listening.
    const inRecord = await insertInstance(te, { tenantId: TENANT, status: "cancelled" });
    const inRecordRun = await launch(inRecord);
    supervisor.track(inRecord, inRecordRun.runId, inRecordRun.proc, far, { listener: supervisor.listen(inRecord), status: "cancelled" });

    // Cancelled after tracking; and a run whose instance only moved on (running), which goes on.
    const late = await insertInstance(te, { tenantId: TENANT });
    const lateRun = await launch(late);
    const staying = await insertInstance(te, { tenantId: TENANT });
    const stayingRun = await launch(staying);
    const stayingListener = supervisor.listen(staying);
    const stayingHeard = heard(staying, "running");
    await te.query("UPDATE instances SET status = 'running' WHERE instance_id = $1", [staying]);
    await stayingHeard;
    supervisor.track(late, lateRun.runId, lateRun.proc, far, { listener: supervisor.listen(late), status: "pending" });
    supervisor.track(staying, stayingRun.runId, stayingRun.proc, far, { listener: stayingListener, status: "pending" });
    await cancel(late);

    const ended = [early, inRecord, late];
    await waitFor(async () => (await te.query("SELECT 1 FROM running_processes WHERE instance_id = ANY($1)", [ended])).length === 0, 10_000);
    for (const { proc } of [earlyRun, inRecordRun, lateRun]) assert.ok(!alive(proc.pid), `the run of ${proc.instanceId} was ended`);
    assert.ok(alive(stayingRun.proc.pid), "a run whose instance is running goes on");
    assert.equal(await supervisor.stop(staying, 0), true);
    const rows = await te.query<{ instance_id: string; status: string }>("SELECT instance_id, status FROM instances WHERE instance_id = ANY($1)", [[...ended, staying]]);
    assert.deepEqual(new Map(rows.map((r) => [r.instance_id, r.status])), new Map([...ended.map((id) => [id, "cancelled"] as const), [staying, "cancelled"]]));
  });
});
