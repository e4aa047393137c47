import type { DatabasePool } from "slonik";
import { sql } from "slonik";
import { z } from "zod";

/**
 * Cluster-wide cadence gate (pg-boss's trySetCronTime): one atomic upsert that succeeds only
 * when the gate's last run is at least `intervalMs` old, and then stamps it. Of N replicas
 * ticking on the same cadence, exactly one wins per interval; concurrent callers serialise
 * on the row (or on the speculative insert of a new name) and the losers see the fresh
 * stamp, so no replica can win twice in one interval. Times are the database's, so replica
 * clocks do not matter.
 */
export async function tryAcquireGate(db: DatabasePool, name: string, intervalMs: number): Promise<boolean> {
  const won = await db.maybeOneFirst(sql.type(z.object({ name: z.string() }))`
    INSERT INTO maintenance_gates (name, last_run_at) VALUES (${name}, now())
    ON CONFLICT (name) DO UPDATE SET last_run_at = EXCLUDED.last_run_at
    WHERE maintenance_gates.last_run_at <= now() - ${intervalMs} * interval '1 millisecond'
    RETURNING name`);
  return won !== null;
}
