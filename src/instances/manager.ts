import { randomUUID } from "node:crypto";
import os from "node:os";
import type { DatabasePool } from "slonik";
import type { Logger } from "pino";
import { FailedPrecondition, InvalidArgument, NotFound, ResourceExhausted, Unavailable } from "../errors.js";
import { ImageLookup } from "../images/image-lookup.js";
import { findImageByName } from "../images/repository.js";
import type { ImageRef } from "../images/types.js";
import { isTerminal, transitions, type LaunchTarget, type Status } from "../lifecycle/index.js";
import { bootId, isSameProcess, RuntimeUnavailable, type Runners } from "../runner/index.js";
import type { CoreGateway } from "./core-gateway.js";
import { classifyLaunchError } from "./launch-errors.js";
import type { Launcher } from "./launcher.js";
import { decodePageToken, encodePageToken } from "./page-token.js";
import * as repo from "./repository.js";
import type { Supervisor } from "./supervisor.js";
import type { TransitionFeeds } from "./transition-feed.js";
import type { Instance } from "./types.js";

export interface StartRequest {
  tenantId: string;
  /** The version the instance runs, now and on every relaunch (instances reference image_id). */
  image: ImageRef;
  instanceId: string | undefined;
  input: Uint8Array;
  timeoutSeconds: number;
  env: Record<string, string>;
}

export type ListRequest = Omit<repo.InstanceListQuery, "after"> & { pageToken: string };

export interface InstanceManagerDeps {
  db: DatabasePool;
  runners: Runners;
  launcher: Launcher;
  supervisor: Supervisor;
  core: CoreGateway;
  /** Every transition of watched instances, read once per change. */
  transitions: TransitionFeeds;
  logger: Logger;
  replicaId: string;
  /** `DATA_DIR/runs`: containers whose bundle is under it were launched by environments of this DATA_DIR. */
  runsDir: string;
  /** Launch attempts of a stale PENDING instance before it is FAILED (launch_failed). */
  maxLaunchAttempts: number;
  /** How long another replica's PENDING instance may go without a process before this one relaunches it. */
  pendingTimeoutMs: number;
  /** PENDING and RUNNING instances one tenant may start (relaunches of durable ones are not held back). */
  tenantMaxActiveInstances: number;
}

/** How long a relaunch waits for this replica's previous run of the instance to exit. */
const PREVIOUS_RUN_WAIT_MS = 10_000;

/**
 * Instance lifecycle on the environment side: start, stop, resume, wake, status, list, watch,
 * restart recovery and heartbeat enforcement. Status changes are guarded statements of
 * src/lifecycle; processes are started by the Launcher and watched by the Supervisor.
 */
export class InstanceManager {
  private readonly outcomes = new Map<string, Promise<Instance | null>>();

  private readonly images: ImageLookup;

  constructor(private readonly deps: InstanceManagerDeps) {
    this.images = new ImageLookup(deps.db);
  }

  async start(req: StartRequest): Promise<{ instanceId: string; status: Status }> {
    const { db, launcher } = this.deps;
    const image = await this.findImage(req.tenantId, req.image);
    await launcher.checkRunnable(image.runnerType);
    const instanceId = req.instanceId ?? randomUUID();
    const tokenNonce = await transitions.insertInstance(db, {
      claimedBy: this.deps.replicaId,
      maxActiveForTenant: this.deps.tenantMaxActiveInstances,
      instanceId,
      tenantId: req.tenantId,
      imageId: image.imageId,
      imageName: image.name,
      input: req.input,
      env: req.env,
      timeoutSeconds: req.timeoutSeconds,
    });
    if (tokenNonce === null) {
      throw new ResourceExhausted(
        `tenant ${req.tenantId} has ${this.deps.tenantMaxActiveInstances} pending or running instances, the most allowed (RUNTARA_TENANT_MAX_ACTIVE_INSTANCES); retry when some finish`,
      );
    }
    const status = await this.launch({
      instanceId,
      tenantId: req.tenantId,
      imageId: image.imageId,
      runnerType: image.runnerType,
      timeoutSeconds: req.timeoutSeconds,
      checkpointId: null,
      env: req.env,
      tokenNonce,
      imageSizeBytes: image.sizeBytes,
      imageFormat: image.format,
    });
    return { instanceId, status };
  }

  private async findImage(tenantId: string, ref: ImageRef) {
    const { db } = this.deps;
    if ("imageId" in ref) {
      const image = await this.images.byId(tenantId, ref.imageId);
      if (image === null) throw new NotFound(`image ${ref.imageId} not found`);
      return image;
    }
    const image = await findImageByName(db, tenantId, ref.name, ref.version);
    if (image === null) {
      throw new NotFound(
        ref.version === undefined ? `image_name: image "${ref.name}" not found` : `image_version: image "${ref.name}" has no version ${ref.version}`,
      );
    }
    return image;
  }

  /** Relaunches a SUSPENDED instance from its last checkpoint. */
  async resume(tenantId: string, instanceId: string): Promise<Status> {
    const status = await this.relaunchIfSuspended(tenantId, instanceId);
    if (status !== null) return status;
    const current = await this.statusOf(tenantId, instanceId);
    if (current === null) throw new NotFound(`instance ${instanceId} not found`);
    throw new FailedPrecondition(`only a SUSPENDED instance can be resumed; instance ${instanceId} is ${current.toUpperCase()}`);
  }

  /**
   * Relaunches the instance if it is SUSPENDED (status afterwards), else null. The previous
   * run may still be exiting (a PAUSE is acknowledged before the process is gone): a run on
   * this replica is waited for (bounded); one elsewhere is a retryable UNAVAILABLE. A launch
   * that fails leaves the instance SUSPENDED, with the error recorded.
   */
  async relaunchIfSuspended(tenantId: string, instanceId: string): Promise<Status | null> {
    const { db, supervisor, replicaId } = this.deps;
    let target = await transitions.claimForRelaunch(db, tenantId, instanceId, replicaId);
    if (target === null && (await this.statusOf(tenantId, instanceId)) === "suspended") {
      if (!(await supervisor.waitForExit(instanceId, PREVIOUS_RUN_WAIT_MS))) {
        throw new Unavailable(`the previous run of instance ${instanceId} is still exiting; retry`);
      }
      target = await transitions.claimForRelaunch(db, tenantId, instanceId, replicaId);
      if (target === null && (await this.statusOf(tenantId, instanceId)) === "suspended") {
        throw new Unavailable(`the previous run of instance ${instanceId} is still exiting on another replica; retry`);
      }
    }
    if (target === null) return null;
    return this.relaunch(target);
  }

  /**
   * Delivers CANCEL through core, waits up to the grace period for the instance to exit on
   * its own, then SIGTERM, then SIGKILL. The final status is CANCELLED unless the instance
   * completed (or failed) first.
   */
  async stop(tenantId: string, instanceId: string, graceSeconds: number, reason: string): Promise<Status> {
    const { db, core, supervisor, logger } = this.deps;
    const before = await this.statusOf(tenantId, instanceId);
    if (before === null) throw new NotFound(`instance ${instanceId} not found`);
    if (isTerminal(before)) return before;
    logger.info({ instanceId, tenantId, reason, graceSeconds }, "stopping instance");
    try {
      await core.sendSignal(tenantId, instanceId, "cancel", new TextEncoder().encode(reason));
    } catch (e) {
      // Terminal in the meantime (completed first): nothing to stop. Anything else: still
      // stop the process below; the status is forced afterwards.
      logger.warn({ err: e, instanceId }, "could not deliver CANCEL before stopping");
    }
    if (supervisor.isTracked(instanceId)) {
      await supervisor.stop(instanceId, graceSeconds * 1000, "cancelled");
    } else if (!(await this.waitForTerminal(tenantId, instanceId, graceSeconds * 1000))) {
      logger.warn({ instanceId }, "instance has no process on this replica; forcing CANCELLED");
    }
    return (await transitions.markCancelled(db, tenantId, instanceId)) ?? "cancelled";
  }

  /**
   * Relaunches an instance the wake scheduler claimed (it is PENDING now). A failed launch is
   * retried with backoff (back to SUSPENDED with a later wake time); after `maxAttempts` the
   * instance is FAILED (launch_failed).
   */
  async wake(target: LaunchTarget, attempt: number, maxAttempts: number): Promise<void> {
    const { db, launcher, logger } = this.deps;
    try {
      await launcher.launch(target);
    } catch (e) {
      if (attempt >= maxAttempts) {
        const { recorded } = classifyLaunchError(e, "FAILED");
        await transitions.markLaunchFailed(db, target.instanceId, `${recorded} (after ${attempt} attempts)`);
        logger.error({ err: e, instanceId: target.instanceId, attempt }, "wake failed for good");
        return;
      }
      const delayMs = Math.min(1_000 * 2 ** (attempt - 1), 60_000);
      await transitions.rescheduleWake(db, target.instanceId, delayMs);
      logger.warn({ err: e, instanceId: target.instanceId, attempt, delayMs }, "wake launch failed; retrying later");
    }
  }

  /**
   * Restart recovery: adopts the processes an earlier run of this replica launched on this
   * host. Each is recognised by pid AND process start time (a reused pid is never mistaken),
   * and watched again (exit, timeout); one that is gone is settled from the database status
   * like any exit (crashed if it never reported). Healthy workflows are never killed.
   */
  async recover(): Promise<{ adopted: number; gone: number }> {
    const { db, runners, supervisor, logger, replicaId } = this.deps;
    const rows = await repo.processesOf(db, os.hostname(), replicaId);
    const crashed = { exitCode: null, signal: null, stderrTail: "", memoryPeakBytes: undefined, cpuUsageUsec: undefined, verdict: "crashed" } as const;
    let adopted = 0;
    let gone = 0;
    for (const r of rows) {
      try {
        // A row of another boot names a pid that means nothing now: never adopt or signal it.
        const proc =
          r.bootId === bootId()
            ? await runners.runnerFor(r.runner).adopt({
                instanceId: r.instanceId,
                pid: r.pid,
                startTime: r.startTime,
                containerId: r.containerId === "" ? undefined : r.containerId,
                runDir: r.runDir,
              })
            : null;
        if (proc === null) {
          // Gone while nobody watched: settle it from the database status like any exit.
          gone++;
          await transitions.recordRunEnd(db, r.instanceId, r.runId, crashed);
          continue;
        }
        if (await isSameProcess(r.pid, r.startTime)) adopted++;
        else gone++;
        supervisor.track(r.instanceId, r.runId, proc, r.deadlineMs);
      } catch (e) {
        // One bad row must not keep the environment from starting: settle it and go on.
        gone++;
        logger.error({ err: e, instanceId: r.instanceId }, "could not adopt a process of the previous run; settling it as crashed");
        await transitions.recordRunEnd(db, r.instanceId, r.runId, crashed);
      }
    }
    if (rows.length > 0) logger.info({ adopted, gone }, "recovered processes of the previous run");
    await this.removeUnknownContainers();
    // Its own claims at once; another replica's only once stale (that one may be launching it now).
    const relaunched = await this.relaunchStalePending(this.deps.pendingTimeoutMs, true);
    if (relaunched > 0) logger.info({ relaunched }, "relaunched instances whose launch the previous run did not finish");
    return { adopted, gone };
  }

  /**
   * Removes containers of this DATA_DIR and native processes of this environment (its DATA_DIR
   * and replica, by cgroup name) that no run accounts for: the previous run of the environment
   * died between starting one and recording it, so nothing would ever stop, time out or settle
   * it, and the instance would run twice (its relaunch beside it; a container would block the
   * relaunch); and pastas whose namespace is gone. Runs after adoption, before this replica
   * launches anything. A failure is logged; startup goes on.
   */
  private async removeUnknownContainers(): Promise<void> {
    const { db, runners, logger, replicaId, runsDir } = this.deps;
    try {
      const removed = await runners.native.removeUnknownProcesses(await repo.recordedNativePids(db, bootId()));
      if (removed.length > 0) logger.warn({ pids: removed }, "killed native processes no run accounts for");
    } catch (e) {
      logger.warn({ err: e }, "could not look for native processes no run accounts for");
    }
    try {
      const ours = (await runners.oci.listContainers()).filter((c) => c.bundle.startsWith(`${runsDir}/`));
      const unknown = new Set(await repo.instancesWithoutRun(db, ours.map((c) => c.instanceId), replicaId));
      for (const c of ours.filter((c) => unknown.has(c.instanceId))) {
        logger.warn({ instanceId: c.instanceId, containerId: c.containerId }, "removing a container no run accounts for");
        await runners.oci.removeContainer(c.containerId);
      }
      await runners.oci.removeOrphanedNetworking();
    } catch (e) {
      if (e instanceof RuntimeUnavailable) return; // no OCI runtime: no containers either
      logger.warn({ err: e }, "could not look for containers no run accounts for");
    }
  }

  /**
   * Relaunches PENDING instances nobody is launching (their environment died between the
   * claim and the launch): those older than `olderThanMs`, and at startup this replica's own
   * claims. Each attempt counts; after `maxAttempts` the instance is FAILED (launch_failed).
   */
  async relaunchStalePending(olderThanMs: number, ownClaims = false): Promise<number> {
    const { db, launcher, logger, replicaId, maxLaunchAttempts } = this.deps;
    const claimed = await transitions.claimStalePending(db, {
      olderThanMs,
      ownClaimsOf: ownClaims ? replicaId : undefined,
      limit: 100,
      replicaId,
    });
    await Promise.all(
      claimed.map(async ({ target, attempt }) => {
        try {
          await launcher.launch(target);
        } catch (e) {
          const { recorded } = classifyLaunchError(e, "PENDING");
          logger.warn({ err: e, instanceId: target.instanceId, attempt }, "relaunch of a stale PENDING instance failed");
          if (attempt >= maxLaunchAttempts) await transitions.markLaunchFailed(db, target.instanceId, `${recorded} (after ${attempt} attempts)`);
        }
      }),
    );
    return claimed.length;
  }

  /**
   * Heartbeat check: kills this replica's RUNNING instances that have been silent longer
   * than the timeout (FAILED heartbeat_timeout), and fails orphans cluster-wide.
   */
  async enforceHeartbeats(timeoutMs: number): Promise<void> {
    const { db, supervisor, logger, replicaId } = this.deps;
    const stale = await repo.staleOwnedInstances(db, os.hostname(), replicaId, timeoutMs);
    await Promise.all(
      stale.map(async (instanceId) => {
        logger.warn({ instanceId, timeoutMs }, "no heartbeat: killing the instance");
        await supervisor.stop(instanceId, 0, "heartbeat_timeout");
      }),
    );
    const orphans = await transitions.failOrphans(db, timeoutMs);
    for (const instanceId of orphans) logger.warn({ instanceId }, "instance orphaned: FAILED");
  }

  /**
   * Stops watching every process without touching it (environment shutdown): the workflows
   * keep running and nothing of theirs holds this process's event loop open any more.
   */
  detachAll(): void {
    this.deps.supervisor.detachAll();
    this.deps.runners.oci.detachAll();
    this.deps.runners.native.detachAll();
  }

  /** Instances holding or about to hold a process, cluster-wide (HealthCheck). */
  /** PENDING and RUNNING instances of one tenant, or of all. */
  countByStatus(): Promise<ReadonlyMap<string, number>> {
    return repo.countInstancesByStatus(this.deps.db);
  }

  countActive(tenantId: string | undefined): Promise<bigint> {
    return repo.countActiveInstances(this.deps.db, tenantId);
  }

  async get(tenantId: string, instanceId: string): Promise<Instance> {
    const instance = await repo.findInstance(this.deps.db, tenantId, instanceId);
    if (instance === null) throw new NotFound(`instance ${instanceId} not found`);
    return instance;
  }

  async list(req: ListRequest): Promise<{ instances: readonly Instance[]; nextPageToken: string; totalCount: bigint }> {
    const after = req.pageToken === "" ? undefined : decodePageToken(req.pageToken, req.order);
    if (after !== undefined && req.offset !== 0) throw new InvalidArgument("offset", "cannot be combined with page_token");
    const query = { ...req, after };
    // A later page answers with the first page's count (carried in its token): one statement, not two.
    const [rows, totalCount] = await Promise.all([
      repo.listInstances(this.deps.db, query),
      after?.totalCount ?? repo.countInstances(this.deps.db, query),
    ]);
    const instances = rows.slice(0, req.limit);
    const last = instances[instances.length - 1];
    const nextPageToken = rows.length > req.limit && last ? encodePageToken(last, req.order, totalCount) : "";
    return { instances, nextPageToken, totalCount };
  }

  /**
   * Yields the instance now and then every transition, in order, until it is terminal: the
   * first and intermediate messages carry the instance without its large fields (input,
   * output, stderr), the terminal one its outcome (output, error, stderr; not the input the
   * caller sent). Transitions come from the database's own record of them (a burst of three is
   * three messages); each change and each outcome is read once for all watchers of the
   * instance.
   */
  async *watch(tenantId: string, instanceId: string, abort: AbortSignal): AsyncGenerator<Instance> {
    const { db, transitions: feeds } = this.deps;
    const changes = await feeds.subscribe(instanceId, abort);
    try {
      const snapshot = await repo.findInstanceSnapshot(db, tenantId, instanceId);
      if (snapshot === null) throw new NotFound(`instance ${instanceId} not found`);
      if (isTerminal(snapshot.instance.status)) {
        yield (await this.outcomeOf(instanceId)) ?? snapshot.instance;
        return;
      }
      yield snapshot.instance;
      let seen = snapshot.transitionId;
      for (let batch = await changes.next(); batch !== undefined; batch = await changes.next()) {
        for (const t of batch) {
          if (t.id <= seen) continue;
          seen = t.id;
          if (isTerminal(t.status)) {
            yield (await this.outcomeOf(instanceId)) ?? { ...snapshot.instance, status: t.status, terminationReason: t.terminationReason };
            return;
          }
          yield { ...snapshot.instance, status: t.status, terminationReason: t.terminationReason };
        }
      }
    } finally {
      changes.close();
    }
  }

  /**
   * A terminal instance's outcome, read once for every watcher that asks within a second:
   * 200 watchers of an instance with a 16 MiB output must not read it 200 times.
   */
  private outcomeOf(instanceId: string): Promise<Instance | null> {
    let read = this.outcomes.get(instanceId);
    if (read === undefined) {
      read = repo.findInstanceOutcome(this.deps.db, instanceId);
      this.outcomes.set(instanceId, read);
      const forget = () => setTimeout(() => this.outcomes.delete(instanceId), 1_000).unref();
      read.then(forget, () => this.outcomes.delete(instanceId));
    }
    return read;
  }

  /** Launches a new instance; a failure settles it as FAILED (launch_failed) and is reported. */
  private async launch(target: LaunchTarget): Promise<Status> {
    try {
      return await this.deps.launcher.launch(target, true);
    } catch (e) {
      const { error, recorded } = classifyLaunchError(e, `instance ${target.instanceId} is FAILED, launch_failed`);
      this.deps.logger.error({ err: e, instanceId: target.instanceId }, "launch failed");
      await transitions
        .markLaunchFailed(this.deps.db, target.instanceId, recorded)
        .catch((err: unknown) => this.deps.logger.error({ err, instanceId: target.instanceId }, "could not record the failed launch"));
      throw error;
    }
  }

  /** Relaunches a durable instance; a failure puts it back to SUSPENDED, resumable again. */
  private async relaunch(target: LaunchTarget): Promise<Status> {
    try {
      return await this.deps.launcher.launch(target);
    } catch (e) {
      const { error, recorded } = classifyLaunchError(e, `instance ${target.instanceId} is still SUSPENDED and can be resumed again`);
      this.deps.logger.warn({ err: e, instanceId: target.instanceId }, "relaunch failed; the instance stays SUSPENDED");
      await transitions
        .returnToSuspended(this.deps.db, target.instanceId, recorded)
        .catch((err: unknown) => this.deps.logger.error({ err, instanceId: target.instanceId }, "could not record the failed relaunch"));
      throw error;
    }
  }

  /** Just the status: the full row would also read input and output (up to 16 MiB each). */
  private statusOf(tenantId: string, instanceId: string): Promise<Status | null> {
    return transitions.tenantStatus(this.deps.db, tenantId, instanceId);
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
