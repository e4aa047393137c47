import type { DatabasePool } from "slonik";
import type { Logger } from "pino";
import { FailedPrecondition, NotFound, ResourceExhausted } from "../errors.js";
import { transitions, type SignalKind, type Status } from "../lifecycle/index.js";
import * as repo from "./repository.js";
import type { RangeFilter } from "./repository.js";

/** The rules of core's CoreService RPCs (the management side). Every call is scoped to a tenant. */
export class ManagementCalls {
  constructor(
    private readonly db: DatabasePool,
    private readonly logger: Logger,
    private readonly options: { maxCustomSignalsPerInstance: number },
  ) {}

  async sendSignal(tenantId: string, instanceId: string, kind: SignalKind, payload: Uint8Array) {
    // A PENDING or SUSPENDED instance has no process to acknowledge a cancel: apply it now.
    if (kind === "cancel" && (await transitions.cancelIdle(this.db, tenantId, instanceId))) {
      this.logger.info({ instanceId, tenantId }, "idle instance cancelled");
      return { status: "cancelled" as Status, pending: undefined };
    }
    const row = await repo.storeSignal(this.db, tenantId, instanceId, kind, payload);
    if (row === null) throw await this.refusal(tenantId, instanceId, `send ${kind.toUpperCase()} to`);
    const status = await transitions.tenantStatus(this.db, tenantId, instanceId);
    this.logger.info({ instanceId, tenantId, signal: kind, stored: row.stored, pending: row.pending }, "signal sent");
    return { status: status ?? "cancelled", pending: row.pending ?? undefined };
  }

  async sendCustomSignal(tenantId: string, instanceId: string, checkpointId: string, payload: Uint8Array) {
    const max = this.options.maxCustomSignalsPerInstance;
    const outcome = await repo.storeCustomSignal(this.db, tenantId, instanceId, checkpointId, payload, max);
    if (outcome === "inactive") throw await this.refusal(tenantId, instanceId, "send a custom signal to");
    if (outcome === "full") {
      throw new ResourceExhausted(`instance ${instanceId} holds ${max} unacknowledged custom signals, the most allowed (RUNTARA_MAX_CUSTOM_SIGNALS_PER_INSTANCE)`);
    }
  }

  async listCheckpoints(tenantId: string, q: RangeFilter & { instanceId: string; checkpointId: string; limit: number; offset: number }) {
    await this.owned(tenantId, q.instanceId);
    return repo.listCheckpoints(this.db, q);
  }

  async getCheckpoint(tenantId: string, instanceId: string, checkpointId: string) {
    await this.owned(tenantId, instanceId);
    const cp = await repo.findCheckpoint(this.db, instanceId, checkpointId);
    if (cp === null) throw new NotFound(`checkpoint ${checkpointId} of instance ${instanceId} not found`);
    return cp;
  }

  async listEvents(
    tenantId: string,
    q: RangeFilter & { instanceId: string; eventType: string; subtype: string; limit: number; offset: number; ascending: boolean },
  ) {
    await this.owned(tenantId, q.instanceId);
    return repo.listEvents(this.db, q);
  }

  private async owned(tenantId: string, instanceId: string): Promise<Status> {
    const status = await transitions.tenantStatus(this.db, tenantId, instanceId);
    if (status === null) throw new NotFound(`instance ${instanceId} not found`);
    return status;
  }

  private async refusal(tenantId: string, instanceId: string, action: string) {
    const status = await transitions.tenantStatus(this.db, tenantId, instanceId);
    if (status === null) return new NotFound(`instance ${instanceId} not found`);
    return new FailedPrecondition(`cannot ${action} instance ${instanceId}: it is ${status.toUpperCase()}`);
  }
}
