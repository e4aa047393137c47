import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { InstanceStatus, SignalType, type CustomSignal, type Signal } from "../../gen/runtara/core/v1/types_pb.js";
import { isFailedPrecondition, type InstanceClient } from "./client.js";
import { parseDuration, type Duration } from "./duration.js";
import {
  CancelledError,
  PausedError,
  RunEndedError,
  SignalTimeoutError,
  WorkflowError,
  errorMessage,
  isCancellation,
} from "./errors.js";
import { signalCheckpointId, sleepCheckpointId, validateCheckpointId, validateStepKey } from "./ids.js";
import { decodeJson, decodeSignalPayload, encodeJson, encodeOptionalJson } from "./json.js";
import type { SdkLogger } from "./logger.js";
import type { RuntimeSettings } from "./settings.js";
import { Heartbeater } from "./heartbeat.js";
import { SignalChannel, type SignalSink } from "./signals.js";
import { decodeSleepState, encodeSleepState, planSleep } from "./sleep-plan.js";
import { delay, park } from "./timers.js";

/** Passed to a step function. */
export interface StepContext {
  /** The step's key (its checkpoint id). */
  readonly key: string;
  /** 1 on the first attempt; higher when `retry` re-runs the step. */
  readonly attempt: number;
  /** Aborts when the instance is cancelled or paused; pass it to fetch and friends. */
  readonly signal: AbortSignal;
}

/** Re-runs a failing step in-process before the error reaches the workflow. */
export interface RetryPolicy {
  /** Total attempts including the first. @default 1 (no retry) */
  maximumAttempts?: number;
  /** Delay before the second attempt. @default "1s" */
  initialInterval?: Duration;
  /** Each further delay is multiplied by this. @default 2 */
  backoffCoefficient?: number;
  /** Delay cap. @default "1m" */
  maximumInterval?: Duration;
}

export interface StepOptions {
  /** Retries happen before the checkpoint is written; a WorkflowError with nonRetryable stops them. */
  retry?: RetryPolicy;
}

export interface WaitForSignalOptions {
  /**
   * Give up with a SignalTimeoutError after this long. Measured in this process from the
   * call: a relaunch (after pause/resume) starts it again.
   * @default no timeout
   */
  timeout?: Duration;
}

/**
 * A custom signal shared by sender and receiver: the receiver passes it to `waitForSignal`,
 * the sender uses `name` as SendCustomSignal's checkpoint_id and `encode` for the payload.
 */
export interface SignalDefinition<T> {
  readonly name: string;
  /** Validates/converts the JSON-decoded payload (e.g. a zod schema's parse). */
  readonly parse: ((value: unknown) => T) | undefined;
  /** UTF-8 JSON bytes for SendCustomSignal's payload. */
  encode(value: T): Uint8Array;
}

/** Defines a custom signal (a wait point). `name` follows the checkpoint id rules. */
export function defineSignal<T = unknown>(name: string, parse?: (value: unknown) => T): SignalDefinition<T> {
  validateCheckpointId(name, "signal name");
  signalCheckpointId(name); // also fits once prefixed
  return { name, parse, encode: (value: T) => encodeJson(value, `payload of signal "${name}"`) };
}

/** Result of Complete / Fail: whether the transition applied, and the status core reports. */
export interface Outcome {
  readonly applied: boolean;
  readonly status: InstanceStatus;
}

/** What a workflow function receives. Methods may be destructured. */
export interface WorkflowContext<I = unknown> {
  readonly instanceId: string;
  readonly tenantId: string;
  /** The start input, JSON-decoded (`undefined` when the instance was started without input). */
  readonly input: I;
  /** The checkpoint this run was relaunched from (RUNTARA_CHECKPOINT_ID), if any. */
  readonly resumedFrom: string | undefined;
  /** Aborts (reason CancelledError or PausedError) once a cancel or pause is acknowledged. */
  readonly signal: AbortSignal;
  /**
   * Durable step: returns the stored result when checkpoint `key` exists (replay, `fn` not
   * called); otherwise runs `fn`, stores its JSON result (first write wins) and returns it.
   * The value is JSON round-tripped on the first run too, so a first run and a replay see
   * the same thing (a Date becomes a string, undefined becomes null). `key` is the
   * checkpoint id: [A-Za-z0-9._:-], at most 128 characters, unique per step in the run, not
   * starting with "sleep:" or "signal:" (the SDK's own records).
   */
  step<T>(key: string, fn: (step: StepContext) => T | Promise<T>, options?: StepOptions): Promise<T>;
  /**
   * Durable sleep (ms or "500ms", "2s", "5m", "1h"). The wake time is stored in checkpoint
   * `sleep:<n>` (n = 1-based order of sleep calls in the run). If more than
   * `inProcessSleepMaxMs` remains, the SDK calls Sleep and the process exits with code 0; the
   * environment relaunches it at the wake time and the workflow replays to this point.
   * Otherwise it waits in-process. Sleep calls must happen in the same order on every run.
   */
  sleep(duration: Duration): Promise<void>;
  /**
   * Waits for the custom signal of wait point `signal` (sent with SendCustomSignal and that
   * checkpoint_id), stores the payload as checkpoint `signal:<name>`, acknowledges it and
   * returns it JSON-decoded (text when it is not JSON, null when empty). A replay returns the
   * stored payload without waiting. One name holds one payload per run: waits in a loop need
   * distinct names (`approval-${i}`). The process stays up while waiting (heartbeats keep
   * it alive), so the instance's timeout_seconds bounds the wait.
   */
  waitForSignal<T = unknown>(signal: string | SignalDefinition<T>, options?: WaitForSignalOptions): Promise<T>;
  /** Sends a heartbeat now (background heartbeats run anyway). */
  heartbeat(): Promise<void>;
  /** Appends a custom event (audit/debug log); returns its id. */
  emitEvent(subtype: string, payload?: unknown, options?: { checkpointId?: string }): Promise<bigint>;
}

export interface RuntimeDeps {
  readonly settings: RuntimeSettings;
  readonly client: InstanceClient;
  readonly logger: SdkLogger;
  /** Ends the process; the runtime calls it after an acknowledged cancel/pause and after a suspend. */
  readonly exit: (code: number) => void;
  /** Called once when the runtime stops for any reason. */
  readonly onStopped?: () => void;
}

const MAX_ERROR_CHARS = 32 * 1024;

/**
 * One registered run of a workflow instance: the WorkflowContext implementation plus the
 * background heartbeats and signal channel.
 *
 * Control flow. A CANCEL or PAUSE (from WatchSignals, PollSignal, Heartbeat, SaveCheckpoint
 * or Register) starts a *transition*: the SDK acknowledges it (AckSignal with that type);
 * SDK calls made meanwhile wait for the outcome. Applied -> `signal` aborts, background work
 * stops and `exit(0)` runs at once, even if workflow code is stuck in an await. Not applied
 * -> the SDK asks core what is pending (a CANCEL may have replaced the PAUSE) and settles
 * that instead; if nothing is pending the run continues. If the ack cannot be sent, the run
 * continues and the signal, still pending, is delivered again.
 */
export class WorkflowRuntime<I = unknown> implements WorkflowContext<I>, SignalSink {
  readonly instanceId: string;
  readonly tenantId: string;
  readonly resumedFrom: string | undefined;

  private readonly settings: RuntimeSettings;
  private readonly client: InstanceClient;
  private readonly logger: SdkLogger;
  private readonly exitProcess: (code: number) => void;
  private readonly onStopped: (() => void) | undefined;
  private readonly abort = new AbortController();
  private readonly heartbeater: Heartbeater;
  private readonly channel: SignalChannel;

  /** Set while a control signal is being settled, a sleep suspends, or the run finishes. */
  private transition: Promise<void> | undefined;
  /** Once set, the run is over: SDK calls throw it. */
  private stopReason: Error | undefined;
  private sleepOrdinal = 0;
  private resumeAck: Promise<void> | undefined;
  private readonly waiters = new Map<string, Set<(payload: Uint8Array) => void>>();
  /** Custom signals that arrived before anyone waited for them (they stay pending until acked). */
  private readonly inbox = new Map<string, Uint8Array>();

  constructor(
    deps: RuntimeDeps,
    readonly input: I,
  ) {
    this.settings = deps.settings;
    this.client = deps.client;
    this.logger = deps.logger;
    this.exitProcess = deps.exit;
    this.onStopped = deps.onStopped;
    this.instanceId = deps.settings.instanceId;
    this.tenantId = deps.settings.tenantId;
    this.resumedFrom = deps.settings.resumeCheckpointId;
    this.heartbeater = new Heartbeater(() => this.beat(), deps.settings.heartbeatIntervalMs, deps.logger);
    this.channel = new SignalChannel(deps.client, deps.settings, this, deps.logger);
  }

  get signal(): AbortSignal {
    return this.abort.signal;
  }

  /** True once the run is over (finished, interrupted or suspended). */
  get stopped(): boolean {
    return this.stopReason !== undefined;
  }

  /** Why the run is over, once it is. */
  get stopKind(): "finished" | "suspended" | "cancelled" | "paused" | undefined {
    const r = this.stopReason;
    if (r instanceof RunEndedError) return r.kind;
    if (r instanceof CancelledError) return "cancelled";
    if (r instanceof PausedError) return "paused";
    return undefined;
  }

  /** The signal delivery mode in use ("poll" after a watch fallback). */
  get signalMode(): "watch" | "poll" {
    return this.channel.mode;
  }

  /** Starts heartbeats and the signal channel. */
  start(): void {
    this.heartbeater.start();
    this.channel.start();
  }

  /** Resolves once no control transition is in flight. */
  async whenIdle(): Promise<void> {
    while (this.transition) await this.transition;
  }

  // ---------------------------------------------------------------- workflow API

  step = async <T>(key: string, fn: (step: StepContext) => T | Promise<T>, options: StepOptions = {}): Promise<T> => {
    validateStepKey(key);
    await this.guard();
    const stored = await this.client.getCheckpoint({ instanceId: this.instanceId, checkpointId: key });
    if (stored.found) return decodeJson(stored.state, `checkpoint "${key}"`) as T;

    const result = await this.runAttempts(key, fn, options.retry);
    this.throwIfStopped();
    const bytes = encodeJson(result, `result of step "${key}"`);
    const saved = await this.client.saveCheckpoint({ instanceId: this.instanceId, checkpointId: key, state: bytes });
    this.onSignal(saved.signal);
    this.onCustom(saved.customSignal);
    // First write wins: if another writer stored this key first, its value is the result.
    return decodeJson(saved.found ? saved.state : bytes, `checkpoint "${key}"`) as T;
  };

  sleep = async (duration: Duration): Promise<void> => {
    const durationMs = parseDuration(duration, "sleep duration");
    // The ordinal is taken before any await, so it follows call order even under Promise.all.
    const key = sleepCheckpointId(++this.sleepOrdinal);
    await this.guard();
    if (durationMs === 0) return;
    const stored = await this.client.getCheckpoint({ instanceId: this.instanceId, checkpointId: key });
    const plan = planSleep({
      storedWakeAtMs: stored.found ? decodeSleepState(stored.state, key) : undefined,
      nowMs: Date.now(),
      durationMs,
      inProcessSleepMaxMs: this.settings.inProcessSleepMaxMs,
    });
    if (plan.kind === "continue") return;
    if (plan.kind === "suspend") return await this.suspend(key, plan.wakeAtMs);

    let wakeAtMs = plan.wakeAtMs;
    if (plan.save) {
      const saved = await this.client.saveCheckpoint({
        instanceId: this.instanceId,
        checkpointId: key,
        state: encodeSleepState(wakeAtMs),
      });
      this.onSignal(saved.signal);
      if (saved.found) wakeAtMs = decodeSleepState(saved.state, key);
    }
    await delay(wakeAtMs - Date.now(), { signal: this.abort.signal });
  };

  waitForSignal = async <T = unknown>(
    signal: string | SignalDefinition<T>,
    options: WaitForSignalOptions = {},
  ): Promise<T> => {
    const name = typeof signal === "string" ? signal : signal.name;
    const key = signalCheckpointId(name);
    const timeoutMs = options.timeout === undefined ? undefined : parseDuration(options.timeout, "waitForSignal timeout");
    await this.guard();

    let value: unknown;
    const stored = await this.client.getCheckpoint({ instanceId: this.instanceId, checkpointId: key });
    if (stored.found) {
      value = decodeJson(stored.state, `checkpoint "${key}"`) ?? null;
      // A crash between saving and acknowledging leaves the signal pending; clear it.
      await this.ackCustom(name, "debug");
    } else {
      const payload = await this.awaitCustom(name, timeoutMs);
      value = decodeSignalPayload(payload);
      const saved = await this.client.saveCheckpoint({
        instanceId: this.instanceId,
        checkpointId: key,
        state: encodeJson(value, `payload of signal "${name}"`),
      });
      this.onSignal(saved.signal);
      if (saved.found) value = decodeJson(saved.state, `checkpoint "${key}"`) ?? null;
      // Acknowledge only after the payload is durable: at-least-once, never lost. The workflow
      // need not wait for the acknowledgement (replays read the checkpoint), which saves a
      // round trip on every signal.
      void this.ackCustom(name, "warn");
    }
    if (typeof signal !== "string" && signal.parse) return signal.parse(value);
    return value as T;
  };

  heartbeat = async (): Promise<void> => {
    this.throwIfStopped();
    await this.beat();
  };

  emitEvent = async (subtype: string, payload?: unknown, options: { checkpointId?: string } = {}): Promise<bigint> => {
    if (typeof subtype !== "string" || subtype.length === 0 || subtype.length > 128) {
      throw new RangeError(`event subtype must be 1 to 128 characters, got ${JSON.stringify(subtype)}`);
    }
    if (options.checkpointId !== undefined) validateCheckpointId(options.checkpointId);
    this.throwIfStopped();
    const res = await this.client.emitEvent({
      instanceId: this.instanceId,
      subtype,
      payload: encodeOptionalJson(payload, `payload of event "${subtype}"`),
      checkpointId: options.checkpointId ?? "",
    });
    return res.eventId;
  };

  /** Reports success (Complete) and stops background work. Does not exit the process. */
  async complete(output: unknown): Promise<Outcome> {
    return await this.completeEncoded(encodeOptionalJson(output, "workflow output"));
  }

  async completeEncoded(output: Uint8Array): Promise<Outcome> {
    return await this.finish(async () => {
      const res = await this.client.complete({ instanceId: this.instanceId, output });
      return { applied: res.applied, status: res.status };
    });
  }

  /** Reports failure (Fail, with the error's message) and stops background work. */
  async fail(error: unknown): Promise<Outcome> {
    let message = errorMessage(error);
    if (message.length > MAX_ERROR_CHARS) message = `${message.slice(0, MAX_ERROR_CHARS)}… (truncated)`;
    return await this.finish(async () => {
      const res = await this.client.fail({ instanceId: this.instanceId, error: message });
      return { applied: res.applied, status: res.status };
    });
  }

  // ---------------------------------------------------------------- signals

  onSignal(signal: Signal | undefined): void {
    if (!signal || this.stopReason) return;
    switch (signal.signalType) {
      case SignalType.CANCEL:
      case SignalType.PAUSE:
        if (this.transition) return; // already settling, suspending or finishing
        this.transition = this.settle(signal.signalType)
          .catch((err: unknown) => this.logger.error("handling a control signal failed", { error: err }))
          .finally(() => (this.transition = undefined));
        return;
      case SignalType.RESUME:
        // A running instance has nothing to resume; acknowledge so it is not re-sent.
        this.resumeAck ??= this.client
          .ackSignal({ instanceId: this.instanceId, signalType: SignalType.RESUME })
          .then(
            () => undefined,
            (err: unknown) => this.logger.debug("could not acknowledge RESUME", { error: err }),
          )
          .finally(() => (this.resumeAck = undefined));
        return;
      default:
        return;
    }
  }

  onCustom(custom: CustomSignal | undefined): void {
    if (!custom || !custom.checkpointId) return;
    const waiting = this.waiters.get(custom.checkpointId);
    if (waiting && waiting.size > 0) {
      for (const deliver of [...waiting]) deliver(custom.payload);
    } else {
      this.inbox.set(custom.checkpointId, custom.payload);
    }
  }

  waitPoints(): Iterable<string> {
    return this.waiters.keys();
  }

  // ---------------------------------------------------------------- internals

  private async beat(): Promise<void> {
    if (this.stopReason || this.transition) return;
    const res = await this.client.heartbeat({ instanceId: this.instanceId });
    this.onSignal(res.signal);
  }

  /** Waits out a transition, then throws if the run is over. */
  private async guard(): Promise<void> {
    await this.whenIdle();
    this.throwIfStopped();
  }

  /**
   * Waits out any transition and starts a new one; the check and the claim happen in one
   * synchronous step, so a control signal arriving meanwhile cannot interleave.
   */
  private async beginTransition(): Promise<() => void> {
    for (;;) {
      this.throwIfStopped();
      if (!this.transition) break;
      await this.transition;
    }
    let resolve!: () => void;
    const transition = new Promise<void>((r) => (resolve = r));
    this.transition = transition;
    return () => {
      if (this.transition === transition) this.transition = undefined;
      resolve();
    };
  }

  private throwIfStopped(): void {
    if (this.stopReason) throw this.stopReason;
  }

  private async settle(first: SignalType.CANCEL | SignalType.PAUSE): Promise<void> {
    let type: SignalType.CANCEL | SignalType.PAUSE = first;
    for (let round = 0; round < 3; round++) {
      const name = SignalType[type];
      try {
        const res = await this.client.ackSignal({ instanceId: this.instanceId, signalType: type });
        if (res.applied || isSettled(res.status)) return this.interrupt(type, res.status);
      } catch (err) {
        if (!isFailedPrecondition(err)) {
          this.logger.warn(`could not acknowledge ${name}; it stays pending and is handled when delivered again`, {
            error: err,
          });
          return;
        }
      }
      // Not applied: a CANCEL may have replaced the PAUSE, or the signal was settled elsewhere.
      let pending: Signal | undefined;
      try {
        pending = (await this.client.pollSignal({ instanceId: this.instanceId, checkpointId: "" })).signal;
      } catch (err) {
        if (isFailedPrecondition(err)) return this.interrupt(type, InstanceStatus.UNSPECIFIED);
        this.logger.warn(`could not check signals after a refused ${name} acknowledgement`, { error: err });
        return;
      }
      const next = pending?.signalType;
      if (next === SignalType.CANCEL || next === SignalType.PAUSE) {
        type = next;
        continue;
      }
      // Core never drops a pending CANCEL except by applying it, so a refused CANCEL with
      // nothing pending means the instance was cancelled another way (e.g. StopInstance).
      if (type === SignalType.CANCEL) return this.interrupt(type, InstanceStatus.UNSPECIFIED);
      this.logger.warn(`${name} is no longer pending; continuing`);
      if (next === SignalType.RESUME) this.onSignal(pending);
      return;
    }
  }

  private interrupt(type: SignalType, status: InstanceStatus): void {
    const reason = type === SignalType.CANCEL ? new CancelledError() : new PausedError();
    this.logger.info(type === SignalType.CANCEL ? "cancelled; exiting" : "paused; exiting", {
      status: InstanceStatus[status],
    });
    this.stop(reason);
    this.abort.abort(reason);
    this.exitProcess(0);
  }

  private async suspend(key: string, wakeAtMs: number): Promise<never> {
    // Control signals are not acknowledged while suspending: a CANCEL/PAUSE stays pending and
    // is seen by Register on the relaunch (a suspended instance is cancelled immediately).
    const end = await this.beginTransition();
    try {
      await this.client.sleep({
        instanceId: this.instanceId,
        checkpointId: key,
        state: encodeSleepState(wakeAtMs),
        wakeAt: timestampFromMs(wakeAtMs),
      });
    } catch (err) {
      end();
      throw new WorkflowError(`durable sleep could not suspend the instance: ${errorMessage(err)}`, { cause: err });
    }
    this.logger.debug("suspended until wake time; exiting", { checkpointId: key, wakeAt: new Date(wakeAtMs).toISOString() });
    this.stop(new RunEndedError("suspended"));
    this.exitProcess(0);
    return await park();
  }

  private async finish(report: () => Promise<Outcome>): Promise<Outcome> {
    const end = await this.beginTransition();
    try {
      return await report();
    } finally {
      this.stop(new RunEndedError("finished"));
      end();
    }
  }

  private stop(reason: Error): void {
    if (this.stopReason) return;
    this.stopReason = reason;
    this.heartbeater.stop();
    this.channel.stop();
    this.onStopped?.();
  }

  private async runAttempts<T>(
    key: string,
    fn: (step: StepContext) => T | Promise<T>,
    retry: RetryPolicy | undefined,
  ): Promise<T> {
    const maxAttempts = retry?.maximumAttempts ?? 1;
    if (!Number.isInteger(maxAttempts) || maxAttempts < 1) {
      throw new RangeError(`retry.maximumAttempts must be a whole number >= 1, got ${maxAttempts}`);
    }
    const initialMs = parseDuration(retry?.initialInterval ?? 1_000, "retry.initialInterval");
    const maxMs = parseDuration(retry?.maximumInterval ?? 60_000, "retry.maximumInterval");
    const coefficient = retry?.backoffCoefficient ?? 2;
    for (let attempt = 1; ; attempt++) {
      try {
        return await fn({ key, attempt, signal: this.abort.signal });
      } catch (err) {
        const final =
          attempt >= maxAttempts ||
          isCancellation(err) ||
          (err instanceof WorkflowError && err.nonRetryable) ||
          this.stopReason !== undefined;
        if (final) throw err;
        const wait = Math.min(maxMs, initialMs * coefficient ** (attempt - 1));
        this.logger.warn("step failed; retrying", { key, attempt, retryInMs: wait, error: errorMessage(err) });
        await delay(wait, { signal: this.abort.signal });
        await this.guard();
      }
    }
  }

  private awaitCustom(name: string, timeoutMs: number | undefined): Promise<Uint8Array> {
    return new Promise<Uint8Array>((resolve, reject) => {
      const buffered = this.inbox.get(name);
      if (buffered) {
        this.inbox.delete(name);
        return resolve(buffered);
      }
      if (this.abort.signal.aborted) return reject(this.abort.signal.reason);
      let waiting = this.waiters.get(name);
      if (!waiting) this.waiters.set(name, (waiting = new Set()));
      const set = waiting;
      // A ref'd timer keeps the process alive while waiting (background loops are unref'd).
      const timer =
        timeoutMs === undefined
          ? setInterval(() => {}, 2 ** 30)
          : setTimeout(() => {
              cleanup();
              reject(new SignalTimeoutError(name, timeoutMs));
            }, timeoutMs);
      const onAbort = () => {
        cleanup();
        reject(this.abort.signal.reason);
      };
      const deliver = (payload: Uint8Array) => {
        cleanup();
        resolve(payload);
      };
      const cleanup = () => {
        clearTimeout(timer);
        set.delete(deliver);
        if (set.size === 0 && this.waiters.get(name) === set) this.waiters.delete(name);
        this.abort.signal.removeEventListener("abort", onAbort);
      };
      set.add(deliver);
      this.abort.signal.addEventListener("abort", onAbort, { once: true });
      void this.channel.pollFor(name);
    });
  }

  private async ackCustom(name: string, level: "debug" | "warn"): Promise<void> {
    try {
      await this.client.ackSignal({ instanceId: this.instanceId, checkpointId: name });
    } catch (err) {
      // The payload is already a checkpoint and replays come from it; a signal left pending
      // is harmless and cleared by the next run that passes this wait point.
      this.logger[level]("could not acknowledge custom signal", { checkpointId: name, error: err });
    }
  }
}

/** A status in which this process has nothing left to do. */
function isSettled(status: InstanceStatus): boolean {
  return (
    status === InstanceStatus.CANCELLED ||
    status === InstanceStatus.SUSPENDED ||
    status === InstanceStatus.COMPLETED ||
    status === InstanceStatus.FAILED
  );
}
