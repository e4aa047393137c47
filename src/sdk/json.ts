const encoder = new TextEncoder();
const decoder = new TextDecoder("utf-8", { fatal: true });

/**
 * JSON-encodes a value for a checkpoint, output or event payload. `undefined` becomes
 * `null` (JSON has no undefined), so a step returning nothing replays as `null`.
 */
export function encodeJson(value: unknown, what: string): Uint8Array {
  let text: string | undefined;
  try {
    text = JSON.stringify(value);
  } catch (err) {
    throw new TypeError(`${what} is not JSON-serialisable: ${(err as Error).message}`, { cause: err });
  }
  return encoder.encode(text ?? "null");
}

/** Like {@link encodeJson}, but `undefined` becomes empty bytes ("none" on the wire). */
export function encodeOptionalJson(value: unknown, what: string): Uint8Array {
  return value === undefined ? new Uint8Array(0) : encodeJson(value, what);
}

/** Parses UTF-8 JSON bytes; empty bytes are `undefined`. */
export function decodeJson(bytes: Uint8Array, what: string): unknown {
  if (bytes.byteLength === 0) return undefined;
  try {
    return JSON.parse(decoder.decode(bytes));
  } catch (err) {
    throw new TypeError(`${what} is not UTF-8 JSON: ${(err as Error).message}`, { cause: err });
  }
}

/**
 * A signal payload is opaque bytes from the sender: JSON when it parses, else the UTF-8 text
 * (else base64 for binary), and `null` when empty.
 */
export function decodeSignalPayload(bytes: Uint8Array): unknown {
  if (bytes.byteLength === 0) return null;
  let text: string;
  try {
    text = decoder.decode(bytes);
  } catch {
    return Buffer.from(bytes).toString("base64");
  }
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}
