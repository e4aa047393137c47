import type { AddressInfo } from "node:net";
import { pino, type Logger } from "pino";
import { ConfigError, compileOptions, type CompiledOptions, type EnvironmentOptions } from "../config.js";
import { createDatabase, Listener, migrate, type Database } from "../db/index.js";
import { CoreRuntime } from "./runtime.js";
import { Tokens } from "./tokens.js";

/**
 * Core on its own (`npm run core`): its own pool and LISTEN connection on the shared
 * database, bound on coreAddr. Needs a database URL: the embedded PostgreSQL belongs to the
 * environment process.
 */
export class StandaloneCore {
  readonly options: CompiledOptions;
  readonly logger: Logger;
  private readonly databaseUrl: string;
  private db: Database | undefined;
  private listener: Listener | undefined;
  private runtime: CoreRuntime | undefined;

  constructor(options: EnvironmentOptions & { logger?: Logger }) {
    this.options = compileOptions(options);
    if (this.options.databaseUrl === undefined) {
      throw new ConfigError("RUNTARA_DATABASE_URL (or RUNTARA_ENVIRONMENT_DATABASE_URL) is required to run core on its own");
    }
    this.databaseUrl = this.options.databaseUrl;
    this.logger = options.logger ?? pino({ level: this.options.logLevel });
  }

  get address(): AddressInfo {
    if (!this.runtime) throw new Error("core is not started");
    return this.runtime.address;
  }

  async start(): Promise<void> {
    const o = this.options;
    const url = this.databaseUrl;
    try {
      await migrate(url, this.logger);
      this.db = await createDatabase({ url, poolSize: o.dbPoolSize, logger: this.logger });
      this.listener = new Listener(url, this.logger.child({ component: "listener" }));
      await this.listener.start();
      const tokens = await Tokens.load(this.db);
      this.runtime = new CoreRuntime(this.db, this.listener, tokens, this.logger, {
        host: o.coreHost,
        port: o.corePort,
        maxPayloadBytes: o.maxPayloadBytes,
        corsOrigins: o.corsOrigins,
        shutdownGraceMs: o.shutdownGraceMs,
      });
      await this.runtime.start();
    } catch (e) {
      await this.stop();
      throw e;
    }
  }

  async stop(): Promise<void> {
    await this.runtime?.stop();
    await this.listener?.stop();
    await this.db?.end();
    this.runtime = undefined;
    this.listener = undefined;
    this.db = undefined;
  }
}
