import { randomUUID } from "node:crypto";
import { mkdir } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import type { DatabasePool } from "slonik";
import type { Logger } from "pino";
import type { Tokens } from "../core/tokens.js";
import type { Status } from "../core/types.js";
import { isTerminal } from "../core/types.js";
import type { ChannelHub } from "../db/index.js";
import { FailedPrecondition, InvalidArgument, NotFound } from "../errors.js";
import type { ImageStore, RunnerKind } from "../images/index.js";
import { findImage } from "../images/repository.js";
import { CORE_SOCKET_URL_IN_CONTAINER, isSameProcess, type NetworkMode, type ResourceLimits, type Runner, type Runners } from "../runner/index.js";
import type { RunnerCheck } from "../runner-policy.js";
import type { CoreGateway } from "./core-gateway.js";
import * as repo from "./repository.js";
import { Supervisor } from "./supervisor.js";
import type { Instance, LaunchTarget } from "./types.js";
import { type InstanceStatus, SignalType } from "../../gen/runtara/core/v1/types_pb.js";
import { protoStatus } from "../core/convert.js";
import { tenantStatus } from "../core/repository.js";

export interface InstanceServiceOptions {
  dataDir: string;
  /** host:port instances use to reach core. */
  coreAddr: string;
  skipCertVerification: boolean;
  networkMode: NetworkMode;
  replicaId: string;
  limits: ResourceLimits;
  /** Host directory of core's Unix socket, for containers with their own network namespace. */
  coreSocketDir?: string;
  /** Refuses runner kinds this environment may not run (the native runner policy). */
  checkRunner?: RunnerCheck;
}

export interface StartRequest {
  tenantId: string;
  imageId: string;
  instanceId: string | undefined;
  input: Uint8Array;
  timeoutSeconds: number;
  env: Record<string, string>;
}

export type ListRequest = Omit<repo.InstanceListQuery, "after"> & { pageToken: string };

/**
 * Instance lifecycle on the environment side: start, stop, resume, status, list, watch.
 * Status changes made here are guarded statements in ./repository.ts; signals and core data
 * go through core's generated client (CoreGateway).
 */
export class InstanceService {
  readonly supervisor: Supervisor;

  constructor(
    private readonly db: DatabasePool,
    private readonly runners: Runners,
    private readonly images: ImageStore,
    private readonly core: CoreGateway,
    private readonly tokens: Tokens,
    private readonly statusChanges: ChannelHub,
    private readonly logger: Logger,
    private readonly options: InstanceServiceOptions,
  ) {
    this.supervisor = new Supervisor(db, logger.child({ component: "supervisor" }));
  }

  async start(req: StartRequest): Promise<{ instanceId: string; status: Status }> {
    const image = await findImage(this.db, req.tenantId, req.imageId);
    if (image === null) throw new NotFound(`image ${req.imageId} not found`);
    await this.checkRunnable(image.runnerType);
    const instanceId = req.instanceId ?? randomUUID();
    await repo.insertInstance(this.db, {
      instanceId,
      tenantId: req.tenantId,
      imageId: image.imageId,
      imageName: image.name,
      input: req.input,
      env: req.env,
      timeoutSeconds: req.timeoutSeconds,
    });
    await this.launch({
      instanceId,
      tenantId: req.tenantId,
      imageId: image.imageId,
      runnerType: image.runnerType,
      timeoutSeconds: req.timeoutSeconds,
      checkpointId: null,
      env: req.env,
    });
    return { instanceId, status: (await this.statusOf(req.tenantId, instanceId)) ?? "pending" };
  }

  /** Relaunches a SUSPENDED instance from its last checkpoint. */
  async resume(tenantId: string, instanceId: string): Promise<Status> {
    const target = await repo.claimForRelaunch(this.db, tenantId, instanceId);
    if (target === null) {
      const current = await this.statusOf(tenantId, instanceId);
      if (current === null) throw new NotFound(`instance ${instanceId} not found`);
      throw new FailedPrecondition(`only a SUSPENDED instance can be resumed; instance ${instanceId} is ${current.toUpperCase()}`);
    }
    await this.launch(target);
    return (await this.statusOf(tenantId, instanceId)) ?? "pending";
  }

  /**
   * Signals go to core; a RESUME of a SUSPENDED instance relaunches it here instead (a
   * suspended instance has no process to read the signal).
   */
  async sendSignal(tenantId: string, instanceId: string, signalType: SignalType, payload: Uint8Array): Promise<InstanceStatus> {
    if (signalType === SignalType.RESUME) {
      const target = await repo.claimForRelaunch(this.db, tenantId, instanceId);
      if (target !== null) {
        await this.launch(target);
        return protoStatus((await this.statusOf(tenantId, instanceId)) ?? "pending");
      }
    }
    const res = await this.core.call((c) => c.sendSignal({ tenantId, instanceId, signalType, payload }));
    return res.status;
  }

  /**
   * Delivers CANCEL through core, waits up to the grace period for the instance to exit on
   * its own, then SIGTERM, then SIGKILL. The final status is CANCELLED unless the instance
   * completed (or failed) first.
   */
  async stop(tenantId: string, instanceId: string, graceSeconds: number, reason: string): Promise<Status> {
    const before = await this.statusOf(tenantId, instanceId);
    if (before === null) throw new NotFound(`instance ${instanceId} not found`);
    if (isTerminal(before)) return before;
    this.logger.info({ instanceId, tenantId, reason, graceSeconds }, "stopping instance");
    try {
      await this.core.call((c) => c.sendSignal({ tenantId, instanceId, signalType: SignalType.CANCEL, payload: new TextEncoder().encode(reason) }));
    } catch (e) {
      // Terminal in the meantime (completed first): nothing to stop. Anything else: still
      // stop the process below; the status is forced afterwards.
      this.logger.warn({ err: e, instanceId }, "could not deliver CANCEL before stopping");
    }
    if (this.supervisor.isTracked(instanceId)) {
      await this.supervisor.stop(instanceId, graceSeconds * 1000, "cancelled");
    } else if (!(await this.waitForTerminal(tenantId, instanceId, graceSeconds * 1000))) {
      this.logger.warn({ instanceId }, "instance has no process on this replica; forcing CANCELLED");
    }
    return (await repo.markCancelled(this.db, tenantId, instanceId)) ?? "cancelled";
  }

  /**
   * Restart recovery: adopts the processes an earlier run of this replica launched on this
   * host. Each is recognised by pid AND process start time (a reused pid is never mistaken),
   * and watched again (exit, timeout); one that is gone is settled from the database status
   * like any exit (crashed if it never reported). Healthy workflows are never killed.
   */
  async recover(): Promise<{ adopted: number; gone: number }> {
    const rows = await repo.processesOf(this.db, os.hostname(), this.options.replicaId);
    let adopted = 0;
    let gone = 0;
    for (const r of rows) {
      const proc = await this.runners.runnerFor(r.runner).adopt({
        instanceId: r.instanceId,
        pid: r.pid,
        startTime: r.startTime,
        containerId: r.containerId === "" ? undefined : r.containerId,
        runDir: r.runDir,
      });
      if (proc === null) {
        // Gone while nobody watched: settle it from the database status like any exit.
        gone++;
        await repo.recordRunEnd(this.db, r.instanceId, { exitCode: null, stderrTail: "", memoryPeakBytes: undefined, cpuUsageUsec: undefined, verdict: "crashed" });
        await repo.deleteRunningProcess(this.db, r.instanceId, r.pid);
        continue;
      }
      if (await isSameProcess(r.pid, r.startTime)) adopted++;
      else gone++;
      this.supervisor.track(r.instanceId, proc, r.deadlineMs);
    }
    if (rows.length > 0) this.logger.info({ adopted, gone }, "recovered processes of the previous run");
    return { adopted, gone };
  }

  /**
   * Heartbeat check: kills this replica's RUNNING instances that have been silent longer
   * than the timeout (FAILED heartbeat_timeout), and fails orphans cluster-wide.
   */
  async enforceHeartbeats(timeoutMs: number): Promise<void> {
    const stale = await repo.staleOwnedInstances(this.db, os.hostname(), this.options.replicaId, timeoutMs);
    await Promise.all(
      stale.map(async (instanceId) => {
        this.logger.warn({ instanceId, timeoutMs }, "no heartbeat: killing the instance");
        await this.supervisor.stop(instanceId, 0, "heartbeat_timeout");
      }),
    );
    const orphans = await repo.failOrphans(this.db, timeoutMs);
    for (const instanceId of orphans) this.logger.warn({ instanceId }, "instance orphaned: FAILED");
  }

  /**
   * Stops watching every process without touching it (environment shutdown): the workflows
   * keep running and nothing of theirs holds this process's event loop open any more.
   */
  detachAll(): void {
    this.supervisor.detachAll();
    this.runners.oci.detachAll();
    this.runners.native.detachAll();
  }

  async get(tenantId: string, instanceId: string): Promise<Instance> {
    const instance = await repo.findInstance(this.db, tenantId, instanceId);
    if (instance === null) throw new NotFound(`instance ${instanceId} not found`);
    return instance;
  }

  async list(req: ListRequest): Promise<{ instances: readonly Instance[]; nextPageToken: string; totalCount: bigint }> {
    const after = req.pageToken === "" ? undefined : decodeToken(req.pageToken, req.order);
    if (after !== undefined && req.offset !== 0) throw new InvalidArgument("offset", "cannot be combined with page_token");
    const query = { ...req, after };
    const [rows, totalCount] = await Promise.all([repo.listInstances(this.db, query), repo.countInstances(this.db, query)]);
    const instances = rows.slice(0, req.limit);
    const last = instances[instances.length - 1];
    const nextPageToken = rows.length > req.limit && last ? encodeToken(last, req.order) : "";
    return { instances, nextPageToken, totalCount };
  }

  /** Yields the instance now and after every status change, until it is terminal. */
  async *watch(tenantId: string, instanceId: string, abort: AbortSignal): AsyncGenerator<Instance> {
    const wakeups = this.statusChanges.wakeups(instanceId, abort);
    let last: string | undefined;
    for (let first = true; ; first = false) {
      if (!first && (await wakeups.next()).done) return;
      const instance = await repo.findInstance(this.db, tenantId, instanceId);
      if (instance === null) {
        if (first) throw new NotFound(`instance ${instanceId} not found`);
        return;
      }
      const key = `${instance.status}:${instance.terminationReason ?? ""}`;
      if (key !== last) {
        last = key;
        yield instance;
      }
      if (isTerminal(instance.status)) {
        await wakeups.return(undefined);
        return;
      }
    }
  }

  /**
   * Refuses images no runner here can run, before anything is written: WASM, or OCI on a
   * host without a working runc/crun (RuntimeUnavailable is a FailedPrecondition).
   */
  private async checkRunnable(kind: RunnerKind): Promise<Runner> {
    if (kind === "wasm") throw new FailedPrecondition("wasm runner not available yet");
    this.options.checkRunner?.(kind);
    if (kind === "oci") await this.runners.oci.runtime();
    return this.runners.runnerFor(kind);
  }

  /** Launches; a failure settles the instance as FAILED (launch_failed) and is reported. */
  private async launch(target: LaunchTarget): Promise<void> {
    try {
      await this.spawn(target);
    } catch (e) {
      const message = e instanceof Error ? e.message : String(e);
      await repo.markLaunchFailed(this.db, target.instanceId, `launch failed: ${message}`);
      this.logger.error({ err: e, instanceId: target.instanceId }, "launch failed");
      if (e instanceof FailedPrecondition) throw e;
      throw new FailedPrecondition(`launch failed: ${message} (instance ${target.instanceId} is FAILED, launch_failed)`);
    }
  }

  /**
   * Relaunches an instance the wake scheduler claimed (it is PENDING now). A failed launch is
   * retried with backoff (back to SUSPENDED with a later wake time); after `maxAttempts` the
   * instance is FAILED (launch_failed).
   */
  async wake(target: LaunchTarget, attempt: number, maxAttempts: number): Promise<void> {
    try {
      await this.spawn(target);
    } catch (e) {
      const message = e instanceof Error ? e.message : String(e);
      if (attempt >= maxAttempts) {
        await repo.markLaunchFailed(this.db, target.instanceId, `launch failed after ${attempt} attempts: ${message}`);
        this.logger.error({ err: e, instanceId: target.instanceId, attempt }, "wake failed for good");
        return;
      }
      const delayMs = Math.min(1_000 * 2 ** (attempt - 1), 60_000);
      await repo.rescheduleWake(this.db, target.instanceId, delayMs);
      this.logger.warn({ err: e, instanceId: target.instanceId, attempt, delayMs }, "wake launch failed; retrying later");
    }
  }

  private async spawn(target: LaunchTarget): Promise<void> {
    const runDir = path.join(this.options.dataDir, "runs", target.tenantId, target.instanceId);
    const runner = await this.checkRunnable(target.runnerType);
    await mkdir(runDir, { recursive: true, mode: 0o711 }); // runs/<tenant>: see secureDataDir
    const deadlineMs = Date.now() + target.timeoutSeconds * 1000;
    const process = await runner.launch({
      instanceId: target.instanceId,
      tenantId: target.tenantId,
      binaryPath: this.images.binaryPath(target.imageId),
      bundlePath: this.images.bundlePath(target.imageId),
      runDir,
      env: this.instanceEnv(target),
      networkMode: this.options.networkMode,
      coreSocketDir: this.options.coreSocketDir,
      limits: this.options.limits,
    });
    // Registered before tracking: a process that exits at once must find its row to delete.
    await repo.insertRunningProcess(this.db, {
      instanceId: target.instanceId,
      runner: runner.kind,
      containerId: process.containerId ?? "",
      pid: process.pid,
      processStartTime: process.startTime,
      replicaId: this.options.replicaId,
      host: os.hostname(),
      runDir,
      deadlineMs,
    });
    this.supervisor.track(target.instanceId, process, deadlineMs);
    this.logger.info({ instanceId: target.instanceId, pid: process.pid, runner: runner.kind, launchMs: process.launchMs }, "instance launched");
  }

  /** Exactly the variables of SPEC §4 plus the caller's env; nothing leaks from this process. */
  private instanceEnv(target: LaunchTarget): Record<string, string> {
    // A container with its own network namespace reaches core only through the socket.
    const viaSocket = target.runnerType === "oci" && this.options.networkMode !== "host";
    const url = viaSocket ? CORE_SOCKET_URL_IN_CONTAINER : `http://${this.options.coreAddr}`;
    const env: Record<string, string> = {
      ...target.env,
      RUNTARA_INSTANCE_ID: target.instanceId,
      RUNTARA_TENANT_ID: target.tenantId,
      RUNTARA_CORE_URL: url,
      ...(viaSocket ? {} : { RUNTARA_CORE_ADDR: this.options.coreAddr }),
      RUNTARA_HTTP_URL: url,
      RUNTARA_INSTANCE_TOKEN: this.tokens.instanceToken(target.instanceId),
    };
    if (target.checkpointId !== null) env.RUNTARA_CHECKPOINT_ID = target.checkpointId;
    if (this.options.skipCertVerification) env.RUNTARA_SKIP_CERT_VERIFICATION = "true";
    return env;
  }

  /** Just the status: the full row would also read input and output (up to 16 MiB each). */
  private statusOf(tenantId: string, instanceId: string): Promise<Status | null> {
    return tenantStatus(this.db, tenantId, instanceId);
  }

  private async waitForTerminal(tenantId: string, instanceId: string, ms: number): Promise<boolean> {
    const abort = new AbortController();
    const timer = setTimeout(() => abort.abort(), ms);
    try {
      for await (const instance of this.watch(tenantId, instanceId, abort.signal)) {
        if (isTerminal(instance.status)) return true;
      }
      return false;
    } finally {
      clearTimeout(timer);
    }
  }
}

function encodeToken(last: Instance, order: repo.InstanceOrder): string {
  const key = order.startsWith("created") ? last.sortKeys.created : last.sortKeys.finished;
  return Buffer.from(JSON.stringify({ o: order, k: key, i: last.instanceId })).toString("base64url");
}

const TIMESTAMP_TEXT = /^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}(\.\d{1,6})?[+-]\d{2}(:\d{2})?$/;

function decodeToken(token: string, order: repo.InstanceOrder): { key: string | null; id: string } {
  try {
    const t = JSON.parse(Buffer.from(token, "base64url").toString("utf8")) as { o?: unknown; k?: unknown; i?: unknown };
    const keyOk = t.k === null || (typeof t.k === "string" && TIMESTAMP_TEXT.test(t.k));
    if (t.o === order && keyOk && typeof t.i === "string") return { key: t.k as string | null, id: t.i };
  } catch {
    // fall through
  }
  throw new InvalidArgument("page_token", "is not a token returned by this API for this order_by");
}
