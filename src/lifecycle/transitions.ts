import { sql, ForeignKeyIntegrityConstraintViolationError, UniqueIntegrityConstraintViolationError, type DatabasePool, type DatabaseTransactionConnection } from "slonik";
import { z } from "zod";
import { AlreadyExists, NotFound } from "../errors.js";
import { RUNNER_KINDS, type RunnerKind } from "../images/types.js";
import { pendingSignalColumns, pendingSignalSelect } from "./pending-signal.js";
import { binary, statusList, statusLiteral as is } from "./sql.js";
import { ACTIVE, LAUNCHED, SIGNAL_KINDS, STATUSES, type SignalKind, type Status } from "./states.js";

/**
 * Every statement that changes `instances.status`: the edges of SPEC §5, each one guarded
 * UPDATE (or INSERT) whose WHERE clause is the edge's precondition, so concurrent writers
 * (the instance, the monitor, an operator, another replica) cannot clobber each other. Zero
 * rows means the precondition failed. Lifecycle events are written in the same statement
 * through a CTE, so they exist exactly when the transition applied.
 *
 * Runs: every move to PENDING for a (re)launch draws a new token nonce, so only the process
 * launched for it can act as the instance (a stale process of an earlier run is refused), and
 * requires that no process of the instance is still recorded: a relaunch never overlaps the
 * previous run, whose exit settles only its own run (recordRunEnd is guarded by the run id).
 *
 *   (new)                       --insertInstance-->     PENDING
 *   PENDING|RUNNING             --register-->           RUNNING
 *   RUNNING                     --sleep-->              SUSPENDED(sleeping)
 *   RUNNING                     --ackSignal(pause)-->   SUSPENDED(paused)
 *   PENDING|RUNNING|SUSPENDED   --ackSignal(cancel)-->  CANCELLED
 *   RUNNING                     --finish-->             COMPLETED | FAILED(application_error)
 *   PENDING|SUSPENDED           --cancelIdle-->         CANCELLED
 *   SUSPENDED                   --claimForRelaunch-->   PENDING (resume, RESUME signal)
 *   SUSPENDED(due)              --claimDueWakes-->      PENDING (wake)
 *   PENDING(stale)              --claimStalePending-->  PENDING (relaunch after a crash mid-launch)
 *   PENDING                     --rescheduleWake-->     SUSPENDED(sleeping) (wake launch retry)
 *   PENDING                     --returnToSuspended-->  SUSPENDED(paused) (resume launch failed)
 *   PENDING                     --markLaunchFailed-->   FAILED(launch_failed)
 *   PENDING|RUNNING             --recordRunEnd-->       FAILED(crashed|timeout|heartbeat_timeout) | CANCELLED
 *   PENDING|RUNNING|SUSPENDED   --markCancelled-->      CANCELLED (after a stop)
 *   RUNNING(silent)             --failOrphans-->        FAILED(orphaned)
 */
type Db = DatabasePool | DatabaseTransactionConnection;

const status = z.enum(STATUSES);
const signalKind = z.enum(SIGNAL_KINDS);
const bytes = z.instanceof(Buffer);
const env = z.record(z.string());
/** A new token nonce (32 hex characters) for a new run. */
const newNonce = sql.fragment`replace(gen_random_uuid()::text, '-', '')`;
/** No process of this instance is recorded: the previous run has been settled. */
const noRecordedProcess = (instanceId: ReturnType<typeof sql.fragment>) =>
  sql.fragment`NOT EXISTS (SELECT 1 FROM running_processes p WHERE p.instance_id = ${instanceId})`;

/**
 * An instance whose launch failed, as it can be then: PENDING, or RUNNING when the launch's
 * process registered before the launch failed (its launcher died before answering, or its run
 * could not be recorded). That process was killed with the launch, and with no run recorded
 * nothing else runs the instance (a launch starts only from PENDING, with a fresh token).
 */
const launchedNowhere = (instanceId: string) =>
  sql.fragment`instance_id = ${instanceId} AND status IN (${is("pending")}, ${is("running")}) AND ${noRecordedProcess(sql.fragment`${instanceId}`)}`;

/**
 * One instance row as an instance's own calls name it: its id and the nonce its token was
 * minted for. Every statement of those calls is guarded by both, so a token of a deleted
 * instance never acts on a new row with the same id.
 */
export interface InstanceKey {
  instanceId: string;
  nonce: string;
}

/** `instance_id = … AND token_nonce = …`: the row an instance's token names. */
export const rowOf = (key: InstanceKey) => sql.fragment`instance_id = ${key.instanceId} AND token_nonce = ${key.nonce}`;

// ---- reads of the state ----

export async function currentStatus(db: Db, instanceId: string): Promise<Status | null> {
  return db.maybeOneFirst(sql.type(z.object({ status }))`SELECT status FROM instances WHERE instance_id = ${instanceId}`);
}

/** The status of the row the key names; null when that row is gone (or the nonce is another row's). */
export async function ownStatus(db: Db, key: InstanceKey): Promise<Status | null> {
  return db.maybeOneFirst(sql.type(z.object({ status }))`SELECT status FROM instances WHERE ${rowOf(key)}`);
}

/** The nonce instance tokens of this row must name; null when the row is gone. */
export async function tokenNonce(db: Db, instanceId: string): Promise<string | null> {
  return db.maybeOneFirst(sql.type(z.object({ token_nonce: z.string() }))`
    SELECT token_nonce FROM instances WHERE instance_id = ${instanceId}`);
}

/** The status of the tenant's instance; null when missing or another tenant's. */
export async function tenantStatus(db: Db, tenantId: string, instanceId: string): Promise<Status | null> {
  return db.maybeOneFirst(sql.type(z.object({ status }))`
    SELECT status FROM instances WHERE instance_id = ${instanceId} AND tenant_id = ${tenantId}`);
}

/**
 * The earliest wake time of a sleeper claimDueWakes could claim, or null. Served by the partial
 * index on sleepers. One whose process is still recorded (it slept and has not exited yet, here
 * or on another replica) is left out: counted, it would be due and unclaimable, and the
 * scheduler would spin on it. Its run's end sends the `runtara_sleep` hint again (migration
 * 1764300000013), which re-arms the timer.
 */
export async function nextWakeAt(db: Db): Promise<number | null> {
  return db.oneFirst(sql.type(z.object({ next: z.number().nullable() }))`
    SELECT min(sleep_until) AS next FROM instances i
    WHERE status = ${is("suspended")} AND sleep_until IS NOT NULL AND image_id IS NOT NULL AND ${noRecordedProcess(sql.fragment`i.instance_id`)}`);
}

// ---- creation ----

export interface NewInstance {
  /** The replica that launches it (recorded for recovery after its restart). */
  claimedBy: string;
  /** The tenant's quota of PENDING and RUNNING instances; at it, nothing is inserted. */
  maxActiveForTenant: number;
  instanceId: string;
  tenantId: string;
  imageId: string;
  imageName: string;
  input: Uint8Array;
  env: Record<string, string>;
  timeoutSeconds: number;
}

/**
 * (new) -> PENDING, with the image's use time refreshed (to the minute). Returns the row's
 * token nonce (random per row, see ./tokens.ts), or null when the tenant has its quota of
 * PENDING and RUNNING instances already; starts of one tenant are serialized for the check
 * (see migration 1764300000012), so racing starts cannot pass it together.
 */
export async function insertInstance(db: Db, i: NewInstance): Promise<string | null> {
  try {
    return await db.maybeOneFirst(sql.type(z.object({ token_nonce: z.string().nullable() }))`
      SELECT runtara_insert_instance(${i.instanceId}, ${i.tenantId}, ${i.imageId}, ${i.imageName}, ${binary(i.input)},
        ${sql.jsonb(i.env)}, ${i.timeoutSeconds}, ${i.claimedBy}, ${i.maxActiveForTenant},
        ${sql.array(LAUNCHED, "instance_status")}) AS token_nonce`);
  } catch (e) {
    if (e instanceof UniqueIntegrityConstraintViolationError) {
      throw new AlreadyExists(`instance_id: instance ${i.instanceId} already exists`);
    }
    if (e instanceof ForeignKeyIntegrityConstraintViolationError) throw new NotFound(`image ${i.imageId} not found`);
    throw e;
  }
}

// ---- calls from inside the instance (core) ----

/**
 * Liveness, which the heartbeat monitor turns into FAILED(heartbeat_timeout): refreshes the
 * heartbeat of a RUNNING instance when it is older than a second (so a busy instance does not
 * rewrite its row on every call). A fragment, so instance calls refresh it in their own
 * statement (`WITH hb AS (…)`).
 */
export const refreshHeartbeat = (key: InstanceKey) => sql.fragment`
  UPDATE instances SET heartbeat_at = now()
  WHERE ${rowOf(key)} AND status = ${is("running")}
    AND (heartbeat_at IS NULL OR heartbeat_at < now() - interval '1 second')`;

/**
 * PENDING|RUNNING -> RUNNING (first start, or a relaunch: resume and wake move SUSPENDED to
 * PENDING before launching, so a stray old process cannot revive a suspended instance).
 */
export async function register(db: Db, key: InstanceKey, checkpointId: string) {
  const { instanceId } = key;
  return db.maybeOne(sql.type(z.object({ status, tenant_id: z.string(), input: bytes.nullable() }).merge(pendingSignalColumns))`
    WITH u AS (
      UPDATE instances
      SET status = ${is("running")}, started_at = now(), heartbeat_at = now(), finished_at = NULL,
          termination_reason = NULL, sleep_until = NULL, exit_code = NULL, launch_attempts = 0, pending_since = NULL
      WHERE ${rowOf(key)} AND status IN ${statusList(LAUNCHED)}
      RETURNING status, tenant_id, input
    ), e AS (
      INSERT INTO instance_events (instance_id, event_type, checkpoint_id)
      SELECT ${instanceId}, 'registered', ${checkpointId} FROM u
    )
    SELECT u.status, u.tenant_id, u.input, ${pendingSignalSelect(instanceId)} FROM u`);
}

/**
 * RUNNING -> SUSPENDED(sleeping) with the checkpoint (first write wins) and wake time. A wake
 * time already past is stored as now (due at once): the same wake, and a value every reader
 * can represent (timestamps before 1000 AD do not survive JavaScript's date parsing).
 */
export async function sleep(db: Db, key: InstanceKey, checkpointId: string, state: Uint8Array, wakeAtMs: number) {
  const { instanceId } = key;
  return db.maybeOne(sql.type(z.object({ sleep_until: z.number() }))`
    WITH u AS (
      UPDATE instances
      SET status = ${is("suspended")}, termination_reason = 'sleeping', sleep_until = GREATEST(to_timestamp(${wakeAtMs} / 1000.0), now()),
          checkpoint_id = ${checkpointId}, heartbeat_at = now(), finished_at = NULL
      WHERE ${rowOf(key)} AND status = ${is("running")}
        AND NOT EXISTS (SELECT 1 FROM pending_signals WHERE instance_id = ${instanceId} AND signal_type = 'cancel')
      RETURNING instance_id, sleep_until
    ), c AS (
      INSERT INTO checkpoints (instance_id, checkpoint_id, state)
      SELECT instance_id, ${checkpointId}, ${binary(state)} FROM u
      ON CONFLICT (instance_id, checkpoint_id) DO NOTHING
    ), e AS (
      INSERT INTO instance_events (instance_id, event_type, checkpoint_id, payload)
      SELECT instance_id, 'sleep', ${checkpointId}, convert_to(json_build_object('wake_at_ms', ${wakeAtMs}::bigint)::text, 'UTF8') FROM u
    )
    SELECT sleep_until FROM u`);
}

const acknowledged: Record<SignalKind, { set: ReturnType<typeof sql.fragment>; from: readonly Status[] }> = {
  cancel: {
    set: sql.fragment`status = ${is("cancelled")}, termination_reason = 'cancelled', finished_at = now(), sleep_until = NULL`,
    from: ACTIVE,
  },
  pause: { set: sql.fragment`status = ${is("suspended")}, termination_reason = 'paused', sleep_until = NULL`, from: ["running"] },
  resume: { set: sql.fragment`status = status`, from: ACTIVE },
};

/**
 * Acknowledges the pending signal of exactly this type and applies its transition in one
 * statement: CANCEL -> CANCELLED, PAUSE -> SUSPENDED(paused), RESUME -> no change.
 */
export async function ackSignal(db: Db, key: InstanceKey, kind: SignalKind) {
  const { instanceId } = key;
  return db.one(sql.type(z.object({ acked: z.boolean(), status: status.nullable(), pending: signalKind.nullable() }))`
    WITH s AS (
      DELETE FROM pending_signals WHERE instance_id = ${instanceId} AND signal_type = ${kind}
        AND EXISTS (SELECT 1 FROM instances WHERE ${rowOf(key)})
      RETURNING instance_id
    ), u AS (
      UPDATE instances SET ${acknowledged[kind].set}
      WHERE instance_id IN (SELECT instance_id FROM s) AND status IN ${statusList(acknowledged[kind].from)}
      RETURNING status
    ), e AS (
      INSERT INTO instance_events (instance_id, event_type, subtype)
      SELECT instance_id, 'acknowledged', ${kind} FROM s
    )
    SELECT EXISTS (SELECT 1 FROM s) AS acked,
      COALESCE((SELECT status FROM u), (SELECT status FROM instances WHERE ${rowOf(key)})) AS status,
      (SELECT signal_type FROM pending_signals WHERE instance_id = ${instanceId}) AS pending`);
}

/** RUNNING -> COMPLETED / FAILED. Returns the status afterwards and whether it applied. */
export async function finish(
  db: Db,
  key: InstanceKey,
  outcome: { kind: "completed"; output: Uint8Array | null } | { kind: "failed"; error: string },
) {
  const set =
    outcome.kind === "completed"
      ? sql.fragment`status = ${is("completed")}, termination_reason = 'completed', error = NULL,
          output = ${outcome.output === null ? null : binary(outcome.output)}`
      : sql.fragment`status = ${is("failed")}, termination_reason = 'application_error', error = ${outcome.error}`;
  return db.one(sql.type(z.object({ applied: z.boolean(), status: status.nullable() }))`
    WITH u AS (
      UPDATE instances SET ${set}, finished_at = now(), heartbeat_at = now(), sleep_until = NULL
      WHERE ${rowOf(key)} AND status = ${is("running")}
      RETURNING instance_id, status
    ), e AS (
      INSERT INTO instance_events (instance_id, event_type) SELECT instance_id, ${outcome.kind} FROM u
    )
    SELECT EXISTS (SELECT 1 FROM u) AS applied,
      COALESCE((SELECT status FROM u), (SELECT status FROM instances WHERE ${rowOf(key)})) AS status`);
}

// ---- operator and environment ----

/** PENDING|SUSPENDED -> CANCELLED at once (there is no process to acknowledge a cancel). */
export async function cancelIdle(db: Db, tenantId: string, instanceId: string): Promise<boolean> {
  const row = await db.maybeOne(sql.unsafe`
    WITH u AS (
      UPDATE instances
      SET status = ${is("cancelled")}, termination_reason = 'cancelled', finished_at = now(), sleep_until = NULL
      WHERE instance_id = ${instanceId} AND tenant_id = ${tenantId} AND status IN ${statusList(["pending", "suspended"])}
      RETURNING instance_id
    ), d AS (
      DELETE FROM pending_signals WHERE instance_id IN (SELECT instance_id FROM u)
    ), e AS (
      INSERT INTO instance_events (instance_id, event_type, subtype) SELECT instance_id, 'signal', 'cancel' FROM u
    )
    SELECT 1 FROM u`);
  return row !== null;
}

/** What a launch needs, read from the instance and its image in the claiming statement. */
export interface LaunchTarget {
  instanceId: string;
  tenantId: string;
  imageId: string;
  runnerType: RunnerKind;
  timeoutSeconds: number;
  checkpointId: string | null;
  env: Record<string, string>;
  /** The row's token nonce: the instance's token is minted for it. */
  tokenNonce: string;
  /** The image's recorded size: a binary of another size on disk is damaged, not launched. */
  imageSizeBytes: bigint;
  /** A static binary, or an unpacked OCI archive (whose config makes the process). */
  imageFormat: "binary" | "oci_archive";
}

const launchRow = z
  .object({
    instance_id: z.string(),
    tenant_id: z.string(),
    image_id: z.string(),
    runner_type: z.enum(RUNNER_KINDS),
    timeout_seconds: z.number(),
    checkpoint_id: z.string().nullable(),
    env,
    token_nonce: z.string(),
    size_bytes: z.bigint(),
    format: z.enum(["binary", "oci_archive"]),
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
      tokenNonce: r.token_nonce,
      imageSizeBytes: r.size_bytes,
      imageFormat: r.format,
    }),
  );

/**
 * SUSPENDED -> PENDING for a relaunch (resume, RESUME signal). Going through PENDING means a
 * relaunched process that dies before registering is settled as crashed instead of staying
 * SUSPENDED forever. Returns what the launch needs, or null when not SUSPENDED or when the
 * previous run's process is still recorded (exiting: see `previousRunExiting`).
 */
export async function claimForRelaunch(db: Db, tenantId: string, instanceId: string, replicaId: string): Promise<LaunchTarget | null> {
  return db.maybeOne(sql.type(launchRow)`
    WITH u AS (
      UPDATE instances SET status = ${is("pending")}, termination_reason = NULL, sleep_until = NULL, error = NULL,
        token_nonce = ${newNonce}, pending_since = now(), claimed_by = ${replicaId}
      WHERE instance_id = ${instanceId} AND tenant_id = ${tenantId} AND status = ${is("suspended")} AND image_id IS NOT NULL
        AND ${noRecordedProcess(sql.fragment`${instanceId}`)}
      RETURNING instance_id, tenant_id, image_id, timeout_seconds, checkpoint_id, env, token_nonce
    )
    SELECT u.instance_id, u.tenant_id, u.image_id::text, i.runner_type, u.timeout_seconds, u.checkpoint_id, u.env, u.token_nonce,
      i.size_bytes, i.format
    FROM u JOIN images i ON i.image_id = u.image_id`);
}

export interface ClaimedWake {
  target: LaunchTarget;
  attempt: number;
  wakeAtMs: number;
}

/**
 * Claims due sleepers in one statement: SKIP LOCKED so several environments on one database
 * never claim the same row, and SUSPENDED -> PENDING (wake time cleared) so each wake fires
 * exactly once. A relaunch that dies before registering is then settled as crashed.
 */
export async function claimDueWakes(db: Db, limit: number, replicaId: string): Promise<readonly ClaimedWake[]> {
  const row = launchRow.innerType().extend({ launch_attempts: z.number(), sleep_until: z.number() });
  const rows = await db.any(sql.type(row)`
    WITH due AS (
      SELECT instance_id, sleep_until FROM instances i
      WHERE status = ${is("suspended")} AND sleep_until IS NOT NULL AND sleep_until <= now() AND image_id IS NOT NULL
        AND ${noRecordedProcess(sql.fragment`i.instance_id`)}
      ORDER BY sleep_until
      LIMIT ${limit}
      FOR UPDATE SKIP LOCKED
    ), u AS (
      UPDATE instances i
      SET status = ${is("pending")}, termination_reason = NULL, launch_attempts = i.launch_attempts + 1,
          sleep_until = NULL, token_nonce = ${newNonce}, pending_since = now(), claimed_by = ${replicaId}
      FROM due WHERE i.instance_id = due.instance_id
      RETURNING i.instance_id, i.tenant_id, i.image_id, i.timeout_seconds, i.checkpoint_id, i.env, i.token_nonce,
        i.launch_attempts, due.sleep_until
    )
    SELECT u.instance_id, u.tenant_id, u.image_id::text, img.runner_type, u.timeout_seconds, u.checkpoint_id, u.env,
      u.token_nonce, img.size_bytes, img.format, u.launch_attempts, u.sleep_until
    FROM u JOIN images img ON img.image_id = u.image_id`);
  return rows.map((r) => ({ target: launchRow.parse(r), attempt: r.launch_attempts, wakeAtMs: r.sleep_until }));
}

/**
 * Claims PENDING instances nobody is launching, with no recorded process: those pending for
 * longer than `olderThanMs` (the environment that claimed them died before its launch was
 * recorded), or with `ownClaimsOf`, those this replica claimed before it restarted (nothing
 * of its own is in flight at startup). The claim is refreshed (time, attempt, owner, a new
 * token nonce, so a process of the lost launch cannot act) in the same statement; SKIP
 * LOCKED makes each claim one replica's.
 */
export async function claimStalePending(
  db: Db,
  q: { olderThanMs: number; ownClaimsOf?: string; limit: number; replicaId: string },
): Promise<readonly ClaimedWake[]> {
  const stale = sql.fragment`pending_since < now() - ${q.olderThanMs} * interval '1 millisecond'`;
  const which = q.ownClaimsOf === undefined ? stale : sql.fragment`(${stale} OR claimed_by = ${q.ownClaimsOf})`;
  const row = launchRow.innerType().extend({ launch_attempts: z.number() });
  const rows = await db.any(sql.type(row)`
    WITH stale AS (
      SELECT instance_id FROM instances i
      WHERE status = ${is("pending")} AND ${which}
        AND image_id IS NOT NULL AND ${noRecordedProcess(sql.fragment`i.instance_id`)}
      ORDER BY pending_since
      LIMIT ${q.limit}
      FOR UPDATE SKIP LOCKED
    ), u AS (
      UPDATE instances i
      SET launch_attempts = i.launch_attempts + 1, token_nonce = ${newNonce}, pending_since = now(), claimed_by = ${q.replicaId}
      FROM stale WHERE i.instance_id = stale.instance_id AND i.status = ${is("pending")}
      RETURNING i.instance_id, i.tenant_id, i.image_id, i.timeout_seconds, i.checkpoint_id, i.env, i.token_nonce, i.launch_attempts
    )
    SELECT u.instance_id, u.tenant_id, u.image_id::text, img.runner_type, u.timeout_seconds, u.checkpoint_id, u.env,
      u.token_nonce, img.size_bytes, img.format, u.launch_attempts
    FROM u JOIN images img ON img.image_id = u.image_id`);
  return rows.map((r) => ({ target: launchRow.parse(r), attempt: r.launch_attempts, wakeAtMs: 0 }));
}

/**
 * PENDING (see launchedNowhere) -> SUSPENDED(paused) after a relaunch (resume, RESUME) could
 * not start: the instance stays durable and resumable, with the launch error recorded.
 */
export async function returnToSuspended(db: Db, instanceId: string, error: string): Promise<boolean> {
  const row = await db.maybeOne(sql.unsafe`
    UPDATE instances SET status = ${is("suspended")}, termination_reason = 'paused', error = ${error}, pending_since = NULL
    WHERE ${launchedNowhere(instanceId)}
    RETURNING 1`);
  return row !== null;
}

/** PENDING (a failed wake launch; see launchedNowhere) -> SUSPENDED(sleeping) again, due after `delayMs`. */
export async function rescheduleWake(db: Db, instanceId: string, delayMs: number): Promise<void> {
  await db.query(sql.unsafe`
    UPDATE instances
    SET status = ${is("suspended")}, termination_reason = 'sleeping', sleep_until = now() + ${delayMs} * interval '1 millisecond',
        pending_since = NULL
    WHERE ${launchedNowhere(instanceId)}`);
}

/** PENDING (see launchedNowhere) -> FAILED(launch_failed) when the process could not be started. */
export async function markLaunchFailed(db: Db, instanceId: string, error: string): Promise<void> {
  await db.query(sql.unsafe`
    UPDATE instances SET status = ${is("failed")}, termination_reason = 'launch_failed', error = ${error}, finished_at = now(),
      pending_since = NULL
    WHERE ${launchedNowhere(instanceId)}`);
}

/** How a run ended, as the supervisor saw it. */
export interface RunOutcome {
  exitCode: number | null;
  /** The signal that ended it, when known (a native child; SIGXFSZ past the file-size limit, say). */
  signal: string | null;
  stderrTail: string;
  memoryPeakBytes: bigint | undefined;
  cpuUsageUsec: bigint | undefined;
  /** The verdict if the instance had not settled itself: why the environment ended it. */
  verdict: "crashed" | "timeout" | "cancelled" | "heartbeat_timeout";
}

function exitDescription(o: RunOutcome): string {
  if (o.exitCode !== null) return `code ${o.exitCode}`;
  return o.signal !== null ? `killed by ${o.signal}` : "killed by a signal, or adopted after a restart so its status is unknown";
}

/**
 * Records how run `runId` ended (exit code, stderr tail, metrics) and, in the same statement,
 * removes its process row and settles an instance that had not settled itself: PENDING or
 * RUNNING becomes FAILED (crashed / timeout / heartbeat_timeout) or CANCELLED (stopped). An
 * instance that completed, failed, slept or paused on its own keeps its status. Only that
 * run's exit counts: once its row is gone (settled before, or another run's), nothing is
 * written and the result is null.
 */
export async function recordRunEnd(db: Db, instanceId: string, runId: string, o: RunOutcome): Promise<Status | null> {
  const active = sql.fragment`status IN ${statusList(LAUNCHED)}`;
  const finalStatus = o.verdict === "cancelled" ? is("cancelled") : is("failed");
  const message =
    o.verdict === "crashed"
      ? `process exited (${exitDescription(o)}) without reporting a result`
      : o.verdict === "timeout"
        ? "execution timed out"
        : o.verdict === "heartbeat_timeout"
          ? "no heartbeat within the heartbeat timeout"
          : null;
  return db.maybeOneFirst(sql.type(z.object({ status }))`
    WITH run AS (
      DELETE FROM running_processes WHERE instance_id = ${instanceId} AND run_id = ${runId} RETURNING instance_id
    )
    UPDATE instances SET
      exit_code = ${o.exitCode},
      stderr = ${o.stderrTail},
      memory_peak_bytes = COALESCE(${o.memoryPeakBytes ?? null}::bigint, memory_peak_bytes),
      cpu_usage_usec = COALESCE(${o.cpuUsageUsec ?? null}::bigint, cpu_usage_usec),
      termination_reason = CASE WHEN ${active} THEN ${o.verdict}::termination_reason ELSE termination_reason END,
      error = CASE WHEN ${active} THEN COALESCE(${message}, error) ELSE error END,
      finished_at = CASE WHEN ${active} THEN now() ELSE finished_at END,
      status = CASE WHEN ${active} THEN ${finalStatus}::instance_status ELSE status END,
      pending_since = CASE WHEN ${active} THEN NULL ELSE pending_since END
    WHERE instance_id IN (SELECT instance_id FROM run)
    RETURNING status`);
}

/** Forces CANCELLED after a stop killed the process (unless it settled first). */
export async function markCancelled(db: Db, tenantId: string, instanceId: string): Promise<Status | null> {
  return db.maybeOneFirst(sql.type(z.object({ status }))`
    WITH u AS (
      UPDATE instances SET status = ${is("cancelled")}, termination_reason = 'cancelled', finished_at = now(), sleep_until = NULL,
        pending_since = NULL
      WHERE instance_id = ${instanceId} AND tenant_id = ${tenantId} AND status IN ${statusList(ACTIVE)}
      RETURNING status
    )
    SELECT COALESCE((SELECT status FROM u), (SELECT status FROM instances WHERE instance_id = ${instanceId} AND tenant_id = ${tenantId})) AS status`);
}

/**
 * RUNNING -> FAILED(orphaned): silent past the heartbeat timeout with no environment tracking
 * a process for it, or silent past twice the timeout although a (dead) replica still lists
 * one. One guarded statement, safe to run from every replica.
 */
export async function failOrphans(db: Db, timeoutMs: number): Promise<readonly string[]> {
  return db.anyFirst(sql.type(z.object({ instance_id: z.string() }))`
    UPDATE instances i
    SET status = ${is("failed")}, termination_reason = 'orphaned', finished_at = now(),
        error = 'no environment process tracks this instance and it stopped sending heartbeats'
    WHERE i.status = ${is("running")}
      AND (
        (i.heartbeat_at < now() - ${timeoutMs} * interval '1 millisecond'
          AND NOT EXISTS (SELECT 1 FROM running_processes p WHERE p.instance_id = i.instance_id))
        OR i.heartbeat_at < now() - ${2 * timeoutMs} * interval '1 millisecond'
      )
    RETURNING i.instance_id`);
}
