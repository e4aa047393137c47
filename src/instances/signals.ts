import type { CheckpointSummary, InstanceEvent } from "../lifecycle/index.js";
import type { SignalKind, Status } from "../lifecycle/index.js";
import type { CheckpointQuery, CoreGateway, EventQuery } from "./core-gateway.js";

/**
 * Signals and the read views over core's data, as the management API offers them. Everything
 * goes to core through its generated client; the one exception is RESUME of a SUSPENDED
 * instance, which has no process to read a signal and is relaunched here instead.
 */
export class SignalService {
  constructor(
    private readonly core: CoreGateway,
    private readonly relaunchIfSuspended: (tenantId: string, instanceId: string) => Promise<Status | null>,
  ) {}

  async send(tenantId: string, instanceId: string, kind: SignalKind, payload: Uint8Array): Promise<Status> {
    if (kind === "resume") {
      const relaunched = await this.relaunchIfSuspended(tenantId, instanceId);
      if (relaunched !== null) return relaunched;
    }
    return this.core.sendSignal(tenantId, instanceId, kind, payload);
  }

  sendCustom(tenantId: string, instanceId: string, checkpointId: string, payload: Uint8Array): Promise<void> {
    return this.core.sendCustomSignal(tenantId, instanceId, checkpointId, payload);
  }

  listCheckpoints(q: CheckpointQuery): Promise<{ items: CheckpointSummary[]; total: bigint }> {
    return this.core.listCheckpoints(q);
  }

  getCheckpoint(tenantId: string, instanceId: string, checkpointId: string) {
    return this.core.getCheckpoint(tenantId, instanceId, checkpointId);
  }

  listEvents(q: EventQuery): Promise<{ items: InstanceEvent[]; total: bigint }> {
    return this.core.listEvents(q);
  }
}
