/**
 * An embedded core holds its instance API (UNAVAILABLE, which workflows retry) until the
 * environment's recovery has killed the processes of its previous run that nobody recorded:
 * one of them registering first would run its instance twice (it, and the relaunch).
 */
import assert from "node:assert/strict";
import { after, describe, it } from "node:test";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { pino } from "pino";
import { InstanceService } from "../gen/runtara/core/v1/instance_pb.js";
import { compileOptions } from "../src/config.js";
import { CoreRuntime } from "../src/core/runtime.js";
import { createDatabase, Listener, migrate } from "../src/db/index.js";
import { Tokens } from "../src/lifecycle/index.js";
import { Metrics } from "../src/metrics/index.js";
import { freePort, freshDatabase, stopTestPostgres } from "./helpers.js";

describe("embedded core's instance API during recovery", () => {
  after(() => stopTestPostgres());

  it("answers UNAVAILABLE until opened, then serves", async () => {
    const database = await freshDatabase();
    const logger = pino({ level: "silent" });
    await migrate(database.url, logger);
    const db = await createDatabase({ url: database.url, poolSize: 2, logger });
    const listener = new Listener(database.url, logger);
    await listener.start();
    const port = await freePort();
    const core = new CoreRuntime(db, listener, await Tokens.load(db), logger, compileOptions({ databaseUrl: database.url, coreAddr: `127.0.0.1:${port}` }), new Metrics());
    try {
      await core.start({ holdInstances: true });
      const client = createClient(InstanceService, createConnectTransport({ baseUrl: `http://127.0.0.1:${port}`, httpVersion: "1.1" }));
      const register = () => client.register({ instanceId: "i-1" }).then(
        () => undefined,
        (e: unknown) => ConnectError.from(e).code,
      );
      const held = await client.register({ instanceId: "i-1" }).catch((e: unknown) => ConnectError.from(e));
      assert.ok(held instanceof ConnectError);
      assert.equal(held.code, Code.Unavailable);
      assert.match(held.rawMessage, /recovering the processes of the previous run/);
      core.openToInstances();
      // Served now: without an instance token the call is refused for that, not held.
      assert.equal(await register(), Code.Unauthenticated);
    } finally {
      await core.stop();
      await listener.stop();
      await db.end();
      await database.drop();
    }
  });
});
