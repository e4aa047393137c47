import { Code, ConnectError } from "@connectrpc/connect";
import type { CustomSignal, Signal } from "../../gen/runtara/core/v1/types_pb.js";
import type { InstanceClient } from "./client.js";
import type { SdkLogger } from "./logger.js";
import type { RuntimeSettings, SignalMode } from "./settings.js";
import { backoff, delay } from "./timers.js";

/** Receives what the channel hears; the runtime decides what it means. */
export interface SignalSink {
  onSignal(signal: Signal | undefined): void;
  onCustom(signal: CustomSignal | undefined): void;
  /** Wait points somebody is waiting on right now (polling asks core about each). */
  waitPoints(): Iterable<string>;
}

/**
 * Delivers signals to the runtime. Watch mode keeps one WatchSignals stream open
 * (include_custom) and reconnects with capped backoff; core re-sends whatever is still
 * pending on every subscription, so nothing is lost across a reconnect. After
 * `watchMaxFailures` consecutive stream failures while core answers PollSignal (or on
 * UNIMPLEMENTED) it switches to polling for the rest of the run; a core outage alone
 * never does. Poll mode calls PollSignal every `pollIntervalMs`, once per active
 * wait point (or once without one).
 */
export class SignalChannel {
  private readonly abort = new AbortController();
  private loop: Promise<void> | undefined;
  private modeNow: SignalMode;
  private lastPollError: unknown;

  constructor(
    private readonly client: InstanceClient,
    private readonly settings: RuntimeSettings,
    private readonly sink: SignalSink,
    private readonly logger: SdkLogger,
  ) {
    this.modeNow = settings.signalMode;
  }

  /** The mode in use: "poll" after a fallback even if "watch" was asked for. */
  get mode(): SignalMode {
    return this.modeNow;
  }

  start(): void {
    this.loop ??= this.run().catch((err: unknown) => {
      if (!this.abort.signal.aborted) this.logger.error("signal channel stopped unexpectedly", { error: err });
    });
  }

  /** Closes the stream / stops polling. Idempotent. */
  stop(): void {
    this.abort.abort();
  }

  /**
   * Asks core once for the pending signal and the custom signal of `checkpointId`: a wait
   * that starts while the stream is reconnecting (or after the payload was pushed) does not
   * have to wait for the next push.
   */
  async pollFor(checkpointId: string): Promise<void> {
    if (this.abort.signal.aborted) return;
    try {
      const res = await this.client.pollSignal(
        { instanceId: this.settings.instanceId, checkpointId },
        { signal: this.abort.signal },
      );
      this.sink.onSignal(res.signal);
      this.sink.onCustom(res.customSignal);
    } catch (err) {
      // The watch stream or the poll loop delivers it later; this was only a shortcut.
      this.logger.debug("PollSignal failed", { checkpointId, error: err });
    }
  }

  private async run(): Promise<void> {
    if (this.modeNow === "watch") await this.watch();
    if (this.abort.signal.aborted) return;
    this.modeNow = "poll";
    await this.poll();
  }

  private async watch(): Promise<void> {
    const s = this.settings;
    let failures = 0; // consecutive failed attempts, for the reconnect delay
    let streamFailures = 0; // ...of which core answered unary calls: streaming itself is broken
    while (!this.abort.signal.aborted) {
      const openedAt = Date.now();
      let problem: unknown;
      try {
        const stream = this.client.watchSignals(
          { instanceId: s.instanceId, includeCustom: true },
          { signal: this.abort.signal, timeoutMs: 0 },
        );
        for await (const msg of stream) {
          failures = 0;
          streamFailures = 0;
          this.sink.onSignal(msg.signal);
          this.sink.onCustom(msg.customSignal);
        }
        problem = new Error("WatchSignals stream ended");
      } catch (err) {
        problem = err;
      }
      if (this.abort.signal.aborted) return;
      if (problem instanceof ConnectError && problem.code === Code.Unimplemented) {
        this.logger.warn("core does not offer WatchSignals; polling instead", { error: problem });
        return;
      }
      if (Date.now() - openedAt >= s.watchStableMs) failures = streamFailures = 0;
      failures++;
      // One poll per failed attempt: it delivers what is pending while the stream is down,
      // and tells a core outage (poll fails too: keep trying to watch) from a path that
      // cannot stream (poll works: after watchMaxFailures, poll for the rest of the run).
      if (await this.pollOnce(Math.min(s.requestTimeoutMs, 2_000))) streamFailures++;
      if (streamFailures >= s.watchMaxFailures) {
        this.logger.warn("WatchSignals keeps failing while core answers; polling instead", {
          failures: streamFailures,
          error: problem,
        });
        return;
      }
      this.logger.debug("WatchSignals interrupted; reconnecting", { failures, error: problem });
      try {
        await delay(backoff(failures, s.watchBackoffInitialMs, s.watchBackoffMaxMs), {
          signal: this.abort.signal,
          unref: true,
        });
      } catch {
        return; // stopped
      }
    }
  }

  /** PollSignal once (per active wait point); true when core answered. */
  private async pollOnce(timeoutMs?: number): Promise<boolean> {
    try {
      const points = [...this.sink.waitPoints()];
      for (const checkpointId of points.length > 0 ? points : [""]) {
        const res = await this.client.pollSignal(
          { instanceId: this.settings.instanceId, checkpointId },
          { signal: this.abort.signal, ...(timeoutMs === undefined ? {} : { timeoutMs }) },
        );
        this.sink.onSignal(res.signal);
        this.sink.onCustom(res.customSignal);
      }
      return true;
    } catch (err) {
      this.lastPollError = err;
      return false;
    }
  }

  private async poll(): Promise<void> {
    const s = this.settings;
    let failures = 0;
    while (!this.abort.signal.aborted) {
      if (await this.pollOnce()) {
        failures = 0;
      } else {
        if (this.abort.signal.aborted) return;
        failures++;
        if (failures === 1 || failures % 10 === 0) {
          this.logger.warn("PollSignal failed; retrying", { failures, error: this.lastPollError });
        }
      }
      try {
        await delay(failures === 0 ? s.pollIntervalMs : backoff(failures, s.pollIntervalMs, 10_000), {
          signal: this.abort.signal,
          unref: true,
        });
      } catch {
        return; // stopped
      }
    }
  }
}
