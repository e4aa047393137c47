/**
 * Messages between the environment and its helpers: spawn requests to runtara-launcher (in its
 * own framing, launcher-protocol.ts), commands to the spawner process (one JSON object per line
 * on its stdin), and the replies of both.
 */

/** Start a long-lived process (a workflow, or `runc run`) and report its exit later. */
export interface SpawnRequest {
  id: number;
  file: string;
  args: string[];
  cwd?: string;
  /** The child makes `cwd` its own before it enters it: 0700, and owned by uid/gid when given. */
  ownCwd?: boolean;
  /** Exactly the child's environment; absent: the launcher's own (the environment's). */
  env?: Record<string, string>;
  /** Own session and process group. */
  detached: boolean;
  uid?: number;
  gid?: number;
  /**
   * Descriptors of the environment the child writes to, reopened by the launcher through
   * /proc/<environment>/fd/<n>: the same open file, whatever its path has become since.
   */
  stdoutFd?: number;
  stderrFd?: number;
  /** The cgroup the child creates and joins before it execs (it runs nothing outside it). */
  cgroup?: CgroupSetup;
  /** RLIMIT_FSIZE of the child, soft and hard, in bytes. */
  fileSizeLimit?: number;
}

/**
 * A new cgroup in every hierarchy it spans, named `<prefix><16 hex digits>` by the launcher,
 * which the child creates and joins (or was forked ahead into), then limits.
 */
export interface CgroupSetup {
  /** Its parent directory in each hierarchy (they exist), the v2 hierarchy's first (cgroup.kill, cgroup.procs). */
  parents: string[];
  prefix: string;
  /** Limit files: the hierarchy (index into parents), the file in the cgroup, its value. */
  limits: [hierarchy: number, file: string, value: string][];
  /**
   * Files read at the run's end (at most 4), once the launcher emptied the cgroup and before it
   * removes it: the hierarchy (index into parents), the file. Each gives its first number.
   */
  reads: [hierarchy: number, file: string][];
  /** Processes the launcher keeps forked ahead, each in a cgroup of its own (see launcher.c). */
  prefork: number;
}

/** Run a short command to completion and return its output (runc state/delete, ip, pasta, umoci). */
export interface RunRequest {
  id: number;
  file: string;
  args: string[];
  timeoutMs?: number;
}

/** Answered at once: the spawner's loop is alive (asked while a command without a timeout runs). */
export interface PingRequest {
  id: number;
  ping: true;
}

export interface SpawnFailure {
  message: string;
  /** errno name (ENOENT, EACCES, ...) when the failure had one. */
  code?: string;
  /** The step of a start that failed (launcher.c's STEP_NAMES: "exec", "cwd", ...). */
  step?: string;
}

export interface RunOutcome {
  exitCode: number | null;
  signal: string | null;
  stdout: string;
  stderr: string;
  timedOut: boolean;
  /** The command could not be started, or its output could not be read. */
  error?: SpawnFailure;
}

/** A line of runtara-launcher (launcher-protocol.ts) as a reply. */
export type LauncherReply =
  /** The spawn of request `id` succeeded: the child exec'd (in its cgroup, named here, under its limits). */
  | { id: number; pid: number; startTime: string; cgroup?: string }
  /** Spawn request `id` failed. */
  | { id: number; failed: SpawnFailure }
  /** The child of spawn request `id` exited (see ChildExit). */
  | { id: number; exit: { code: number | null; signal: string | null; cgroupReads?: (string | null)[]; cgroupLeft?: true } };

/** A line of the spawner process. */
export type SpawnerReply =
  /** It is up and reading requests (its first line). */
  | { id: 0; ready: true }
  /** Run request `id` finished. */
  | { id: number; ran: RunOutcome }
  /** Ping `id` answered. */
  | { id: number; pong: true };
