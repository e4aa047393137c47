import type { SdkLogger } from "./logger.js";
import { backoff } from "./timers.js";

/**
 * Background heartbeats on an unref'd timer chain (never overlapping). A failed heartbeat is
 * logged and retried sooner, with backoff up to the interval; it never reaches the workflow.
 * Note: heartbeats run on the event loop, so synchronous CPU work that never awaits starves
 * them — yield (await) now and then in long loops.
 */
export class Heartbeater {
  private timer: NodeJS.Timeout | undefined;
  private running = false;
  private failures = 0;

  constructor(
    private readonly beat: () => Promise<void>,
    private readonly intervalMs: number,
    private readonly logger: SdkLogger,
  ) {}

  start(): void {
    if (this.running) return;
    this.running = true;
    this.schedule(this.intervalMs);
  }

  stop(): void {
    this.running = false;
    clearTimeout(this.timer);
    this.timer = undefined;
  }

  private schedule(ms: number): void {
    if (!this.running) return;
    this.timer = setTimeout(() => void this.tick(), ms);
    this.timer.unref();
  }

  private async tick(): Promise<void> {
    try {
      await this.beat();
      if (this.failures > 0) this.logger.info("heartbeat recovered", { failures: this.failures });
      this.failures = 0;
      this.schedule(this.intervalMs);
    } catch (err) {
      this.failures++;
      if (this.failures === 1 || this.failures % 10 === 0) {
        this.logger.warn("heartbeat failed; retrying", { failures: this.failures, error: err });
      }
      this.schedule(backoff(this.failures, 500, this.intervalMs));
    }
  }
}
