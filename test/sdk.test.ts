import assert from "node:assert/strict";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { after, before, describe, it } from "node:test";
import { execa, type ResultPromise } from "execa";
import { SignalType } from "../gen/runtara/core/v1/types_pb.js";
import { environmentClient, insertInstance, tokenOf, startEnvironment, stopTestPostgres, waitUntil as waitFor, type TestEnvironment } from "./helpers.js";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const enc = (v: unknown) => new TextEncoder().encode(JSON.stringify(v));

describe("workflow SDK in real child processes", () => {
  let t: TestEnvironment;
  before(async () => {
    t = await startEnvironment();
  });
  after(async () => {
    await t.close();
    await stopTestPostgres();
  });

  /** Runs an example as the runners do: only the RUNTARA_* variables of SPEC §4 in its environment. */
  function run(example: string, instanceId: string, checkpointId?: string): ResultPromise<{ reject: false }> {
    const core = `127.0.0.1:${t.env.coreAddress!.port}`;
    const env: Record<string, string> = {
      RUNTARA_INSTANCE_ID: instanceId,
      RUNTARA_TENANT_ID: "tenant-a",
      RUNTARA_CORE_URL: `http://${core}`,
      RUNTARA_CORE_ADDR: core,
      RUNTARA_HTTP_URL: `http://${core}`,
      RUNTARA_INSTANCE_TOKEN: tokenOf(t, instanceId),
    };
    if (checkpointId) env.RUNTARA_CHECKPOINT_ID = checkpointId;
    return execa(process.execPath, ["--import", "tsx", path.join(root, "examples", example)], {
      env,
      extendEnv: false,
      cwd: root,
      reject: false,
      timeout: 60_000,
    });
  }

  const row = async (id: string) => (await t.query(`SELECT * FROM instances WHERE instance_id = $1`, [id]))[0]!;

  it("durable sleep: the first run checkpoints, sleeps and exits; the relaunch replays and completes", async () => {
    const id = await insertInstance(t, { input: { values: [1, 2] } });
    const first = await run("multi-step-sleep.ts", id);
    assert.equal(first.exitCode, 0, first.stderr);
    const slept = await row(id);
    assert.equal(slept.status, "suspended");
    assert.equal(slept.termination_reason, "sleeping");
    assert.ok(slept.sleep_until);
    const wakeAt = new Date(slept.sleep_until).getTime();
    await new Promise((r) => setTimeout(r, Math.max(0, wakeAt - Date.now())));
    // The wake (done by the scheduler in production) moves it to PENDING and relaunches it
    // from the sleep's checkpoint.
    await t.query(`UPDATE instances SET status = 'pending', sleep_until = NULL WHERE instance_id = $1`, [id]);
    const second = await run("multi-step-sleep.ts", id, slept.checkpoint_id);
    assert.equal(second.exitCode, 0, second.stderr);
    const done = await row(id);
    assert.equal(done.status, "completed");
    const output = JSON.parse(done.output.toString()) as { transformed: { doubled: number[] }; published: { sum: number } };
    assert.deepEqual(output.transformed.doubled, [2, 4]);
    assert.equal(output.published.sum, 6);
    // The step ran once: the relaunch replayed its stored result.
    assert.match(first.stderr, /fetch: running/);
    assert.doesNotMatch(second.stderr, /fetch: running/);
  });

  it("waits for a custom signal sent through the environment and completes with it", async () => {
    const id = await insertInstance(t);
    const child = run("wait-for-signal.ts", id);
    await waitFor(async () => (await row(id)).status === "running");
    await environmentClient(t.baseUrl).sendCustomSignal({ tenantId: "tenant-a", instanceId: id, checkpointId: "approval", payload: enc({ approved: true, by: "ada" }) });
    const res = await child;
    assert.equal(res.exitCode, 0, res.stderr);
    const done = await row(id);
    assert.equal(done.status, "completed");
    assert.match(done.output.toString(), /ada/);
    assert.equal(Number((await t.query(`SELECT count(*)::int AS n FROM custom_signals WHERE instance_id = $1`, [id]))[0]!.n), 0);
  });

  it("cancel through the environment's SendSignal: the process acknowledges and exits promptly", async () => {
    const id = await insertInstance(t);
    const child = run("wait-for-signal.ts", id);
    await waitFor(async () => (await row(id)).status === "running");
    await new Promise((r) => setTimeout(r, 300)); // let it open its signal stream
    const sent = Date.now();
    await environmentClient(t.baseUrl).sendSignal({ tenantId: "tenant-a", instanceId: id, signalType: SignalType.CANCEL });
    const res = await child;
    const tookMs = Date.now() - sent;
    assert.equal(res.exitCode, 0, res.stderr);
    assert.ok(tookMs < 5_000, `exited ${tookMs} ms after the cancel`);
    const r = await row(id);
    assert.equal(r.status, "cancelled");
    assert.equal(r.termination_reason, "cancelled");
  });

  it("pause suspends and exits; after a relaunch the workflow continues to completion", async () => {
    const id = await insertInstance(t);
    const env = environmentClient(t.baseUrl);
    const child = run("wait-for-signal.ts", id);
    await waitFor(async () => (await row(id)).status === "running");
    await new Promise((r) => setTimeout(r, 300));
    await env.sendSignal({ tenantId: "tenant-a", instanceId: id, signalType: SignalType.PAUSE });
    const paused = await child;
    assert.equal(paused.exitCode, 0, paused.stderr);
    const r = await row(id);
    assert.equal(r.status, "suspended");
    assert.equal(r.termination_reason, "paused");
    // A signal sent while it is suspended waits for the next run.
    await env.sendCustomSignal({ tenantId: "tenant-a", instanceId: id, checkpointId: "approval", payload: enc({ approved: false }) });
    await t.query(`UPDATE instances SET status = 'pending' WHERE instance_id = $1`, [id]); // as ResumeInstance does
    const resumed = await run("wait-for-signal.ts", id, r.checkpoint_id ?? undefined);
    assert.equal(resumed.exitCode, 0, resumed.stderr);
    assert.equal((await row(id)).status, "completed");
  });
});
