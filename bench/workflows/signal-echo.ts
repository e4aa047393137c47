/**
 * Benchmark workflow: waits for SIGNALS custom signals ping-0 … ping-N-1 in order and records,
 * for each, the time from the sender's timestamp in the payload to the moment the workflow
 * has it. Completes with the latencies (ms). Both processes share this machine's clock.
 */
import { runWorkflow } from "../../src/sdk/index.js";

const now = () => performance.timeOrigin + performance.now();

await runWorkflow<{ signals: number }>(async (ctx) => {
  const latenciesMs: number[] = [];
  for (let i = 0; i < ctx.input.signals; i++) {
    const ping = await ctx.waitForSignal<{ sentAt: number }>(`ping-${i}`);
    latenciesMs.push(now() - ping.sentAt);
  }
  return { latenciesMs };
});
