/**
 * Runners: launch an instance's process (an OCI container or a native child), observe its
 * exit, stop it. Knows nothing about the database or the RPC layer; `src/instances` turns
 * what it reports into guarded writes. WASM is not a runner here: callers answer
 * FAILED_PRECONDITION ("wasm runner not available yet") before reaching this module.
 */
import type { Logger } from "pino";
import { NativeRunner, type NativeRunnerOptions } from "./native.js";
import { OciRunner, type OciRunnerOptions } from "./oci.js";
import { Spawner } from "./spawner.js";
import type { Runner, RunnerKindName, RunningProcess, StopSignal } from "./types.js";

export type {
  AdoptSpec,
  ExitInfo,
  ExitMetrics,
  LaunchSpec,
  NetworkMode,
  ResourceLimits,
  Runner,
  RunnerKindName,
  RunningProcess,
  StopSignal,
} from "./types.js";
export { CORE_SOCKET_NAME, CORE_SOCKET_URL_IN_CONTAINER, DEFAULT_LIMITS } from "./types.js";
export type { IdMapping } from "./idmap.js";
export { LaunchError, RuntimeUnavailable, type LaunchErrorReason } from "./errors.js";
export { OciRunner, type OciRunnerOptions, type RuntimeInfo } from "./oci.js";
export { cgroupOwner, NativeRunner, type NativeRunnerOptions } from "./native.js";
export { containerIdFor, instanceIdOfContainer } from "./oci-spec.js";
export { bootId, isSameProcess, readProcessStartTime, watchPid } from "./proc.js";
export { STDERR_TAIL_BYTES } from "./logs.js";
export { DEFAULT_MAX_LOG_BYTES, MIN_LOG_BYTES } from "./log-cap.js";
export type { AggregateLimits } from "./parent-cgroup.js";
export { ImageUnpackError, type ImageProcess } from "./oci-image.js";
export { Spawner, SpawnError, type SpawnedChild, type CommandResult } from "./spawner.js";

export interface RunnersOptions {
  oci?: Omit<OciRunnerOptions, "spawner">;
  native?: Omit<NativeRunnerOptions, "spawner">;
  logger?: Logger;
}

export interface Runners {
  oci: OciRunner;
  native: NativeRunner;
  runnerFor(kind: RunnerKindName): Runner;
  /** Ends the helper processes both share (after detachAll: running processes are not touched). */
  close(): void;
}

/**
 * Both runners, sharing one Spawner (its helper processes start on first use). Nothing is probed here (no work in constructors): the OCI runtime is found on
 * the first launch, or earlier with `await runners.oci.runtime()`, which rejects with
 * `RuntimeUnavailable` on a host without a usable runc/crun — launches then reject the same way.
 */
export function createRunners(options: RunnersOptions = {}): Runners {
  // One spawner for both: every fork happens in its small helpers, off this event loop.
  const spawner = new Spawner({ logger: options.logger });
  const oci = new OciRunner({ ...options.oci, spawner });
  const native = new NativeRunner({ ...options.native, spawner });
  return {
    oci,
    native,
    runnerFor: (kind) => (kind === "oci" ? oci : native),
    close: () => spawner.close(),
  };
}

/**
 * Asks the process to stop, then insists: SIGTERM, up to `graceMs` for it to exit, then
 * SIGKILL. Resolves with how it ended.
 */
export async function stopWithGrace(proc: RunningProcess, graceMs: number): Promise<Awaited<RunningProcess["exited"]>> {
  const exitedWithin = (ms: number) =>
    Promise.race([proc.exited.then(() => true), new Promise<boolean>((r) => setTimeout(() => r(false), ms).unref())]);
  await proc.stop("SIGTERM" satisfies StopSignal);
  if (!(await exitedWithin(graceMs))) await proc.stop("SIGKILL");
  return proc.exited;
}
