/**
 * The vocabulary of the instance state machine (SPEC §5), shared by core and the environment.
 * Status sets used in SQL are built from these constants (./sql.ts), never written as literals.
 */
export const STATUSES = ["pending", "running", "suspended", "completed", "failed", "cancelled"] as const;
export type Status = (typeof STATUSES)[number];

/** Nothing moves an instance out of these. */
export const TERMINAL = ["completed", "failed", "cancelled"] as const satisfies readonly Status[];
/** Live or resumable: everything that is not terminal. */
export const ACTIVE = ["pending", "running", "suspended"] as const satisfies readonly Status[];
/** Holding a process, or about to: a launch is under way or the process runs. */
export const LAUNCHED = ["pending", "running"] as const satisfies readonly Status[];

export const isTerminal = (s: Status): boolean => (TERMINAL as readonly Status[]).includes(s);
export const isStatus = (s: string): s is Status => (STATUSES as readonly string[]).includes(s);

export const TERMINATION_REASONS = [
  "completed",
  "application_error",
  "crashed",
  "timeout",
  "heartbeat_timeout",
  "cancelled",
  "paused",
  "sleeping",
  "orphaned",
  "launch_failed",
] as const;
export type TerminationReason = (typeof TERMINATION_REASONS)[number];

export const SIGNAL_KINDS = ["cancel", "pause", "resume"] as const;
export type SignalKind = (typeof SIGNAL_KINDS)[number];

export interface PendingSignal {
  type: SignalKind;
  payload: Uint8Array;
  createdAtMs: number;
}
