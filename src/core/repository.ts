import { sql, type DatabasePool, type DatabaseTransactionConnection } from "slonik";
import { z } from "zod";
import { cappedCount } from "../db/count.js";
import {
  ACTIVE,
  SIGNAL_KINDS,
  binary,
  STATUSES,
  pendingSignalColumns,
  pendingSignalSelect,
  refreshHeartbeat,
  rowOf,
  statusList,
  toPendingSignal,
  type CheckpointSummary,
  type CustomSignal,
  type InstanceEvent,
  type InstanceKey,
  type PendingSignal,
  type SignalKind,
} from "../lifecycle/index.js";

/**
 * Core's SQL apart from status changes (those are in src/lifecycle/transitions.ts): heartbeats,
 * checkpoints, signals, events and the read views, one exported function per statement.
 */
type Db = DatabasePool | DatabaseTransactionConnection;

const status = z.enum(STATUSES);
const signalKind = z.enum(SIGNAL_KINDS);
const bytes = z.instanceof(Buffer);

/** Refreshes the heartbeat (src/lifecycle) and returns status, tenant and input. */
export async function touch(db: Db, key: InstanceKey) {
  return db.maybeOne(sql.type(z.object({ status, tenant_id: z.string(), input: bytes.nullable() }))`
    WITH hb AS (${refreshHeartbeat(key)})
    SELECT status, tenant_id, input FROM instances WHERE ${rowOf(key)}`);
}

/** Status and sleep of the row the key names (null when gone): what a refused Sleep is checked against. */
export async function ownSleep(db: Db, key: InstanceKey) {
  return db.maybeOne(sql.type(z.object({ status, termination_reason: z.string().nullable(), checkpoint_id: z.string().nullable(), sleep_until: z.number().nullable() }))`
    SELECT status, termination_reason, checkpoint_id, sleep_until FROM instances WHERE ${rowOf(key)}`);
}

export async function findCheckpoint(db: Db, instanceId: string, checkpointId: string) {
  return db.maybeOne(sql.type(z.object({ state: bytes, created_at: z.number(), size_bytes: z.bigint() }))`
    SELECT state, created_at, octet_length(state)::bigint AS size_bytes FROM checkpoints
    WHERE instance_id = ${instanceId} AND checkpoint_id = ${checkpointId}`);
}

const savedCheckpointRow = z
  .object({ running: z.boolean(), full: z.boolean(), inserted: z.boolean(), stored: bytes.nullable(), status: status.nullable() })
  .merge(pendingSignalColumns)
  .merge(z.object({ custom_payload: bytes.nullable(), custom_created_at: z.number().nullable() }));

/**
 * First write wins, atomically: inserts unless the id exists (ON CONFLICT DO NOTHING) and,
 * in the same statement, records it as the instance's latest checkpoint, refreshes the
 * heartbeat and returns pending signals. `stored` is the existing state when the insert did
 * nothing; it can be null when a concurrent writer committed after this statement's
 * snapshot, and the caller then re-reads. `running` false: the instance is not RUNNING (or
 * not this token's row); `full`: it has saved `maxCheckpoints` already and this id is new.
 */
export async function saveCheckpoint(db: Db, key: InstanceKey, checkpointId: string, state: Uint8Array, maxCheckpoints: number) {
  // The statement is a function (migration 10) so that PostgreSQL keeps its plan; the row
  // schema is built once, not per call (building it cost several times parsing a row).
  return db.one(sql.type(savedCheckpointRow)`
    SELECT * FROM runtara_save_checkpoint(${key.instanceId}, ${key.nonce}, ${checkpointId},
      ${binary(state)}, ${maxCheckpoints})`);
}

export async function pendingSignal(db: Db, instanceId: string): Promise<PendingSignal | undefined> {
  const row = await db.one(sql.type(pendingSignalColumns)`SELECT ${pendingSignalSelect(instanceId)}`);
  return toPendingSignal(row);
}

const customRow = z
  .object({ checkpoint_id: z.string(), payload: bytes, created_at: z.number() })
  .transform((r): CustomSignal => ({ checkpointId: r.checkpoint_id, payload: r.payload, createdAtMs: r.created_at }));

export async function customSignal(db: Db, instanceId: string, checkpointId: string): Promise<CustomSignal | null> {
  return db.maybeOne(sql.type(customRow)`
    SELECT checkpoint_id, payload, created_at FROM custom_signals
    WHERE instance_id = ${instanceId} AND checkpoint_id = ${checkpointId}`);
}

/** Where a signal watch has read up to: a custom signal's time (µs) and checkpoint id. */
export interface CustomSignalCursor {
  createdUs: bigint;
  checkpointId: string;
}

const customCreatedUs = sql.fragment`(extract(epoch FROM created_at) * 1000000)::bigint`;

/**
 * The instance's custom signals after `after` (all when null), oldest first, at most `limit`:
 * a watch reads only what is new on each wake-up. A signal sent again to the same wait point
 * gets a new time, so it comes again.
 */
const customSignalsPage = (instanceId: string, after: CustomSignalCursor | null, limit: number) => {
  const since = after === null ? sql.fragment`TRUE` : sql.fragment`(${customCreatedUs}, checkpoint_id) > (${after.createdUs}::bigint, ${after.checkpointId})`;
  return sql.fragment`
    SELECT checkpoint_id, payload, created_at, ${customCreatedUs} AS created_us FROM custom_signals
    WHERE instance_id = ${instanceId} AND ${since}
    ORDER BY ${customCreatedUs}, checkpoint_id LIMIT ${limit}`;
};

const customPageRow = z.object({ checkpoint_id: z.string(), payload: bytes, created_at: z.number(), created_us: z.bigint() });
type CustomPageRow = z.infer<typeof customPageRow>;
const toCustomPageEntry = (r: CustomPageRow) => ({ signal: { checkpointId: r.checkpoint_id, payload: r.payload, createdAtMs: r.created_at } as CustomSignal, createdUs: r.created_us });

export async function customSignalsAfter(db: Db, instanceId: string, after: CustomSignalCursor | null, limit: number) {
  const rows = await db.any(sql.type(customPageRow)`${customSignalsPage(instanceId, after, limit)}`);
  return rows.map(toCustomPageEntry);
}

/**
 * What a signal watch needs at each wake-up, in one statement: the instance's status (null:
 * gone), its pending signal and the first `limit` custom signals after `after`.
 */
export async function signalSnapshot(db: Db, instanceId: string, after: CustomSignalCursor | null, limit: number) {
  const rows = await db.any(sql.type(
    z
      .object({ status, checkpoint_id: z.string().nullable(), payload: bytes.nullable(), created_at: z.number().nullable(), created_us: z.bigint().nullable() })
      .merge(pendingSignalColumns),
  )`
    SELECT i.status, ${pendingSignalSelect(instanceId)}, c.checkpoint_id, c.payload, c.created_at, c.created_us
    FROM instances i LEFT JOIN LATERAL (${customSignalsPage(instanceId, after, limit)}) c ON TRUE
    WHERE i.instance_id = ${instanceId}`);
  const first = rows[0];
  if (first === undefined) return null;
  return {
    status: first.status,
    signal: toPendingSignal(first),
    custom: rows.flatMap((r) => (r.checkpoint_id === null ? [] : [toCustomPageEntry(r as CustomPageRow)])),
  };
}

export async function ackCustomSignal(db: Db, instanceId: string, checkpointId: string): Promise<boolean> {
  const row = await db.maybeOne(sql.unsafe`
    DELETE FROM custom_signals WHERE instance_id = ${instanceId} AND checkpoint_id = ${checkpointId} RETURNING 1`);
  return row !== null;
}

/** The new event's id; null with `active` when the instance has `maxEvents` custom events already. */
export async function emitEvent(db: Db, instanceId: string, subtype: string, checkpointId: string, payload: Uint8Array | null, maxEvents: number) {
  return db.one(sql.type(z.object({ id: z.bigint().nullable(), active: z.boolean() }))`
    WITH inst AS (
      SELECT instance_id FROM instances WHERE instance_id = ${instanceId} AND status IN ${statusList(ACTIVE)}
    ), ins AS (
      INSERT INTO instance_events (instance_id, event_type, subtype, checkpoint_id, payload)
      SELECT instance_id, 'custom', ${subtype}, ${checkpointId}, ${payload === null ? null : sql.binary(Buffer.from(payload))}
      FROM inst
      WHERE (SELECT count(*) FROM instance_events WHERE instance_id = ${instanceId} AND event_type = 'custom') < ${maxEvents}
      RETURNING id
    )
    SELECT (SELECT id FROM ins) AS id, EXISTS (SELECT 1 FROM inst) AS active`);
}

/**
 * Stores the signal for a non-terminal instance of the tenant. A pending CANCEL is never
 * replaced (the conflict update is skipped). Returns the signal pending afterwards, or null
 * when the instance is missing or terminal.
 */
export async function storeSignal(db: Db, tenantId: string, instanceId: string, kind: SignalKind, payload: Uint8Array) {
  return db.maybeOne(sql.type(z.object({ stored: z.boolean(), pending: signalKind.nullable() }))`
    WITH target AS (
      SELECT instance_id FROM instances
      WHERE instance_id = ${instanceId} AND tenant_id = ${tenantId} AND status IN ${statusList(ACTIVE)}
    ), up AS (
      INSERT INTO pending_signals (instance_id, signal_type, payload, created_at)
      SELECT instance_id, ${kind}, ${sql.binary(Buffer.from(payload))}, clock_timestamp() FROM target
      ON CONFLICT (instance_id) DO UPDATE
        SET signal_type = EXCLUDED.signal_type, payload = EXCLUDED.payload, created_at = EXCLUDED.created_at
        WHERE pending_signals.signal_type <> 'cancel'
      RETURNING signal_type
    ), e AS (
      INSERT INTO instance_events (instance_id, event_type, subtype) SELECT ${instanceId}, 'signal', ${kind} FROM up
    )
    SELECT EXISTS (SELECT 1 FROM up) AS stored,
      COALESCE((SELECT signal_type FROM up), (SELECT signal_type FROM pending_signals WHERE instance_id = ${instanceId})) AS pending
    FROM target`);
}

/**
 * Stores (or replaces) the custom signal for a wait point of a non-terminal instance of the
 * tenant. "stored"; "inactive" when the instance is missing or terminal; "full" when it holds
 * `maxSignals` unacknowledged custom signals already (a replacement then is refused too).
 * The statement is a function (migration 11): sends to one instance take turns on its row
 * lock, each counts what the ones before it stored (so racing sends stay within the cap) and
 * takes its time after they committed, so signals commit in the order of their times, which a
 * watch's cursor relies on.
 */
export async function storeCustomSignal(db: Db, tenantId: string, instanceId: string, checkpointId: string, payload: Uint8Array, maxSignals: number) {
  return db.oneFirst(sql.type(storeOutcome)`
    SELECT runtara_store_custom_signal(${tenantId}, ${instanceId}, ${checkpointId},
      ${binary(payload)}, ${maxSignals}, ${sql.array(ACTIVE, "instance_status")}) AS outcome`);
}

const storeOutcome = z.object({ outcome: z.enum(["stored", "full", "inactive"]) });

export interface RangeFilter {
  createdAfterMs: number | undefined;
  createdBeforeMs: number | undefined;
}

function rangeFilters(r: RangeFilter) {
  const f = [];
  if (r.createdAfterMs !== undefined) f.push(sql.fragment`created_at >= to_timestamp(${r.createdAfterMs} / 1000.0)`);
  if (r.createdBeforeMs !== undefined) f.push(sql.fragment`created_at < to_timestamp(${r.createdBeforeMs} / 1000.0)`);
  return f;
}

export async function listCheckpoints(
  db: Db,
  q: RangeFilter & { instanceId: string; checkpointId: string; limit: number; offset: number },
): Promise<{ items: readonly CheckpointSummary[]; total: bigint }> {
  const filters = [sql.fragment`instance_id = ${q.instanceId}`, ...rangeFilters(q)];
  if (q.checkpointId !== "") filters.push(sql.fragment`checkpoint_id = ${q.checkpointId}`);
  const where = sql.join(filters, sql.fragment` AND `);
  const [items, total] = await Promise.all([
    db.any(sql.type(
      z
        .object({ checkpoint_id: z.string(), size_bytes: z.bigint(), created_at: z.number() })
        .transform((r): CheckpointSummary => ({ instanceId: q.instanceId, checkpointId: r.checkpoint_id, sizeBytes: r.size_bytes, createdAtMs: r.created_at })),
    )`
      SELECT checkpoint_id, octet_length(state)::bigint AS size_bytes, created_at FROM checkpoints
      WHERE ${where} ORDER BY created_at DESC, checkpoint_id LIMIT ${q.limit} OFFSET ${q.offset}`),
    db.oneFirst(sql.type(z.object({ count: z.bigint() }))`${cappedCount(sql.fragment`checkpoints WHERE ${where}`)}`),
  ]);
  return { items, total };
}

/**
 * Payload bytes in one ListEvents page (a page holds at least one event): fewer than `limit`
 * events come back when their payloads are large; the caller continues at offset + returned.
 */
export const EVENT_PAGE_BYTES = 4 * 1024 * 1024;

export async function listEvents(
  db: Db,
  q: RangeFilter & { instanceId: string; eventType: string; subtype: string; limit: number; offset: number; ascending: boolean },
): Promise<{ items: readonly InstanceEvent[]; total: bigint }> {
  const filters = [sql.fragment`instance_id = ${q.instanceId}`, ...rangeFilters(q)];
  if (q.eventType !== "") filters.push(sql.fragment`event_type = ${q.eventType}`);
  if (q.subtype !== "") filters.push(sql.fragment`subtype = ${q.subtype}`);
  const where = sql.join(filters, sql.fragment` AND `);
  const order = q.ascending ? sql.fragment`created_at ASC, id ASC` : sql.fragment`created_at DESC, id DESC`;
  // Sizes first, payloads only for the rows that fit the page's byte budget: a page of 1000
  // events of 16 MiB each must not be read into memory at once.
  const [sized, total] = await Promise.all([
    db.any(sql.type(z.object({ id: z.bigint(), size: z.number() }))`
      SELECT id, COALESCE(octet_length(payload), 0) AS size FROM instance_events
      WHERE ${where} ORDER BY ${order} LIMIT ${q.limit} OFFSET ${q.offset}`),
    db.oneFirst(sql.type(z.object({ count: z.bigint() }))`${cappedCount(sql.fragment`instance_events WHERE ${where}`)}`),
  ]);
  const ids: bigint[] = [];
  let pageBytes = 0;
  for (const row of sized) {
    if (ids.length > 0 && pageBytes + row.size > EVENT_PAGE_BYTES) break;
    ids.push(row.id);
    pageBytes += row.size;
  }
  if (ids.length === 0) return { items: [], total };
  const items = await db.any(sql.type(
    z
      .object({ id: z.bigint(), event_type: z.string(), subtype: z.string(), checkpoint_id: z.string(), payload: bytes.nullable(), created_at: z.number() })
      .transform((r): InstanceEvent => ({
        id: r.id,
        instanceId: q.instanceId,
        eventType: r.event_type,
        subtype: r.subtype,
        checkpointId: r.checkpoint_id,
        payload: r.payload ?? Buffer.alloc(0),
        createdAtMs: r.created_at,
      })),
  )`
    SELECT id, event_type, subtype, checkpoint_id, payload, created_at FROM instance_events
    WHERE id = ANY(${sql.array(ids.map(String), "int8")}) ORDER BY ${order}`);
  return { items, total };
}
