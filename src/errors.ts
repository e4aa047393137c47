/**
 * Domain errors. Services throw these; the server maps them to status codes in one place
 * (src/server/errors.ts). Messages are short, actionable, and name the field or id at fault.
 */
export abstract class DomainError extends Error {
  abstract readonly kind:
    | "invalid_argument"
    | "not_found"
    | "already_exists"
    | "failed_precondition"
    | "resource_exhausted"
    | "unavailable"
    | "unauthenticated"
    | "permission_denied";
}

export class InvalidArgument extends DomainError {
  readonly kind = "invalid_argument";
  constructor(
    readonly field: string,
    problem: string,
  ) {
    super(`${field}: ${problem}`);
  }
}

export class NotFound extends DomainError {
  readonly kind = "not_found";
}

export class AlreadyExists extends DomainError {
  readonly kind = "already_exists";
}

export class FailedPrecondition extends DomainError {
  readonly kind = "failed_precondition";
}

export class ResourceExhausted extends DomainError {
  readonly kind = "resource_exhausted";
}

export class Unavailable extends DomainError {
  readonly kind = "unavailable";
}

export class Unauthenticated extends DomainError {
  readonly kind = "unauthenticated";
}

export class PermissionDenied extends DomainError {
  readonly kind = "permission_denied";
}
