import { FailedPrecondition } from "../errors.js";

/**
 * No usable OCI runtime on this host (not installed, or it failed its probe, e.g. crun 1.8 on
 * a hybrid cgroup host). A FailedPrecondition, so the edge answers FAILED_PRECONDITION.
 */
export class RuntimeUnavailable extends FailedPrecondition {
  constructor(
    /** The runtime(s) looked for, e.g. "runc" or "crun, runc". */
    readonly runtime: string,
    detail: string,
  ) {
    super(`OCI runtime unavailable (${runtime}): ${detail}`);
    this.name = "RuntimeUnavailable";
  }
}

export type LaunchErrorReason =
  /** The spec is unusable: bad id, relative run dir, env with '=' or NUL, limits out of range. */
  | "invalid_spec"
  /** The image's executable (native) or bundle rootfs/binary (OCI) is missing or not executable. */
  | "binary_not_found"
  /** The OS refused to start the process or the runtime. */
  | "spawn_failed"
  /** The runtime exited before the container was running; `stderr` holds its message. */
  | "start_failed"
  /** The runtime neither started the container nor failed within the start timeout. */
  | "start_timeout"
  /** A container with this id exists and is not stopped (another live run of the instance). */
  | "already_running";

/** A launch that did not produce a running process; nothing of it is left behind. */
export class LaunchError extends Error {
  constructor(
    readonly reason: LaunchErrorReason,
    message: string,
    /** What the process or runtime wrote to stderr before failing, if anything. */
    readonly stderr = "",
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = "LaunchError";
  }
}
