import { isDatabaseUnavailable } from "../db/errors.js";
import { DomainError, FailedPrecondition, Unavailable } from "../errors.js";
import { LaunchError, type LaunchErrorReason } from "../runner/index.js";

const TRANSIENT = new Set<LaunchErrorReason>(["already_running", "start_timeout"]);

/**
 * What a failed launch means for the caller and for the instance's `error` column:
 * - a runtime or image problem (no usable runc, binary missing, the runtime refused the
 *   container) is FAILED_PRECONDITION with the runner's message;
 * - a passing one (the previous run's container still there, a start timeout) is UNAVAILABLE;
 * - a database or core outage is UNAVAILABLE (retryable);
 * - anything else is a bug: INTERNAL for the caller with nothing of the original message,
 *   which stays in the log.
 * `outcome` tells the caller what became of the instance ("instance x is FAILED, launch_failed").
 */
export function classifyLaunchError(e: unknown, outcome: string): { error: Error; recorded: string } {
  // The previous run still holding the container, or a runtime too slow to start it: try
  // again later, nothing is wrong with the image.
  if (e instanceof LaunchError && TRANSIENT.has(e.reason)) {
    const recorded = `launch failed: ${e.message}`;
    return { error: new Unavailable(`${recorded} (${outcome}); retry`), recorded };
  }
  if (e instanceof LaunchError || e instanceof FailedPrecondition) {
    const recorded = `launch failed: ${e.message}`;
    return { error: new FailedPrecondition(`${recorded} (${outcome})`), recorded };
  }
  if (e instanceof Unavailable || isDatabaseUnavailable(e)) {
    const message = e instanceof Unavailable ? e.message : "database unavailable, retry later";
    return { error: new Unavailable(message), recorded: `launch failed: ${message}` };
  }
  if (e instanceof DomainError) return { error: e, recorded: `launch failed: ${e.message}` };
  return { error: e instanceof Error ? e : new Error(String(e)), recorded: "launch failed: internal error (see the environment's log)" };
}
