/**
 * Waits `ms`, rejecting with the signal's reason when it aborts. `unref` timers do not keep
 * the process alive (background loops); the workflow's own waits keep it alive.
 */
export function delay(ms: number, options: { signal?: AbortSignal; unref?: boolean } = {}): Promise<void> {
  const { signal, unref = false } = options;
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal?.reason);
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, Math.max(0, ms));
    if (unref) timer.unref();
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}

/** Exponential backoff: `initial * 2^(attempt-1)`, capped, with ±20 % jitter. */
export function backoff(attempt: number, initialMs: number, maxMs: number): number {
  const base = Math.min(maxMs, initialMs * 2 ** Math.max(0, attempt - 1));
  return Math.round(base * (0.8 + Math.random() * 0.4));
}

/** A promise that never settles: the process is exiting and nothing may run after this. */
export function park(): Promise<never> {
  return new Promise<never>(() => {});
}
