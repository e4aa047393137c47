import type { Logger } from "pino";

type State = "created" | "starting" | "running" | "stopping" | "stopped";

/** Thrown by start() when stop() was called before start() finished. */
export class StoppedDuringStart extends Error {
  constructor() {
    super("stopped before start completed");
    this.name = "StoppedDuringStart";
  }
}

/**
 * The life of a composed service (the environment, a standalone core): start() runs the
 * start sequence, each step registering how to undo it; stop() undoes them in reverse. A stop
 * during start is honoured: the sequence ends at its next step, undoes what it had started,
 * and start() rejects with StoppedDuringStart. A failed start undoes itself the same way.
 */
export class Startup {
  private state: State = "created";
  private readonly teardown: { what: string; run: () => Promise<void> | void }[] = [];
  private readonly stopRequested = new AbortController();
  private starting: Promise<void> | undefined;
  private stopping: Promise<void> | undefined;

  constructor(private readonly logger: Logger) {}

  get isRunning(): boolean {
    return this.state === "running";
  }

  /** Runs `sequence` once; it calls the methods below for each step. */
  start(sequence: () => Promise<void>): Promise<void> {
    if (this.state !== "created") return Promise.reject(new Error(`cannot start: already ${this.state}`));
    this.state = "starting";
    this.starting = (async () => {
      try {
        await sequence();
        this.checkNotStopped();
        this.state = "running";
      } catch (e) {
        await this.release();
        this.state = "stopped";
        throw e;
      }
    })();
    return this.starting;
  }

  /** Idempotent; waits for a start in progress to unwind. */
  stop(): Promise<void> {
    this.stopping ??= (async () => {
      if (this.state === "starting") {
        this.stopRequested.abort();
        await this.starting?.catch(() => undefined);
        return;
      }
      if (this.state === "running") {
        this.state = "stopping";
        await this.release();
      }
      this.state = "stopped";
    })();
    return this.stopping;
  }

  /** Registers how to undo a step, then ends the sequence if a stop was requested meanwhile. */
  onStop(what: string, run: () => Promise<void> | void): void {
    this.teardown.push({ what, run });
    this.checkNotStopped();
  }

  /** `onStop` for a value just created: registers its teardown and returns it. */
  own<T>(what: string, value: T, undo: (value: T) => Promise<void> | void): T {
    this.onStop(what, () => undo(value));
    return value;
  }

  /** Ends the sequence if a stop was requested (call between steps that register nothing). */
  checkNotStopped(): void {
    if (this.stopRequested.signal.aborted) throw new StoppedDuringStart();
  }

  /** Undoes the steps in reverse. A step that fails is logged and the rest still run. */
  private async release() {
    for (let step = this.teardown.pop(); step !== undefined; step = this.teardown.pop()) {
      try {
        await step.run();
      } catch (e) {
        this.logger.error({ err: e }, `could not ${step.what}`);
      }
    }
  }
}
