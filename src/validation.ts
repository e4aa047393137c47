import { InvalidArgument } from "./errors.js";

/** Characters allowed in client-supplied identifiers; they may become path components. */
const SAFE_ID = /^[A-Za-z0-9._:-]+$/;
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

export const ID_MAX_LENGTH = 128;

export function isValidId(value: string, maxLength = ID_MAX_LENGTH): boolean {
  return value !== "" && value.length <= maxLength && SAFE_ID.test(value) && value !== "." && value !== "..";
}

/** A tenant id, image name, instance id or checkpoint id: non-empty, bounded, safe charset. */
export function requireId(field: string, value: string, maxLength = ID_MAX_LENGTH): string {
  if (value === "") throw new InvalidArgument(field, "is required");
  if (value.length > maxLength) throw new InvalidArgument(field, `must be at most ${maxLength} characters`);
  if (!SAFE_ID.test(value) || value === "." || value === "..") {
    throw new InvalidArgument(field, "may contain only letters, digits and . _ : - (and is not . or ..)");
  }
  return value;
}

/** A server-generated id (UUID, lower case). */
export function requireUuid(field: string, value: string): string {
  if (value === "") throw new InvalidArgument(field, "is required");
  if (!UUID.test(value)) throw new InvalidArgument(field, "must be a lower-case UUID");
  return value;
}

/** Free text with a length bound. PostgreSQL text cannot hold NUL, so none is accepted. */
export function boundedText(field: string, value: string, maxLength: number): string {
  if (value.length > maxLength) throw new InvalidArgument(field, `must be at most ${maxLength} characters`);
  if (value.includes("\0")) throw new InvalidArgument(field, "must not contain NUL characters");
  return value;
}

const decoder = new TextDecoder("utf-8", { fatal: true });

/** Bytes of UTF-8 JSON; returns the parsed value. Empty bytes are `undefined`. */
export function parseJsonBytes(field: string, bytes: Uint8Array): unknown {
  if (bytes.byteLength === 0) return undefined;
  let text: string;
  try {
    text = decoder.decode(bytes);
  } catch {
    throw new InvalidArgument(field, "must be UTF-8 JSON");
  }
  try {
    return JSON.parse(text);
  } catch {
    throw new InvalidArgument(field, "must be valid JSON");
  }
}

/**
 * Bytes of a UTF-8 JSON object (or empty), to be stored as jsonb: jsonb refuses a NUL
 * character (\u0000) in any string or key, so one is the client's error here.
 */
export function requireJsonObjectBytes(field: string, bytes: Uint8Array): Record<string, unknown> | undefined {
  const value = parseJsonBytes(field, bytes);
  if (value === undefined) return undefined;
  if (value === null || typeof value !== "object" || Array.isArray(value)) {
    throw new InvalidArgument(field, "must be a JSON object");
  }
  if (containsNul(value)) throw new InvalidArgument(field, "must not contain NUL characters (\\u0000)");
  return value as Record<string, unknown>;
}

function containsNul(value: unknown): boolean {
  if (typeof value === "string") return value.includes("\0");
  if (Array.isArray(value)) return value.some(containsNul);
  if (value !== null && typeof value === "object") return Object.entries(value).some(([k, v]) => k.includes("\0") || containsNul(v));
  return false;
}

/** Page limit: 0 means the default; negative or over the max is refused. */
export function pageLimit(field: string, value: number, fallback = 100, max = 1000): number {
  if (value < 0) throw new InvalidArgument(field, "must not be negative");
  if (value > max) throw new InvalidArgument(field, `must be at most ${max}`);
  return value === 0 ? fallback : value;
}

/** Deepest offset a list accepts: OFFSET reads and drops every skipped row; page tokens do not. */
export const MAX_OFFSET = 10_000;

export function pageOffset(field: string, value: number): number {
  if (value < 0) throw new InvalidArgument(field, "must not be negative");
  if (value > MAX_OFFSET) throw new InvalidArgument(field, `must be at most ${MAX_OFFSET} (page with page_token, or narrow the query)`);
  return value;
}

const SHA256_HEX = /^[0-9a-f]{64}$/;

export function optionalSha256(field: string, value: string): string | undefined {
  if (value === "") return undefined;
  if (!SHA256_HEX.test(value)) throw new InvalidArgument(field, "must be 64 lower-case hex characters");
  return value;
}

export function boundedBytes(field: string, value: Uint8Array, maxBytes: number): Uint8Array {
  if (value.byteLength > maxBytes) throw new InvalidArgument(field, `must be at most ${maxBytes} bytes`);
  return value;
}
