import assert from "node:assert/strict";
import http2 from "node:http2";
import { create, toBinary } from "@bufbuild/protobuf";
import { after, before, describe, it } from "node:test";
import { Code, createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { CoreService } from "../gen/runtara/core/v1/core_pb.js";
import { InstanceStatus, SignalType, SortOrder } from "../gen/runtara/core/v1/types_pb.js";
import { ListCheckpointsRequestSchema } from "../gen/runtara/environment/v1/environment_pb.js";
import { storeCustomSignal } from "../src/core/repository.js";
import { Tokens } from "../src/lifecycle/index.js";
import {
  environmentClient,
  insertInstance,
  instanceClient,
  rejectsWithCode as rejects,
  startEnvironment,
  stopTestPostgres,
  tokenOf,
  type TestEnvironment,
} from "./helpers.js";

const enc = (v: unknown) => new TextEncoder().encode(JSON.stringify(v));
const dec = (b: Uint8Array) => JSON.parse(new TextDecoder().decode(b)) as unknown;


describe("core InstanceService and CoreService", () => {
  let t: TestEnvironment;
  before(async () => {
    t = await startEnvironment({ maxPayloadBytes: 64 * 1024 });
  });
  after(async () => {
    await t.close();
    await stopTestPostgres();
  });

  const row = async (id: string) => (await t.query(`SELECT * FROM instances WHERE instance_id = $1`, [id]))[0]!;
  const count = async (table: string, id: string) =>
    Number((await t.query(`SELECT count(*)::int AS n FROM ${table} WHERE instance_id = $1`, [id]))[0]!.n);

  it("register -> checkpoints -> complete", async () => {
    const id = await insertInstance(t, { input: { n: 21 } });
    const c = instanceClient(t, id);
    const reg = await c.register({ instanceId: id });
    assert.equal(reg.status, InstanceStatus.RUNNING);
    assert.deepEqual(dec(reg.input), { n: 21 });
    assert.equal(reg.tenantId, "tenant-a");
    assert.equal((await row(id)).status, "running");

    const first = await c.saveCheckpoint({ instanceId: id, checkpointId: "step-1", state: enc({ v: 1 }) });
    assert.equal(first.found, false);
    const replay = await c.saveCheckpoint({ instanceId: id, checkpointId: "step-1", state: enc({ v: 999 }) });
    assert.equal(replay.found, true);
    assert.deepEqual(dec(replay.state), { v: 1 });
    const got = await c.getCheckpoint({ instanceId: id, checkpointId: "step-1" });
    assert.equal(got.found, true);
    assert.deepEqual(dec(got.state), { v: 1 });

    const done = await c.complete({ instanceId: id, output: enc({ answer: 42 }) });
    assert.equal(done.applied, true);
    assert.equal(done.status, InstanceStatus.COMPLETED);
    const r = await row(id);
    assert.equal(r.status, "completed");
    assert.equal(r.termination_reason, "completed");
    assert.deepEqual(JSON.parse(r.output.toString()), { answer: 42 });
    assert.ok(r.finished_at);
  });

  it("fail -> FAILED application_error", async () => {
    const id = await insertInstance(t);
    const c = instanceClient(t, id);
    await c.register({ instanceId: id });
    const res = await c.fail({ instanceId: id, error: "boom" });
    assert.equal(res.applied, true);
    assert.equal(res.status, InstanceStatus.FAILED);
    const r = await row(id);
    assert.equal(r.termination_reason, "application_error");
    assert.equal(r.error, "boom");
  });

  it("concurrent SaveCheckpoint of one id: exactly one wins, the rest get its state", async () => {
    const id = await insertInstance(t);
    const c = instanceClient(t, id);
    await c.register({ instanceId: id });
    const results = await Promise.all(
      Array.from({ length: 24 }, (_, i) => c.saveCheckpoint({ instanceId: id, checkpointId: "race", state: enc({ writer: i }) })),
    );
    const winners = results.filter((r) => !r.found);
    assert.equal(winners.length, 1);
    const stored = (await t.query(`SELECT state FROM checkpoints WHERE instance_id = $1 AND checkpoint_id = 'race'`, [id]))[0]!;
    for (const r of results.filter((x) => x.found)) assert.deepEqual(dec(r.state), JSON.parse(stored.state.toString()));
    assert.equal(await count("checkpoints", id), 1);
  });

  it("GetCheckpoint never creates a row", async () => {
    const id = await insertInstance(t);
    const c = instanceClient(t, id);
    await c.register({ instanceId: id });
    const res = await c.getCheckpoint({ instanceId: id, checkpointId: "missing" });
    assert.equal(res.found, false);
    assert.equal(await count("checkpoints", id), 0);
  });

  it("sleep stores the checkpoint and wake time and suspends (reason sleeping)", async () => {
    const id = await insertInstance(t);
    const c = instanceClient(t, id);
    await c.register({ instanceId: id });
    const before = Date.now();
    const res = await c.sleep({ instanceId: id, checkpointId: "sleep:0", state: enc({ wakeAt: 1 }), durationMs: 60_000n });
    assert.ok(res.wakeAt);
    const r = await row(id);
    assert.equal(r.status, "suspended");
    assert.equal(r.termination_reason, "sleeping");
    assert.ok(Math.abs(new Date(r.sleep_until).getTime() - (before + 60_000)) < 5_000);
    assert.equal(await count("checkpoints", id), 1);
    // The same Sleep again (its answer was lost) answers the same; another is refused.
    const again = await c.sleep({ instanceId: id, checkpointId: "sleep:0", state: enc({ wakeAt: 1 }), durationMs: 60_000n });
    assert.deepEqual(again.wakeAt, res.wakeAt);
    await rejects(c.sleep({ instanceId: id, checkpointId: "sleep:1", state: enc({ wakeAt: 1 }), durationMs: 60_000n }), Code.FailedPrecondition, /SUSPENDED/);
    // A suspended instance cannot be revived by a stray process...
    await rejects(c.register({ instanceId: id }), Code.FailedPrecondition, /SUSPENDED/);
    // ...only by a relaunch, which the environment moves to PENDING first (as the wake does).
    await t.query(`UPDATE instances SET status = 'pending', sleep_until = NULL WHERE instance_id = $1`, [id]);
    const reg = await c.register({ instanceId: id, checkpointId: "sleep:0" });
    assert.equal(reg.found, true);
    assert.deepEqual(dec(reg.state), { wakeAt: 1 });
    const after = await row(id);
    assert.equal(after.status, "running");
    assert.equal(after.sleep_until, null);
    assert.equal(after.termination_reason, null);
  });

  it("CANCEL is not replaced by PAUSE or RESUME, and AckSignal must name it", async () => {
    const id = await insertInstance(t);
    const c = instanceClient(t, id);
    await c.register({ instanceId: id });
    const env = environmentClient(t.baseUrl);
    await env.sendSignal({ tenantId: "tenant-a", instanceId: id, signalType: SignalType.CANCEL, payload: enc("stop") });
    await env.sendSignal({ tenantId: "tenant-a", instanceId: id, signalType: SignalType.PAUSE });
    await env.sendSignal({ tenantId: "tenant-a", instanceId: id, signalType: SignalType.RESUME });
    const polled = await c.pollSignal({ instanceId: id });
    assert.equal(polled.signal?.signalType, SignalType.CANCEL);
    assert.deepEqual(dec(polled.signal!.payload), "stop");
    await rejects(c.ackSignal({ instanceId: id, signalType: SignalType.PAUSE }), Code.FailedPrecondition, /CANCEL/);
    assert.equal((await row(id)).status, "running");
    const ack = await c.ackSignal({ instanceId: id, signalType: SignalType.CANCEL });
    assert.equal(ack.applied, true);
    assert.equal(ack.status, InstanceStatus.CANCELLED);
    assert.equal((await row(id)).termination_reason, "cancelled");
    assert.equal(await count("pending_signals", id), 0);
  });

  it("PAUSE ack suspends (reason paused); a later PAUSE replaces an unacked RESUME", async () => {
    const id = await insertInstance(t);
    const c = instanceClient(t, id);
    await c.register({ instanceId: id });
    const env = environmentClient(t.baseUrl);
    await env.sendSignal({ tenantId: "tenant-a", instanceId: id, signalType: SignalType.RESUME });
    await env.sendSignal({ tenantId: "tenant-a", instanceId: id, signalType: SignalType.PAUSE });
    const hb = await c.heartbeat({ instanceId: id });
    assert.equal(hb.signal?.signalType, SignalType.PAUSE);
    const ack = await c.ackSignal({ instanceId: id, signalType: SignalType.PAUSE });
    assert.equal(ack.status, InstanceStatus.SUSPENDED);
    const r = await row(id);
    assert.equal(r.status, "suspended");
    assert.equal(r.termination_reason, "paused");
  });

  it("cancelling a PENDING or SUSPENDED instance is immediate", async () => {
    const env = environmentClient(t.baseUrl);
    const pending = await insertInstance(t);
    const res = await env.sendSignal({ tenantId: "tenant-a", instanceId: pending, signalType: SignalType.CANCEL });
    assert.equal(res.status, InstanceStatus.CANCELLED);
    assert.equal((await row(pending)).status, "cancelled");
    const suspended = await insertInstance(t, { status: "suspended" });
    await env.sendSignal({ tenantId: "tenant-a", instanceId: suspended, signalType: SignalType.CANCEL });
    assert.equal((await row(suspended)).status, "cancelled");
    // ...and its process, if one is relaunched late, cannot register any more.
    await rejects(instanceClient(t, suspended).register({ instanceId: suspended }), Code.FailedPrecondition, /CANCELLED/);
  });

  it("custom signals are delivered until acknowledged", async () => {
    const id = await insertInstance(t);
    const c = instanceClient(t, id);
    await c.register({ instanceId: id });
    const env = environmentClient(t.baseUrl);
    await env.sendCustomSignal({ tenantId: "tenant-a", instanceId: id, checkpointId: "approval", payload: enc({ ok: true }) });
    for (let i = 0; i < 2; i++) {
      const p = await c.pollSignal({ instanceId: id, checkpointId: "approval" });
      assert.equal(p.customSignal?.checkpointId, "approval");
      assert.deepEqual(dec(p.customSignal!.payload), { ok: true });
    }
    const cp = await c.saveCheckpoint({ instanceId: id, checkpointId: "approval", state: enc(null) });
    assert.deepEqual(dec(cp.customSignal!.payload), { ok: true });
    const ack = await c.ackSignal({ instanceId: id, checkpointId: "approval" });
    assert.equal(ack.applied, true);
    assert.equal((await c.pollSignal({ instanceId: id, checkpointId: "approval" })).customSignal, undefined);
  });

  it("WatchSignals pushes a signal the moment it is stored", async () => {
    const id = await insertInstance(t);
    const c = instanceClient(t, id);
    await c.register({ instanceId: id });
    const abort = new AbortController();
    const stream = c.watchSignals({ instanceId: id, includeCustom: true }, { signal: abort.signal });
    const iterator = stream[Symbol.asyncIterator]();
    const opened = await iterator.next();
    assert.equal(opened.value!.signal, undefined, "the first message only says the stream is open");
    const next = iterator.next();
    const env = environmentClient(t.baseUrl);
    const sentAt = Date.now();
    await env.sendCustomSignal({ tenantId: "tenant-a", instanceId: id, checkpointId: "wait-1", payload: enc(7) });
    const got = await next;
    assert.equal(got.done, false);
    assert.equal(got.value!.customSignal?.checkpointId, "wait-1");
    await env.sendSignal({ tenantId: "tenant-a", instanceId: id, signalType: SignalType.PAUSE });
    const second = await iterator.next();
    assert.equal(second.value!.signal?.signalType, SignalType.PAUSE);
    assert.ok(Date.now() - sentAt < 5_000);
    abort.abort();
  });

  it("WatchSignals delivers custom signals that commit out of order (a send held in a transaction)", async () => {
    const id = await insertInstance(t);
    const c = instanceClient(t, id);
    await c.register({ instanceId: id });
    const abort = new AbortController();
    const iterator = c.watchSignals({ instanceId: id, includeCustom: true }, { signal: abort.signal })[Symbol.asyncIterator]();
    await iterator.next(); // open
    // "a" is stored first but commits last; "b" is sent meanwhile through the API.
    let release!: () => void;
    const held = new Promise<void>((r) => (release = r));
    let storedA!: () => void;
    const aStored = new Promise<void>((r) => (storedA = r));
    const sendA = t.env.db.transaction(async (tx) => {
      await storeCustomSignal(tx, "tenant-a", id, "a", enc(1), 100);
      storedA();
      await held;
    });
    await aStored;
    const sendB = environmentClient(t.baseUrl).sendCustomSignal({ tenantId: "tenant-a", instanceId: id, checkpointId: "b", payload: enc(2) });
    await new Promise((r) => setTimeout(r, 300)); // room for "b" to commit and be watched first
    release();
    await Promise.all([sendA, sendB]);
    const seen = new Set<string>();
    const timeout = setTimeout(() => abort.abort(), 5_000);
    try {
      while (seen.size < 2) {
        const next = await iterator.next().catch(() => ({ done: true as const, value: undefined }));
        if (next.done) break;
        if (next.value.customSignal) seen.add(next.value.customSignal.checkpointId);
      }
    } finally {
      clearTimeout(timeout);
      abort.abort();
    }
    assert.deepEqual([...seen].sort(), ["a", "b"]);
  });

  it("terminal instances refuse every transition and nothing changes", async () => {
    const id = await insertInstance(t);
    const c = instanceClient(t, id);
    await c.register({ instanceId: id });
    await c.complete({ instanceId: id, output: enc(1) });
    const snapshot = await row(id);
    await rejects(c.register({ instanceId: id }), Code.FailedPrecondition, /COMPLETED/);
    await rejects(c.saveCheckpoint({ instanceId: id, checkpointId: "x", state: enc(1) }), Code.FailedPrecondition);
    await rejects(c.sleep({ instanceId: id, checkpointId: "x", state: enc(1), durationMs: 10n }), Code.FailedPrecondition);
    await rejects(c.emitEvent({ instanceId: id, subtype: "note", payload: enc(1) }), Code.FailedPrecondition);
    assert.equal((await c.complete({ instanceId: id, output: enc(2) })).applied, false);
    assert.equal((await c.fail({ instanceId: id, error: "late" })).applied, false);
    assert.equal((await c.ackSignal({ instanceId: id, signalType: SignalType.CANCEL })).applied, false);
    const env = environmentClient(t.baseUrl);
    await rejects(env.sendSignal({ tenantId: "tenant-a", instanceId: id, signalType: SignalType.CANCEL }), Code.FailedPrecondition);
    await rejects(env.sendCustomSignal({ tenantId: "tenant-a", instanceId: id, checkpointId: "a", payload: enc(1) }), Code.FailedPrecondition);
    const now = await row(id);
    assert.equal(now.status, "completed");
    assert.deepEqual(now.output, snapshot.output);
    assert.deepEqual(now.finished_at, snapshot.finished_at);
    assert.equal(await count("checkpoints", id), 0);
  });

  it("authentication: wrong, missing and another instance's token are UNAUTHENTICATED", async () => {
    const a = await insertInstance(t);
    const b = await insertInstance(t);
    await rejects(instanceClient(t, a, "not-a-token").register({ instanceId: a }), Code.Unauthenticated);
    await rejects(instanceClient(t, a, tokenOf(t, b)).register({ instanceId: a }), Code.Unauthenticated);
    // Acting on another instance with one's own token.
    await rejects(instanceClient(t, a).complete({ instanceId: b, output: enc(1) }), Code.Unauthenticated);
    const noAuth = createClient(
      (await import("../gen/runtara/core/v1/instance_pb.js")).InstanceService,
      createConnectTransport({ baseUrl: `http://127.0.0.1:${t.env.coreAddress!.port}`, httpVersion: "1.1" }),
    );
    await rejects(noAuth.register({ instanceId: a }), Code.Unauthenticated, /missing/);
    // An instance token cannot call the management service.
    const mgmt = createClient(
      CoreService,
      createConnectTransport({
        baseUrl: `http://127.0.0.1:${t.env.coreAddress!.port}`,
        httpVersion: "1.1",
        interceptors: [(next) => (req) => (req.header.set("authorization", `Bearer ${tokenOf(t, a)}`), next(req))],
      }),
    );
    await rejects(mgmt.sendSignal({ tenantId: "tenant-a", instanceId: b, signalType: SignalType.CANCEL }), Code.Unauthenticated);
    assert.equal((await row(a)).status, "pending");
    assert.equal((await row(b)).status, "pending");
    assert.equal(await count("pending_signals", b), 0);
  });

  it("ListEvents pages by payload bytes: large events come a few at a time, every one reachable by offset", async () => {
    const id = await insertInstance(t);
    const big = Buffer.alloc(1536 * 1024, 0x61);
    for (let i = 0; i < 5; i++) {
      await t.query("INSERT INTO instance_events (instance_id, event_type, subtype, payload) VALUES ($1, 'custom', $2, $3)", [id, `e${i}`, big]);
    }
    const env = environmentClient(t.baseUrl);
    const seen: string[] = [];
    let offset = 0;
    for (;;) {
      const page = await env.listEvents({ tenantId: "tenant-a", instanceId: id, eventType: "custom", limit: 100, offset, sortOrder: SortOrder.ASC });
      assert.equal(page.totalCount, 5n);
      if (page.events.length === 0) break;
      assert.ok(page.events.length <= 2, `a page of ${page.events.length} events of 1.5 MiB exceeds 4 MiB`);
      seen.push(...page.events.map((e) => e.subtype));
      offset += page.events.length;
    }
    assert.deepEqual(seen, ["e0", "e1", "e2", "e3", "e4"]);
    await rejects(env.listEvents({ tenantId: "tenant-a", instanceId: id, offset: 10_001 }), Code.InvalidArgument, /offset/);
  });

  it("every new checkpoint becomes the one a relaunch resumes from; a repeated save does not move it", async () => {
    const id = await insertInstance(t);
    const c = instanceClient(t, id);
    await c.register({ instanceId: id });
    await c.saveCheckpoint({ instanceId: id, checkpointId: "step-1", state: enc(1) });
    await c.saveCheckpoint({ instanceId: id, checkpointId: "step-2", state: enc(2) });
    assert.equal((await row(id)).checkpoint_id, "step-2");
    const again = await c.saveCheckpoint({ instanceId: id, checkpointId: "step-1", state: enc(9) });
    assert.equal(again.found, true);
    assert.equal((await row(id)).checkpoint_id, "step-2");
  });

  it("WatchInstance delivers every transition in order, to every watcher, even a burst within milliseconds", async () => {
    const id = await insertInstance(t);
    const env = environmentClient(t.baseUrl);
    const watchers = Array.from({ length: 20 }, async () => {
      const seen: { status: InstanceStatus; hasOutput: boolean }[] = [];
      for await (const res of env.watchInstance({ tenantId: "tenant-a", instanceId: id }, { timeoutMs: 20_000 })) {
        seen.push({ status: res.instance!.status, hasOutput: res.instance!.output.byteLength > 0 });
      }
      return seen;
    });
    // Every watcher has its first message (PENDING) before the burst.
    await new Promise((r) => setTimeout(r, 300));
    const c = instanceClient(t, id);
    await Promise.all([c.register({ instanceId: id }), new Promise((r) => setImmediate(r))]);
    await c.complete({ instanceId: id, output: enc({ done: 1 }) });
    for (const seen of await Promise.all(watchers)) {
      assert.deepEqual(
        seen.map((s) => s.status),
        [InstanceStatus.PENDING, InstanceStatus.RUNNING, InstanceStatus.COMPLETED],
      );
      assert.deepEqual(seen.map((s) => s.hasOutput), [false, false, true], "blobs only in the terminal message");
    }
    const [row] = await t.query<{ n: number }>("SELECT count(*)::int AS n FROM instance_transitions WHERE instance_id = $1", [id]);
    assert.equal(row!.n, 3);
  });

  it("a deleted and re-created instance id refuses the old token, for the same and for another tenant", async () => {
    for (const tenantId of ["tenant-a", "tenant-b"]) {
      const id = await insertInstance(t, { tenantId: "tenant-a" });
      const old = instanceClient(t, id, tokenOf(t, id));
      await old.register({ instanceId: id });
      await old.saveCheckpoint({ instanceId: id, checkpointId: "cp", state: enc(1) });
      await t.query("DELETE FROM instances WHERE instance_id = $1", [id]);
      await insertInstance(t, { tenantId, instanceId: id });
      await rejects(old.register({ instanceId: id }), Code.Unauthenticated, /earlier instance/);
      await rejects(old.getInput({ instanceId: id }), Code.Unauthenticated);
      await rejects(old.heartbeat({ instanceId: id }), Code.Unauthenticated);
      await rejects(old.saveCheckpoint({ instanceId: id, checkpointId: "cp", state: enc(2) }), Code.Unauthenticated);
      await rejects(old.sleep({ instanceId: id, checkpointId: "s", durationMs: 10n }), Code.Unauthenticated);
      await rejects(old.ackSignal({ instanceId: id, signalType: SignalType.PAUSE }), Code.Unauthenticated);
      await rejects(old.emitEvent({ instanceId: id, subtype: "x" }), Code.Unauthenticated);
      await rejects(old.complete({ instanceId: id, output: enc("forged") }), Code.Unauthenticated);
      await rejects(old.fail({ instanceId: id, error: "forged" }), Code.Unauthenticated);
      const watch = async () => {
        for await (const _ of old.watchSignals({ instanceId: id })) break;
      };
      await rejects(watch(), Code.Unauthenticated);
      const now = await row(id);
      assert.equal(now.status, "pending", "the new row was not touched");
      assert.equal(now.tenant_id, tenantId);
      assert.equal(await count("checkpoints", id), 0);
      // The new row's own token works.
      await instanceClient(t, id).register({ instanceId: id });
      await t.query("DELETE FROM instances WHERE instance_id = $1", [id]);
    }
  });

  it("token secrets rotate without a restart: the previous secret still verifies, the one before stops", async () => {
    const id = await insertInstance(t);
    const beforeRotation = tokenOf(t, id);
    const oldManagement = t.env.tokens.managementToken();
    const mgmtClient = (token: string) =>
      createClient(
        CoreService,
        createConnectTransport({
          baseUrl: `http://127.0.0.1:${t.env.coreAddress!.port}`,
          httpVersion: "1.1",
          interceptors: [(next) => (req) => (req.header.set("authorization", `Bearer ${token}`), next(req))],
        }),
      );
    await Tokens.rotate(t.env.db);
    // One rotation: tokens minted with the previous secret keep working.
    await instanceClient(t, id, beforeRotation).register({ instanceId: id });
    await mgmtClient(oldManagement).healthCheck({});
    await Tokens.rotate(t.env.db);
    // Two rotations: once the replica has reloaded the secrets (every minute, here at once),
    // the oldest no longer verifies.
    await t.env.tokens.refresh();
    await rejects(instanceClient(t, id, beforeRotation).heartbeat({ instanceId: id }), Code.Unauthenticated);
    await rejects(mgmtClient(oldManagement).healthCheck({}), Code.Unauthenticated);
    // The environment mints with the new secret: its calls to core keep working, no restart.
    const env = environmentClient(t.baseUrl);
    await env.sendCustomSignal({ tenantId: "tenant-a", instanceId: id, checkpointId: "after-rotation", payload: enc(1) });
    await instanceClient(t, id, t.env.tokens.instanceToken(id, (await row(id)).token_nonce)).heartbeat({ instanceId: id });
  });

  it("bad input: unknown instance, oversize payloads, malformed JSON, bad ids; nothing changes", async () => {
    await rejects(instanceClient(t, "ghost").register({ instanceId: "ghost" }), Code.NotFound);
    const id = await insertInstance(t);
    const c = instanceClient(t, id);
    await c.register({ instanceId: id });
    const big = new Uint8Array(64 * 1024 + 1).fill(0x20);
    await rejects(c.saveCheckpoint({ instanceId: id, checkpointId: "big", state: big }), Code.ResourceExhausted, /state/);
    await rejects(c.complete({ instanceId: id, output: enc("x".repeat(70_000)) }), Code.ResourceExhausted, /output/);
    await rejects(c.emitEvent({ instanceId: id, subtype: "s", payload: enc("x".repeat(70_000)) }), Code.ResourceExhausted, /payload/);
    await rejects(c.complete({ instanceId: id, output: new TextEncoder().encode("{not json") }), Code.InvalidArgument, /output/);
    await rejects(c.emitEvent({ instanceId: id, subtype: "s", payload: new TextEncoder().encode("nope") }), Code.InvalidArgument, /payload/);
    await rejects(c.saveCheckpoint({ instanceId: id, checkpointId: "../etc", state: enc(1) }), Code.InvalidArgument, /checkpoint_id/);
    await rejects(c.saveCheckpoint({ instanceId: id, checkpointId: "", state: enc(1) }), Code.InvalidArgument, /checkpoint_id/);
    await rejects(c.ackSignal({ instanceId: id }), Code.InvalidArgument, /signal_type/);
    await rejects(c.sleep({ instanceId: id, checkpointId: "s", durationMs: -1n }), Code.InvalidArgument, /duration_ms/);
    // Once INTERNAL: PostgreSQL cannot store these.
    await rejects(c.sleep({ instanceId: id, checkpointId: "s", wakeAt: { seconds: -3_000_000_000_000_000n, nanos: 0 } }), Code.InvalidArgument, /wake_at/);
    await rejects(c.fail({ instanceId: id, error: "bad\u0000error" }), Code.InvalidArgument, /error/);
    await rejects(c.emitEvent({ instanceId: id, subtype: "s\u0000" }), Code.InvalidArgument, /subtype/);
    const env = environmentClient(t.baseUrl);
    await rejects(env.sendSignal({ tenantId: "tenant-a", instanceId: id }), Code.InvalidArgument, /signal_type/);
    await rejects(env.sendSignal({ tenantId: "", instanceId: id, signalType: SignalType.CANCEL }), Code.InvalidArgument, /tenant_id/);
    await rejects(env.sendSignal({ tenantId: "tenant-a", instanceId: "a/b", signalType: SignalType.CANCEL }), Code.InvalidArgument, /instance_id/);
    const r = await row(id);
    assert.equal(r.status, "running");
    assert.equal(await count("checkpoints", id), 0);
    assert.equal(await count("pending_signals", id), 0);
    assert.equal(Number((await t.query(`SELECT count(*)::int AS n FROM instance_events WHERE instance_id = $1 AND event_type = 'custom'`, [id]))[0]!.n), 0);
  });

  it("tenant isolation: another tenant's instance is NOT_FOUND for signals and read views", async () => {
    const id = await insertInstance(t, { tenantId: "tenant-b" });
    const c = instanceClient(t, id);
    await c.register({ instanceId: id });
    await c.saveCheckpoint({ instanceId: id, checkpointId: "cp", state: enc(1) });
    const env = environmentClient(t.baseUrl);
    const other = { tenantId: "tenant-a", instanceId: id };
    await rejects(env.sendSignal({ ...other, signalType: SignalType.CANCEL }), Code.NotFound);
    await rejects(env.sendCustomSignal({ ...other, checkpointId: "cp", payload: enc(1) }), Code.NotFound);
    await rejects(env.listCheckpoints(other), Code.NotFound);
    await rejects(env.getCheckpoint({ ...other, checkpointId: "cp" }), Code.NotFound);
    await rejects(env.listEvents(other), Code.NotFound);
    // Over gRPC, core's refusal reaches the client as the environment's own error: none of
    // core's response headers (content-type, content-length, date) in the trailers.
    const answer = await rawGrpc(t.baseUrl, "ListCheckpoints", toBinary(ListCheckpointsRequestSchema, create(ListCheckpointsRequestSchema, other)));
    assert.equal(answer.status, String(Code.NotFound));
    for (const header of ["content-type", "content-length", "date"]) assert.equal(answer.trailers[header], undefined, `${header} in the trailers`);
    // Validation happens before core is asked: a bad id is INVALID_ARGUMENT, not "core unreachable".
    await rejects(env.listCheckpoints({ ...other, checkpointId: "../x" }), Code.InvalidArgument);
    await rejects(env.listEvents({ ...other, limit: -1 }), Code.InvalidArgument);
    assert.equal((await row(id)).status, "running");
    const own = { tenantId: "tenant-b", instanceId: id };
    const list = await env.listCheckpoints(own);
    assert.equal(list.totalCount, 1n);
    assert.equal(list.checkpoints[0]!.checkpointId, "cp");
    const cp = await env.getCheckpoint({ ...own, checkpointId: "cp" });
    assert.deepEqual(dec(cp.state), 1);
    await c.emitEvent({ instanceId: id, subtype: "progress", payload: enc({ pct: 50 }) });
    const events = await env.listEvents({ ...own, eventType: "custom" });
    assert.equal(events.totalCount, 1n);
    assert.equal(events.events[0]!.subtype, "progress");
    await rejects(env.getCheckpoint({ ...own, checkpointId: "absent" }), Code.NotFound);
  });

  it("HealthCheck on 8002 reports database and core reachable", async () => {
    const h = await environmentClient(t.baseUrl).healthCheck({});
    assert.equal(h.databaseReachable, true);
    assert.equal(h.coreReachable, true);
    assert.equal(h.healthy, true);
  });
});

/** A gRPC unary call over raw HTTP/2, to see the answer's headers and trailers apart. */
async function rawGrpc(baseUrl: string, method: string, message: Uint8Array) {
  const session = http2.connect(baseUrl);
  try {
    const frame = Buffer.alloc(5 + message.byteLength);
    frame.writeUInt32BE(message.byteLength, 1);
    frame.set(message, 5);
    const stream = session.request({
      ":method": "POST",
      ":path": `/runtara.environment.v1.EnvironmentService/${method}`,
      "content-type": "application/grpc+proto",
      te: "trailers",
    });
    stream.end(frame);
    const headers = await new Promise<http2.IncomingHttpHeaders>((resolve) => stream.once("response", resolve));
    const trailers = await new Promise<http2.IncomingHttpHeaders>((resolve) => {
      stream.once("trailers", resolve);
      // A trailers-only answer ends the stream with the status in its headers.
      stream.once("end", () => resolve({}));
      stream.resume();
    });
    return { headers, trailers, status: String(trailers["grpc-status"] ?? headers["grpc-status"]) };
  } finally {
    session.close();
  }
}
