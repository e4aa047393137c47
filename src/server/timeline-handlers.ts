import type { ServiceImpl } from "@connectrpc/connect";
import type { EnvironmentService } from "../../gen/runtara/environment/v1/environment_pb.js";
import type { InstanceTimeline } from "../instances/index.js";
import { protoReason, protoStatus, toTimestamp } from "../protocol/convert.js";
import { requireId } from "../validation.js";

export function timelineHandlers(timeline: InstanceTimeline): Pick<ServiceImpl<typeof EnvironmentService>, "listInstanceTransitions"> {
  return {
    async listInstanceTransitions(req) {
      const history = await timeline.read(requireId("tenant_id", req.tenantId), requireId("instance_id", req.instanceId));
      return {
        transitions: history.transitions.map((t) => ({ status: protoStatus(t.status), terminationReason: protoReason(t.terminationReason), at: toTimestamp(t.atMs) })),
        truncated: history.truncated,
      };
    },
  };
}
