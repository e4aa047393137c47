import { randomUUID } from "node:crypto";
import { mkdir, stat } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import type { Logger } from "pino";
import type { DatabasePool } from "slonik";
import { FailedPrecondition, Unavailable } from "../errors.js";
import type { ImageStore, RunnerKind } from "../images/index.js";
import type { LaunchTarget, Status, Tokens } from "../lifecycle/index.js";
import type { RunnerCheck } from "../runner-policy.js";
import { bootId, CORE_SOCKET_URL_IN_CONTAINER, stopWithGrace, type ImageProcess, type NetworkMode, type ResourceLimits, type Runner, type Runners } from "../runner/index.js";
import type { Metrics } from "../metrics/index.js";
import * as repo from "./repository.js";
import type { Supervisor } from "./supervisor.js";
import { removeDirViaTombstone } from "../data-dir.js";

export interface LauncherOptions {
  dataDir: string;
  /** host:port instances use to reach core. */
  coreAddr: string;
  /** Core's URL over TCP (http:// or https://, for coreAddr). */
  coreUrl: string;
  skipCertVerification: boolean;
  networkMode: NetworkMode;
  replicaId: string;
  limits: ResourceLimits;
  /** Host directory of core's Unix socket, for containers with their own network namespace. */
  coreSocketDir?: string;
  /** Refuses runner kinds this environment may not run (the native runner policy). */
  checkRunner: RunnerCheck;
}

export interface LauncherDeps {
  db: DatabasePool;
  runners: Runners;
  images: ImageStore;
  tokens: Tokens;
  supervisor: Supervisor;
  logger: Logger;
  options: LauncherOptions;
  metrics: Pick<Metrics, "launches" | "launchFailures" | "launchDuration">;
}

/**
 * Starts the process of an instance that is PENDING (the caller made it so): picks the
 * runner, builds the instance's environment, records the process and hands it to the
 * supervisor. Knows nothing of why it launches (start, resume, wake) or how a failure
 * settles the instance; it throws and the caller decides.
 */
export class Launcher {
  constructor(private readonly deps: LauncherDeps) {}

  /**
   * Refuses images no runner here can run, before anything is written: WASM, or OCI on a
   * host without a working runc/crun (RuntimeUnavailable is a FailedPrecondition).
   */
  async checkRunnable(kind: RunnerKind): Promise<Runner> {
    if (kind === "wasm") throw new FailedPrecondition("wasm runner not available yet");
    this.deps.options.checkRunner(kind);
    if (kind === "oci") await this.deps.runners.oci.runtime();
    return this.deps.runners.runnerFor(kind);
  }

  /**
   * `firstRun`: the instance was just created, so a run directory under its id belongs to an
   * earlier, deleted instance with the same id; it is removed, and this run starts afresh
   * (relaunches of a durable instance keep theirs). Resolves with the instance's status as the
   * process was recorded (RUNNING if it registered already).
   */
  async launch(target: LaunchTarget, firstRun = false): Promise<Status> {
    const { metrics } = this.deps;
    const labels = { runner: target.runnerType };
    const done = metrics.launchDuration.startTimer(labels);
    let status: Status;
    try {
      status = await this.launchProcess(target, firstRun);
    } catch (e) {
      metrics.launchFailures.inc(labels);
      throw e;
    }
    done();
    metrics.launches.inc(labels);
    return status;
  }

  private async launchProcess(target: LaunchTarget, firstRun: boolean): Promise<Status> {
    const { db, images, supervisor, logger, options } = this.deps;
    const tenantRuns = path.join(options.dataDir, "runs", target.tenantId);
    const runDir = path.join(tenantRuns, target.instanceId);
    const runner = await this.checkRunnable(target.runnerType);
    const imageProcess = target.imageFormat === "oci_archive" ? await this.archiveProcess(target) : undefined;
    if (imageProcess === undefined) await this.checkImageIntact(target);
    await makeRunDir(tenantRuns, target.instanceId, firstRun);
    const deadlineMs = Date.now() + target.timeoutSeconds * 1000;
    const runId = randomUUID();
    const process = await runner.launch({
      instanceId: target.instanceId,
      tenantId: target.tenantId,
      binaryPath: images.binaryPath(target.imageId),
      bundlePath: images.bundlePath(target.imageId),
      ...(imageProcess ? { imageProcess } : {}),
      runDir,
      env: this.instanceEnv(target),
      logHeader: `--- runtara: run ${runId} started ${new Date().toISOString()} ---\n`,
      networkMode: options.networkMode,
      coreSocketDir: options.coreSocketDir,
      limits: options.limits,
    });
    // Listening before the record: a change committed after it is heard, one before is in its status.
    const listener = supervisor.listen(target.instanceId);
    let status: Status | null;
    try {
      // Recorded before tracking: a process that exits at once must find its row to settle.
      const record = await repo.insertRunningProcess(db, {
        instanceId: target.instanceId,
        runId,
        bootId: bootId(),
        runner: runner.kind,
        containerId: process.containerId ?? "",
        pid: process.pid,
        processStartTime: process.startTime,
        replicaId: options.replicaId,
        host: os.hostname(),
        runDir,
        deadlineMs,
      });
      if (!record.recorded) throw new Unavailable(`another run of instance ${target.instanceId} is still recorded; retry`);
      status = record.status;
    } catch (e) {
      listener.close();
      // A process nobody records would never be timed out, adopted or stopped.
      await stopWithGrace(process, 0).catch((err: unknown) => logger.error({ err, instanceId: target.instanceId }, "could not stop an unrecorded process"));
      throw e;
    }
    supervisor.track(target.instanceId, runId, process, deadlineMs, { listener, status });
    logger.info({ instanceId: target.instanceId, pid: process.pid, runner: runner.kind, launchMs: process.launchMs }, "instance launched");
    return status ?? "pending";
  }

  /** The process of an unpacked OCI archive image; a missing or unreadable one is damage, as below. */
  private async archiveProcess(target: LaunchTarget): Promise<ImageProcess> {
    try {
      return await this.deps.images.imageProcess(target.imageId);
    } catch (e) {
      throw new FailedPrecondition(`image ${target.imageId} is damaged on disk (${(e as Error).message}); register it again`);
    }
  }

  /** A binary whose size is not the recorded one was damaged on disk (power loss, tampering). */
  private async checkImageIntact(target: LaunchTarget): Promise<void> {
    const size = await stat(this.deps.images.binaryPath(target.imageId)).then(
      (s) => BigInt(s.size),
      () => null,
    );
    if (size !== target.imageSizeBytes) {
      throw new FailedPrecondition(
        `image ${target.imageId} is damaged on disk (binary ${size === null ? "missing" : `${size} bytes`}, registered ${target.imageSizeBytes}); register it again`,
      );
    }
  }

  /** Exactly the variables of SPEC §4 plus the caller's env; nothing leaks from this process. */
  private instanceEnv(target: LaunchTarget): Record<string, string> {
    const { tokens, options } = this.deps;
    // A container with its own network namespace reaches core only through the socket.
    const viaSocket = target.runnerType === "oci" && options.networkMode !== "host";
    const url = viaSocket ? CORE_SOCKET_URL_IN_CONTAINER : options.coreUrl;
    const env: Record<string, string> = {
      ...target.env,
      RUNTARA_INSTANCE_ID: target.instanceId,
      RUNTARA_TENANT_ID: target.tenantId,
      RUNTARA_CORE_URL: url,
      ...(viaSocket ? {} : { RUNTARA_CORE_ADDR: options.coreAddr }),
      RUNTARA_HTTP_URL: url,
      RUNTARA_INSTANCE_TOKEN: tokens.instanceToken(target.instanceId, target.tokenNonce),
    };
    if (target.checkpointId !== null) env.RUNTARA_CHECKPOINT_ID = target.checkpointId;
    if (options.skipCertVerification) env.RUNTARA_SKIP_CERT_VERIFICATION = "true";
    return env;
  }
}

/**
 * Creates the run directory `tenantRuns/id` (one mkdir for a fresh id of a tenant that ran
 * before, or for a relaunch). `firstRun`: one already there belongs to an earlier, deleted
 * instance with the same id and is removed first; a relaunch keeps its own.
 */
async function makeRunDir(tenantRuns: string, id: string, firstRun: boolean): Promise<void> {
  try {
    await mkdir(path.join(tenantRuns, id), { mode: 0o711 });
    return;
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code !== "EEXIST" && code !== "ENOENT") throw e;
    if (code === "EEXIST" && !firstRun) return; // a relaunch keeps its own
    if (code === "EEXIST") await removeDirViaTombstone(tenantRuns, id);
  }
  await mkdir(path.join(tenantRuns, id), { recursive: true, mode: 0o711 }); // runs/<tenant>: see secureDataDir
}
