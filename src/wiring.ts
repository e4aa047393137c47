import type { Logger } from "pino";
import { sql } from "slonik";
import type { CompiledOptions } from "./config.js";
import type { Database } from "./db/index.js";
import type { Tokens } from "./lifecycle/index.js";
import type { AggregateLimits, ResourceLimits } from "./runner/index.js";
import { MaintenanceLoop } from "./scheduler/maintenance-loop.js";
import type { Startup } from "./startup.js";

/** Small derivations the composition roots share; no side effects. */

/** A container's limits from the options. */
export function containerLimits(o: CompiledOptions): ResourceLimits {
  return {
    memoryBytes: o.memoryLimitBytes,
    cpuPeriodUs: o.cpuPeriodUs,
    cpuQuotaUs: Math.round(o.cpuLimit * o.cpuPeriodUs),
    pidsLimit: o.pidsLimit,
    nofile: o.nofileLimit,
    fileBytes: o.maxFileBytes,
  };
}

/** Limits of all runs together, on the cgroup both runners share (0 in the options: none). */
export function aggregateLimits(o: CompiledOptions): AggregateLimits {
  return {
    pidsMax: o.totalPidsMax === 0 ? undefined : o.totalPidsMax,
    memoryBytes: o.totalMemoryBytes === 0 ? undefined : o.totalMemoryBytes,
  };
}

/**
 * host:port instances use to reach core: the embedded core's bound port (it may have been 0),
 * and a wildcard bind address replaced by loopback, which is what a local process can dial.
 */
export function instanceCoreAddr(o: CompiledOptions, embeddedPort: number | undefined): string {
  const host = o.coreHost === "0.0.0.0" || o.coreHost === "::" ? "127.0.0.1" : o.coreHost;
  return `${host}:${embeddedPort ?? o.corePort}`;
}

export async function databasePing(db: Database): Promise<boolean> {
  try {
    await db.oneFirst(sql.unsafe`SELECT 1`);
    return true;
  } catch {
    return false;
  }
}

/** host:port/db of a database URL, for logs (never the credentials). */
export function redactedDatabaseHost(url: string): string {
  try {
    const u = new URL(url);
    return `${u.hostname}:${u.port || 5432}${u.pathname}`;
  } catch {
    return "(unparsable url)";
  }
}

/** How often a replica re-reads the token secrets, so a rotation reaches its minting side. */
const SECRET_REFRESH_MS = 60_000;

/** Re-reads the token secrets periodically until stop (see Tokens.rotate). */
export function startSecretRefresh(startup: Startup, tokens: Tokens, logger: Logger): void {
  const loop = new MaintenanceLoop(() => tokens.refresh(), logger.child({ component: "token-secrets" }), SECRET_REFRESH_MS);
  loop.start();
  startup.onStop("stop the token secret refresh", () => loop.stop());
}
