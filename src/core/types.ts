export const STATUSES = ["pending", "running", "suspended", "completed", "failed", "cancelled"] as const;
export type Status = (typeof STATUSES)[number];
export const TERMINAL: readonly Status[] = ["completed", "failed", "cancelled"];
export const isTerminal = (s: Status) => TERMINAL.includes(s);

export const SIGNAL_KINDS = ["cancel", "pause", "resume"] as const;
export type SignalKind = (typeof SIGNAL_KINDS)[number];

export interface PendingSignal {
  type: SignalKind;
  payload: Uint8Array;
  createdAtMs: number;
}

export interface CustomSignal {
  checkpointId: string;
  payload: Uint8Array;
  createdAtMs: number;
}

export interface CheckpointSummary {
  instanceId: string;
  checkpointId: string;
  sizeBytes: bigint;
  createdAtMs: number;
}

export interface InstanceEvent {
  id: bigint;
  instanceId: string;
  eventType: string;
  subtype: string;
  checkpointId: string;
  payload: Uint8Array;
  createdAtMs: number;
}
