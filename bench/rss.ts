/**
 * Resident memory of the environment holding RSS_RUNNING (200) running and RSS_SLEEPING
 * (10,000) sleeping instances; target <= 150 MiB.
 *
 * The environment runs as a user runs it (`node dist/src/cli/environment.js`, started by
 * startCli of test/helpers.ts with the variables below) on its own fresh database, data
 * directory and ports, so its memory is its own: VmRSS of that node process, read from
 * /proc/<pid>/status every RSS_SAMPLE_MS (100) ms. Its helpers (runtara-launcher, which forks
 * the workflows, and the spawner process for commands, once started) are sampled too and
 * reported beside it (their sum), not in the target.
 *
 *   1. idle (baseline): after a health check, RSS_IDLE_SETTLE_MS (3000) of quiet, then
 *      RSS_IDLE_WINDOW_MS (5000) of samples: median and max;
 *   2. RSS_RUNNING instances of a NATIVE image of the `workflow` C fixture, started through
 *      StartInstance 16 at a time, WORKFLOW_MODE=slow with SLOW_MS of an hour (registers, then
 *      sleeps in-process; ends on SIGTERM). Once all are RUNNING, RSS_RUNNING_WINDOW_MS
 *      (3000) of samples with only these;
 *   3. RSS_SLEEPING instances of the same image stored as core's Sleep stores them: inserted
 *      RUNNING and moved to SUSPENDED(sleeping) with a wake time a day away in one
 *      transaction, so each sends its `runtara_sleep` NOTIFY to the environment;
 *   4. RSS_SETTLE_MS (10000) to settle, then RSS_WINDOW_MS (20000) of samples (a heartbeat
 *      check and several wake reconcile passes fall in it): max (the target) and median.
 * The heap figures of the environment's own /metrics (prom-client defaults) are read after
 * each window, and VmHWM (the process's peak RSS) at the end.
 *
 * Settings: RUNTARA_NATIVE_RUNNER=enabled; RUNTARA_HEARTBEAT_TIMEOUT_SECS=3600 (the fixture
 * does not heartbeat; the monitor still checks every 15 s); LOG_LEVEL info. Afterwards every
 * running instance is stopped (StopInstance, grace 0), the sleepers cancelled (SendSignal
 * CANCEL), RSS_STOP_CONCURRENCY at a time, and the environment sent SIGTERM; a process of the run
 * still alive then (the environment, its helpers, a workflow run from this data directory) is
 * killed, and the database and data directory removed, also on failure.
 *
 * Counts (env): RSS_RUNNING (200), RSS_SLEEPING (10000), RSS_SETTLE_MS, RSS_WINDOW_MS,
 * RSS_RUNNING_WINDOW_MS, RSS_IDLE_SETTLE_MS, RSS_IDLE_WINDOW_MS, RSS_SAMPLE_MS, RSS_STOP_CONCURRENCY
 * (16).
 */
import { mkdtemp, readdir, readFile, readlink, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { setTimeout as delay } from "node:timers/promises";
import pg from "pg";
import { SignalType } from "../gen/runtara/core/v1/types_pb.js";
import { RunnerType } from "../gen/runtara/environment/v1/environment_pb.js";
import { buildFixtures } from "../test/fixtures/build.js";
import { endPool, environmentClient, freePort, freshDatabase, isAlive, startCli, stopTestPostgres, waitUntil, type Cli } from "../test/helpers.js";
import { fmt, median, MiB, recordFigure, runConcurrent, targetLine, envNumber } from "./lib.js";

const RUNNING = envNumber("RSS_RUNNING", 200);
const SLEEPING = envNumber("RSS_SLEEPING", 10_000);
const SETTLE_MS = envNumber("RSS_SETTLE_MS", 10_000);
const WINDOW_MS = envNumber("RSS_WINDOW_MS", 20_000);
const IDLE_SETTLE_MS = envNumber("RSS_IDLE_SETTLE_MS", 3_000);
const IDLE_WINDOW_MS = envNumber("RSS_IDLE_WINDOW_MS", 5_000);
const SAMPLE_MS = envNumber("RSS_SAMPLE_MS", 100);
const PHASE_WINDOW_MS = envNumber("RSS_RUNNING_WINDOW_MS", 3_000);
const STOP_CONCURRENCY = envNumber("RSS_STOP_CONCURRENCY", 16);
const START_CONCURRENCY = 16;
const TENANT = "tenant-bench-rss";
const TARGET_MIB = 150;

/** A field of /proc/<pid>/status in bytes (VmRSS, VmHWM), undefined once the process is gone. */
async function procStatus(pid: number, field: string): Promise<number | undefined> {
  const text = await readFile(`/proc/${pid}/status`, "utf8").catch(() => undefined);
  const m = text === undefined ? null : new RegExp(`^${field}:\\s+(\\d+) kB`, "m").exec(text);
  return m ? Number(m[1]) * 1024 : undefined;
}

async function cmdline(pid: number): Promise<string> {
  return (await readFile(`/proc/${pid}/cmdline`, "utf8").catch(() => "")).replaceAll("\0", " ").trim();
}

/** Direct children of `pid`. */
async function childrenOf(pid: number): Promise<number[]> {
  const tasks = await readdir(`/proc/${pid}/task`).catch(() => [] as string[]);
  const out: number[] = [];
  for (const t of tasks) {
    const text = await readFile(`/proc/${pid}/task/${t}/children`, "utf8").catch(() => "");
    out.push(...text.split(/\s+/).filter(Boolean).map(Number));
  }
  return out;
}

/** Processes whose executable lives in `dir` (workflows run from this run's data directory). */
async function processesRunningFrom(dir: string): Promise<number[]> {
  const out: number[] = [];
  for (const entry of await readdir("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    const exe = await readlink(`/proc/${entry}/exe`).catch(() => "");
    if (exe.startsWith(`${dir}/`)) out.push(Number(entry));
  }
  return out;
}

interface Sample {
  at: number;
  env: number;
  /** The environment's anonymous memory (heap, malloc), the part of VmRSS that reclaim cannot drop. */
  anon: number;
  /** The helpers' VmRSS, summed; undefined when none was found. */
  helpers: number | undefined;
}

/** The environment's helpers, by their command line (they are its children). */
const isHelper = (command: string) => command.includes("spawner-process") || command.includes("runtara-launcher");

/** Samples the environment's and its helpers' VmRSS until stop(). */
function sampler(envPid: number, helperPids: () => number[]) {
  const samples: Sample[] = [];
  let busy = false;
  const timer = setInterval(() => {
    if (busy) return;
    busy = true;
    void (async () => {
      const env = await procStatus(envPid, "VmRSS");
      const anon = await procStatus(envPid, "RssAnon");
      const each = await Promise.all(helperPids().map((pid) => procStatus(pid, "VmRSS")));
      const found = each.filter((v): v is number => v !== undefined);
      const helpers = found.length === 0 ? undefined : found.reduce((a, b) => a + b, 0);
      if (env !== undefined && anon !== undefined) samples.push({ at: performance.now(), env, anon, helpers });
    })().finally(() => (busy = false));
  }, SAMPLE_MS);
  return {
    between(from: number, to: number) {
      return samples.filter((s) => s.at >= from && s.at <= to);
    },
    stop: () => clearInterval(timer),
  };
}

const mib = (bytes: number) => bytes / MiB;
const stats = (values: number[]) => ({ median: median(values), max: Math.max(...values), n: values.length });

/** The heap figures of the environment's /metrics, in MiB. */
async function heapFigures(baseUrl: string): Promise<Record<string, number>> {
  const text = await (await fetch(`${baseUrl}/metrics`)).text();
  const pick = (name: string) => Number(new RegExp(`^${name} (\\S+)`, "m").exec(text)?.[1] ?? NaN) / MiB;
  return {
    "heap used": pick("nodejs_heap_size_used_bytes"),
    "heap total": pick("nodejs_heap_size_total_bytes"),
    external: pick("nodejs_external_memory_bytes"),
  };
}

const binary = await readFile((await buildFixtures()).workflow);
const db = await freshDatabase();
const dataDir = await mkdtemp(path.join(tmpdir(), "runtara-bench-rss-"));
const pool = new pg.Pool({ connectionString: db.url, max: 2 });
let cli: Cli | undefined;
let helperPids: number[] = [];
let rss: ReturnType<typeof sampler> | undefined;
try {
  const [port, corePort] = [await freePort(), await freePort()];
  const baseUrl = `http://127.0.0.1:${port}`;
  cli = startCli({
    RUNTARA_DATABASE_URL: db.url,
    DATA_DIR: dataDir,
    RUNTARA_ENV_HTTP_PORT: String(port),
    RUNTARA_ENV_HTTP_HOST: "127.0.0.1",
    RUNTARA_CORE_ADDR: `127.0.0.1:${corePort}`,
    RUNTARA_REPLICA_ID: "bench-rss",
    RUNTARA_NATIVE_RUNNER: "enabled",
    RUNTARA_HEARTBEAT_TIMEOUT_SECS: "3600",
    LOG_LEVEL: "info",
    LOG_FORMAT: "json",
  });
  await cli.waitFor("environment listening", 60_000);
  const envPid = cli.child.pid!;
  const command = await cmdline(envPid);
  if (!command.includes("dist/src/cli/environment.js")) throw new Error(`pid ${envPid} is not the environment: ${command}`);
  const client = environmentClient(baseUrl);
  await waitUntil(async () => (await client.healthCheck({}).catch(() => undefined))?.healthy === true, 60_000);
  const findHelpers = async () => {
    const found: number[] = [];
    for (const pid of await childrenOf(envPid)) if (isHelper(await cmdline(pid))) found.push(pid);
    return found;
  };
  helperPids = await findHelpers();
  rss = sampler(envPid, () => helperPids);

  // 1. Idle.
  await delay(IDLE_SETTLE_MS);
  const idleFrom = performance.now();
  await delay(IDLE_WINDOW_MS);
  const idle = rss.between(idleFrom, performance.now());
  const idleHeap = await heapFigures(baseUrl);

  // 2. Running instances.
  const { imageId } = await client.registerImage({ tenantId: TENANT, name: "rss", binary, runnerType: RunnerType.NATIVE });
  const startFrom = performance.now();
  const started = await runConcurrent(RUNNING, START_CONCURRENCY, async () => {
    await client.startInstance({ tenantId: TENANT, imageId, env: { WORKFLOW_MODE: "slow", SLOW_MS: "3600000" }, timeoutSeconds: 3600n });
  });
  const countRunning = async () =>
    (await pool.query<{ n: number }>(`SELECT count(*)::int AS n FROM instances WHERE tenant_id = $1 AND status = 'running'`, [TENANT])).rows[0]!.n;
  await waitUntil(async () => (await countRunning()) >= RUNNING, 120_000);
  helperPids = await findHelpers();
  const startsDone = performance.now();
  // The running instances alone, before the sleepers arrive.
  await delay(PHASE_WINDOW_MS);
  const runningOnly = rss.between(startsDone, performance.now());

  // 3. Sleeping instances, stored as core's Sleep stores them (NOTIFY runtara_sleep for each).
  const conn = await pool.connect();
  try {
    await conn.query("BEGIN");
    await conn.query(
      `INSERT INTO instances (instance_id, tenant_id, image_id, image_name, status, input, env, started_at, heartbeat_at)
       SELECT 'sleeper-' || g, $1, $2, 'rss', 'running', '\\x7b7d', '{"WORKFLOW_MODE":"sleep"}', now(), now()
       FROM generate_series(0, $3::int - 1) AS g`,
      [TENANT, imageId, SLEEPING],
    );
    await conn.query(
      `UPDATE instances SET status = 'suspended', termination_reason = 'sleeping', checkpoint_id = 'sleep:0',
         sleep_until = now() + interval '1 day' + substr(instance_id, 9)::int * interval '1 ms'
       WHERE tenant_id = $1 AND instance_id LIKE 'sleeper-%'`,
      [TENANT],
    );
    await conn.query("COMMIT");
  } catch (e) {
    await conn.query("ROLLBACK");
    throw e;
  } finally {
    conn.release();
  }

  // 4. Settle, then the window.
  await delay(SETTLE_MS);
  const loadFrom = performance.now();
  await delay(WINDOW_MS);
  const loaded = rss.between(loadFrom, performance.now());
  const loadedHeap = await heapFigures(baseUrl);
  const duringStarts = rss.between(startFrom, startsDone);
  const [{ running, sleeping, processes }] = (
    await pool.query<{ running: number; sleeping: number; processes: number }>(
      `SELECT count(*) FILTER (WHERE status = 'running')::int AS running,
              count(*) FILTER (WHERE status = 'suspended' AND termination_reason = 'sleeping')::int AS sleeping,
              (SELECT count(*)::int FROM running_processes) AS processes
       FROM instances WHERE tenant_id = $1`,
      [TENANT],
    )
  ).rows as [{ running: number; sleeping: number; processes: number }];
  const hwm = await procStatus(envPid, "VmHWM");

  const idleEnv = stats(idle.map((s) => mib(s.env)));
  const loadEnv = stats(loaded.map((s) => mib(s.env)));
  const startsEnv = stats(duringStarts.map((s) => mib(s.env)));
  const runningEnv = stats(runningOnly.map((s) => mib(s.env)));
  const idleAnon = stats(idle.map((s) => mib(s.anon)));
  const loadAnon = stats(loaded.map((s) => mib(s.anon)));
  const helpersOf = (list: Sample[]) => stats(list.flatMap((s) => (s.helpers === undefined ? [] : [mib(s.helpers)])));
  const idleHelpers = helpersOf(idle);
  const loadHelpers = helpersOf(loaded);
  console.log(`environment RSS (pid ${envPid}, node dist/src/cli/environment.js; VmRSS every ${SAMPLE_MS} ms)`);
  console.log(`load held in the window: ${running} running (${processes} processes recorded), ${sleeping} sleeping; ${RUNNING} started in ${fmt(started.wallMs / 1000, 1)} s`);
  const row = (label: string, s: { median: number; max: number; n: number }) =>
    console.log(`${label.padEnd(40)} median ${fmt(s.median, 1)} MiB  max ${fmt(s.max, 1)} MiB  (${s.n} samples)`);
  row("idle, environment", idleEnv);
  row("during the starts, environment", startsEnv);
  row(`${RUNNING} running only, environment`, runningEnv);
  row(`${RUNNING} running + ${SLEEPING} sleeping, environment`, loadEnv);
  row("idle, environment RssAnon", idleAnon);
  row(`${RUNNING} running + ${SLEEPING} sleeping, RssAnon`, loadAnon);
  if (loadHelpers.n > 0) {
    if (idleHelpers.n > 0) row("idle, helpers", idleHelpers);
    row(`${RUNNING} running + ${SLEEPING} sleeping, helpers`, loadHelpers);
  } else {
    console.log("helpers: none found among the environment's children");
  }
  console.log(`environment VmHWM (peak RSS of its life)        ${fmt(mib(hwm ?? NaN), 1)} MiB`);
  const heapLine = (h: Record<string, number>) => Object.entries(h).map(([k, v]) => `${k} ${fmt(v, 1)}`).join(", ");
  console.log(`/metrics, idle (MiB):   ${heapLine(idleHeap)}`);
  console.log(`/metrics, loaded (MiB): ${heapLine(loadedHeap)}`);

  recordFigure("idle RSS median", idleEnv.median, "MiB");
  recordFigure("idle RSS max", idleEnv.max, "MiB");
  recordFigure("RSS max during the starts", startsEnv.max, "MiB");
  recordFigure("running only RSS median", runningEnv.median, "MiB");
  recordFigure("loaded RSS median", loadEnv.median, "MiB");
  recordFigure("loaded RSS growth over idle (medians)", loadEnv.median - idleEnv.median, "MiB");
  recordFigure("idle RssAnon median", idleAnon.median, "MiB");
  recordFigure("loaded RssAnon max", loadAnon.max, "MiB");
  recordFigure("VmHWM at the end", mib(hwm ?? NaN), "MiB");
  recordFigure("loaded heap used", loadedHeap["heap used"]!, "MiB");
  if (loadHelpers.n > 0) recordFigure("loaded helpers RSS max", loadHelpers.max, "MiB");
  console.log(targetLine(`RSS max, ${RUNNING} running + ${SLEEPING} sleeping`, loadEnv.max, "<=", TARGET_MIB, " MiB"));
  if (running < RUNNING || sleeping < SLEEPING) throw new Error(`the load was not held: ${running} running, ${sleeping} sleeping`);

  // Stop everything through the API.
  const stopStarted = performance.now();
  const ids = (await pool.query<{ instance_id: string; status: string }>(`SELECT instance_id, status FROM instances WHERE tenant_id = $1`, [TENANT])).rows;
  const runningIds = ids.filter((r) => r.status !== "suspended").map((r) => r.instance_id);
  const sleepingIds = ids.filter((r) => r.status === "suspended").map((r) => r.instance_id);
  await runConcurrent(runningIds.length, STOP_CONCURRENCY, async (i) => {
    await client.stopInstance({ tenantId: TENANT, instanceId: runningIds[i]!, gracePeriodSeconds: 0n });
  });
  // CANCEL cancels a sleeper at once; StopInstance would also watch it for the grace period
  // (about 3x the server time per call here).
  await runConcurrent(sleepingIds.length, STOP_CONCURRENCY, async (i) => {
    await client.sendSignal({ tenantId: TENANT, instanceId: sleepingIds[i]!, signalType: SignalType.CANCEL });
  });
  await waitUntil(
    async () =>
      (await pool.query<{ n: number }>(`SELECT count(*)::int AS n FROM running_processes`)).rows[0]!.n === 0 &&
      (await pool.query<{ n: number }>(`SELECT count(*)::int AS n FROM instances WHERE status NOT IN ('completed', 'failed', 'cancelled')`)).rows[0]!
        .n === 0,
    120_000,
  );
  const stopSeconds = (performance.now() - stopStarted) / 1000;
  console.log(
    `stopped ${runningIds.length} running (StopInstance) and cancelled ${sleepingIds.length} sleeping (SendSignal CANCEL) instances, ${STOP_CONCURRENCY} at a time, in ${fmt(stopSeconds, 1)} s`,
  );
} finally {
  rss?.stop();
  if (cli && cli.child.exitCode === null && cli.child.signalCode === null) {
    cli.child.kill("SIGTERM");
    const exited = await Promise.race([cli.exited.then(() => true), delay(30_000).then(() => false)]);
    if (!exited) {
      console.log("the environment did not exit within 30 s of SIGTERM: SIGKILL");
      cli.child.kill("SIGKILL");
      await cli.exited;
    }
  }
  // Whatever of this run is still alive: its helpers, a workflow run from this data directory.
  const liveHelpers: number[] = [];
  for (const pid of helperPids) if (isAlive(pid) && isHelper(await cmdline(pid))) liveHelpers.push(pid);
  const leftovers = [...liveHelpers, ...(await processesRunningFrom(dataDir))];
  for (const pid of leftovers) {
    console.log(`killing leftover process ${pid}: ${await cmdline(pid)}`);
    try {
      process.kill(pid, "SIGKILL");
    } catch {
      // gone meanwhile
    }
  }
  await endPool(pool);
  await db.drop();
  await rm(dataDir, { recursive: true, force: true });
  await stopTestPostgres();
}
