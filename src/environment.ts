import type { AddressInfo } from "node:net";
import path from "node:path";
import { pino, type Logger } from "pino";
import { sql } from "slonik";
import { compileOptions, nativeRunnerAllowed, type CompiledOptions, type EnvironmentOptions } from "./config.js";
import { secureDataDir } from "./data-dir.js";
import { CoreRuntime } from "./core/runtime.js";
import { Tokens } from "./core/tokens.js";
import { ChannelHub, createDatabase, Listener, migrate, startEmbeddedPostgres, type Database } from "./db/index.js";
import { CoreGateway } from "./instances/core-gateway.js";
import { ImageService, ImageStore } from "./images/index.js";
import { countActiveInstances } from "./instances/repository.js";
import { InstanceService } from "./instances/service.js";
import { CORE_SOCKET_NAME, createRunners } from "./runner/index.js";
import { nativeRunnerCheck } from "./runner-policy.js";
import { DatabaseCleanup } from "./scheduler/cleanup-database.js";
import { ImageCleanup } from "./scheduler/cleanup-images.js";
import { RunDirCleanup } from "./scheduler/cleanup-runs.js";
import { HeartbeatMonitor } from "./scheduler/heartbeat-monitor.js";
import { WakeScheduler } from "./scheduler/wake-scheduler.js";
import type { OnePortServer } from "./server/http.js";
import { apiKeyAuth, loadApiKeys } from "./server/api-keys.js";
import { environmentRoutes } from "./server/routes.js";
import { serve } from "./server/serve.js";
import { forwardUnixSocket } from "./server/unix-forwarder.js";
import { VERSION } from "./version.js";

export interface EnvironmentRuntimeOptions extends EnvironmentOptions {
  /** Root logger; components log through children of it. @default pino at `logLevel` */
  logger?: Logger;
}

type State = "created" | "starting" | "running" | "stopping" | "stopped";

/** Largest image binary accepted by RegisterImageStream. */
const MAX_IMAGE_BYTES = 8n * 1024n * 1024n * 1024n;

/**
 * The whole environment in one object: database (external or embedded), migrations, the
 * management API on one port. `start()` resolves once the port is bound and rejects on any
 * startup failure (after undoing what it had started); `stop()` undoes it in reverse order.
 */
export class Environment {
  readonly options: CompiledOptions;
  readonly logger: Logger;
  private state: State = "created";
  private database: Database | undefined;
  private server: OnePortServer | undefined;
  private core: CoreRuntime | undefined;
  private tokenSet: Tokens | undefined;
  /** What start() brought up, undone in reverse order by stop() (or a failed start). */
  private readonly teardown: { what: string; run: () => Promise<void> | void }[] = [];
  private readonly shutdown = new AbortController();
  private resolvedDatabaseUrl: string | undefined;

  constructor(options: EnvironmentRuntimeOptions = {}) {
    this.options = compileOptions(options);
    this.logger = options.logger ?? pino({ level: this.options.logLevel });
  }

  /** Where the management API listens (after start). */
  get address(): AddressInfo {
    if (!this.server) throw new Error("environment is not started");
    return this.server.address;
  }

  /** The database in use (after start): the configured URL or the embedded one. */
  get databaseUrl(): string {
    if (this.resolvedDatabaseUrl === undefined) throw new Error("environment is not started");
    return this.resolvedDatabaseUrl;
  }

  /** Where the embedded core listens (after start; only when embedCore). */
  get coreAddress(): AddressInfo | undefined {
    return this.core?.address;
  }

  /** Token helpers (after start): tests and tools act as an instance with them. */
  get tokens(): Tokens {
    if (!this.tokenSet) throw new Error("environment is not started");
    return this.tokenSet;
  }

  get db(): Database {
    if (!this.database) throw new Error("environment is not started");
    return this.database;
  }

  async start(): Promise<void> {
    if (this.state !== "created") throw new Error(`cannot start an environment that is ${this.state}`);
    this.state = "starting";
    const o = this.options;
    try {
      const apiKeys = o.apiKeysFile === undefined ? undefined : await loadApiKeys(o.apiKeysFile);
      await secureDataDir(o.dataDir);
      if (o.databaseUrl === undefined) {
        const embedded = await startEmbeddedPostgres(o.dataDir, this.logger);
        this.onStop("stop embedded PostgreSQL", () => embedded.stop());
        this.resolvedDatabaseUrl = embedded.url;
        this.logger.info({ database: "embedded", dataDir: o.dataDir }, "using embedded PostgreSQL");
      } else {
        this.resolvedDatabaseUrl = o.databaseUrl;
        this.logger.info({ database: "external", host: redactedHost(o.databaseUrl) }, "using external PostgreSQL");
      }
      await migrate(this.resolvedDatabaseUrl, this.logger);
      const db = await createDatabase({ url: this.resolvedDatabaseUrl, poolSize: o.dbPoolSize, logger: this.logger });
      this.database = db;
      this.onStop("close the database pool", () => db.end());
      const listener = new Listener(this.resolvedDatabaseUrl, this.logger.child({ component: "listener" }));
      await listener.start();
      this.onStop("stop the listener", () => listener.stop());
      const tokens = await Tokens.load(db);
      this.tokenSet = tokens;
      if (o.embedCore) {
        const core = new CoreRuntime(db, listener, tokens, this.logger, {
          host: o.coreHost,
          port: o.corePort,
          maxPayloadBytes: o.maxPayloadBytes,
          corsOrigins: o.corsOrigins,
          shutdownGraceMs: o.shutdownGraceMs,
        });
        await core.start();
        this.core = core;
        this.onStop("stop core", () => core.stop());
      }
      const coreAddr = this.core ? `${o.coreHost}:${this.core.address.port}` : o.coreAddr;
      const gateway = new CoreGateway(coreAddr, tokens.managementToken());
      this.onStop("close the core client", () => gateway.close());

      const store = new ImageStore(o.dataDir);
      await store.clearStaging();
      const checkRunner = nativeRunnerCheck(nativeRunnerAllowed(o));
      const images = new ImageService(db, store, this.logger.child({ component: "images" }), MAX_IMAGE_BYTES, checkRunner);
      const port = this.core ? this.core.address.port : o.corePort;
      const reachableHost = o.coreHost === "0.0.0.0" || o.coreHost === "::" ? "127.0.0.1" : o.coreHost;
      const coreSocketDir = path.join(o.dataDir, "sockets");
      if (o.networkMode !== "host") {
        const fwd = await forwardUnixSocket(path.join(coreSocketDir, CORE_SOCKET_NAME), { host: reachableHost, port }, this.logger);
        this.onStop("close the core socket", () => fwd.close());
      }
      const runners = createRunners({
        oci: { runtime: o.ociRuntime, idMapping: o.ociIdMapping, logger: this.logger.child({ component: "oci-runner" }) },
        native: { runAs: o.nativeRunAs, logger: this.logger.child({ component: "native-runner" }) },
      });
      if (o.networkMode === "isolated") void runners.oci.outbound(); // logs how isolated containers get out
      const instances = new InstanceService(
        db,
        runners,
        store,
        gateway,
        tokens,
        new ChannelHub(listener, "runtara_instance"),
        this.logger.child({ component: "instances" }),
        {
          dataDir: o.dataDir,
          coreAddr: `${reachableHost}:${port}`,
          skipCertVerification: o.skipCertVerification,
          networkMode: o.networkMode,
          coreSocketDir,
          checkRunner,
          replicaId: o.replicaId,
          limits: {
            memoryBytes: o.memoryLimitBytes,
            cpuPeriodUs: 100_000,
            cpuQuotaUs: Math.round(o.cpuLimit * 100_000),
            pidsLimit: o.pidsLimit,
            nofile: 4096,
          },
        },
      );
      // Workflows keep running: a restart of the environment must not kill them.
      this.onStop("detach from the workflows", () => instances.detachAll());
      await instances.recover();
      const startedAtMs = Date.now();
      const routes = environmentRoutes({
        images,
        instances,
        defaults: { executionTimeoutSecs: o.executionTimeoutSecs, maxPayloadBytes: o.maxPayloadBytes },
        core: gateway,
        probes: {
          version: VERSION,
          startedAtMs,
          database: () => ping(db),
          core: () => gateway.reachable(),
          activeInstances: () => countActiveInstances(db),
        },
      });
      const server = await serve({
        routes,
        interceptors: apiKeys ? [apiKeyAuth(apiKeys)] : [],
        port: o.httpPort,
        host: o.httpHost,
        corsOrigins: o.corsOrigins,
        logger: this.logger.child({ component: "rpc" }),
        readMaxBytes: 64 * 1024 * 1024,
        shutdownSignal: this.shutdown.signal,
      });
      this.server = server;
      this.onStop("close the server", async () => {
        const closing = server.close(o.shutdownGraceMs);
        // Server streams (watches) end when the grace period runs out.
        setTimeout(() => this.shutdown.abort(), o.shutdownGraceMs).unref();
        await closing;
        this.shutdown.abort();
      });
      const wakes = new WakeScheduler(
        db,
        listener,
        (claimed) => instances.wake(claimed.target, claimed.attempt, o.wakeMaxAttempts),
        this.logger.child({ component: "wake-scheduler" }),
        { reconcileIntervalMs: o.wakeReconcileIntervalMs, batchSize: 100 },
      );
      wakes.start();
      this.onStop("stop the wake scheduler", () => wakes.stop());
      const heartbeats = new HeartbeatMonitor(
        (timeoutMs) => instances.enforceHeartbeats(timeoutMs),
        this.logger.child({ component: "heartbeat-monitor" }),
        { timeoutMs: o.heartbeatTimeoutMs, intervalMs: o.heartbeatCheckIntervalMs },
      );
      heartbeats.start();
      this.onStop("stop the heartbeat monitor", () => heartbeats.stop());
      const runCleanup = new RunDirCleanup(db, o.dataDir, this.logger.child({ component: "run-cleanup" }), {
        maxAgeMs: o.runCleanupMaxAgeMs,
        intervalMs: o.runCleanupIntervalMs,
      });
      runCleanup.start();
      this.onStop("stop the run directory cleanup", () => runCleanup.stop());
      const dbCleanup = new DatabaseCleanup(db, o.dataDir, this.logger.child({ component: "db-cleanup" }), {
        enabled: o.dbCleanupEnabled,
        intervalMs: o.dbCleanupIntervalMs,
        maxAgeMs: o.dbCleanupMaxAgeMs,
        batchSize: o.dbCleanupBatchSize,
      });
      dbCleanup.start();
      this.onStop("stop the database cleanup", () => dbCleanup.stop());
      const imageCleanup = new ImageCleanup(db, o.dataDir, this.logger.child({ component: "image-cleanup" }), {
        enabled: o.imageCleanupEnabled,
        intervalMs: o.imageCleanupIntervalMs,
        maxAgeMs: o.imageCleanupMaxAgeMs,
        batchSize: o.imageCleanupBatchSize,
      });
      imageCleanup.start();
      this.onStop("stop the image cleanup", () => imageCleanup.stop());
      this.state = "running";
      this.logger.info({ port: server.address.port, host: o.httpHost, version: VERSION }, "environment listening");
    } catch (e) {
      await this.release();
      this.state = "stopped";
      throw e;
    }
  }

  async stop(): Promise<void> {
    if (this.state === "stopped" || this.state === "stopping") return;
    this.state = "stopping";
    await this.release();
    this.state = "stopped";
    this.logger.info("environment stopped");
  }

  private onStop(what: string, run: () => Promise<void> | void) {
    this.teardown.push({ what, run });
  }

  /**
   * Undoes start() in reverse: workers stop claiming, the server stops accepting and drains,
   * workflows are detached (never killed), core stops, then the listener, the pool and the
   * embedded PostgreSQL. A step that fails is logged and the rest still run.
   */
  private async release() {
    for (let step = this.teardown.pop(); step !== undefined; step = this.teardown.pop()) {
      try {
        await step.run();
      } catch (e) {
        this.logger.error({ err: e }, `could not ${step.what}`);
      }
    }
    this.server = undefined;
    this.core = undefined;
    this.database = undefined;
  }
}

async function ping(db: Database): Promise<boolean> {
  try {
    await db.oneFirst(sql.unsafe`SELECT 1`);
    return true;
  } catch {
    return false;
  }
}

function redactedHost(url: string): string {
  try {
    const u = new URL(url);
    return `${u.hostname}:${u.port || 5432}${u.pathname}`;
  } catch {
    return "(unparsable url)";
  }
}
