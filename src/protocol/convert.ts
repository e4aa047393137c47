import type { MessageInitShape } from "@bufbuild/protobuf";
import { timestampFromMs, timestampMs, type Timestamp } from "@bufbuild/protobuf/wkt";
import {
  type CheckpointSummary as ProtoCheckpointSummary,
  type CheckpointSummarySchema,
  type CustomSignalSchema,
  type Event as ProtoEvent,
  type EventSchema,
  InstanceStatus,
  type SignalSchema,
  SignalType,
  TerminationReason,
} from "../../gen/runtara/core/v1/types_pb.js";
import { ImageFormat, RunnerType } from "../../gen/runtara/environment/v1/environment_pb.js";
import type { CheckpointSummary, CustomSignal, InstanceEvent } from "../lifecycle/index.js";
import { InvalidArgument } from "../errors.js";
import type { ImageFormat as ImageFormatKind, RunnerKind } from "../images/index.js";
import type { PendingSignal, SignalKind, Status, TerminationReason as Reason } from "../lifecycle/index.js";

/**
 * Domain values <-> protobuf messages, for the two edges that speak protobuf: the servers
 * (src/server) and the environment's client of core (src/instances/core-gateway.ts).
 */

export function toTimestamp(ms: number | null | undefined): Timestamp | undefined {
  return ms === null || ms === undefined ? undefined : timestampFromMs(ms);
}

export function fromTimestamp(ts: Timestamp | undefined): number | undefined {
  return ts === undefined ? undefined : timestampMs(ts);
}

/** Years 1 to 9999, the range of google.protobuf.Timestamp (and within PostgreSQL's). */
const MIN_MS = -62_135_596_800_000;
const MAX_MS = 253_402_300_799_999;

/** A timestamp from a request: outside years 1-9999 (or not finite) is the client's error. */
export function requestTime(field: string, ts: Timestamp | undefined): number | undefined {
  const ms = fromTimestamp(ts);
  if (ms !== undefined && !(Number.isFinite(ms) && ms >= MIN_MS && ms <= MAX_MS)) {
    throw new InvalidArgument(field, "must be a time between the years 1 and 9999");
  }
  return ms;
}

const runnerKinds: Record<RunnerType, RunnerKind> = {
  [RunnerType.UNSPECIFIED]: "oci",
  [RunnerType.OCI]: "oci",
  [RunnerType.NATIVE]: "native",
  [RunnerType.WASM]: "wasm",
};

/** Unspecified is OCI; a number outside the enum (possible on the wire) is refused. */
export function toRunnerKind(field: string, value: RunnerType): RunnerKind {
  const kind = runnerKinds[value];
  if (kind === undefined) throw new InvalidArgument(field, `unknown runner type ${value}`);
  return kind;
}

export function fromRunnerKind(kind: RunnerKind): RunnerType {
  return kind === "native" ? RunnerType.NATIVE : kind === "wasm" ? RunnerType.WASM : RunnerType.OCI;
}

const imageFormats: Record<ImageFormat, ImageFormatKind> = {
  [ImageFormat.UNSPECIFIED]: "binary",
  [ImageFormat.BINARY]: "binary",
  [ImageFormat.OCI_ARCHIVE]: "oci_archive",
};

/** Unspecified is a binary; a number outside the enum is refused. */
export function toImageFormat(field: string, value: ImageFormat): ImageFormatKind {
  const format = imageFormats[value];
  if (format === undefined) throw new InvalidArgument(field, `unknown image format ${value}`);
  return format;
}

export function fromImageFormat(format: ImageFormatKind): ImageFormat {
  return format === "oci_archive" ? ImageFormat.OCI_ARCHIVE : ImageFormat.BINARY;
}

const encoder = new TextEncoder();

export function jsonBytes(value: unknown): Uint8Array {
  return value === null || value === undefined ? new Uint8Array() : encoder.encode(JSON.stringify(value));
}

const statusToProto: Record<Status, InstanceStatus> = {
  pending: InstanceStatus.PENDING,
  running: InstanceStatus.RUNNING,
  suspended: InstanceStatus.SUSPENDED,
  completed: InstanceStatus.COMPLETED,
  failed: InstanceStatus.FAILED,
  cancelled: InstanceStatus.CANCELLED,
};

export const protoStatus = (s: Status): InstanceStatus => statusToProto[s];

export function statusFromProto(field: string, s: InstanceStatus): Status {
  const entry = Object.entries(statusToProto).find(([, v]) => v === s);
  if (!entry) throw new InvalidArgument(field, `unknown status ${s}`);
  return entry[0] as Status;
}

const signalToProto: Record<SignalKind, SignalType> = {
  cancel: SignalType.CANCEL,
  pause: SignalType.PAUSE,
  resume: SignalType.RESUME,
};

export const protoSignalType = (k: SignalKind): SignalType => signalToProto[k];

/** A signal type from a request: UNSPECIFIED or out-of-range values are refused. */
export function signalKindFromProto(field: string, t: SignalType): SignalKind {
  const entry = Object.entries(signalToProto).find(([, v]) => v === t);
  if (!entry) throw new InvalidArgument(field, "must be CANCEL, PAUSE or RESUME");
  return entry[0] as SignalKind;
}

export function protoSignal(s: PendingSignal | undefined): MessageInitShape<typeof SignalSchema> | undefined {
  return s && { signalType: protoSignalType(s.type), payload: s.payload, createdAt: toTimestamp(s.createdAtMs) };
}

export function protoCustomSignal(c: CustomSignal | undefined): MessageInitShape<typeof CustomSignalSchema> | undefined {
  return c && { checkpointId: c.checkpointId, payload: c.payload, createdAt: toTimestamp(c.createdAtMs) };
}

export function protoCheckpoint(c: CheckpointSummary): MessageInitShape<typeof CheckpointSummarySchema> {
  return { instanceId: c.instanceId, checkpointId: c.checkpointId, sizeBytes: c.sizeBytes, createdAt: toTimestamp(c.createdAtMs) };
}

export function protoEvent(e: InstanceEvent): MessageInitShape<typeof EventSchema> {
  return {
    id: e.id,
    instanceId: e.instanceId,
    eventType: e.eventType,
    subtype: e.subtype,
    checkpointId: e.checkpointId,
    payload: e.payload,
    createdAt: toTimestamp(e.createdAtMs),
  };
}

const reasons: Record<Reason, TerminationReason> = {
  completed: TerminationReason.COMPLETED,
  application_error: TerminationReason.APPLICATION_ERROR,
  crashed: TerminationReason.CRASHED,
  timeout: TerminationReason.TIMEOUT,
  heartbeat_timeout: TerminationReason.HEARTBEAT_TIMEOUT,
  cancelled: TerminationReason.CANCELLED,
  paused: TerminationReason.PAUSED,
  sleeping: TerminationReason.SLEEPING,
  orphaned: TerminationReason.ORPHANED,
  launch_failed: TerminationReason.LAUNCH_FAILED,
};

export const protoReason = (r: Reason | null): TerminationReason => (r === null ? TerminationReason.UNSPECIFIED : reasons[r]);

export function checkpointFromProto(c: ProtoCheckpointSummary): CheckpointSummary {
  return { instanceId: c.instanceId, checkpointId: c.checkpointId, sizeBytes: c.sizeBytes, createdAtMs: fromTimestamp(c.createdAt) ?? 0 };
}

export function eventFromProto(e: ProtoEvent): InstanceEvent {
  return {
    id: e.id,
    instanceId: e.instanceId,
    eventType: e.eventType,
    subtype: e.subtype,
    checkpointId: e.checkpointId,
    payload: e.payload,
    createdAtMs: fromTimestamp(e.createdAt) ?? 0,
  };
}
