/**
 * Durable-sleep wake precision and idle cost of the wake scheduler.
 *
 * One Environment (default settings: reconcile every 5 s, heartbeat check every 15 s), a
 * NATIVE image of the `workflow` C fixture (WORKFLOW_MODE=complete). BENCH_SLEEPERS sleeping
 * instances are stored the way core's Sleep stores them (RUNNING -> SUSPENDED(sleeping) with
 * sleep_until, so the `runtara_sleep` NOTIFY fires); BENCH_DUE of them come due at random
 * whole-ms times spread uniformly over BENCH_WINDOW_MS, starting BENCH_LEAD_MS after they are
 * stored; the rest sleep a day. Each wake time is recorded here.
 *
 * Lag from the recorded wake time to:
 *   - claimed:    the claim statement moves the row SUSPENDED -> PENDING (clock_timestamp()),
 *   - launched:   running_processes.launched_at of the relaunch (= now() of its INSERT, right
 *                 after the runner's launch resolved) — requirement (a),
 *   - registered: the relaunched process's Register (instance_events 'registered') — (b).
 * running_processes rows are deleted when the process exits, so two triggers that this
 * benchmark adds to its own throwaway database copy the claim time and launched_at into a
 * bench table (the triggers only run inside those statements: no extra queries, no polling).
 *
 * Floors measured in the same run: a bare setTimeout armed for the same wake times in this
 * process (timer precision + this event loop, which also runs the environment), and one
 * round trip of a trivial query through the environment's pool and through a raw pg client.
 *
 * Idle queries: after every due sleeper finished (the far-future sleepers still stored), with
 * nothing due, pg_stat_database.xact_commit + xact_rollback of the benchmark's database is
 * sampled every 5 s over BENCH_IDLE_MS; the sampler's own transactions are subtracted.
 * Autovacuum is pre-empted by a VACUUM ANALYZE before the window (its transactions would count
 * too). When the server preloads pg_stat_statements, its per-statement calls are printed too.
 */
import { readFile } from "node:fs/promises";
import { setTimeout as delay } from "node:timers/promises";
import pg from "pg";
import { sql } from "slonik";
import { RunnerType } from "../gen/runtara/environment/v1/environment_pb.js";
import { buildFixtures } from "../test/fixtures/build.js";
import { environmentClient, startEnvironment, stopTestPostgres } from "../test/helpers.js";
import { envNumber, fmt, printLatency, runConcurrent, summarize, targetLine } from "./lib.js";

const SLEEPERS = envNumber("BENCH_SLEEPERS", 10_000);
const DUE = envNumber("BENCH_DUE", 1_000);
const WINDOW_MS = envNumber("BENCH_WINDOW_MS", 60_000);
const LEAD_MS = envNumber("BENCH_LEAD_MS", 3_000);
const IDLE_MS = envNumber("BENCH_IDLE_MS", 30_000);
const IDLE_SAMPLE_MS = 5_000;
/** Pending stats of an idle backend reach pg_stat_database within 10 s (PGSTAT_IDLE_INTERVAL). */
const STATS_SETTLE_MS = 11_000;
const FLOOR_QUERIES = 500;
const QUEUE_GAP_MS = 50;
const TENANT = "tenant-bench-wake";
const MARK = "/* bench-wake */";

if (!(DUE >= 1 && DUE <= SLEEPERS)) throw new Error(`need 1 <= BENCH_DUE (${DUE}) <= BENCH_SLEEPERS (${SLEEPERS})`);
if (!(IDLE_MS >= IDLE_SAMPLE_MS)) throw new Error(`BENCH_IDLE_MS must be >= ${IDLE_SAMPLE_MS}`);

const nowMs = () => performance.timeOrigin + performance.now();

/** Copies what the measurement needs out of statements that run anyway (no extra queries). */
const TRACE_DDL = `
  CREATE TABLE bench_wake_trace (instance_id text NOT NULL, stage text NOT NULL, at timestamptz NOT NULL);
  CREATE FUNCTION bench_wake_claimed() RETURNS trigger LANGUAGE plpgsql AS $$
  BEGIN
    INSERT INTO bench_wake_trace VALUES (NEW.instance_id, 'claimed', clock_timestamp());
    RETURN NULL;
  END $$;
  CREATE TRIGGER bench_wake_claimed AFTER UPDATE OF status ON instances FOR EACH ROW
    WHEN (OLD.status = 'suspended' AND NEW.status = 'pending') EXECUTE FUNCTION bench_wake_claimed();
  CREATE FUNCTION bench_wake_launched() RETURNS trigger LANGUAGE plpgsql AS $$
  BEGIN
    INSERT INTO bench_wake_trace VALUES (NEW.instance_id, 'launched', NEW.launched_at);
    RETURN NULL;
  END $$;
  CREATE TRIGGER bench_wake_launched AFTER INSERT OR UPDATE ON running_processes FOR EACH ROW
    EXECUTE FUNCTION bench_wake_launched();`;

interface WakeRow {
  instance_id: string;
  status: string;
  claims: number;
  launches: number;
  registrations: number;
  claimed_ms: number | null;
  launched_ms: number | null;
  registered_ms: number | null;
}

const t = await startEnvironment();
const admin = new pg.Client({ connectionString: t.database.url });
await admin.connect();
const baselineTimers: NodeJS.Timeout[] = [];
try {
  const binary = await readFile((await buildFixtures()).workflow);
  const { imageId } = await environmentClient(t.baseUrl).registerImage({ tenantId: TENANT, name: "sleeper", binary, runnerType: RunnerType.NATIVE });
  await admin.query(TRACE_DDL);
  const statements = (
    await admin.query<{ on: boolean }>(`SELECT current_setting('shared_preload_libraries') ~ 'pg_stat_statements' AS on`)
  ).rows[0]!.on;
  if (statements) await admin.query(`CREATE EXTENSION IF NOT EXISTS pg_stat_statements`);

  // Floors: one trivial query through the environment's pool (slonik) and a raw pg client.
  const pooledFloor = summarize((await runConcurrent(FLOOR_QUERIES, 1, async () => void (await t.env.db.query(sql.unsafe`SELECT 1`)))).durationsMs);
  const rawFloor = summarize((await runConcurrent(FLOOR_QUERIES, 1, async () => void (await admin.query(`SELECT 1`)))).durationsMs);

  // The sleepers, stored as core's Sleep stores them: RUNNING -> SUSPENDED(sleeping), one
  // transaction (nobody sees them running), so the `runtara_sleep` NOTIFY fires for each.
  const start = Date.now() + LEAD_MS;
  const dueAt = Array.from({ length: DUE }, () => start + Math.floor(Math.random() * WINDOW_MS));
  const ids = Array.from({ length: SLEEPERS }, (_, i) => (i < DUE ? `due-${i}` : `far-${i}`));
  const wakeAt = ids.map((_, i) => (i < DUE ? dueAt[i]! : start + 86_400_000 + i));
  const dueIds = ids.slice(0, DUE);
  const insertStarted = performance.now();
  await admin.query("BEGIN");
  await admin.query(
    `INSERT INTO instances (instance_id, tenant_id, image_id, image_name, status, input, env, started_at, heartbeat_at)
     SELECT id, $1, $2, 'sleeper', 'running', '\\x7b7d', '{"WORKFLOW_MODE":"complete"}', now(), now() FROM unnest($3::text[]) AS id`,
    [TENANT, imageId, ids],
  );
  await admin.query(
    `UPDATE instances i SET status = 'suspended', termination_reason = 'sleeping', sleep_until = to_timestamp(s.w / 1000.0),
       checkpoint_id = 'sleep:0'
     FROM unnest($1::text[], $2::float8[]) AS s(id, w) WHERE i.instance_id = s.id`,
    [ids, wakeAt],
  );
  await admin.query("COMMIT");
  const insertMs = performance.now() - insertStarted;
  if (Date.now() >= start) throw new Error(`storing the sleepers took ${fmt(insertMs, 0)} ms, longer than BENCH_LEAD_MS=${LEAD_MS}`);

  // Floor: a bare timer for every wake time, in this process (the environment's event loop).
  const timerLags: number[] = [];
  for (const w of dueAt) baselineTimers.push(setTimeout(() => timerLags.push(nowMs() - w), w - Date.now()));

  // Nothing of ours touches the database during the window; then wait for every due sleeper.
  await delay(Math.max(0, start + WINDOW_MS - Date.now()));
  const deadline = Date.now() + 120_000;
  for (;;) {
    const [r] = (
      await admin.query<{ open: number; tracked: number }>(
        `SELECT (SELECT count(*)::int FROM instances WHERE instance_id = ANY($1) AND status NOT IN ('completed', 'failed', 'cancelled')) AS open,
                (SELECT count(*)::int FROM running_processes) AS tracked`,
        [dueIds],
      )
    ).rows;
    if (r!.open === 0 && r!.tracked === 0) break;
    if (Date.now() > deadline) throw new Error(`${r!.open} due sleepers not finished, ${r!.tracked} processes tracked, 2 min after the window`);
    await delay(250);
  }

  const rows = (
    await admin.query<WakeRow>(
      `SELECT i.instance_id, i.status::text,
         (SELECT count(*)::int FROM bench_wake_trace b WHERE b.instance_id = i.instance_id AND b.stage = 'claimed') AS claims,
         (SELECT count(*)::int FROM bench_wake_trace b WHERE b.instance_id = i.instance_id AND b.stage = 'launched') AS launches,
         (SELECT count(*)::int FROM instance_events e WHERE e.instance_id = i.instance_id AND e.event_type = 'registered') AS registrations,
         (SELECT extract(epoch FROM min(b.at)) * 1000 FROM bench_wake_trace b WHERE b.instance_id = i.instance_id AND b.stage = 'claimed')::float8 AS claimed_ms,
         (SELECT extract(epoch FROM min(b.at)) * 1000 FROM bench_wake_trace b WHERE b.instance_id = i.instance_id AND b.stage = 'launched')::float8 AS launched_ms,
         (SELECT extract(epoch FROM min(e.created_at)) * 1000 FROM instance_events e
           WHERE e.instance_id = i.instance_id AND e.event_type = 'registered')::float8 AS registered_ms
       FROM instances i WHERE i.instance_id = ANY($1)`,
      [dueIds],
    )
  ).rows;
  const wakeOf = new Map(dueIds.map((id, i) => [id, dueAt[i]!]));
  const wrong = rows.filter((r) => r.status !== "completed" || r.claims !== 1 || r.launches !== 1 || r.registrations !== 1);
  const [far] = (
    await admin.query<{ asleep: number }>(
      `SELECT count(*)::int AS asleep FROM instances WHERE instance_id LIKE 'far-%' AND status = 'suspended' AND sleep_until IS NOT NULL`,
    )
  ).rows;
  /** Summary of `to - from` over the rows that have both times. */
  const lags = (to: (r: WakeRow) => number | null, from: (r: WakeRow) => number | null = (r) => wakeOf.get(r.instance_id)!) =>
    summarize(rows.flatMap((r) => (to(r) === null || from(r) === null ? [] : [to(r)! - from(r)!])));
  const claimed = lags((r) => r.claimed_ms);
  const launched = lags((r) => r.launched_ms);
  const registered = lags((r) => r.registered_ms);
  const claimToLaunch = lags((r) => r.launched_ms, (r) => r.claimed_ms);
  const launchToRegister = lags((r) => r.registered_ms, (r) => r.launched_ms);
  const timer = summarize(timerLags);
  // Queueing: wakes due less than QUEUE_GAP_MS after the previous due wake vs. the others.
  const byWake = dueIds.map((id, i) => ({ id, w: dueAt[i]! })).sort((a, b) => a.w - b.w);
  const gapBefore = new Map(byWake.map(({ id, w }, i) => [id, i === 0 ? Infinity : w - byWake[i - 1]!.w]));
  const launchedAfter = (close: boolean) => lags((r) => ((gapBefore.get(r.instance_id)! < QUEUE_GAP_MS) === close ? r.launched_ms : null));
  const launchedIsolated = launchedAfter(false);
  const launchedClose = launchedAfter(true);

  // Idle: nothing due, nothing running. VACUUM ANALYZE now so autovacuum has nothing to do in
  // the window, then let every backend's pending statistics reach pg_stat_database.
  await admin.query(`VACUUM ANALYZE`);
  await delay(STATS_SETTLE_MS);
  const sample = async () =>
    (
      await admin.query<{ xacts: number; autovacuums: number }>(
        `${MARK} SELECT (SELECT (xact_commit + xact_rollback)::float8 FROM pg_stat_database WHERE datname = current_database()) AS xacts,
           (SELECT coalesce(sum(autovacuum_count + autoanalyze_count), 0)::float8 FROM pg_stat_user_tables) AS autovacuums`,
      )
    ).rows[0]!;
  const statementsReset = performance.now();
  if (statements) {
    await admin.query(`${MARK} SELECT pg_stat_statements_reset(0, (SELECT oid FROM pg_database WHERE datname = current_database()), 0)`);
    await delay(1_100); // our statistics flush at once when we next go idle (>= 1 s after the last flush)
  }
  const samples = [await sample()];
  const idleStarted = performance.now();
  for (let i = 1; i <= Math.floor(IDLE_MS / IDLE_SAMPLE_MS); i++) {
    await delay(Math.max(0, idleStarted + i * IDLE_SAMPLE_MS - performance.now()));
    samples.push(await sample());
  }
  const idleSeconds = (performance.now() - idleStarted) / 1000;
  const statementsSeconds = (performance.now() - statementsReset) / 1000;
  // Each sample is one transaction of ours, counted by the next one (a sampler idle >= 1 s
  // flushes its statistics when it goes idle).
  const perSample = samples.slice(1).map((s, i) => s.xacts - samples[i]!.xacts - 1);
  const idleQueries = perSample.reduce((a, b) => a + b, 0);
  const autovacuumsInWindow = samples[samples.length - 1]!.autovacuums - samples[0]!.autovacuums;
  const byStatement = statements
    ? (
        await admin.query<{ calls: number; query: string }>(
          `${MARK} SELECT calls::int, regexp_replace(query, '\\s+', ' ', 'g') AS query FROM pg_stat_statements
           WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) AND query NOT LIKE '%bench-wake%'
           ORDER BY calls DESC`,
        )
      ).rows
    : [];

  console.log(
    `wake: ${SLEEPERS} sleepers (stored in ${fmt(insertMs, 0)} ms), ${DUE} due at random whole-ms times over ${WINDOW_MS} ms ` +
      `starting ${LEAD_MS} ms after storing, ${SLEEPERS - DUE} sleep a day; reconcile interval 5000 ms (default)`,
  );
  console.log(`correctness: ${rows.length - wrong.length}/${DUE} woken exactly once and completed; ${far!.asleep}/${SLEEPERS - DUE} far sleepers still asleep`);
  console.log("floors");
  printLatency("setTimeout at the wake times", timer);
  printLatency("SELECT 1 via env pool", pooledFloor);
  printLatency("SELECT 1 via raw pg client", rawFloor);
  console.log("lag from the stored wake time (gap: since the previous due wake)");
  printLatency("-> claimed (SUSPENDED->PENDING)", claimed);
  printLatency("-> launched (launched_at)", launched);
  printLatency("-> registered (Register)", registered);
  printLatency(`-> launched, gap >= ${QUEUE_GAP_MS} ms`, launchedIsolated);
  printLatency(`-> launched, gap < ${QUEUE_GAP_MS} ms`, launchedClose);
  console.log("stages");
  printLatency("claimed -> launched", claimToLaunch);
  printLatency("launched -> registered", launchToRegister);
  console.log(
    `idle: ${fmt(idleQueries, 0)} transactions in ${fmt(idleSeconds, 1)} s (pg_stat_database, own ${samples.length - 1} sampling queries subtracted); ` +
      `per ${IDLE_SAMPLE_MS / 1000} s: ${perSample.join(" ")}` +
      (autovacuumsInWindow > 0 ? `; WARNING: ${autovacuumsInWindow} autovacuum/autoanalyze runs in the window are included` : ""),
  );
  if (statements) {
    const calls = byStatement.reduce((a, r) => a + r.calls, 0);
    console.log(`idle statements (pg_stat_statements, ${calls} calls in ${fmt(statementsSeconds, 1)} s = ${fmt(calls / statementsSeconds)}/s):`);
    for (const r of byStatement) console.log(`  ${String(r.calls).padStart(5)}  ${r.query.slice(0, 110)}`);
  }
  console.log(targetLine("(a) wake -> launch p99", launched.p99, "<=", 15, " ms"));
  console.log(`${"(b) wake -> Register p99".padEnd(36)} ${fmt(registered.p99)} ms (no target; p50 ${fmt(registered.p50)} ms)`);
  console.log(targetLine("idle queries per second", idleQueries / idleSeconds, "<=", 1, "/s"));
  console.log(`p99 ratio launch lag / setTimeout floor: ${fmt(launched.p99 / timer.p99)}`);
  if (wrong.length > 0) {
    throw new Error(`not woken exactly once: ${JSON.stringify(wrong.slice(0, 5))}${wrong.length > 5 ? ` and ${wrong.length - 5} more` : ""}`);
  }
} finally {
  for (const timer of baselineTimers) clearTimeout(timer);
  await admin.end();
  await t.close();
  await stopTestPostgres();
}
