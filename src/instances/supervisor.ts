import type { DatabasePool } from "slonik";
import type { Logger } from "pino";
import { transitions, type RunOutcome } from "../lifecycle/index.js";
import { stopWithGrace, type RunningProcess } from "../runner/index.js";
import * as repo from "./repository.js";

/** After SIGTERM, how long a process gets before SIGKILL. */
const TERM_GRACE_MS = 2_000;

interface Tracked {
  process: RunningProcess;
  timer: NodeJS.Timeout;
  /** Why the environment is ending the process, if it is; decides the final status. */
  verdict: RunOutcome["verdict"];
  settled: Promise<void>;
}

/**
 * Watches the processes this environment launched: exit observed from the runner's exit
 * promise (the child's exit event), the execution timeout enforced by a timer. Every run's
 * exit code, stderr tail and metrics are recorded; an instance that had not settled itself
 * is settled (crashed / timeout / cancelled) in the same guarded statement.
 */
export class Supervisor {
  private readonly tracked = new Map<string, Tracked>();

  constructor(
    private readonly db: DatabasePool,
    private readonly logger: Logger,
  ) {}

  track(instanceId: string, process: RunningProcess, deadlineMs: number): void {
    const timer = setTimeout(() => void this.expire(instanceId), Math.max(0, deadlineMs - Date.now()));
    timer.unref();
    const entry: Tracked = { process, timer, verdict: "crashed", settled: Promise.resolve() };
    entry.settled = process.exited.then(
      (exit) => this.settle(instanceId, entry, { exitCode: exit.exitCode, stderrTail: exit.stderrTail, ...exit.metrics }),
      (e: unknown) => {
        this.logger.error({ err: e, instanceId }, "could not observe process exit");
        return this.settle(instanceId, entry, { exitCode: null, stderrTail: "", memoryPeakBytes: undefined, cpuUsageUsec: undefined });
      },
    );
    this.tracked.set(instanceId, entry);
  }

  isTracked(instanceId: string): boolean {
    return this.tracked.has(instanceId);
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
    const exited = (ms: number) =>
      Promise.race([entry.settled.then(() => true), new Promise<boolean>((r) => setTimeout(() => r(false), ms).unref())]);
    if (!(await exited(graceMs))) {
      await stopWithGrace(entry.process, TERM_GRACE_MS).catch((e: unknown) => this.logger.warn({ err: e, instanceId }, "could not kill the process"));
    }
    await entry.settled;
    return true;
  }

  /** Stops watching without touching the processes (environment shutdown: workflows keep running). */
  detachAll(): void {
    for (const entry of this.tracked.values()) clearTimeout(entry.timer);
    this.tracked.clear();
  }

  /** Waits until every tracked process's exit has been recorded. */
  async drain(): Promise<void> {
    await Promise.all([...this.tracked.values()].map((e) => e.settled));
  }

  private async expire(instanceId: string) {
    this.logger.warn({ instanceId }, "execution timeout: killing the instance");
    await this.stop(instanceId, 0, "timeout");
  }

  private async settle(instanceId: string, entry: Tracked, exit: Omit<RunOutcome, "verdict">) {
    clearTimeout(entry.timer);
    try {
      const status = await transitions.recordRunEnd(this.db, instanceId, { ...exit, verdict: entry.verdict });
      await repo.deleteRunningProcess(this.db, instanceId, entry.process.pid);
      this.logger.info({ instanceId, exitCode: exit.exitCode, status }, "process exited");
    } catch (e) {
      this.logger.error({ err: e, instanceId }, "could not record the process exit");
    } finally {
      if (this.tracked.get(instanceId) === entry) this.tracked.delete(instanceId);
    }
  }
}
