export { ImageService, type ImageUpload, type ImageListRequest } from "./service.js";
export { ImageStore } from "./storage.js";
export type { Image, ImagePage, NewImage, RunnerKind } from "./types.js";
