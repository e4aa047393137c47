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
  format: ImageFormat;
  /** OCI archives: the manifest unpacked ("sha256:…"); null for binaries. */
  manifestDigest: string | null;
}

export interface NewImage {
  tenantId: string;
  name: string;
  description: string;
  runnerType: RunnerKind;
  metadata: Record<string, unknown> | undefined;
  format: ImageFormat;
}

export interface ImagePage {
  images: Image[];
  nextPageToken: string;
  totalCount: bigint;
}
