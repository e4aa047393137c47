import type { Logger } from "pino";

type LoopState = "created" | "running" | "stopping" | "stopped";

/**
 * The timer half of a maintenance worker: calls `tick` every `intervalMs`, the first time
 * after a random offset within the interval (replicas started together do not tick in
 * lockstep). Ticks never overlap: the next one is armed only after the previous settled.
 * `tick` is expected to log its own errors; anything that still escapes is logged here and
 * never reaches the timer. stop() clears the timer, aborts `signal` (long passes check it
 * between batches) and waits for the tick in flight.
 */
export class MaintenanceLoop {
  private state: LoopState = "created";
  private timer: NodeJS.Timeout | undefined;
  private inFlight: Promise<void> = Promise.resolve();
  private controller = new AbortController();

  constructor(
    private readonly tick: (signal: AbortSignal) => Promise<unknown>,
    private readonly logger: Logger,
    private readonly intervalMs: number,
  ) {}

  /** Aborted while stop() is in progress; a fresh signal afterwards. */
  get signal(): AbortSignal {
    return this.controller.signal;
  }

  get running(): boolean {
    return this.state === "running";
  }

  /** Idempotent: a second call while running does nothing. May be called again after stop(). */
  start(): void {
    if (this.state === "running") return;
    if (this.state === "stopping") throw new Error("cannot start a maintenance loop while it is stopping");
    this.state = "running";
    this.arm(Math.random() * this.intervalMs);
  }

  /** Idempotent. Also waits for (and aborts) a runOnce() pass in flight when never started. */
  async stop(): Promise<void> {
    const wasRunning = this.state === "running";
    if (wasRunning) this.state = "stopping";
    clearTimeout(this.timer);
    this.timer = undefined;
    const controller = this.controller;
    controller.abort();
    await this.inFlight;
    if (this.controller === controller) this.controller = new AbortController();
    if (wasRunning) this.state = "stopped";
  }

  /**
   * Runs `pass` after any pass in flight (timer or caller), never concurrently with it.
   * Used by the workers' runOnce(), so a test or an operator call cannot overlap a tick.
   */
  exclusive<T>(pass: () => Promise<T>): Promise<T> {
    const run = this.inFlight.then(pass);
    this.inFlight = run.then(
      () => undefined,
      () => undefined,
    );
    return run;
  }

  private arm(delayMs: number) {
    this.timer = setTimeout(() => {
      this.timer = undefined;
      void this.exclusive(() => this.tick(this.signal))
        .catch((e: unknown) => this.logger.error({ err: e }, "maintenance pass failed"))
        .finally(() => {
          if (this.state === "running") this.arm(this.intervalMs);
        });
    }, delayMs);
    this.timer.unref();
  }
}
