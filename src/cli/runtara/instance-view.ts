/** How an instance reads in a terminal: its details, a status line, its result. */
import { InstanceStatus, TerminationReason } from "../../../gen/runtara/core/v1/types_pb.js";
import type { Instance } from "../../../gen/runtara/environment/v1/environment_pb.js";
import type { Context } from "./context.js";
import { bytes, details, duration, enumName, jsonBytes, oneLine, relativeTime, statusText } from "./output.js";

export const isTerminal = (s: InstanceStatus) => s === InstanceStatus.COMPLETED || s === InstanceStatus.FAILED || s === InstanceStatus.CANCELLED;

export function instanceDetails(ctx: Context, i: Instance): string {
  return details([
    ["instance id", i.instanceId],
    ["status", statusText(ctx, i.status)],
    ["reason", enumName(TerminationReason, i.terminationReason)],
    ["image", `${i.imageName} (${i.imageId})`],
    ["created", relativeTime(i.createdAt)],
    ["started", relativeTime(i.startedAt)],
    ["finished", relativeTime(i.finishedAt)],
    ["duration", duration(i.startedAt, i.finishedAt)],
    ["wakes", relativeTime(i.wakeAt)],
    ["checkpoint", i.checkpointId],
    ["exit code", i.exitCode === undefined ? "" : String(i.exitCode)],
    ["memory peak", i.memoryPeakBytes === undefined ? "" : bytes(i.memoryPeakBytes)],
    ["cpu", i.cpuUsageUsec === undefined ? "" : `${(Number(i.cpuUsageUsec) / 1e6).toFixed(2)}s`],
    ["input", jsonBytes(i.input)],
    ["output", jsonBytes(i.output)],
    ["error", oneLine(i.error)],
  ]);
}

/** `RUNNING`, `SUSPENDED (sleeping, wakes in 2s)`, `FAILED (crashed): message`. */
export function statusLine(ctx: Context, i: Instance): string {
  const notes = [enumName(TerminationReason, i.terminationReason), i.wakeAt ? `wakes ${relativeTime(i.wakeAt)}` : ""].filter((n) => n !== "");
  return `${statusText(ctx, i.status)}${notes.length ? ` (${notes.join(", ")})` : ""}${i.error ? `: ${oneLine(i.error)}` : ""}`;
}
