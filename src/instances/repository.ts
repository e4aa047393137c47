import { sql, type DatabasePool } from "slonik";
import { z } from "zod";

/** Instances that hold or are about to hold a process: pending or running. */
export async function countActiveInstances(db: DatabasePool): Promise<bigint> {
  return db.oneFirst(sql.type(z.object({ count: z.bigint() }))`
    SELECT count(*) AS count FROM instances WHERE status IN ('pending', 'running')`);
}
