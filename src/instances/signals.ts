import type { CheckpointSummary, InstanceEvent } from "../lifecycle/index.js";
import type { SignalKind, Status } from "../lifecycle/index.js";
import type { Metrics } from "../metrics/index.js";
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
    private readonly delivery: Metrics["signalDelivery"],
  ) {}

  async send(tenantId: string, instanceId: string, kind: SignalKind, payload: Uint8Array): Promise<Status> {
    const done = this.delivery.startTimer({ kind });
    if (kind === "resume") {
      const relaunched = await this.relaunchIfSuspended(tenantId, instanceId);
      if (relaunched !== null) {
        done();
        return relaunched;
      }
    }
    const status = await this.core.sendSignal(tenantId, instanceId, kind, payload);
    done();
    return status;
  }

  async sendCustom(tenantId: string, instanceId: string, checkpointId: string, payload: Uint8Array): Promise<void> {
    const done = this.delivery.startTimer({ kind: "custom" });
    await this.core.sendCustomSignal(tenantId, instanceId, checkpointId, payload);
    done();
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
