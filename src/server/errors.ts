import { Code, ConnectError } from "@connectrpc/connect";
import {
  BackendTerminatedError,
  ConnectionError,
  ForeignKeyIntegrityConstraintViolationError,
  UniqueIntegrityConstraintViolationError,
} from "slonik";
import { DomainError } from "../errors.js";

const codes: Record<DomainError["kind"], Code> = {
  invalid_argument: Code.InvalidArgument,
  not_found: Code.NotFound,
  already_exists: Code.AlreadyExists,
  failed_precondition: Code.FailedPrecondition,
  resource_exhausted: Code.ResourceExhausted,
  unavailable: Code.Unavailable,
  unauthenticated: Code.Unauthenticated,
  permission_denied: Code.PermissionDenied,
};

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

/**
 * The single place where errors become status codes. Domain errors keep their message;
 * database constraint errors that escaped a repository are mapped by kind; anything else is
 * INTERNAL with a generic message (the original stays in `cause` for the log only).
 */
export function toConnectError(err: unknown): ConnectError {
  if (err instanceof ConnectError) return err;
  if (err instanceof DomainError) return new ConnectError(err.message, codes[err.kind], undefined, undefined, err);
  if (err instanceof UniqueIntegrityConstraintViolationError) {
    return new ConnectError(`already exists (${err.constraint})`, Code.AlreadyExists, undefined, undefined, err);
  }
  if (err instanceof ForeignKeyIntegrityConstraintViolationError) {
    return new ConnectError("referenced resource not found", Code.FailedPrecondition, undefined, undefined, err);
  }
  if (isDatabaseUnavailable(err)) {
    return new ConnectError("database unavailable, retry later", Code.Unavailable, undefined, undefined, err);
  }
  return new ConnectError("internal error", Code.Internal, undefined, undefined, err);
}
