import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import { after, before, describe, it } from "node:test";
import { pino } from "pino";
import { InstanceStatus } from "../gen/runtara/core/v1/types_pb.js";
import { RunnerType } from "../gen/runtara/environment/v1/environment_pb.js";
import { Environment } from "../src/environment.js";
import { buildFixtures } from "./fixtures/build.js";
import { environmentClient, eventually, startEnvironment, stopTestPostgres, type TestEnvironment } from "./helpers.js";

const TENANT = "tenant-wake";

describe("wake scheduler", () => {
  let t: TestEnvironment;
  let imageId: string;
  before(async () => {
    t = await startEnvironment({ wakeReconcileIntervalMs: 1_000 });
    const binary = await readFile((await buildFixtures()).workflow);
    imageId = (await environmentClient(t.baseUrl).registerImage({ tenantId: TENANT, name: "sleeper", binary, runnerType: RunnerType.NATIVE })).imageId;
  });
  after(async () => {
    await t.close();
    await stopTestPostgres();
  });

  /** Sleepers inserted directly, as if each had called Sleep: due at the given times. */
  async function insertSleepers(prefix: string, wakeAtMs: number[]): Promise<string[]> {
    const ids = wakeAtMs.map((_, i) => `${prefix}-${i}`);
    await t.query(
      `INSERT INTO instances (instance_id, tenant_id, image_id, image_name, status, termination_reason, sleep_until, checkpoint_id, input, env)
       SELECT id, $1, $2, 'sleeper', 'suspended', 'sleeping', to_timestamp(w / 1000.0), 'sleep:0', '\\x7b7d', '{"WORKFLOW_MODE":"complete"}'
       FROM unnest($3::text[], $4::float8[]) AS s(id, w)`,
      [TENANT, imageId, ids, wakeAtMs],
    );
    return ids;
  }

  async function waitAllTerminal(ids: string[], timeoutMs: number) {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const rows = await t.query(`SELECT count(*)::int AS n FROM instances WHERE instance_id = ANY($1) AND status IN ('completed', 'failed', 'cancelled')`, [ids]);
      if (rows[0]!.n === ids.length) return;
      if (Date.now() > deadline) throw new Error(`${ids.length - rows[0]!.n} of ${ids.length} not finished in time`);
      await new Promise((r) => setTimeout(r, 200));
    }
  }

  async function registrations(ids: string[]) {
    return t.query<{ instance_id: string; n: number; status: string }>(
      `SELECT i.instance_id, i.status, (SELECT count(*)::int FROM instance_events e WHERE e.instance_id = i.instance_id AND e.event_type = 'registered') AS n
       FROM instances i WHERE i.instance_id = ANY($1)`,
      [ids],
    );
  }

  it("a sleeper due while its process is still recorded does not make the scheduler spin, and wakes once that run's record goes", async () => {
    // Reconcile far away: only the run's end can wake it within the test.
    const e = await startEnvironment({ wakeReconcileIntervalMs: 600_000 });
    try {
      const binary = await readFile((await buildFixtures()).workflow);
      const image = (await environmentClient(e.baseUrl).registerImage({ tenantId: TENANT, name: "recorded", binary, runnerType: RunnerType.NATIVE })).imageId;
      await e.query(
        `INSERT INTO instances (instance_id, tenant_id, image_id, image_name, status, input, env) VALUES ('recorded-1', $1, $2, 'recorded', 'running', '\\x7b7d', '{"WORKFLOW_MODE":"complete"}')`,
        [TENANT, image],
      );
      // Its process, on another host (never adopted here), has called Sleep and not exited yet.
      await e.query(`INSERT INTO running_processes (instance_id, run_id, boot_id, runner, container_id, pid, process_start_time, replica_id, host, run_dir, deadline)
        VALUES ('recorded-1', gen_random_uuid(), 'another-boot', 'native', '', 999999, 1, 'elsewhere', 'elsewhere', '/nonexistent', now() + interval '1 hour')`);
      await e.query(`UPDATE instances SET status = 'suspended', termination_reason = 'sleeping', sleep_until = now(), checkpoint_id = 'sleep:0' WHERE instance_id = 'recorded-1'`);
      const transactions = async () => Number((await e.query(`SELECT xact_commit + xact_rollback AS n FROM pg_stat_database WHERE datname = current_database()`))[0]!.n);
      const before = await transactions();
      await new Promise((r) => setTimeout(r, 3_000));
      const during = (await transactions()) - before;
      assert.ok(during < 500, `${during} transactions in 3 s with one due, unclaimable sleeper (a spinning scheduler makes hundreds a second)`);
      await e.query("DELETE FROM running_processes WHERE instance_id = 'recorded-1'"); // as its run's end does
      const status = async () => (await e.query<{ status: string }>("SELECT status FROM instances WHERE instance_id = 'recorded-1'"))[0]!.status;
      await eventually(async () => (await status()) === "completed", 20_000);
      assert.equal(await status(), "completed", "woken by its run's end, long before the next reconcile");
    } finally {
      await e.close();
    }
  });

  it("a workflow sleeping 2 s is woken and completes", async () => {
    const env = environmentClient(t.baseUrl);
    const { instanceId } = await env.startInstance({ tenantId: TENANT, imageId, env: { WORKFLOW_MODE: "sleep", SLEEP_MS: "2000" } });
    const seen: InstanceStatus[] = [];
    const began = Date.now();
    let last;
    for await (const res of env.watchInstance({ tenantId: TENANT, instanceId }, { timeoutMs: 30_000 })) {
      seen.push(res.instance!.status);
      last = res.instance!;
    }
    assert.equal(last!.status, InstanceStatus.COMPLETED, last!.error);
    assert.deepEqual(JSON.parse(new TextDecoder().decode(last!.output)), { woke: true });
    assert.ok(seen.includes(InstanceStatus.SUSPENDED));
    assert.ok(Date.now() - began >= 1_900, "it really slept");
    const events = await t.query(`SELECT count(*)::int AS n FROM instance_events WHERE instance_id = $1 AND event_type = 'registered'`, [instanceId]);
    assert.equal(events[0]!.n, 2, "registered once per run");
  });

  it("sleepers that came due while nobody ran fire right after start, and far-future sleepers stay asleep", async () => {
    const past = await insertSleepers("past", Array.from({ length: 5 }, () => Date.now() - 60_000));
    const future = await insertSleepers("future", [Date.now() + 3_600_000]);
    await waitAllTerminal(past, 30_000);
    for (const r of await registrations(past)) assert.equal(r.status, "completed");
    const [f] = await registrations(future);
    assert.equal(f!.status, "suspended");
    assert.equal(f!.n, 0);
  });

  // 500 real launches keep the suite short; WAKE_TEST_SLEEPERS runs more (bench/wake runs 10,000).
  const sleepers = Number(process.env.WAKE_TEST_SLEEPERS ?? 500);
  it(`${sleepers} sleepers with random wake times are each woken exactly once, also with two environments on one database`, async () => {
    // A second environment process on the same database and data directory competes for every wake.
    const second = new Environment({
      databaseUrl: t.database.url,
      dataDir: t.dataDir,
      httpPort: 0,
      httpHost: "127.0.0.1",
      coreAddr: "127.0.0.1:0",
      replicaId: "second-replica",
      wakeReconcileIntervalMs: 1_000,
      logger: pino({ level: "silent" }),
    });
    await second.start();
    try {
      const windowMs = Number(process.env.WAKE_TEST_WINDOW_MS ?? 20_000);
      const now = Date.now() + 1_000;
      const ids = await insertSleepers("many", Array.from({ length: sleepers }, () => now + Math.random() * windowMs));
      await waitAllTerminal(ids, windowMs + 90_000);
      const rows = await registrations(ids);
      const notOnce = rows.filter((r) => r.n !== 1 || r.status !== "completed");
      assert.deepEqual(notOnce, [], "every sleeper registered exactly once and completed");
      // An instance completes before its process exits; the exits are recorded moments later.
      const tracked = async () => (await t.query(`SELECT count(*)::int AS n FROM running_processes`))[0]!.n as number;
      assert.ok(await eventually(async () => (await tracked()) === 0, 30_000), `no process left tracked (${await tracked()} are)`);
    } finally {
      await second.stop();
    }
  });
});
