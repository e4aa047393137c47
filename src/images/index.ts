export { ImageService, type ImageUpload, type ImageListRequest } from "./service.js";
export { ImageStore } from "./storage.js";
export { RUNNER_KINDS, type Image, type ImageFormat, type ImagePage, type ImageRef, type NewImage, type RunnerKind } from "./types.js";
