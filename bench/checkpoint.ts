/**
 * SaveCheckpoint throughput (through InstanceService over HTTP/2, token check, guarded
 * statement with heartbeat refresh and signal lookup) against a bare INSERT of the same rows
 * through the same database pool, in the same run. Like real workflows, each of the
 * CONCURRENCY workers is one instance saving its checkpoints one after another.
 */
import { randomBytes } from "node:crypto";
import { sql } from "slonik";
import { insertInstance, instanceClient, startEnvironment, stopTestPostgres } from "../test/helpers.js";
import { fmt, runConcurrent, targetLine } from "./lib.js";

const TOTAL = Number(process.env.BENCH_CHECKPOINTS ?? 4000);
const CONCURRENCY = Number(process.env.BENCH_CONCURRENCY ?? 16);
const STATE = randomBytes(1024);

const t = await startEnvironment();
try {
  const workers = await Promise.all(
    Array.from({ length: CONCURRENCY }, async (_, w) => {
      const viaApi = await insertInstance(t, { instanceId: `bench-api-${w}` });
      const bare = await insertInstance(t, { instanceId: `bench-bare-${w}`, status: "running" });
      const client = instanceClient(t, viaApi);
      await client.register({ instanceId: viaApi });
      return { viaApi, bare, client };
    }),
  );
  const viaApi = (w: number, id: string) => {
    const worker = workers[w % CONCURRENCY]!;
    return worker.client.saveCheckpoint({ instanceId: worker.viaApi, checkpointId: id, state: STATE }).then(() => {});
  };
  const bareInsert = (w: number, id: string) =>
    t.env.db
      .query(sql.unsafe`INSERT INTO checkpoints (instance_id, checkpoint_id, state)
        VALUES (${workers[w % CONCURRENCY]!.bare}, ${id}, ${sql.binary(STATE)})`)
      .then(() => {});
  // Warm up connections and plans on both paths.
  await runConcurrent(CONCURRENCY * 10, CONCURRENCY, (i) => viaApi(i, `warm-${i}`));
  await runConcurrent(CONCURRENCY * 10, CONCURRENCY, (i) => bareInsert(i, `warm-${i}`));

  const api = await runConcurrent(TOTAL, CONCURRENCY, (i) => viaApi(i, `cp-${i}`));
  const base = await runConcurrent(TOTAL, CONCURRENCY, (i) => bareInsert(i, `cp-${i}`));
  const apiRate = TOTAL / (api.wallMs / 1000);
  const baseRate = TOTAL / (base.wallMs / 1000);
  console.log(`checkpoints: ${TOTAL} x ${STATE.byteLength} B, concurrency ${CONCURRENCY}`);
  console.log(`SaveCheckpoint (Connect, HTTP/2)    ${fmt(apiRate, 0)} /s`);
  console.log(`bare INSERT, same pool               ${fmt(baseRate, 0)} /s`);
  console.log(targetLine(`ratio SaveCheckpoint / bare INSERT, c=${CONCURRENCY}`, apiRate / baseRate, ">=", 0.5));
} finally {
  await t.close();
  await stopTestPostgres();
}
