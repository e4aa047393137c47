/**
 * A multi-step workflow with a durable sleep between its steps.
 *
 * First run: "fetch" and "transform" execute and are checkpointed, then `ctx.sleep("2s")`
 * suspends the instance and the process exits with code 0. Two seconds later the
 * environment relaunches it (RUNTARA_CHECKPOINT_ID=sleep:1): the function runs again from
 * the top, "fetch" and "transform" return their stored results without executing, the
 * sleep sees its wake time has passed, and "publish" runs. Output:
 *   { "fetched": ..., "transformed": ..., "published": ... }
 *
 * Copy this file next to your own code and change the import to "runtara-environment/sdk".
 */
import { runWorkflow } from "../src/sdk/index.js";

interface Input {
  /** Numbers to work on; defaults to [1, 2, 3]. */
  values?: number[];
}

await runWorkflow<Input | undefined>(async (ctx) => {
  const values = ctx.input?.values ?? [1, 2, 3];

  const fetched = await ctx.step("fetch", () => {
    // Side effects belong inside steps: they run once, and a replay returns the stored result.
    process.stderr.write(`fetch: running (instance ${ctx.instanceId})\n`);
    return { values, at: new Date().toISOString() };
  });

  const transformed = await ctx.step("transform", () => ({
    doubled: fetched.values.map((v) => v * 2),
  }));

  await ctx.emitEvent("progress", { phase: "sleeping", resumedFrom: ctx.resumedFrom ?? null });
  await ctx.sleep("2s");

  const published = await ctx.step("publish", () => ({
    sum: transformed.doubled.reduce((a, b) => a + b, 0),
    at: new Date().toISOString(),
  }));

  return { fetched, transformed, published };
});
