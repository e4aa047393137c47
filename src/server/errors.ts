import { Code, ConnectError } from "@connectrpc/connect";
import { ForeignKeyIntegrityConstraintViolationError, UniqueIntegrityConstraintViolationError } from "slonik";
import { isDatabaseUnavailable } from "../db/errors.js";
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
  if (isDiskFull(err)) {
    return new ConnectError("the server's disk is full (DATA_DIR), retry later", Code.ResourceExhausted, undefined, undefined, err);
  }
  return new ConnectError("internal error", Code.Internal, undefined, undefined, err);
}

/** A write failed for want of space or quota: the operator's to fix, not a bug, not the client's fault. */
export function isDiskFull(err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code;
  return code === "ENOSPC" || code === "EDQUOT";
}
