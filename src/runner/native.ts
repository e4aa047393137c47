import { createHash } from "node:crypto";
import { realpathSync } from "node:fs";
import { chown, readdir, stat } from "node:fs/promises";
import type { Logger } from "pino";
import { detectCgroupLayout, removeCgroup, type CgroupLayout } from "./cgroup.js";
import { LaunchError } from "./errors.js";
import { adoptLogs, openLogs } from "./logs.js";
import { DEFAULT_MAX_LOG_BYTES } from "./log-cap.js";
import { limitParentCgroup, type AggregateLimits } from "./parent-cgroup.js";
import { neverSettles, type Holder } from "./common.js";
import { CgroupPlacement, ProcessCgroup } from "./process-cgroup.js";
import { isSameProcess, watchPid } from "./proc.js";
import { SpawnError, Spawner, type SpawnedChild } from "./spawner.js";
import { validateSpec } from "./spec.js";
import {
  NO_METRICS,
  type AdoptSpec,
  type ExitInfo,
  type ExitMetrics,
  type LaunchSpec,
  type Runner,
  type RunningProcess,
  type StopSignal,
} from "./types.js";

export interface NativeRunnerOptions {
  /** Poll interval for adopted processes (not our children, so no exit event). @default 1000 */
  adoptPollMs?: number;
  /**
   * Run processes as this unprivileged user (needs root). Its run directory is handed to it
   * for the run and back to us (0700) afterwards. @default the environment's own user
   */
  runAs?: { uid: number; gid: number };
  /** cgroup under which each process gets `native-<owner>-<launcher generation>-<16 random hex digits>` (named by the launcher). @default "/runtara" */
  cgroupParent?: string;
  /**
   * Whose processes these are (see cgroupOwner): in every cgroup's name, so that recovery
   * removes only its own environment's, by a name the process cannot change. @default "local"
   */
  owner?: string;
  /**
   * Limits on `cgroupParent`, which both runners share: all runs together (applied at the
   * first launch or adoption; a failure is logged, runs go on). @default none
   */
  aggregateLimits?: AggregateLimits;
  /** Cap of each of a run's stdout.log and stderr.log: the head and the tail are kept (see capLogFile). @default 16 MiB */
  maxLogBytes?: number;
  /**
   * How often a cgroup the launcher had to leave (something in it would not die: a process
   * stuck in the kernel) is tried again, until it can be removed. @default 60000
   */
  leftCgroupRetryMs?: number;
  /** Where processes are forked (shared with the OCI runner by createRunners). @default its own */
  spawner?: Spawner;
  logger?: Logger;
}

/** Names of native processes' cgroups start with this (OCI containers' with "runtara-"). */
const NATIVE_CGROUP_PREFIX = "native-";

/**
 * Processes the launcher keeps forked ahead, each already in a new cgroup of its own: a start
 * then skips the wait for its cgroup join (an RCU grace period, 6-14 ms here, when starts
 * are not back to back). Each costs a process (a small copy of the launcher) and an empty cgroup.
 */
const PREFORKED = 2;

/** Age after which another environment's empty native cgroup is removed (see cgroupPlacement). */
const FOREIGN_EMPTY_CGROUP_AGE_MS = 3_600_000;

/** Whether the directory (a cgroup: its mtime is its creation time) is older than `ms`. */
async function createdBefore(dir: string, ms: number): Promise<boolean> {
  return ((await stat(dir).catch(() => undefined))?.mtimeMs ?? Infinity) < ms;
}

/**
 * The owner tag of the native processes an environment launches: of its DATA_DIR (the real
 * path) and replica id, so that environments and replicas sharing a host never take each
 * other's cgroups for their own.
 */
export function cgroupOwner(dataDir: string, replicaId: string): string {
  const real = (() => {
    try {
      return realpathSync(dataDir);
    } catch {
      return dataDir;
    }
  })();
  return createHash("sha256").update(`${real}\0${replicaId}`).digest("hex").slice(0, 8);
}

/**
 * The native runner, for trusted single-tenant use: the image's executable as a direct
 * child, in its own session and process group (so a signal aimed at the environment's group
 * does not reach it), with exactly `spec.env` as its environment, the run directory (0700) as
 * its working directory, and stdout/stderr appended to files there. With `runAs` it runs as
 * that user; when cgroups are writable it runs in its own cgroup with the spec's memory, CPU
 * and pids limits, which also gives the exit metrics and kills whatever it leaves behind,
 * even children that called setsid(). No filesystem or network isolation: processes of one
 * user can read each other's run directories while they run and signal each other.
 */
export class NativeRunner implements Runner {
  readonly kind = "native" as const;
  /** Active processes: our child of a launch, the poll of an adoption. */
  private readonly active = new Map<RunningProcess, Holder>();
  private readonly adoptPollMs: number;
  private readonly maxLogBytes: number;
  private readonly leftCgroupRetryMs: number;
  private readonly cgroupParent: string;
  /** Names of this runner's cgroups (see NativeRunnerOptions.owner) start with this. */
  private readonly ownPrefix: string;
  private readonly spawner: Spawner;
  private cgroups: Promise<CgroupPlacement | undefined> | undefined;
  /** Runs (launched or adopted, not yet cleaned up) per run directory. */
  private readonly runDirClaims = new Map<string, number>();

  constructor(private readonly options: NativeRunnerOptions = {}) {
    this.adoptPollMs = options.adoptPollMs ?? 1_000;
    this.maxLogBytes = options.maxLogBytes ?? DEFAULT_MAX_LOG_BYTES;
    this.leftCgroupRetryMs = options.leftCgroupRetryMs ?? 60_000;
    this.cgroupParent = (options.cgroupParent ?? "/runtara").replace(/\/+$/, "");
    this.ownPrefix = `${NATIVE_CGROUP_PREFIX}${options.owner ?? "local"}-`;
    this.spawner = options.spawner ?? new Spawner({ logger: options.logger });
    this.spawner.onLauncherGone((generation) => void this.removeGeneration(generation).catch((e: unknown) => this.options.logger?.warn({ err: e }, "could not look for what a dead launcher left")));
  }

  activeCount(): number {
    return this.active.size;
  }

  async launch(spec: LaunchSpec): Promise<RunningProcess> {
    validateSpec(spec);
    const placement = await this.cgroupPlacement();
    const logs = openLogs(spec.runDir, this.maxLogBytes, spec.logHeader);
    this.claimCount(spec.runDir); // the launched child takes the directory (see ownCwd)
    const launchedAtMs = Date.now();
    const t0 = performance.now();
    let child: SpawnedChild;
    try {
      // The launcher puts the child in its cgroup and under RLIMIT_FSIZE (soft and hard; Node
      // cannot set an rlimit for a child) before it execs: moving it after the exec would race
      // its first fork.
      child = await this.spawner.spawn({
        file: spec.binaryPath,
        args: [],
        cwd: spec.runDir,
        // The run directory becomes the process's own: 0700, owned by `runAs` for the run. Its
        // parents (DATA_DIR, runs/, runs/<tenant>) are 0711 root: the exact path is traversable,
        // nothing can be listed, and every other run directory is 0700 and not this user's.
        ownCwd: true,
        env: { ...spec.env },
        detached: true,
        stdoutFd: logs.stdoutFd,
        stderrFd: logs.stderrFd,
        fileSizeLimit: spec.limits.fileBytes,
        ...(placement ? { cgroup: placement.setup(this.ownPrefix, spec.limits, PREFORKED) } : {}),
        ...this.options.runAs,
      });
    } catch (e) {
      // A child that failed before its exec is gone, and the launcher removed its cgroup.
      logs.close();
      await this.releaseRunDir(spec.runDir);
      throw launchFailure(spec, e);
    }
    const { pid, startTime } = child;
    const cgroup = placement && child.cgroup !== undefined ? ProcessCgroup.at(placement, `${this.cgroupParent}/${child.cgroup}`) : undefined;

    let exitedNow = false;
    const exited = child.exited.then(async ({ code, signal, cgroupReads, cgroupLeft }): Promise<ExitInfo> => {
      exitedNow = true;
      if (cgroupLeft && cgroup !== undefined) {
        this.options.logger?.warn({ instanceId: spec.instanceId, cgroup: child.cgroup, pid }, "could not remove a native process's cgroup: something in it would not die (stuck in the kernel); trying again later");
        this.removeLater(cgroup);
      }
      // The launcher ended the cgroup itself, unless it was gone before the exit (then it is done here).
      const metrics = placement !== undefined && cgroupReads !== undefined ? placement.metricsFrom(cgroupReads) : await this.endRun(pid, cgroup);
      await this.releaseRunDir(spec.runDir);
      const stderrTail = logs.stderrTail();
      logs.close();
      return { exitCode: code, signal, stderrTail, metrics };
    });

    const proc: RunningProcess = {
      kind: "native",
      instanceId: spec.instanceId,
      pid,
      startTime,
      launchedAtMs,
      launchMs: performance.now() - t0,
      exited,
      stop: async (signal: StopSignal) => {
        if (!exitedNow) await stopRun(pid, startTime, cgroup, signal);
      },
    };
    this.track(proc, child);
    return proc;
  }

  async adopt(spec: AdoptSpec): Promise<RunningProcess> {
    const abort = new AbortController();
    const logs = adoptLogs(spec.runDir, this.maxLogBytes);
    const placement = await this.cgroupPlacement();
    const cgroup = placement && (await ProcessCgroup.of(placement, spec.pid, `${this.cgroupParent}/`));
    this.claimCount(spec.runDir);
    const exited = (async (): Promise<ExitInfo> => {
      await watchPid(spec.pid, spec.startTime, { intervalMs: this.adoptPollMs, signal: abort.signal }).catch(() => neverSettles());
      const metrics = await this.endRun(spec.pid, cgroup);
      await this.releaseRunDir(spec.runDir);
      const stderrTail = logs?.stderrTail() ?? "";
      logs?.close();
      return { exitCode: null, signal: null, stderrTail, metrics };
    })();
    const proc: RunningProcess = {
      kind: "native",
      instanceId: spec.instanceId,
      pid: spec.pid,
      startTime: spec.startTime,
      launchedAtMs: Date.now(),
      launchMs: 0,
      exited,
      stop: (signal: StopSignal) => stopRun(spec.pid, spec.startTime, cgroup, signal),
    };
    this.track(proc, { detach: () => abort.abort() });
    return proc;
  }

  detachAll(): void {
    for (const holder of this.active.values()) holder.detach();
  }

  /**
   * Kills and removes this runner's cgroups (by owner) none of whose pids is `known`
   * (recorded): processes launched by an earlier run of the environment that died before
   * recording them. Nothing would ever stop or time them out, and the instance is relaunched
   * beside them. Returns the pids found in the cgroups it removed.
   */
  async removeUnknownProcesses(known: ReadonlySet<number>): Promise<number[]> {
    const placement = await this.cgroupPlacement();
    return placement === undefined ? [] : this.removeCgroupsNotKnown(placement, this.ownPrefix, known, false);
  }

  /**
   * After a launcher died (see Spawner.onLauncherGone): kills and removes its generation's
   * cgroups whose pids this runner does not track, empty ones too. Those are starts it
   * answered for whose answer was lost (their instances failed to launch), or were about to,
   * and processes it forked ahead.
   */
  private async removeGeneration(generation: string): Promise<void> {
    const placement = await this.cgroups;
    if (placement === undefined) return;
    const tracked = new Set([...this.active.keys()].map((p) => p.pid));
    const removed = await this.removeCgroupsNotKnown(placement, `${this.ownPrefix}${generation}-`, tracked, true);
    if (removed.length > 0) this.options.logger?.warn({ pids: removed }, "killed native processes a dead launcher started that no run accounts for");
  }

  private async removeCgroupsNotKnown(placement: CgroupPlacement, prefix: string, known: ReadonlySet<number>, empty: boolean): Promise<number[]> {
    const removed: number[] = [];
    for (const name of await readdir(`${placement.layout.unified}${this.cgroupParent}`).catch((): string[] => [])) {
      if (!name.startsWith(prefix)) continue;
      const cgroup = ProcessCgroup.at(placement, `${this.cgroupParent}/${name}`);
      const pids = cgroup.pids();
      if ((pids.length === 0 && !empty) || pids.some((pid) => known.has(pid))) continue;
      await cgroup.kill();
      await cgroup.remove();
      removed.push(...pids);
    }
    return removed;
  }

  private claimCount(runDir: string): void {
    this.runDirClaims.set(runDir, (this.runDirClaims.get(runDir) ?? 0) + 1);
  }

  /**
   * Back to us after the run, so the next native process (the same uid) cannot read it —
   * unless a relaunch of the instance already runs in it (a relaunch may start while the
   * previous run is still being cleaned up).
   */
  private async releaseRunDir(runDir: string): Promise<void> {
    const claims = (this.runDirClaims.get(runDir) ?? 1) - 1;
    if (claims > 0) return void this.runDirClaims.set(runDir, claims);
    this.runDirClaims.delete(runDir);
    if (!this.options.runAs) return;
    await chown(runDir, process.getuid?.() ?? 0, process.getgid?.() ?? 0).catch((e: unknown) =>
      this.options.logger?.warn({ err: e, runDir }, "could not take the run directory back"),
    );
  }

  /**
   * After the main process exited (when the launcher did not see to it: an adopted process,
   * or its launcher was gone): kill everything else it started (its group, and through the
   * cgroup anything that left the group), read the metrics, remove the cgroup. Without a
   * cgroup, the group kill has a window we accept: the group id stays allocated while any
   * member lives; with none left the kill is ESRCH, unless within the microseconds since the
   * reap (same tick) the pid was reused by a new group leader.
   */
  private async endRun(pid: number, cgroup: ProcessCgroup | undefined): Promise<ExitMetrics> {
    signalGroup(pid, "SIGKILL");
    if (cgroup === undefined) return { ...NO_METRICS };
    await cgroup.kill();
    const metrics = cgroup.metrics();
    const leftover = await cgroup.remove();
    if (leftover.length > 0) this.options.logger?.warn({ leftover }, "could not remove a native process's cgroup");
    return metrics;
  }

  /** Removes a cgroup the launcher had to leave once it can, trying every leftCgroupRetryMs (a process stuck in the kernel may never leave). */
  private removeLater(cgroup: ProcessCgroup): void {
    setTimeout(() => {
      void cgroup.remove().then(
        (left) => {
          if (left.length > 0) this.removeLater(cgroup);
          else this.options.logger?.info({ cgroup: cgroup.relPath }, "removed a native process's cgroup that had been left");
        },
        () => this.removeLater(cgroup),
      );
    }, this.leftCgroupRetryMs).unref();
  }

  /**
   * Found once. Before the first use, the empty cgroups of native processes that ended while
   * no environment watched them (a crash, a stop without restart) are removed; cgroups still
   * in use refuse removal (EBUSY) and stay for adoption.
   */
  private cgroupPlacement(): Promise<CgroupPlacement | undefined> {
    this.cgroups ??= detectCgroupLayout().then(
      async (layout) => {
        const parent = `${layout.unified}${this.cgroupParent}`;
        const names = (await readdir(parent).catch((): string[] => [])).filter((n) => n.startsWith(NATIVE_CGROUP_PREFIX));
        for (const name of names) {
          // Another environment's only once it is old: a young empty one may be about to be
          // used (its launch is joining it); an old one is an environment's that went away.
          if (!name.startsWith(this.ownPrefix) && !(await createdBefore(`${parent}/${name}`, Date.now() - FOREIGN_EMPTY_CGROUP_AGE_MS))) continue;
          await removeCgroup(layout.hierarchies, `${this.cgroupParent}/${name}`, [], 0);
        }
        await limitParentCgroup(layout, this.cgroupParent, this.options.aggregateLimits ?? {}).catch((e: unknown) =>
          this.options.logger?.warn({ err: e, cgroup: this.cgroupParent }, "could not set the aggregate limits of all native processes"),
        );
        if (layout.unified !== undefined && !layout.favorDynmods) {
          this.options.logger?.info(
            { mount: layout.unified },
            "cgroup v2 is mounted without favordynmods: each native start waits for a kernel RCU grace period to join its cgroup (README: Host tuning)",
          );
        }
        return await CgroupPlacement.prepare(layout, this.cgroupParent).catch((e: unknown) => this.withoutCgroups(e));
      },
      () => undefined,
    );
    return this.cgroups;
  }

  private withoutCgroups(e: unknown): undefined {
    this.options.logger?.warn({ err: e }, "native processes run without a cgroup (no limits; setsid children can outlive them)");
    this.cgroups = Promise.resolve(undefined);
    return undefined;
  }

  private track(proc: RunningProcess, holder: Holder) {
    this.active.set(proc, holder);
    void proc.exited.then(() => this.active.delete(proc));
  }
}

/**
 * Signals a run's process group, and with SIGKILL everything in its cgroup, while its pid still
 * names the process launched. A launched run's exit is told only once the launcher has ended
 * its cgroup (up to 3 s when something in it will not die) and an adopted one's is polled:
 * meanwhile the pid may have been reused, and root must not signal another process's group.
 */
async function stopRun(pid: number, startTime: bigint, cgroup: ProcessCgroup | undefined, signal: StopSignal): Promise<void> {
  if (!(await isSameProcess(pid, startTime))) return;
  signalGroup(pid, signal);
  if (signal === "SIGKILL") await cgroup?.kill();
}

/** Why the launcher could not start the image's binary: a missing or non-executable one is the image's fault. */
function launchFailure(spec: LaunchSpec, e: unknown): LaunchError {
  if (e instanceof SpawnError && e.step === "exec" && (e.code === "ENOENT" || e.code === "EACCES")) {
    const what = e.code === "ENOENT" ? "does not exist (or its interpreter does not)" : "is not an executable file";
    return new LaunchError("binary_not_found", `image ${spec.imageId ?? "?"}: ${spec.binaryPath} ${what}`, "", { cause: e });
  }
  return new LaunchError("spawn_failed", `could not start ${spec.binaryPath}: ${(e as Error).message}`, "", { cause: e });
}

function signalGroup(pgid: number, signal: StopSignal) {
  try {
    process.kill(-pgid, signal);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== "ESRCH") throw e;
  }
}
