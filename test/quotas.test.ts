import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import pg from "pg";
import { after, before, describe, it } from "node:test";
import { Code, ConnectError } from "@connectrpc/connect";
import { InstanceStatus } from "../gen/runtara/core/v1/types_pb.js";
import { RunnerType } from "../gen/runtara/environment/v1/environment_pb.js";
import { buildFixtures } from "./fixtures/build.js";
import {
  environmentClient,
  freshDatabase,
  insertInstance,
  instanceClient,
  patternBytes,
  rejectsWithCode,
  startEnvironment,
  stopTestPostgres,
  type TestDatabase,
  waitUntil,
  type TestEnvironment,
} from "./helpers.js";

/** Per-tenant and per-instance quotas: RESOURCE_EXHAUSTED naming the variable, other tenants unaffected. */
const enc = (v: unknown) => new TextEncoder().encode(JSON.stringify(v));

describe("quotas", () => {
  let t: TestEnvironment;
  let db: TestDatabase;
  let client: ReturnType<typeof environmentClient>;
  before(async () => {
    // A database whose default isolation is REPEATABLE READ: the environment's connections must
    // still count in READ COMMITTED, or the races below pass the quotas together.
    db = await freshDatabase();
    const admin = new pg.Client({ connectionString: db.url });
    await admin.connect();
    await admin.query(`ALTER DATABASE ${new URL(db.url).pathname.slice(1)} SET default_transaction_isolation = 'repeatable read'`);
    await admin.end();
    t = await startEnvironment({
      databaseUrl: db.url,
      tenantMaxActiveInstances: 2,
      tenantMaxImages: 3,
      tenantMaxImageBytes: 10 * 1024 * 1024,
      maxCheckpointsPerInstance: 3,
      maxEventsPerInstance: 2,
      maxCustomSignalsPerInstance: 2,
    });
    client = environmentClient(t.baseUrl);
  });
  after(async () => {
    await t.close();
    await db.drop();
    await stopTestPostgres();
  });

  /**
   * 20 calls made while another transaction holds a row their statements wait for (the
   * instance's, by default), so that they all run at once when it is let go; their outcomes.
   */
  async function allAtOnce(
    instanceId: string,
    call: (i: number) => Promise<unknown>,
    hold = "SELECT 1 FROM instances WHERE instance_id = $1 FOR NO KEY UPDATE",
  ): Promise<PromiseSettledResult<unknown>[]> {
    const holder = new pg.Client({ connectionString: t.database.url });
    await holder.connect();
    try {
      await holder.query("BEGIN");
      await holder.query(hold, [instanceId]);
      const calls = Promise.allSettled(Array.from({ length: 20 }, (_, i) => call(i)));
      await new Promise((r) => setTimeout(r, 500));
      await holder.query("COMMIT");
      return await calls;
    } finally {
      await holder.end();
    }
  }

  it("images: count and bytes per tenant", async () => {
    for (let i = 0; i < 3; i++) await client.registerImage({ tenantId: "img-a", name: `i${i}`, binary: patternBytes(1024, i) });
    await rejectsWithCode(client.registerImage({ tenantId: "img-a", name: "i3", binary: patternBytes(1024) }), Code.ResourceExhausted, "RUNTARA_TENANT_MAX_IMAGES");
    // Every version counts: a new version of a name the tenant has is refused as well.
    await rejectsWithCode(client.registerImage({ tenantId: "img-a", name: "i0", binary: patternBytes(1024) }), Code.ResourceExhausted, "RUNTARA_TENANT_MAX_IMAGES");
    await client.registerImage({ tenantId: "img-b", name: "i0", binary: patternBytes(1024) });
    await client.registerImage({ tenantId: "img-c", name: "big", binary: patternBytes(9 * 1024 * 1024) });
    await rejectsWithCode(
      client.registerImage({ tenantId: "img-c", name: "more", binary: patternBytes(2 * 1024 * 1024) }),
      Code.ResourceExhausted,
      "RUNTARA_TENANT_MAX_IMAGE_BYTES",
    );
    const [{ n }] = (await t.query<{ n: number }>("SELECT count(*)::int AS n FROM images WHERE tenant_id = 'img-c'")) as [{ n: number }];
    assert.equal(n, 1, "the refused upload left no row");
  });

  it("pending and running instances per tenant; room again once one ends", async () => {
    const binary = await readFile((await buildFixtures()).workflow);
    const image = async (tenantId: string) => (await client.registerImage({ tenantId, name: "w", binary, runnerType: RunnerType.NATIVE })).imageId;
    const [a, b] = [await image("run-a"), await image("run-b")];
    const start = (tenantId: string, imageId: string) => client.startInstance({ tenantId, imageId, env: { WORKFLOW_MODE: "hang" }, timeoutSeconds: 60n });
    const first = await start("run-a", a);
    await start("run-a", a);
    await rejectsWithCode(start("run-a", a), Code.ResourceExhausted, "RUNTARA_TENANT_MAX_ACTIVE_INSTANCES");
    await start("run-b", b); // another tenant is not held back
    await client.stopInstance({ tenantId: "run-a", instanceId: first.instanceId, gracePeriodSeconds: 0n });
    const third = await start("run-a", a);
    await waitUntil(async () => (await client.getInstanceStatus({ tenantId: "run-a", instanceId: third.instanceId })).instance!.status === InstanceStatus.RUNNING);
    const running = await client.listInstances({ tenantId: "run-a", status: InstanceStatus.RUNNING });
    for (const i of [...running.instances, ...(await client.listInstances({ tenantId: "run-b" })).instances]) {
      await client.stopInstance({ tenantId: i.tenantId, instanceId: i.instanceId, gracePeriodSeconds: 0n });
    }
  });

  it("starts all at once stay within the tenant's quota", async () => {
    const binary = await readFile((await buildFixtures()).workflow);
    const { imageId } = await client.registerImage({ tenantId: "run-race", name: "w", binary, runnerType: RunnerType.NATIVE });
    // Every start refreshes an unused image's use time first, so holding its row lines them up.
    await t.query("UPDATE images SET last_used_at = NULL WHERE image_id = $1", [imageId]);
    const answers = await allAtOnce(
      imageId,
      () => client.startInstance({ tenantId: "run-race", imageId, env: { WORKFLOW_MODE: "hang" }, timeoutSeconds: 60n }),
      "SELECT 1 FROM images WHERE image_id = $1 FOR UPDATE",
    );
    for (const a of answers) if (a.status === "rejected") assert.equal(ConnectError.from(a.reason).code, Code.ResourceExhausted, String(a.reason));
    const [row] = await t.query<{ n: number }>("SELECT count(*)::int AS n FROM instances WHERE tenant_id = 'run-race'");
    try {
      assert.deepEqual({ started: answers.filter((a) => a.status === "fulfilled").length, stored: row!.n }, { started: 2, stored: 2 });
    } finally {
      for (const i of (await client.listInstances({ tenantId: "run-race" })).instances) {
        await client.stopInstance({ tenantId: "run-race", instanceId: i.instanceId, gracePeriodSeconds: 0n }).catch(() => undefined);
      }
    }
  });

  it("checkpoints, events and custom signals per instance", async () => {
    const id = await insertInstance(t, { tenantId: "cp" });
    const c = instanceClient(t, id);
    await c.register({ instanceId: id });
    for (const cp of ["a", "b", "c"]) await c.saveCheckpoint({ instanceId: id, checkpointId: cp, state: enc(cp) });
    await rejectsWithCode(c.saveCheckpoint({ instanceId: id, checkpointId: "d", state: enc(1) }), Code.ResourceExhausted, "RUNTARA_MAX_CHECKPOINTS_PER_INSTANCE");
    const replay = await c.saveCheckpoint({ instanceId: id, checkpointId: "b", state: enc("x") });
    assert.equal(replay.found, true, "an existing checkpoint still replays at the quota");
    await c.emitEvent({ instanceId: id, subtype: "e" });
    await c.emitEvent({ instanceId: id, subtype: "e" });
    await rejectsWithCode(c.emitEvent({ instanceId: id, subtype: "e" }), Code.ResourceExhausted, "RUNTARA_MAX_EVENTS_PER_INSTANCE");
    await client.sendCustomSignal({ tenantId: "cp", instanceId: id, checkpointId: "w1", payload: enc(1) });
    await client.sendCustomSignal({ tenantId: "cp", instanceId: id, checkpointId: "w2", payload: enc(2) });
    await rejectsWithCode(
      client.sendCustomSignal({ tenantId: "cp", instanceId: id, checkpointId: "w3", payload: enc(3) }),
      Code.ResourceExhausted,
      "RUNTARA_MAX_CUSTOM_SIGNALS_PER_INSTANCE",
    );
    await c.ackSignal({ instanceId: id, checkpointId: "w1" });
    await client.sendCustomSignal({ tenantId: "cp", instanceId: id, checkpointId: "w3", payload: enc(3) });
    const [row] = await t.query<{ n: number }>("SELECT count(*)::int AS n FROM checkpoints WHERE instance_id = $1", [id]);
    assert.equal(row!.n, 3);
  });

  it("custom signals sent all at once stay within the cap", async () => {
    const id = await insertInstance(t, { tenantId: "cs" });
    await instanceClient(t, id).register({ instanceId: id });
    const answers = await allAtOnce(id, (i) => client.sendCustomSignal({ tenantId: "cs", instanceId: id, checkpointId: `at-once-${i}`, payload: enc(i) }));
    const sent = answers.filter((a) => a.status === "fulfilled").length;
    for (const a of answers) if (a.status === "rejected") assert.equal(ConnectError.from(a.reason).code, Code.ResourceExhausted, String(a.reason));
    const [row] = await t.query<{ n: number }>("SELECT count(*)::int AS n FROM custom_signals WHERE instance_id = $1", [id]);
    assert.deepEqual({ sent, stored: row!.n }, { sent: 2, stored: 2 });
    // Another tenant's id is not found, as before.
    await rejectsWithCode(client.sendCustomSignal({ tenantId: "other", instanceId: id, checkpointId: "x", payload: enc(0) }), Code.NotFound);
  });

  it("checkpoints saved all at once stay within the cap", async () => {
    const id = await insertInstance(t, { tenantId: "cp" });
    const c = instanceClient(t, id);
    await c.register({ instanceId: id });
    const answers = await allAtOnce(id, (i) => c.saveCheckpoint({ instanceId: id, checkpointId: `at-once-${i}`, state: enc(i) }));
    const saved = answers.filter((a) => a.status === "fulfilled").length;
    for (const a of answers) if (a.status === "rejected") assert.equal(ConnectError.from(a.reason).code, Code.ResourceExhausted, String(a.reason));
    const [row] = await t.query<{ n: number; counted: number }>(
      "SELECT (SELECT count(*)::int FROM checkpoints WHERE instance_id = $1) AS n, checkpoint_count AS counted FROM instances WHERE instance_id = $1",
      [id],
    );
    assert.deepEqual({ saved, stored: row!.n, counted: row!.counted }, { saved: 3, stored: 3, counted: 3 });
  });
});
