import type { Logger } from "pino";
import { ConfigError, readEnvironmentOptions, type EnvironmentOptions } from "../config.js";
import { VERSION } from "../package.js";
import { commandLogger } from "./logger.js";

interface Runnable {
  start(): Promise<void>;
  stop(): Promise<void>;
  /** Re-reads what may change while running (SIGHUP). */
  reload?(): Promise<void>;
}

/**
 * The whole life of a command: options from the environment variables (an invalid one
 * exits 2 naming it), build the target, run it until a signal stops it.
 */
export async function runCommand(
  name: string,
  create: (options: EnvironmentOptions & { logger: Logger }) => Runnable & { logger: Logger },
): Promise<void> {
  // Configured by environment variables only: an argument is a question (--help, --version) or a mistake.
  const args = process.argv.slice(2);
  if (args.includes("--help") || args.includes("-h")) {
    process.stdout.write(`usage: ${name}\n\nRuns until SIGINT or SIGTERM (SIGHUP reloads the API keys). Configured by environment variables\n(DATA_DIR, RUNTARA_DATABASE_URL, RUNTARA_ENV_HTTP_PORT, RUNTARA_CORE_ADDR, RUNTARA_API_KEYS_FILE, ...):\nsee the Configuration table in the package's README.md. Defaults serve on 127.0.0.1 only.\n`);
    return;
  }
  if (args.includes("--version")) {
    process.stdout.write(`${VERSION}\n`);
    return;
  }
  if (args.length > 0) {
    process.stderr.write(`${name}: takes no arguments (got ${JSON.stringify(args[0])}); it is configured by environment variables, see --help\n`);
    process.exit(2);
  }
  let target: Runnable & { logger: Logger };
  try {
    const options = readEnvironmentOptions(process.env);
    const format = process.env.LOG_FORMAT === "" ? undefined : process.env.LOG_FORMAT;
    target = create({ ...options, logger: commandLogger(options.logLevel ?? "info", format) });
  } catch (e) {
    if (e instanceof ConfigError) {
      process.stderr.write(`${name}: invalid configuration: ${e.message}\n`);
      process.exit(2);
    }
    throw e;
  }
  await runUntilSignalled(name, target, target.logger);
}

/**
 * Starts `target` and stops it on SIGINT/SIGTERM: the first signal stops gracefully, a second
 * one exits at once; SIGHUP reloads. The only place that installs signal handlers or calls process.exit.
 */
async function runUntilSignalled(name: string, target: Runnable, logger: Logger): Promise<void> {
  try {
    await target.start();
  } catch (e) {
    // Configuration read at start (the API keys file, TLS files) exits 2 like the variables do.
    if (e instanceof ConfigError) {
      process.stderr.write(`${name}: invalid configuration: ${e.message}\n`);
      process.exit(2);
    }
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
  stopWhenNpmExits(() => onSignal("SIGTERM"), logger);
  const reload = target.reload?.bind(target);
  if (reload) process.on("SIGHUP", () => void reload());
}

/**
 * `npm start` does not pass SIGTERM on: npm exits and leaves its script running, so whoever
 * stops npm by its pid (a supervisor, `kill <pid>`) would leave this server running, detached,
 * holding its ports. Started by an npm script, the server stops, gracefully, once npm is gone.
 */
function stopWhenNpmExits(stop: () => void, logger: Logger): void {
  if (process.env.npm_lifecycle_event === undefined) return;
  const npmPid = process.ppid;
  const timer = setInterval(() => {
    if (process.ppid === npmPid) return;
    clearInterval(timer);
    logger.warn({ npmPid }, "npm, which started this server, has exited (npm does not pass SIGTERM on); shutting down");
    stop();
  }, 1_000);
  timer.unref();
}
