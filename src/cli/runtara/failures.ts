/**
 * One line for every failure, saying what went wrong and what to do, and an exit code scripts
 * can trust: 1 for a failed operation, 2 for a wrong invocation.
 */
import { Code, ConnectError } from "@connectrpc/connect";

/** The command line itself is wrong (exit 2). */
export class UsageError extends Error {}

/** The operation ran and failed; `message` is already the line to print (exit 1). */
export class CommandFailed extends Error {}

/** A failure already turned into its line and exit code. */
export class Reported extends Error {
  constructor(
    readonly line: string,
    readonly exitCode: number,
  ) {
    super(line);
  }
}

export const EXIT_FAILED = 1;
export const EXIT_USAGE = 2;

export function describeFailure(e: unknown, server: string): { line: string; exitCode: number } {
  if (e instanceof Reported) return { line: e.line, exitCode: e.exitCode };
  // File names and build errors in these messages are the user's text: shown safely too.
  if (e instanceof UsageError) return { line: oneLine(e.message), exitCode: EXIT_USAGE };
  if (e instanceof CommandFailed) return { line: oneLine(e.message), exitCode: EXIT_FAILED };
  if (e instanceof ConnectError) return { line: oneLine(rpcFailure(e, server)), exitCode: EXIT_FAILED };
  const code = (e as NodeJS.ErrnoException)?.code;
  return { line: oneLine(`${(e as Error)?.message ?? String(e)}${code && !String((e as Error)?.message).includes(code) ? ` (${code})` : ""}`), exitCode: EXIT_FAILED };
}

/** Control characters (a workflow's or server's text may hold escape codes) shown, not sent to the terminal; one line. */
export function oneLine(text: string): string {
  return text.replace(/[\x00-\x1f\x7f-\x9f]/g, (c) => (c === "\n" ? " | " : `\\x${c.charCodeAt(0).toString(16).padStart(2, "0")}`));
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
    case Code.Internal:
      if (/certificate|self.signed|SSL|TLS/i.test(message)) return `TLS: ${message}; pass the server's CA with --ca-file (or --insecure for a test server)`;
      return `INTERNAL: ${message}`;
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
