/** Benchmark workflow: registers, saves one step, completes at once (the SDK's shortest life). */
import { runWorkflow } from "../../src/sdk/index.js";

await runWorkflow(async (ctx) => ({ done: await ctx.step("one", () => true) }));
