import { BackendTerminatedError, ConnectionError } from "slonik";

const NETWORK_ERRORS = new Set(["ECONNREFUSED", "ECONNRESET", "ETIMEDOUT", "EHOSTUNREACH", "ENOTFOUND", "EPIPE", "EAI_AGAIN"]);

/** True when the database could not be reached (connection refused, dropped, shutting down). */
export function isDatabaseUnavailable(err: unknown): boolean {
  for (let e: unknown = err, depth = 0; e instanceof Error && depth < 5; e = e.cause, depth++) {
    if (e instanceof ConnectionError || e instanceof BackendTerminatedError) return true;
    const code = (e as { code?: unknown }).code;
    if (typeof code === "string" && (NETWORK_ERRORS.has(code) || code.startsWith("08") || /^57P0[1-3]$/.test(code))) {
      return true;
    }
    if (/timeout exceeded when trying to connect|Connection terminated/i.test(e.message)) return true;
  }
  return false;
}
