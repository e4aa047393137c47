import type { ServiceImpl } from "@connectrpc/connect";
import type { EnvironmentService } from "../../gen/runtara/environment/v1/environment_pb.js";
import { InvalidArgument } from "../errors.js";
import type { ResumableUploads } from "../images/index.js";
import { optionalSha256, requireId, requireUuid } from "../validation.js";
import { newImage, toProtoImage, uploadLimits } from "./image-handlers.js";

type UploadHandlers = Pick<
  ServiceImpl<typeof EnvironmentService>,
  "beginImageUpload" | "uploadImageChunk" | "getImageUpload" | "commitImageUpload" | "abortImageUpload"
>;

/** The resumable upload's RPCs: validate, call ResumableUploads. */
export function uploadHandlers(uploads: ResumableUploads): UploadHandlers {
  const target = (req: { tenantId: string; uploadId: string }) => [requireId("tenant_id", req.tenantId), requireUuid("upload_id", req.uploadId)] as const;
  return {
    async beginImageUpload(req) {
      if (req.header === undefined) throw new InvalidArgument("header", "is required");
      const uploadId = await uploads.begin({ ...newImage(req.header), ...uploadLimits(req.header) });
      return { uploadId, maxChunkBytes: BigInt(uploads.options.maxChunkBytes) };
    },
    async uploadImageChunk(req) {
      const [tenantId, uploadId] = target(req);
      if (req.offset < 0n) throw new InvalidArgument("offset", "must not be negative");
      if (req.data.byteLength === 0) throw new InvalidArgument("data", "is required (empty)");
      return { receivedBytes: await uploads.append(tenantId, uploadId, req.offset, req.data) };
    },
    async getImageUpload(req) {
      return uploads.state(...target(req));
    },
    async commitImageUpload(req) {
      const [tenantId, uploadId] = target(req);
      const sha256 = optionalSha256("sha256", req.sha256);
      if (sha256 === undefined) throw new InvalidArgument("sha256", "is required");
      const image = await uploads.commit(tenantId, uploadId, sha256);
      return { imageId: image.imageId, image: toProtoImage(image) };
    },
    async abortImageUpload(req) {
      await uploads.abort(...target(req));
      return {};
    },
  };
}
