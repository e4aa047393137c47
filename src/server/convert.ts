import { timestampFromMs, timestampMs, type Timestamp } from "@bufbuild/protobuf/wkt";
import { RunnerType } from "../../gen/runtara/environment/v1/environment_pb.js";
import { InvalidArgument } from "../errors.js";
import type { RunnerKind } from "../images/index.js";

export function toTimestamp(ms: number | null | undefined): Timestamp | undefined {
  return ms === null || ms === undefined ? undefined : timestampFromMs(ms);
}

export function fromTimestamp(ts: Timestamp | undefined): number | undefined {
  return ts === undefined ? undefined : timestampMs(ts);
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

const encoder = new TextEncoder();

export function jsonBytes(value: unknown): Uint8Array {
  return value === null || value === undefined ? new Uint8Array() : encoder.encode(JSON.stringify(value));
}
