import { pino } from "pino";
import { ConfigError, readEnvironmentOptions } from "../config.js";
import { StandaloneCore } from "../core/standalone.js";
import { runUntilSignalled } from "./signals.js";

let core: StandaloneCore;
try {
  const options = readEnvironmentOptions(process.env);
  core = new StandaloneCore({ ...options, logger: pino({ level: options.logLevel ?? "info" }) });
} catch (e) {
  if (e instanceof ConfigError) {
    process.stderr.write(`runtara-core: invalid configuration: ${e.message}\n`);
    process.exit(2);
  }
  throw e;
}
await runUntilSignalled(core, core.logger);
