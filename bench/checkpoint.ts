/**
 * SaveCheckpoint throughput (through InstanceService over HTTP/2, token check, guarded
 * statement with heartbeat refresh and signal lookup) against a bare INSERT of the same rows
 * through the same database pool, in the same run. Like real workflows, each of the
 * CONCURRENCY workers is one instance saving its checkpoints one after another.
 * A third path runs SaveCheckpoint's own statement (repo.saveCheckpoint) through the same
 * pool without the RPC, which splits the gap into the statement's part and the RPC's. A fourth
 * serves the bare INSERT as InstanceService.SaveCheckpoint from a bare connect-node server
 * (serveBareConnect: no gates, interceptors, token or validation), called by the same kind of
 * client: the most any Connect server doing that INSERT reaches here, next to the bare INSERT.
 */
import { randomBytes } from "node:crypto";
import { createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { sql } from "slonik";
import { InstanceService } from "../gen/runtara/core/v1/instance_pb.js";
import { saveCheckpoint } from "../src/core/repository.js";
import { insertInstance, instanceClient, startEnvironment, stopTestPostgres } from "../test/helpers.js";
import { envNumber, fmt, ratioLine, runConcurrent, serveBareConnect, targetLine } from "./lib.js";

const TOTAL = envNumber("BENCH_CHECKPOINTS", 4000);
const CONCURRENCY = envNumber("BENCH_CONCURRENCY", 16);
const STATE = randomBytes(1024);

const t = await startEnvironment();
const insert = (instanceId: string, checkpointId: string, state: Uint8Array) =>
  t.env.db.query(sql.unsafe`INSERT INTO checkpoints (instance_id, checkpoint_id, state) VALUES (${instanceId}, ${checkpointId}, ${sql.binary(Buffer.from(state))})`);
const bareServer = await serveBareConnect((router) =>
  router.service(InstanceService, {
    async saveCheckpoint(req) {
      await insert(req.instanceId, req.checkpointId, req.state);
      return { found: false };
    },
  }),
);
try {
  const workers = await Promise.all(
    Array.from({ length: CONCURRENCY }, async (_, w) => {
      const viaApi = await insertInstance(t, { instanceId: `bench-api-${w}` });
      const bare = await insertInstance(t, { instanceId: `bench-bare-${w}`, status: "running" });
      const direct = await insertInstance(t, { instanceId: `bench-direct-${w}`, status: "running" });
      const bareRpc = await insertInstance(t, { instanceId: `bench-bare-rpc-${w}`, status: "running" });
      const [row] = await t.query<{ nonce: string }>("SELECT token_nonce AS nonce FROM instances WHERE instance_id = $1", [direct]);
      const client = instanceClient(t, viaApi);
      await client.register({ instanceId: viaApi });
      // One HTTP/2 session per worker, as instanceClient gives each worker on the API path.
      const bareClient = createClient(InstanceService, createConnectTransport({ baseUrl: bareServer.baseUrl, httpVersion: "2" }));
      return { viaApi, bare, client, bareRpc, bareClient, direct: { instanceId: direct, nonce: row!.nonce } };
    }),
  );
  const viaApi = (w: number, id: string) => {
    const worker = workers[w % CONCURRENCY]!;
    return worker.client.saveCheckpoint({ instanceId: worker.viaApi, checkpointId: id, state: STATE }).then(() => {});
  };
  const bareInsert = (w: number, id: string) => insert(workers[w % CONCURRENCY]!.bare, id, STATE).then(() => {});
  const bareRpc = (w: number, id: string) => {
    const worker = workers[w % CONCURRENCY]!;
    return worker.bareClient.saveCheckpoint({ instanceId: worker.bareRpc, checkpointId: id, state: STATE }).then(() => {});
  };
  const statementOnly = (w: number, id: string) =>
    saveCheckpoint(t.env.db, workers[w % CONCURRENCY]!.direct, id, STATE, t.env.options.maxCheckpointsPerInstance).then((r) => {
      if (!r.inserted) throw new Error(`checkpoint ${id} not inserted`);
    });
  // Warm up connections and plans on every path.
  await runConcurrent(CONCURRENCY * 10, CONCURRENCY, (i) => viaApi(i, `warm-${i}`));
  await runConcurrent(CONCURRENCY * 10, CONCURRENCY, (i) => bareInsert(i, `warm-${i}`));
  await runConcurrent(CONCURRENCY * 10, CONCURRENCY, (i) => statementOnly(i, `warm-${i}`));
  await runConcurrent(CONCURRENCY * 10, CONCURRENCY, (i) => bareRpc(i, `warm-${i}`));

  const api = await runConcurrent(TOTAL, CONCURRENCY, (i) => viaApi(i, `cp-${i}`));
  const base = await runConcurrent(TOTAL, CONCURRENCY, (i) => bareInsert(i, `cp-${i}`));
  const direct = await runConcurrent(TOTAL, CONCURRENCY, (i) => statementOnly(i, `cp-${i}`));
  const rpc = await runConcurrent(TOTAL, CONCURRENCY, (i) => bareRpc(i, `cp-${i}`));
  const rpcRate = TOTAL / (rpc.wallMs / 1000);
  const directRate = TOTAL / (direct.wallMs / 1000);
  const apiRate = TOTAL / (api.wallMs / 1000);
  const baseRate = TOTAL / (base.wallMs / 1000);
  console.log(`checkpoints: ${TOTAL} x ${STATE.byteLength} B, concurrency ${CONCURRENCY}`);
  console.log(`SaveCheckpoint (Connect, HTTP/2)    ${fmt(apiRate, 0)} /s`);
  console.log(`bare INSERT, same pool               ${fmt(baseRate, 0)} /s`);
  console.log(`its statement alone, same pool       ${fmt(directRate, 0)} /s`);
  console.log(`bare connect-node server + INSERT     ${fmt(rpcRate, 0)} /s`);
  console.log(ratioLine("ratio statement alone / bare INSERT", directRate, baseRate));
  console.log(ratioLine("ratio SaveCheckpoint / statement alone", apiRate, directRate));
  console.log(ratioLine("ratio bare connect-node + INSERT / bare INSERT", rpcRate, baseRate));
  console.log(ratioLine("ratio SaveCheckpoint / bare connect-node + INSERT", apiRate, rpcRate));
  console.log(targetLine(`ratio SaveCheckpoint / bare INSERT, c=${CONCURRENCY}`, apiRate / baseRate, ">=", 0.5));
} finally {
  await bareServer.close();
  await t.close();
  await stopTestPostgres();
}
