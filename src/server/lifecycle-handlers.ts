import type { MessageInitShape } from "@bufbuild/protobuf";
import type { ServiceImpl } from "@connectrpc/connect";
import { InstanceStatus } from "../../gen/runtara/core/v1/types_pb.js";
import {
  type EnvironmentService,
  InstanceOrder,
  type InstanceSchema,
} from "../../gen/runtara/environment/v1/environment_pb.js";
import { MAX_EXECUTION_TIMEOUT_SECS } from "../config.js";
import { InvalidArgument } from "../errors.js";
import type { ImageRef } from "../images/index.js";
import type { Instance, InstanceManager, InstanceOrder as Order } from "../instances/index.js";
import { protoReason, protoStatus, requestTime, statusFromProto, toTimestamp } from "../protocol/convert.js";
import { boundedBytes, boundedText, pageOffset, pageLimit, parseJsonBytes, requireId, requireUuid } from "../validation.js";

type LifecycleHandlers = Pick<
  ServiceImpl<typeof EnvironmentService>,
  "startInstance" | "stopInstance" | "resumeInstance" | "getInstanceStatus" | "listInstances" | "watchInstance"
>;

const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]{0,127}$/;
const MAX_ENV_ENTRIES = 128;
/** All of env together: the native runner exec()s with it, and Linux caps exec at about 2 MiB. */
const MAX_ENV_BYTES = 256 * 1024;

export interface LifecycleDefaults {
  executionTimeoutSecs: number;
  maxPayloadBytes: number;
}

export function lifecycleHandlers(instances: InstanceManager, defaults: LifecycleDefaults): LifecycleHandlers {
  const target = (req: { tenantId: string; instanceId: string }) => ({
    tenantId: requireId("tenant_id", req.tenantId),
    instanceId: requireId("instance_id", req.instanceId),
  });
  return {
    async startInstance(req) {
      const tenantId = requireId("tenant_id", req.tenantId);
      const image = imageRef(req);
      const instanceId = req.instanceId === "" ? undefined : requireId("instance_id", req.instanceId);
      const input = boundedBytes("input", req.input, defaults.maxPayloadBytes);
      parseJsonBytes("input", input);
      const timeoutSeconds = req.timeoutSeconds === undefined ? defaults.executionTimeoutSecs : Number(req.timeoutSeconds);
      if (req.timeoutSeconds !== undefined && (req.timeoutSeconds < 1n || req.timeoutSeconds > BigInt(MAX_EXECUTION_TIMEOUT_SECS))) {
        throw new InvalidArgument("timeout_seconds", `must be between 1 and ${MAX_EXECUTION_TIMEOUT_SECS}`);
      }
      const res = await instances.start({
        tenantId,
        image,
        instanceId,
        input: input.byteLength === 0 ? new TextEncoder().encode("{}") : input,
        timeoutSeconds,
        env: validateEnv(req.env),
      });
      return { instanceId: res.instanceId, status: protoStatus(res.status) };
    },
    async stopInstance(req) {
      const t = target(req);
      const grace = req.gracePeriodSeconds === undefined ? 5 : Number(req.gracePeriodSeconds);
      if (grace < 0 || grace > 3600) throw new InvalidArgument("grace_period_seconds", "must be between 0 and 3600");
      const status = await instances.stop(t.tenantId, t.instanceId, grace, boundedText("reason", req.reason, 1024));
      return { status: protoStatus(status) };
    },
    async resumeInstance(req) {
      const t = target(req);
      return { status: protoStatus(await instances.resume(t.tenantId, t.instanceId)) };
    },
    async getInstanceStatus(req) {
      const t = target(req);
      return { instance: toProtoInstance(await instances.get(t.tenantId, t.instanceId)) };
    },
    async listInstances(req) {
      const page = await instances.list({
        tenantId: requireId("tenant_id", req.tenantId),
        status: req.status === InstanceStatus.UNSPECIFIED ? undefined : statusFromProto("status", req.status),
        imageId: req.imageId === "" ? undefined : requireUuid("image_id", req.imageId),
        imageNamePrefix: boundedText("image_name_prefix", req.imageNamePrefix, 256),
        instanceIdPrefix: boundedText("instance_id_prefix", req.instanceIdPrefix, 128),
        createdAfterMs: requestTime("created_after", req.createdAfter),
        createdBeforeMs: requestTime("created_before", req.createdBefore),
        finishedAfterMs: requestTime("finished_after", req.finishedAfter),
        finishedBeforeMs: requestTime("finished_before", req.finishedBefore),
        order: orderOf(req.orderBy),
        limit: pageLimit("limit", req.limit),
        offset: pageOffset("offset", req.offset),
        pageToken: boundedText("page_token", req.pageToken, 1024),
      });
      return { instances: page.instances.map(toProtoInstance), nextPageToken: page.nextPageToken, totalCount: page.totalCount };
    },
    async *watchInstance(req, ctx) {
      const t = target(req);
      for await (const instance of instances.watch(t.tenantId, t.instanceId, ctx.signal)) {
        yield { instance: toProtoInstance(instance) };
      }
    },
  };
}

/** Exactly one of image_id and image_name; image_version only with image_name. */
function imageRef(req: { imageId: string; imageName: string; imageVersion?: number }): ImageRef {
  if (req.imageName === "") {
    if (req.imageVersion !== undefined) throw new InvalidArgument("image_version", "is given only with image_name");
    if (req.imageId === "") throw new InvalidArgument("image_id", "is required (or image_name)");
    return { imageId: requireUuid("image_id", req.imageId) };
  }
  if (req.imageId !== "") throw new InvalidArgument("image_name", "give image_id or image_name, not both");
  if (req.imageVersion !== undefined && req.imageVersion < 1) throw new InvalidArgument("image_version", "must be 1 or more");
  return { name: requireId("image_name", req.imageName, 256), version: req.imageVersion };
}

function validateEnv(env: Record<string, string>): Record<string, string> {
  const entries = Object.entries(env);
  if (entries.length > MAX_ENV_ENTRIES) throw new InvalidArgument("env", `at most ${MAX_ENV_ENTRIES} variables`);
  for (const [name, value] of entries) {
    if (!ENV_NAME.test(name)) throw new InvalidArgument("env", `"${name.slice(0, 64)}" is not a valid variable name`);
    if (name.toUpperCase().startsWith("RUNTARA_")) throw new InvalidArgument("env", `${name} is reserved (RUNTARA_* cannot be overridden)`);
    if (value.length > 32 * 1024 || value.includes("\0")) throw new InvalidArgument("env", `value of ${name} is too long or contains NUL`);
  }
  const bytes = entries.reduce((sum, [name, value]) => sum + Buffer.byteLength(name) + Buffer.byteLength(value) + 2, 0);
  if (bytes > MAX_ENV_BYTES) throw new InvalidArgument("env", `at most ${MAX_ENV_BYTES} bytes in all (got ${bytes})`);
  return Object.fromEntries(entries);
}

function orderOf(o: InstanceOrder): Order {
  switch (o) {
    case InstanceOrder.UNSPECIFIED:
    case InstanceOrder.CREATED_DESC:
      return "created_desc";
    case InstanceOrder.CREATED_ASC:
      return "created_asc";
    case InstanceOrder.FINISHED_DESC:
      return "finished_desc";
    case InstanceOrder.FINISHED_ASC:
      return "finished_asc";
    default:
      throw new InvalidArgument("order_by", `unknown order ${String(o)}`);
  }
}

export function toProtoInstance(i: Instance): MessageInitShape<typeof InstanceSchema> {
  return {
    instanceId: i.instanceId,
    tenantId: i.tenantId,
    imageId: i.imageId ?? "",
    imageName: i.imageName,
    status: protoStatus(i.status),
    terminationReason: protoReason(i.terminationReason),
    exitCode: i.exitCode ?? undefined,
    checkpointId: i.checkpointId ?? "",
    createdAt: toTimestamp(i.createdAtMs),
    startedAt: toTimestamp(i.startedAtMs),
    finishedAt: toTimestamp(i.finishedAtMs),
    heartbeatAt: toTimestamp(i.heartbeatAtMs),
    wakeAt: toTimestamp(i.wakeAtMs),
    input: i.input ?? new Uint8Array(),
    output: i.output ?? new Uint8Array(),
    error: i.error ?? "",
    stderr: i.stderr ?? "",
    memoryPeakBytes: i.memoryPeakBytes ?? undefined,
    cpuUsageUsec: i.cpuUsageUsec ?? undefined,
    timeoutSeconds: BigInt(i.timeoutSeconds),
  };
}
