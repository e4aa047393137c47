/** What an instance leaves in core besides its status: checkpoints, events, custom signals. */
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
