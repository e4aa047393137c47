import pg from "pg";
import type { Logger } from "pino";

type Handler = (payload: string) => void;

/**
 * LISTEN on a dedicated pg.Client (slonik has no LISTEN, and pooled connections are reset).
 * Reconnects with capped backoff, re-issues every LISTEN, and calls the reconnect hooks so
 * consumers can catch up on whatever they missed while disconnected.
 */
export class Listener {
  private client: pg.Client | undefined;
  private readonly handlers = new Map<string, Set<Handler>>();
  private readonly reconnectHooks = new Set<() => void>();
  private state: "created" | "running" | "stopped" = "created";
  private retryTimer: NodeJS.Timeout | undefined;
  private failures = 0;

  constructor(
    private readonly url: string,
    private readonly logger: Logger,
  ) {}

  /** Connects and listens; rejects if the first connection fails. */
  async start(): Promise<void> {
    if (this.state !== "created") throw new Error(`listener is ${this.state}`);
    this.state = "running";
    await this.connect();
  }

  async stop(): Promise<void> {
    this.state = "stopped";
    clearTimeout(this.retryTimer);
    const client = this.client;
    this.client = undefined;
    await client?.end().catch(() => {});
  }

  /** Subscribes to a channel; returns the unsubscribe function. */
  on(channel: string, handler: Handler): () => void {
    let set = this.handlers.get(channel);
    if (!set) {
      set = new Set();
      this.handlers.set(channel, set);
      void this.client?.query(`LISTEN ${pg.escapeIdentifier(channel)}`).catch((e: unknown) => this.logger.warn({ err: e, channel }, "LISTEN failed"));
    }
    set.add(handler);
    return () => set.delete(handler);
  }

  onReconnect(hook: () => void): () => void {
    this.reconnectHooks.add(hook);
    return () => this.reconnectHooks.delete(hook);
  }

  private async connect(): Promise<void> {
    const client = new pg.Client({ connectionString: this.url, keepAlive: true });
    client.on("notification", (msg) => {
      for (const handler of this.handlers.get(msg.channel) ?? []) {
        try {
          handler(msg.payload ?? "");
        } catch (e) {
          this.logger.error({ err: e, channel: msg.channel }, "notification handler failed");
        }
      }
    });
    client.on("error", (e) => this.lost(client, e));
    client.on("end", () => this.lost(client, new Error("connection ended")));
    await client.connect();
    for (const channel of this.handlers.keys()) await client.query(`LISTEN ${pg.escapeIdentifier(channel)}`);
    this.client = client;
    this.failures = 0;
  }

  private lost(client: pg.Client, err: Error) {
    if (this.client !== client || this.state !== "running") return;
    this.client = undefined;
    client.end().catch(() => {});
    this.logger.warn({ err: err.message }, "LISTEN connection lost, reconnecting");
    this.scheduleReconnect();
  }

  private scheduleReconnect() {
    const delay = Math.min(100 * 2 ** this.failures, 5_000);
    this.failures++;
    this.retryTimer = setTimeout(() => {
      this.connect().then(
        () => {
          this.logger.info("LISTEN connection restored");
          for (const hook of this.reconnectHooks) hook();
        },
        (e: unknown) => {
          this.logger.warn({ err: (e as Error).message }, "LISTEN reconnect failed");
          if (this.state === "running") this.scheduleReconnect();
        },
      );
    }, delay);
  }
}
