export { ImageService, type ImageUpload, type ImageListRequest, type OpenUpload } from "./service.js";
export { ResumableUploads } from "./resumable-uploads.js";
export { ImageStore } from "./storage.js";
export { RUNNER_KINDS, type Image, type ImageFormat, type ImagePage, type ImageRef, type NewImage, type RunnerKind } from "./types.js";
