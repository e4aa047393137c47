import type { Dirent } from "node:fs";
import { lstat, readdir, rmdir } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import type { DatabasePool } from "slonik";
import type { Logger } from "pino";
import { removeDirViaTombstone } from "../data-dir.js";
import { runDirsToKeep } from "./cleanup-queries.js";
import { tryAcquireGate } from "./gate.js";
import { MaintenanceLoop } from "./maintenance-loop.js";

export interface RunDirCleanupOptions {
  /** A run directory whose mtime is older than this (and whose instance is not live) is removed. @default 24 h */
  maxAgeMs: number;
  /** How often to scan; also the cadence of the gate. @default 1 h */
  intervalMs: number;
}

export interface RunDirCleanupResult {
  /** False when another replica (or an earlier call) ran this pass within the interval, or the gate could not be read. */
  ran: boolean;
  /** Run directories older than the max age that were looked at. */
  candidates: number;
  /** Run directories removed. */
  removed: number;
  /** Old run directories kept because their instance is live, still has a process, or finished recently. */
  kept: number;
  /** Empty tenant directories removed. */
  tenantDirsRemoved: number;
  /** Failures (logged); the pass goes on after each. */
  errors: number;
}

/** Ids queried per statement. */
const CHUNK = 500;
/** An empty tenant directory younger than this may be in use by a launch creating its run dir. */
const TENANT_DIR_GRACE_MS = 60_000;

/**
 * Removes `DATA_DIR/runs/<tenant>/<instance>/` directories older than the max age whose
 * instance is not PENDING/RUNNING/SUSPENDED (a directory without an instance row goes too),
 * and tenant directories left empty. Symbolic links are never followed, at any level: a
 * link in runs/ or in a tenant directory is left alone, and the recursive removal of a run
 * directory unlinks links inside it rather than descending into them. Nothing outside
 * DATA_DIR/runs is touched; names come from readdir, never from the database.
 *
 * The gate is per host and directory (`cleanup-runs:<host>:<runs dir>`): run directories
 * live on the local disk of each environment process, so each disk needs its own pass, while
 * replicas sharing one DATA_DIR on one host scan it once per interval.
 *
 * `logger` is used as given: pass a child with `component`, as for the other workers.
 */
export class RunDirCleanup {
  private readonly runsRoot: string;
  private readonly gateName: string;
  private readonly loop: MaintenanceLoop;

  constructor(
    private readonly db: DatabasePool,
    dataDir: string,
    private readonly logger: Logger,
    private readonly options: RunDirCleanupOptions,
  ) {
    this.runsRoot = path.resolve(dataDir, "runs");
    this.gateName = `cleanup-runs:${os.hostname()}:${this.runsRoot}`;
    this.loop = new MaintenanceLoop((signal) => this.pass(signal), this.logger, options.intervalMs);
  }

  start(): void {
    if (this.loop.running) return;
    this.loop.start();
    this.logger.info({ maxAgeMs: this.options.maxAgeMs, intervalMs: this.options.intervalMs }, "run directory cleanup started");
  }

  stop(): Promise<void> {
    return this.loop.stop();
  }

  /** One pass now (after any pass in flight), subject to the gate. Never throws. */
  runOnce(): Promise<RunDirCleanupResult> {
    return this.loop.exclusive(() => this.pass(this.loop.signal));
  }

  private async pass(signal: AbortSignal): Promise<RunDirCleanupResult> {
    const result: RunDirCleanupResult = { ran: false, candidates: 0, removed: 0, kept: 0, tenantDirsRemoved: 0, errors: 0 };
    try {
      if (!(await tryAcquireGate(this.db, this.gateName, this.options.intervalMs))) return result;
      result.ran = true;
      const startedAt = Date.now();
      const cutoff = startedAt - this.options.maxAgeMs;
      const tenants = await readdirIfExists(this.runsRoot);
      for (const tenant of tenants) {
        if (signal.aborted) break;
        // Dirent types come from lstat semantics: a symlink is not a directory here.
        if (!tenant.isDirectory()) continue;
        try {
          await this.cleanTenant(path.join(this.runsRoot, tenant.name), cutoff, result, signal);
        } catch (e) {
          result.errors++;
          this.logger.warn({ err: e, tenantId: tenant.name }, "could not clean the run directories of a tenant");
        }
      }
      const level = result.removed > 0 || result.errors > 0 ? "info" : "debug";
      this.logger[level]({ ...result, ms: Date.now() - startedAt }, "run directory cleanup pass done");
    } catch (e) {
      result.errors++;
      this.logger.error({ err: e }, "run directory cleanup pass failed");
    }
    return result;
  }

  private async cleanTenant(tenantDir: string, cutoff: number, result: RunDirCleanupResult, signal: AbortSignal) {
    const tenantStat = await lstat(tenantDir);
    if (!tenantStat.isDirectory()) return;
    const entries = await readdirIfExists(tenantDir);
    const old: string[] = [];
    for (const entry of entries) {
      if (!entry.isDirectory()) continue;
      const st = await lstatIfExists(path.join(tenantDir, entry.name));
      if (st?.isDirectory() && st.mtimeMs < cutoff) old.push(entry.name);
    }
    result.candidates += old.length;
    let removedHere = 0;
    for (let i = 0; i < old.length && !signal.aborted; i += CHUNK) {
      const chunk = old.slice(i, i + CHUNK);
      const keep = await runDirsToKeep(this.db, chunk, this.options.maxAgeMs);
      for (const instanceId of chunk) {
        if (keep.has(instanceId)) {
          result.kept++;
          continue;
        }
        try {
          await removeDirViaTombstone(tenantDir, instanceId);
          result.removed++;
          removedHere++;
        } catch (e) {
          result.errors++;
          this.logger.warn({ err: e, instanceId }, "could not remove a run directory");
        }
      }
    }
    // rmdir (not rm -r) only removes it if still empty; a launch that just created a run dir
    // in it wins with ENOTEMPTY. The grace keeps a tenant dir a launch has just created.
    if (removedHere === entries.length && tenantStat.mtimeMs < Date.now() - TENANT_DIR_GRACE_MS) {
      try {
        await rmdir(tenantDir);
        result.tenantDirsRemoved++;
      } catch (e) {
        const code = (e as NodeJS.ErrnoException).code;
        if (code !== "ENOTEMPTY" && code !== "EEXIST" && code !== "ENOENT") {
          result.errors++;
          this.logger.warn({ err: e, tenantDir }, "could not remove an empty tenant run directory");
        }
      }
    }
  }
}

/** A single path component that cannot step outside its parent. */
function isPlainName(name: string): boolean {
  return name !== "" && name !== "." && name !== ".." && !/[/\\\0]/.test(name);
}

/**
 * Removes `runsRoot/<tenantId>/<instanceId>` if it is a real directory under a real tenant
 * directory (no component may be a symlink, `.`/`..` or contain a separator: the ids come
 * from the database). Returns whether a directory was removed.
 */
export async function removeRunDir(runsRoot: string, tenantId: string, instanceId: string): Promise<boolean> {
  if (!isPlainName(tenantId) || !isPlainName(instanceId)) return false;
  const tenantDir = path.join(runsRoot, tenantId);
  if (!(await lstatIfExists(tenantDir))?.isDirectory()) return false;
  return removeDirViaTombstone(tenantDir, instanceId);
}

async function readdirIfExists(dir: string): Promise<Dirent[]> {
  try {
    return await readdir(dir, { withFileTypes: true });
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return [];
    throw e;
  }
}

async function lstatIfExists(p: string) {
  try {
    return await lstat(p);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw e;
  }
}
