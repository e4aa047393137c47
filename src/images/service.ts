import { randomUUID } from "node:crypto";
import type { DatabasePool } from "slonik";
import type { Logger } from "pino";
import { FailedPrecondition, InvalidArgument, NotFound, ResourceExhausted } from "../errors.js";
import type { Metrics } from "../metrics/index.js";
import type { RunnerCheck } from "../runner-policy.js";
import { isValidId } from "../validation.js";
import { unpackArchiveUpload, type LayoutUnpacker } from "./oci-archive.js";
import * as repo from "./repository.js";
import type { ImageStore, StagedUpload } from "./storage.js";
import type { Image, ImagePage, NewImage } from "./types.js";

export interface ImageUpload extends NewImage {
  /** Exact size the client announced. */
  binarySize: bigint;
  /** Expected lower-case hex SHA-256, if the client supplied one. */
  sha256: string | undefined;
}

export interface ImageListRequest {
  tenantId: string;
  namePrefix: string;
  /** Every version instead of the latest of each name. */
  allVersions: boolean;
  limit: number;
  offset: number;
  pageToken: string;
}

export interface ImageLimits {
  /** Largest single image, bytes. */
  maxImageBytes: bigint;
  /** Images one tenant may hold. */
  tenantMaxImages: number;
  /** Bytes of images one tenant may hold. */
  tenantMaxImageBytes: bigint;
  /** Refuses runner kinds this environment may not run (the native runner policy). */
  checkRunner: RunnerCheck;
  /** Unpacks OCI archives (the OCI runner's); without it they are refused. */
  unpackOci?: LayoutUnpacker;
}

/** Images (or uploads) and their bytes. */
export interface TenantUsage {
  count: bigint;
  bytes: bigint;
}

const NO_USAGE: TenantUsage = { count: 0n, bytes: 0n };

/** An upload in progress (see ImageService.openUpload). */
export interface OpenUpload {
  /** Bytes stored so far. */
  received(): bigint;
  /** Appends a chunk; more than the declared size is INVALID_ARGUMENT. */
  write(chunk: Uint8Array): Promise<void>;
  /** Verifies size and checksum, registers the image; on failure everything is removed. */
  complete(sha256: string | undefined): Promise<Image>;
  discard(): Promise<void>;
}

export class ImageService {
  constructor(
    private readonly db: DatabasePool,
    private readonly store: ImageStore,
    private readonly logger: Logger,
    private readonly limits: ImageLimits,
    private readonly uploadBytes: Metrics["uploadBytes"],
  ) {}

  /** Registers an image whose bytes are already in memory (the unary RPC). */
  register(image: NewImage, binary: Uint8Array, sha256: string | undefined): Promise<Image> {
    return this.registerStream({ ...image, binarySize: BigInt(binary.byteLength), sha256 }, [binary]);
  }

  /**
   * Streams chunks to a staged file (constant memory), verifies size and checksum, renames
   * the files into place and inserts the row. On any failure, including the client going
   * away mid-stream, the staged or renamed files are removed and no row exists.
   */
  async registerStream(upload: ImageUpload, chunks: AsyncIterable<Uint8Array> | Iterable<Uint8Array>): Promise<Image> {
    const open = await this.openUpload(upload);
    try {
      for await (const chunk of chunks) await open.write(chunk);
    } catch (e) {
      await open.discard();
      throw e;
    }
    return open.complete(upload.sha256);
  }

  /**
   * An upload that may take many requests (RegisterImageStream's messages, or the resumable
   * upload's chunks): checked against the limits and quotas before a byte is stored, then
   * written to a staged file; complete() verifies and registers it, discard() removes it.
   * Both paths share this, so an image is stored and checked the same way however it came.
   */
  async openUpload(upload: ImageUpload, pending: TenantUsage = NO_USAGE): Promise<OpenUpload> {
    const { maxImageBytes } = this.limits;
    this.limits.checkRunner(upload.runnerType);
    if (upload.format === "oci_archive" && upload.runnerType !== "oci") {
      throw new InvalidArgument("format", "IMAGE_FORMAT_OCI_ARCHIVE needs runner_type RUNNER_TYPE_OCI");
    }
    if (upload.binarySize > maxImageBytes) {
      throw new ResourceExhausted(`binary_size: ${upload.binarySize} bytes exceeds the limit of ${maxImageBytes} bytes`);
    }
    // Checked before a byte is stored, counting the tenant's other uploads in progress, and
    // again under a per-tenant lock when it is registered (concurrent uploads may pass this one together).
    const usage = await repo.tenantUsage(this.db, upload.tenantId);
    this.checkQuota(upload.tenantId, { count: usage.count + pending.count, bytes: usage.bytes + pending.bytes }, upload.binarySize);
    const staged = await this.store.stage();
    return {
      received: () => staged.size,
      write: async (chunk) => {
        if (staged.size + BigInt(chunk.byteLength) > upload.binarySize) {
          throw new InvalidArgument("binary_size", `received more than the declared ${upload.binarySize} bytes`);
        }
        await staged.write(chunk);
      },
      complete: (sha256) => this.complete(upload, staged, sha256),
      discard: () => this.discard(staged, undefined),
    };
  }

  private async complete(upload: ImageUpload, staged: StagedUpload, sha256: string | undefined): Promise<Image> {
    let committedId: string | undefined;
    try {
      if (staged.size !== upload.binarySize) {
        throw new InvalidArgument("binary_size", `declared ${upload.binarySize} bytes but received ${staged.size}`);
      }
      if (staged.size === 0n) throw new InvalidArgument("binary", "is required (empty)");
      const digest = await staged.finish();
      if (sha256 !== undefined && sha256 !== digest) {
        throw new InvalidArgument("sha256", `checksum mismatch: expected ${sha256}, got ${digest}`);
      }
      const manifestDigest = upload.format === "oci_archive" ? await this.unpackArchive(staged) : null;
      const imageId = randomUUID();
      await staged.commit(imageId, upload.runnerType, upload.format);
      committedId = imageId;
      const image = await repo.insertImage(this.db, imageId, upload, staged.size, digest, manifestDigest, (usage) => this.checkQuota(upload.tenantId, usage, staged.size));
      this.logger.info(
        { imageId, tenantId: image.tenantId, name: image.name, version: image.version, format: image.format, sizeBytes: image.sizeBytes },
        "image registered",
      );
      this.uploadBytes.inc(Number(image.sizeBytes));
      return image;
    } catch (e) {
      await this.discard(staged, committedId);
      throw e;
    }
  }

  /** The tenant's quotas (image count and bytes) with `usage` held and `size` more to come. */
  private checkQuota(tenantId: string, usage: TenantUsage, size: bigint): void {
    const { tenantMaxImages, tenantMaxImageBytes } = this.limits;
    if (usage.count >= BigInt(tenantMaxImages)) {
      throw new ResourceExhausted(`tenant ${tenantId} holds ${usage.count} images (and uploads in progress), the most allowed (RUNTARA_TENANT_MAX_IMAGES)`);
    }
    if (usage.bytes + size > tenantMaxImageBytes) {
      throw new ResourceExhausted(
        `binary_size: tenant ${tenantId} would hold ${usage.bytes + size} bytes of images (and uploads in progress), over its ${tenantMaxImageBytes} (RUNTARA_TENANT_MAX_IMAGE_BYTES)`,
      );
    }
  }

  private async unpackArchive(staged: StagedUpload): Promise<string> {
    const unpack = this.limits.unpackOci;
    if (unpack === undefined) throw new FailedPrecondition("format: OCI archives cannot be unpacked here (no OCI runner)");
    return unpackArchiveUpload(staged.path, unpack, this.limits.maxImageBytes);
  }

  private async discard(staged: StagedUpload, committedId: string | undefined) {
    try {
      await staged.abort();
      if (committedId !== undefined) await this.store.remove(committedId);
    } catch (cleanupError) {
      this.logger.error({ err: cleanupError, imageId: committedId }, "could not remove files of a failed upload");
    }
  }

  async get(tenantId: string, imageId: string): Promise<Image> {
    const image = await repo.findImage(this.db, tenantId, imageId);
    if (image === null) throw new NotFound(`image ${imageId} not found`);
    return image;
  }

  /** Latest versions (one per name) or every version, ordered by name then version. */
  async list(req: ImageListRequest): Promise<ImagePage> {
    const after = req.pageToken === "" ? undefined : decodePageToken(req.pageToken, req.allVersions);
    if (after !== undefined && req.offset !== 0) {
      throw new InvalidArgument("offset", "cannot be combined with page_token");
    }
    const filter = { tenantId: req.tenantId, namePrefix: req.namePrefix, allVersions: req.allVersions };
    const [rows, totalCount] = await Promise.all([
      repo.listImages(this.db, { ...filter, limit: req.limit, offset: req.offset, after }),
      repo.countImages(this.db, filter),
    ]);
    const images = rows.slice(0, req.limit);
    const last = images[images.length - 1];
    const nextPageToken = rows.length > req.limit && last ? encodePageToken(last, req.allVersions) : "";
    return { images, nextPageToken, totalCount };
  }

  async delete(tenantId: string, imageId: string): Promise<void> {
    const outcome = await repo.deleteImage(this.db, tenantId, imageId);
    if (outcome === "not_found") throw new NotFound(`image ${imageId} not found`);
    if (outcome === "in_use") {
      throw new FailedPrecondition(`image ${imageId} is used by a pending, running or suspended instance`);
    }
    await this.store.remove(imageId);
    this.logger.info({ imageId, tenantId }, "image version deleted");
  }
}

/**
 * Opaque keyset token: the last name of the previous page, and with all_versions its version
 * too. A token carries a version exactly when it was issued for all_versions, so one cannot
 * continue a listing of the other kind (it would skip or repeat rows).
 */
function encodePageToken(last: Image, allVersions: boolean): string {
  return Buffer.from(JSON.stringify(allVersions ? { n: last.name, v: last.version } : { n: last.name })).toString("base64url");
}

function decodePageToken(token: string, allVersions: boolean): { name: string; version: number } {
  let parsed: unknown;
  try {
    parsed = JSON.parse(Buffer.from(token, "base64url").toString("utf8"));
  } catch {
    // fall through: any undecodable token is the client's error
  }
  const { n, v } = parsed && typeof parsed === "object" ? (parsed as { n?: unknown; v?: unknown }) : {};
  // Only a name this API could have returned (a NUL, say, would reach PostgreSQL).
  const version = v === undefined ? undefined : typeof v === "number" && Number.isInteger(v) && v >= 1 && v <= 2 ** 31 - 1 ? v : null;
  if (typeof n !== "string" || !isValidId(n, 256) || version === null) {
    throw new InvalidArgument("page_token", "is not a token returned by this API");
  }
  if (allVersions !== (version !== undefined)) {
    throw new InvalidArgument("page_token", `was issued for a listing with all_versions ${!allVersions}`);
  }
  return { name: n, version: version ?? 0 };
}
