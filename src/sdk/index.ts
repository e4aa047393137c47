/**
 * Runtara workflow SDK: write a workflow as an async function, run it with `runWorkflow`.
 *
 * ```ts
 * import { runWorkflow } from "runtara-environment/sdk";
 *
 * await runWorkflow<{ orderId: string }>(async (ctx) => {
 *   const order = await ctx.step("load-order", () => loadOrder(ctx.input.orderId));
 *   await ctx.sleep("5m"); // durable: the process exits and is relaunched at wake time
 *   const approval = await ctx.waitForSignal<{ ok: boolean }>("approval");
 *   return { order, approved: approval.ok };
 * });
 * ```
 *
 * Depends only on the Connect/protobuf runtime and the generated InstanceService client.
 */
export { runWorkflow, register, ExitCode, type RegisterOptions } from "./workflow.js";
export { input, step, sleep, waitForSignal, heartbeat, emitEvent, complete, fail } from "./workflow.js";
export {
  defineSignal,
  type WorkflowContext,
  type StepContext,
  type StepOptions,
  type RetryPolicy,
  type WaitForSignalOptions,
  type SignalDefinition,
  type Outcome,
} from "./runtime.js";
export {
  WorkflowError,
  SignalTimeoutError,
  InterruptedError,
  CancelledError,
  PausedError,
  RunEndedError,
  ConfigError,
  NotInInstanceError,
  isCancellation,
} from "./errors.js";
export { parseDuration, type Duration } from "./duration.js";
export type { SdkLogger } from "./logger.js";
export type { SignalMode, TuningOptions } from "./settings.js";
export { InstanceStatus } from "../../gen/runtara/core/v1/types_pb.js";
