import { randomBytes } from "node:crypto";
import { closeSync, constants, openSync, readSync, watch, type FSWatcher } from "node:fs";
import { access, chmod, chown, lstat, mkdir, mkdtemp, open, rename, rm, stat, unlink, writeFile } from "node:fs/promises";
import { tmpdir, userInfo } from "node:os";
import path from "node:path";
import type { Logger } from "pino";
import { detectCgroupLayout, readCgroupMetrics, removeCgroup, type CgroupLayout } from "./cgroup.js";
import { LaunchError, RuntimeUnavailable } from "./errors.js";
import { neverSettles, requireExecutable, type Holder } from "./common.js";
import { subordinateIdMapping, type IdMapping } from "./idmap.js";
import { createPastaNetns, detectOutbound, netnsInodeOf, netnsPath, removeNetns, stopOrphanedPastas, type Outbound } from "./netns.js";
import { adoptLogs, openLogs } from "./logs.js";
import { DEFAULT_MAX_LOG_BYTES } from "./log-cap.js";
import { limitParentCgroup, type AggregateLimits } from "./parent-cgroup.js";
import { buildOciConfig, containerIdFor, INIT_IN_CONTAINER, instanceIdOfContainer } from "./oci-spec.js";
import { unpackOciImage, type ImageProcess } from "./oci-image.js";
import { isSameProcess, readProcStat, watchPid } from "./proc.js";
import { Spawner, type ChildExit, type SpawnedChild } from "./spawner.js";
import { validateSpec } from "./spec.js";
import {
  type AdoptSpec,
  type ExitInfo,
  type LaunchSpec,
  type Runner,
  type RunningProcess,
  type StopSignal,
} from "./types.js";

export interface OciRunnerOptions {
  /**
   * "runc", "crun" or a path to either (`RUNTARA_OCI_RUNTIME`). When unset, crun then runc
   * are probed and the first that can actually run a container wins (crun 1.8 refuses hybrid
   * cgroup hosts, which `--version` does not reveal). An explicit runtime is probed too, so a
   * misconfiguration surfaces as `RuntimeUnavailable` naming it.
   */
  runtime?: string;
  /** The runtime's state directory (`--root`). @default the runtime's own (/run/runc, /run/crun) */
  stateRoot?: string;
  /** cgroup under which each container gets `<containerId>/ctr`. @default "/runtara" */
  cgroupParent?: string;
  /** Install the seccomp deny-list. @default true */
  seccomp?: boolean;
  /** How long the runtime may take to start a container. @default 30000 */
  startTimeoutMs?: number;
  /** Poll interval for adopted containers (not our children, so no exit event). @default 1000 */
  adoptPollMs?: number;
  /**
   * Host ids of the containers' user namespace (container root = `uidBase`).
   * @default this user's first /etc/subuid and /etc/subgid range, else 100000:65536
   */
  idMapping?: IdMapping;
  /**
   * Static init run as each container's pid 1 (see `OciConfigInput.init`). When the file is
   * not executable, containers run without one (logged once). @default "/usr/bin/tini-static"
   * (Debian's `tini`)
   */
  initPath?: string;
  /**
   * Limits on `cgroupParent`, which both runners share: all runs together (applied at the
   * first launch or adoption; a failure is logged, runs go on). @default none
   */
  aggregateLimits?: AggregateLimits;
  /** Cap of each of a run's stdout.log and stderr.log: the head and the tail are kept (see capLogFile). @default 16 MiB */
  maxLogBytes?: number;
  /** Where processes are forked (shared with the native runner by createRunners). @default its own */
  spawner?: Spawner;
  logger?: Logger;
}

export interface RuntimeInfo {
  /** The command as given or found ("runc", "crun", "/usr/local/bin/runc"). */
  command: string;
  flavor: "runc" | "crun";
  /** First line of `--version`. */
  version: string;
  /** State directory, if known: where `<containerId>` exists while a container does. */
  stateRoot: string | undefined;
}

/** Name of the pid file `runc run --pid-file` writes once the container process is running. */
const PID_FILE = "init.pid";
/** Leaf cgroup the runtime creates and deletes; its parent (ours) keeps the totals. */
const LEAF = "ctr";

/**
 * The OCI runner. Each launch is `<runtime> run --bundle <runDir> --pid-file <runDir>/init.pid
 * <id>` as our child, in its own session: the runtime stays in the foreground, its exit event
 * is the container's end and its exit code the container process's (128+n when killed by
 * signal n). The bundle directory is the run directory: config.json there points `root.path`
 * at the image's read-only rootfs.
 *
 * pid / startTime: once the runtime has written the pid file the container process is running;
 * its pid (checked to be the runtime's child, since the file lives in the container-writable
 * /data) and its start time from /proc identify the workflow itself, which lives exactly as
 * long as the container.
 *
 * Metrics without a race: the runtime deletes the container's cgroup as it exits, so the
 * container is placed one level down, at `<cgroupParent>/<containerId>/ctr`. cgroup memory
 * peak and CPU usage are hierarchical, so the parent directory — which only we remove — still
 * holds the container's totals after the runtime is gone. We read them, then remove it.
 *
 * Notes: runc sets HOME=/ when the spec has no HOME (the only variable not from spec.env);
 * the cgroupfs driver is used (no --systemd-cgroup).
 */
export class OciRunner implements Runner {
  readonly kind = "oci" as const;
  private readonly cgroupParent: string;
  private readonly seccomp: boolean;
  private readonly startTimeoutMs: number;
  private readonly adoptPollMs: number;
  private readonly maxLogBytes: number;
  private readonly logger: Logger | undefined;
  private readonly spawner: Spawner;
  private runtimeInfo: Promise<RuntimeInfo> | undefined;
  private cgroups: Promise<CgroupLayout> | undefined;
  private outboundInfo: Promise<Outbound> | undefined;
  private initInfo: Promise<string | undefined> | undefined;
  private idMappingValue: IdMapping | undefined;
  private readonly preparedRootfs = new Set<string>();
  /** Active processes: the runtime child of a launch, the poll of an adoption. */
  private readonly active = new Map<RunningProcess, Holder>();

  constructor(private readonly options: OciRunnerOptions = {}) {
    this.cgroupParent = (options.cgroupParent ?? "/runtara").replace(/\/+$/, "");
    if (!this.cgroupParent.startsWith("/") || this.cgroupParent.includes("..")) {
      throw new RangeError(`cgroupParent must be an absolute cgroup path, got ${JSON.stringify(options.cgroupParent)}`);
    }
    this.seccomp = options.seccomp ?? true;
    this.startTimeoutMs = options.startTimeoutMs ?? 30_000;
    this.adoptPollMs = options.adoptPollMs ?? 1_000;
    this.maxLogBytes = options.maxLogBytes ?? DEFAULT_MAX_LOG_BYTES;
    this.logger = options.logger;
    this.spawner = options.spawner ?? new Spawner({ logger: options.logger });
  }

  activeCount(): number {
    return this.active.size;
  }

  /** Host ids container root and its users map to. */
  idMapping(): IdMapping {
    this.idMappingValue ??=
      this.options.idMapping ?? subordinateIdMapping(userInfo().username, process.getuid?.() ?? 0);
    return this.idMappingValue;
  }

  /** How `isolated` containers reach the outside (looked up once; logged then). */
  /** Unpacks the image `ref` of an OCI layout into `bundleDir` for this runner's user namespace. */
  unpackImage(layoutDir: string, ref: string, bundleDir: string): Promise<ImageProcess> {
    return unpackOciImage(this.spawner, layoutDir, ref, bundleDir, this.idMapping());
  }

  outbound(): Promise<Outbound> {
    this.outboundInfo ??= detectOutbound().then((o) => {
      if (o.kind === "pasta") this.logger?.info({ pasta: o.pasta }, "isolated containers get outbound network through pasta");
      else this.logger?.warn({ reason: o.reason }, "isolated containers get no outbound network");
      return o;
    });
    return this.outboundInfo;
  }

  /** The init binary containers get, or undefined without one (looked up once; logged then). */
  init(): Promise<string | undefined> {
    const file = this.options.initPath ?? "/usr/bin/tini-static";
    this.initInfo ??= access(file, constants.X_OK).then(
      () => {
        this.logger?.info({ init: file }, "containers run their workflow under an init process");
        return file;
      },
      () => {
        this.logger?.warn({ init: file }, "no init binary: the workflow is its container's pid 1 (ignores SIGTERM without a handler, does not reap orphans); install tini");
        return undefined;
      },
    );
    return this.initInfo;
  }

  /**
   * Finds and probes the runtime (once; a failure is not cached, so installing runc later
   * fixes launches without a restart). Rejects with `RuntimeUnavailable`.
   */
  runtime(): Promise<RuntimeInfo> {
    if (!this.runtimeInfo) {
      const p = this.detectRuntime();
      this.runtimeInfo = p;
      p.catch(() => {
        if (this.runtimeInfo === p) this.runtimeInfo = undefined;
      });
    }
    return this.runtimeInfo;
  }

  async launch(spec: LaunchSpec): Promise<RunningProcess> {
    validateSpec(spec);
    if (spec.bundlePath === undefined) throw new LaunchError("invalid_spec", `instance ${spec.instanceId}: an OCI launch needs the image bundle path`);
    const rt = await this.runtime();
    const layout = await this.cgroupLayout();
    const rootfs = path.resolve(spec.bundlePath, "rootfs");
    const image = spec.imageProcess;
    if (image === undefined) await requireExecutable(path.join(rootfs, "binary"), `image ${spec.imageId ?? "?"} bundle`);
    await this.prepareRootfs(rootfs);

    const containerId = containerIdFor(spec.instanceId);
    const cgroupRel = `${this.cgroupParent}/${containerId}`;
    const outbound = await this.outbound();
    const init = await this.init();
    await this.clearStale(rt, layout, containerId, cgroupRel, outbound);

    const idMapping = this.idMapping();
    // /data is the container user's own directory and nobody else's: 0700, owned by the
    // mapped root (or the image's user). config.json (token, env) and the logs in it stay
    // host root's, mode 0600, so the container cannot read them (host root is unmapped:
    // "other" inside).
    await chown(spec.runDir, idMapping.uidBase + (image?.uid ?? 0), idMapping.gidBase + (image?.gid ?? 0));
    await chmod(spec.runDir, 0o700);
    const pasta = spec.networkMode === "isolated" && outbound.kind === "pasta" ? outbound : undefined;
    const pidFile = path.join(spec.runDir, PID_FILE);
    let logs;
    let netnsIno: number | undefined;
    try {
      if (pasta) netnsIno = await createPastaNetns(this.spawner, pasta, containerId);
      const config = buildOciConfig({
        rootfs,
        args: image?.args ?? ["/binary"],
        // The image's Env (PATH and the like) under the instance's own variables.
        env: { ...image?.env, ...spec.env },
        ...(image ? { cwd: image.cwd, user: { uid: image.uid, gid: image.gid } } : {}),
        hostname: spec.instanceId.slice(0, 63).replaceAll(":", "-"),
        dataDir: spec.runDir,
        cgroupsPath: `${cgroupRel}/${LEAF}`,
        limits: spec.limits,
        network: spec.networkMode === "host" ? "host" : pasta ? { path: netnsPath(containerId) } : "new",
        idMapping,
        coreSocketDir: spec.networkMode === "host" ? undefined : spec.coreSocketDir,
        seccomp: this.seccomp,
        init,
      });
      await writeFileReplacing(path.join(spec.runDir, "config.json"), JSON.stringify(config));
      await unlink(pidFile).catch(ignoreEnoent);
      logs = openLogs(spec.runDir, this.maxLogBytes, spec.logHeader);
    } catch (e) {
      if (pasta) await removeNetns(this.spawner, pasta, containerId, netnsIno);
      throw e;
    }
    const launchedAtMs = Date.now();
    const t0 = performance.now();
    const log = this.logger?.child({ instanceId: spec.instanceId, tenantId: spec.tenantId, containerId });
    let child: SpawnedChild;
    try {
      child = await this.spawner.spawn({
        file: rt.command,
        args: [...this.globalArgs(), "run", "--bundle", spec.runDir, "--pid-file", pidFile, containerId],
        // Own session: a Ctrl-C or SIGTERM aimed at the environment's process group must not
        // be forwarded by the runtime to the workflow (restarts never kill workflows).
        detached: true,
        stdoutFd: logs.stdoutFd,
        stderrFd: logs.stderrFd,
      });
    } catch (e) {
      logs.close();
      if (pasta) await removeNetns(this.spawner, pasta, containerId, netnsIno);
      throw new LaunchError("spawn_failed", `could not start ${rt.command}: ${(e as Error).message}`, "", { cause: e });
    }

    let resolveExit!: (info: ExitInfo) => void;
    const exited = new Promise<ExitInfo>((r) => (resolveExit = r));
    let finished = false;
    const childExit: Promise<ChildExit> = child.exited;

    let outcome = await waitForStart(spec.runDir, pidFile, child.pid, childExit, this.startTimeoutMs);
    const finish = async (): Promise<ExitInfo> => {
      const { code, signal } = await childExit;
      // The runtime is gone; if it did not tear the container down (it was killed, or it
      // failed half-way), force it. Then read the totals and remove our cgroup directory.
      if (await this.containerExists(rt, containerId)) {
        const r = await this.exec(rt, ["delete", "--force", containerId]);
        if (r.failed) log?.warn({ stderr: r.stderr }, "could not delete the container");
      }
      const metrics = readCgroupMetrics(layout, cgroupRel);
      const leftover = await removeCgroup(layout.hierarchies, cgroupRel, [LEAF]);
      if (leftover.length > 0) log?.warn({ leftover }, "could not remove the container's cgroup");
      if (pasta) await removeNetns(this.spawner, pasta, containerId, netnsIno);
      const stderrTail = logs.stderrTail();
      logs.close();
      return { exitCode: code, signal, stderrTail, metrics };
    };

    // A pid file can still have appeared between the last check and the exit event.
    if (outcome === "exited") outcome = (await readInitPid(pidFile, child.pid)) ?? "exited";
    if (outcome === "exited" || outcome === "timeout") {
      if (outcome === "timeout") {
        log?.warn({ timeoutMs: this.startTimeoutMs }, "container did not start in time; killing the runtime");
        try {
          process.kill(-child.pid, "SIGKILL");
        } catch {
          // already gone
        }
      }
      const info = await finish();
      if (outcome === "timeout") {
        throw new LaunchError("start_timeout", `container ${containerId} did not start within ${this.startTimeoutMs} ms`, info.stderrTail);
      }
      throw new LaunchError(
        "start_failed",
        `${rt.flavor} could not start container ${containerId} (exit ${info.exitCode ?? info.signal}): ${lastLine(info.stderrTail)}`,
        info.stderrTail,
      );
    }

    // The pid file exists, so the container process ran. If it already exited (and was reaped
    // by the runtime) its start time is gone; the runtime's own (pid, start time) stands in —
    // it lives until the container is torn down, which is then moments away.
    const pid = outcome.pid ?? child.pid;
    const startTime = outcome.pid !== undefined ? outcome.startTime : child.startTime;
    const proc: RunningProcess = {
      kind: "oci",
      instanceId: spec.instanceId,
      pid,
      startTime,
      containerId,
      launchedAtMs,
      launchMs: performance.now() - t0,
      exited,
      stop: (signal) => (finished ? Promise.resolve() : this.signal(rt, containerId, signal, pid, startTime)),
    };
    this.active.set(proc, child);
    void finish().then((info) => {
      finished = true;
      this.active.delete(proc);
      resolveExit(info);
    });
    log?.debug({ pid, launchMs: proc.launchMs }, "container started");
    return proc;
  }

  async adopt(spec: AdoptSpec): Promise<RunningProcess> {
    if (spec.containerId === undefined) throw new RangeError(`instance ${spec.instanceId}: adopting a container needs its container id`);
    const containerId = spec.containerId;
    const rt = await this.runtime();
    const layout = await this.cgroupLayout();
    const cgroupRel = `${this.cgroupParent}/${containerId}`;
    const abort = new AbortController();
    const logs = adoptLogs(spec.runDir, this.maxLogBytes);
    let finished = false;
    const netnsIno = await netnsInodeOf(spec.pid);
    const exited = (async (): Promise<ExitInfo> => {
      await watchPid(spec.pid, spec.startTime, { intervalMs: this.adoptPollMs, signal: abort.signal }).catch(() => neverSettles());
      if (await this.containerExists(rt, containerId)) await this.exec(rt, ["delete", "--force", containerId]);
      const metrics = readCgroupMetrics(layout, cgroupRel);
      await removeCgroup(layout.hierarchies, cgroupRel, [LEAF]);
      const outbound = await this.outbound();
      // Only the namespace this process was in: a relaunch may already have made a new one. A
      // process already gone at adoption (it ended while the environment was down) left its
      // namespace under the name, and no relaunch can come before this exit is handled.
      if (outbound.kind === "pasta") await removeNetns(this.spawner, outbound, containerId, netnsIno);
      const stderrTail = logs?.stderrTail() ?? "";
      logs?.close();
      return { exitCode: null, signal: null, stderrTail, metrics };
    })();
    const proc: RunningProcess = {
      kind: "oci",
      instanceId: spec.instanceId,
      pid: spec.pid,
      startTime: spec.startTime,
      containerId,
      launchedAtMs: Date.now(),
      launchMs: 0,
      exited,
      stop: (signal) => (finished ? Promise.resolve() : this.signal(rt, containerId, signal, spec.pid, spec.startTime)),
    };
    this.active.set(proc, { detach: () => abort.abort() });
    void exited.then(() => {
      finished = true;
      this.active.delete(proc);
    });
    return proc;
  }

  /**
   * Containers of ours (ids made by `containerIdFor`) the runtime holds state for, whatever
   * their status, with their bundle (run) directory: at startup the caller tells the ones no
   * recorded run accounts for (the environment died between launch and record) from the rest.
   */
  async listContainers(): Promise<{ containerId: string; instanceId: string; bundle: string }[]> {
    const rt = await this.runtime();
    const r = await this.exec(rt, ["list", "--format", "json"]);
    if (r.failed) throw new Error(`${rt.command} list failed: ${lastLine(r.stderr)}`);
    const all = (JSON.parse(r.stdout || "null") ?? []) as { id: string; bundle?: string }[];
    return all.flatMap(({ id, bundle }) => {
      const instanceId = instanceIdOfContainer(id);
      return instanceId === undefined || bundle === undefined ? [] : [{ containerId: id, instanceId, bundle }];
    });
  }

  /** Stops what is left of the networking of containers gone (see `stopOrphanedPastas`). */
  async removeOrphanedNetworking(): Promise<void> {
    if ((await this.outbound()).kind === "pasta") await stopOrphanedPastas();
  }

  /** Kills and deletes a container nobody watches, with its cgroup and network namespace. */
  async removeContainer(containerId: string): Promise<void> {
    const rt = await this.runtime();
    const layout = await this.cgroupLayout();
    await this.exec(rt, ["kill", containerId, "KILL"]);
    const r = await this.exec(rt, ["delete", "--force", containerId]);
    if (r.failed && (await this.containerExists(rt, containerId))) throw new Error(`${rt.command} delete ${containerId} failed: ${lastLine(r.stderr)}`);
    const left = await removeCgroup(layout.hierarchies, `${this.cgroupParent}/${containerId}`, [LEAF]);
    if (left.length > 0) this.logger?.warn({ containerId, left }, "could not remove the cgroup of a removed container");
    const outbound = await this.outbound();
    if (outbound.kind === "pasta") await removeNetns(this.spawner, outbound, containerId);
  }

  detachAll(): void {
    for (const holder of this.active.values()) holder.detach();
  }

  /** `<runtime> kill`; falls back to signalling the container's init directly if that fails. */
  private async signal(rt: RuntimeInfo, containerId: string, signal: StopSignal, pid: number, startTime: bigint): Promise<void> {
    const r = await this.exec(rt, ["kill", containerId, signal === "SIGKILL" ? "KILL" : "TERM"]);
    if (!r.failed) return;
    if (await isSameProcess(pid, startTime)) {
      process.kill(pid, signal);
      return;
    }
    // Not running any more: the container is stopped or already deleted; nothing to signal.
  }

  private async detectRuntime(): Promise<RuntimeInfo> {
    const candidates = this.options.runtime !== undefined ? [this.options.runtime] : ["crun", "runc"];
    const problems: string[] = [];
    for (const command of candidates) {
      const v = await this.spawner.run(command, ["--version"], { timeoutMs: 10_000 });
      if (v.failed) {
        problems.push(v.code === "ENOENT" ? `${command} is not installed` : `${command} --version failed: ${v.message}`);
        continue;
      }
      const version = v.stdout.split("\n")[0] ?? "";
      const flavor: "runc" | "crun" = /^crun\b/.test(version) ? "crun" : "runc";
      const info: RuntimeInfo = {
        command,
        flavor,
        version,
        stateRoot: this.options.stateRoot ?? (process.getuid?.() === 0 ? `/run/${flavor}` : undefined),
      };
      const problem = await this.probe(info);
      if (problem === undefined) {
        this.logger?.info({ runtime: command, version }, "OCI runtime selected");
        return info;
      }
      problems.push(`${command}: ${problem}`);
    }
    throw new RuntimeUnavailable(candidates.join(", "), problems.join("; "));
  }

  /**
   * Runs a container whose executable does not exist. A runtime that gets as far as exec
   * (and names our path in its complaint) can set up namespaces, cgroups and mounts here;
   * one that fails earlier (crun 1.8: "cgroups in hybrid mode not supported") cannot.
   * Returns undefined when usable, else the runtime's message.
   */
  private async probe(rt: RuntimeInfo): Promise<string | undefined> {
    const layout = await this.cgroupLayout();
    const dir = await mkdtemp(path.join(tmpdir(), "runtara-oci-probe-"));
    // Container root (a mapped host uid) must reach its rootfs; 0711 lets it pass, not list.
    await chmod(dir, 0o711);
    const id = `runtara_probe_${randomBytes(6).toString("hex")}`;
    const cgroupRel = `${this.cgroupParent}/${id}`;
    const marker = "/runtara-probe-exec";
    try {
      await mkdir(path.join(dir, "rootfs"));
      await this.prepareRootfs(path.join(dir, "rootfs"));
      const config = buildOciConfig({
        rootfs: path.join(dir, "rootfs"),
        args: [marker],
        env: {},
        hostname: "probe",
        cgroupsPath: `${cgroupRel}/${LEAF}`,
        limits: { memoryBytes: 64 * 1024 * 1024, cpuQuotaUs: 100_000, cpuPeriodUs: 100_000, pidsLimit: 16, nofile: 64, fileBytes: 1024 * 1024 },
        network: "new",
        idMapping: this.idMapping(),
        seccomp: this.seccomp,
      });
      await writeFile(path.join(dir, "config.json"), JSON.stringify(config));
      const r = await this.exec(rt, ["run", "--bundle", dir, id], 15_000);
      const said = `${r.stderr}\n${r.stdout}`.trim();
      if (r.exitCode !== 0 && said.includes(marker)) return undefined;
      return lastLine(said) || `exit ${r.exitCode ?? r.signal}`;
    } finally {
      await this.exec(rt, ["delete", "--force", id]);
      await removeCgroup(layout.hierarchies, cgroupRel, [LEAF]);
      await rm(dir, { recursive: true, force: true });
      this.preparedRootfs.delete(path.join(dir, "rootfs"));
    }
  }

  private cgroupLayout(): Promise<CgroupLayout> {
    this.cgroups ??= detectCgroupLayout().then(async (layout) => {
      await limitParentCgroup(layout, this.cgroupParent, this.options.aggregateLimits ?? {}).catch((e: unknown) =>
        this.logger?.warn({ err: e, cgroup: this.cgroupParent }, "could not set the aggregate limits of all containers"),
      );
      return layout;
    });
    return this.cgroups;
  }

  /**
   * A container with this id left by an earlier run of the instance (the environment died
   * before deleting it): delete it when stopped, refuse when it is still running. Also removes
   * a stale cgroup directory, whose counters would otherwise be added to this run's.
   */
  private async clearStale(rt: RuntimeInfo, layout: CgroupLayout, containerId: string, cgroupRel: string, outbound: Outbound): Promise<void> {
    if (await this.containerExists(rt, containerId)) {
      const s = await this.exec(rt, ["state", containerId]);
      let status = "unknown";
      try {
        status = (JSON.parse(s.stdout) as { status?: string }).status ?? status;
      } catch {
        // state failed: the container vanished meanwhile, or its state is corrupt; delete decides
      }
      if (status === "running" || status === "created" || status === "paused") {
        throw new LaunchError("already_running", `container ${containerId} already exists and is ${status}`);
      }
      await this.exec(rt, ["delete", "--force", containerId]);
    }
    const left = await removeCgroup(layout.hierarchies, cgroupRel, [LEAF]);
    if (left.length > 0) throw new LaunchError("already_running", `cgroup of container ${containerId} is still in use: ${left.join(", ")}`);
    if (outbound.kind === "pasta") await removeNetns(this.spawner, outbound, containerId);
  }

  /** Whether the runtime still holds state for the id; unknown state root → assume yes. */
  private async containerExists(rt: RuntimeInfo, containerId: string): Promise<boolean> {
    if (rt.stateRoot === undefined) return true;
    try {
      await stat(path.join(rt.stateRoot, containerId));
      return true;
    } catch {
      return false;
    }
  }

  /**
   * Mount points the runtime needs in the read-only root (it would otherwise create them in
   * the image directory itself on the first launch, racing concurrent launches). Idempotent and
   * best-effort: a rootfs where this fails (say `tmp` is a file) fails in the runtime instead,
   * with its own clear message. An image's root is its author's: where a path on the way is a
   * symlink (`etc -> /host`), nothing is created here, since following it would write on the
   * host; the runtime resolves such paths inside the root itself.
   */
  private async prepareRootfs(rootfs: string): Promise<void> {
    if (this.preparedRootfs.has(rootfs)) return;
    let complete = true;
    for (const d of ["proc", "dev", "data", "tmp", "etc", "run", "run/runtara"]) {
      if (!(await realDirectories(rootfs, path.dirname(d)))) {
        complete = false;
        continue;
      }
      await mkdir(path.join(rootfs, d), { mode: 0o755 }).catch((e: NodeJS.ErrnoException) => {
        if (e.code !== "EEXIST") complete = false;
      });
    }
    for (const f of ["etc/hosts", "etc/resolv.conf", INIT_IN_CONTAINER.slice(1)]) {
      // O_NOFOLLOW guards the last component; the ones before are checked to be real directories.
      const created =
        (await realDirectories(rootfs, path.dirname(f))) &&
        (await open(path.join(rootfs, f), constants.O_WRONLY | constants.O_CREAT | constants.O_NOFOLLOW, 0o644).then(
          (h) => h.close().then(() => true),
          () => false,
        ));
      if (!created) complete = false;
    }
    if (complete) this.preparedRootfs.add(rootfs);
  }

  private globalArgs(): string[] {
    return this.options.stateRoot !== undefined ? ["--root", this.options.stateRoot] : [];
  }

  private exec(rt: RuntimeInfo, args: string[], timeoutMs = 10_000) {
    return this.spawner.run(rt.command, [...this.globalArgs(), ...args], { timeoutMs });
  }
}

/** Whether every component of `rel` (".": none) under `root` is a directory, not a symlink to one. */
async function realDirectories(root: string, rel: string): Promise<boolean> {
  let at = root;
  for (const part of rel.split("/").filter((p) => p !== "" && p !== ".")) {
    at = path.join(at, part);
    const st = await lstat(at).catch(() => undefined);
    if (st === undefined || !st.isDirectory()) return false;
  }
  return true;
}

/**
 * Waits until the runtime has written the pid file (the container process is running), the
 * runtime exited, or the timeout passed. inotify on the run directory, not polling.
 */
async function waitForStart(
  runDir: string,
  pidFile: string,
  runtimePid: number | undefined,
  runtimeExit: Promise<unknown>,
  timeoutMs: number,
): Promise<InitPid | "exited" | "timeout"> {
  let watcher: FSWatcher | undefined;
  let timer: NodeJS.Timeout | undefined;
  try {
    return await new Promise<InitPid | "exited" | "timeout">((resolve) => {
      const check = () => void readInitPid(pidFile, runtimePid).then((found) => found && resolve(found));
      try {
        watcher = watch(runDir, (_event, name) => {
          if (name === PID_FILE) check();
        });
        watcher.on("error", () => {}); // the run dir vanished: the runtime's exit decides
      } catch {
        // No inotify watch available: the runtime's exit or the timeout still settles this.
      }
      check();
      void runtimeExit.then(() => resolve("exited"));
      timer = setTimeout(() => resolve("timeout"), timeoutMs);
    });
  } finally {
    watcher?.close();
    clearTimeout(timer);
  }
}

/**
 * Reads the pid file runc writes once the container process runs; null while it is absent.
 * The file sits in the container's /data, so its pid is trusted only if that process is the
 * runtime's child (the container's init); otherwise (forged, or init already exited and the
 * pid reused) the caller falls back to the runtime's own pid.
 */
async function readInitPid(pidFile: string, runtimePid: number | undefined): Promise<InitPid | null> {
  let text: string;
  try {
    // O_NOFOLLOW: never follow a link planted in the run directory; O_NONBLOCK: nor hang on a
    // FIFO. Read synchronously: a few bytes of a local file, where fs/promises costs a
    // thread-pool round trip for each of open, fstat, read and close.
    const fd = openSync(pidFile, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
    try {
      const buf = Buffer.alloc(32);
      text = buf.toString("utf8", 0, readSync(fd, buf, 0, buf.length, 0));
    } finally {
      closeSync(fd);
    }
  } catch {
    return null;
  }
  if (!/^\d+\s*$/.test(text)) return null; // not (fully) written yet
  const pid = Number(text.trim());
  // Through the thread pool: a read of /proc/<pid>/stat of a process in the middle of its
  // exec (the container's init becoming the workflow) waits, 3-4 ms per start measured here.
  const st = await readProcStat(pid);
  return st !== null && st.ppid === runtimePid && runtimePid !== undefined ? { pid, startTime: st.startTime } : { pid: undefined };
}

type InitPid = { pid: number; startTime: bigint } | { pid: undefined };

/**
 * Writes via a new temporary file renamed over the target, so a planted symlink is replaced,
 * not followed. Mode 0600: the config holds the instance token and the caller's env.
 */
async function writeFileReplacing(file: string, data: string): Promise<void> {
  const tmp = `${file}.${randomBytes(6).toString("hex")}.tmp`;
  const h = await open(tmp, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, 0o600);
  try {
    await h.writeFile(data);
  } finally {
    await h.close();
  }
  await rename(tmp, file);
}

function ignoreEnoent(e: unknown): void {
  if ((e as NodeJS.ErrnoException).code !== "ENOENT") throw e;
}

function lastLine(text: string): string {
  const lines = text.trim().split("\n");
  return (lines[lines.length - 1] ?? "").slice(0, 500);
}

