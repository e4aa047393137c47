import { sql, type DatabasePool } from "slonik";
import { z } from "zod";
import { ACTIVE, TERMINAL, statusList } from "../lifecycle/index.js";

/** SQL of the cleanup workers (run directories, database retention, images). */

const ms = (v: number) => sql.fragment`${v} * interval '1 millisecond'`;

/**
 * Of the given instance ids, those whose run directory must stay even when it looks old:
 * the instance is live or resumable (pending, running, suspended), a process is still
 * registered for it (its supervisor reads stderr.log from the run directory after exit), or
 * it finished within the retention (a directory's mtime does not change while a long run
 * appends to its files, so a 3-day run that just ended has a "3-day-old" directory).
 * Ids without a row are not returned: their directories are removable.
 */
export async function runDirsToKeep(db: DatabasePool, instanceIds: readonly string[], maxAgeMs: number): Promise<Set<string>> {
  if (instanceIds.length === 0) return new Set();
  const rows = await db.anyFirst(sql.type(z.object({ instance_id: z.string() }))`
    SELECT i.instance_id FROM instances i
    WHERE i.instance_id = ANY(${sql.array(instanceIds, "text")})
      AND (i.status IN ${statusList(ACTIVE)}
        OR i.finished_at > now() - ${ms(maxAgeMs)}
        OR EXISTS (SELECT 1 FROM running_processes p WHERE p.instance_id = i.instance_id))`);
  return new Set(rows);
}

const deletedInstance = z.object({ instance_id: z.string(), tenant_id: z.string() });
export type DeletedInstance = z.infer<typeof deletedInstance>;

/**
 * Deletes up to `batchSize` terminal instances that finished before the retention, oldest
 * first; checkpoints, events, signals and running_processes rows go with them (ON DELETE
 * CASCADE). SKIP LOCKED lets two replicas (or a replica and a reader holding a row lock)
 * proceed without waiting on each other. Served by the partial index
 * instances_terminal_finished. The outer status guard is belt and braces: terminal is final.
 */
export async function deleteExpiredInstances(db: DatabasePool, maxAgeMs: number, batchSize: number): Promise<readonly DeletedInstance[]> {
  return db.any(sql.type(deletedInstance)`
    DELETE FROM instances
    WHERE instance_id IN (
        SELECT instance_id FROM instances
        WHERE status IN ${statusList(TERMINAL)} AND finished_at < now() - ${ms(maxAgeMs)}
        ORDER BY finished_at
        LIMIT ${batchSize}
        FOR UPDATE SKIP LOCKED)
      AND status IN ${statusList(TERMINAL)}
    RETURNING instance_id, tenant_id`);
}

/**
 * Deletes up to `batchSize` images unused for the retention (last use, or registration when
 * never used) that no live or resumable instance references; instances keep their history
 * (image_id is ON DELETE SET NULL, image_name was copied). Race with StartInstance: its
 * insert updates an expired image's last_used_at in the same statement (a use within the
 * last minute is left as it is: never expired), so either it holds the row lock
 * (this statement skips the image) or it commits first and the re-check of the locked row
 * sees the fresh last_used_at (the image is no longer expired); if this statement wins, the
 * start fails its foreign key check ("image not found") instead of referencing a deleted image.
 */
export async function deleteExpiredImages(db: DatabasePool, maxAgeMs: number, batchSize: number): Promise<readonly string[]> {
  return db.anyFirst(sql.type(z.object({ image_id: z.string() }))`
    DELETE FROM images
    WHERE image_id IN (
      SELECT img.image_id FROM images img
      WHERE COALESCE(img.last_used_at, img.created_at) < now() - ${ms(maxAgeMs)}
        AND NOT EXISTS (
          SELECT 1 FROM instances i
          WHERE i.image_id = img.image_id AND i.status IN ${statusList(ACTIVE)})
      ORDER BY COALESCE(img.last_used_at, img.created_at)
      LIMIT ${batchSize}
      FOR UPDATE SKIP LOCKED)
    RETURNING image_id::text`);
}

/** Of the given ids (lower-case UUIDs), those that have an image row. */
export async function existingImageIds(db: DatabasePool, imageIds: readonly string[]): Promise<Set<string>> {
  if (imageIds.length === 0) return new Set();
  const rows = await db.anyFirst(sql.type(z.object({ image_id: z.string() }))`
    SELECT image_id::text FROM images WHERE image_id = ANY(${sql.array(imageIds, "uuid")})`);
  return new Set(rows);
}
