import type { Transport } from "@connectrpc/connect";
import { InstanceStatus } from "../../gen/runtara/core/v1/types_pb.js";
import { createInstanceClient, createInstanceTransport } from "./client.js";
import type { Duration } from "./duration.js";
import { ConfigError, NotInInstanceError, errorMessage } from "./errors.js";
import { decodeJson, encodeOptionalJson } from "./json.js";
import { stderrLogger, type SdkLogger } from "./logger.js";
import {
  WorkflowRuntime,
  type Outcome,
  type SignalDefinition,
  type StepContext,
  type StepOptions,
  type WaitForSignalOptions,
  type WorkflowContext,
} from "./runtime.js";
import { compileSettings, readInstanceEnv, type EnvSource, type TuningOptions } from "./settings.js";
import { park } from "./timers.js";

export interface RegisterOptions extends TuningOptions {
  /** Where the RUNTARA_* variables come from. @default process.env */
  env?: EnvSource;
  /** How to reach core. @default Connect over h2c/h2 to RUNTARA_CORE_URL, bearer token added */
  transport?: Transport;
  /** @default one line per message on stderr (captured in the instance's stderr tail) */
  logger?: SdkLogger;
  /**
   * Called to end the process after an acknowledged cancel or pause, after a durable sleep
   * suspended the instance, and (runWorkflow) when the workflow finished. Replace it only to
   * embed the SDK somewhere that must not exit; workflow code keeps running then, so watch
   * `ctx.signal`. @default process.exit
   */
  exit?: (code: number) => void;
}

/** Exit codes of a process driven by {@link runWorkflow}. */
export const ExitCode = {
  /** Completed, suspended (durable sleep, pause) or cancelled: the status in core says which. */
  ok: 0,
  /** The workflow threw (reported with Fail), or the SDK could not register/report. */
  failed: 1,
  /** A RUNTARA_* variable is missing or invalid; nothing was reported to core. */
  config: 2,
} as const;

let current: WorkflowRuntime<unknown> | undefined;
let registering = false;

/**
 * Registers this process as its instance (Register, with RUNTARA_CHECKPOINT_ID on a
 * relaunch), starts background heartbeats and signal delivery, and returns the context.
 * For authors who drive the lifecycle themselves; finish with {@link complete} or
 * {@link fail}. A cancel or pause still acknowledges and calls `options.exit(0)`.
 * Throws ConfigError (naming the variable) when the RUNTARA_* variables are unusable.
 */
export async function register<I = unknown>(options: RegisterOptions = {}): Promise<WorkflowContext<I>> {
  return await registerRuntime<I>(options);
}

async function registerRuntime<I>(options: RegisterOptions): Promise<WorkflowRuntime<I>> {
  if (current || registering) throw new Error("register(): this process already registered its instance");
  registering = true;
  try {
    const settings = compileSettings(readInstanceEnv(options.env ?? process.env), options);
    const logger = options.logger ?? stderrLogger();
    const client = createInstanceClient(options.transport ?? createInstanceTransport(settings));
    let res;
    try {
      res = await client.register({ instanceId: settings.instanceId, checkpointId: settings.resumeCheckpointId ?? "" });
    } catch (err) {
      throw new Error(`Register with core at ${settings.coreUrl} failed: ${errorMessage(err)}`, { cause: err });
    }
    const input = decodeJson(res.input, "instance input") as I;
    const runtime: WorkflowRuntime<I> = new WorkflowRuntime<I>(
      {
        settings,
        client,
        logger,
        exit: options.exit ?? ((code) => process.exit(code)),
        onStopped: () => {
          if (current === runtime) current = undefined;
        },
      },
      input,
    );
    current = runtime as WorkflowRuntime<unknown>;
    runtime.start();
    // A CANCEL/PAUSE that arrived while the instance had no process is handled first.
    runtime.onSignal(res.signal);
    return runtime;
  } finally {
    registering = false;
  }
}

/**
 * Runs `fn` as this process's workflow instance and ends the process:
 * - `fn` returns -> Complete(output as JSON) -> exit 0;
 * - `fn` throws -> Fail(error message; stack on stderr) -> exit 1;
 * - CANCEL/PAUSE acknowledged -> exit 0 at once, even if `fn` is still awaiting something;
 * - `ctx.sleep` suspended the instance -> exit 0 (the environment relaunches it at wake time
 *   with RUNTARA_CHECKPOINT_ID, and `fn` replays from its checkpoints);
 * - missing/invalid RUNTARA_* variable -> message naming it on stderr, exit 2.
 */
export async function runWorkflow<I = unknown, O = unknown>(
  fn: (ctx: WorkflowContext<I>) => O | Promise<O>,
  options: RegisterOptions = {},
): Promise<never> {
  const logger = options.logger ?? stderrLogger();
  const exit = options.exit ?? ((code: number) => process.exit(code));
  let rt: WorkflowRuntime<I>;
  try {
    rt = await registerRuntime<I>({ ...options, logger, exit });
  } catch (err) {
    if (err instanceof ConfigError) {
      logger.error(err.message, { variable: err.variable });
      exit(ExitCode.config);
    } else {
      logger.error(err instanceof Error ? err.message : "could not register the instance with core");
      exit(ExitCode.failed);
    }
    return await park();
  }

  await rt.whenIdle();
  if (rt.stopped) return await park();

  let output: Uint8Array;
  try {
    output = encodeOptionalJson(await fn(rt), "workflow output");
  } catch (err) {
    return await failAndExit(rt, err, logger, exit);
  }
  if (rt.stopped) {
    // Interrupted while the last await settled, or fn already called complete() itself.
    if (rt.stopKind === "finished") exit(ExitCode.ok);
    return await park();
  }
  try {
    const outcome = await rt.completeEncoded(output);
    if (!outcome.applied) logger.warn("Complete did not apply", { status: InstanceStatus[outcome.status] });
    exit(ExitCode.ok);
  } catch (err) {
    if (!handledByRuntime(rt)) {
      logger.error("could not report completion to core", { error: errorMessage(err) });
      exit(ExitCode.failed);
    }
  }
  return await park();
}

async function failAndExit(rt: WorkflowRuntime<unknown>, err: unknown, logger: SdkLogger, exit: (code: number) => void) {
  if (handledByRuntime(rt)) return await park();
  if (rt.stopKind === "finished") {
    // The workflow called complete()/fail() itself and then threw; the outcome is reported.
    exit(ExitCode.failed);
    return await park();
  }
  logger.error("workflow failed", { error: errorMessage(err) });
  if (err instanceof Error && err.stack) process.stderr.write(`${err.stack}\n`);
  try {
    const outcome = await rt.fail(err);
    if (!outcome.applied) logger.warn("Fail did not apply", { status: InstanceStatus[outcome.status] });
  } catch (reportErr) {
    if (handledByRuntime(rt)) return await park();
    logger.error("could not report the failure to core", { error: errorMessage(reportErr) });
  }
  exit(ExitCode.failed);
  return await park();
}

/** Cancelled, paused or suspended: the runtime acknowledged/suspended and already exited. */
function handledByRuntime(rt: WorkflowRuntime<unknown>): boolean {
  const kind = rt.stopKind;
  return kind === "cancelled" || kind === "paused" || kind === "suspended";
}

// ------------------------------------------------------------------ plain functions

function runtimeFor(fn: string): WorkflowRuntime<unknown> {
  if (current) return current;
  if (!process.env.RUNTARA_INSTANCE_ID) {
    throw new NotInInstanceError(
      `${fn}() must be called inside a Runtara workflow instance, but RUNTARA_INSTANCE_ID is not set (the environment sets it when it launches an instance)`,
    );
  }
  throw new NotInInstanceError(`${fn}() needs a registered instance: call it from runWorkflow(), or call register() first`);
}

/** The start input of the registered instance. */
export function input<I = unknown>(): I {
  return runtimeFor("input").input as I;
}

/** See {@link WorkflowContext.step}. */
export function step<T>(key: string, fn: (step: StepContext) => T | Promise<T>, options?: StepOptions): Promise<T> {
  return runtimeFor("step").step(key, fn, options);
}

/** See {@link WorkflowContext.sleep}. */
export function sleep(duration: Duration): Promise<void> {
  return runtimeFor("sleep").sleep(duration);
}

/** See {@link WorkflowContext.waitForSignal}. */
export function waitForSignal<T = unknown>(
  signal: string | SignalDefinition<T>,
  options?: WaitForSignalOptions,
): Promise<T> {
  return runtimeFor("waitForSignal").waitForSignal(signal, options);
}

/** Sends a heartbeat now. */
export function heartbeat(): Promise<void> {
  return runtimeFor("heartbeat").heartbeat();
}

/** Appends a custom event (subtype, JSON payload) to the instance's event log. */
export function emitEvent(subtype: string, payload?: unknown, options?: { checkpointId?: string }): Promise<bigint> {
  return runtimeFor("emitEvent").emitEvent(subtype, payload, options);
}

/**
 * Reports success with `output` (JSON) and stops heartbeats and signal delivery, so the
 * process can end. Does not exit. `applied` is false when the instance was no longer RUNNING.
 */
export function complete(output?: unknown): Promise<Outcome> {
  return runtimeFor("complete").complete(output);
}

/** Reports failure with the error's message and stops background work. Does not exit. */
export function fail(error: unknown): Promise<Outcome> {
  return runtimeFor("fail").fail(error);
}
