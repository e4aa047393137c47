import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { chmod, mkdtemp, readdir, readFile, rm } from "node:fs/promises";
import os, { tmpdir } from "node:os";
import path from "node:path";
import { after, describe, it } from "node:test";
import { Code, ConnectError } from "@connectrpc/connect";
import { execa } from "execa";
import { InstanceStatus, SignalType, TerminationReason } from "../gen/runtara/core/v1/types_pb.js";
import { RunnerType } from "../gen/runtara/environment/v1/environment_pb.js";
import { readProcessStartTime } from "../src/runner/index.js";
import { buildFixtures } from "./fixtures/build.js";
import {
  environmentClient,
  freshDatabase,
  insertInstance,
  isAlive,
  rejectsWithCode,
  startEnvironment,
  stopTestPostgres,
  waitUntil,
  type TestDatabase,
  type TestEnvironment,
} from "./helpers.js";

/**
 * The fault suite at CI size (bench/faults.ts runs the same scenarios large): an instance is
 * never lost, never launched twice and never stuck, through relaunch races, crashes between a
 * claim and its launch, stops sent to the wrong replica, rows of another boot, failing
 * relaunches and DeleteImage racing StartInstance. Real PostgreSQL, real processes, real runc.
 */
const TENANT = "faults";
const dec = (b: Uint8Array) => JSON.parse(new TextDecoder().decode(b)) as unknown;
const fixture = (async () => readFile((await buildFixtures()).workflow))();

after(() => stopTestPostgres());

type Client = ReturnType<typeof environmentClient>;

async function registerWorkflow(client: Client, runnerType: RunnerType, name = `workflow-${RunnerType[runnerType]}`) {
  return (await client.registerImage({ tenantId: TENANT, name, binary: await fixture, runnerType })).imageId;
}

async function statusOf(client: Client, instanceId: string) {
  return (await client.getInstanceStatus({ tenantId: TENANT, instanceId })).instance!;
}

async function waitForStatus(client: Client, instanceId: string, status: InstanceStatus, timeoutMs = 30_000) {
  await waitUntil(async () => (await statusOf(client, instanceId)).status === status, timeoutMs);
}

/** Follows WatchInstance to the end; every status seen. */
async function watchToEnd(client: Client, instanceId: string) {
  const seen: InstanceStatus[] = [];
  for await (const res of client.watchInstance({ tenantId: TENANT, instanceId }, { timeoutMs: 60_000 })) seen.push(res.instance!.status);
  return seen;
}

describe("faults", () => {
  for (const [kind, runnerType, rounds] of [
    ["native", RunnerType.NATIVE, 10],
    ["oci", RunnerType.OCI, 5],
  ] as const) {
    it(`${kind}: PAUSE acknowledged, then resumed the moment SUSPENDED shows, ${rounds} times: never FAILED, always resumed`, async (t) => {
      if (kind === "oci" && process.env.CI === "true") await execa("runc", ["--version"]);
      const env = await startEnvironment();
      t.after(() => env.close());
      const client = environmentClient(env.baseUrl);
      const imageId = await registerWorkflow(client, runnerType);
      for (let i = 0; i < rounds; i++) {
        const { instanceId } = await client.startInstance({ tenantId: TENANT, imageId, env: { WORKFLOW_MODE: "cooperative" } });
        const watching = watchToEnd(client, instanceId);
        await waitForStatus(client, instanceId, InstanceStatus.RUNNING);
        await client.sendSignal({ tenantId: TENANT, instanceId, signalType: SignalType.PAUSE });
        await waitUntil(async () => (await statusOf(client, instanceId)).status === InstanceStatus.SUSPENDED, 30_000);
        // At once, while the paused process may still be exiting: alternate the two ways in.
        if (i % 2 === 0) await client.resumeInstance({ tenantId: TENANT, instanceId });
        else await client.sendSignal({ tenantId: TENANT, instanceId, signalType: SignalType.RESUME });
        const seen = await watching;
        const final = await statusOf(client, instanceId);
        assert.equal(final.status, InstanceStatus.COMPLETED, `round ${i}: ${final.error}`);
        assert.deepEqual(dec(final.output), { resumed: true });
        assert.ok(!seen.includes(InstanceStatus.FAILED), `round ${i} showed FAILED: ${seen.join(",")}`);
      }
    });
  }

  it("a relaunch whose launch fails leaves the instance SUSPENDED with the error; the next resume completes it", async (t) => {
    const env = await startEnvironment();
    t.after(() => env.close());
    const client = environmentClient(env.baseUrl);
    const imageId = await registerWorkflow(client, RunnerType.NATIVE);
    const { instanceId } = await client.startInstance({ tenantId: TENANT, imageId, env: { WORKFLOW_MODE: "cooperative" } });
    await waitForStatus(client, instanceId, InstanceStatus.RUNNING);
    await client.sendSignal({ tenantId: TENANT, instanceId, signalType: SignalType.PAUSE });
    await waitUntil(async () => (await env.query("SELECT 1 FROM running_processes WHERE instance_id = $1", [instanceId])).length === 0);
    const binary = path.join(env.dataDir, "images", imageId, "binary");
    await chmod(binary, 0o644); // the next exec fails
    await rejectsWithCode(client.resumeInstance({ tenantId: TENANT, instanceId }), Code.FailedPrecondition, "still SUSPENDED");
    const after = await statusOf(client, instanceId);
    assert.equal(after.status, InstanceStatus.SUSPENDED);
    assert.equal(after.terminationReason, TerminationReason.PAUSED);
    assert.match(after.error, /launch failed/);
    await chmod(binary, 0o755);
    await client.resumeInstance({ tenantId: TENANT, instanceId });
    await watchToEnd(client, instanceId);
    const final = await statusOf(client, instanceId);
    assert.equal(final.status, InstanceStatus.COMPLETED, final.error);
    assert.deepEqual(dec(final.output), { resumed: true });
  });

  describe("with a database that outlives one environment", () => {
    let database: TestDatabase;
    let dataDir: string;
    const open: TestEnvironment[] = [];
    const startReplica = async (replicaId: string, extra: Parameters<typeof startEnvironment>[0] = {}) => {
      const env = await startEnvironment({ databaseUrl: database.url, dataDir, replicaId, ...extra });
      open.push(env);
      return env;
    };
    const setUp = async () => {
      database = await freshDatabase();
      dataDir = await mkdtemp(path.join(tmpdir(), "runtara-faults-"));
    };
    const tearDown = async () => {
      for (const env of open.splice(0)) await env.close();
      await database.drop();
      await rm(dataDir, { recursive: true, force: true });
    };

    it("an environment that died between claiming a relaunch and launching it relaunches the instance when it restarts", async (t) => {
      await setUp();
      t.after(tearDown);
      const first = await startReplica("replica-a");
      const client = environmentClient(first.baseUrl);
      const imageId = await registerWorkflow(client, RunnerType.NATIVE);
      const { instanceId } = await client.startInstance({ tenantId: TENANT, imageId, env: { WORKFLOW_MODE: "cooperative" } });
      await waitForStatus(client, instanceId, InstanceStatus.RUNNING);
      await client.sendSignal({ tenantId: TENANT, instanceId, signalType: SignalType.PAUSE });
      await waitUntil(async () => (await first.query("SELECT 1 FROM running_processes WHERE instance_id = $1", [instanceId])).length === 0);
      await first.env.stop();
      // What claimForRelaunch leaves when the process dies right after it committed.
      await first.query("UPDATE instances SET status = 'pending', termination_reason = NULL, pending_since = now(), claimed_by = 'replica-a' WHERE instance_id = $1", [
        instanceId,
      ]);
      const second = await startReplica("replica-a");
      const again = environmentClient(second.baseUrl);
      await watchToEnd(again, instanceId);
      const final = await statusOf(again, instanceId);
      assert.equal(final.status, InstanceStatus.COMPLETED, final.error);
      assert.deepEqual(dec(final.output), { resumed: true });
    });

    it("a launch that fails after its process registered settles the instance FAILED at once, its process gone", async (t) => {
      await setUp();
      t.after(tearDown);
      const env = await startReplica("replica-r");
      const client = environmentClient(env.baseUrl);
      const imageId = await registerWorkflow(client, RunnerType.NATIVE);
      // The run's record fails, and only after its process had time to register (RUNNING).
      await env.query(`CREATE FUNCTION fail_record() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN PERFORM pg_sleep(1); RAISE EXCEPTION 'injected: the run could not be recorded'; END $$`);
      await env.query("CREATE TRIGGER fail_record BEFORE INSERT ON running_processes FOR EACH ROW EXECUTE FUNCTION fail_record()");
      const instanceId = "registered-then-failed";
      await assert.rejects(client.startInstance({ tenantId: TENANT, imageId, instanceId, env: { WORKFLOW_MODE: "slow", SLOW_MS: "600000" } }));
      const events = await env.query("SELECT 1 FROM instance_events WHERE instance_id = $1 AND event_type = 'registered'", [instanceId]);
      assert.equal(events.length, 1, "the process registered before its launch failed");
      const final = await statusOf(client, instanceId);
      assert.equal(final.status, InstanceStatus.FAILED, `status ${InstanceStatus[final.status]}`);
      assert.equal(final.terminationReason, TerminationReason.LAUNCH_FAILED);
      const left: string[] = [];
      for (const pid of await readdir("/proc")) {
        const environ = await readFile(`/proc/${pid}/environ`, "utf8").catch(() => "");
        if (environ.split("\0").includes(`RUNTARA_INSTANCE_ID=${instanceId}`)) left.push(pid);
      }
      assert.deepEqual(left, [], "no process of the instance is left");
    });

    it("a PENDING instance whose replica is gone is relaunched by another after the pending timeout", async (t) => {
      await setUp();
      t.after(tearDown);
      const env = await startReplica("replica-b", { pendingTimeoutMs: 1_000 });
      const client = environmentClient(env.baseUrl);
      const imageId = await registerWorkflow(client, RunnerType.NATIVE);
      const [image] = await env.query<{ name: string }>("SELECT name FROM images WHERE image_id = $1", [imageId]);
      const instanceId = await insertInstance(env, { tenantId: TENANT, status: "pending" });
      await env.query(
        `UPDATE instances SET image_id = $2, image_name = $3, env = '{"WORKFLOW_MODE":"complete"}', claimed_by = 'replica-that-died',
           pending_since = now() - interval '1 hour' WHERE instance_id = $1`,
        [instanceId, imageId, image!.name],
      );
      await waitForStatus(client, instanceId, InstanceStatus.COMPLETED);
      const final = await statusOf(client, instanceId);
      assert.deepEqual(dec(final.output), { ok: true });
    });

    it("a replica starting up leaves another replica's fresh PENDING instance to it", async (t) => {
      await setUp();
      t.after(tearDown);
      const first = await startReplica("replica-a");
      const imageId = await registerWorkflow(environmentClient(first.baseUrl), RunnerType.NATIVE);
      const instanceId = await insertInstance(first, { tenantId: TENANT, status: "pending" });
      // What a replica that is launching it right now has written.
      await first.query(`UPDATE instances SET image_id = $2, claimed_by = 'replica-busy', pending_since = now() WHERE instance_id = $1`, [instanceId, imageId]);
      await first.env.stop();
      await startReplica("replica-a");
      const [row] = await first.query<{ status: string; claimed_by: string; launch_attempts: number }>(
        "SELECT status, claimed_by, launch_attempts FROM instances WHERE instance_id = $1",
        [instanceId],
      );
      assert.deepEqual({ ...row }, { status: "pending", claimed_by: "replica-busy", launch_attempts: 0 });
    });

    it("StopInstance sent to a replica that does not own the process: the owner's process is gone within grace + 2 s", async (t) => {
      await setUp();
      t.after(tearDown);
      const owner = await startReplica("owner");
      const other = await startReplica("other");
      const ownerClient = environmentClient(owner.baseUrl);
      const imageId = await registerWorkflow(ownerClient, RunnerType.NATIVE);
      // "hang" ignores CANCEL and SIGTERM: only a kill ends it.
      const { instanceId } = await ownerClient.startInstance({ tenantId: TENANT, imageId, env: { WORKFLOW_MODE: "hang" } });
      await waitForStatus(ownerClient, instanceId, InstanceStatus.RUNNING);
      const [{ pid }] = (await owner.query<{ pid: number }>("SELECT pid FROM running_processes WHERE instance_id = $1", [instanceId])) as [{ pid: number }];
      const began = Date.now();
      const res = await environmentClient(other.baseUrl).stopInstance({ tenantId: TENANT, instanceId, gracePeriodSeconds: 1n });
      assert.equal(res.status, InstanceStatus.CANCELLED);
      await waitUntil(async () => !isAlive(pid), 10_000);
      const tookMs = Date.now() - began;
      assert.ok(tookMs <= 1_000 + 2_000 + 500, `the process was gone after ${tookMs} ms (grace 1 s)`);
      await waitUntil(async () => (await owner.query("SELECT 1 FROM running_processes WHERE instance_id = $1", [instanceId])).length === 0);
      assert.equal((await statusOf(ownerClient, instanceId)).terminationReason, TerminationReason.CANCELLED);
    });

    it("a process whose instance was cancelled while nobody watched it (mid-launch, or between restarts) is stopped when watching begins", async (t) => {
      await setUp();
      t.after(tearDown);
      const first = await startReplica("replica-c");
      const client = environmentClient(first.baseUrl);
      const imageId = await registerWorkflow(client, RunnerType.NATIVE);
      const { instanceId } = await client.startInstance({ tenantId: TENANT, imageId, env: { WORKFLOW_MODE: "hang" } });
      await waitForStatus(client, instanceId, InstanceStatus.RUNNING);
      const [{ pid }] = (await first.query<{ pid: number }>("SELECT pid FROM running_processes WHERE instance_id = $1", [instanceId])) as [{ pid: number }];
      await first.env.stop(); // the workflow keeps running, unwatched
      // The cancel that nobody was subscribed to hear (as when it lands during a launch).
      await first.query("UPDATE instances SET status = 'cancelled', termination_reason = 'cancelled', finished_at = now() WHERE instance_id = $1", [instanceId]);
      assert.ok(isAlive(pid));
      await startReplica("replica-c");
      await waitUntil(async () => !isAlive(pid), 10_000);
      await waitUntil(async () => (await first.query("SELECT 1 FROM running_processes WHERE instance_id = $1", [instanceId])).length === 0);
    });

    it("a process row of another boot is never adopted or signalled, and a bad row does not block startup", async (t) => {
      await setUp();
      t.after(tearDown);
      const first = await startReplica("replica-c");
      const stranger = spawn("sleep", ["300"], { stdio: "ignore" });
      t.after(() => stranger.kill("SIGKILL"));
      const startTime = (await readProcessStartTime(stranger.pid!))!;
      const fromAnotherBoot = await insertInstance(first, { tenantId: TENANT, status: "running" });
      const broken = await insertInstance(first, { tenantId: TENANT, status: "running" });
      const row = (instanceId: string, pid: number, start: bigint, boot: string, runner: string, container: string) =>
        first.query(
          `INSERT INTO running_processes (instance_id, runner, container_id, pid, process_start_time, replica_id, host, run_dir, deadline, boot_id)
           VALUES ($1, $2, $3, $4, $5, 'replica-c', $6, '/nonexistent', now() + interval '1 hour', $7)`,
          [instanceId, runner, container, pid, start.toString(), os.hostname(), boot],
        );
      // Same pid and start time as a live process, but recorded in another boot.
      await row(fromAnotherBoot, stranger.pid!, startTime, "another-boot", "native", "");
      // This boot, but nothing of it makes sense (no such container, no such process).
      const bootId = (await readFile("/proc/sys/kernel/random/boot_id", "utf8")).trim();
      await row(broken, 2 ** 22 + 17, 1n, bootId, "oci", "runtara-no-such-container");
      await first.env.stop();
      const second = await startReplica("replica-c");
      assert.ok(isAlive(stranger.pid!), "the process of the same pid and start time in another boot was not signalled");
      // The OCI row is adopted and found gone by its watcher a moment later.
      await waitUntil(async () => (await second.query("SELECT 1 FROM running_processes")).length === 0, 10_000);
      const client = environmentClient(second.baseUrl);
      for (const id of [fromAnotherBoot, broken]) {
        const s = await statusOf(client, id);
        assert.equal(s.status, InstanceStatus.FAILED);
        assert.equal(s.terminationReason, TerminationReason.CRASHED);
      }
    });
  });

  it("a start of an image found for an earlier start and deleted since is NOT_FOUND; another tenant's is NOT_FOUND", async (t) => {
    const env = await startEnvironment();
    t.after(() => env.close());
    const client = environmentClient(env.baseUrl);
    const imageId = await registerWorkflow(client, RunnerType.NATIVE, "found-then-deleted");
    const { instanceId } = await client.startInstance({ tenantId: TENANT, imageId, env: { WORKFLOW_MODE: "complete" } });
    await waitForStatus(client, instanceId, InstanceStatus.COMPLETED);
    await rejectsWithCode(client.startInstance({ tenantId: "another-tenant", imageId }), Code.NotFound, imageId);
    await client.deleteImage({ tenantId: TENANT, imageId });
    await rejectsWithCode(client.startInstance({ tenantId: TENANT, imageId }), Code.NotFound, imageId);
    assert.deepEqual(await env.query("SELECT instance_id FROM instances WHERE instance_id <> $1", [instanceId]), []);
  });

  it("StartInstance racing DeleteImage, 40 pairs: a started instance never loses its image", async (t) => {
    const env = await startEnvironment();
    t.after(() => env.close());
    const client = environmentClient(env.baseUrl);
    const outcomes = await Promise.all(
      Array.from({ length: 40 }, async (_, i) => {
        const imageId = await registerWorkflow(client, RunnerType.NATIVE, `race-${i}`);
        // The delete goes 0-95 ms after the start (5 ms steps), so both orders happen at any
        // load: at 0-19 ms, on a machine busy with other work, every delete once won (0 of 40).
        const [started, deleted] = await Promise.allSettled([
          client.startInstance({ tenantId: TENANT, imageId, env: { WORKFLOW_MODE: "hang" }, timeoutSeconds: 60n }),
          new Promise((r) => setTimeout(r, (i % 20) * 5)).then(() => client.deleteImage({ tenantId: TENANT, imageId })),
        ]);
        return { started, deleted };
      }),
    );
    for (const { started, deleted } of outcomes) {
      assert.ok(!(started.status === "fulfilled" && deleted.status === "fulfilled"), "an image was deleted under a running instance");
      if (started.status === "rejected") assert.equal(ConnectError.from(started.reason).code, Code.NotFound, String(started.reason));
      if (deleted.status === "rejected") assert.equal(ConnectError.from(deleted.reason).code, Code.FailedPrecondition, String(deleted.reason));
    }
    const orphans = await env.query("SELECT instance_id FROM instances WHERE image_id IS NULL AND status IN ('pending', 'running', 'suspended')");
    assert.deepEqual(orphans, []);
    const running = outcomes.flatMap((o) => (o.started.status === "fulfilled" ? [o.started.value.instanceId] : []));
    assert.ok(running.length > 0 && running.length < 40, `both sides won sometimes (started ${running.length} of 40)`);
    await Promise.all(running.map((instanceId) => client.stopInstance({ tenantId: TENANT, instanceId, gracePeriodSeconds: 0n })));
  });
});
