import type { HandlerContext, ServiceImpl } from "@connectrpc/connect";
import { InstanceService } from "../../gen/runtara/core/v1/instance_pb.js";
import { SignalType } from "../../gen/runtara/core/v1/types_pb.js";
import type { InstanceCalls } from "../core/instance-calls.js";
import { InvalidArgument } from "../errors.js";
import type { InstanceKey, Tokens } from "../lifecycle/index.js";
import { protoCustomSignal, protoSignal, protoStatus, requestTime, signalKindFromProto, toTimestamp } from "../protocol/convert.js";
import { boundedText, parseJsonBytes, requireId } from "../validation.js";

const MAX_SLEEP_MS = 10 * 365 * 24 * 3600 * 1000;

/** InstanceService: authenticate the instance token, validate, call InstanceCalls. */
export function instanceHandlers(core: InstanceCalls, tokens: Tokens): ServiceImpl<typeof InstanceService> {
  /** The row the token names: its MAC checked here, its nonce by every statement of the call. */
  const auth = async (instanceId: string, ctx: HandlerContext): Promise<InstanceKey> => {
    const id = requireId("instance_id", instanceId);
    return { instanceId: id, nonce: await tokens.verifyInstance(ctx.requestHeader.get("authorization"), id) };
  };
  const optionalId = (field: string, v: string) => (v === "" ? "" : requireId(field, v));
  return {
    async register(req, ctx) {
      const key = await auth(req.instanceId, ctx);
      const r = await core.register(key, optionalId("checkpoint_id", req.checkpointId));
      return {
        status: protoStatus(r.status),
        input: r.input,
        checkpointId: r.checkpointId,
        found: r.found,
        state: r.state,
        signal: protoSignal(r.signal),
        tenantId: r.tenantId,
      };
    },
    async getInput(req, ctx) {
      return { input: await core.getInput(await auth(req.instanceId, ctx)) };
    },
    async heartbeat(req, ctx) {
      return { signal: protoSignal(await core.heartbeat(await auth(req.instanceId, ctx))) };
    },
    async saveCheckpoint(req, ctx) {
      const key = await auth(req.instanceId, ctx);
      const r = await core.saveCheckpoint(key, requireId("checkpoint_id", req.checkpointId), req.state);
      return { found: r.found, state: r.state, signal: protoSignal(r.signal), customSignal: protoCustomSignal(r.customSignal) };
    },
    async getCheckpoint(req, ctx) {
      const key = await auth(req.instanceId, ctx);
      const cp = await core.getCheckpoint(key, requireId("checkpoint_id", req.checkpointId));
      return cp === null ? { found: false } : { found: true, state: cp.state, createdAt: toTimestamp(cp.created_at) };
    },
    async sleep(req, ctx) {
      const key = await auth(req.instanceId, ctx);
      const checkpointId = requireId("checkpoint_id", req.checkpointId);
      let wakeAtMs: number;
      if (req.wakeAt !== undefined) {
        wakeAtMs = requestTime("wake_at", req.wakeAt)!;
        if (wakeAtMs > Date.now() + MAX_SLEEP_MS) throw new InvalidArgument("wake_at", "is more than 10 years ahead");
      } else {
        if (req.durationMs < 0n || req.durationMs > BigInt(MAX_SLEEP_MS)) {
          throw new InvalidArgument("duration_ms", `must be between 0 and ${MAX_SLEEP_MS}`);
        }
        wakeAtMs = Date.now() + Number(req.durationMs);
      }
      const stored = await core.sleep(key, checkpointId, req.state, wakeAtMs);
      return { wakeAt: toTimestamp(stored) };
    },
    async pollSignal(req, ctx) {
      const key = await auth(req.instanceId, ctx);
      const r = await core.pollSignal(key, optionalId("checkpoint_id", req.checkpointId));
      return { signal: protoSignal(r.signal), customSignal: protoCustomSignal(r.customSignal) };
    },
    async *watchSignals(req, ctx) {
      const key = await auth(req.instanceId, ctx);
      const signals = await core.watchSignals(key, req.includeCustom, ctx.signal);
      // An empty first message tells the client the stream is open (connect-node sends no
      // response headers before the first message).
      yield {};
      for await (const s of signals) {
        yield { signal: protoSignal(s.signal), customSignal: protoCustomSignal(s.customSignal) };
      }
    },
    async ackSignal(req, ctx) {
      const key = await auth(req.instanceId, ctx);
      if (req.checkpointId !== "") {
        if (req.signalType !== SignalType.UNSPECIFIED) {
          throw new InvalidArgument("checkpoint_id", "set either signal_type or checkpoint_id, not both");
        }
        const r = await core.ackCustomSignal(key, requireId("checkpoint_id", req.checkpointId));
        return { applied: r.applied, status: protoStatus(r.status) };
      }
      const r = await core.ackSignal(key, signalKindFromProto("signal_type", req.signalType));
      return { applied: r.applied, status: protoStatus(r.status) };
    },
    async emitEvent(req, ctx) {
      const key = await auth(req.instanceId, ctx);
      parseJsonBytes("payload", req.payload);
      const eventId = await core.emitEvent(
        key,
        requireId("subtype", req.subtype),
        optionalId("checkpoint_id", req.checkpointId),
        req.payload,
      );
      return { eventId };
    },
    async complete(req, ctx) {
      const key = await auth(req.instanceId, ctx);
      parseJsonBytes("output", req.output);
      const r = await core.complete(key, req.output);
      return { applied: r.applied, status: protoStatus(r.status) };
    },
    async fail(req, ctx) {
      const key = await auth(req.instanceId, ctx);
      const r = await core.fail(key, boundedText("error", req.error, 64 * 1024));
      return { applied: r.applied, status: protoStatus(r.status) };
    },
  };
}
