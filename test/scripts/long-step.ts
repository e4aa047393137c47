/**
 * A workflow with one long step (STEP_MS) and no SDK calls during it: only background
 * heartbeats (every HEARTBEAT_MS; RUNTARA_* cannot be set through StartInstance's env).
 */
import { runWorkflow } from "../../src/sdk/index.js";

const stepMs = Number(process.env.STEP_MS ?? 4000);
await runWorkflow(async (ctx) => {
  const done = await ctx.step("long", () => new Promise<string>((resolve) => setTimeout(() => resolve("done"), stepMs)));
  return { done };
}, { heartbeatIntervalMs: Number(process.env.HEARTBEAT_MS ?? 10_000) });
