/**
 * The instance state machine, transport-free: its vocabulary, every statement that changes
 * an instance's status, and the instance tokens. Core (calls from inside instances) and the
 * environment (launches, stops, wakes) both change status only through this module.
 */
export * from "./states.js";
export type { CheckpointSummary, CustomSignal, InstanceEvent } from "./records.js";
export * as transitions from "./transitions.js";
export type { ClaimedWake, InstanceKey, LaunchTarget, NewInstance, RunOutcome } from "./transitions.js";
export { refreshHeartbeat, rowOf } from "./transitions.js";
export { pendingSignalColumns, pendingSignalSelect, toPendingSignal } from "./pending-signal.js";
export { binary, statusList, statusLiteral } from "./sql.js";
export { Tokens } from "./tokens.js";
