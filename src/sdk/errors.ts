/**
 * Error types a workflow author sees. Control flow never depends on message text: the SDK
 * tells a cancellation from a failure by class, so a remote API error that happens to say
 * "cancelled" still fails the workflow (the original matched strings and exited 0).
 */

/**
 * An application error raised by workflow code. Its message is what Fail records as the
 * instance's error. `nonRetryable` stops `step` retries at once (see StepOptions.retry).
 */
export class WorkflowError extends Error {
  override name = "WorkflowError";
  readonly nonRetryable: boolean;
  readonly details: unknown;

  constructor(message: string, options: { nonRetryable?: boolean; details?: unknown; cause?: unknown } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.nonRetryable = options.nonRetryable ?? false;
    this.details = options.details;
  }

  /** Shorthand for `new WorkflowError(message, { ...options, nonRetryable: true })`. */
  static nonRetryable(message: string, options: { details?: unknown; cause?: unknown } = {}): WorkflowError {
    return new WorkflowError(message, { ...options, nonRetryable: true });
  }
}

/** `waitForSignal` gave up after its timeout. */
export class SignalTimeoutError extends WorkflowError {
  override name = "SignalTimeoutError";
  constructor(
    readonly signalName: string,
    readonly timeoutMs: number,
  ) {
    super(`no signal "${signalName}" arrived within ${timeoutMs} ms`);
  }
}

/**
 * The control plane is stopping this run (CANCEL or PAUSE was acknowledged). SDK calls
 * throw it and `ctx.signal` aborts with it; workflow code should let it propagate.
 */
export abstract class InterruptedError extends Error {
  abstract readonly kind: "cancelled" | "paused";
}

/** The instance was cancelled (CANCEL acknowledged; status CANCELLED). */
export class CancelledError extends InterruptedError {
  override name = "CancelledError";
  readonly kind = "cancelled" as const;
  constructor(message = "the workflow instance was cancelled") {
    super(message);
  }
}

/** The instance was paused (PAUSE acknowledged; status SUSPENDED, reason paused). */
export class PausedError extends InterruptedError {
  override name = "PausedError";
  readonly kind = "paused" as const;
  constructor(message = "the workflow instance was paused; it resumes from its checkpoints") {
    super(message);
  }
}

/**
 * True when `err` — or an error in its `cause` chain — is a {@link CancelledError} or
 * {@link PausedError}: the SDK is interrupting the run, so catch blocks should rethrow it
 * rather than treat it as a failure. `fetch(url, { signal: ctx.signal })` rejects with the
 * abort reason, so it is recognised too.
 */
export function isCancellation(err: unknown): boolean {
  for (let e = err, depth = 0; e !== undefined && e !== null && depth < 16; depth++) {
    if (e instanceof InterruptedError) return true;
    e = e instanceof Error ? e.cause : undefined;
  }
  return false;
}

/** A RUNTARA_* variable is missing or invalid; `variable` names it. */
export class ConfigError extends Error {
  override name = "ConfigError";
  constructor(
    readonly variable: string,
    message: string,
  ) {
    super(message);
  }
}

/**
 * The run is over and this process only waits to exit: the workflow finished (Complete or
 * Fail was sent) or a durable sleep suspended the instance.
 */
export class RunEndedError extends Error {
  override name = "RunEndedError";
  constructor(readonly kind: "finished" | "suspended") {
    super(
      kind === "finished"
        ? "the workflow has already finished (Complete or Fail was sent)"
        : "the instance is suspended in a durable sleep; the process is exiting",
    );
  }
}

/** An SDK function was called outside a workflow instance, or before registration. */
export class NotInInstanceError extends Error {
  override name = "NotInInstanceError";
}

/** The text Fail records for a thrown value: the message, prefixed with the class name. */
export function errorMessage(err: unknown): string {
  if (err instanceof WorkflowError) return err.message;
  if (err instanceof Error) {
    const text = err.name && err.name !== "Error" ? `${err.name}: ${err.message}` : err.message;
    return text || err.name || "error";
  }
  return typeof err === "string" ? err : safeStringify(err);
}

function safeStringify(value: unknown): string {
  try {
    return JSON.stringify(value) ?? String(value);
  } catch {
    return String(value);
  }
}
