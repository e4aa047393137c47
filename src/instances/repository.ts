import { sql, UniqueIntegrityConstraintViolationError, ForeignKeyIntegrityConstraintViolationError, type DatabasePool, type DatabaseTransactionConnection } from "slonik";
import { z } from "zod";
import { STATUSES, type Status } from "../core/types.js";
import { AlreadyExists, NotFound } from "../errors.js";
import type { Instance, LaunchTarget, RunOutcome } from "./types.js";

type Db = DatabasePool | DatabaseTransactionConnection;

const status = z.enum(STATUSES);
const reason = z.enum([
  "completed",
  "application_error",
  "crashed",
  "timeout",
  "heartbeat_timeout",
  "cancelled",
  "paused",
  "sleeping",
  "orphaned",
  "launch_failed",
]);
const bytes = z.instanceof(Buffer);
const env = z.record(z.string());

const instanceRow = z
  .object({
    instance_id: z.string(),
    tenant_id: z.string(),
    image_id: z.string().nullable(),
    image_name: z.string(),
    status,
    termination_reason: reason.nullable(),
    exit_code: z.number().nullable(),
    checkpoint_id: z.string().nullable(),
    created_at: z.number(),
    started_at: z.number().nullable(),
    finished_at: z.number().nullable(),
    heartbeat_at: z.number().nullable(),
    sleep_until: z.number().nullable(),
    input: bytes.nullable(),
    output: bytes.nullable(),
    error: z.string().nullable(),
    stderr: z.string().nullable(),
    memory_peak_bytes: z.bigint().nullable(),
    cpu_usage_usec: z.bigint().nullable(),
    timeout_seconds: z.number(),
    env,
    created_key: z.string(),
    finished_key: z.string().nullable(),
  })
  .transform(
    (r): Instance => ({
      instanceId: r.instance_id,
      tenantId: r.tenant_id,
      imageId: r.image_id,
      imageName: r.image_name,
      status: r.status,
      terminationReason: r.termination_reason,
      exitCode: r.exit_code,
      checkpointId: r.checkpoint_id,
      createdAtMs: r.created_at,
      startedAtMs: r.started_at,
      finishedAtMs: r.finished_at,
      heartbeatAtMs: r.heartbeat_at,
      wakeAtMs: r.sleep_until,
      input: r.input,
      output: r.output,
      error: r.error,
      stderr: r.stderr,
      memoryPeakBytes: r.memory_peak_bytes,
      cpuUsageUsec: r.cpu_usage_usec,
      timeoutSeconds: r.timeout_seconds,
      env: r.env,
      sortKeys: { created: r.created_key, finished: r.finished_key },
    }),
  );

// Exact timestamps as text for keyset tokens (epoch ms would lose the microseconds).
const keyColumns = sql.fragment`created_at::text AS created_key, finished_at::text AS finished_key`;
const fullColumns = sql.fragment`instance_id, tenant_id, image_id::text, image_name, status, termination_reason, exit_code,
  checkpoint_id, created_at, started_at, finished_at, heartbeat_at, sleep_until, input, output, error, stderr,
  memory_peak_bytes, cpu_usage_usec, timeout_seconds, env, ${keyColumns}`;
/** Lists leave the large columns out. */
const listColumns = sql.fragment`instance_id, tenant_id, image_id::text, image_name, status, termination_reason, exit_code,
  checkpoint_id, created_at, started_at, finished_at, heartbeat_at, sleep_until, NULL::bytea AS input, NULL::bytea AS output,
  error, NULL::text AS stderr, memory_peak_bytes, cpu_usage_usec, timeout_seconds, env, ${keyColumns}`;

export interface NewInstance {
  instanceId: string;
  tenantId: string;
  imageId: string;
  imageName: string;
  input: Uint8Array;
  env: Record<string, string>;
  timeoutSeconds: number;
}

/** Inserts a PENDING instance; the image's use time is refreshed in the same statement. */
export async function insertInstance(db: Db, i: NewInstance): Promise<void> {
  try {
    await db.query(sql.unsafe`
      WITH used AS (UPDATE images SET last_used_at = now() WHERE image_id = ${i.imageId})
      INSERT INTO instances (instance_id, tenant_id, image_id, image_name, status, input, env, timeout_seconds)
      VALUES (${i.instanceId}, ${i.tenantId}, ${i.imageId}, ${i.imageName}, 'pending',
              ${sql.binary(Buffer.from(i.input))}, ${sql.jsonb(i.env)}, ${i.timeoutSeconds})`);
  } catch (e) {
    if (e instanceof UniqueIntegrityConstraintViolationError) {
      throw new AlreadyExists(`instance_id: instance ${i.instanceId} already exists`);
    }
    if (e instanceof ForeignKeyIntegrityConstraintViolationError) throw new NotFound(`image ${i.imageId} not found`);
    throw e;
  }
}

export async function findInstance(db: Db, tenantId: string, instanceId: string): Promise<Instance | null> {
  return db.maybeOne(sql.type(instanceRow)`
    SELECT ${fullColumns} FROM instances WHERE instance_id = ${instanceId} AND tenant_id = ${tenantId}`);
}

const launchRow = z
  .object({
    instance_id: z.string(),
    tenant_id: z.string(),
    image_id: z.string(),
    runner_type: z.enum(["oci", "native", "wasm"]),
    timeout_seconds: z.number(),
    checkpoint_id: z.string().nullable(),
    env,
  })
  .transform(
    (r): LaunchTarget => ({
      instanceId: r.instance_id,
      tenantId: r.tenant_id,
      imageId: r.image_id,
      runnerType: r.runner_type,
      timeoutSeconds: r.timeout_seconds,
      checkpointId: r.checkpoint_id,
      env: r.env,
    }),
  );

/**
 * SUSPENDED -> PENDING for a relaunch (resume, RESUME signal, wake). Going through PENDING
 * means a relaunched process that dies before registering is settled as crashed instead of
 * staying SUSPENDED forever. Returns what the launch needs, or null when not SUSPENDED.
 */
export async function claimForRelaunch(db: Db, tenantId: string, instanceId: string): Promise<LaunchTarget | null> {
  return db.maybeOne(sql.type(launchRow)`
    WITH u AS (
      UPDATE instances SET status = 'pending', termination_reason = NULL, sleep_until = NULL
      WHERE instance_id = ${instanceId} AND tenant_id = ${tenantId} AND status = 'suspended' AND image_id IS NOT NULL
      RETURNING instance_id, tenant_id, image_id, timeout_seconds, checkpoint_id, env
    )
    SELECT u.instance_id, u.tenant_id, u.image_id::text, i.runner_type, u.timeout_seconds, u.checkpoint_id, u.env
    FROM u JOIN images i ON i.image_id = u.image_id`);
}

/** PENDING -> FAILED(launch_failed) when the process could not be started. */
export async function markLaunchFailed(db: Db, instanceId: string, error: string): Promise<void> {
  await db.query(sql.unsafe`
    UPDATE instances SET status = 'failed', termination_reason = 'launch_failed', error = ${error}, finished_at = now()
    WHERE instance_id = ${instanceId} AND status = 'pending'`);
}

/**
 * Records how a run ended (exit code, stderr tail, metrics: for every run) and, in the same
 * statement, settles an instance that had not settled itself: PENDING or RUNNING becomes
 * FAILED (crashed / timeout / heartbeat_timeout) or CANCELLED (stopped). An instance that
 * completed, failed, slept or paused on its own keeps its status.
 */
export async function recordRunEnd(db: Db, instanceId: string, o: RunOutcome): Promise<Status | null> {
  const active = sql.fragment`status IN ('pending', 'running')`;
  const finalStatus = o.verdict === "cancelled" ? sql.fragment`'cancelled'::instance_status` : sql.fragment`'failed'::instance_status`;
  const message =
    o.verdict === "crashed"
      ? `process exited (${o.exitCode === null ? "killed by a signal" : `code ${o.exitCode}`}) without reporting a result`
      : o.verdict === "timeout"
        ? "execution timed out"
        : o.verdict === "heartbeat_timeout"
          ? "no heartbeat within the heartbeat timeout"
          : null;
  return db.maybeOneFirst(sql.type(z.object({ status }))`
    UPDATE instances SET
      exit_code = ${o.exitCode},
      stderr = ${o.stderrTail},
      memory_peak_bytes = COALESCE(${o.memoryPeakBytes ?? null}::bigint, memory_peak_bytes),
      cpu_usage_usec = COALESCE(${o.cpuUsageUsec ?? null}::bigint, cpu_usage_usec),
      termination_reason = CASE WHEN ${active} THEN ${o.verdict}::termination_reason ELSE termination_reason END,
      error = CASE WHEN ${active} THEN COALESCE(${message}, error) ELSE error END,
      finished_at = CASE WHEN ${active} THEN now() ELSE finished_at END,
      status = CASE WHEN ${active} THEN ${finalStatus} ELSE status END
    WHERE instance_id = ${instanceId}
    RETURNING status`);
}

/** Forces CANCELLED after a stop killed the process (unless it settled first). */
export async function markCancelled(db: Db, tenantId: string, instanceId: string): Promise<Status | null> {
  return db.maybeOneFirst(sql.type(z.object({ status }))`
    WITH u AS (
      UPDATE instances SET status = 'cancelled', termination_reason = 'cancelled', finished_at = now(), sleep_until = NULL
      WHERE instance_id = ${instanceId} AND tenant_id = ${tenantId} AND status IN ('pending', 'running', 'suspended')
      RETURNING status
    )
    SELECT COALESCE((SELECT status FROM u), (SELECT status FROM instances WHERE instance_id = ${instanceId} AND tenant_id = ${tenantId})) AS status`);
}

export interface ProcessRecord {
  instanceId: string;
  runner: "oci" | "native";
  containerId: string;
  pid: number;
  processStartTime: bigint;
  replicaId: string;
  host: string;
  runDir: string;
  deadlineMs: number;
}

export async function insertRunningProcess(db: Db, p: ProcessRecord): Promise<void> {
  await db.query(sql.unsafe`
    INSERT INTO running_processes (instance_id, runner, container_id, pid, process_start_time, replica_id, host, run_dir, deadline)
    VALUES (${p.instanceId}, ${p.runner}, ${p.containerId}, ${p.pid}, ${p.processStartTime}, ${p.replicaId}, ${p.host},
            ${p.runDir}, to_timestamp(${p.deadlineMs} / 1000.0))
    ON CONFLICT (instance_id) DO UPDATE SET runner = EXCLUDED.runner, container_id = EXCLUDED.container_id,
      pid = EXCLUDED.pid, process_start_time = EXCLUDED.process_start_time, replica_id = EXCLUDED.replica_id,
      host = EXCLUDED.host, run_dir = EXCLUDED.run_dir, launched_at = now(), deadline = EXCLUDED.deadline`);
}

export async function deleteRunningProcess(db: Db, instanceId: string, pid: number): Promise<void> {
  await db.query(sql.unsafe`DELETE FROM running_processes WHERE instance_id = ${instanceId} AND pid = ${pid}`);
}

/** Instances that hold or are about to hold a process: pending or running. */
export async function countActiveInstances(db: Db): Promise<bigint> {
  return db.oneFirst(sql.type(z.object({ count: z.bigint() }))`
    SELECT count(*) AS count FROM instances WHERE status IN ('pending', 'running')`);
}

export type InstanceOrder = "created_desc" | "created_asc" | "finished_desc" | "finished_asc";

export interface InstanceListQuery {
  tenantId: string;
  status: Status | undefined;
  imageId: string | undefined;
  imageNamePrefix: string;
  createdAfterMs: number | undefined;
  createdBeforeMs: number | undefined;
  finishedAfterMs: number | undefined;
  finishedBeforeMs: number | undefined;
  order: InstanceOrder;
  limit: number;
  offset: number;
  /** Keyset: sort key (timestamp text; null for unfinished) and id of the last row of the previous page. */
  after: { key: string | null; id: string } | undefined;
}

function listFilters(q: InstanceListQuery) {
  const ts = (ms: number) => sql.fragment`to_timestamp(${ms} / 1000.0)`;
  const f = [sql.fragment`tenant_id = ${q.tenantId}`];
  if (q.status !== undefined) f.push(sql.fragment`status = ${q.status}`);
  if (q.imageId !== undefined) f.push(sql.fragment`image_id = ${q.imageId}`);
  if (q.imageNamePrefix !== "") {
    f.push(sql.fragment`image_name LIKE ${q.imageNamePrefix.replace(/[\\%_]/g, (c) => `\\${c}`) + "%"}`);
  }
  if (q.createdAfterMs !== undefined) f.push(sql.fragment`created_at >= ${ts(q.createdAfterMs)}`);
  if (q.createdBeforeMs !== undefined) f.push(sql.fragment`created_at < ${ts(q.createdBeforeMs)}`);
  if (q.finishedAfterMs !== undefined) f.push(sql.fragment`finished_at >= ${ts(q.finishedAfterMs)}`);
  if (q.finishedBeforeMs !== undefined) f.push(sql.fragment`finished_at < ${ts(q.finishedBeforeMs)}`);
  return f;
}

/**
 * One page plus one row (to detect a next page), ordered by the sort column and the id as a
 * tie-breaker so keyset pages are stable. Unfinished instances sort last by finished_at.
 */
export async function listInstances(db: Db, q: InstanceListQuery): Promise<readonly Instance[]> {
  const filters = listFilters(q);
  const desc = q.order.endsWith("desc");
  const column = q.order.startsWith("created") ? sql.identifier(["created_at"]) : sql.identifier(["finished_at"]);
  // Unfinished rows sort last: compare (finished_at IS NULL, finished_at, id) as a tuple.
  const nullsLast = q.order.startsWith("finished");
  if (q.after !== undefined) {
    const key = q.after.key === null ? sql.fragment`NULL::timestamptz` : sql.fragment`${q.after.key}::timestamptz`;
    const cmp = desc ? sql.fragment`<` : sql.fragment`>`;
    if (nullsLast) {
      const afterNull = q.after.key === null;
      filters.push(
        afterNull
          ? sql.fragment`(finished_at IS NULL AND instance_id ${cmp} ${q.after.id})`
          : sql.fragment`(finished_at IS NULL OR (finished_at, instance_id) ${cmp} (${key}, ${q.after.id}))`,
      );
    } else {
      filters.push(sql.fragment`(${column}, instance_id) ${cmp} (${key}, ${q.after.id})`);
    }
  }
  const direction = desc ? sql.fragment`DESC` : sql.fragment`ASC`;
  const orderBy = nullsLast
    ? sql.fragment`(finished_at IS NULL) ASC, finished_at ${direction}, instance_id ${direction}`
    : sql.fragment`${column} ${direction}, instance_id ${direction}`;
  return db.any(sql.type(instanceRow)`
    SELECT ${listColumns} FROM instances
    WHERE ${sql.join(filters, sql.fragment` AND `)}
    ORDER BY ${orderBy}
    LIMIT ${q.limit + 1} OFFSET ${q.offset}`);
}

export async function countInstances(db: Db, q: InstanceListQuery): Promise<bigint> {
  return db.oneFirst(sql.type(z.object({ count: z.bigint() }))`
    SELECT count(*) AS count FROM instances WHERE ${sql.join(listFilters({ ...q, after: undefined }), sql.fragment` AND `)}`);
}

/**
 * Claims due sleepers in one statement: SKIP LOCKED so several environments on one database
 * never claim the same row, and SUSPENDED -> PENDING (wake time cleared) so each wake fires
 * exactly once. A relaunch that dies before registering is then settled as crashed.
 */
export interface ClaimedWake {
  target: LaunchTarget;
  attempt: number;
  wakeAtMs: number;
}

export async function claimDueWakes(db: Db, limit: number): Promise<readonly ClaimedWake[]> {
  const row = launchRow.innerType().extend({ launch_attempts: z.number(), sleep_until: z.number() });
  const rows = await db.any(sql.type(row)`
    WITH due AS (
      SELECT instance_id, sleep_until FROM instances
      WHERE status = 'suspended' AND sleep_until IS NOT NULL AND sleep_until <= now() AND image_id IS NOT NULL
      ORDER BY sleep_until
      LIMIT ${limit}
      FOR UPDATE SKIP LOCKED
    ), u AS (
      UPDATE instances i
      SET status = 'pending', termination_reason = NULL, launch_attempts = i.launch_attempts + 1,
          sleep_until = NULL
      FROM due WHERE i.instance_id = due.instance_id
      RETURNING i.instance_id, i.tenant_id, i.image_id, i.timeout_seconds, i.checkpoint_id, i.env, i.launch_attempts,
        due.sleep_until
    )
    SELECT u.instance_id, u.tenant_id, u.image_id::text, img.runner_type, u.timeout_seconds, u.checkpoint_id, u.env,
      u.launch_attempts, u.sleep_until
    FROM u JOIN images img ON img.image_id = u.image_id`);
  return rows.map((r) => ({ target: launchRow.parse(r), attempt: r.launch_attempts, wakeAtMs: r.sleep_until }));
}

/** PENDING (a failed wake launch) -> SUSPENDED(sleeping) again, due after `delayMs`. */
export async function rescheduleWake(db: Db, instanceId: string, delayMs: number): Promise<void> {
  await db.query(sql.unsafe`
    UPDATE instances
    SET status = 'suspended', termination_reason = 'sleeping', sleep_until = now() + ${delayMs} * interval '1 millisecond'
    WHERE instance_id = ${instanceId} AND status = 'pending'`);
}

/** The earliest wake time of any sleeper, or null. Served by the partial index on sleepers. */
export async function nextWakeAt(db: Db): Promise<number | null> {
  return db.oneFirst(sql.type(z.object({ next: z.number().nullable() }))`
    SELECT min(sleep_until) AS next FROM instances WHERE status = 'suspended' AND sleep_until IS NOT NULL`);
}

const processRow = z
  .object({
    instance_id: z.string(),
    runner: z.enum(["oci", "native"]),
    container_id: z.string(),
    pid: z.number(),
    process_start_time: z.bigint(),
    run_dir: z.string(),
    deadline: z.number(),
  })
  .transform((r) => ({
    instanceId: r.instance_id,
    runner: r.runner,
    containerId: r.container_id,
    pid: r.pid,
    startTime: r.process_start_time,
    runDir: r.run_dir,
    deadlineMs: r.deadline,
  }));

/** Processes a previous run of this replica launched on this host (restart recovery). */
export async function processesOf(db: Db, host: string, replicaId: string) {
  return db.any(sql.type(processRow)`
    SELECT instance_id, runner, container_id, pid, process_start_time, run_dir, deadline
    FROM running_processes WHERE host = ${host} AND replica_id = ${replicaId}`);
}

/** RUNNING instances of this replica whose heartbeat is older than the timeout. */
export async function staleOwnedInstances(db: Db, host: string, replicaId: string, timeoutMs: number): Promise<readonly string[]> {
  return db.anyFirst(sql.type(z.object({ instance_id: z.string() }))`
    SELECT i.instance_id FROM instances i JOIN running_processes p ON p.instance_id = i.instance_id
    WHERE i.status = 'running' AND p.host = ${host} AND p.replica_id = ${replicaId}
      AND i.heartbeat_at < now() - ${timeoutMs} * interval '1 millisecond'`);
}

/**
 * RUNNING -> FAILED(orphaned): silent past the heartbeat timeout with no environment tracking
 * a process for it, or silent past twice the timeout although a (dead) replica still lists
 * one. One guarded statement, safe to run from every replica.
 */
export async function failOrphans(db: Db, timeoutMs: number): Promise<readonly string[]> {
  return db.anyFirst(sql.type(z.object({ instance_id: z.string() }))`
    UPDATE instances i
    SET status = 'failed', termination_reason = 'orphaned', finished_at = now(),
        error = 'no environment process tracks this instance and it stopped sending heartbeats'
    WHERE i.status = 'running'
      AND (
        (i.heartbeat_at < now() - ${timeoutMs} * interval '1 millisecond'
          AND NOT EXISTS (SELECT 1 FROM running_processes p WHERE p.instance_id = i.instance_id))
        OR i.heartbeat_at < now() - ${2 * timeoutMs} * interval '1 millisecond'
      )
    RETURNING i.instance_id`);
}
