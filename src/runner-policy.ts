import { FailedPrecondition } from "./errors.js";
import type { RunnerKind } from "./images/types.js";

/** Refuses a runner kind this environment may not run; throws FailedPrecondition. */
export type RunnerCheck = (kind: RunnerKind) => void;

/**
 * The native runner gives a workflow a process on the environment's host, outside any
 * container: for trusted, single-tenant use only (see `nativeRunnerAllowed` in config.ts).
 */
export function nativeRunnerCheck(allowed: boolean): RunnerCheck {
  return (kind) => {
    if (kind === "native" && !allowed) {
      throw new FailedPrecondition(
        "the native runner is disabled: it is for trusted single-tenant use and is on by default only for a " +
          "loopback-bound server without API keys; set RUNTARA_NATIVE_RUNNER=enabled to allow it, or use an OCI image",
      );
    }
  };
}
