import { sql, type DatabasePool, type DatabaseTransactionConnection } from "slonik";
import { z } from "zod";
import { cappedCount } from "../db/count.js";
import { likePrefix } from "../db/like.js";
import { LAUNCHED, STATUSES, TERMINATION_REASONS, statusList, statusLiteral as is, type Status, type TerminationReason } from "../lifecycle/index.js";
import type { Instance } from "./types.js";

/**
 * The environment's reads of instances and its bookkeeping of launched processes. Status
 * changes are not here: every one is a guarded statement in src/lifecycle/transitions.ts.
 */
type Db = DatabasePool | DatabaseTransactionConnection;

const status = z.enum(STATUSES);
const reason = z.enum(TERMINATION_REASONS);
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
/** A watch's last message: the outcome (output, stderr), not the input the caller sent. */
const outcomeColumns = sql.fragment`instance_id, tenant_id, image_id::text, image_name, status, termination_reason, exit_code,
  checkpoint_id, created_at, started_at, finished_at, heartbeat_at, sleep_until, NULL::bytea AS input, output, error, stderr,
  memory_peak_bytes, cpu_usage_usec, timeout_seconds, env, ${keyColumns}`;
/** Lists leave the large columns out. */
const listColumns = sql.fragment`instance_id, tenant_id, image_id::text, image_name, status, termination_reason, exit_code,
  checkpoint_id, created_at, started_at, finished_at, heartbeat_at, sleep_until, NULL::bytea AS input, NULL::bytea AS output,
  error, NULL::text AS stderr, memory_peak_bytes, cpu_usage_usec, timeout_seconds, env, ${keyColumns}`;

/**
 * The instance without its large columns (input, output, stderr) and the id of its latest
 * transition: where a watch starts.
 */
export async function findInstanceSnapshot(db: Db, tenantId: string, instanceId: string): Promise<{ instance: Instance; transitionId: bigint } | null> {
  const row = await db.maybeOne(sql.type(z.object({ transition_id: z.bigint().nullable() }).passthrough())`
    SELECT ${listColumns}, (SELECT max(id) FROM instance_transitions t WHERE t.instance_id = ${instanceId}) AS transition_id
    FROM instances WHERE instance_id = ${instanceId} AND tenant_id = ${tenantId}`);
  if (row === null) return null;
  return { instance: instanceRow.parse(row), transitionId: row.transition_id ?? 0n };
}

export interface Transition {
  id: bigint;
  status: Status;
  terminationReason: TerminationReason | null;
  atMs: number;
}

const transitionRow = z
  .object({ id: z.bigint(), status, termination_reason: reason.nullable(), at: z.number() })
  .transform((r): Transition => ({ id: r.id, status: r.status, terminationReason: r.termination_reason, atMs: r.at }));

/** Transitions of the instance after `afterId`, oldest first. */
export async function transitionsAfter(db: Db, instanceId: string, afterId: bigint, limit: number): Promise<readonly Transition[]> {
  return db.any(sql.type(transitionRow)`
    SELECT id, status, termination_reason, at FROM instance_transitions
    WHERE instance_id = ${instanceId} AND id > ${afterId} ORDER BY id LIMIT ${limit}`);
}

/**
 * The last `limit` transitions of the tenant's instance, oldest first, and whether older ones
 * were left out; null when the tenant has no such instance (every instance has at least the
 * transition of its insert).
 */
export async function transitionHistory(db: Db, tenantId: string, instanceId: string, limit: number): Promise<{ transitions: readonly Transition[]; truncated: boolean } | null> {
  const rows = await db.any(sql.type(transitionRow)`
    SELECT t.id, t.status, t.termination_reason, t.at FROM instance_transitions t
    JOIN instances i ON i.instance_id = t.instance_id AND i.tenant_id = ${tenantId}
    WHERE t.instance_id = ${instanceId} ORDER BY t.id DESC LIMIT ${limit + 1}`);
  if (rows.length === 0) return null;
  return { transitions: rows.slice(0, limit).reverse(), truncated: rows.length > limit };
}

/** The id of the instance's latest transition (0 when it has none). */
export async function latestTransitionId(db: Db, instanceId: string): Promise<bigint> {
  return db.oneFirst(sql.type(z.object({ id: z.bigint() }))`
    SELECT COALESCE(max(id), 0)::bigint AS id FROM instance_transitions WHERE instance_id = ${instanceId}`);
}

/** The instance with its outcome but without its input. */
export async function findInstanceOutcome(db: Db, instanceId: string): Promise<Instance | null> {
  return db.maybeOne(sql.type(instanceRow)`SELECT ${outcomeColumns} FROM instances WHERE instance_id = ${instanceId}`);
}

export async function findInstance(db: Db, tenantId: string, instanceId: string): Promise<Instance | null> {
  return db.maybeOne(sql.type(instanceRow)`
    SELECT ${fullColumns} FROM instances WHERE instance_id = ${instanceId} AND tenant_id = ${tenantId}`);
}

export interface ProcessRecord {
  instanceId: string;
  /** This launch's id: only its exit settles the instance. */
  runId: string;
  /** The host's boot id at launch: a row of another boot is never adopted. */
  bootId: string;
  runner: "oci" | "native";
  containerId: string;
  pid: number;
  processStartTime: bigint;
  replicaId: string;
  host: string;
  runDir: string;
  deadlineMs: number;
}

/** Whether a run of the instance is recorded (its process has not been settled yet). */
export async function runRecorded(db: Db, instanceId: string): Promise<boolean> {
  return db.exists(sql.unsafe`SELECT 1 FROM running_processes WHERE instance_id = ${instanceId}`);
}

/**
 * Records a launched process. False when a process of the instance is already recorded
 * (claims refuse while one is, so this means two launches raced; the caller stops its own).
 */
export async function insertRunningProcess(db: Db, p: ProcessRecord): Promise<{ recorded: boolean; status: Status | null }> {
  // The instance's status comes with the write (a caller answers with it): as of this statement.
  return db.one(sql.type(z.object({ recorded: z.boolean(), status: status.nullable() }))`
    WITH p AS (
      INSERT INTO running_processes (instance_id, run_id, boot_id, runner, container_id, pid, process_start_time, replica_id, host, run_dir, deadline)
      VALUES (${p.instanceId}, ${p.runId}, ${p.bootId}, ${p.runner}, ${p.containerId}, ${p.pid}, ${p.processStartTime}, ${p.replicaId},
              ${p.host}, ${p.runDir}, to_timestamp(${p.deadlineMs} / 1000.0))
      ON CONFLICT (instance_id) DO NOTHING
      RETURNING 1)
    SELECT EXISTS (SELECT 1 FROM p) AS recorded, (SELECT status FROM instances WHERE instance_id = ${p.instanceId}) AS status`);
}

/** The pids of native processes recorded in this boot of this host (a boot id is unique), by any replica. */
export async function recordedNativePids(db: Db, bootId: string): Promise<ReadonlySet<number>> {
  const pids = await db.anyFirst(sql.type(z.object({ pid: z.number() }))`
    SELECT pid FROM running_processes WHERE runner = 'native' AND boot_id = ${bootId}`);
  return new Set(pids);
}

/** Instances that hold or are about to hold a process: pending or running. */
export async function countActiveInstances(db: Db, tenantId: string | undefined): Promise<bigint> {
  const tenant = tenantId === undefined ? sql.fragment`` : sql.fragment` AND tenant_id = ${tenantId}`;
  return db.oneFirst(sql.type(z.object({ count: z.bigint() }))`
    ${cappedCount(sql.fragment`instances WHERE status IN ${statusList(LAUNCHED)}${tenant}`)}`);
}

/** Instances by status across tenants (the metrics' gauge): one grouped scan. */
export async function countInstancesByStatus(db: Db): Promise<ReadonlyMap<string, number>> {
  const rows = await db.any(sql.type(z.object({ status: z.string(), count: z.number() }))`
    SELECT status::text AS status, count(*)::int AS count FROM instances GROUP BY status`);
  return new Map(rows.map((r) => [r.status, r.count]));
}

export type InstanceOrder = "created_desc" | "created_asc" | "finished_desc" | "finished_asc";

export interface InstanceListQuery {
  tenantId: string;
  status: Status | undefined;
  imageId: string | undefined;
  imageNamePrefix: string;
  /** Absent or "" for any id. */
  instanceIdPrefix?: string;
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
  if (q.imageNamePrefix !== "") f.push(sql.fragment`image_name LIKE ${likePrefix(q.imageNamePrefix)}`);
  // instance_id is COLLATE "C": the primary key's index serves a LIKE 'prefix%'.
  if (q.instanceIdPrefix) f.push(sql.fragment`instance_id LIKE ${likePrefix(q.instanceIdPrefix)}`);
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
    ${cappedCount(sql.fragment`instances WHERE ${sql.join(listFilters({ ...q, after: undefined }), sql.fragment` AND `)}`)}`);
}

const processRow = z
  .object({
    instance_id: z.string(),
    run_id: z.string(),
    boot_id: z.string(),
    runner: z.enum(["oci", "native"]),
    container_id: z.string(),
    pid: z.number(),
    process_start_time: z.bigint(),
    run_dir: z.string(),
    deadline: z.number(),
  })
  .transform((r) => ({
    instanceId: r.instance_id,
    runId: r.run_id,
    bootId: r.boot_id,
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
    SELECT instance_id, run_id::text, boot_id, runner, container_id, pid, process_start_time, run_dir, deadline
    FROM running_processes WHERE host = ${host} AND replica_id = ${replicaId}`);
}

/**
 * Of these instances, those no run accounts for: no process recorded by any replica, and not
 * PENDING under another replica's claim (which may be between its launch and its record).
 */
export async function instancesWithoutRun(db: Db, instanceIds: readonly string[], replicaId: string): Promise<readonly string[]> {
  if (instanceIds.length === 0) return [];
  return db.anyFirst(sql.type(z.object({ instance_id: z.string() }))`
    SELECT id AS instance_id FROM unnest(${sql.array(instanceIds, "text")}) AS ids(id)
    WHERE NOT EXISTS (SELECT 1 FROM running_processes p WHERE p.instance_id = ids.id)
      AND NOT EXISTS (
        SELECT 1 FROM instances i
        WHERE i.instance_id = ids.id AND i.status = ${is("pending")} AND i.claimed_by IS DISTINCT FROM ${replicaId}
      )`);
}

/** RUNNING instances of this replica whose heartbeat is older than the timeout. */
export async function staleOwnedInstances(db: Db, host: string, replicaId: string, timeoutMs: number): Promise<readonly string[]> {
  return db.anyFirst(sql.type(z.object({ instance_id: z.string() }))`
    SELECT i.instance_id FROM instances i JOIN running_processes p ON p.instance_id = i.instance_id
    WHERE i.status = ${is("running")} AND p.host = ${host} AND p.replica_id = ${replicaId}
      AND i.heartbeat_at < now() - ${timeoutMs} * interval '1 millisecond'`);
}
