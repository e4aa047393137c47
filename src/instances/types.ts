import type { Status, TerminationReason } from "../lifecycle/index.js";

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
