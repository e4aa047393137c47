import { isDatabaseUnavailable } from "../db/errors.js";
import { DomainError, FailedPrecondition, Unavailable } from "../errors.js";
import { LaunchError } from "../runner/index.js";

/**
 * What a failed launch means for the caller and for the instance's `error` column:
 * - a runtime or image problem (no usable runc, binary missing, the runtime refused the
 *   container) is FAILED_PRECONDITION with the runner's message;
 * - a database or core outage is UNAVAILABLE (retryable);
 * - anything else is a bug: INTERNAL for the caller with nothing of the original message,
 *   which stays in the log.
 */
export function classifyLaunchError(e: unknown, instanceId: string): { error: Error; recorded: string } {
  if (e instanceof LaunchError || e instanceof FailedPrecondition) {
    const recorded = `launch failed: ${e.message}`;
    return { error: new FailedPrecondition(`${recorded} (instance ${instanceId} is FAILED, launch_failed)`), recorded };
  }
  if (e instanceof Unavailable || isDatabaseUnavailable(e)) {
    const message = e instanceof Unavailable ? e.message : "database unavailable, retry later";
    return { error: new Unavailable(message), recorded: `launch failed: ${message}` };
  }
  if (e instanceof DomainError) return { error: e, recorded: `launch failed: ${e.message}` };
  return { error: e instanceof Error ? e : new Error(String(e)), recorded: "launch failed: internal error (see the environment's log)" };
}
