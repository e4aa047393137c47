/**
 * A human-in-the-loop workflow: it asks for approval and completes with the answer.
 *
 * It waits at wait point "approval" until someone sends a custom signal to it, e.g. through
 * the environment (grpcurl / curl / any Connect client):
 *
 *   curl -H 'Content-Type: application/json' \
 *     -d '{"tenant_id":"<tenant>","instance_id":"<id>","checkpoint_id":"approval",
 *          "payload":"'"$(printf '{"approved":true,"by":"ada"}' | base64)"'"}' \
 *     http://127.0.0.1:8002/runtara.environment.v1.EnvironmentService/SendCustomSignal
 *
 * The payload is stored as checkpoint "signal:approval" before it is acknowledged, so a
 * relaunch (after a pause, say) returns it without waiting again. A CANCEL while waiting
 * ends the process with exit code 0 and status CANCELLED.
 *
 * Copy this file next to your own code and change the import to "runtara-environment/sdk".
 */
import { defineSignal, runWorkflow, WorkflowError } from "../src/sdk/index.js";

interface Approval {
  approved: boolean;
  by?: string;
  comment?: string;
}

/** Shared by sender and receiver: the sender uses approval.name and approval.encode(value). */
export const approval = defineSignal<Approval>("approval", (value) => {
  if (typeof value !== "object" || value === null || typeof (value as Approval).approved !== "boolean") {
    throw WorkflowError.nonRetryable(`approval payload must look like {"approved": true|false}, got ${JSON.stringify(value)}`);
  }
  return value as Approval;
});

interface Input {
  /** What needs approving; shown in the event log. */
  request?: string;
  /** Give up after this long, e.g. "1h". Default: wait indefinitely. */
  timeout?: string;
}

await runWorkflow<Input | undefined>(async (ctx) => {
  const request = ctx.input?.request ?? "deploy to production";
  await ctx.emitEvent("approval_requested", { request, waitPoint: approval.name });

  const answer = await ctx.waitForSignal(approval, ctx.input?.timeout ? { timeout: ctx.input.timeout } : {});

  return { request, ...answer };
});
