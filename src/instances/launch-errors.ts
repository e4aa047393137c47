import { isDatabaseUnavailable } from "../db/errors.js";
import { DomainError, FailedPrecondition, Unavailable } from "../errors.js";
import { LaunchError, RuntimeUnavailable, type LaunchErrorReason } from "../runner/index.js";

const TRANSIENT = new Set<LaunchErrorReason>(["already_running", "start_timeout"]);

/**
 * What a tenant (the instance's `error`, the RPC answer) learns of a runner failure: a short
 * sentence per reason. The runner's own message names host paths (DATA_DIR, the image store)
 * and quotes the runtime's stderr; that stays in the environment's log.
 */
const LAUNCH_ERROR_TEXT: Record<LaunchErrorReason, string> = {
  invalid_spec: "the launch request is invalid",
  binary_not_found: "the image's executable is missing or not executable",
  spawn_failed: "the process could not be started",
  start_failed: "the container runtime could not start the container",
  start_timeout: "the container did not start in time",
  already_running: "the previous run's container is still there",
};

/**
 * What a failed launch means for the caller and for the instance's `error` column:
 * - a runtime or image problem (no usable runc, binary missing, the runtime refused the
 *   container) is FAILED_PRECONDITION with a short sanitized message (details in the log);
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
    const recorded = `launch failed: ${LAUNCH_ERROR_TEXT[e.reason]}`;
    return { error: new Unavailable(`${recorded} (${outcome}); retry`), recorded };
  }
  if (e instanceof LaunchError || e instanceof RuntimeUnavailable) {
    const text = e instanceof LaunchError ? LAUNCH_ERROR_TEXT[e.reason] : "no usable container runtime on this host (see the environment's log)";
    const recorded = `launch failed: ${text}`;
    return { error: new FailedPrecondition(`${recorded} (${outcome})`), recorded };
  }
  if (e instanceof FailedPrecondition) {
    // Our own checks (damaged image, runner policy): their messages name ids, never paths.
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
