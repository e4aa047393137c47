export const RUNNER_KINDS = ["oci", "native", "wasm"] as const;
export type RunnerKind = (typeof RUNNER_KINDS)[number];

export const IMAGE_FORMATS = ["binary", "oci_archive"] as const;
/** What the uploaded bytes are: a static executable, or an OCI image archive (unpacked at registration). */
export type ImageFormat = (typeof IMAGE_FORMATS)[number];

export interface Image {
  imageId: string;
  tenantId: string;
  name: string;
  description: string;
  runnerType: RunnerKind;
  /** Parsed JSON object, or null when none was given. */
  metadata: Record<string, unknown> | null;
  sizeBytes: bigint;
  sha256: string;
  createdAtMs: number;
  /** 1, 2, ... per (tenant, name), in registration order; never reused. */
  version: number;
  /** Optional label, unique among the versions of the name; null when none. */
  tag: string | null;
  format: ImageFormat;
  /** OCI archives: the manifest unpacked ("sha256:…"); null for binaries. */
  manifestDigest: string | null;
  /** When an instance of it was last started; null when never. */
  lastUsedAtMs: number | null;
}

export interface NewImage {
  tenantId: string;
  name: string;
  description: string;
  runnerType: RunnerKind;
  metadata: Record<string, unknown> | undefined;
  tag: string | undefined;
  format: ImageFormat;
}

/** Which image an instance starts: one version by id, or by name (the latest, or a version). */
export type ImageRef = { imageId: string } | { name: string; version: number | undefined };

export interface ImagePage {
  images: Image[];
  nextPageToken: string;
  totalCount: bigint;
}
