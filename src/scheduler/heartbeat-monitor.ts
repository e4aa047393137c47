import type { Logger } from "pino";

export interface HeartbeatMonitorOptions {
  /** A RUNNING instance silent for longer than this is killed and FAILED. @default 120000 */
  timeoutMs: number;
  /** How often to check. @default 15000 */
  intervalMs: number;
}

/**
 * Periodically enforces heartbeats. Liveness is `instances.heartbeat_at`, refreshed by any
 * instance call (the SDK also sends background heartbeats), never an ever-growing event log.
 * The first check is offset randomly so replicas started together do not check in lockstep.
 */
export class HeartbeatMonitor {
  private timer: NodeJS.Timeout | undefined;
  private pass: Promise<void> = Promise.resolve();
  private running = false;

  constructor(
    private readonly enforce: (timeoutMs: number) => Promise<void>,
    private readonly logger: Logger,
    private readonly options: HeartbeatMonitorOptions,
  ) {}

  start(): void {
    if (this.running) return;
    this.running = true;
    this.schedule(Math.random() * this.options.intervalMs);
  }

  async stop(): Promise<void> {
    this.running = false;
    clearTimeout(this.timer);
    await this.pass;
  }

  private schedule(delayMs: number) {
    this.timer = setTimeout(() => {
      this.pass = this.enforce(this.options.timeoutMs)
        .catch((e: unknown) => this.logger.error({ err: e }, "heartbeat check failed"))
        .finally(() => {
          if (this.running) this.schedule(this.options.intervalMs);
        });
    }, delayMs);
    this.timer.unref();
  }
}
