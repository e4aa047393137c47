import type { AddressInfo } from "node:net";
import path from "node:path";
import type { Interceptor } from "@connectrpc/connect";
import { pino, type Logger } from "pino";
import { compileOptions, nativeRunnerAllowed, type CompiledOptions, type EnvironmentOptions } from "./config.js";
import { Metrics } from "./metrics/index.js";
import { closedAncestors, secureDataDir } from "./data-dir.js";
import { CoreRuntime } from "./core/runtime.js";
import { ChannelHub, createDatabase, Listener, migrate, startEmbeddedPostgres, type Database } from "./db/index.js";
import { ImageService, ImageStore, ResumableUploads } from "./images/index.js";
import { CoreGateway, InstanceManager, InstanceTimeline, Launcher, networkCoreChannel, RunLogReader, SignalService, Supervisor, TransitionFeeds, type CoreChannel } from "./instances/index.js";
import { Tokens } from "./lifecycle/index.js";
import { cgroupOwner, CORE_SOCKET_NAME, createRunners, type Runners } from "./runner/index.js";
import { nativeRunnerCheck, type RunnerCheck } from "./runner-policy.js";
import { DatabaseCleanup } from "./scheduler/cleanup-database.js";
import { ImageCleanup } from "./scheduler/cleanup-images.js";
import { RunDirCleanup } from "./scheduler/cleanup-runs.js";
import { HeartbeatMonitor } from "./scheduler/heartbeat-monitor.js";
import { MaintenanceLoop } from "./scheduler/maintenance-loop.js";
import { WakeScheduler } from "./scheduler/wake-scheduler.js";
import type { OnePortServer } from "./server/http.js";
import { ApiKeys } from "./server/api-keys.js";
import { environmentAccess } from "./server/environment-access.js";
import { sharedProbe } from "./server/health.js";
import { loadConsoleAssets } from "./server/console-assets.js";
import { listenOperations, metricsTenantGate, openMetrics, type Operations } from "./server/operations.js";
import { loadTlsMaterial } from "./server/tls.js";
import { coreLink, type CoreLink } from "./core-link.js";
import { environmentRoutes } from "./server/routes.js";
import { serve } from "./server/serve.js";
import { forwardUnixSocket } from "./server/unix-forwarder.js";
import { Startup } from "./startup.js";
import { PACKAGE_ROOT, VERSION } from "./package.js";
import { aggregateLimits, containerLimits, databasePing, instanceCoreAddr, redactedDatabaseHost, startSecretRefresh } from "./wiring.js";

export interface EnvironmentRuntimeOptions extends EnvironmentOptions {
  /** Root logger; components log through children of it. @default pino at `logLevel` */
  logger?: Logger;
}

/** What start() brought up; tests and tools read it through the getters. */
interface Running {
  databaseUrl: string;
  db: Database;
  tokens: Tokens;
  core: CoreRuntime | undefined;
  server: OnePortServer;
}

/** A resumable upload with no call for this long is discarded (its staged bytes freed). */
const RESUMABLE_UPLOAD_IDLE_MS = 15 * 60_000;
/** Resumable uploads one tenant may have open at once. */
const RESUMABLE_UPLOADS_PER_TENANT = 16;

/**
 * The whole environment in one object: database (external or embedded), migrations, core
 * (embedded unless configured apart), the management API on one port, and the background
 * workers. `start()` resolves once the port is bound and rejects on any startup failure
 * (after undoing what it had started); `stop()` undoes it in reverse order, and may be called
 * at any time, also while start() is still running.
 */
export class Environment {
  readonly options: CompiledOptions;
  readonly logger: Logger;
  /** Prometheus metrics of this environment (served at /metrics). */
  readonly metrics = new Metrics();
  private readonly startup: Startup;
  private running: Partial<Running> = {};
  private apiKeys: ApiKeys | undefined;

  constructor(options: EnvironmentRuntimeOptions = {}) {
    this.options = compileOptions(options);
    this.logger = options.logger ?? pino({ level: this.options.logLevel });
    this.startup = new Startup(this.logger);
  }

  /** Where the management API listens (after start). */
  get address(): AddressInfo {
    return this.started("server").address;
  }

  /** The database in use (after start): the configured URL or the embedded one. */
  get databaseUrl(): string {
    return this.started("databaseUrl");
  }

  /** Where the embedded core listens (after start; only when embedCore). */
  get coreAddress(): AddressInfo | undefined {
    return this.running.core?.address;
  }

  /** Token helpers (after start): tests and tools act as an instance with them. */
  get tokens(): Tokens {
    return this.started("tokens");
  }

  get db(): Database {
    return this.started("db");
  }

  start(): Promise<void> {
    return this.startup.start(() => this.startSequence());
  }

  /** Re-reads what may change without a restart (SIGHUP): the API keys file. */
  async reload(): Promise<void> {
    await this.apiKeys?.reload();
  }

  async stop(): Promise<void> {
    await this.startup.stop();
    this.running = {};
    this.logger.info("environment stopped");
  }

  /**
   * Dependency order: storage, database, core, the environment's services, the API, then the
   * background workers. Each step registers its undo; stop() runs them in reverse, so workers
   * stop claiming first, the server drains, workflows are detached (never killed), core stops,
   * then the listener, the pool and the embedded PostgreSQL.
   */
  private async startSequence(): Promise<void> {
    const o = this.options;
    const s = this.startup;
    const apiKeys = o.apiKeysFile === undefined ? undefined : await ApiKeys.load(o.apiKeysFile, this.logger.child({ component: "api-keys" }));
    if (apiKeys) {
      this.apiKeys = apiKeys;
      s.onStop("stop watching the API keys file", apiKeys.watch());
    }
    await secureDataDir(o.dataDir);
    const closed = await closedAncestors(o.dataDir);
    if (closed.length > 0) {
      this.logger.warn({ dataDir: o.dataDir, closed }, "instances cannot reach DATA_DIR: a directory above it is not searchable by other users (chmod o+x it, or move DATA_DIR); every launch will fail");
    }
    const databaseUrl = await this.startDatabase();
    await migrate(databaseUrl, this.logger);
    const db = s.own("close the database pool", await createDatabase({ url: databaseUrl, poolSize: o.dbPoolSize, logger: this.logger }), (d) => d.end());
    const listener = new Listener(databaseUrl, this.logger.child({ component: "listener" }));
    listener.onReconnect(() => this.metrics.listenerReconnects.inc());
    await listener.start();
    s.onStop("stop the listener", () => listener.stop());
    const tokens = await Tokens.load(db);
    startSecretRefresh(s, tokens, this.logger);
    const core = o.embedCore ? await this.startCore(db, listener, tokens) : undefined;
    this.running = { databaseUrl, db, tokens, core };

    const link = await coreLink(o, core ? instanceCoreAddr(o, core.address.port).replace(/:\d+$/, "") : o.coreHost, core?.address.port);
    // An embedded core is called in this process (one hop fewer); a standalone one over HTTP/2.
    const channel = (auth: Interceptor): CoreChannel =>
      core ? core.inProcessChannel(auth) : networkCoreChannel({ baseUrl: link.baseUrl, connect: () => link.connect("h2", true) }, o.maxPayloadBytes + 8 * 1024 * 1024, auth);
    const gateway = s.own("close the core client", new CoreGateway(channel, tokens), (g) => g.close());
    const store = new ImageStore(o.dataDir, o.replicaId);
    await store.clearStaging();
    const checkRunner = nativeRunnerCheck(nativeRunnerAllowed(o));
    const runners = s.own("stop the launcher and spawner processes", createRunners({
      oci: {
        runtime: o.ociRuntime,
        idMapping: o.ociIdMapping,
        maxLogBytes: o.maxLogBytes,
        aggregateLimits: aggregateLimits(o),
        logger: this.logger.child({ component: "oci-runner" }),
      },
      native: { runAs: o.nativeRunAs, owner: cgroupOwner(o.dataDir, o.replicaId), maxLogBytes: o.maxLogBytes, aggregateLimits: aggregateLimits(o), logger: this.logger.child({ component: "native-runner" }) },
      logger: this.logger.child({ component: "spawner" }),
    }), (r) => r.close());
    const images = new ImageService(db, store, this.logger.child({ component: "images" }), {
      maxImageBytes: BigInt(o.maxImageBytes),
      tenantMaxImages: o.tenantMaxImages,
      tenantMaxImageBytes: BigInt(o.tenantMaxImageBytes),
      checkRunner,
      unpackOci: (layout, ref, bundle) => runners.oci.unpackImage(layout, ref, bundle),
    }, this.metrics.uploadBytes);
    const coreSocketDir = await this.startCoreSocket(link);
    const { instances, signals } = this.buildInstances({ db, listener, store, gateway, tokens, core, link, runners, checkRunner, coreSocketDir });
    // Workflows keep running: a restart of the environment must not kill them.
    s.onStop("detach from the workflows", () => instances.detachAll());
    await instances.recover();
    // Only now: a process of the previous run that nobody recorded is killed by recover(), and
    // must not have registered meanwhile (its instance would run twice: it, and its relaunch).
    core?.openToInstances();
    s.checkNotStopped();

    const uploads = new ResumableUploads(images, this.logger.child({ component: "uploads" }), {
      idleTimeoutMs: RESUMABLE_UPLOAD_IDLE_MS,
      maxOpenPerTenant: RESUMABLE_UPLOADS_PER_TENANT,
      // A chunk fits one request also as Connect JSON (base64: 4 bytes for 3), with room for the rest.
      maxChunkBytes: Math.floor(((o.maxRequestBytes - 64 * 1024) * 3) / 4),
    });
    uploads.start();
    s.onStop("discard open uploads", () => uploads.stop());
    this.running.server = await this.startServer({ images, uploads, instances, signals, gateway, db, apiKeys });
    this.startWorkers(db, listener, instances);
    this.logger.info(
      { port: this.running.server.address.port, host: o.httpHost, tls: o.tls !== undefined, apiKeys: apiKeys !== undefined, version: VERSION },
      "environment listening",
    );
  }

  private async startDatabase(): Promise<string> {
    const o = this.options;
    if (o.databaseUrl !== undefined) {
      this.logger.info({ database: "external", host: redactedDatabaseHost(o.databaseUrl) }, "using external PostgreSQL");
      return o.databaseUrl;
    }
    const embedded = this.startup.own("stop embedded PostgreSQL", await startEmbeddedPostgres(o.dataDir, this.logger), (e) => e.stop());
    this.logger.info({ database: "embedded", dataDir: o.dataDir }, "using embedded PostgreSQL");
    return embedded.url;
  }

  private async startCore(db: Database, listener: Listener, tokens: Tokens): Promise<CoreRuntime> {
    const o = this.options;
    const core = new CoreRuntime(db, listener, tokens, this.logger, o, this.metrics);
    await core.start({ holdInstances: true });
    return this.startup.own("stop core", core, (c) => c.stop());
  }

  /**
   * Containers with their own network namespace reach core only through a Unix socket under
   * DATA_DIR, bind-mounted into them and forwarded to core's port. Returns its directory.
   */
  private async startCoreSocket(link: CoreLink): Promise<string | undefined> {
    const o = this.options;
    if (o.networkMode === "host") return undefined;
    const dir = path.join(o.dataDir, "sockets");
    const forwarder = await forwardUnixSocket(path.join(dir, CORE_SOCKET_NAME), (protocol) => link.connect(protocol, false), this.logger);
    this.startup.onStop("close the core socket", () => forwarder.close());
    return dir;
  }

  private buildInstances(deps: {
    db: Database;
    listener: Listener;
    store: ImageStore;
    gateway: CoreGateway;
    tokens: Tokens;
    core: CoreRuntime | undefined;
    link: CoreLink;
    runners: Runners;
    checkRunner: RunnerCheck;
    coreSocketDir: string | undefined;
  }) {
    const { db, listener, store, gateway, tokens, core, runners } = deps;
    const o = this.options;
    if (o.networkMode === "isolated") void runners.oci.outbound(); // logs how isolated containers get out
    void runners.oci.init(); // logs whether containers get an init process
    const statusChanges = new ChannelHub(listener, "runtara_instance");
    const supervisor = new Supervisor(db, statusChanges, this.logger.child({ component: "supervisor" }));
    const launcher = new Launcher({
      db,
      runners,
      images: store,
      tokens,
      supervisor,
      logger: this.logger.child({ component: "launcher" }),
      metrics: this.metrics,
      options: {
        dataDir: o.dataDir,
        coreAddr: instanceCoreAddr(o, core?.address.port),
        coreUrl: `${new URL(deps.link.baseUrl).protocol}//${instanceCoreAddr(o, core?.address.port)}`,
        skipCertVerification: o.skipCertVerification,
        networkMode: o.networkMode,
        coreSocketDir: deps.coreSocketDir,
        checkRunner: deps.checkRunner,
        replicaId: o.replicaId,
        limits: containerLimits(o),
      },
    });
    const instances = new InstanceManager({
      db,
      runners,
      launcher,
      supervisor,
      core: gateway,
      transitions: new TransitionFeeds(db, statusChanges, this.logger.child({ component: "transition-feed" })),
      logger: this.logger.child({ component: "instances" }),
      replicaId: o.replicaId,
      runsDir: path.join(o.dataDir, "runs"),
      maxLaunchAttempts: o.wakeMaxAttempts,
      pendingTimeoutMs: o.pendingTimeoutMs,
      tenantMaxActiveInstances: o.tenantMaxActiveInstances,
    });
    const signals = new SignalService(gateway, (tenantId, instanceId) => instances.relaunchIfSuspended(tenantId, instanceId), this.metrics.signalDelivery);
    return { instances, signals };
  }

  private async startServer(deps: {
    images: ImageService;
    uploads: ResumableUploads;
    instances: InstanceManager;
    signals: SignalService;
    gateway: CoreGateway;
    db: Database;
    apiKeys: ApiKeys | undefined;
  }): Promise<OnePortServer> {
    const o = this.options;
    const shutdown = new AbortController();
    const keys = deps.apiKeys;
    const tls = o.tls && (await loadTlsMaterial(o.tls, "RUNTARA_TLS_CERT_FILE/RUNTARA_TLS_KEY_FILE"));
    const database = sharedProbe(() => databasePing(deps.db));
    const core = sharedProbe(() => deps.gateway.reachable());
    this.metrics.readFrom({ countInstances: () => deps.instances.countByStatus(), poolState: () => deps.db.state() });
    const ops: Operations = {
      metrics: this.metrics,
      readiness: async () => {
        const [d, c] = await Promise.all([database(), core()]);
        return { database: d, core: c };
      },
    };
    if (o.metrics) {
      const listener = await listenOperations(ops, { ...o.metrics, allowedHosts: o.allowedHosts }, this.logger.child({ component: "metrics" }));
      this.startup.onStop("close the metrics listener", () => listener.close());
    }
    const server = await serve({
      routes: environmentRoutes({
        images: deps.images,
        uploads: deps.uploads,
        instances: deps.instances,
        signals: deps.signals,
        logs: new RunLogReader(deps.db, o.dataDir, o.maxLogBytes),
        timeline: new InstanceTimeline(deps.db),
        defaults: { executionTimeoutSecs: o.executionTimeoutSecs, maxPayloadBytes: o.maxPayloadBytes },
        probes: {
          version: VERSION,
          startedAtMs: Date.now(),
          database,
          core,
          activeInstances: (tenantId) => deps.instances.countActive(tenantId),
          caller: (headers) => {
            if (!keys) return "all";
            const tenantId = keys.tenantOf(headers.get("authorization"));
            return tenantId === undefined ? undefined : { tenantId };
          },
        },
      }),
      ...environmentAccess(keys, o.allowedHosts),
      limits: o,
      ...(tls ? { tls } : {}),
      port: o.httpPort,
      host: o.httpHost,
      corsOrigins: o.corsOrigins,
      logger: this.logger.child({ component: "rpc" }),
      readMaxBytes: o.maxRequestBytes,
      shutdownSignal: shutdown.signal,
      metrics: this.metrics,
      operations: { ops, metricsGate: keys ? metricsTenantGate(keys, o.metricsTenant) : openMetrics },
      console: await loadConsoleAssets(path.join(PACKAGE_ROOT, "dist", "console")),
    });
    this.startup.onStop("close the server", async () => {
      const closing = server.close(o.shutdownGraceMs);
      // Server streams (watches) end when the grace period runs out.
      setTimeout(() => shutdown.abort(), o.shutdownGraceMs).unref();
      await closing;
      shutdown.abort();
    });
    return server;
  }

  private startWorkers(db: Database, listener: Listener, instances: InstanceManager): void {
    const o = this.options;
    const child = (component: string) => this.logger.child({ component });
    const workers = [
      {
        what: "the wake scheduler",
        worker: new WakeScheduler(
          db,
          listener,
          (claimed) => instances.wake(claimed.target, claimed.attempt, o.wakeMaxAttempts),
          child("wake-scheduler"),
          {
            reconcileIntervalMs: o.wakeReconcileIntervalMs,
            batchSize: o.wakeBatchSize,
            replicaId: o.replicaId,
            maxConcurrentLaunches: o.maxConcurrentWakeLaunches,
            wakeLag: this.metrics.wakeLag,
          },
        ),
      },
      {
        what: "the heartbeat monitor",
        worker: new HeartbeatMonitor((timeoutMs) => instances.enforceHeartbeats(timeoutMs), child("heartbeat-monitor"), {
          timeoutMs: o.heartbeatTimeoutMs,
          intervalMs: o.heartbeatCheckIntervalMs,
        }),
      },
      {
        what: "the stale PENDING sweep",
        worker: new MaintenanceLoop(() => instances.relaunchStalePending(o.pendingTimeoutMs), child("pending-sweep"), Math.max(1_000, o.pendingTimeoutMs / 4)),
      },
      {
        what: "the run directory cleanup",
        worker: new RunDirCleanup(db, o.dataDir, child("run-cleanup"), { maxAgeMs: o.runCleanupMaxAgeMs, intervalMs: o.runCleanupIntervalMs }),
      },
      {
        what: "the database cleanup",
        worker: new DatabaseCleanup(db, o.dataDir, child("db-cleanup"), {
          enabled: o.dbCleanupEnabled,
          intervalMs: o.dbCleanupIntervalMs,
          maxAgeMs: o.dbCleanupMaxAgeMs,
          batchSize: o.dbCleanupBatchSize,
        }),
      },
      {
        what: "the image cleanup",
        worker: new ImageCleanup(db, o.dataDir, child("image-cleanup"), {
          enabled: o.imageCleanupEnabled,
          intervalMs: o.imageCleanupIntervalMs,
          maxAgeMs: o.imageCleanupMaxAgeMs,
          batchSize: o.imageCleanupBatchSize,
        }),
      },
    ];
    for (const { what, worker } of workers) {
      worker.start();
      this.startup.onStop(`stop ${what}`, () => worker.stop());
    }
  }

  private started<K extends keyof Running>(key: K): Running[K] {
    const value = this.running[key];
    if (value === undefined) throw new Error("environment is not started");
    return value as Running[K];
  }
}
