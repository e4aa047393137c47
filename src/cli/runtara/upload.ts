/**
 * Uploads an image file through RegisterImageStream: a hashing pass first (the server checks
 * the digest, so a file changed or corrupted on the way is refused), then 1 MiB chunks with a
 * progress bar (bytes, rate, ETA) on a terminal. An interrupted upload leaves nothing on the
 * server: it discards a stream that ends early.
 */
import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";
import { stat } from "node:fs/promises";
import type { MessageInitShape } from "@bufbuild/protobuf";
import { SingleBar } from "cli-progress";
import type { Image, ImageFormat, RegisterImageStreamRequestSchema, RunnerType } from "../../../gen/runtara/environment/v1/environment_pb.js";
import type { Context } from "./context.js";
import { bytes } from "./output.js";

const CHUNK_BYTES = 1024 * 1024;

/** What the caller says of the image; size, digest and tenant are filled in here. */
export interface UploadHeader {
  name: string;
  description?: string;
  tag?: string;
  runnerType: RunnerType;
  format: ImageFormat;
}

export async function uploadImage(ctx: Context, file: string, header: UploadHeader, showProgress: boolean): Promise<Image> {
  const size = (await stat(file)).size;
  const hash = createHash("sha256");
  for await (const chunk of createReadStream(file)) hash.update(chunk as Buffer);
  const sha256 = hash.digest("hex");
  const bar = showProgress ? progressBar(size) : undefined;
  async function* messages(): AsyncGenerator<MessageInitShape<typeof RegisterImageStreamRequestSchema>> {
    yield { payload: { case: "header", value: { ...header, tenantId: ctx.tenant, binarySize: BigInt(size), sha256 } } };
    let sent = 0;
    for await (const chunk of createReadStream(file, { highWaterMark: CHUNK_BYTES })) {
      sent += (chunk as Buffer).length;
      bar?.update(sent);
      yield { payload: { case: "chunk", value: chunk as Buffer } };
    }
  }
  try {
    const { image } = await ctx.client.registerImageStream(messages());
    return image!;
  } finally {
    bar?.stop();
  }
}

function progressBar(total: number): SingleBar {
  const startedAt = Date.now();
  const bar = new SingleBar({
    stream: process.stderr,
    // The cursor stays visible: an interrupted upload must not leave the terminal without one.
    hideCursor: false,
    format: (options, params) => {
      const width = options.barsize ?? 30;
      const filled = Math.round(params.progress * width);
      const seconds = (Date.now() - startedAt) / 1000;
      const rate = seconds > 0 ? params.value / seconds : 0;
      const eta = rate > 0 ? Math.ceil((params.total - params.value) / rate) : 0;
      return `uploading [${"#".repeat(filled)}${"-".repeat(width - filled)}] ${bytes(params.value)} / ${bytes(params.total)}  ${bytes(rate)}/s  ETA ${eta}s`;
    },
  });
  bar.start(total, 0);
  return bar;
}
