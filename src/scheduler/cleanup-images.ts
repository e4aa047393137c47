import { lstat, readdir } from "node:fs/promises";
import path from "node:path";
import type { DatabasePool } from "slonik";
import type { Logger } from "pino";
import { ImageStore } from "../images/index.js";
import { deleteExpiredImages, existingImageIds } from "./cleanup-queries.js";
import { tryAcquireGate } from "./gate.js";
import { MaintenanceLoop } from "./maintenance-loop.js";

export interface ImageCleanupOptions {
  /** Off unless RUNTARA_IMAGE_CLEANUP_ENABLED: start() and runOnce() do nothing. @default false */
  enabled: boolean;
  /** How often the cleanup runs; also the cadence of the cluster-wide gate. @default 6 h */
  intervalMs: number;
  /** An image unused this long (since last_used_at, or created_at if never used) is deleted. @default 7 days */
  maxAgeMs: number;
  /** Images deleted per statement. @default 50 */
  batchSize: number;
  /**
   * An image directory without a row is removed only once it is this old (by ctime, which
   * rename() refreshes). Registration renames the staged directory into place *before*
   * inserting the row, so a younger directory may be an upload about to be committed.
   * @default 10 minutes
   */
  orphanGraceMs?: number;
}

export interface ImageCleanupResult {
  /** False when disabled, when another replica ran the pass within the interval, or the gate could not be read. */
  ran: boolean;
  /** Directories under DATA_DIR/images with no image row, removed. */
  orphanDirsRemoved: number;
  /** Image rows deleted for disuse. */
  imagesDeleted: number;
  /** Directories of those images removed. */
  imageDirsRemoved: number;
  /** DELETE statements issued. */
  batches: number;
  errors: number;
}

export const DEFAULT_ORPHAN_GRACE_MS = 10 * 60_000;
/** Image directory names are server-generated lower-case UUIDs; anything else is not ours. */
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
const CHUNK = 500;
/**
 * One gate for the cluster. Image files must be on storage every replica sees (any replica
 * may launch any image), so one scan per interval covers them.
 */
const GATE = "cleanup-images";

/**
 * Image cleanup (opt-in). Each pass (1) removes orphan directories under DATA_DIR/images —
 * UUID-named real directories (not symlinks, not `.staging`) older than the grace that have
 * no image row — then (2) deletes, in batches, images unused for the retention that no
 * PENDING/RUNNING/SUSPENDED instance references: the row first (instances keep their
 * history: image_id becomes NULL), then the directory. A directory whose removal fails
 * becomes an orphan and goes in a later pass.
 *
 * `logger` is used as given: pass a child with `component`, as for the other workers.
 */
export class ImageCleanup {
  private readonly store: ImageStore;
  private readonly loop: MaintenanceLoop;
  private readonly orphanGraceMs: number;

  constructor(
    private readonly db: DatabasePool,
    dataDir: string,
    private readonly logger: Logger,
    private readonly options: ImageCleanupOptions,
  ) {
    // Only image paths are used here; staging belongs to the replicas that upload.
    this.store = new ImageStore(path.resolve(dataDir), "-");
    this.orphanGraceMs = options.orphanGraceMs ?? DEFAULT_ORPHAN_GRACE_MS;
    this.loop = new MaintenanceLoop((signal) => this.pass(signal), this.logger, options.intervalMs);
  }

  start(): void {
    if (!this.options.enabled) {
      this.logger.debug("image cleanup disabled (RUNTARA_IMAGE_CLEANUP_ENABLED)");
      return;
    }
    if (this.loop.running) return;
    this.loop.start();
    const { intervalMs, maxAgeMs, batchSize } = this.options;
    this.logger.info({ intervalMs, maxAgeMs, batchSize }, "image cleanup started");
  }

  stop(): Promise<void> {
    return this.loop.stop();
  }

  /** One pass now (after any pass in flight), subject to `enabled` and the gate. Never throws. */
  runOnce(): Promise<ImageCleanupResult> {
    return this.loop.exclusive(() => this.pass(this.loop.signal));
  }

  private async pass(signal: AbortSignal): Promise<ImageCleanupResult> {
    const result: ImageCleanupResult = { ran: false, orphanDirsRemoved: 0, imagesDeleted: 0, imageDirsRemoved: 0, batches: 0, errors: 0 };
    if (!this.options.enabled) return result;
    try {
      if (!(await tryAcquireGate(this.db, GATE, this.options.intervalMs))) return result;
      result.ran = true;
      const startedAt = Date.now();
      try {
        await this.removeOrphans(result, signal);
      } catch (e) {
        result.errors++;
        this.logger.error({ err: e }, "orphan image directory scan failed");
      }
      await this.deleteUnused(result, signal);
      const level = result.orphanDirsRemoved + result.imagesDeleted > 0 || result.errors > 0 ? "info" : "debug";
      this.logger[level]({ ...result, ms: Date.now() - startedAt }, "image cleanup pass done");
    } catch (e) {
      result.errors++;
      this.logger.error({ err: e }, "image cleanup pass failed");
    }
    return result;
  }

  private async removeOrphans(result: ImageCleanupResult, signal: AbortSignal) {
    let entries;
    try {
      entries = await readdir(this.store.root, { withFileTypes: true });
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === "ENOENT") return;
      throw e;
    }
    const cutoff = Date.now() - this.orphanGraceMs;
    const candidates: string[] = [];
    for (const entry of entries) {
      // Skips .staging (uploads in progress), files, symlinks and anything not UUID-named.
      if (!entry.isDirectory() || !UUID.test(entry.name)) continue;
      const st = await lstat(this.store.imageDir(entry.name)).catch(() => undefined);
      // ctime, not mtime: rename() keeps a directory's mtime but refreshes its ctime.
      if (st?.isDirectory() && Math.max(st.ctimeMs, st.mtimeMs) < cutoff) candidates.push(entry.name);
    }
    for (let i = 0; i < candidates.length && !signal.aborted; i += CHUNK) {
      const chunk = candidates.slice(i, i + CHUNK);
      const known = await existingImageIds(this.db, chunk);
      for (const imageId of chunk) {
        if (known.has(imageId)) continue;
        try {
          await this.store.remove(imageId);
          result.orphanDirsRemoved++;
          this.logger.info({ imageId }, "removed an image directory that has no image row");
        } catch (e) {
          result.errors++;
          this.logger.warn({ err: e, imageId }, "could not remove an orphan image directory");
        }
      }
    }
  }

  private async deleteUnused(result: ImageCleanupResult, signal: AbortSignal) {
    const { maxAgeMs, batchSize } = this.options;
    while (!signal.aborted) {
      const deleted = await deleteExpiredImages(this.db, maxAgeMs, batchSize);
      result.batches++;
      result.imagesDeleted += deleted.length;
      for (const imageId of deleted) {
        this.logger.info({ imageId }, "deleted an unused image");
        try {
          // rm does not follow a symlink planted at the image's path; it unlinks it.
          if (await exists(this.store.imageDir(imageId))) {
            await this.store.remove(imageId);
            result.imageDirsRemoved++;
          }
        } catch (e) {
          result.errors++;
          this.logger.warn({ err: e, imageId }, "could not remove the directory of a deleted image; the orphan scan retries");
        }
      }
      if (deleted.length < batchSize) break;
    }
  }
}

async function exists(p: string): Promise<boolean> {
  try {
    await lstat(p);
    return true;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return false;
    throw e;
  }
}
