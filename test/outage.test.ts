import assert from "node:assert/strict";
import net from "node:net";
import { readFile } from "node:fs/promises";
import { after, describe, it } from "node:test";
import { Code, ConnectError } from "@connectrpc/connect";
import { InstanceStatus } from "../gen/runtara/core/v1/types_pb.js";
import { RunnerType } from "../gen/runtara/environment/v1/environment_pb.js";
import { buildFixtures } from "./fixtures/build.js";
import { environmentClient, freshDatabase, startEnvironment, stopTestPostgres, waitUntil } from "./helpers.js";

after(() => stopTestPostgres());

/**
 * A TCP proxy in front of PostgreSQL that the test can cut: every connection through it is
 * dropped and new ones are refused until it is restored, as when the database host goes away.
 */
async function databaseProxy(target: URL) {
  const sockets = new Set<net.Socket>();
  let down = false;
  const server = net.createServer((client) => {
    if (down) return void client.destroy();
    const upstream = net.connect(Number(target.port || 5432), target.hostname);
    sockets.add(client).add(upstream);
    const drop = () => {
      client.destroy();
      upstream.destroy();
      sockets.delete(client);
      sockets.delete(upstream);
    };
    client.on("error", drop).on("close", drop);
    upstream.on("error", drop).on("close", drop);
    client.pipe(upstream).pipe(client);
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const url = new URL(target);
  url.host = `127.0.0.1:${(server.address() as net.AddressInfo).port}`;
  return {
    url: url.toString(),
    cut() {
      down = true;
      for (const s of sockets) s.destroy();
      sockets.clear();
    },
    restore() {
      down = false;
    },
    close() {
      for (const s of sockets) s.destroy();
      return new Promise<void>((r) => server.close(() => r()));
    },
  };
}

describe("a database outage", () => {
  it("every RPC answers UNAVAILABLE while it lasts; afterwards nothing is lost and a sleeper due during it wakes once", async (t) => {
    const database = await freshDatabase();
    const proxy = await databaseProxy(new URL(database.url));
    const env = await startEnvironment({ databaseUrl: proxy.url, wakeReconcileIntervalMs: 500 });
    t.after(async () => {
      await env.close();
      await proxy.close();
      await database.drop();
    });
    const client = environmentClient(env.baseUrl);
    const binary = await readFile((await buildFixtures()).workflow);
    const { imageId } = await client.registerImage({ tenantId: "o", name: "w", binary, runnerType: RunnerType.NATIVE });
    const slow = await client.startInstance({ tenantId: "o", imageId, env: { WORKFLOW_MODE: "slow", SLOW_MS: "9000" } });
    const sleeper = await client.startInstance({ tenantId: "o", imageId, env: { WORKFLOW_MODE: "sleep", SLEEP_MS: "2500" } });
    await waitUntil(async () => (await client.getInstanceStatus({ tenantId: "o", instanceId: sleeper.instanceId })).instance!.status === InstanceStatus.SUSPENDED);
    await waitUntil(async () => (await client.getInstanceStatus({ tenantId: "o", instanceId: slow.instanceId })).instance!.status === InstanceStatus.RUNNING);

    // An answer must come promptly, whatever it is.
    const bounded = { timeoutMs: 3_000 };
    proxy.cut();
    const codes = new Set<string>();
    let healthSawOutage = false;
    const until = Date.now() + 10_000; // the 10 s outage of the issue
    while (Date.now() < until) {
      const answers = await Promise.allSettled([
        client.listInstances({ tenantId: "o" }, bounded),
        client.getInstanceStatus({ tenantId: "o", instanceId: slow.instanceId }, bounded),
        client.startInstance({ tenantId: "o", imageId, env: { WORKFLOW_MODE: "complete" } }, bounded),
        client.listImages({ tenantId: "o" }, bounded),
      ]);
      answers.forEach((a, i) => codes.add(`${i}:${a.status === "fulfilled" ? "OK" : Code[ConnectError.from(a.reason).code]!}`));
      // Health probes are shared for two seconds, so the first answer may predate the cut.
      if (!(await client.healthCheck({}, bounded)).databaseReachable) healthSawOutage = true;
      await new Promise((r) => setTimeout(r, 250));
    }
    proxy.restore();
    assert.ok(healthSawOutage, "HealthCheck reported the database unreachable during the outage");
    assert.deepEqual([...codes].sort(), ["0:Unavailable", "1:Unavailable", "2:Unavailable", "3:Unavailable"], `codes seen during the outage: ${[...codes].join(", ")}`);

    await waitUntil(async () => (await client.healthCheck({})).databaseReachable, 30_000);
    await waitUntil(async () => (await client.getInstanceStatus({ tenantId: "o", instanceId: slow.instanceId })).instance!.status === InstanceStatus.COMPLETED, 30_000);
    await waitUntil(async () => (await client.getInstanceStatus({ tenantId: "o", instanceId: sleeper.instanceId })).instance!.status === InstanceStatus.COMPLETED, 30_000);
    const woke = await client.getInstanceStatus({ tenantId: "o", instanceId: sleeper.instanceId });
    assert.deepEqual(JSON.parse(new TextDecoder().decode(woke.instance!.output)), { woke: true });
    const runs = await env.query<{ n: number }>("SELECT count(*)::int AS n FROM instance_events WHERE instance_id = $1 AND event_type = 'registered'", [
      sleeper.instanceId,
    ]);
    assert.equal(runs[0]!.n, 2, "the sleeper ran twice: before its sleep and once after the wake");
    // The listener reconnected: a new sleep is still woken on time.
    const again = await client.startInstance({ tenantId: "o", imageId, env: { WORKFLOW_MODE: "sleep", SLEEP_MS: "500" } });
    await waitUntil(async () => (await client.getInstanceStatus({ tenantId: "o", instanceId: again.instanceId })).instance!.status === InstanceStatus.COMPLETED, 30_000);
  });
});
