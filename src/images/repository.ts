import { sql, UniqueIntegrityConstraintViolationError, type DatabasePool, type DatabaseTransactionConnection } from "slonik";
import { z } from "zod";
import { cappedCount } from "../db/count.js";
import { likePrefix } from "../db/like.js";
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
    version: z.number().int(),
    tag: z.string().nullable(),
    last_used_at: z.number().nullable(),
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
      version: r.version,
      tag: r.tag,
      lastUsedAtMs: r.last_used_at,
    }),
  );

const columns = sql.fragment`image_id, tenant_id, name, description, runner_type, metadata, size_bytes, sha256, created_at, format, manifest_digest, version, tag, last_used_at`;

/**
 * Inserts the next version of (tenant, name): 1 for a new name. The number comes from
 * image_names' upsert in the same statement, so concurrent registrations of one name queue
 * on that row's lock and get consecutive numbers (no retry, no max()+1 race), and a failed
 * insert (a taken tag) gives its number back with the rolled-back statement.
 */
export async function insertImage(
  db: Db,
  imageId: string,
  image: NewImage,
  sizeBytes: bigint,
  sha256: string,
  manifestDigest: string | null,
  checkUsage: (usage: { count: bigint; bytes: bigint }) => void,
): Promise<Image> {
  try {
    // One registration per tenant at a time from the usage check to the insert: concurrent
    // ones cannot all pass a quota that has room for one.
    return await db.transaction(async (tx) => {
      await tx.query(sql.unsafe`SELECT pg_advisory_xact_lock(hashtextextended(${`runtara-images:${image.tenantId}`}, 0))`);
      checkUsage(await tenantUsage(tx, image.tenantId));
      return tx.one(sql.type(imageRow)`
      WITH next AS (
        INSERT INTO image_names (tenant_id, name, last_version) VALUES (${image.tenantId}, ${image.name}, 1)
        ON CONFLICT (tenant_id, name) DO UPDATE SET last_version = image_names.last_version + 1
        RETURNING last_version)
      INSERT INTO images (image_id, tenant_id, name, description, runner_type, metadata, size_bytes, sha256, version, tag, format, manifest_digest)
      SELECT ${imageId}, ${image.tenantId}, ${image.name}, ${image.description}, ${image.runnerType},
             ${image.metadata === undefined ? null : sql.jsonb(image.metadata as never)}, ${sizeBytes}, ${sha256},
             next.last_version, ${image.tag ?? null}, ${image.format}, ${manifestDigest}
      FROM next
      RETURNING ${columns}`);
    });
  } catch (e) {
    if (e instanceof UniqueIntegrityConstraintViolationError && e.constraint === "images_tenant_name_tag_key") {
      throw new AlreadyExists(`tag: another version of image "${image.name}" is tagged "${image.tag}"`);
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

/** The tenant's image `name` at `version`, or at its latest version when none is given. */
export async function findImageByName(db: Db, tenantId: string, name: string, version: number | undefined): Promise<Image | null> {
  const filters = [sql.fragment`tenant_id = ${tenantId}`, sql.fragment`name = ${name}`];
  if (version !== undefined) filters.push(sql.fragment`version = ${version}`);
  return db.maybeOne(sql.type(imageRow)`
    SELECT ${columns} FROM images
    WHERE ${sql.join(filters, sql.fragment` AND `)}
    ORDER BY version DESC
    LIMIT 1`);
}

export interface ImageListFilter {
  tenantId: string;
  namePrefix: string;
  /** Every version, or only the latest version of each name. */
  allVersions: boolean;
}

export interface ImageListQuery extends ImageListFilter {
  limit: number;
  offset: number;
  /**
   * Keyset: only rows after this one, in (name, version) order. Listing latest versions
   * only, the version is ignored: the next page starts at the next name.
   */
  after: { name: string; version: number } | undefined;
}

/**
 * The rows a listing shows, as conditions on `images img`. Latest versions only: no higher
 * version of the same name exists (an anti-join on the (tenant_id, name, version) index, so
 * the listing stays one ordered, index-driven scan with keyset and offset working as before).
 */
function listFilters(f: ImageListFilter) {
  const filters = [sql.fragment`img.tenant_id = ${f.tenantId}`];
  if (f.namePrefix !== "") filters.push(sql.fragment`img.name LIKE ${likePrefix(f.namePrefix)}`);
  if (!f.allVersions) {
    filters.push(sql.fragment`NOT EXISTS (
      SELECT 1 FROM images newer
      WHERE newer.tenant_id = img.tenant_id AND newer.name = img.name AND newer.version > img.version)`);
  }
  return filters;
}

/** One page ordered by name, then version, plus one extra row to detect a next page. */
export async function listImages(db: Db, q: ImageListQuery): Promise<Image[]> {
  const filters = listFilters(q);
  if (q.after !== undefined) {
    filters.push(
      q.allVersions
        ? sql.fragment`(img.name, img.version) > (${q.after.name}, ${q.after.version})`
        : sql.fragment`img.name > ${q.after.name}`,
    );
  }
  const rows = await db.any(sql.type(imageRow)`
    SELECT ${columns} FROM images img
    WHERE ${sql.join(filters, sql.fragment` AND `)}
    ORDER BY img.name, img.version
    LIMIT ${q.limit + 1} OFFSET ${q.offset}`);
  return [...rows];
}

export async function countImages(db: Db, f: ImageListFilter): Promise<bigint> {
  return db.oneFirst(sql.type(z.object({ count: z.bigint() }))`
    ${cappedCount(sql.fragment`images img WHERE ${sql.join(listFilters(f), sql.fragment` AND `)}`)}`);
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
