import type { Listener } from "./listener.js";

/**
 * Fans one LISTEN channel out to subscribers by key (the first space-separated word of the
 * payload, an instance id). After a reconnect every subscriber is woken, since any
 * notification may have been missed; subscribers re-read the table, which is the truth.
 */
export class ChannelHub {
  private readonly subscribers = new Map<string, Set<(payload: string) => void>>();

  constructor(listener: Listener, channel: string) {
    listener.on(channel, (payload) => {
      const key = payload.split(" ", 1)[0] ?? "";
      for (const fn of this.subscribers.get(key) ?? []) fn(payload);
    });
    listener.onReconnect(() => {
      for (const set of this.subscribers.values()) for (const fn of set) fn("");
    });
  }

  subscribe(key: string, fn: (payload: string) => void): () => void {
    let set = this.subscribers.get(key);
    if (!set) this.subscribers.set(key, (set = new Set()));
    set.add(fn);
    return () => {
      set.delete(fn);
      if (set.size === 0) this.subscribers.delete(key);
    };
  }

  /**
   * Async iterator of wake-ups for one key, until `signal` aborts. Wake-ups that arrive while
   * the consumer is busy collapse into one, so the consumer re-reads once.
   */
  async *wakeups(key: string, signal: AbortSignal): AsyncGenerator<void> {
    let pending = false;
    let resolve: (() => void) | undefined;
    const unsubscribe = this.subscribe(key, () => {
      pending = true;
      resolve?.();
    });
    const onAbort = () => resolve?.();
    signal.addEventListener("abort", onAbort);
    try {
      while (!signal.aborted) {
        if (!pending) await new Promise<void>((r) => (resolve = r));
        resolve = undefined;
        if (signal.aborted) return;
        pending = false;
        yield;
      }
    } finally {
      unsubscribe();
      signal.removeEventListener("abort", onAbort);
    }
  }
}
