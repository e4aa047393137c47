import type { ServiceImpl } from "@connectrpc/connect";
import type { EnvironmentService } from "../../gen/runtara/environment/v1/environment_pb.js";
import type { CoreGateway } from "../instances/core-gateway.js";
import { boundedText, nonNegative, pageLimit, requireId } from "../validation.js";

type SignalHandlers = Pick<
  ServiceImpl<typeof EnvironmentService>,
  "sendCustomSignal" | "listCheckpoints" | "getCheckpoint" | "listEvents"
>;

/**
 * Custom signals and read views over core's data: validated here (so errors name the field), then
 * forwarded to core through the generated CoreService client. The environment never writes
 * core's tables.
 */
export function signalHandlers(core: CoreGateway): SignalHandlers {
  const target = (req: { tenantId: string; instanceId: string }) => ({
    tenantId: requireId("tenant_id", req.tenantId),
    instanceId: requireId("instance_id", req.instanceId),
  });
  return {
    async sendCustomSignal(req) {
      const t = target(req);
      const checkpointId = requireId("checkpoint_id", req.checkpointId);
      await core.call((c) => c.sendCustomSignal({ ...t, checkpointId, payload: req.payload }));
      return {};
    },
    async listCheckpoints(req) {
      const t = target(req);
      const res = await core.call((c) =>
        c.listCheckpoints({
          ...t,
          checkpointId: req.checkpointId === "" ? "" : requireId("checkpoint_id", req.checkpointId),
          limit: pageLimit("limit", req.limit),
          offset: nonNegative("offset", req.offset),
          createdAfter: req.createdAfter,
          createdBefore: req.createdBefore,
        }),
      );
      return { checkpoints: res.checkpoints, totalCount: res.totalCount };
    },
    async getCheckpoint(req) {
      const t = target(req);
      const checkpointId = requireId("checkpoint_id", req.checkpointId);
      const res = await core.call((c) => c.getCheckpoint({ ...t, checkpointId }));
      return { checkpoint: res.checkpoint, state: res.state };
    },
    async listEvents(req) {
      const t = target(req);
      const res = await core.call((c) =>
        c.listEvents({
          ...t,
          eventType: boundedText("event_type", req.eventType, 64),
          subtype: boundedText("subtype", req.subtype, 128),
          limit: pageLimit("limit", req.limit),
          offset: nonNegative("offset", req.offset),
          createdAfter: req.createdAfter,
          createdBefore: req.createdBefore,
          sortOrder: req.sortOrder,
        }),
      );
      return { events: res.events, totalCount: res.totalCount };
    },
  };
}
