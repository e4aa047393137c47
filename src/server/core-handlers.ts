import type { HandlerContext, ServiceImpl } from "@connectrpc/connect";
import { CoreService } from "../../gen/runtara/core/v1/core_pb.js";
import { SignalType } from "../../gen/runtara/core/v1/types_pb.js";
import type { ManagementCalls } from "../core/management-calls.js";
import type { Tokens } from "../lifecycle/index.js";
import { protoCheckpoint, protoEvent, protoSignalType, protoStatus, signalKindFromProto } from "../protocol/convert.js";
import { boundedBytes, requireId } from "../validation.js";
import { checkpointFilters, eventFilters } from "./read-view-filters.js";

const MAX_SIGNAL_PAYLOAD = 1024 * 1024;

export interface CoreHealth {
  version: string;
  startedAtMs: number;
  database(): Promise<boolean>;
}

/** CoreService: management calls from the environment, authenticated with the management token. */
export function coreHandlers(core: ManagementCalls, tokens: Tokens, health: CoreHealth): ServiceImpl<typeof CoreService> {
  const auth = (ctx: HandlerContext) => tokens.verifyManagement(ctx.requestHeader.get("authorization"));
  const target = async (req: { tenantId: string; instanceId: string }, ctx: HandlerContext) => {
    await auth(ctx);
    return { tenantId: requireId("tenant_id", req.tenantId), instanceId: requireId("instance_id", req.instanceId) };
  };
  return {
    async sendSignal(req, ctx) {
      const { tenantId, instanceId } = await target(req, ctx);
      const kind = signalKindFromProto("signal_type", req.signalType);
      const r = await core.sendSignal(tenantId, instanceId, kind, boundedBytes("payload", req.payload, MAX_SIGNAL_PAYLOAD));
      return {
        status: protoStatus(r.status),
        pendingSignalType: r.pending ? protoSignalType(r.pending) : SignalType.UNSPECIFIED,
      };
    },
    async sendCustomSignal(req, ctx) {
      const { tenantId, instanceId } = await target(req, ctx);
      await core.sendCustomSignal(
        tenantId,
        instanceId,
        requireId("checkpoint_id", req.checkpointId),
        boundedBytes("payload", req.payload, MAX_SIGNAL_PAYLOAD),
      );
      return {};
    },
    async listCheckpoints(req, ctx) {
      const { tenantId, instanceId } = await target(req, ctx);
      const r = await core.listCheckpoints(tenantId, { instanceId, ...checkpointFilters(req) });
      return { checkpoints: r.items.map(protoCheckpoint), totalCount: r.total };
    },
    async getCheckpoint(req, ctx) {
      const { tenantId, instanceId } = await target(req, ctx);
      const checkpointId = requireId("checkpoint_id", req.checkpointId);
      const cp = await core.getCheckpoint(tenantId, instanceId, checkpointId);
      return {
        found: true,
        checkpoint: protoCheckpoint({ instanceId, checkpointId, sizeBytes: cp.size_bytes, createdAtMs: cp.created_at }),
        state: cp.state,
      };
    },
    async listEvents(req, ctx) {
      const { tenantId, instanceId } = await target(req, ctx);
      const r = await core.listEvents(tenantId, { instanceId, ...eventFilters(req) });
      return { events: r.items.map(protoEvent), totalCount: r.total };
    },
    async healthCheck(_req, ctx) {
      await auth(ctx);
      const database = await health.database();
      return {
        healthy: database,
        version: health.version,
        databaseReachable: database,
        uptimeMs: BigInt(Date.now() - health.startedAtMs),
      };
    },
  };
}
