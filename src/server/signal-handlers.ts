import type { ServiceImpl } from "@connectrpc/connect";
import type { EnvironmentService } from "../../gen/runtara/environment/v1/environment_pb.js";
import type { SignalService } from "../instances/index.js";
import { protoCheckpoint, protoEvent, protoStatus, signalKindFromProto } from "../protocol/convert.js";
import { boundedBytes, requireId } from "../validation.js";
import { checkpointFilters, eventFilters } from "./read-view-filters.js";

type SignalHandlers = Pick<
  ServiceImpl<typeof EnvironmentService>,
  "sendSignal" | "sendCustomSignal" | "listCheckpoints" | "getCheckpoint" | "listEvents"
>;

const MAX_SIGNAL_PAYLOAD = 1024 * 1024;

/**
 * Signals and the read views over core's data: validated here (so errors name the field),
 * then handed to the SignalService, which forwards them to core. The environment never
 * writes core's tables.
 */
export function signalHandlers(signals: SignalService): SignalHandlers {
  const target = (req: { tenantId: string; instanceId: string }) => ({
    tenantId: requireId("tenant_id", req.tenantId),
    instanceId: requireId("instance_id", req.instanceId),
  });
  return {
    async sendSignal(req) {
      const t = target(req);
      const payload = boundedBytes("payload", req.payload, MAX_SIGNAL_PAYLOAD);
      const kind = signalKindFromProto("signal_type", req.signalType);
      return { status: protoStatus(await signals.send(t.tenantId, t.instanceId, kind, payload)) };
    },
    async sendCustomSignal(req) {
      const t = target(req);
      const checkpointId = requireId("checkpoint_id", req.checkpointId);
      await signals.sendCustom(t.tenantId, t.instanceId, checkpointId, boundedBytes("payload", req.payload, MAX_SIGNAL_PAYLOAD));
      return {};
    },
    async listCheckpoints(req) {
      const res = await signals.listCheckpoints({ ...target(req), ...checkpointFilters(req) });
      return { checkpoints: res.items.map(protoCheckpoint), totalCount: res.total };
    },
    async getCheckpoint(req) {
      const t = target(req);
      const res = await signals.getCheckpoint(t.tenantId, t.instanceId, requireId("checkpoint_id", req.checkpointId));
      return { checkpoint: protoCheckpoint(res.checkpoint), state: res.state };
    },
    async listEvents(req) {
      const res = await signals.listEvents({ ...target(req), ...eventFilters(req) });
      return { events: res.items.map(protoEvent), totalCount: res.total };
    },
  };
}
