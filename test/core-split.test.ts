import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { Code, ConnectError } from "@connectrpc/connect";
import { pino } from "pino";
import { InstanceStatus, SignalType } from "../gen/runtara/core/v1/types_pb.js";
import { StandaloneCore } from "../src/core/standalone.js";
import { environmentClient, freePort, freshDatabase, insertInstance, startEnvironment, stopTestPostgres, waitUntil, type TestDatabase, type TestEnvironment } from "./helpers.js";


describe("environment with core in another process (RUNTARA_EMBED_CORE=false)", () => {
  let db: TestDatabase;
  let port: number;
  let core: StandaloneCore | undefined;
  let t: TestEnvironment;

  const startCore = async () => {
    core = new StandaloneCore({ databaseUrl: db.url, coreAddr: `127.0.0.1:${port}`, logger: pino({ level: "silent" }) });
    await core.start();
  };

  before(async () => {
    db = await freshDatabase();
    port = await freePort();
    await startCore();
    t = await startEnvironment({ databaseUrl: db.url, embedCore: false, coreAddr: `127.0.0.1:${port}` });
  });
  after(async () => {
    await core?.stop();
    await t.close();
    await db.drop();
    await stopTestPostgres();
  });

  it("forwards signals to the separate core, answers UNAVAILABLE while it is down, recovers when it returns", async () => {
    const env = environmentClient(t.baseUrl);
    const id = await insertInstance(t);
    const sent = await env.sendSignal({ tenantId: "tenant-a", instanceId: id, signalType: SignalType.PAUSE });
    assert.equal(sent.status, InstanceStatus.PENDING);
    assert.equal((await env.healthCheck({})).coreReachable, true);

    await core!.stop();
    core = undefined;
    await assert.rejects(env.sendSignal({ tenantId: "tenant-a", instanceId: id, signalType: SignalType.CANCEL }), (e: unknown) => {
      const err = ConnectError.from(e);
      assert.equal(err.code, Code.Unavailable);
      assert.match(err.rawMessage, new RegExp(`core at 127\\.0\\.0\\.1:${port} is unreachable`));
      return true;
    });
    // Health probes are shared for a couple of seconds.
    await waitUntil(async () => !(await env.healthCheck({})).coreReachable, 5_000);
    assert.equal((await env.healthCheck({})).healthy, false);
    const rows = await t.query(`SELECT status FROM instances WHERE instance_id = $1`, [id]);
    assert.equal(rows[0]!.status, "pending");

    await startCore();
    const again = await env.sendSignal({ tenantId: "tenant-a", instanceId: id, signalType: SignalType.CANCEL });
    assert.equal(again.status, InstanceStatus.CANCELLED);
    await waitUntil(async () => (await env.healthCheck({})).coreReachable, 5_000);
  });
});
