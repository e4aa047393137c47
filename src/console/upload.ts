import { ImageFormat, type Image, RunnerType } from "../../gen/runtara/environment/v1/environment_pb.js";
import type { EnvironmentClient } from "../client/browser.js";

export interface UploadChoice {
  name: string;
  runnerType: RunnerType;
  format: ImageFormat;
}

/** Largest chunk sent, whatever the server allows: progress moves at least this often. */
const CHUNK_BYTES = 4 * 1024 * 1024;
/** Failed chunk calls in a row before the upload gives up (and is aborted). */
const MAX_RETRIES = 3;

/**
 * A file through the resumable upload (browsers cannot stream a request): begin, chunks at
 * exact offsets, commit with the SHA-256. A chunk call that fails asks the server how much
 * arrived (GetImageUpload) and goes on from there. `onProgress` gets bytes the server holds.
 */
export async function uploadImage(client: EnvironmentClient, file: File, choice: UploadChoice, onProgress: (received: number) => void): Promise<Image> {
  // The whole file is hashed before the first byte goes: the server checks it at commit.
  const sha256 = hex(await crypto.subtle.digest("SHA-256", await file.arrayBuffer()));
  const { uploadId, maxChunkBytes } = await client.beginImageUpload({
    header: { name: choice.name, runnerType: choice.runnerType, format: choice.format, binarySize: BigInt(file.size) },
  });
  try {
    const chunkBytes = Math.min(Number(maxChunkBytes), CHUNK_BYTES);
    let offset = 0;
    let failures = 0;
    while (offset < file.size) {
      const data = new Uint8Array(await file.slice(offset, offset + chunkBytes).arrayBuffer());
      try {
        offset = Number((await client.uploadImageChunk({ uploadId, offset: BigInt(offset), data })).receivedBytes);
        failures = 0;
      } catch (e) {
        if (++failures > MAX_RETRIES) throw e;
        offset = Number((await client.getImageUpload({ uploadId })).receivedBytes);
      }
      onProgress(offset);
    }
    const { image } = await client.commitImageUpload({ uploadId, sha256 });
    return image!;
  } catch (e) {
    await client.abortImageUpload({ uploadId }).catch(() => {}); // gone already, or the server is: it discards idle uploads itself
    throw e;
  }
}

function hex(digest: ArrayBuffer): string {
  return [...new Uint8Array(digest)].map((b) => b.toString(16).padStart(2, "0")).join("");
}
