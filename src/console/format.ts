/** How values read in the console: times, durations, sizes, statuses, JSON bytes. */
import type { Timestamp } from "@bufbuild/protobuf/wkt";
import { InstanceStatus, TerminationReason } from "../../gen/runtara/core/v1/types_pb.js";

export function millis(ts: Timestamp | undefined): number | undefined {
  return ts === undefined ? undefined : Number(ts.seconds) * 1000 + Math.floor(ts.nanos / 1e6);
}

export function formatTime(ts: Timestamp | undefined): string {
  const ms = millis(ts);
  return ms === undefined ? "–" : new Date(ms).toLocaleString(undefined, { dateStyle: "short", timeStyle: "medium" });
}

export function formatDuration(ms: number | undefined): string {
  if (ms === undefined || ms < 0) return "–";
  if (ms < 1000) return `${Math.round(ms)} ms`;
  const s = ms / 1000;
  if (s < 60) return `${s.toFixed(1)} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ${Math.round(s % 60)} s`;
  return `${Math.floor(m / 60)} h ${m % 60} min`;
}

/** From start (or creation) to finish, or to now while it runs. */
export function runDuration(i: { createdAt?: Timestamp; startedAt?: Timestamp; finishedAt?: Timestamp }, now = Date.now()): number | undefined {
  const from = millis(i.startedAt) ?? millis(i.createdAt);
  return from === undefined ? undefined : (millis(i.finishedAt) ?? now) - from;
}

export function formatBytes(n: bigint | number | undefined): string {
  if (n === undefined) return "–";
  let v = Number(n);
  for (const unit of ["B", "KiB", "MiB", "GiB"]) {
    if (v < 1024 || unit === "GiB") return unit === "B" ? `${v} B` : `${v.toFixed(1)} ${unit}`;
    v /= 1024;
  }
  return `${v} B`;
}

/** List counts stop here (src/db/count.ts): a count at the cap means "at least". */
const COUNT_CAP = 10_000n;

export function formatCount(n: bigint): string {
  return n >= COUNT_CAP ? `${COUNT_CAP.toLocaleString()}+` : n.toLocaleString();
}

export const statusName = (s: InstanceStatus): string => InstanceStatus[s] ?? String(s);

export const reasonName = (r: TerminationReason): string => (r === TerminationReason.UNSPECIFIED ? "" : (TerminationReason[r] ?? String(r)).toLowerCase());

export const isTerminal = (s: InstanceStatus): boolean => s === InstanceStatus.COMPLETED || s === InstanceStatus.FAILED || s === InstanceStatus.CANCELLED;

/** The statuses a filter offers, in lifecycle order. */
export const STATUSES = [InstanceStatus.PENDING, InstanceStatus.RUNNING, InstanceStatus.SUSPENDED, InstanceStatus.COMPLETED, InstanceStatus.FAILED, InstanceStatus.CANCELLED];

const decoder = new TextDecoder();

/** UTF-8 JSON bytes parsed, or the text itself when it is not JSON; undefined when empty. */
export function jsonOf(bytes: Uint8Array): unknown {
  if (bytes.length === 0) return undefined;
  const text = decoder.decode(bytes);
  try {
    return JSON.parse(text) as unknown;
  } catch {
    return text;
  }
}
