import { decodeJson, encodeJson } from "./json.js";

/** What `ctx.sleep` does next, decided from the stored wake time (if any) and the clock. */
export type SleepPlan =
  /** The wake time has passed: continue now. */
  | { readonly kind: "continue"; readonly wakeAtMs: number }
  /** Short remaining time: wait in-process (first run: checkpoint the wake time first). */
  | { readonly kind: "wait"; readonly wakeAtMs: number; readonly remainingMs: number; readonly save: boolean }
  /** Long remaining time: call Sleep with this wake time and exit; the environment relaunches. */
  | { readonly kind: "suspend"; readonly wakeAtMs: number; readonly remainingMs: number };

/**
 * The wake time is computed once, on the first run, and stored in the sleep's checkpoint;
 * a replay uses the stored time, so a crash or a relaunch never restarts the full duration.
 */
export function planSleep(input: {
  storedWakeAtMs: number | undefined;
  nowMs: number;
  durationMs: number;
  inProcessSleepMaxMs: number;
}): SleepPlan {
  const wakeAtMs = input.storedWakeAtMs ?? input.nowMs + input.durationMs;
  const remainingMs = wakeAtMs - input.nowMs;
  if (remainingMs <= 0) return { kind: "continue", wakeAtMs };
  if (remainingMs <= input.inProcessSleepMaxMs) {
    return { kind: "wait", wakeAtMs, remainingMs, save: input.storedWakeAtMs === undefined };
  }
  return { kind: "suspend", wakeAtMs, remainingMs };
}

/** Checkpoint state of a sleep: `{"wakeAt": <epoch ms>}`. */
export function encodeSleepState(wakeAtMs: number): Uint8Array {
  return encodeJson({ wakeAt: wakeAtMs }, "sleep state");
}

export function decodeSleepState(bytes: Uint8Array, checkpointId: string): number {
  const value = decodeJson(bytes, `checkpoint "${checkpointId}"`);
  const wakeAt = (value as { wakeAt?: unknown } | null | undefined)?.wakeAt;
  if (typeof wakeAt !== "number" || !Number.isFinite(wakeAt)) {
    throw new TypeError(
      `checkpoint "${checkpointId}" does not hold a sleep record ({"wakeAt": <epoch ms>}); was the workflow changed so that its sleep calls happen in a different order?`,
    );
  }
  return wakeAt;
}
