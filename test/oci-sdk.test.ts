/**
 * The project's TypeScript SDK inside an OCI image (issue 11, item 4): the examples bundled
 * with this host's node (and the libraries it links) into an image archive, registered as
 * IMAGE_FORMAT_OCI_ARCHIVE and run under runc in the default isolated network (core over its
 * Unix socket): steps, durable sleep and wake, a custom signal, pause and resume.
 */
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { InstanceStatus, SignalType, TerminationReason } from "../gen/runtara/core/v1/types_pb.js";
import { ImageFormat, RunnerType } from "../gen/runtara/environment/v1/environment_pb.js";
import { nodeWorkflowArchive } from "./fixtures/oci-layout.js";
import { chunksOf, environmentClient, ociSkip, startEnvironment, stopTestPostgres, uploadMessages, waitUntil, type TestEnvironment } from "./helpers.js";

const TENANT = "tenant-oci-sdk";
const skip = await ociSkip();

after(() => stopTestPostgres());

describe("SDK workflows in an OCI image with node", { skip }, () => {
  let t: TestEnvironment;
  let dir: string;
  let imageId: string;
  let client: ReturnType<typeof environmentClient>;

  before(async () => {
    t = await startEnvironment({ wakeReconcileIntervalMs: 1_000 });
    client = environmentClient(t.baseUrl);
    dir = await mkdtemp(path.join(tmpdir(), "runtara-oci-sdk-"));
    const archive = await nodeWorkflowArchive(dir, { sleep: "examples/multi-step-sleep.ts", signal: "examples/wait-for-signal.ts" });
    const { image } = await client.registerImageStream(
      uploadMessages(
        { tenantId: TENANT, name: "node-workflows", runnerType: RunnerType.OCI, format: ImageFormat.OCI_ARCHIVE, binarySize: BigInt(archive.byteLength) },
        chunksOf(archive, 1024 * 1024),
      ),
    );
    imageId = image!.imageId;
  });
  after(async () => {
    await t.close();
    await rm(dir, { recursive: true, force: true });
  });

  const statusOf = async (instanceId: string) => (await client.getInstanceStatus({ tenantId: TENANT, instanceId })).instance!;
  const dec = (b: Uint8Array) => JSON.parse(new TextDecoder().decode(b)) as Record<string, unknown>;

  it("steps, a durable sleep, the scheduler's wake and completion", async () => {
    const { instanceId } = await client.startInstance({ tenantId: TENANT, imageId, env: { WORKFLOW: "sleep" }, input: new TextEncoder().encode('{"values":[5]}') });
    const seen: InstanceStatus[] = [];
    let last;
    for await (const r of client.watchInstance({ tenantId: TENANT, instanceId }, { timeoutMs: 90_000 })) {
      seen.push(r.instance!.status);
      last = r.instance!;
    }
    assert.equal(last!.status, InstanceStatus.COMPLETED, `${last!.error}\n${last!.stderr}`);
    assert.ok(seen.includes(InstanceStatus.SUSPENDED), `saw ${seen.map((s) => InstanceStatus[s]).join(",")}`);
    assert.equal((dec(last!.output) as { published: { sum: number } }).published.sum, 10);
  });

  it("waits for a custom signal across a pause and a resume, then completes with it", async () => {
    const { instanceId } = await client.startInstance({ tenantId: TENANT, imageId, env: { WORKFLOW: "signal" } });
    await waitUntil(async () => (await client.listEvents({ tenantId: TENANT, instanceId, eventType: "custom" })).events.length > 0, 60_000);
    await client.sendSignal({ tenantId: TENANT, instanceId, signalType: SignalType.PAUSE });
    await waitUntil(async () => (await statusOf(instanceId)).status === InstanceStatus.SUSPENDED, 30_000);
    assert.equal((await statusOf(instanceId)).terminationReason, TerminationReason.PAUSED);
    await client.resumeInstance({ tenantId: TENANT, instanceId });
    await waitUntil(async () => (await statusOf(instanceId)).status === InstanceStatus.RUNNING, 30_000);
    await client.sendCustomSignal({ tenantId: TENANT, instanceId, checkpointId: "approval", payload: new TextEncoder().encode('{"approved":true,"by":"ada"}') });
    let last;
    for await (const r of client.watchInstance({ tenantId: TENANT, instanceId }, { timeoutMs: 60_000 })) last = r.instance!;
    assert.equal(last!.status, InstanceStatus.COMPLETED, `${last!.error}\n${last!.stderr}`);
    assert.deepEqual(dec(last!.output), { request: "deploy to production", approved: true, by: "ada" });
  });
});
