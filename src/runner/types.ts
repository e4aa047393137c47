/**
 * The runner seam: how an instance's process is launched, observed and stopped. Nothing here
 * knows about the database or the RPC layer; exit and resource data come back as values.
 */
import type { ImageProcess } from "./oci-image.js";

export type RunnerKindName = "oci" | "native";

/** Signals `stop` accepts: a polite request and the one that cannot be ignored. */
export type StopSignal = "SIGTERM" | "SIGKILL";

/**
 * Resource limits of one launch. The OCI runner enforces all of them (cgroup + rlimit); the
 * native runner enforces memory, CPU and pids through its own cgroup when it can create one.
 */
export interface ResourceLimits {
  /** cgroup memory limit, bytes. Also the size cap of the container's `/tmp` tmpfs. */
  memoryBytes: number;
  /** CPU bandwidth: `cpuQuotaUs` of CPU time per `cpuPeriodUs` (50_000/100_000 = half a CPU). */
  cpuQuotaUs: number;
  cpuPeriodUs: number;
  /** pids cgroup limit: processes + threads in the container. */
  pidsLimit: number;
  /** RLIMIT_NOFILE (soft = hard). */
  nofile: number;
  /**
   * RLIMIT_FSIZE (soft = hard), bytes: the largest file the process may write (beyond: SIGXFSZ,
   * which ends it, or EFBIG). Bounds what one run puts on the disk per file, its logs included.
   */
  fileBytes: number;
}

/** Defaults a caller may use when it has no configuration of its own. */
export const DEFAULT_LIMITS: Readonly<ResourceLimits> = Object.freeze({
  memoryBytes: 512 * 1024 * 1024,
  cpuQuotaUs: 100_000,
  cpuPeriodUs: 100_000,
  pidsLimit: 512,
  nofile: 4096,
  fileBytes: 1024 ** 3,
});

export interface LaunchSpec {
  /** Instance id, `[A-Za-z0-9._:-]{1,128}` (validated again here: it becomes a container id). */
  instanceId: string;
  tenantId: string;
  /** For messages only. */
  imageId?: string;
  /** The image's executable. The native runner runs it; the OCI runner ignores it. */
  binaryPath: string;
  /** OCI only: the image bundle directory, holding `rootfs/binary`. Required by the OCI runner. */
  bundlePath?: string;
  /**
   * OCI only: the process an OCI image archive's config describes, run in its unpacked
   * rootfs; without it the container runs `/binary`.
   */
  imageProcess?: ImageProcess;
  /**
   * Absolute run directory (`DATA_DIR/runs/<tenant>/<instance>`), created by the caller.
   * Holds `stdout.log` and `stderr.log` (appended to: a relaunch keeps earlier runs' output;
   * each capped by the runner's `maxLogBytes`)
   * and, for OCI, `config.json` and `init.pid`; mounted at `/data` in a container and the
   * working directory of a native process.
   */
  runDir: string;
  /**
   * Exactly the environment the process gets. The runner adds nothing — not even PATH: the
   * process is started by absolute path, and SPEC §4 says nothing else leaks in.
   */
  env: Readonly<Record<string, string>>;
  /** A line written to both logs before the process starts (marks where a run begins). */
  logHeader?: string;
  limits: Readonly<ResourceLimits>;
  /** OCI only; see {@link NetworkMode}. */
  networkMode: NetworkMode;
  /**
   * OCI only: host directory holding core's Unix socket, mounted read-only at
   * {@link CORE_SOCKET_DIR_IN_CONTAINER} when the container has its own network namespace
   * (host loopback, and so core's TCP port, is out of its reach).
   */
  coreSocketDir?: string;
}

/**
 * Container networking. `isolated`: an own network namespace in which the host's loopback
 * services are unreachable; outbound traffic goes through pasta when it is installed, else
 * there is none. `none`: an own network namespace with loopback only. `host`: the host's
 * network namespace (explicit opt-in: the workflow reaches every host loopback service).
 */
export type NetworkMode = "isolated" | "none" | "host";

/** Where a container finds `coreSocketDir`. */
export const CORE_SOCKET_DIR_IN_CONTAINER = "/run/runtara";
/** Name of core's socket in `coreSocketDir`. */
export const CORE_SOCKET_NAME = "core.sock";
/** RUNTARA_CORE_URL of a container that reaches core through the socket. */
export const CORE_SOCKET_URL_IN_CONTAINER = `unix:${CORE_SOCKET_DIR_IN_CONTAINER}/${CORE_SOCKET_NAME}`;

/** Resource use of a run, from its cgroup; undefined where the runner cannot measure it (a native process without a cgroup: both). */
export interface ExitMetrics {
  /** Peak memory of the cgroup (OCI: includes the runtime's short-lived init). */
  memoryPeakBytes: bigint | undefined;
  /** CPU time (user + system) of the container's cgroup, microseconds. */
  cpuUsageUsec: bigint | undefined;
}

export const NO_METRICS: Readonly<ExitMetrics> = Object.freeze({ memoryPeakBytes: undefined, cpuUsageUsec: undefined });

export interface ExitInfo {
  /**
   * Exit status. For OCI this is the runtime's exit code, which is the container process's
   * exit code, or 128+n when the process was killed by signal n (runc/crun convention).
   * null when the process was killed by a signal (native) or the status is unknowable
   * (an adopted process that is not our child).
   */
  exitCode: number | null;
  /** Signal that ended the process (native), or the runtime itself (OCI), e.g. "SIGKILL". */
  signal: string | null;
  /** Last 64 KiB of what this run wrote to stderr, UTF-8, never split inside a character. */
  stderrTail: string;
  metrics: ExitMetrics;
}

export interface RunningProcess {
  readonly kind: RunnerKindName;
  readonly instanceId: string;
  /**
   * Host pid of the workflow process: the native child, or the container's init (tini, or the
   * workflow binary without one; pid 1 inside) as seen from the host; either lives exactly as
   * long as the container. Together with `startTime` it identifies this
   * process after a restart of the environment (pids are reused; start times are not).
   * OCI edge case: a container process that exited before its start time could be read is
   * stood in for by the runtime process (runc), which lives until the container is deleted.
   */
  readonly pid: number;
  /** Start time of `pid` in clock ticks since boot (/proc/<pid>/stat field 22). */
  readonly startTime: bigint;
  /** OCI container id (`runtara-` + the instance id, see `containerIdFor`); undefined for native. */
  readonly containerId?: string;
  /** Date.now() when the process was spawned. */
  readonly launchedAtMs: number;
  /** Milliseconds from spawn until the process was known to be running (OCI: container started). */
  readonly launchMs: number;
  /**
   * Settles once the process has exited and everything of it has been cleaned up (OCI: the
   * container deleted, its cgroup read and removed). Never rejects.
   */
  readonly exited: Promise<ExitInfo>;
  /**
   * Delivers a signal (native: to the whole process group; OCI: to the container's init, which
   * takes the pid namespace with it on SIGKILL). Resolves when delivered, not when the process
   * has exited — await `exited` for that. A no-op once the process has exited.
   */
  stop(signal: StopSignal): Promise<void>;
}

/** What a previous run of the environment recorded about a process it launched. */
export interface AdoptSpec {
  instanceId: string;
  pid: number;
  startTime: bigint;
  /** OCI only: the container id recorded at launch. */
  containerId?: string;
  runDir: string;
}

export interface Runner {
  readonly kind: RunnerKindName;
  /** Starts the process; resolves once it is running. Rejects with `LaunchError` (or `RuntimeUnavailable`). */
  launch(spec: LaunchSpec): Promise<RunningProcess>;
  /**
   * Resumes watching a process launched by an earlier run of the environment. Returns null
   * when that process is gone (or the pid now belongs to another process). The exit code of
   * an adopted process is unknown (it is not our child), so `exitCode` is null.
   */
  adopt(spec: AdoptSpec): Promise<RunningProcess | null>;
  /** Processes launched or adopted by this runner that have not finished exiting. */
  activeCount(): number;
  /**
   * Environment shutdown without stopping workflows: the processes keep running (the next
   * start adopts them), but no longer hold this process's event loop open. Until then, a
   * running child keeps Node alive like any child process, so awaiting `exited` just works.
   */
  detachAll(): void;
}
