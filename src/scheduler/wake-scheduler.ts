import type { DatabasePool } from "slonik";
import type { Logger } from "pino";
import type { Listener } from "../db/index.js";
import { transitions, type ClaimedWake } from "../lifecycle/index.js";

export interface WakeSchedulerOptions {
  /** Safety-net query for the earliest wake time, in ms. @default 5000 */
  reconcileIntervalMs: number;
  /** Wakes claimed per statement. @default 100 */
  batchSize: number;
  /** Recorded as the claimer, so this replica relaunches its own claims after a restart. */
  replicaId: string;
  /**
   * Wake launches in flight at most: 10,000 sleepers due at once are claimed and launched in
   * waves, not as 10,000 simultaneous processes. Only what can launch now is claimed, so a
   * claim never waits in a queue (where it could outlive the PENDING timeout). @default 32
   */
  maxConcurrentLaunches: number;
  /** Records how late each wake was claimed, in seconds. */
  wakeLag: { observe(seconds: number): void };
}

type State = "created" | "running" | "stopping" | "stopped";

/**
 * Relaunches sleeping instances at their wake time. Precision comes from one in-memory
 * timer armed for the earliest known wake; a NOTIFY on `runtara_sleep` (sent by a trigger
 * when an instance goes to sleep) re-arms it for an earlier wake; a reconcile query every
 * few seconds is the safety net (and the only query while nothing is due). Claiming is one
 * FOR UPDATE SKIP LOCKED statement, so with several environments each wake fires once.
 */
export class WakeScheduler {
  private state: State = "created";
  private timer: NodeJS.Timeout | undefined;
  private armedFor: number | undefined;
  private reconcileTimer: NodeJS.Timeout | undefined;
  private pass: Promise<void> = Promise.resolve();
  private again = false;
  private readonly unsubscribe: (() => void)[] = [];
  private readonly launching = new Set<Promise<void>>();
  private waitingForRoom = false;

  constructor(
    private readonly db: DatabasePool,
    private readonly listener: Listener,
    private readonly wake: (claimed: ClaimedWake) => Promise<void>,
    private readonly logger: Logger,
    private readonly options: WakeSchedulerOptions,
  ) {}

  /** Starts listening and runs a pass at once (sleeps that came due while nobody ran fire now). */
  start(): void {
    if (this.state !== "created") throw new Error(`wake scheduler is ${this.state}`);
    this.state = "running";
    this.unsubscribe.push(
      this.listener.on("runtara_sleep", (payload) => {
        const wakeAt = Number(payload.split(" ")[1]);
        if (Number.isFinite(wakeAt)) this.arm(wakeAt);
      }),
      this.listener.onReconnect(() => this.trigger()),
    );
    const reconcile = () => {
      this.reconcileTimer = setTimeout(() => {
        this.trigger();
        reconcile();
      }, this.options.reconcileIntervalMs);
      this.reconcileTimer.unref();
    };
    reconcile();
    this.trigger();
    this.logger.info({ reconcileIntervalMs: this.options.reconcileIntervalMs }, "wake scheduler started");
  }

  /** Stops timers and waits for the pass in flight and the launches it started. */
  async stop(): Promise<void> {
    if (this.state !== "running") return;
    this.state = "stopping";
    clearTimeout(this.timer);
    clearTimeout(this.reconcileTimer);
    for (const u of this.unsubscribe) u();
    await this.pass;
    await Promise.all(this.launching);
    this.state = "stopped";
  }

  private arm(wakeAtMs: number) {
    if (this.state !== "running") return;
    if (this.armedFor !== undefined && this.armedFor <= wakeAtMs) return;
    // Timers beyond the reconcile interval are left to the reconcile pass.
    if (wakeAtMs - Date.now() > this.options.reconcileIntervalMs) return;
    clearTimeout(this.timer);
    this.armedFor = wakeAtMs;
    this.timer = setTimeout(() => {
      this.armedFor = undefined;
      this.trigger();
    }, Math.max(0, wakeAtMs - Date.now()));
    this.timer.unref();
  }

  /** Runs one claim pass; passes never overlap (a trigger during a pass runs one more). */
  private trigger() {
    if (this.state !== "running") return;
    if (this.again) return;
    this.again = true;
    this.pass = this.pass.then(async () => {
      this.again = false;
      if (this.state !== "running") return;
      try {
        await this.claimAll();
        const next = await transitions.nextWakeAt(this.db);
        if (next !== null) this.arm(next);
      } catch (e) {
        this.logger.error({ err: e }, "wake pass failed; the next reconcile retries");
      }
    });
  }

  private async claimAll() {
    for (;;) {
      const room = Math.min(this.options.batchSize, this.options.maxConcurrentLaunches - this.launching.size);
      if (room <= 0) {
        // Full: the next launch to finish runs another pass.
        this.waitingForRoom = true;
        return;
      }
      const claimed = await transitions.claimDueWakes(this.db, room, this.options.replicaId);
      // Launches run on while the pass ends and the timer is re-armed: a wake that comes due
      // during a slow launch is claimed on time instead of waiting for it (bench/wake).
      for (const c of claimed) {
        const lagMs = Date.now() - c.wakeAtMs;
        this.options.wakeLag.observe(Math.max(0, lagMs) / 1000);
        this.logger.info({ instanceId: c.target.instanceId, lagMs, attempt: c.attempt }, "waking instance");
        const launch = this.wake(c)
          .catch((e: unknown) => this.logger.error({ err: e, instanceId: c.target.instanceId }, "wake failed"))
          .finally(() => {
            this.launching.delete(launch);
            if (this.waitingForRoom) {
              this.waitingForRoom = false;
              this.trigger();
            }
          });
        this.launching.add(launch);
      }
      if (claimed.length < room) return;
    }
  }
}
