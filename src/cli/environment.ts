import { pino } from "pino";
import { ConfigError, readEnvironmentOptions } from "../config.js";
import { Environment } from "../environment.js";
import { runUntilSignalled } from "./signals.js";

let environment: Environment;
try {
  const options = readEnvironmentOptions(process.env);
  environment = new Environment({ ...options, logger: pino({ level: options.logLevel ?? "info" }) });
} catch (e) {
  if (e instanceof ConfigError) {
    process.stderr.write(`runtara-environment: invalid configuration: ${e.message}\n`);
    process.exit(2);
  }
  throw e;
}
await runUntilSignalled(environment, environment.logger);
