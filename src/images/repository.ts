import { sql, UniqueIntegrityConstraintViolationError, type DatabasePool, type DatabaseTransactionConnection } from "slonik";
import { z } from "zod";
import { cappedCount } from "../db/count.js";
import { AlreadyExists } from "../errors.js";
import { ACTIVE, statusList } from "../lifecycle/index.js";
import { IMAGE_FORMATS, RUNNER_KINDS, type Image, type NewImage } from "./types.js";

type Db = DatabasePool | DatabaseTransactionConnection;

const imageRow = z
  .object({
    image_id: z.string(),
    tenant_id: z.string(),
    name: z.string(),
    description: z.string(),
    runner_type: z.enum(RUNNER_KINDS),
    metadata: z.record(z.unknown()).nullable(),
    size_bytes: z.bigint(),
    sha256: z.string(),
    created_at: z.number(),
    format: z.enum(IMAGE_FORMATS),
    manifest_digest: z.string().nullable(),
  })
  .transform(
    (r): Image => ({
      imageId: r.image_id,
      tenantId: r.tenant_id,
      name: r.name,
      description: r.description,
      runnerType: r.runner_type,
      metadata: r.metadata,
      sizeBytes: r.size_bytes,
      sha256: r.sha256,
      createdAtMs: r.created_at,
      format: r.format,
      manifestDigest: r.manifest_digest,
    }),
  );

const columns = sql.fragment`image_id, tenant_id, name, description, runner_type, metadata, size_bytes, sha256, created_at, format, manifest_digest`;

export async function insertImage(
  db: Db,
  imageId: string,
  image: NewImage,
  sizeBytes: bigint,
  sha256: string,
  manifestDigest: string | null,
): Promise<Image> {
  try {
    return await db.one(sql.type(imageRow)`
      INSERT INTO images (image_id, tenant_id, name, description, runner_type, metadata, size_bytes, sha256, format, manifest_digest)
      VALUES (${imageId}, ${image.tenantId}, ${image.name}, ${image.description}, ${image.runnerType},
              ${image.metadata === undefined ? null : sql.jsonb(image.metadata as never)}, ${sizeBytes}, ${sha256},
              ${image.format}, ${manifestDigest})
      RETURNING ${columns}`);
  } catch (e) {
    if (e instanceof UniqueIntegrityConstraintViolationError && e.constraint === "images_tenant_name_key") {
      throw new AlreadyExists(`image "${image.name}" already exists for tenant "${image.tenantId}"`);
    }
    throw e;
  }
}

/** How many images, and how many bytes of them, the tenant holds. */
export async function tenantUsage(db: Db, tenantId: string): Promise<{ count: bigint; bytes: bigint }> {
  return db.one(sql.type(z.object({ count: z.bigint(), bytes: z.bigint() }))`
    SELECT count(*) AS count, COALESCE(sum(size_bytes), 0)::bigint AS bytes FROM images WHERE tenant_id = ${tenantId}`);
}

export async function findImage(db: Db, tenantId: string, imageId: string): Promise<Image | null> {
  return db.maybeOne(sql.type(imageRow)`
    SELECT ${columns} FROM images WHERE image_id = ${imageId} AND tenant_id = ${tenantId}`);
}

/** Escapes LIKE wildcards so a name prefix matches literally. */
function likePrefix(prefix: string): string {
  return prefix.replace(/[\\%_]/g, (c) => `\\${c}`) + "%";
}

export interface ImageListQuery {
  tenantId: string;
  namePrefix: string;
  limit: number;
  offset: number;
  /** Keyset: only names after this one. */
  afterName: string | undefined;
}

/** One page ordered by name (unique per tenant), plus one extra row to detect a next page. */
export async function listImages(db: Db, q: ImageListQuery): Promise<Image[]> {
  const filters = [sql.fragment`tenant_id = ${q.tenantId}`];
  if (q.namePrefix !== "") filters.push(sql.fragment`name LIKE ${likePrefix(q.namePrefix)}`);
  if (q.afterName !== undefined) filters.push(sql.fragment`name > ${q.afterName}`);
  const rows = await db.any(sql.type(imageRow)`
    SELECT ${columns} FROM images
    WHERE ${sql.join(filters, sql.fragment` AND `)}
    ORDER BY name
    LIMIT ${q.limit + 1} OFFSET ${q.offset}`);
  return [...rows];
}

export async function countImages(db: Db, tenantId: string, namePrefix: string): Promise<bigint> {
  const filters = [sql.fragment`tenant_id = ${tenantId}`];
  if (namePrefix !== "") filters.push(sql.fragment`name LIKE ${likePrefix(namePrefix)}`);
  return db.oneFirst(sql.type(z.object({ count: z.bigint() }))`
    ${cappedCount(sql.fragment`images WHERE ${sql.join(filters, sql.fragment` AND `)}`)}`);
}

export type DeleteOutcome = "deleted" | "not_found" | "in_use";

/**
 * Deletes the tenant's image unless a non-terminal instance uses it. The image row is locked
 * first and the check runs as a statement of its own, so it sees every instance committed
 * before the lock was granted: StartInstance's insert takes the same row lock (it stamps
 * last_used_at in the same statement), so either it committed first and the image is in
 * use, or it waits and then fails its foreign key ("image not found"). A single DELETE …
 * NOT EXISTS would re-check only the image row after waiting, and delete an image that a
 * just-started instance uses.
 */
export async function deleteImage(db: DatabasePool, tenantId: string, imageId: string): Promise<DeleteOutcome> {
  return db.transaction(async (tx) => {
    const found = await tx.exists(sql.unsafe`SELECT 1 FROM images WHERE image_id = ${imageId} AND tenant_id = ${tenantId} FOR UPDATE`);
    if (!found) return "not_found";
    const inUse = await tx.exists(sql.unsafe`
      SELECT 1 FROM instances WHERE image_id = ${imageId} AND status IN ${statusList(ACTIVE)}`);
    if (inUse) return "in_use";
    await tx.query(sql.unsafe`DELETE FROM images WHERE image_id = ${imageId}`);
    return "deleted";
  });
}
