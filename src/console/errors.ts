import { Code, ConnectError } from "@connectrpc/connect";

/** An API error in words: its code as the API documents it (INVALID_ARGUMENT) and its message. */
export function describeError(e: unknown): string {
  if (e instanceof DOMException && e.name === "AbortError") return "cancelled";
  const err = ConnectError.from(e);
  const code = Code[err.code].replace(/([a-z])([A-Z])/g, "$1_$2").toUpperCase();
  const hint = err.code === Code.Unauthenticated ? " — check the API key" : err.code === Code.PermissionDenied ? " — this key may not do that" : "";
  return `${code}: ${err.rawMessage}${hint}`;
}

/** Whether the error is a stream ended on purpose (the page left, the component unmounted). */
export function isAbort(e: unknown): boolean {
  return ConnectError.from(e).code === Code.Canceled;
}
