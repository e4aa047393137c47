import type { Logger } from "pino";
import { MaintenanceLoop } from "./maintenance-loop.js";

export interface HeartbeatMonitorOptions {
  /** A RUNNING instance silent for longer than this is killed and FAILED. @default 120000 */
  timeoutMs: number;
  /** How often to check. @default 15000 */
  intervalMs: number;
}

/**
 * Periodically enforces heartbeats. Liveness is `instances.heartbeat_at`, refreshed by any
 * instance call (the SDK also sends background heartbeats), never an ever-growing event log.
 * Every replica checks (each kills only its own silent processes; failing orphans is one
 * guarded statement), on a MaintenanceLoop: first check offset randomly, no overlapping passes.
 */
export class HeartbeatMonitor {
  private readonly loop: MaintenanceLoop;

  constructor(
    enforce: (timeoutMs: number) => Promise<void>,
    logger: Logger,
    options: HeartbeatMonitorOptions,
  ) {
    this.loop = new MaintenanceLoop(() => enforce(options.timeoutMs), logger, options.intervalMs);
  }

  start(): void {
    this.loop.start();
  }

  stop(): Promise<void> {
    return this.loop.stop();
  }
}
