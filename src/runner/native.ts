import { spawn, type ChildProcess } from "node:child_process";
import type { Logger } from "pino";
import { LaunchError } from "./errors.js";
import { openLogs, readStderrTailOfRunDir } from "./logs.js";
import { neverSettles, requireExecutable, type Holder } from "./common.js";
import { isSameProcess, readProcStatSync, watchPid } from "./proc.js";
import { validateSpec } from "./spec.js";
import { NO_METRICS, type AdoptSpec, type ExitInfo, type LaunchSpec, type Runner, type RunningProcess, type StopSignal } from "./types.js";

export interface NativeRunnerOptions {
  /** Poll interval for adopted processes (not our children, so no exit event). @default 1000 */
  adoptPollMs?: number;
  logger?: Logger;
}

/**
 * The native runner: the image's executable as a direct child, in its own session and process
 * group (so stop reaches everything it forked, and a signal aimed at the environment's group
 * does not reach it), with exactly `spec.env` as its environment, the run directory as its
 * working directory, and stdout/stderr appended to files there. No isolation and no limits:
 * it is the development runner. No metrics either: Node does not expose a child's rusage, and
 * /proc is gone by the time the exit event fires.
 */
export class NativeRunner implements Runner {
  readonly kind = "native" as const;
  /** Active processes: our child of a launch, the poll of an adoption. */
  private readonly active = new Map<RunningProcess, Holder>();
  private readonly adoptPollMs: number;

  constructor(private readonly options: NativeRunnerOptions = {}) {
    this.adoptPollMs = options.adoptPollMs ?? 1_000;
  }

  activeCount(): number {
    return this.active.size;
  }

  async launch(spec: LaunchSpec): Promise<RunningProcess> {
    validateSpec(spec);
    await requireExecutable(spec.binaryPath, `image ${spec.imageId ?? "?"}`);
    const logs = openLogs(spec.runDir);
    const launchedAtMs = Date.now();
    const t0 = performance.now();
    let child: ChildProcess;
    try {
      child = spawn(spec.binaryPath, [], {
        cwd: spec.runDir,
        env: { ...spec.env },
        detached: true,
        stdio: ["ignore", logs.stdoutFd, logs.stderrFd],
      });
    } catch (e) {
      logs.close();
      throw new LaunchError("spawn_failed", `could not start ${spec.binaryPath}: ${(e as Error).message}`, "", { cause: e });
    }
    const pid = child.pid;
    if (pid === undefined) {
      // spawn reports exec failures (ENOENT, EACCES, ENOEXEC) through 'error', not a throw.
      const error = await new Promise<Error>((resolve) => child.once("error", resolve));
      logs.close();
      throw new LaunchError("spawn_failed", `could not start ${spec.binaryPath}: ${error.message}`, "", { cause: error });
    }
    // Until the event loop turns, libuv cannot reap the child: its /proc entry is still there.
    const startTime = readProcStatSync(pid)?.startTime ?? 0n;

    let exitedNow = false;
    const exited = new Promise<ExitInfo>((resolve) => {
      child.once("exit", (code, signal) => {
        exitedNow = true;
        // Anything the workflow left running in its group goes with it, as in a container.
        // The group id stays allocated while any member lives; with none left this is ESRCH,
        // unless within the microseconds since the reap (same tick) the pid was reused by a
        // new group leader — a window we accept.
        signalGroup(pid, "SIGKILL");
        const stderrTail = logs.stderrTail();
        logs.close();
        resolve({ exitCode: code, signal, stderrTail, metrics: { ...NO_METRICS } });
      });
    });
    child.on("error", (e) => this.options.logger?.warn({ err: e, instanceId: spec.instanceId }, "native process error"));

    const proc: RunningProcess = {
      kind: "native",
      instanceId: spec.instanceId,
      pid,
      startTime,
      launchedAtMs,
      launchMs: performance.now() - t0,
      exited,
      stop: async (signal: StopSignal) => {
        if (!exitedNow) signalGroup(pid, signal);
      },
    };
    this.track(proc, { child });
    return proc;
  }

  async adopt(spec: AdoptSpec): Promise<RunningProcess> {
    const abort = new AbortController();
    const exited = (async (): Promise<ExitInfo> => {
      await watchPid(spec.pid, spec.startTime, { intervalMs: this.adoptPollMs, signal: abort.signal }).catch(() => neverSettles());
      return { exitCode: null, signal: null, stderrTail: readStderrTailOfRunDir(spec.runDir), metrics: { ...NO_METRICS } };
    })();
    const proc: RunningProcess = {
      kind: "native",
      instanceId: spec.instanceId,
      pid: spec.pid,
      startTime: spec.startTime,
      launchedAtMs: Date.now(),
      launchMs: 0,
      exited,
      stop: async (signal: StopSignal) => {
        // Not our child: make sure the pid still names the process we launched.
        if (await isSameProcess(spec.pid, spec.startTime)) signalGroup(spec.pid, signal);
      },
    };
    this.track(proc, { abort });
    return proc;
  }

  detachAll(): void {
    for (const { child, abort } of this.active.values()) {
      child?.unref();
      abort?.abort();
    }
  }

  private track(proc: RunningProcess, holder: Holder) {
    this.active.set(proc, holder);
    void proc.exited.then(() => this.active.delete(proc));
  }
}

function signalGroup(pgid: number, signal: StopSignal) {
  try {
    process.kill(-pgid, signal);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== "ESRCH") throw e;
  }
}
