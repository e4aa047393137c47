import path from "node:path";
import type { DatabasePool } from "slonik";
import type { Logger } from "pino";
import { deleteExpiredInstances } from "./cleanup-queries.js";
import { removeRunDir } from "./cleanup-runs.js";
import { tryAcquireGate } from "./gate.js";
import { MaintenanceLoop } from "./maintenance-loop.js";

export interface DatabaseCleanupOptions {
  /** Off unless RUNTARA_DB_CLEANUP_ENABLED: start() and runOnce() do nothing. @default false */
  enabled: boolean;
  /** How often the retention pass runs; also the cadence of the cluster-wide gate. @default 1 h */
  intervalMs: number;
  /** Terminal instances whose finished_at is older than this are deleted. @default 30 days */
  maxAgeMs: number;
  /** Instances deleted per statement. @default 100 */
  batchSize: number;
}

export interface DatabaseCleanupResult {
  /** False when disabled, when another replica ran the pass within the interval, or the gate could not be read. */
  ran: boolean;
  /** Instances deleted (their checkpoints, events, signals and process rows went by cascade). */
  instancesDeleted: number;
  /** DELETE statements issued. */
  batches: number;
  /** Run directories of deleted instances removed from this host's disk. */
  runDirsRemoved: number;
  errors: number;
}

/** One gate for the cluster: the rows are shared, so one replica per interval does the work. */
const GATE = "cleanup-database";

/**
 * Database retention (opt-in): deletes COMPLETED/FAILED/CANCELLED instances that finished
 * longer ago than the max age, `batchSize` per statement, until a short batch; children go
 * by ON DELETE CASCADE. PENDING/RUNNING/SUSPENDED instances are never touched, however old.
 * The run directories of deleted instances are removed from this host's disk; other hosts'
 * copies are left to their run-directory cleanup (a directory without a row is removable).
 *
 * `logger` is used as given: pass a child with `component`, as for the other workers.
 */
export class DatabaseCleanup {
  private readonly runsRoot: string;
  private readonly loop: MaintenanceLoop;

  constructor(
    private readonly db: DatabasePool,
    dataDir: string,
    private readonly logger: Logger,
    private readonly options: DatabaseCleanupOptions,
  ) {
    this.runsRoot = path.resolve(dataDir, "runs");
    this.loop = new MaintenanceLoop((signal) => this.pass(signal), this.logger, options.intervalMs);
  }

  start(): void {
    if (!this.options.enabled) {
      this.logger.debug("database cleanup disabled (RUNTARA_DB_CLEANUP_ENABLED)");
      return;
    }
    if (this.loop.running) return;
    this.loop.start();
    const { intervalMs, maxAgeMs, batchSize } = this.options;
    this.logger.info({ intervalMs, maxAgeMs, batchSize }, "database cleanup started");
  }

  stop(): Promise<void> {
    return this.loop.stop();
  }

  /** One pass now (after any pass in flight), subject to `enabled` and the gate. Never throws. */
  runOnce(): Promise<DatabaseCleanupResult> {
    return this.loop.exclusive(() => this.pass(this.loop.signal));
  }

  private async pass(signal: AbortSignal): Promise<DatabaseCleanupResult> {
    const result: DatabaseCleanupResult = { ran: false, instancesDeleted: 0, batches: 0, runDirsRemoved: 0, errors: 0 };
    if (!this.options.enabled) return result;
    try {
      if (!(await tryAcquireGate(this.db, GATE, this.options.intervalMs))) return result;
      result.ran = true;
      const startedAt = Date.now();
      const { maxAgeMs, batchSize } = this.options;
      // A stop() between batches ends the pass; the rest waits for the next one.
      while (!signal.aborted) {
        const deleted = await deleteExpiredInstances(this.db, maxAgeMs, batchSize);
        result.batches++;
        result.instancesDeleted += deleted.length;
        for (const { tenant_id: tenantId, instance_id: instanceId } of deleted) {
          try {
            if (await removeRunDir(this.runsRoot, tenantId, instanceId)) result.runDirsRemoved++;
          } catch (e) {
            result.errors++;
            this.logger.warn({ err: e, tenantId, instanceId }, "could not remove the run directory of a deleted instance");
          }
        }
        if (deleted.length < batchSize) break;
      }
      const level = result.instancesDeleted > 0 || result.errors > 0 ? "info" : "debug";
      this.logger[level]({ ...result, ms: Date.now() - startedAt }, "database cleanup pass done");
    } catch (e) {
      result.errors++;
      this.logger.error({ err: e, instancesDeleted: result.instancesDeleted }, "database cleanup pass failed");
    }
    return result;
  }
}
