import type { DatabasePool } from "slonik";
import type { Logger } from "pino";
import { FailedPrecondition, NotFound, ResourceExhausted } from "../errors.js";
import type { ChannelHub } from "../db/index.js";
import {
  isTerminal,
  toPendingSignal,
  transitions,
  type CustomSignal,
  type PendingSignal,
  type SignalKind,
  type Status,
} from "../lifecycle/index.js";
import * as repo from "./repository.js";

export interface InstanceCallsOptions {
  /** Largest checkpoint state, event payload or output, in bytes. */
  maxPayloadBytes: number;
}

/**
 * The rules of core's InstanceService RPCs (calls from inside an instance). Authentication
 * happens before these are called; every method acts on one already-authenticated instance id.
 */
export class InstanceCalls {
  constructor(
    private readonly db: DatabasePool,
    private readonly signals: ChannelHub,
    private readonly logger: Logger,
    private readonly options: InstanceCallsOptions,
  ) {}

  async register(instanceId: string, checkpointId: string) {
    const row = await transitions.register(this.db, instanceId, checkpointId);
    if (row === null) throw await this.refusal(instanceId, "register");
    const checkpoint = checkpointId === "" ? null : await repo.findCheckpoint(this.db, instanceId, checkpointId);
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

  async getInput(instanceId: string): Promise<Uint8Array> {
    const row = await this.touch(instanceId);
    return row.input ?? new Uint8Array();
  }

  async heartbeat(instanceId: string): Promise<PendingSignal | undefined> {
    await this.touch(instanceId);
    return repo.pendingSignal(this.db, instanceId);
  }

  async saveCheckpoint(instanceId: string, checkpointId: string, state: Uint8Array) {
    this.limit("state", state);
    const row = await repo.saveCheckpoint(this.db, instanceId, checkpointId, state);
    if (!row.running) throw await this.refusal(instanceId, "save a checkpoint", row.status);
    let stored = row.stored;
    if (!row.inserted && stored === null) {
      // A concurrent save of the same id committed after this statement's snapshot.
      stored = (await repo.findCheckpoint(this.db, instanceId, checkpointId))?.state ?? null;
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

  async getCheckpoint(instanceId: string, checkpointId: string) {
    await this.touch(instanceId);
    return repo.findCheckpoint(this.db, instanceId, checkpointId);
  }

  async sleep(instanceId: string, checkpointId: string, state: Uint8Array, wakeAtMs: number): Promise<number> {
    this.limit("state", state);
    const row = await transitions.sleep(this.db, instanceId, checkpointId, state, wakeAtMs);
    if (row === null) {
      const pending = await repo.pendingSignal(this.db, instanceId);
      if (pending?.type === "cancel") {
        throw new FailedPrecondition("a cancel signal is pending: acknowledge it instead of sleeping");
      }
      throw await this.refusal(instanceId, "sleep");
    }
    this.logger.debug({ instanceId, wakeAtMs }, "instance sleeping");
    return row.sleep_until;
  }

  async pollSignal(instanceId: string, checkpointId: string) {
    await this.touch(instanceId);
    const [signal, custom] = await Promise.all([
      repo.pendingSignal(this.db, instanceId),
      checkpointId === "" ? null : repo.customSignal(this.db, instanceId, checkpointId),
    ]);
    return { signal, customSignal: custom ?? undefined };
  }

  /**
   * Yields the pending signal and custom signals whenever they change: once at subscription,
   * then on every NOTIFY for this instance (or reconnect). Ends when `abort` fires or the
   * instance becomes terminal.
   */
  async *watchSignals(instanceId: string, includeCustom: boolean, abort: AbortSignal) {
    const delivered = new Set<string>();
    const keyOf = (kind: string, id: string, createdAtMs: number) => `${kind}:${id}:${createdAtMs}`;
    const wakeups = this.signals.wakeups(instanceId, abort);
    const snapshot = async () => {
      const [status, signal, customs] = await Promise.all([
        transitions.currentStatus(this.db, instanceId),
        repo.pendingSignal(this.db, instanceId),
        includeCustom ? repo.customSignals(this.db, instanceId) : Promise.resolve([] as readonly CustomSignal[]),
      ]);
      return { status, signal, customs };
    };
    for (let first = true; ; first = false) {
      if (!first) {
        const next = await wakeups.next();
        if (next.done) return;
      }
      const { status, signal, customs } = await snapshot();
      if (status === null || isTerminal(status)) return;
      if (signal && !delivered.has(keyOf(signal.type, "", signal.createdAtMs))) {
        delivered.add(keyOf(signal.type, "", signal.createdAtMs));
        yield { signal, customSignal: undefined };
      }
      for (const c of customs) {
        const key = keyOf("custom", c.checkpointId, c.createdAtMs);
        if (delivered.has(key)) continue;
        delivered.add(key);
        yield { signal: undefined, customSignal: c };
      }
    }
  }

  async ackSignal(instanceId: string, kind: SignalKind): Promise<{ applied: boolean; status: Status }> {
    const row = await transitions.ackSignal(this.db, instanceId, kind);
    if (row.status === null) throw new NotFound(`instance ${instanceId} not found`);
    if (!row.acked && row.pending !== null) {
      throw new FailedPrecondition(`signal_type: the pending signal is ${row.pending.toUpperCase()}, not ${kind.toUpperCase()}`);
    }
    if (row.acked) this.logger.info({ instanceId, signal: kind, status: row.status }, "signal acknowledged");
    return { applied: row.acked, status: row.status };
  }

  async ackCustomSignal(instanceId: string, checkpointId: string): Promise<{ applied: boolean; status: Status }> {
    const row = await this.touch(instanceId);
    const applied = await repo.ackCustomSignal(this.db, instanceId, checkpointId);
    return { applied, status: row.status };
  }

  async emitEvent(instanceId: string, subtype: string, checkpointId: string, payload: Uint8Array): Promise<bigint> {
    this.limit("payload", payload);
    await this.touch(instanceId);
    const id = await repo.emitEvent(this.db, instanceId, subtype, checkpointId, payload.byteLength === 0 ? null : payload);
    if (id === null) throw await this.refusal(instanceId, "emit events");
    return id;
  }

  async complete(instanceId: string, output: Uint8Array) {
    this.limit("output", output);
    return this.finish(instanceId, { kind: "completed", output: output.byteLength === 0 ? null : output });
  }

  async fail(instanceId: string, error: string) {
    return this.finish(instanceId, { kind: "failed", error });
  }

  private async finish(instanceId: string, outcome: Parameters<typeof transitions.finish>[2]) {
    const row = await transitions.finish(this.db, instanceId, outcome);
    if (row.status === null) throw new NotFound(`instance ${instanceId} not found`);
    if (row.applied) this.logger.info({ instanceId, status: row.status }, `instance ${row.status}`);
    return { applied: row.applied, status: row.status };
  }

  private async touch(instanceId: string) {
    const row = await repo.touch(this.db, instanceId);
    if (row === null) throw new NotFound(`instance ${instanceId} not found`);
    return row;
  }

  private limit(field: string, bytes: Uint8Array) {
    if (bytes.byteLength > this.options.maxPayloadBytes) {
      throw new ResourceExhausted(`${field}: ${bytes.byteLength} bytes exceeds the limit of ${this.options.maxPayloadBytes} bytes`);
    }
  }

  /** The error for a refused transition: NOT_FOUND, or FAILED_PRECONDITION naming the status. */
  private async refusal(instanceId: string, action: string, known?: Status | null) {
    const status = known === undefined ? await transitions.currentStatus(this.db, instanceId) : known;
    if (status === null) return new NotFound(`instance ${instanceId} not found`);
    return new FailedPrecondition(`cannot ${action}: instance ${instanceId} is ${status.toUpperCase()}`);
  }
}
