import type { Logger } from "pino";
import type { DatabasePool } from "slonik";
import type { ChannelHub } from "../db/index.js";
import * as repo from "./repository.js";
import type { Transition } from "./repository.js";

interface Feed {
  lastId: bigint;
  listeners: Set<(batch: readonly Transition[]) => void>;
  unsubscribe: () => void;
  reading: boolean;
  again: boolean;
}

export interface Subscription {
  next(): Promise<readonly Transition[] | undefined>;
  close(): void;
}

/** Transitions read per statement while catching up. */
const BATCH = 100;

/**
 * One reader per watched instance: on every status NOTIFY (or listener reconnect) it reads
 * the transitions after the last one it read, once, and hands them to every watcher of that
 * instance. N watchers of one instance cost one small query per change, not N row reads.
 */
export class TransitionFeeds {
  /** Watched instances; `refs` counts subscribers, including those still awaiting `ready`. */
  private readonly feeds = new Map<string, { ready: Promise<Feed>; refs: number }>();

  constructor(
    private readonly db: DatabasePool,
    private readonly statusChanges: ChannelHub,
    private readonly logger: Logger,
  ) {}

  /**
   * Transitions of the instance from now on, in order, in batches. Subscribe before reading
   * where to start from: every transition committed after the subscription is delivered
   * (some earlier ones may be too; the caller skips ids it has seen). `next()` resolves with
   * undefined once `abort` fires; `close()` must be called when done.
   */
  async subscribe(instanceId: string, abort: AbortSignal): Promise<Subscription> {
    const entry = this.entryOf(instanceId);
    entry.refs++;
    const release = () => {
      if (--entry.refs > 0) return;
      if (this.feeds.get(instanceId) === entry) this.feeds.delete(instanceId);
      void entry.ready.then((f) => f.unsubscribe(), () => {});
    };
    let feed: Feed;
    try {
      feed = await entry.ready;
    } catch (e) {
      release();
      throw e;
    }
    const queue: (readonly Transition[])[] = [];
    let wake: (() => void) | undefined;
    const listener = (batch: readonly Transition[]) => {
      queue.push(batch);
      wake?.();
    };
    const onAbort = () => wake?.();
    feed.listeners.add(listener);
    abort.addEventListener("abort", onAbort);
    return {
      next: async () => {
        while (queue.length === 0 && !abort.aborted) await new Promise<void>((r) => (wake = r));
        wake = undefined;
        return abort.aborted ? undefined : queue.shift();
      },
      close: () => {
        abort.removeEventListener("abort", onAbort);
        wake?.();
        feed.listeners.delete(listener);
        release();
      },
    };
  }

  private entryOf(instanceId: string) {
    let entry = this.feeds.get(instanceId);
    if (entry === undefined) {
      const ready = (async () => {
        const created: Feed = { lastId: 0n, listeners: new Set(), unsubscribe: () => {}, reading: false, again: false };
        created.unsubscribe = this.statusChanges.subscribe(instanceId, () => void this.pump(instanceId, created));
        // Subscribed before reading where to start: nothing committed in between is missed.
        try {
          const latest = await repo.latestTransitionId(this.db, instanceId);
          if (latest > created.lastId) created.lastId = latest;
        } catch (e) {
          created.unsubscribe();
          throw e;
        }
        return created;
      })();
      entry = { ready, refs: 0 };
      this.feeds.set(instanceId, entry);
    }
    return entry;
  }

  private async pump(instanceId: string, feed: Feed) {
    if (feed.reading) {
      feed.again = true;
      return;
    }
    feed.reading = true;
    try {
      do {
        feed.again = false;
        for (;;) {
          const batch = await repo.transitionsAfter(this.db, instanceId, feed.lastId, BATCH);
          if (batch.length === 0) break;
          feed.lastId = batch[batch.length - 1]!.id;
          for (const listener of feed.listeners) listener(batch);
          if (batch.length < BATCH) break;
        }
      } while (feed.again);
    } catch (e) {
      // The next NOTIFY or the reconnect after an outage reads again from lastId.
      this.logger.warn({ err: e, instanceId }, "could not read the transitions of a watched instance");
    } finally {
      feed.reading = false;
    }
  }
}
