/**
 * One line for every failure, saying what went wrong and what to do, and an exit code scripts
 * can trust: 1 for a failed operation, 2 for a wrong invocation.
 */
import { Code, ConnectError } from "@connectrpc/connect";

/** The command line itself is wrong (exit 2). */
export class UsageError extends Error {}

/** The operation ran and failed; `message` is already the line to print (exit 1). */
export class CommandFailed extends Error {}

export const EXIT_FAILED = 1;
export const EXIT_USAGE = 2;

export function describeFailure(e: unknown, server: string): { line: string; exitCode: number } {
  if (e instanceof UsageError) return { line: e.message, exitCode: EXIT_USAGE };
  if (e instanceof CommandFailed) return { line: e.message, exitCode: EXIT_FAILED };
  if (e instanceof ConnectError) return { line: rpcFailure(e, server), exitCode: EXIT_FAILED };
  return { line: (e as Error)?.message ?? String(e), exitCode: EXIT_FAILED };
}

function rpcFailure(e: ConnectError, server: string): string {
  const message = e.rawMessage;
  switch (e.code) {
    case Code.Unavailable:
      if (/ECONNREFUSED|ENOTFOUND|EHOSTUNREACH|ECONNRESET|socket hang up|fetch failed|connect/i.test(message)) {
        return `cannot reach the server at ${server} (${message}); is it running? Set --server or RUNTARA_SERVER`;
      }
      return `the server is unavailable: ${message}; retry in a moment`;
    case Code.Unauthenticated:
      return `the server refused the request: ${message}; set --api-key or RUNTARA_API_KEY`;
    case Code.PermissionDenied:
      return `not allowed: ${message}; check --tenant (RUNTARA_TENANT) and the API key`;
    case Code.DeadlineExceeded:
      return `no answer from ${server} in time; raise --timeout or check the server`;
    case Code.NotFound:
    case Code.InvalidArgument:
    case Code.AlreadyExists:
    case Code.FailedPrecondition:
    case Code.ResourceExhausted:
      return message;
    default:
      return `${Code[e.code] ?? e.code}: ${message}`;
  }
}
