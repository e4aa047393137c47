import type { DatabasePool } from "slonik";
import type { Logger } from "pino";
import type { ChannelHub } from "../db/index.js";
import { isStatus, isTerminal, transitions, type RunOutcome, type Status } from "../lifecycle/index.js";
import { stopWithGrace, type RunningProcess } from "../runner/index.js";

/** After SIGTERM, how long a process gets before SIGKILL. */
const TERM_GRACE_MS = 2_000;
/**
 * A process whose instance was CANCELLED elsewhere (a stop on another replica, which already
 * waited its grace) gets this long to exit on its own, then SIGTERM and 1 s before SIGKILL.
 */
const CANCELLED_EXIT_MS = 500;
/** A process whose instance completed or failed gets this long to exit before it is stopped. */
const FINISHED_EXIT_MS = 10_000;

/** What a status hint ("<id> <status>") says: the new status, or "unknown" (a reconnect: read the row). */
type Hint = Status | "unknown";

function hintOf(payload: string): Hint {
  const status = payload.split(" ")[1];
  return status !== undefined && isStatus(status) ? status : "unknown";
}

/** See Supervisor.listen. */
export interface StatusListener {
  close(): void;
}

/** Until track takes it over, keeps the first hint that matters: a terminal status, else "unknown". */
class HintListener implements StatusListener {
  heard: Hint | undefined;
  unsubscribe = () => {};
  onHint = (hint: Hint) => {
    if (hint === "unknown") this.heard ??= hint;
    else if (isTerminal(hint) && (this.heard === undefined || this.heard === "unknown")) this.heard = hint;
  };

  close(): void {
    this.unsubscribe();
  }
}

interface Tracked {
  runId: string;
  process: RunningProcess;
  timer: NodeJS.Timeout;
  /** Why the environment is ending the process, if it is; decides the final status. */
  verdict: RunOutcome["verdict"];
  settled: Promise<void>;
  unsubscribe: () => void;
  /** Set once a terminal status was seen and the process is being ended. */
  ending: boolean;
}

/**
 * Watches the processes this environment launched: exit observed from the runner's exit
 * promise (the child's exit event), the execution timeout enforced by a timer. Every run's
 * exit code, stderr tail and metrics are recorded; an instance that had not settled itself
 * is settled (crashed / timeout / cancelled) in the same statement, guarded by the run id.
 * A process whose instance turned terminal without it (cancelled by another replica,
 * completed but lingering) is stopped: a stop reaches the process wherever it was sent.
 */
export class Supervisor {
  private readonly tracked = new Map<string, Tracked>();

  constructor(
    private readonly db: DatabasePool,
    /** Wakes on every status change of an instance (NOTIFY runtara_instance). */
    private readonly statusChanges: ChannelHub,
    private readonly logger: Logger,
  ) {}

  /**
   * Subscribes to the instance's status hints before its run is recorded: handed to track
   * with the status the record read, it replaces track's read of the row (a change committed
   * after the record is heard here, one before it is in that status). close() it if the run
   * is not tracked after all.
   */
  listen(instanceId: string): StatusListener {
    const listener = new HintListener();
    listener.unsubscribe = this.statusChanges.subscribe(instanceId, (payload) => listener.onHint(hintOf(payload)));
    return listener;
  }

  /**
   * `recorded`: the listener opened before the run was recorded and the status the record
   * read (null: the row was gone). Without it (adoption), the row is read once now: a change
   * before the subscription (a row settled while an adopted process was unwatched) sent its
   * notification to nobody.
   */
  track(instanceId: string, runId: string, process: RunningProcess, deadlineMs: number, recorded?: { listener: StatusListener; status: Status | null }): void {
    const previous = this.tracked.get(instanceId);
    if (previous) this.forget(instanceId, previous);
    const timer = setTimeout(() => void this.expire(instanceId), Math.max(0, deadlineMs - Date.now()));
    timer.unref();
    const entry: Tracked = { runId, process, timer, verdict: "crashed", settled: Promise.resolve(), unsubscribe: () => {}, ending: false };
    // Only a terminal status matters; a hint without one (a reconnect) needs the row read.
    // Terminal statuses are final, so a hint naming one needs no read.
    const onHint = (hint: Hint) => void (hint === "unknown" ? this.endIfTerminal(instanceId, entry) : this.endOnTerminal(instanceId, entry, hint));
    const listener = (recorded?.listener ?? this.listen(instanceId)) as HintListener;
    const first = listener.heard ?? recorded?.status ?? "unknown";
    listener.onHint = onHint;
    entry.unsubscribe = () => listener.close();
    entry.settled = process.exited.then(
      (exit) => this.settle(instanceId, entry, { exitCode: exit.exitCode, signal: exit.signal, stderrTail: exit.stderrTail, ...exit.metrics }),
      (e: unknown) => {
        this.logger.error({ err: e, instanceId }, "could not observe process exit");
        return this.settle(instanceId, entry, { exitCode: null, signal: null, stderrTail: "", memoryPeakBytes: undefined, cpuUsageUsec: undefined });
      },
    );
    this.tracked.set(instanceId, entry);
    onHint(first);
  }

  isTracked(instanceId: string): boolean {
    return this.tracked.has(instanceId);
  }

  /** Resolves once the tracked run of the instance has been settled, or after `ms`; true if it was. */
  async waitForExit(instanceId: string, ms: number): Promise<boolean> {
    const entry = this.tracked.get(instanceId);
    if (!entry) return true;
    return Promise.race([entry.settled.then(() => true), new Promise<boolean>((r) => setTimeout(() => r(false), ms).unref())]);
  }

  /**
   * Ends a tracked process: waits up to graceMs for it to exit on its own (after a CANCEL),
   * then SIGTERM, then SIGKILL. Resolves once the exit has been recorded; false when the
   * instance has no process here.
   */
  async stop(instanceId: string, graceMs: number, verdict: RunOutcome["verdict"] = "cancelled"): Promise<boolean> {
    const entry = this.tracked.get(instanceId);
    if (!entry) return false;
    entry.verdict = verdict;
    await this.end(instanceId, entry, graceMs, TERM_GRACE_MS);
    return true;
  }

  /** Stops watching without touching the processes (environment shutdown: workflows keep running). */
  detachAll(): void {
    for (const [instanceId, entry] of this.tracked) this.forget(instanceId, entry);
  }

  /** Waits until every tracked process's exit has been recorded. */
  async drain(): Promise<void> {
    await Promise.all([...this.tracked.values()].map((e) => e.settled));
  }

  private async end(instanceId: string, entry: Tracked, exitWithinMs: number, termGraceMs: number) {
    const exited = (ms: number) =>
      Promise.race([entry.settled.then(() => true), new Promise<boolean>((r) => setTimeout(() => r(false), ms).unref())]);
    if (!(await exited(exitWithinMs))) {
      await stopWithGrace(entry.process, termGraceMs).catch((e: unknown) => this.logger.warn({ err: e, instanceId }, "could not kill the process"));
    }
    await entry.settled;
  }

  private async endIfTerminal(instanceId: string, entry: Tracked) {
    if (entry.ending || this.tracked.get(instanceId) !== entry) return;
    let status;
    try {
      status = await transitions.currentStatus(this.db, instanceId);
    } catch (e) {
      this.logger.warn({ err: e, instanceId }, "could not read the status of a supervised instance");
      return;
    }
    if (status !== null) await this.endOnTerminal(instanceId, entry, status);
  }

  private async endOnTerminal(instanceId: string, entry: Tracked, status: Status) {
    if (!isTerminal(status) || entry.ending || this.tracked.get(instanceId) !== entry) return;
    entry.ending = true;
    const cancelled = status === "cancelled";
    if (cancelled) entry.verdict = "cancelled";
    await this.end(instanceId, entry, cancelled ? CANCELLED_EXIT_MS : FINISHED_EXIT_MS, cancelled ? 1_000 : TERM_GRACE_MS);
  }

  private async expire(instanceId: string) {
    this.logger.warn({ instanceId }, "execution timeout: killing the instance");
    await this.stop(instanceId, 0, "timeout");
  }

  private forget(instanceId: string, entry: Tracked) {
    clearTimeout(entry.timer);
    entry.unsubscribe();
    if (this.tracked.get(instanceId) === entry) this.tracked.delete(instanceId);
  }

  /**
   * Records the run's end. A failed write (database down) is retried with backoff for as long
   * as the run is watched: until it is written, the run's row blocks a relaunch of the
   * instance. After a restart, recovery settles a row whose process is gone.
   */
  private async settle(instanceId: string, entry: Tracked, exit: Omit<RunOutcome, "verdict">) {
    clearTimeout(entry.timer);
    entry.unsubscribe();
    try {
      for (let attempt = 0; ; attempt++) {
        try {
          const status = await transitions.recordRunEnd(this.db, instanceId, entry.runId, { ...exit, verdict: entry.verdict });
          this.logger.info({ instanceId, runId: entry.runId, exitCode: exit.exitCode, status }, "process exited");
          return;
        } catch (e) {
          if (this.tracked.get(instanceId) !== entry) return; // detached: recovery settles it after a restart
          const delayMs = Math.min(250 * 2 ** attempt, 10_000);
          this.logger.error({ err: e, instanceId, attempt, delayMs }, "could not record the process exit; retrying");
          await new Promise((r) => setTimeout(r, delayMs).unref());
        }
      }
    } finally {
      if (this.tracked.get(instanceId) === entry) this.tracked.delete(instanceId);
    }
  }
}
