import { pino, type Logger } from "pino";
import { PinoPretty } from "pino-pretty";
import { ConfigError } from "../config.js";

/**
 * The commands' logger: JSON lines (for log collectors, written asynchronously) unless LOG_FORMAT says `pretty` or,
 * when it is unset, stdout is a terminal (a person is reading).
 */
export function commandLogger(level: string, format: string | undefined): Logger {
  if (format !== undefined && format !== "json" && format !== "pretty") throw new ConfigError(`LOG_FORMAT must be json or pretty, got "${format}"`);
  const pretty = format === "pretty" || (format === undefined && process.stdout.isTTY === true);
  if (!pretty) {
    // Written by libuv off this event loop's critical path (a synchronous write per RPC line
    // cost the hot path); whatever is still buffered is written out when the process exits.
    const destination = pino.destination({ dest: 1, sync: false });
    process.once("exit", () => {
      try {
        destination.flushSync();
      } catch {
        // stdout is gone (closed pipe): nothing can be written anyway
      }
    });
    return pino({ level }, destination);
  }
  return pino({ level }, PinoPretty({ colorize: process.stdout.isTTY === true, translateTime: "SYS:HH:MM:ss.l", ignore: "pid,hostname", singleLine: true }));
}
