import { pino, type Logger } from "pino";
import { PinoPretty } from "pino-pretty";
import { ConfigError } from "../config.js";

/**
 * The commands' logger: JSON lines (for log collectors) unless LOG_FORMAT says `pretty` or,
 * when it is unset, stdout is a terminal (a person is reading).
 */
export function commandLogger(level: string, format: string | undefined): Logger {
  if (format !== undefined && format !== "json" && format !== "pretty") throw new ConfigError(`LOG_FORMAT must be json or pretty, got "${format}"`);
  const pretty = format === "pretty" || (format === undefined && process.stdout.isTTY === true);
  if (!pretty) return pino({ level });
  return pino({ level }, PinoPretty({ colorize: process.stdout.isTTY === true, translateTime: "SYS:HH:MM:ss.l", ignore: "pid,hostname", singleLine: true }));
}
