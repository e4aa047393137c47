/**
 * The fault suite at full size (test/faults.test.ts and test/outage.test.ts run it small in
 * CI). Prints one table: load held, faults survived, and what was lost, launched twice or
 * left stuck (each should be 0), plus server RSS growth for the memory-bound scenarios.
 *
 * Counts (env): FAULTS_RUNNING (50) and FAULTS_SLEEPING (100) for the kill -9 scenario,
 * FAULTS_PAUSE_ROUNDS (50 native, a fifth of it OCI), FAULTS_RACE_PAIRS (200),
 * FAULTS_WATCHERS (200), FAULTS_SIGNALS (1000).
 */
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import pg from "pg";
import { InstanceStatus, SignalType } from "../gen/runtara/core/v1/types_pb.js";
import { RunnerType } from "../gen/runtara/environment/v1/environment_pb.js";
import { buildFixtures } from "../test/fixtures/build.js";
import {
  endPool,
  environmentClient,
  freePort,
  freshDatabase,
  insertInstance,
  instanceClient,
  startCli,
  startEnvironment,
  stopTestPostgres,
  waitUntil,
} from "../test/helpers.js";
import { envNumber } from "./lib.js";

const RUNNING = envNumber("FAULTS_RUNNING", 50);
const SLEEPING = envNumber("FAULTS_SLEEPING", 100);
const PAUSE_ROUNDS = envNumber("FAULTS_PAUSE_ROUNDS", 50);
const RACE_PAIRS = envNumber("FAULTS_RACE_PAIRS", 200);
const WATCHERS = envNumber("FAULTS_WATCHERS", 200);
const SIGNALS = envNumber("FAULTS_SIGNALS", 1000);
const TENANT = "faults";
const MiB = 1024 * 1024;
const binary = await readFile((await buildFixtures()).workflow);

interface Row {
  scenario: string;
  load: string;
  lost: number;
  twice: number;
  stuck: number;
  note: string;
}
const rows: Row[] = [];

/** kill -9 of the environment (npm start) under running and sleeping instances, then a restart. */
async function killUnderLoad() {
  const db = await freshDatabase();
  const dataDir = await mkdtemp(path.join(tmpdir(), "runtara-faults-"));
  const [port, corePort] = [await freePort(), await freePort()];
  const launch = async () => {
    const cli = startCli({
      RUNTARA_DATABASE_URL: db.url,
      DATA_DIR: dataDir,
      RUNTARA_ENV_HTTP_PORT: String(port),
      RUNTARA_CORE_ADDR: `127.0.0.1:${corePort}`,
      RUNTARA_REPLICA_ID: "faults",
      RUNTARA_WAKE_RECONCILE_INTERVAL_MS: "500",
      RUNTARA_ENV_HTTP_HOST: "127.0.0.1",
      RUNTARA_NATIVE_RUNNER: "enabled",
    });
    await cli.waitFor("environment listening", 60_000);
    return cli;
  };
  const pool = new pg.Pool({ connectionString: db.url, max: 2 });
  let cli = await launch();
  try {
    const client = environmentClient(`http://127.0.0.1:${port}`);
    await waitUntil(async () => (await client.healthCheck({}).catch(() => undefined))?.healthy === true, 60_000);
    const { imageId } = await client.registerImage({ tenantId: TENANT, name: "wf", binary, runnerType: RunnerType.NATIVE });
    const start = (mode: string, extra: Record<string, string>) =>
      client.startInstance({ tenantId: TENANT, imageId, env: { WORKFLOW_MODE: mode, ...extra } }).then((r) => r.instanceId);
    const running = await Promise.all(Array.from({ length: RUNNING }, () => start("slow", { SLOW_MS: "8000" })));
    const sleeping = await Promise.all(Array.from({ length: SLEEPING }, () => start("sleep", { SLEEP_MS: "3000" })));
    // Killed just as the sleepers come due: some wake claims commit, some launches are in flight.
    await new Promise((r) => setTimeout(r, 3_100));
    cli.child.kill("SIGKILL");
    await cli.exited;
    cli = await launch();
    await waitUntil(async () => (await client.healthCheck({}).catch(() => undefined))?.healthy === true, 60_000);
    const all = [...running, ...sleeping];
    const settled = async () =>
      (await pool.query(`SELECT count(*)::int AS n FROM instances WHERE instance_id = ANY($1) AND status IN ('completed', 'failed', 'cancelled')`, [all])).rows[0]
        .n === all.length;
    await waitUntil(settled, 240_000).catch(() => undefined);
    const byStatus = (await pool.query(`SELECT status, count(*)::int AS n FROM instances WHERE instance_id = ANY($1) GROUP BY status`, [all])).rows;
    // Launches that ran, as the moves into RUNNING (a process's Register from PENDING): a Register
    // retried after its answer was lost (running -> running) is no second launch; a process of
    // the previous run registering beside its relaunch is (pending -> running twice).
    const registered = (
      await pool.query(`SELECT instance_id, count(*)::int AS n FROM instance_transitions WHERE status = 'running' AND instance_id = ANY($1) GROUP BY instance_id`, [all])
    ).rows as { instance_id: string; n: number }[];
    const runs = new Map(registered.map((r) => [r.instance_id, r.n]));
    const twice = running.filter((id) => (runs.get(id) ?? 0) > 1).length + sleeping.filter((id) => (runs.get(id) ?? 0) > 2).length;
    const count = (s: string) => byStatus.find((r) => r.status === s)?.n ?? 0;
    const failures = (
      await pool.query(`SELECT termination_reason AS reason, left(error, 120) AS error FROM instances WHERE instance_id = ANY($1) AND status = 'failed'`, [all])
    ).rows as { reason: string; error: string }[];
    for (const f of failures) console.log(`  failed after the kill: ${f.reason}: ${f.error}`);
    rows.push({
      scenario: "kill -9 of npm start, restart",
      load: `${RUNNING} running, ${SLEEPING} sleeping (native)`,
      lost: count("failed") + count("cancelled"),
      twice,
      stuck: count("pending") + count("running") + count("suspended"),
      note: `completed ${count("completed")}/${all.length}`,
    });
  } finally {
    cli.child.kill("SIGTERM");
    await cli.exited;
    await endPool(pool);
    await db.drop();
    await rm(dataDir, { recursive: true, force: true });
  }
}

/** PAUSE acknowledged, then resumed the moment SUSPENDED shows. */
async function pauseResume(runnerType: RunnerType, rounds: number) {
  const t = await startEnvironment();
  try {
    const client = environmentClient(t.baseUrl);
    const { imageId } = await client.registerImage({ tenantId: TENANT, name: "wf", binary, runnerType });
    let failed = 0;
    let notResumed = 0;
    const round = async () => {
      const { instanceId } = await client.startInstance({ tenantId: TENANT, imageId, env: { WORKFLOW_MODE: "cooperative" } });
      const status = async () => (await client.getInstanceStatus({ tenantId: TENANT, instanceId })).instance!;
      await waitUntil(async () => (await status()).status === InstanceStatus.RUNNING, 60_000);
      await client.sendSignal({ tenantId: TENANT, instanceId, signalType: SignalType.PAUSE });
      await waitUntil(async () => (await status()).status === InstanceStatus.SUSPENDED, 60_000);
      await client.resumeInstance({ tenantId: TENANT, instanceId }).catch(() => undefined);
      await waitUntil(async () => [InstanceStatus.COMPLETED, InstanceStatus.FAILED].includes((await status()).status), 60_000).catch(() => undefined);
      const final = await status();
      if (final.status === InstanceStatus.FAILED) failed++;
      else if (final.status !== InstanceStatus.COMPLETED) notResumed++;
    };
    for (let i = 0; i < rounds; i += 10) await Promise.all(Array.from({ length: Math.min(10, rounds - i) }, round));
    rows.push({
      scenario: "pause, then resume at once",
      load: `${rounds} rounds (${RunnerType[runnerType].toLowerCase()}), 10 at a time`,
      lost: failed,
      twice: 0,
      stuck: notResumed,
      note: "FAILED counted as lost",
    });
  } finally {
    await t.close();
  }
}

/** StartInstance racing DeleteImage. */
async function startDeleteRace() {
  const t = await startEnvironment();
  try {
    const client = environmentClient(t.baseUrl);
    let both = 0;
    const started: string[] = [];
    for (let i = 0; i < RACE_PAIRS; i += 50) {
      await Promise.all(
        Array.from({ length: Math.min(50, RACE_PAIRS - i) }, async (_, j) => {
          const { imageId } = await client.registerImage({ tenantId: TENANT, name: `race-${i + j}`, binary, runnerType: RunnerType.NATIVE });
          const [s, d] = await Promise.allSettled([
            client.startInstance({ tenantId: TENANT, imageId, env: { WORKFLOW_MODE: "hang" }, timeoutSeconds: 120n }),
            client.deleteImage({ tenantId: TENANT, imageId }),
          ]);
          if (s.status === "fulfilled") started.push(s.value.instanceId);
          if (s.status === "fulfilled" && d.status === "fulfilled") both++;
        }),
      );
    }
    const orphans = await t.query("SELECT 1 FROM instances WHERE image_id IS NULL AND status IN ('pending', 'running', 'suspended')");
    await Promise.all(started.map((instanceId) => client.stopInstance({ tenantId: TENANT, instanceId, gracePeriodSeconds: 0n })));
    rows.push({
      scenario: "StartInstance racing DeleteImage",
      load: `${RACE_PAIRS} pairs`,
      lost: both + orphans.length,
      twice: 0,
      stuck: 0,
      note: `${started.length} started, the rest NOT_FOUND`,
    });
  } finally {
    await t.close();
  }
}

const rssMiB = () => process.memoryUsage().rss / MiB;

/** Watchers on one instance with a large input through its transitions; custom signals to a watch. */
async function memoryBounds() {
  const t = await startEnvironment({ maxCustomSignalsPerInstance: SIGNALS + 10 });
  try {
    const client = environmentClient(t.baseUrl);
    const id = await insertInstance(t, { tenantId: TENANT, input: { blob: "x".repeat(8 * MiB) } });
    global.gc?.();
    const before = rssMiB();
    let peak = before;
    const sampler = setInterval(() => (peak = Math.max(peak, rssMiB())), 50);
    const watches = Array.from({ length: WATCHERS }, async () => {
      let n = 0;
      for await (const _ of client.watchInstance({ tenantId: TENANT, instanceId: id })) n++;
      return n;
    });
    await new Promise((r) => setTimeout(r, 1_000));
    const c = instanceClient(t, id);
    await c.register({ instanceId: id });
    await client.sendSignal({ tenantId: TENANT, instanceId: id, signalType: SignalType.PAUSE });
    await c.ackSignal({ instanceId: id, signalType: SignalType.PAUSE });
    await t.query("UPDATE instances SET status = 'running' WHERE instance_id = $1", [id]);
    await c.complete({ instanceId: id, output: new TextEncoder().encode("{}") });
    const seen = await Promise.all(watches);
    clearInterval(sampler);
    rows.push({
      scenario: "watchers of an 8 MiB-input instance",
      load: `${WATCHERS} WatchInstance streams, 4 transitions`,
      lost: seen.filter((n) => n < 5).length,
      twice: 0,
      stuck: 0,
      note: `server RSS +${(peak - before).toFixed(0)} MiB (peak)`,
    });

    const target = await insertInstance(t, { tenantId: TENANT });
    const tc = instanceClient(t, target);
    await tc.register({ instanceId: target });
    const rssBefore = rssMiB();
    let delivered = 0;
    const abort = new AbortController();
    const watching = (async () => {
      for await (const m of tc.watchSignals({ instanceId: target, includeCustom: true }, { signal: abort.signal })) {
        if (m.customSignal) delivered++;
        if (delivered >= SIGNALS) break;
      }
    })();
    for (let i = 0; i < SIGNALS; i += 50) {
      await Promise.all(
        Array.from({ length: Math.min(50, SIGNALS - i) }, (_, j) =>
          client.sendCustomSignal({ tenantId: TENANT, instanceId: target, checkpointId: `w-${i + j}`, payload: new Uint8Array(1024) }),
        ),
      );
    }
    await Promise.race([watching, new Promise((r) => setTimeout(r, 60_000))]);
    abort.abort();
    rows.push({
      scenario: "custom signals to a WatchSignals stream",
      load: `${SIGNALS} signals of 1 KiB`,
      lost: SIGNALS - delivered,
      twice: Math.max(0, delivered - SIGNALS),
      stuck: 0,
      note: `server RSS +${(rssMiB() - rssBefore).toFixed(0)} MiB`,
    });
  } finally {
    await t.close();
  }
}

try {
  await killUnderLoad();
  await pauseResume(RunnerType.NATIVE, PAUSE_ROUNDS);
  await pauseResume(RunnerType.OCI, Math.max(1, Math.round(PAUSE_ROUNDS / 5)));
  await startDeleteRace();
  await memoryBounds();
} finally {
  await stopTestPostgres();
}

console.log("\nfaults (each of lost / launched twice / stuck should be 0)");
console.log(`${"scenario".padEnd(40)}${"load".padEnd(44)}${"lost".padStart(6)}${"twice".padStart(7)}${"stuck".padStart(7)}  note`);
for (const r of rows) {
  console.log(`${r.scenario.padEnd(40)}${r.load.padEnd(44)}${String(r.lost).padStart(6)}${String(r.twice).padStart(7)}${String(r.stuck).padStart(7)}  ${r.note}`);
}
