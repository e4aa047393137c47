import assert from "node:assert/strict";
import path from "node:path";
import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";
import { after, before, describe, it } from "node:test";
import { InstanceStatus, TerminationReason } from "../gen/runtara/core/v1/types_pb.js";
import { RunnerType } from "../gen/runtara/environment/v1/environment_pb.js";
import { environmentClient, startEnvironment, stopTestPostgres, type TestEnvironment } from "./helpers.js";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const TENANT = "tenant-sdk";

/**
 * An image for the native runner that runs an SDK workflow: a shell script with absolute
 * paths only (the runner gives the process no PATH, only the RUNTARA_* variables and env).
 */
function scriptImage(workflow: string): Uint8Array {
  const tsx = createRequire(import.meta.url).resolve("tsx");
  return new TextEncoder().encode(`#!/bin/sh\nexec "${process.execPath}" --import "${tsx}" "${path.join(root, workflow)}"\n`);
}

describe("SDK workflows launched by the environment's native runner", () => {
  let t: TestEnvironment;
  before(async () => {
    t = await startEnvironment({ wakeReconcileIntervalMs: 1_000, heartbeatTimeoutMs: 2_000, heartbeatCheckIntervalMs: 500 });
  });
  after(async () => {
    await t.close();
    await stopTestPostgres();
  });

  async function runToEnd(workflow: string, env: Record<string, string> = {}) {
    const client = environmentClient(t.baseUrl);
    const name = `${path.basename(workflow, ".ts")}-${Math.random().toString(36).slice(2, 8)}`;
    const { imageId } = await client.registerImage({ tenantId: TENANT, name, binary: scriptImage(workflow), runnerType: RunnerType.NATIVE });
    const { instanceId } = await client.startInstance({ tenantId: TENANT, imageId, env, input: new TextEncoder().encode('{"values":[5]}') });
    const seen: InstanceStatus[] = [];
    let last;
    for await (const res of client.watchInstance({ tenantId: TENANT, instanceId }, { timeoutMs: 90_000 })) {
      seen.push(res.instance!.status);
      last = res.instance!;
    }
    return { instanceId, seen, last: last! };
  }

  it("a multi-step workflow sleeps durably, is woken by the scheduler and completes", async () => {
    const { instanceId, seen, last } = await runToEnd("examples/multi-step-sleep.ts");
    assert.equal(last.status, InstanceStatus.COMPLETED, `${last.error}\n${last.stderr}`);
    assert.ok(seen.includes(InstanceStatus.SUSPENDED), `saw ${seen.join(",")}`);
    const output = JSON.parse(new TextDecoder().decode(last.output)) as { published: { sum: number } };
    assert.equal(output.published.sum, 10);
    const runs = await t.query(`SELECT count(*)::int AS n FROM instance_events WHERE instance_id = $1 AND event_type = 'registered'`, [instanceId]);
    assert.equal(runs[0]!.n, 2, "one run before the sleep, one after the wake");
  });

  it("background heartbeats keep a long step alive past the heartbeat timeout", async () => {
    const { last } = await runToEnd("test/scripts/long-step.ts", { STEP_MS: "4000", HEARTBEAT_MS: "300" });
    assert.equal(last.status, InstanceStatus.COMPLETED, `${last.error} ${TerminationReason[last.terminationReason]}`);
  });

  it("...and without them the same step is killed (FAILED heartbeat_timeout)", async () => {
    const { last } = await runToEnd("test/scripts/long-step.ts", { STEP_MS: "4000", HEARTBEAT_MS: "60000" });
    assert.equal(last.status, InstanceStatus.FAILED);
    assert.equal(last.terminationReason, TerminationReason.HEARTBEAT_TIMEOUT);
  });
});
