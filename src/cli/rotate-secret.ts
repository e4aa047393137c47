import { pino } from "pino";
import { ConfigError, readEnvironmentOptions } from "../config.js";
import { createDatabase } from "../db/index.js";
import { Tokens } from "../lifecycle/index.js";

/**
 * `npm run rotate-secret`: adds a new token secret. It mints from now on; the previous one
 * still verifies, older ones stop. Running replicas pick it up within a minute (or at the
 * first token they cannot verify), so no restart is needed.
 */
const options = (() => {
  try {
    return readEnvironmentOptions(process.env);
  } catch (e) {
    if (e instanceof ConfigError) {
      process.stderr.write(`runtara rotate-secret: invalid configuration: ${e.message}\n`);
      process.exit(2);
    }
    throw e;
  }
})();
if (options.databaseUrl === undefined) {
  process.stderr.write("runtara rotate-secret: set RUNTARA_DATABASE_URL (or RUNTARA_ENVIRONMENT_DATABASE_URL) to the environment's database\n");
  process.exit(2);
}
const db = await createDatabase({ url: options.databaseUrl, poolSize: 1, logger: pino({ level: "warn" }) });
try {
  await Tokens.rotate(db);
  process.stdout.write("token secret rotated: new tokens use the new secret; tokens minted before the previous rotation no longer verify\n");
} finally {
  await db.end();
}
