export const RUNNER_KINDS = ["oci", "native", "wasm"] as const;
export type RunnerKind = (typeof RUNNER_KINDS)[number];

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
}

export interface NewImage {
  tenantId: string;
  name: string;
  description: string;
  runnerType: RunnerKind;
  metadata: Record<string, unknown> | undefined;
}

export interface ImagePage {
  images: Image[];
  nextPageToken: string;
  totalCount: bigint;
}
