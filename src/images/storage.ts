import { createHash, randomUUID, type Hash } from "node:crypto";
import { link, mkdir, open, rename, rm, type FileHandle } from "node:fs/promises";
import path from "node:path";
import type { RunnerKind } from "./types.js";

/**
 * Image files under `${dataDir}/images/<image_id>/`: `binary` (mode 0755) and, for OCI
 * images, `bundle/rootfs/binary` (a hard link: the container's read-only root holds only
 * the static executable). Uploads are staged under `images/.staging/` and renamed into
 * place, so a half-written image is never visible at its final path.
 */
export class ImageStore {
  readonly root: string;
  private readonly staging: string;

  constructor(dataDir: string) {
    this.root = path.join(dataDir, "images");
    this.staging = path.join(this.root, ".staging");
  }

  /** Removes uploads left staged by a crash. Call once at startup, before serving. */
  async clearStaging(): Promise<void> {
    await rm(this.staging, { recursive: true, force: true });
    await mkdir(this.staging, { recursive: true });
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

  async stage(): Promise<StagedUpload> {
    const dir = path.join(this.staging, randomUUID());
    await mkdir(dir, { recursive: true });
    try {
      const file = await open(path.join(dir, "binary"), "wx", 0o755);
      return new StagedUpload(dir, file, (imageId) => this.imageDir(imageId));
    } catch (e) {
      await rm(dir, { recursive: true, force: true });
      throw e;
    }
  }

  async remove(imageId: string): Promise<void> {
    await rm(this.imageDir(imageId), { recursive: true, force: true });
  }
}

/** An upload being written: bytes are hashed and counted as they are written. */
export class StagedUpload {
  private readonly hash: Hash = createHash("sha256");
  private written = 0n;
  private closed = false;

  constructor(
    private readonly dir: string,
    private readonly file: FileHandle,
    private readonly finalDir: (imageId: string) => string,
  ) {}

  get size(): bigint {
    return this.written;
  }

  async write(chunk: Uint8Array): Promise<void> {
    this.hash.update(chunk);
    this.written += BigInt(chunk.byteLength);
    let offset = 0;
    while (offset < chunk.byteLength) {
      const { bytesWritten } = await this.file.write(chunk, offset, chunk.byteLength - offset);
      offset += bytesWritten;
    }
  }

  /** Closes the file and returns the lower-case hex SHA-256 of everything written. */
  async finish(): Promise<string> {
    await this.close();
    return this.hash.digest("hex");
  }

  /** Lays out the bundle (for OCI) and renames the staged directory to its final path. */
  async commit(imageId: string, runnerType: RunnerKind): Promise<void> {
    await this.close();
    if (runnerType === "oci") {
      const rootfs = path.join(this.dir, "bundle", "rootfs");
      await mkdir(rootfs, { recursive: true });
      await link(path.join(this.dir, "binary"), path.join(rootfs, "binary"));
    }
    await rename(this.dir, this.finalDir(imageId));
  }

  /** Discards the upload; safe to call more than once, and after commit (no-op then). */
  async abort(): Promise<void> {
    await this.close().catch(() => {});
    await rm(this.dir, { recursive: true, force: true });
  }

  private async close() {
    if (this.closed) return;
    this.closed = true;
    await this.file.close();
  }
}
