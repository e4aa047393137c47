/**
 * Resumable image uploads made of unary calls (browsers cannot stream a request): begin,
 * chunks at offsets, commit with the sha256, or abort. Each upload is an ImageService
 * OpenUpload (the same staging, limits and checks as RegisterImageStream) held in this
 * process; one idle too long is discarded, as are all at shutdown.
 */
import { randomUUID } from "node:crypto";
import type { Logger } from "pino";
import { FailedPrecondition, InvalidArgument, NotFound, ResourceExhausted } from "../errors.js";
import type { ImageService, ImageUpload, OpenUpload } from "./service.js";
import type { Image } from "./types.js";

export interface ResumableUploadOptions {
  /** An upload with no call for this long is discarded. */
  idleTimeoutMs: number;
  /** Uploads one tenant may have open at once. */
  maxOpenPerTenant: number;
  /** The largest chunk one call may carry. */
  maxChunkBytes: number;
}

interface Entry {
  tenantId: string;
  binarySize: bigint;
  open: OpenUpload;
  lastUsedMs: number;
  /** Calls on one upload run one after another (a retried chunk must see the first one's outcome). */
  tail: Promise<unknown>;
}

export class ResumableUploads {
  private readonly uploads = new Map<string, Entry>();
  /** Uploads being begun (between the cap's check and their entry), by tenant. */
  private readonly beginning = new Map<string, bigint[]>();
  private sweeper: NodeJS.Timeout | undefined;

  constructor(
    private readonly images: ImageService,
    private readonly logger: Logger,
    readonly options: ResumableUploadOptions,
  ) {}

  start(): void {
    this.sweeper = setInterval(() => void this.discardIdle(), Math.min(60_000, this.options.idleTimeoutMs)).unref();
  }

  async stop(): Promise<void> {
    clearInterval(this.sweeper);
    const all = [...this.uploads.values()];
    this.uploads.clear();
    await Promise.all(all.map((e) => e.tail.then(() => e.open.discard(), () => e.open.discard())));
  }

  async begin(upload: ImageUpload): Promise<string> {
    const tenantId = upload.tenantId;
    // Open and being-begun uploads count against the cap and, by their declared sizes, the quota.
    const sizes = [...this.uploads.values()].filter((e) => e.tenantId === tenantId).map((e) => e.binarySize);
    const beginning = this.beginning.get(tenantId) ?? [];
    sizes.push(...beginning);
    if (sizes.length >= this.options.maxOpenPerTenant) {
      throw new ResourceExhausted(`tenant ${tenantId} has ${sizes.length} uploads open, the most allowed; commit or abort one`);
    }
    // Reserved before the first await, so concurrent begins see each other.
    beginning.push(upload.binarySize);
    this.beginning.set(tenantId, beginning);
    try {
      const open = await this.images.openUpload(upload, { count: BigInt(sizes.length), bytes: sizes.reduce((a, b) => a + b, 0n) });
      const uploadId = randomUUID();
      this.uploads.set(uploadId, { tenantId, binarySize: upload.binarySize, open, lastUsedMs: Date.now(), tail: Promise.resolve() });
      return uploadId;
    } finally {
      beginning.splice(beginning.indexOf(upload.binarySize), 1);
      if (beginning.length === 0) this.beginning.delete(tenantId);
    }
  }

  /** Appends `data` at `offset`, which must be the bytes received so far; returns the new count. */
  append(tenantId: string, uploadId: string, offset: bigint, data: Uint8Array): Promise<bigint> {
    if (data.byteLength > this.options.maxChunkBytes) {
      throw new InvalidArgument("data", `${data.byteLength} bytes exceeds the chunk limit of ${this.options.maxChunkBytes}`);
    }
    return this.serialized(tenantId, uploadId, async (entry) => {
      const received = entry.open.received();
      if (offset !== received) throw new FailedPrecondition(`offset: the upload has ${received} bytes; send from offset ${received}`);
      try {
        await entry.open.write(data);
      } catch (e) {
        // A chunk past the declared size ends the upload, as it ends a stream.
        await this.remove(uploadId, entry);
        throw e;
      }
      return entry.open.received();
    });
  }

  state(tenantId: string, uploadId: string): Promise<{ receivedBytes: bigint; binarySize: bigint }> {
    return this.serialized(tenantId, uploadId, async (entry) => ({ receivedBytes: entry.open.received(), binarySize: entry.binarySize }));
  }

  /** Verifies and registers the image; the upload is gone afterwards, registered or not. */
  commit(tenantId: string, uploadId: string, sha256: string): Promise<Image> {
    return this.serialized(tenantId, uploadId, async (entry) => {
      this.uploads.delete(uploadId);
      return entry.open.complete(sha256);
    });
  }

  abort(tenantId: string, uploadId: string): Promise<void> {
    return this.serialized(tenantId, uploadId, (entry) => this.remove(uploadId, entry));
  }

  /** Runs `fn` on the tenant's upload after the calls before it; another tenant's upload is NOT_FOUND too. */
  private serialized<T>(tenantId: string, uploadId: string, fn: (entry: Entry) => Promise<T>): Promise<T> {
    const entry = this.uploads.get(uploadId);
    if (entry === undefined || entry.tenantId !== tenantId) return Promise.reject(new NotFound(`upload ${uploadId} not found (committed, aborted, idle too long, or begun on another environment)`));
    entry.lastUsedMs = Date.now();
    const run = entry.tail.then(() => {
      // An earlier call in the queue may have ended the upload.
      if (this.uploads.get(uploadId) !== entry) throw new NotFound(`upload ${uploadId} not found (committed or aborted meanwhile)`);
      return fn(entry);
    });
    entry.tail = run.catch(() => undefined);
    return run;
  }

  private async remove(uploadId: string, entry: Entry): Promise<void> {
    this.uploads.delete(uploadId);
    await entry.open.discard();
  }

  private async discardIdle(): Promise<void> {
    const cutoff = Date.now() - this.options.idleTimeoutMs;
    for (const [uploadId, entry] of this.uploads) {
      if (entry.lastUsedMs >= cutoff) continue;
      this.logger.info({ uploadId, tenantId: entry.tenantId, receivedBytes: entry.open.received() }, "idle upload discarded");
      await entry.tail;
      if (this.uploads.get(uploadId) === entry && entry.lastUsedMs < cutoff) await this.remove(uploadId, entry);
    }
  }
}
