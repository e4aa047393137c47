import type { MessageInitShape } from "@bufbuild/protobuf";
import type { ServiceImpl } from "@connectrpc/connect";
import {
  type EnvironmentService,
  type ImageSchema,
  type ImageUploadHeader,
} from "../../gen/runtara/environment/v1/environment_pb.js";
import { InvalidArgument, ResourceExhausted } from "../errors.js";
import type { Image, ImageService, NewImage } from "../images/index.js";
import { boundedBytes, boundedText, optionalSha256, pageLimit, pageOffset, requireId, requireJsonObjectBytes, requireUuid } from "../validation.js";
import { fromImageFormat, fromRunnerKind, jsonBytes, toImageFormat, toRunnerKind, toTimestamp } from "../protocol/convert.js";

/** An image version's optional label. */
const TAG = /^[A-Za-z0-9._-]{1,128}$/;

/** Largest binary accepted by the unary RegisterImage; larger goes through the stream. */
export const UNARY_IMAGE_MAX_BYTES = 16 * 1024 * 1024;

type ImageHandlers = Pick<
  ServiceImpl<typeof EnvironmentService>,
  "registerImage" | "registerImageStream" | "listImages" | "getImage" | "deleteImage"
>;

export function imageHandlers(images: ImageService): ImageHandlers {
  return {
    async registerImage(req) {
      if (req.binary.byteLength > UNARY_IMAGE_MAX_BYTES) {
        throw new ResourceExhausted(
          `binary: ${req.binary.byteLength} bytes exceeds the 16 MiB limit of RegisterImage; use RegisterImageStream`,
        );
      }
      if (req.binary.byteLength === 0) throw new InvalidArgument("binary", "is required");
      const image = await images.register(newImage(req), req.binary, optionalSha256("sha256", req.sha256));
      return { imageId: image.imageId, image: toProtoImage(image) };
    },

    async registerImageStream(requests) {
      const iterator = requests[Symbol.asyncIterator]();
      const first = await iterator.next();
      if (first.done || first.value.payload.case !== "header") {
        throw new InvalidArgument("header", "the first message must be the upload header");
      }
      const header = first.value.payload.value;
      const upload = { ...newImage(header), ...uploadLimits(header) };
      async function* chunks() {
        for (let next = await iterator.next(); !next.done; next = await iterator.next()) {
          const payload = next.value.payload;
          if (payload.case === "header") throw new InvalidArgument("header", "sent more than once");
          if (payload.case === "chunk") yield payload.value;
        }
      }
      const image = await images.registerStream(upload, chunks());
      return { imageId: image.imageId, image: toProtoImage(image) };
    },

    async listImages(req) {
      const page = await images.list({
        tenantId: requireId("tenant_id", req.tenantId),
        namePrefix: boundedText("name_prefix", req.namePrefix, 256),
        allVersions: req.allVersions,
        limit: pageLimit("limit", req.limit),
        offset: pageOffset("offset", req.offset),
        pageToken: boundedText("page_token", req.pageToken, 1024),
      });
      return { images: page.images.map(toProtoImage), nextPageToken: page.nextPageToken, totalCount: page.totalCount };
    },

    async getImage(req) {
      const image = await images.get(requireId("tenant_id", req.tenantId), requireUuid("image_id", req.imageId));
      return { image: toProtoImage(image) };
    },

    async deleteImage(req) {
      await images.delete(requireId("tenant_id", req.tenantId), requireUuid("image_id", req.imageId));
      return {};
    },
  };
}

export function newImage(req: { tenantId: string; name: string; description: string; runnerType: number; metadata: Uint8Array; tag: string; format: number }): NewImage {
  if (req.tag !== "" && !TAG.test(req.tag)) throw new InvalidArgument("tag", "must be 1 to 128 of letters, digits and . _ -");
  return {
    tenantId: requireId("tenant_id", req.tenantId),
    name: requireId("name", req.name, 256),
    description: boundedText("description", req.description, 4096),
    runnerType: toRunnerKind("runner_type", req.runnerType),
    metadata: requireJsonObjectBytes("metadata", boundedBytes("metadata", req.metadata, 1024 * 1024)),
    format: toImageFormat("format", req.format),
    tag: req.tag === "" ? undefined : req.tag,
  };
}

export function uploadLimits(header: ImageUploadHeader) {
  if (header.binarySize <= 0n) throw new InvalidArgument("binary_size", "must be greater than 0");
  return { binarySize: header.binarySize, sha256: optionalSha256("sha256", header.sha256) };
}

export function toProtoImage(image: Image): MessageInitShape<typeof ImageSchema> {
  return {
    imageId: image.imageId,
    tenantId: image.tenantId,
    name: image.name,
    description: image.description,
    runnerType: fromRunnerKind(image.runnerType),
    metadata: jsonBytes(image.metadata),
    sizeBytes: image.sizeBytes,
    sha256: image.sha256,
    createdAt: toTimestamp(image.createdAtMs),
    format: fromImageFormat(image.format),
    manifestDigest: image.manifestDigest ?? "",
    version: image.version,
    tag: image.tag ?? "",
    ...(image.lastUsedAtMs !== null ? { lastUsedAt: toTimestamp(image.lastUsedAtMs) } : {}),
  };
}
