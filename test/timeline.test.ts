/**
 * What the web console reads besides the older API: an instance's timeline
 * (ListInstanceTransitions, from the transitions the database records) and ListInstances'
 * instance_id_prefix, both within one tenant only.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { Code } from "@connectrpc/connect";
import { InstanceStatus, TerminationReason } from "../gen/runtara/core/v1/types_pb.js";
import { environmentClient, insertInstance, rejectsWithCode, startEnvironment, stopTestPostgres, type TestEnvironment } from "./helpers.js";

after(() => stopTestPostgres());

describe("timeline and id prefix", () => {
  let t: TestEnvironment;
  let client: ReturnType<typeof environmentClient>;
  before(async () => {
    t = await startEnvironment();
    client = environmentClient(t.baseUrl);
  });
  after(() => t?.close());

  it("lists every transition, oldest first, with its time and reason; another tenant's instance is NOT_FOUND", async () => {
    const id = await insertInstance(t, { tenantId: "acme", instanceId: "acme-timeline-1" });
    await t.query("UPDATE instances SET status = 'running' WHERE instance_id = $1", [id]);
    await t.query("UPDATE instances SET status = 'failed', termination_reason = 'crashed' WHERE instance_id = $1", [id]);
    const { transitions, truncated } = await client.listInstanceTransitions({ tenantId: "acme", instanceId: id });
    assert.deepEqual(
      transitions.map((x) => [x.status, x.terminationReason]),
      [
        [InstanceStatus.PENDING, TerminationReason.UNSPECIFIED],
        [InstanceStatus.RUNNING, TerminationReason.UNSPECIFIED],
        [InstanceStatus.FAILED, TerminationReason.CRASHED],
      ],
    );
    assert.equal(truncated, false);
    const times = transitions.map((x) => Number(x.at!.seconds) * 1000 + x.at!.nanos / 1e6);
    assert.deepEqual([...times].sort((a, b) => a - b), times);
    assert.ok(Math.abs(times[0]! - Date.now()) < 60_000);
    await rejectsWithCode(client.listInstanceTransitions({ tenantId: "other", instanceId: id }), Code.NotFound, id);
  });

  it("filters instances by id prefix, its wildcards taken literally, within the tenant", async () => {
    for (const id of ["acme-pre_a", "acme-pre_b", "acme-preXc"]) await insertInstance(t, { tenantId: "acme", instanceId: id });
    await insertInstance(t, { tenantId: "other", instanceId: "acme-pre_z" });
    const ids = async (prefix: string) => (await client.listInstances({ tenantId: "acme", instanceIdPrefix: prefix, orderBy: 2 })).instances.map((i) => i.instanceId);
    assert.deepEqual(await ids("acme-pre_"), ["acme-pre_a", "acme-pre_b"]);
    assert.deepEqual(await ids("acme-pre%"), []);
    assert.equal((await client.listInstances({ tenantId: "acme", instanceIdPrefix: "acme-pre" })).totalCount, 3n);
  });
});
