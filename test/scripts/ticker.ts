/**
 * A workflow that runs for a while and says so: TICKS steps of TICK_MS each, one stdout line
 * per step (the console test follows its logs and timeline live).
 */
import { runWorkflow } from "../../src/sdk/index.js";

const ticks = Number(process.env.TICKS ?? 5);
const tickMs = Number(process.env.TICK_MS ?? 500);
await runWorkflow(async (ctx) => {
  for (let i = 1; i <= ticks; i++) {
    await ctx.step(`tick-${i}`, async () => {
      console.log(`tick ${i} of ${ticks}`);
      await new Promise((resolve) => setTimeout(resolve, tickMs));
    });
  }
  return { ticks };
});
