import path from "node:path";
import { runner } from "node-pg-migrate";
import type { Logger } from "pino";
import { PACKAGE_ROOT } from "../package.js";

const MIGRATIONS_DIR = path.join(PACKAGE_ROOT, "migrations");

/**
 * Applies pending SQL migrations from migrations/. node-pg-migrate holds a PostgreSQL
 * advisory lock for the run ("wait" mode), so replicas starting together migrate once.
 */
export async function migrate(databaseUrl: string, logger: Logger): Promise<string[]> {
  const log = logger.child({ component: "migrate" });
  const applied = await runner({
    databaseUrl,
    dir: MIGRATIONS_DIR,
    migrationsTable: "runtara_migrations",
    direction: "up",
    singleTransaction: true,
    advisoryLockMode: "wait",
    checkOrder: true,
    logger: {
      debug: () => {},
      info: () => {},
      warn: (msg: string) => log.warn(msg),
      error: (msg: string) => log.error(msg),
    },
  });
  const names = applied.map((m) => m.name);
  if (names.length > 0) log.info({ migrations: names }, "applied migrations");
  return names;
}
