import type { RunnerKind } from "../images/index.js";
import type { Status } from "../core/types.js";

export type TerminationReason =
  | "completed"
  | "application_error"
  | "crashed"
  | "timeout"
  | "heartbeat_timeout"
  | "cancelled"
  | "paused"
  | "sleeping"
  | "orphaned"
  | "launch_failed";

export interface Instance {
  instanceId: string;
  tenantId: string;
  imageId: string | null;
  imageName: string;
  status: Status;
  terminationReason: TerminationReason | null;
  exitCode: number | null;
  checkpointId: string | null;
  createdAtMs: number;
  startedAtMs: number | null;
  finishedAtMs: number | null;
  heartbeatAtMs: number | null;
  wakeAtMs: number | null;
  input: Uint8Array | null;
  output: Uint8Array | null;
  error: string | null;
  stderr: string | null;
  memoryPeakBytes: bigint | null;
  cpuUsageUsec: bigint | null;
  timeoutSeconds: number;
  env: Record<string, string>;
  /** Exact sort keys for list paging. */
  sortKeys: { created: string; finished: string | null };
}

/** What a launch needs, read from the instance and its image in one query. */
export interface LaunchTarget {
  instanceId: string;
  tenantId: string;
  imageId: string;
  runnerType: RunnerKind;
  timeoutSeconds: number;
  checkpointId: string | null;
  env: Record<string, string>;
}

/** How a run ended, as the supervisor saw it. */
export interface RunOutcome {
  exitCode: number | null;
  stderrTail: string;
  memoryPeakBytes: bigint | undefined;
  cpuUsageUsec: bigint | undefined;
  /** The verdict if the instance had not settled itself: why the environment ended it. */
  verdict: "crashed" | "timeout" | "cancelled" | "heartbeat_timeout";
}
