import type { ServiceImpl } from "@connectrpc/connect";
import { SortOrder } from "../../gen/runtara/core/v1/types_pb.js";
import type { EnvironmentService } from "../../gen/runtara/environment/v1/environment_pb.js";
import { InvalidArgument } from "../errors.js";
import type { SignalService } from "../instances/index.js";
import { protoCheckpoint, protoEvent, protoStatus, requestTime, signalKindFromProto } from "../protocol/convert.js";
import { boundedBytes, boundedText, pageOffset, pageLimit, requireId } from "../validation.js";

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
      const res = await signals.listCheckpoints({
        ...target(req),
        checkpointId: req.checkpointId === "" ? "" : requireId("checkpoint_id", req.checkpointId),
        limit: pageLimit("limit", req.limit),
        offset: pageOffset("offset", req.offset),
        createdAfterMs: requestTime("created_after", req.createdAfter),
        createdBeforeMs: requestTime("created_before", req.createdBefore),
      });
      return { checkpoints: res.items.map(protoCheckpoint), totalCount: res.total };
    },
    async getCheckpoint(req) {
      const t = target(req);
      const res = await signals.getCheckpoint(t.tenantId, t.instanceId, requireId("checkpoint_id", req.checkpointId));
      return { checkpoint: protoCheckpoint(res.checkpoint), state: res.state };
    },
    async listEvents(req) {
      if (req.sortOrder !== SortOrder.UNSPECIFIED && req.sortOrder !== SortOrder.ASC && req.sortOrder !== SortOrder.DESC) {
        throw new InvalidArgument("sort_order", "must be ASC or DESC");
      }
      const res = await signals.listEvents({
        ...target(req),
        eventType: boundedText("event_type", req.eventType, 64),
        subtype: boundedText("subtype", req.subtype, 128),
        limit: pageLimit("limit", req.limit),
        offset: pageOffset("offset", req.offset),
        createdAfterMs: requestTime("created_after", req.createdAfter),
        createdBeforeMs: requestTime("created_before", req.createdBefore),
        ascending: req.sortOrder === SortOrder.ASC,
      });
      return { events: res.items.map(protoEvent), totalCount: res.total };
    },
  };
}
