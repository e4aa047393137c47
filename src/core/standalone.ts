import type { AddressInfo } from "node:net";
import { pino, type Logger } from "pino";
import { ConfigError, compileOptions, type CompiledOptions, type EnvironmentOptions } from "../config.js";
import { Metrics } from "../metrics/index.js";
import { createDatabase, Listener, migrate } from "../db/index.js";
import { Tokens } from "../lifecycle/index.js";
import { Startup } from "../startup.js";
import { startSecretRefresh } from "../wiring.js";
import { CoreRuntime } from "./runtime.js";

/**
 * Core on its own (`npm run core`): its own pool and LISTEN connection on the shared
 * database, bound on coreAddr. Needs a database URL: the embedded PostgreSQL belongs to the
 * environment process. Starts and stops like the environment (src/startup.ts).
 */
export class StandaloneCore {
  readonly options: CompiledOptions;
  readonly logger: Logger;
  private readonly databaseUrl: string;
  private readonly startup: Startup;
  private runtime: CoreRuntime | undefined;

  constructor(options: EnvironmentOptions & { logger?: Logger }) {
    this.options = compileOptions(options);
    if (this.options.databaseUrl === undefined) {
      throw new ConfigError("RUNTARA_DATABASE_URL (or RUNTARA_ENVIRONMENT_DATABASE_URL) is required to run core on its own");
    }
    this.databaseUrl = this.options.databaseUrl;
    this.logger = options.logger ?? pino({ level: this.options.logLevel });
    this.startup = new Startup(this.logger);
  }

  get address(): AddressInfo {
    if (!this.runtime) throw new Error("core is not started");
    return this.runtime.address;
  }

  start(): Promise<void> {
    return this.startup.start(async () => {
      const o = this.options;
      const s = this.startup;
      await migrate(this.databaseUrl, this.logger);
      const db = s.own("close the database pool", await createDatabase({ url: this.databaseUrl, poolSize: o.dbPoolSize, logger: this.logger }), (d) => d.end());
      const listener = new Listener(this.databaseUrl, this.logger.child({ component: "listener" }));
      await listener.start();
      s.onStop("stop the listener", () => listener.stop());
      const tokens = await Tokens.load(db);
      startSecretRefresh(s, tokens, this.logger);
      // Recorded for the RPC log's sake; a standalone core serves no /metrics of its own yet.
      const runtime = new CoreRuntime(db, listener, tokens, this.logger, o, new Metrics());
      await runtime.start();
      this.runtime = s.own("stop core", runtime, (r) => r.stop());
    });
  }

  async stop(): Promise<void> {
    await this.startup.stop();
    this.runtime = undefined;
  }
}
