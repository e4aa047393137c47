import type { MessageInitShape } from "@bufbuild/protobuf";
import {
  type CheckpointSummarySchema,
  type CustomSignalSchema,
  type EventSchema,
  InstanceStatus,
  type SignalSchema,
  SignalType,
} from "../../gen/runtara/core/v1/types_pb.js";
import { InvalidArgument } from "../errors.js";
import { toTimestamp } from "../server/convert.js";
import type { CheckpointSummary, CustomSignal, InstanceEvent, PendingSignal, SignalKind, Status } from "./types.js";

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
