import type { Logger } from "pino";

interface Runnable {
  start(): Promise<void>;
  stop(): Promise<void>;
}

/**
 * Starts `target` and stops it on SIGINT/SIGTERM: the first signal stops gracefully, a second
 * one exits at once. The only place that installs signal handlers or calls process.exit.
 */
export async function runUntilSignalled(target: Runnable, logger: Logger): Promise<void> {
  try {
    await target.start();
  } catch (e) {
    logger.fatal({ err: e }, "startup failed");
    process.exitCode = 1;
    return;
  }
  let stopping = false;
  const onSignal = (signal: NodeJS.Signals) => {
    if (stopping) {
      logger.warn({ signal }, "second signal, exiting now");
      process.exit(130);
    }
    stopping = true;
    logger.info({ signal }, "shutting down");
    target.stop().then(
      () => {
        process.off("SIGINT", onSignal);
        process.off("SIGTERM", onSignal);
      },
      (e: unknown) => {
        logger.error({ err: e }, "shutdown failed");
        process.exitCode = 1;
      },
    );
  };
  process.on("SIGINT", onSignal);
  process.on("SIGTERM", onSignal);
}
