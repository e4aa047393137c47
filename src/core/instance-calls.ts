import type { DatabasePool } from "slonik";
import type { Logger } from "pino";
import { FailedPrecondition, NotFound, ResourceExhausted, Unauthenticated } from "../errors.js";
import type { ChannelHub } from "../db/index.js";
import {
  isTerminal,
  toPendingSignal,
  transitions,
  type CustomSignal,
  type InstanceKey,
  type PendingSignal,
  type SignalKind,
  type Status,
} from "../lifecycle/index.js";
import * as repo from "./repository.js";

/** Custom signals read per statement by a signal watch. */
const SIGNAL_PAGE = 100;

export interface InstanceCallsOptions {
  /** Largest checkpoint state or output, in bytes. */
  maxPayloadBytes: number;
  /** Largest event payload, in bytes: events are an audit log, read back in pages. */
  maxEventPayloadBytes: number;
  /** Checkpoints one instance may save (RESOURCE_EXHAUSTED after). */
  maxCheckpointsPerInstance: number;
  /** Custom events one instance may emit (RESOURCE_EXHAUSTED after). */
  maxEventsPerInstance: number;
}

/**
 * The rules of core's InstanceService RPCs (calls from inside an instance). The token's MAC
 * is checked before these are called; every method acts on the row the token names (its id
 * and nonce, an InstanceKey), and every first statement is guarded by both, so a token of a
 * deleted instance is refused by a re-created row with the same id (UNAUTHENTICATED).
 */
export class InstanceCalls {
  constructor(
    private readonly db: DatabasePool,
    private readonly signals: ChannelHub,
    private readonly logger: Logger,
    private readonly options: InstanceCallsOptions,
  ) {}

  async register(key: InstanceKey, checkpointId: string) {
    const row = await transitions.register(this.db, key, checkpointId);
    if (row === null) throw await this.refusal(key, "register");
    const checkpoint = checkpointId === "" ? null : await repo.findCheckpoint(this.db, key.instanceId, checkpointId);
    return {
      status: row.status,
      tenantId: row.tenant_id,
      input: row.input ?? new Uint8Array(),
      checkpointId,
      found: checkpoint !== null,
      state: checkpoint?.state ?? new Uint8Array(),
      signal: toPendingSignal(row),
    };
  }

  async getInput(key: InstanceKey): Promise<Uint8Array> {
    const row = await this.touch(key);
    return row.input ?? new Uint8Array();
  }

  async heartbeat(key: InstanceKey): Promise<PendingSignal | undefined> {
    await this.touch(key);
    return repo.pendingSignal(this.db, key.instanceId);
  }

  async saveCheckpoint(key: InstanceKey, checkpointId: string, state: Uint8Array) {
    this.limit("state", state);
    const row = await repo.saveCheckpoint(this.db, key, checkpointId, state, this.options.maxCheckpointsPerInstance);
    if (!row.running) throw await this.refusal(key, "save a checkpoint", row.status);
    if (!row.inserted && row.full && row.stored === null) {
      throw new ResourceExhausted(
        `checkpoint_id: instance ${key.instanceId} has saved ${this.options.maxCheckpointsPerInstance} checkpoints, the most allowed (RUNTARA_MAX_CHECKPOINTS_PER_INSTANCE)`,
      );
    }
    let stored = row.stored;
    if (!row.inserted && stored === null) {
      // A concurrent save of the same id committed after this statement's snapshot.
      stored = (await repo.findCheckpoint(this.db, key.instanceId, checkpointId))?.state ?? null;
    }
    const customSignal: CustomSignal | undefined =
      row.custom_payload === null ? undefined : { checkpointId, payload: row.custom_payload, createdAtMs: row.custom_created_at ?? 0 };
    return {
      found: !row.inserted,
      state: row.inserted ? new Uint8Array() : (stored ?? new Uint8Array()),
      signal: toPendingSignal(row),
      customSignal,
    };
  }

  async getCheckpoint(key: InstanceKey, checkpointId: string) {
    await this.touch(key);
    return repo.findCheckpoint(this.db, key.instanceId, checkpointId);
  }

  async sleep(key: InstanceKey, checkpointId: string, state: Uint8Array, wakeAtMs: number): Promise<number> {
    this.limit("state", state);
    const row = await transitions.sleep(this.db, key, checkpointId, state, wakeAtMs);
    if (row === null) {
      const current = await repo.ownSleep(this.db, key);
      if (current === null) throw await this.notOwned(key);
      // The same Sleep again (a workflow that lost the answer retries): the same answer.
      if (current.status === "suspended" && current.termination_reason === "sleeping" && current.checkpoint_id === checkpointId && current.sleep_until !== null) {
        return current.sleep_until;
      }
      const pending = await repo.pendingSignal(this.db, key.instanceId);
      if (pending?.type === "cancel") {
        throw new FailedPrecondition("a cancel signal is pending: acknowledge it instead of sleeping");
      }
      throw await this.refusal(key, "sleep", current.status);
    }
    this.logger.debug({ instanceId: key.instanceId, wakeAtMs }, "instance sleeping");
    return row.sleep_until;
  }

  async pollSignal(key: InstanceKey, checkpointId: string) {
    await this.touch(key);
    const [signal, custom] = await Promise.all([
      repo.pendingSignal(this.db, key.instanceId),
      checkpointId === "" ? null : repo.customSignal(this.db, key.instanceId, checkpointId),
    ]);
    return { signal, customSignal: custom ?? undefined };
  }

  /**
   * Yields the pending signal and custom signals whenever they change: once at subscription,
   * then on every NOTIFY for this instance (or reconnect). Ends when `abort` fires or the
   * instance becomes terminal.
   */
  async watchSignals(key: InstanceKey, includeCustom: boolean, abort: AbortSignal) {
    // Checked before the stream opens, so a refused token is the call's error.
    await this.touch(key);
    return this.signalStream(key.instanceId, includeCustom, abort);
  }

  /**
   * Each wake-up reads the status, the pending signal and only the custom signals after the
   * cursor (in pages), so a watch over many signals does constant work per new one.
   */
  private async *signalStream(instanceId: string, includeCustom: boolean, abort: AbortSignal) {
    let lastSignal: string | undefined;
    let cursor: repo.CustomSignalCursor | null = null;
    const wakeups = this.signals.wakeups(instanceId, abort);
    for (let first = true; ; first = false) {
      if (!first) {
        const next = await wakeups.next();
        if (next.done) return;
      }
      // One statement per wake-up; only a backlog of more than a page reads further pages.
      const snapshot = await repo.signalSnapshot(this.db, instanceId, cursor, includeCustom ? SIGNAL_PAGE : 0);
      if (snapshot === null || isTerminal(snapshot.status)) return;
      const { signal } = snapshot;
      const signalKey = signal && `${signal.type}:${signal.createdAtMs}`;
      if (signal && signalKey !== lastSignal) {
        lastSignal = signalKey;
        yield { signal, customSignal: undefined };
      }
      for (let page = snapshot.custom; ; page = await repo.customSignalsAfter(this.db, instanceId, cursor, SIGNAL_PAGE)) {
        for (const c of page) {
          cursor = { createdUs: c.createdUs, checkpointId: c.signal.checkpointId };
          yield { signal: undefined, customSignal: c.signal };
        }
        if (page.length < SIGNAL_PAGE) break;
      }
    }
  }

  async ackSignal(key: InstanceKey, kind: SignalKind): Promise<{ applied: boolean; status: Status }> {
    const row = await transitions.ackSignal(this.db, key, kind);
    if (row.status === null) throw await this.notOwned(key);
    if (!row.acked && row.pending !== null) {
      throw new FailedPrecondition(`signal_type: the pending signal is ${row.pending.toUpperCase()}, not ${kind.toUpperCase()}`);
    }
    if (row.acked) this.logger.info({ instanceId: key.instanceId, signal: kind, status: row.status }, "signal acknowledged");
    return { applied: row.acked, status: row.status };
  }

  async ackCustomSignal(key: InstanceKey, checkpointId: string): Promise<{ applied: boolean; status: Status }> {
    const row = await this.touch(key);
    const applied = await repo.ackCustomSignal(this.db, key.instanceId, checkpointId);
    return { applied, status: row.status };
  }

  async emitEvent(key: InstanceKey, subtype: string, checkpointId: string, payload: Uint8Array): Promise<bigint> {
    this.limit("payload", payload, Math.min(this.options.maxEventPayloadBytes, this.options.maxPayloadBytes));
    await this.touch(key);
    const row = await repo.emitEvent(this.db, key.instanceId, subtype, checkpointId, payload.byteLength === 0 ? null : payload, this.options.maxEventsPerInstance);
    if (row.id !== null) return row.id;
    if (!row.active) throw await this.refusal(key, "emit events");
    throw new ResourceExhausted(
      `instance ${key.instanceId} has emitted ${this.options.maxEventsPerInstance} events, the most allowed (RUNTARA_MAX_EVENTS_PER_INSTANCE)`,
    );
  }

  async complete(key: InstanceKey, output: Uint8Array) {
    this.limit("output", output);
    return this.finish(key, { kind: "completed", output: output.byteLength === 0 ? null : output });
  }

  async fail(key: InstanceKey, error: string) {
    return this.finish(key, { kind: "failed", error });
  }

  private async finish(key: InstanceKey, outcome: Parameters<typeof transitions.finish>[2]) {
    const row = await transitions.finish(this.db, key, outcome);
    if (row.status === null) throw await this.notOwned(key);
    if (row.applied) this.logger.info({ instanceId: key.instanceId, status: row.status }, `instance ${row.status}`);
    return { applied: row.applied, status: row.status };
  }

  private async touch(key: InstanceKey) {
    const row = await repo.touch(this.db, key);
    if (row === null) throw await this.notOwned(key);
    return row;
  }

  private limit(field: string, bytes: Uint8Array, max = this.options.maxPayloadBytes) {
    if (bytes.byteLength > max) throw new ResourceExhausted(`${field}: ${bytes.byteLength} bytes exceeds the limit of ${max} bytes`);
  }

  /** The error for a refused transition: FAILED_PRECONDITION naming the status, or notOwned's. */
  private async refusal(key: InstanceKey, action: string, known?: Status | null) {
    const status = known === undefined ? await transitions.ownStatus(this.db, key) : known;
    if (status === null) return this.notOwned(key);
    return new FailedPrecondition(`cannot ${action}: instance ${key.instanceId} is ${status.toUpperCase()}`);
  }

  /** No row with this id and nonce: NOT_FOUND when the id is gone, else the token is an earlier row's. */
  private async notOwned(key: InstanceKey) {
    if ((await transitions.tokenNonce(this.db, key.instanceId)) === null) return new NotFound(`instance ${key.instanceId} not found`);
    return new Unauthenticated("instance token belongs to an earlier run or an earlier instance with this id");
  }
}
