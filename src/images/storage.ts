import { createHash, randomUUID, type Hash } from "node:crypto";
import { link, mkdir, open, readdir, readFile, rename, rm, stat, type FileHandle } from "node:fs/promises";
import path from "node:path";
import type { ImageProcess } from "../runner/index.js";
import { PROCESS_FILE } from "./oci-archive.js";
import type { ImageFormat, RunnerKind } from "./types.js";

/** Another replica's staged upload untouched this long is abandoned (uploads idle for 1 h at most). */
const STALE_STAGING_MS = 2 * 3600_000;

/**
 * Image files under `${dataDir}/images/<image_id>/`: `binary` (mode 0755) and, for OCI
 * images, `bundle/rootfs/binary` (a hard link: the container's read-only root holds only
 * the static executable); for OCI archives the unpacked `bundle/rootfs` and `process.json`
 * instead. Uploads are staged under `images/.staging/<replica id>/` and
 * renamed into place, so a half-written image is never visible at its final path; each
 * replica clears only its own staging (DATA_DIR may be shared). Files and directories are
 * fsynced before the caller commits the image's row, so a power loss cannot leave a row
 * whose binary is empty or missing.
 */
export class ImageStore {
  readonly root: string;
  private readonly staging: string;

  constructor(dataDir: string, replicaId: string) {
    this.root = path.join(dataDir, "images");
    this.staging = path.join(this.root, ".staging", replicaId);
  }

  /**
   * Removes uploads this replica left staged when it crashed, and those of other replicas
   * untouched for STALE_STAGING_MS (a replica whose id changed never returns for them; a live
   * upload writes more often than that). Call once at startup, before serving.
   */
  async clearStaging(): Promise<void> {
    await rm(this.staging, { recursive: true, force: true });
    await mkdir(this.staging, { recursive: true, mode: 0o700 }); // uploads in progress are nobody else's
    const all = path.dirname(this.staging);
    for (const replica of await readdir(all)) {
      const dir = path.join(all, replica);
      if (dir === this.staging) continue;
      const uploads = await readdir(dir).catch(() => [] as string[]);
      for (const upload of uploads) {
        const times = await Promise.all([path.join(dir, upload), path.join(dir, upload, "binary")].map((p) => stat(p).then((s) => s.mtimeMs, () => 0)));
        if (Date.now() - Math.max(...times) > STALE_STAGING_MS) await rm(path.join(dir, upload), { recursive: true, force: true });
      }
    }
  }

  imageDir(imageId: string): string {
    return path.join(this.root, imageId);
  }

  binaryPath(imageId: string): string {
    return path.join(this.imageDir(imageId), "binary");
  }

  bundlePath(imageId: string): string {
    return path.join(this.imageDir(imageId), "bundle");
  }

  /** The process an OCI archive image's config describes (see oci-archive.ts). */
  async imageProcess(imageId: string): Promise<ImageProcess> {
    return JSON.parse(await readFile(path.join(this.imageDir(imageId), PROCESS_FILE), "utf8")) as ImageProcess;
  }

  async stage(): Promise<StagedUpload> {
    const dir = path.join(this.staging, randomUUID());
    await mkdir(dir, { recursive: true });
    try {
      const file = await open(path.join(dir, "binary"), "wx", 0o755);
      return new StagedUpload(dir, file, (imageId) => this.imageDir(imageId), this.root);
    } catch (e) {
      await rm(dir, { recursive: true, force: true });
      throw e;
    }
  }

  async remove(imageId: string): Promise<void> {
    await rm(this.imageDir(imageId), { recursive: true, force: true });
  }
}

/** Bytes handed to the file system but not yet written, per upload (bounds memory). */
const MAX_BYTES_IN_FLIGHT = 8 * 1024 * 1024;
/**
 * Every this many bytes an fdatasync starts in the background, so the disk writes back while
 * the rest arrives instead of all at the final fsync (1 GiB took 1.9 s to fsync at the end).
 */
const FLUSH_EVERY_BYTES = 32 * 1024 * 1024;

/**
 * An upload being written: bytes are hashed and counted as they arrive. Writes are positional
 * and pipelined (up to MAX_BYTES_IN_FLIGHT outstanding), so receiving the next chunk overlaps
 * with writing the previous ones instead of the network waiting for the disk after every
 * chunk; memory stays bounded because write() waits once that much is outstanding.
 */
export class StagedUpload {
  private readonly hash: Hash = createHash("sha256");
  private written = 0n;
  private position = 0;
  private closed = false;
  private inFlightBytes = 0;
  private readonly inFlight = new Set<Promise<void>>();
  private failure: unknown;
  private flushedUpTo = 0;
  private flushing: Promise<void> | undefined;

  constructor(
    private readonly dir: string,
    private readonly file: FileHandle,
    private readonly finalDir: (imageId: string) => string,
    private readonly root: string,
  ) {}

  get size(): bigint {
    return this.written;
  }

  /** The staging directory (holding `binary`) while the upload is not committed. */
  get path(): string {
    return this.dir;
  }

  /**
   * Queues `chunk` to be written; resolves once it is queued (waiting while too much is in
   * flight). The caller must not modify `chunk` afterwards. A failed write surfaces here or
   * in finish().
   */
  async write(chunk: Uint8Array): Promise<void> {
    this.throwIfFailed();
    if (chunk.byteLength === 0) return;
    this.hash.update(chunk);
    this.written += BigInt(chunk.byteLength);
    const position = this.position;
    this.position += chunk.byteLength;
    this.inFlightBytes += chunk.byteLength;
    const pending: Promise<void> = this.writeAt(chunk, position).then(
      () => {
        this.inFlightBytes -= chunk.byteLength;
        this.inFlight.delete(pending);
      },
      (e: unknown) => {
        this.failure ??= e;
        this.inFlightBytes -= chunk.byteLength;
        this.inFlight.delete(pending);
      },
    );
    this.inFlight.add(pending);
    this.flushInBackground();
    while (this.inFlightBytes > MAX_BYTES_IN_FLIGHT && this.failure === undefined) await Promise.race(this.inFlight);
    this.throwIfFailed();
  }

  private async writeAt(chunk: Uint8Array, position: number) {
    let offset = 0;
    while (offset < chunk.byteLength) {
      const { bytesWritten } = await this.file.write(chunk, offset, chunk.byteLength - offset, position + offset);
      offset += bytesWritten;
    }
  }

  /** Starts an fdatasync once FLUSH_EVERY_BYTES more were queued (one at a time; close() waits for it). */
  private flushInBackground() {
    if (this.flushing !== undefined || this.position - this.flushedUpTo < FLUSH_EVERY_BYTES) return;
    this.flushedUpTo = this.position;
    this.flushing = this.file.datasync().then(
      () => (this.flushing = undefined),
      (e: unknown) => {
        this.failure ??= e;
        this.flushing = undefined;
      },
    );
  }

  private async drain() {
    while (this.inFlight.size > 0 || this.flushing !== undefined) await Promise.all([...this.inFlight, this.flushing]);
    this.throwIfFailed();
  }

  private throwIfFailed() {
    if (this.failure !== undefined) throw this.failure;
  }

  /** Closes the file and returns the lower-case hex SHA-256 of everything written. */
  async finish(): Promise<string> {
    await this.close();
    return this.hash.digest("hex");
  }

  /**
   * Lays out the bundle (for OCI) and renames the staged directory to its final path, with
   * every new directory entry on disk before this resolves (the row is written after it).
   */
  async commit(imageId: string, runnerType: RunnerKind, format: ImageFormat): Promise<void> {
    await this.close();
    if (format === "oci_archive") {
      await syncDir(path.join(this.dir, "bundle"));
    } else if (runnerType === "oci") {
      const rootfs = path.join(this.dir, "bundle", "rootfs");
      await mkdir(rootfs, { recursive: true });
      await link(path.join(this.dir, "binary"), path.join(rootfs, "binary"));
      await syncDir(rootfs);
      await syncDir(path.join(this.dir, "bundle"));
    }
    await syncDir(this.dir);
    await rename(this.dir, this.finalDir(imageId));
    await syncDir(this.root);
    await syncDir(path.dirname(this.dir));
  }

  /** Discards the upload; safe to call more than once, and after commit (no-op then). */
  async abort(): Promise<void> {
    await this.close().catch(() => {});
    await rm(this.dir, { recursive: true, force: true });
  }

  /** Waits for every queued write, then closes the file (once). */
  private async close() {
    if (this.closed) return;
    this.closed = true;
    try {
      await this.drain();
      await this.file.sync();
    } finally {
      await this.file.close();
    }
  }
}

/** fsync of a directory: makes the entries created or renamed in it durable. */
async function syncDir(dir: string): Promise<void> {
  const handle = await open(dir, "r");
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}
