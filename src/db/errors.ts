import { BackendTerminatedError, ConnectionError } from "slonik";

const NETWORK_ERRORS = new Set(["ECONNREFUSED", "ECONNRESET", "ETIMEDOUT", "EHOSTUNREACH", "ENOTFOUND", "EPIPE", "EAI_AGAIN"]);
/**
 * SQLSTATEs that say "try again", not "your request is wrong": serialization failure,
 * deadlock, statement timeout or cancel, too many connections, out of memory or disk.
 */
const TRANSIENT_SQLSTATES = new Set(["40001", "40P01", "57014", "53300", "53200", "53100", "53400"]);

/**
 * True when the database could not be reached (connection refused, dropped, shutting down)
 * or refused for a passing reason (TRANSIENT_SQLSTATES): the caller should retry.
 */
export function isDatabaseUnavailable(err: unknown): boolean {
  for (let e: unknown = err, depth = 0; e instanceof Error && depth < 5; e = e.cause, depth++) {
    if (e instanceof ConnectionError || e instanceof BackendTerminatedError) return true;
    const code = (e as { code?: unknown }).code;
    if (typeof code === "string" && (NETWORK_ERRORS.has(code) || TRANSIENT_SQLSTATES.has(code) || code.startsWith("08") || /^57P0[1-3]$/.test(code))) {
      return true;
    }
    if (/timeout exceeded when trying to connect|Connection terminated/i.test(e.message)) return true;
  }
  return false;
}
