import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import { after, before, describe, it } from "node:test";
import { Code } from "@connectrpc/connect";
import { execa } from "execa";
import { InstanceStatus, SignalType, TerminationReason } from "../gen/runtara/core/v1/types_pb.js";
import { RunnerType } from "../gen/runtara/environment/v1/environment_pb.js";
import { buildFixtures } from "./fixtures/build.js";
import { environmentClient, isAlive as alive, rejectsWithCode as rejects, startEnvironment, stopTestPostgres, waitUntil as waitFor, type TestEnvironment } from "./helpers.js";

const TENANT = "tenant-life";
const dec = (b: Uint8Array) => JSON.parse(new TextDecoder().decode(b)) as unknown;



describe("instance lifecycle with real runners", () => {
  let t: TestEnvironment;
  let env: ReturnType<typeof environmentClient>;
  const images: Partial<Record<"oci" | "native", string>> = {};

  before(async () => {
    if (process.env.CI === "true") {
      // OCI tests must fail, not skip, in CI when runc is missing.
      await execa("runc", ["--version"]);
    }
    t = await startEnvironment();
    env = environmentClient(t.baseUrl);
    const binary = await readFile((await buildFixtures()).workflow);
    for (const [kind, runnerType] of [["oci", RunnerType.OCI], ["native", RunnerType.NATIVE]] as const) {
      const res = await env.registerImage({ tenantId: TENANT, name: `workflow-${kind}`, binary, runnerType });
      images[kind] = res.imageId;
    }
  });
  after(async () => {
    await t.close();
    await stopTestPostgres();
  });

  /** Every status WatchInstance reports until the instance is terminal. */
  async function watchToEnd(instanceId: string) {
    const seen: InstanceStatus[] = [];
    let last;
    for await (const res of env.watchInstance({ tenantId: TENANT, instanceId }, { timeoutMs: 60_000 })) {
      seen.push(res.instance!.status);
      last = res.instance!;
    }
    return { seen, last: last! };
  }

  /** The instance once its process's exit (code, stderr, metrics) has been recorded. */
  async function runRecorded(instanceId: string) {
    await waitFor(async () => (await t.query(`SELECT 1 FROM running_processes WHERE instance_id = $1`, [instanceId])).length === 0);
    return (await env.getInstanceStatus({ tenantId: TENANT, instanceId })).instance!;
  }

  const start = (kind: "oci" | "native", mode: string, extra: { timeoutSeconds?: bigint; instanceId?: string } = {}) =>
    env.startInstance({ tenantId: TENANT, imageId: images[kind]!, env: { WORKFLOW_MODE: mode }, ...extra });

  for (const kind of ["native", "oci"] as const) {
    describe(`${kind} runner`, () => {
      it("start -> COMPLETED with output, watched through every transition", async () => {
        const { instanceId } = await start(kind, "complete");
        const { seen, last } = await watchToEnd(instanceId);
        assert.equal(last.status, InstanceStatus.COMPLETED, last.error);
        assert.deepEqual(dec(last.output), { ok: true });
        assert.equal(seen.at(-1), InstanceStatus.COMPLETED);
        assert.ok(!seen.includes(InstanceStatus.FAILED));
        // The instance settles itself before its process exits; the run's record follows.
        const status = await runRecorded(instanceId);
        assert.equal(status.exitCode, 0);
        assert.equal(status.terminationReason, TerminationReason.COMPLETED);
        assert.equal(status.imageName, `workflow-${kind}`);
        assert.ok(status.startedAt && status.finishedAt && status.createdAt);
        assert.deepEqual(dec(status.input), {});
        if (kind === "oci") {
          assert.ok((status.memoryPeakBytes ?? 0n) > 0n, "memory peak is recorded");
          assert.ok((status.cpuUsageUsec ?? 0n) > 0n, "cpu time is recorded");
        }
      });

      it("fail -> FAILED application_error", async () => {
        const { instanceId } = await start(kind, "fail");
        const { last } = await watchToEnd(instanceId);
        assert.equal(last.status, InstanceStatus.FAILED);
        assert.equal(last.terminationReason, TerminationReason.APPLICATION_ERROR);
        assert.equal(last.error, "boom");
      });

      it("exit 3 without reporting -> FAILED crashed with exit code and stderr", async () => {
        const { instanceId } = await start(kind, "exit3");
        await watchToEnd(instanceId);
        const s = await runRecorded(instanceId);
        assert.equal(s.status, InstanceStatus.FAILED);
        assert.equal(s.terminationReason, TerminationReason.CRASHED);
        assert.equal(s.exitCode, 3);
        assert.match(s.stderr, /something went wrong/);
      });

      it("timeout -> FAILED timeout and no process left", async () => {
        const { instanceId } = await start(kind, "hang", { timeoutSeconds: 1n });
        const pid = (await t.query(`SELECT pid FROM running_processes WHERE instance_id = $1`, [instanceId]))[0]?.pid as number;
        assert.ok(pid > 0);
        const { last } = await watchToEnd(instanceId);
        assert.equal(last.status, InstanceStatus.FAILED);
        assert.equal(last.terminationReason, TerminationReason.TIMEOUT);
        await new Promise((r) => setTimeout(r, 300));
        assert.equal(alive(pid), false);
        assert.equal((await t.query(`SELECT 1 FROM running_processes WHERE instance_id = $1`, [instanceId])).length, 0);
      });

      it("stop: an instance that acks the cancel within the grace ends CANCELLED", async () => {
        const { instanceId } = await start(kind, "cooperative");
        await waitFor(async () => (await env.getInstanceStatus({ tenantId: TENANT, instanceId })).instance!.status === InstanceStatus.RUNNING);
        const began = Date.now();
        const res = await env.stopInstance({ tenantId: TENANT, instanceId, gracePeriodSeconds: 10n, reason: "test" });
        assert.equal(res.status, InstanceStatus.CANCELLED);
        assert.ok(Date.now() - began < 8_000, "ended well within the grace period");
        const s = await runRecorded(instanceId);
        assert.equal(s.exitCode, 0, "it exited on its own");
      });

      it("stop: an instance that ignores the cancel is killed after the grace", async () => {
        const { instanceId } = await start(kind, "hang");
        const pid = (await t.query(`SELECT pid FROM running_processes WHERE instance_id = $1`, [instanceId]))[0]?.pid as number;
        // Registered, so the cancel has to wait for a process (a PENDING one is cancelled at once).
        await waitFor(async () => (await env.getInstanceStatus({ tenantId: TENANT, instanceId })).instance!.status === InstanceStatus.RUNNING);
        const began = Date.now();
        const res = await env.stopInstance({ tenantId: TENANT, instanceId, gracePeriodSeconds: 1n });
        assert.equal(res.status, InstanceStatus.CANCELLED);
        assert.ok(Date.now() - began >= 1_000);
        assert.equal(alive(pid), false);
        const s = (await env.getInstanceStatus({ tenantId: TENANT, instanceId })).instance!;
        assert.equal(s.terminationReason, TerminationReason.CANCELLED);
      });

      it("pause -> SUSPENDED -> ResumeInstance -> continues from its checkpoint -> COMPLETED", async () => {
        const { instanceId } = await start(kind, "cooperative");
        await waitFor(async () => (await t.query(`SELECT 1 FROM checkpoints WHERE instance_id = $1`, [instanceId])).length === 1);
        await env.sendSignal({ tenantId: TENANT, instanceId, signalType: SignalType.PAUSE });
        await waitFor(async () => {
          const s = (await env.getInstanceStatus({ tenantId: TENANT, instanceId })).instance!;
          return s.status === InstanceStatus.SUSPENDED && (await t.query(`SELECT 1 FROM running_processes WHERE instance_id = $1`, [instanceId])).length === 0;
        });
        const paused = (await env.getInstanceStatus({ tenantId: TENANT, instanceId })).instance!;
        assert.equal(paused.terminationReason, TerminationReason.PAUSED);
        await env.resumeInstance({ tenantId: TENANT, instanceId });
        const { last } = await watchToEnd(instanceId);
        assert.equal(last.status, InstanceStatus.COMPLETED, last.error);
        assert.deepEqual(dec(last.output), { resumed: true });
      });
    });
  }

  it("a RESUME signal on a SUSPENDED instance relaunches it", async () => {
    const { instanceId } = await start("native", "cooperative");
    await waitFor(async () => (await t.query(`SELECT 1 FROM checkpoints WHERE instance_id = $1`, [instanceId])).length === 1);
    await env.sendSignal({ tenantId: TENANT, instanceId, signalType: SignalType.PAUSE });
    await waitFor(async () => (await env.getInstanceStatus({ tenantId: TENANT, instanceId })).instance!.status === InstanceStatus.SUSPENDED);
    await env.sendSignal({ tenantId: TENANT, instanceId, signalType: SignalType.RESUME });
    const { last } = await watchToEnd(instanceId);
    assert.deepEqual(dec(last.output), { resumed: true });
  });

  it("the OCI container cannot see the host's processes and has no capabilities", async () => {
    const { instanceId } = await start("oci", "inspect");
    const { last } = await watchToEnd(instanceId);
    assert.equal(last.status, InstanceStatus.COMPLETED, last.error);
    const seen = dec(last.output) as { pids: number; capEff: string; dataWritable: boolean; rootWritable: boolean; path: string };
    assert.ok(seen.pids <= 2, `sees ${seen.pids} processes`);
    assert.equal(/^0+$/.test(seen.capEff), true, `CapEff ${seen.capEff}`);
    assert.equal(seen.dataWritable, true);
    assert.equal(seen.rootWritable, false);
    assert.equal(seen.path, "", "nothing but the RUNTARA_* variables and the request env");
  });

  it("custom instance ids: a taken id is ALREADY_EXISTS and launches nothing", async () => {
    const instanceId = `custom-${Date.now()}`;
    await start("native", "complete", { instanceId });
    await rejects(start("native", "complete", { instanceId }), Code.AlreadyExists, /instance_id/);
    await watchToEnd(instanceId);
    const rows = await t.query(`SELECT count(*)::int AS n FROM instance_events WHERE instance_id = $1 AND event_type = 'registered'`, [instanceId]);
    assert.equal(rows[0]!.n, 1);
  });

  it("another tenant's image or instance is NOT_FOUND", async () => {
    await rejects(env.startInstance({ tenantId: "someone-else", imageId: images.native! }), Code.NotFound);
    const { instanceId } = await start("native", "complete");
    await rejects(env.getInstanceStatus({ tenantId: "someone-else", instanceId }), Code.NotFound);
    await rejects(env.stopInstance({ tenantId: "someone-else", instanceId }), Code.NotFound);
    await rejects(env.resumeInstance({ tenantId: "someone-else", instanceId }), Code.NotFound);
    const list = await env.listInstances({ tenantId: "someone-else" });
    assert.equal(list.totalCount, 0n);
    await watchToEnd(instanceId);
  });

  it("bad input is INVALID_ARGUMENT and launches nothing", async () => {
    const before = (await t.query(`SELECT count(*)::int AS n FROM instances`))[0]!.n;
    const base = { tenantId: TENANT, imageId: images.native! };
    await rejects(env.startInstance({ ...base, instanceId: "../escape" }), Code.InvalidArgument, /instance_id/);
    await rejects(env.startInstance({ ...base, tenantId: "a/b" }), Code.InvalidArgument, /tenant_id/);
    await rejects(env.startInstance({ ...base, imageId: "not-a-uuid" }), Code.InvalidArgument, /image_id/);
    await rejects(env.startInstance({ ...base, env: { RUNTARA_INSTANCE_ID: "other" } }), Code.InvalidArgument, /RUNTARA_INSTANCE_ID/);
    await rejects(env.startInstance({ ...base, env: { runtara_token: "x" } }), Code.InvalidArgument, /env/);
    await rejects(env.startInstance({ ...base, env: { "BAD NAME": "x" } }), Code.InvalidArgument, /env/);
    await rejects(env.startInstance({ ...base, input: new TextEncoder().encode("{oops") }), Code.InvalidArgument, /input/);
    await rejects(env.startInstance({ ...base, timeoutSeconds: 0n }), Code.InvalidArgument, /timeout_seconds/);
    await rejects(env.stopInstance({ tenantId: TENANT, instanceId: "x", gracePeriodSeconds: -1n }), Code.InvalidArgument, /grace_period_seconds/);
    await rejects(env.listInstances({ tenantId: TENANT, limit: 5000 }), Code.InvalidArgument, /limit/);
    await rejects(env.listInstances({ tenantId: TENANT, pageToken: "garbage" }), Code.InvalidArgument, /page_token/);
    const afterCount = (await t.query(`SELECT count(*)::int AS n FROM instances`))[0]!.n;
    assert.equal(afterCount, before);
  });

  it("a WASM image is FAILED_PRECONDITION and DeleteImage refuses while an instance uses an image", async () => {
    const wasm = await env.registerImage({ tenantId: TENANT, name: "wasm-one", binary: new Uint8Array([0, 97, 115, 109]), runnerType: RunnerType.WASM });
    await rejects(env.startInstance({ tenantId: TENANT, imageId: wasm.imageId }), Code.FailedPrecondition, /wasm runner not available yet/);
    // A refused start does not count as a use; a launched one does.
    assert.equal((await env.getImage({ tenantId: TENANT, imageId: wasm.imageId })).image?.lastUsedAt, undefined);
    const before = Date.now() - 1000;
    const { instanceId } = await start("native", "hang");
    const used = (await env.getImage({ tenantId: TENANT, imageId: images.native! })).image?.lastUsedAt;
    // Kept to the minute: a fresher use time is not rewritten (starts do not queue on the image row).
    assert.ok(used !== undefined && Number(used.seconds) * 1000 >= before - 60_000, "last_used_at is the last start, to the minute");
    await rejects(env.deleteImage({ tenantId: TENANT, imageId: images.native! }), Code.FailedPrecondition);
    await env.stopInstance({ tenantId: TENANT, instanceId, gracePeriodSeconds: 0n });
  });

  it("50 parallel starts of a quick workflow all reach COMPLETED without ever showing FAILED", async () => {
    const ids = await Promise.all(Array.from({ length: 50 }, async () => (await start("native", "complete")).instanceId));
    const results = await Promise.all(ids.map((id) => watchToEnd(id)));
    for (const { seen, last } of results) {
      assert.equal(last.status, InstanceStatus.COMPLETED, last.error);
      assert.ok(!seen.includes(InstanceStatus.FAILED), `saw ${seen.join(",")}`);
    }
  });

  it("ListInstances filters, orders and pages with a keyset token", async () => {
    const all = await env.listInstances({ tenantId: TENANT, limit: 1000 });
    assert.equal(BigInt(all.instances.length), all.totalCount);
    const completed = await env.listInstances({ tenantId: TENANT, status: InstanceStatus.COMPLETED, limit: 1000 });
    assert.ok(completed.instances.every((i) => i.status === InstanceStatus.COMPLETED));
    assert.ok(completed.totalCount >= 50n);
    const seen = new Set<string>();
    let token = "";
    do {
      const page = await env.listInstances({ tenantId: TENANT, limit: 7, pageToken: token });
      // Every page reports the first page's count (later pages carry it in their token).
      assert.equal(page.totalCount, all.totalCount);
      for (const i of page.instances) {
        assert.equal(seen.has(i.instanceId), false);
        seen.add(i.instanceId);
      }
      token = page.nextPageToken;
    } while (token !== "");
    assert.equal(BigInt(seen.size), all.totalCount);
    // A token whose count was tampered with is refused like any forged token.
    const first = await env.listInstances({ tenantId: TENANT, limit: 2 });
    const forged = JSON.parse(Buffer.from(first.nextPageToken, "base64url").toString("utf8")) as Record<string, unknown>;
    for (const c of [-1, 1e12, "5", 1.5]) {
      const pageToken = Buffer.from(JSON.stringify({ ...forged, c })).toString("base64url");
      await assert.rejects(env.listInstances({ tenantId: TENANT, limit: 2, pageToken }), /page_token/);
    }
    const oci = await env.listInstances({ tenantId: TENANT, imageNamePrefix: "workflow-oc" });
    assert.ok(oci.instances.length > 0 && oci.instances.every((i) => i.imageName === "workflow-oci"));
  });
});

