/**
 * Runs the whole environment embedded in this Node program, uses it, stops it, and then
 * simply returns: the process must exit by itself (no timer, socket or child left holding
 * the event loop). Prints the active handles if asked, for debugging.
 */
import { readFile } from "node:fs/promises";
import { createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { pino } from "pino";
import { sql } from "slonik";
import { z } from "zod";
import { InstanceStatus } from "../../gen/runtara/core/v1/types_pb.js";
import { EnvironmentService, RunnerType } from "../../gen/runtara/environment/v1/environment_pb.js";
import { Environment } from "../../src/index.js";

const [databaseUrl, dataDir, fixture] = process.argv.slice(2) as [string, string, string];
const env = new Environment({
  databaseUrl,
  dataDir,
  httpPort: 0,
  httpHost: "127.0.0.1",
  coreAddr: "127.0.0.1:0",
  logger: pino({ level: "silent" }),
});
await env.start();
const transport = createConnectTransport({ baseUrl: `http://127.0.0.1:${env.address.port}`, httpVersion: "1.1" });
const client = createClient(EnvironmentService, transport);
const { imageId } = await client.registerImage({ tenantId: "embed", name: "wf", binary: await readFile(fixture), runnerType: RunnerType.NATIVE });
const { instanceId } = await client.startInstance({ tenantId: "embed", imageId, env: { WORKFLOW_MODE: "complete" } });
for await (const res of client.watchInstance({ tenantId: "embed", instanceId })) {
  if (res.instance!.status === InstanceStatus.COMPLETED) break;
}
// A workflow still running when the environment stops keeps running on its own. It works for
// longer than stop() may take: stop waits up to the shutdown grace (10 s) for open connections,
// and a running workflow keeps one to core.
const { instanceId: survivor } = await client.startInstance({ tenantId: "embed", imageId, env: { WORKFLOW_MODE: "slow", SLOW_MS: "30000" } });
// Registered first: a workflow that cannot reach core at all ends on its own, which is not what is asked here.
for await (const res of client.watchInstance({ tenantId: "embed", instanceId: survivor })) {
  if (res.instance!.status === InstanceStatus.RUNNING) break;
}
const pid = await env.db.oneFirst(sql.type(z.object({ pid: z.number() }))`SELECT pid FROM running_processes WHERE instance_id = ${survivor}`);
await env.stop();
let alive = true;
try {
  process.kill(pid, 0);
} catch {
  alive = false;
}
process.stdout.write(`stopped ${instanceId} survivor-alive=${alive}\n`);
// Checked; now it goes (it would fail alone once it finds core gone).
if (alive) process.kill(pid, "SIGKILL");
