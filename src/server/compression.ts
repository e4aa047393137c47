import { promisify } from "node:util";
import zlib from "node:zlib";
import { compressionBrotli, compressionGzip } from "@connectrpc/connect-node";
import type { Compression } from "@connectrpc/connect/protocol";

/**
 * Answers up to this size are compressed on the event loop: at the levels below that takes
 * 0.05-0.15 ms, less than the two thread-pool hops of zlib's async calls, which cost a page of
 * 100 instances about 0.6 ms of latency at connect-node's default level (bench/list). Larger
 * ones go to the thread pool, so one big answer does not hold up the others.
 */
const COMPRESS_ON_LOOP_BYTES = 64 * 1024;

type ZlibOptions = zlib.ZlibOptions & zlib.BrotliOptions;

/** `base` with its own compress: `sync` for small answers, `async` (the thread pool) for large ones. */
function compressing(base: Compression, sync: (b: Uint8Array, o: ZlibOptions) => Buffer, async: (b: Uint8Array, o: ZlibOptions) => Promise<Buffer>, options: ZlibOptions): Compression {
  return {
    ...base,
    compress: async (bytes) => {
      const b = bytes.byteLength <= COMPRESS_ON_LOOP_BYTES ? sync(bytes, options) : await async(bytes, options);
      return new Uint8Array(b.buffer as ArrayBuffer, b.byteOffset, b.byteLength);
    },
  };
}

/**
 * Gzip at level 1: connect-node's default (6) took about 0.3 ms of CPU for a page of 100
 * instances, asked by every connect-node client (they accept gzip by default); level 1 takes
 * a sixth of that and its output is within 10 % of it.
 */
const gzipLevel1 = compressing(compressionGzip, zlib.gzipSync, promisify(zlib.gzip), { level: 1 });

/**
 * Brotli at quality 5: its default (11) took 14-24 ms of CPU for a 24 KB page of instances, so
 * any client listing `br` first in Accept-Encoding made the server burn that on every call;
 * quality 5 takes about 0.3 ms and compresses within 15 % of it.
 */
const brotliQuality5 = compressing(compressionBrotli, zlib.brotliCompressSync, promisify(zlib.brotliCompress), {
  params: { [zlib.constants.BROTLI_PARAM_QUALITY]: 5 },
});

/**
 * Decompressions running at once in this process. Each may hold up to the read limit before
 * it can refuse (a 329-byte brotli body expands to 64 MiB; 30 such requests at once took the
 * server from 158 MB to 2.2 GB), so the others wait their turn: memory stays bounded, and a
 * client that compresses every request is slowed, not refused.
 */
const MAX_DECOMPRESSIONS = 2;

/** `compression` whose decompressions take turns with every other one made through `slots`. */
export function takingTurns(compression: Compression, slots: Slots): Compression {
  return { ...compression, decompress: (bytes, readMaxBytes) => slots.run(() => compression.decompress(bytes, readMaxBytes)) };
}

/** At most `max` tasks at once; the rest wait in order. */
export class Slots {
  private running = 0;
  private readonly waiting: (() => void)[] = [];

  constructor(private readonly max: number) {}

  async run<T>(task: () => Promise<T>): Promise<T> {
    if (this.running >= this.max) await new Promise<void>((resolve) => this.waiting.push(resolve));
    else this.running++;
    try {
      return await task();
    } finally {
      // Hand the slot straight to the next waiter, or give it back.
      const next = this.waiting.shift();
      if (next) next();
      else this.running--;
    }
  }
}

const decompressions = new Slots(MAX_DECOMPRESSIONS);

/** What the servers accept from clients and compress answers with, in order of preference. */
export const serverCompressions: Compression[] = [gzipLevel1, brotliQuality5].map((c) => takingTurns(c, decompressions));
