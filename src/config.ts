import os from "node:os";
import { ConfigError, envReader } from "./env-vars.js";
import { compileCleanupOptions, readCleanupOptions, type CleanupOptions } from "./scheduler/cleanup-config.js";
import path from "node:path";
import type { IdMapping } from "./runner/idmap.js";
import { MIN_LOG_BYTES } from "./runner/log-cap.js";
import { lookupUser, type SystemUser } from "./runner/users.js";

/**
 * Every setting of the environment. `readEnvironmentOptions` maps the documented
 * environment variables onto this; `compileOptions` fills defaults and validates.
 * Library code receives the compiled, read-only result and never reads process.env.
 */
export interface EnvironmentOptions extends CleanupOptions {
  /** PostgreSQL URL. @default an embedded PostgreSQL under `${dataDir}/postgres` */
  databaseUrl?: string;
  /** Port of the management API (gRPC, gRPC-Web, Connect). 0 picks a free port. @default 8002 */
  httpPort?: number;
  /**
   * Address the management API binds. A non-loopback address needs `apiKeysFile` (or
   * `allowUnauthenticated`), else the environment refuses to start. @default "127.0.0.1"
   */
  httpHost?: string;
  /** Serve the management API without API keys on a non-loopback address (explicit opt-out). @default false */
  allowUnauthenticated?: boolean;
  /**
   * Host names (Host / :authority, without port) the management API answers besides loopback
   * ones, when it has no API keys (DNS-rebinding defence). @default []
   */
  allowedHosts?: readonly string[];
  /** PEM certificate chain and key: the management API speaks TLS (h2 and http/1.1 by ALPN). */
  tlsCertFile?: string;
  tlsKeyFile?: string;
  /** Core's own TLS pair (embedded or standalone core). @default tlsCertFile/tlsKeyFile */
  coreTlsCertFile?: string;
  coreTlsKeyFile?: string;
  /** CA of client certificates core demands for CoreService calls (mutual TLS); needs core TLS. */
  coreClientCaFile?: string;
  /** Extra CA the environment trusts for a standalone core's certificate (`https://` coreAddr). */
  coreCaFile?: string;
  /** Client certificate and key the environment presents to a core that demands one. */
  coreClientCertFile?: string;
  coreClientKeyFile?: string;
  /** Open connections each listener accepts at most. @default 4096 */
  maxConnections?: number;
  /** Concurrent HTTP/2 streams per connection. @default 256 */
  maxStreamsPerConnection?: number;
  /** A request body that stalls this long is cut off (responses are not timed), ms. @default 60000 */
  bodyIdleTimeoutMs?: number;
  /**
   * host:port of core; instances get it as RUNTARA_CORE_ADDR. `https://host:port` reaches a
   * standalone core over TLS. @default "127.0.0.1:8001"
   */
  coreAddr?: string;
  /** Run core in this process (bound on coreAddr). @default true */
  embedCore?: boolean;
  /** Root of images, run directories and the embedded database. @default ".data" */
  dataDir?: string;
  /** Passed to instances as RUNTARA_SKIP_CERT_VERIFICATION=true. @default false */
  skipCertVerification?: boolean;
  /** Maximum pooled database connections. @default 20 */
  dbPoolSize?: number;
  /** Default execution timeout of an instance, in seconds. @default 300 */
  executionTimeoutSecs?: number;
  /** "runc", "crun" or a path; auto-detected when unset. */
  ociRuntime?: string;
  /**
   * Container networking: `isolated` (own network namespace, host loopback unreachable, core
   * over a Unix socket, outbound through pasta when installed), `none` (the same without
   * outbound) or `host` (the host's network: explicit opt-in). @default "isolated"
   */
  networkMode?: "isolated" | "none" | "host";
  /** Origins allowed to call from a browser; "*" allows any. @default [] */
  corsOrigins?: readonly string[];
  /** Largest checkpoint state, event payload, input or output, in bytes. @default 16 MiB */
  maxPayloadBytes?: number;
  /** pino level. @default "info" */
  logLevel?: string;
  /** How long SIGTERM waits for in-flight calls before closing connections. @default 10000 */
  shutdownGraceMs?: number;
  /** Identifies this environment process's launches across its restarts. @default the host name */
  replicaId?: string;
  /** Memory limit of a container, bytes. @default 512 MiB */
  memoryLimitBytes?: number;
  /** CPU limit of a container, in CPUs (fractions allowed). @default 1 */
  cpuLimit?: number;
  /** Processes and threads a container may have. @default 512 */
  pidsLimit?: number;
  /** Safety-net query interval of the wake scheduler, ms (timers and NOTIFY do the precise work). @default 5000 */
  wakeReconcileIntervalMs?: number;
  /** Launch attempts of a wake before the instance is FAILED (launch_failed). @default 3 */
  wakeMaxAttempts?: number;
  /** File of `<tenant_id> <key>` lines; when set, the key decides the tenant of every call. */
  apiKeysFile?: string;
  /** host:port of a separate listener for /metrics, /healthz and /readyz without API keys (an internal network). */
  metricsAddr?: string;
  /** With API keys: the tenant whose keys may read /metrics on the management port. */
  metricsTenant?: string;
  /** A RUNNING instance silent this long is killed and FAILED (heartbeat_timeout), ms. @default 120000 */
  heartbeatTimeoutMs?: number;
  /** How often the heartbeat monitor checks, ms. @default 15000 */
  heartbeatCheckIntervalMs?: number;
  /** Largest image RegisterImageStream accepts, bytes. @default 8 GiB */
  maxImageBytes?: number;
  /**
   * Largest single message the management API reads (a unary request, or one message of a
   * stream), bytes; RegisterImage's own limit is 16 MiB of binary. @default 64 MiB
   */
  maxRequestBytes?: number;
  /** Due sleepers claimed per wake statement. @default 100 */
  wakeBatchSize?: number;
  /** RLIMIT_NOFILE of a container (soft = hard). @default 4096 */
  nofileLimit?: number;
  /** CPU bandwidth period of a container, µs; `cpuLimit` CPUs of time per period. @default 100000 */
  cpuPeriodUs?: number;
  /**
   * A PENDING instance with no process for this long was claimed by an environment that died
   * before launching it; any replica relaunches it. Longer than any launch takes. @default 120000
   */
  pendingTimeoutMs?: number;
  /** Checkpoints one instance may save. @default 10000 */
  maxCheckpointsPerInstance?: number;
  /** Custom events one instance may emit. @default 10000 */
  maxEventsPerInstance?: number;
  /** Unacknowledged custom signals one instance may hold. @default 1000 */
  maxCustomSignalsPerInstance?: number;
  /** PENDING and RUNNING instances one tenant may have at once (StartInstance beyond: RESOURCE_EXHAUSTED). @default 1000 */
  tenantMaxActiveInstances?: number;
  /** Images (all versions) one tenant may hold. @default 1000 */
  tenantMaxImages?: number;
  /** Bytes of images one tenant may hold. @default 100 GiB */
  tenantMaxImageBytes?: number;
  /** Wake launches in flight at most, per replica. @default 32 */
  maxConcurrentWakeLaunches?: number;
  /** Largest EmitEvent payload, bytes (never more than maxPayloadBytes). @default 256 KiB */
  maxEventPayloadBytes?: number;
  /**
   * The native runner (trusted single-tenant use). `auto`: allowed only when the management
   * API binds a loopback address and no API keys file is set. @default "auto"
   */
  nativeRunner?: "auto" | "enabled" | "disabled";
  /** User native processes run as when the environment is root (name or uid in /etc/passwd). @default "nobody" */
  nativeUser?: string;
  /** First host uid/gid of the containers' user namespace. @default this user's /etc/subuid range, else 100000 */
  ociUidBase?: number;
  /** Number of ids in that user namespace (needs ociUidBase). @default 65536 */
  ociUidCount?: number;
  /**
   * Cap of each of a run's stdout.log and stderr.log, bytes: beyond it the first and the last
   * half are kept, the middle dropped (checked every second while the run lasts). @default 16 MiB
   */
  maxLogBytes?: number;
  /**
   * RLIMIT_FSIZE of every run (container or native process), bytes: the largest file it may
   * write, logs included; beyond, SIGXFSZ ends it (FAILED, crashed). At least maxLogBytes. @default 1 GiB
   */
  maxFileBytes?: number;
  /** pids.max of the cgroup all runs share (`/runtara`): processes + threads of all runs together; 0: no limit. @default 16384 */
  totalPidsMax?: number;
  /** memory.max of the cgroup all runs share, bytes; 0: no limit. @default 0 */
  totalMemoryBytes?: number;
}

/** Options without a default (unset means "not used"). */
type OptionalSettings =
  | "databaseUrl"
  | "metricsAddr"
  | "metricsTenant"
  | "ociRuntime"
  | "apiKeysFile"
  | "ociUidBase"
  | "ociUidCount"
  | "tlsCertFile"
  | "tlsKeyFile"
  | "coreTlsCertFile"
  | "coreTlsKeyFile"
  | "coreClientCaFile"
  | "coreCaFile"
  | "coreClientCertFile"
  | "coreClientKeyFile";

/** PEM files of one TLS listener. */
export interface TlsFiles {
  readonly certFile: string;
  readonly keyFile: string;
  /** CA of client certificates (mutual TLS). */
  readonly clientCaFile?: string;
}

export type CompiledOptions = Readonly<Required<Omit<EnvironmentOptions, OptionalSettings>>> & {
  readonly databaseUrl: string | undefined;
  readonly ociRuntime: string | undefined;
  readonly apiKeysFile: string | undefined;
  readonly metrics: { host: string; port: number } | undefined;
  readonly metricsTenant: string | undefined;
  readonly coreHost: string;
  readonly corePort: number;
  /** Core is reached (and, embedded, served) over TLS. */
  readonly coreTls: boolean;
  /** TLS of the management API, when configured. */
  readonly tls: TlsFiles | undefined;
  /** TLS of an embedded or standalone core, when configured. */
  readonly coreServerTls: TlsFiles | undefined;
  readonly coreCaFile: string | undefined;
  readonly coreClientCertFile: string | undefined;
  readonly coreClientKeyFile: string | undefined;
  /** Resolved `nativeUser` when the environment runs as root (native processes drop to it), else undefined. */
  readonly nativeRunAs: SystemUser | undefined;
  /** From ociUidBase/ociUidCount; undefined leaves the OCI runner's default (/etc/subuid). */
  readonly ociIdMapping: IdMapping | undefined;
};

const defaults = {
  httpPort: 8002,
  httpHost: "127.0.0.1",
  allowUnauthenticated: false,
  allowedHosts: [],
  maxConnections: 4096,
  maxStreamsPerConnection: 256,
  bodyIdleTimeoutMs: 60_000,
  coreAddr: "127.0.0.1:8001",
  embedCore: true,
  dataDir: ".data",
  skipCertVerification: false,
  dbPoolSize: 20,
  executionTimeoutSecs: 300,
  networkMode: "isolated",
  corsOrigins: [],
  maxPayloadBytes: 16 * 1024 * 1024,
  logLevel: "info",
  shutdownGraceMs: 10_000,
  replicaId: os.hostname(),
  memoryLimitBytes: 512 * 1024 * 1024,
  cpuLimit: 1,
  pidsLimit: 512,
  wakeReconcileIntervalMs: 5_000,
  wakeMaxAttempts: 3,
  heartbeatTimeoutMs: 120_000,
  heartbeatCheckIntervalMs: 15_000,
  maxImageBytes: 8 * 1024 * 1024 * 1024,
  maxRequestBytes: 64 * 1024 * 1024,
  wakeBatchSize: 100,
  nofileLimit: 4096,
  cpuPeriodUs: 100_000,
  pendingTimeoutMs: 120_000,
  maxEventPayloadBytes: 256 * 1024,
  maxConcurrentWakeLaunches: 32,
  maxCheckpointsPerInstance: 10_000,
  maxEventsPerInstance: 10_000,
  maxCustomSignalsPerInstance: 1_000,
  tenantMaxActiveInstances: 1_000,
  tenantMaxImages: 1_000,
  tenantMaxImageBytes: 100 * 1024 ** 3,
  nativeRunner: "auto",
  nativeUser: "nobody",
  maxLogBytes: 16 * 1024 * 1024,
  maxFileBytes: 1024 ** 3,
  totalPidsMax: 16_384,
  totalMemoryBytes: 0,
} satisfies Omit<Required<EnvironmentOptions>, OptionalSettings | keyof CleanupOptions>;

export { ConfigError };

/** Seven days: the longest execution timeout StartInstance accepts, and the default's bound. */
export const MAX_EXECUTION_TIMEOUT_SECS = 7 * 24 * 3600;
const MAX_PAYLOAD_BYTES = 256 * 1024 * 1024;
const MAX_SHUTDOWN_GRACE_MS = 3_600_000;
const REPLICA_ID = /^[A-Za-z0-9._:-]{1,128}$/;
const LOG_LEVELS = new Set(["fatal", "error", "warn", "info", "debug", "trace", "silent"]);

export function compileOptions(options: EnvironmentOptions = {}): CompiledOptions {
  const o = { ...defaults, ...stripUndefined(options) };
  const port = (name: string, v: number, allowZero: boolean) => {
    if (!Number.isInteger(v) || v < (allowZero ? 0 : 1) || v > 65535) {
      throw new ConfigError(`${name} must be a port number (${allowZero ? 0 : 1}-65535), got ${v}`);
    }
    return v;
  };
  port("httpPort", o.httpPort, true);
  // Port 0 (a free port) only makes sense for an embedded core, e.g. in tests.
  const { host: coreHost, port: corePort, tls: coreUrlTls } = parseCoreAddr("coreAddr", o.coreAddr, o.embedCore);
  if (!isLoopbackHost(o.httpHost) && options.apiKeysFile === undefined && !o.allowUnauthenticated) {
    throw new ConfigError(
      `httpHost (RUNTARA_ENV_HTTP_HOST) ${o.httpHost} is not a loopback address and no RUNTARA_API_KEYS_FILE is set: anyone who can reach the port could run code. ` +
        "Set RUNTARA_API_KEYS_FILE, or RUNTARA_ALLOW_UNAUTHENTICATED=true to accept an unauthenticated API explicitly",
    );
  }
  boundedInt("maxConnections", o.maxConnections, 16, 1_000_000);
  boundedInt("maxStreamsPerConnection", o.maxStreamsPerConnection, 1, 10_000);
  boundedInt("bodyIdleTimeoutMs", o.bodyIdleTimeoutMs, 100, 3_600_000);
  const tls = compileTls(o);
  if (o.embedCore && coreUrlTls && tls.coreServerTls === undefined) {
    throw new ConfigError("coreAddr (RUNTARA_CORE_ADDR) is https:// but the embedded core has no certificate (RUNTARA_CORE_TLS_CERT_FILE/KEY_FILE or RUNTARA_TLS_CERT_FILE/KEY_FILE)");
  }
  positiveInt("dbPoolSize", o.dbPoolSize);
  // An execution timeout past what setTimeout can hold would fire at once and kill every
  // instance; the bound is the API's own (timeout_seconds).
  boundedInt("executionTimeoutSecs", o.executionTimeoutSecs, 1, MAX_EXECUTION_TIMEOUT_SECS);
  boundedInt("maxPayloadBytes", o.maxPayloadBytes, 1, MAX_PAYLOAD_BYTES);
  boundedInt("shutdownGraceMs", o.shutdownGraceMs, 0, MAX_SHUTDOWN_GRACE_MS);
  if (!NETWORK_MODES.includes(o.networkMode)) {
    throw new ConfigError(`networkMode must be one of ${NETWORK_MODES.join(", ")}, got ${String(o.networkMode)}`);
  }
  if (!LOG_LEVELS.has(o.logLevel)) throw new ConfigError(`logLevel must be one of ${[...LOG_LEVELS].join(", ")}`);
  if (o.dataDir === "") throw new ConfigError("dataDir must not be empty");
  if (!REPLICA_ID.test(o.replicaId)) throw new ConfigError(`replicaId must match [A-Za-z0-9._:-]{1,128}`);
  boundedInt("memoryLimitBytes", o.memoryLimitBytes, 4 * 1024 * 1024, 1024 ** 4);
  positiveInt("pidsLimit", o.pidsLimit);
  positiveInt("wakeReconcileIntervalMs", o.wakeReconcileIntervalMs);
  positiveInt("wakeMaxAttempts", o.wakeMaxAttempts);
  positiveInt("heartbeatTimeoutMs", o.heartbeatTimeoutMs);
  positiveInt("heartbeatCheckIntervalMs", o.heartbeatCheckIntervalMs);
  if (!(o.cpuLimit > 0 && o.cpuLimit <= 1024)) throw new ConfigError(`cpuLimit must be a number of CPUs in (0, 1024], got ${o.cpuLimit}`);
  boundedInt("maxImageBytes", o.maxImageBytes, 1, 1024 ** 4);
  boundedInt("maxRequestBytes", o.maxRequestBytes, 1024 * 1024, 1024 ** 3);
  boundedInt("wakeBatchSize", o.wakeBatchSize, 1, 10_000);
  boundedInt("nofileLimit", o.nofileLimit, 64, 1_048_576);
  boundedInt("cpuPeriodUs", o.cpuPeriodUs, 1_000, 1_000_000);
  boundedInt("pendingTimeoutMs", o.pendingTimeoutMs, 1_000, 3_600_000);
  boundedInt("maxEventPayloadBytes", o.maxEventPayloadBytes, 1, MAX_PAYLOAD_BYTES);
  boundedInt("maxConcurrentWakeLaunches", o.maxConcurrentWakeLaunches, 1, 1_000);
  boundedInt("maxCheckpointsPerInstance", o.maxCheckpointsPerInstance, 1, 1_000_000);
  boundedInt("maxEventsPerInstance", o.maxEventsPerInstance, 1, 1_000_000);
  boundedInt("maxCustomSignalsPerInstance", o.maxCustomSignalsPerInstance, 1, 100_000);
  boundedInt("tenantMaxActiveInstances", o.tenantMaxActiveInstances, 1, 1_000_000);
  boundedInt("tenantMaxImages", o.tenantMaxImages, 1, 1_000_000);
  boundedInt("tenantMaxImageBytes", o.tenantMaxImageBytes, 1, 1024 ** 5);
  boundedInt("maxLogBytes", o.maxLogBytes, MIN_LOG_BYTES, 1024 ** 3);
  boundedInt("maxFileBytes", o.maxFileBytes, MIN_LOG_BYTES, 1024 ** 4);
  boundedInt("totalPidsMax", o.totalPidsMax, 0, 4_194_304);
  boundedInt("totalMemoryBytes", o.totalMemoryBytes, 0, 1024 ** 5);
  // A log is cut only once it is longer than the cap: one the file-size limit stops at or below
  // the cap is never cut, and the workflow's next line of output kills it (SIGXFSZ).
  if (o.maxLogBytes >= o.maxFileBytes) {
    throw new ConfigError(`maxLogBytes (RUNTARA_MAX_LOG_BYTES) must be below maxFileBytes (RUNTARA_MAX_FILE_BYTES), got ${o.maxLogBytes} >= ${o.maxFileBytes}`);
  }
  return Object.freeze({
    ...o,
    ...compileCleanupOptions(options),
    dataDir: path.resolve(o.dataDir),
    corsOrigins: Object.freeze([...o.corsOrigins]),
    databaseUrl: options.databaseUrl,
    ociRuntime: options.ociRuntime,
    apiKeysFile: options.apiKeysFile,
    metrics: metricsListener(options.metricsAddr),
    metricsTenant: options.metricsTenant,
    allowedHosts: Object.freeze([...o.allowedHosts]),
    coreHost,
    corePort,
    ...tls,
    // An embedded core with a certificate serves TLS; a standalone one is named https://.
    coreTls: o.embedCore ? tls.coreServerTls !== undefined : coreUrlTls,
    ...compileRunnerOptions(o),
  });
}

function boundedInt(name: string, v: number, min: number, max: number) {
  if (!Number.isInteger(v) || v < min || v > max) throw new ConfigError(`${name} must be an integer in [${min}, ${max}], got ${v}`);
}

function positiveInt(name: string, v: number) {
  if (!Number.isInteger(v) || v < 1) throw new ConfigError(`${name} must be a positive integer, got ${v}`);
}

function stripUndefined<T extends object>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>;
}

/** `host:port`, or `http(s)://host:port` (https: core is reached over TLS). */
export function parseCoreAddr(name: string, addr: string, allowZeroPort = false): { host: string; port: number; tls: boolean } {
  const scheme = /^(https?):\/\//.exec(addr);
  const [host, port] = splitHostPort(name, scheme ? addr.slice(scheme[0].length).replace(/\/$/, "") : addr, allowZeroPort);
  return { host, port, tls: scheme?.[1] === "https" };
}

function compileTls(o: EnvironmentOptions) {
  const pair = (what: string, cert: string | undefined, key: string | undefined) => {
    if ((cert === undefined) !== (key === undefined)) throw new ConfigError(`${what}: set both the certificate and the key file, or neither`);
    return cert === undefined || key === undefined ? undefined : { certFile: cert, keyFile: key };
  };
  const tls = pair("tlsCertFile/tlsKeyFile (RUNTARA_TLS_CERT_FILE/RUNTARA_TLS_KEY_FILE)", o.tlsCertFile, o.tlsKeyFile);
  const corePair = pair("coreTlsCertFile/coreTlsKeyFile (RUNTARA_CORE_TLS_CERT_FILE/RUNTARA_CORE_TLS_KEY_FILE)", o.coreTlsCertFile, o.coreTlsKeyFile) ?? tls;
  if (o.coreClientCaFile !== undefined && corePair === undefined) {
    throw new ConfigError("coreClientCaFile (RUNTARA_CORE_CLIENT_CA_FILE) needs core TLS (RUNTARA_CORE_TLS_CERT_FILE/KEY_FILE or RUNTARA_TLS_CERT_FILE/KEY_FILE)");
  }
  const coreServerTls = corePair === undefined ? undefined : { ...corePair, ...(o.coreClientCaFile !== undefined ? { clientCaFile: o.coreClientCaFile } : {}) };
  const client = pair("coreClientCertFile/coreClientKeyFile (RUNTARA_CORE_CLIENT_CERT_FILE/RUNTARA_CORE_CLIENT_KEY_FILE)", o.coreClientCertFile, o.coreClientKeyFile);
  if (o.embedCore !== false && o.coreClientCaFile !== undefined && client === undefined) {
    throw new ConfigError("coreClientCaFile (RUNTARA_CORE_CLIENT_CA_FILE) on an embedded core needs the environment's client certificate (RUNTARA_CORE_CLIENT_CERT_FILE/KEY_FILE)");
  }
  return { tls, coreServerTls, coreCaFile: o.coreCaFile, coreClientCertFile: client?.certFile, coreClientKeyFile: client?.keyFile };
}

export function splitHostPort(name: string, addr: string, allowZeroPort = false): [string, number] {
  const m = /^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+):(\d{1,5})$/.exec(addr);
  const portNumber = m ? Number(m[2]) : NaN;
  if (!m || portNumber < (allowZeroPort ? 0 : 1) || portNumber > 65535) {
    throw new ConfigError(`${name} must be host:port (e.g. 127.0.0.1:8001), got "${addr}"`);
  }
  return [m[1]!.replace(/^\[|\]$/g, ""), portNumber];
}

/** Maps environment variables (SPEC §8) to options. Invalid values throw, naming the variable. */
export function readEnvironmentOptions(env: NodeJS.ProcessEnv): EnvironmentOptions {
  const { str, int, num, bool } = envReader(env);
  const seconds = (name: string, min: number, max: number) => {
    const v = int(name, min, max);
    return v === undefined ? undefined : v * 1000;
  };
  const databaseUrl = str("RUNTARA_ENVIRONMENT_DATABASE_URL") ?? str("RUNTARA_DATABASE_URL");
  if (databaseUrl !== undefined && !/^postgres(ql)?:\/\//.test(databaseUrl)) {
    const name = str("RUNTARA_ENVIRONMENT_DATABASE_URL") ? "RUNTARA_ENVIRONMENT_DATABASE_URL" : "RUNTARA_DATABASE_URL";
    throw new ConfigError(`${name} must be a postgres:// or postgresql:// URL`);
  }
  const coreAddr = str("RUNTARA_CORE_ADDR");
  if (coreAddr !== undefined) {
    try {
      parseCoreAddr("RUNTARA_CORE_ADDR", coreAddr);
    } catch (e) {
      throw new ConfigError((e as Error).message);
    }
  }
  const networkMode = str("RUNTARA_NETWORK_MODE");
  if (networkMode !== undefined && !(NETWORK_MODES as readonly string[]).includes(networkMode)) {
    throw new ConfigError(`RUNTARA_NETWORK_MODE must be one of ${NETWORK_MODES.join(", ")}, got "${networkMode}"`);
  }
  const replicaId = str("RUNTARA_REPLICA_ID");
  if (replicaId !== undefined && !REPLICA_ID.test(replicaId)) {
    throw new ConfigError(`RUNTARA_REPLICA_ID must match [A-Za-z0-9._:-]{1,128}, got "${replicaId}"`);
  }
  const logLevel = str("LOG_LEVEL");
  if (logLevel !== undefined && !LOG_LEVELS.has(logLevel)) {
    throw new ConfigError(`LOG_LEVEL must be one of ${[...LOG_LEVELS].join(", ")}, got "${logLevel}"`);
  }
  const cors = str("RUNTARA_CORS_ORIGINS");
  const corsOrigins = cors?.split(",").map((s) => s.trim()).filter((s) => s !== "");
  for (const origin of corsOrigins ?? []) {
    if (origin !== "*" && !/^https?:\/\/[^/\s]+$/.test(origin)) {
      throw new ConfigError(`RUNTARA_CORS_ORIGINS entries must be "*" or scheme://host[:port], got "${origin}"`);
    }
  }
  return {
    databaseUrl,
    httpPort: int("RUNTARA_ENV_HTTP_PORT", 0, 65535),
    httpHost: str("RUNTARA_ENV_HTTP_HOST"),
    allowUnauthenticated: bool("RUNTARA_ALLOW_UNAUTHENTICATED"),
    allowedHosts: readAllowedHosts(str("RUNTARA_ALLOWED_HOSTS")),
    tlsCertFile: str("RUNTARA_TLS_CERT_FILE"),
    tlsKeyFile: str("RUNTARA_TLS_KEY_FILE"),
    coreTlsCertFile: str("RUNTARA_CORE_TLS_CERT_FILE"),
    coreTlsKeyFile: str("RUNTARA_CORE_TLS_KEY_FILE"),
    coreClientCaFile: str("RUNTARA_CORE_CLIENT_CA_FILE"),
    coreCaFile: str("RUNTARA_CORE_CA_FILE"),
    coreClientCertFile: str("RUNTARA_CORE_CLIENT_CERT_FILE"),
    coreClientKeyFile: str("RUNTARA_CORE_CLIENT_KEY_FILE"),
    maxConnections: int("RUNTARA_MAX_CONNECTIONS", 16, 1_000_000),
    maxStreamsPerConnection: int("RUNTARA_MAX_STREAMS_PER_CONNECTION", 1, 10_000),
    bodyIdleTimeoutMs: seconds("RUNTARA_BODY_IDLE_TIMEOUT_SECS", 1, 3_600),
    coreAddr,
    embedCore: bool("RUNTARA_EMBED_CORE"),
    dataDir: str("DATA_DIR"),
    skipCertVerification: bool("RUNTARA_SKIP_CERT_VERIFICATION"),
    dbPoolSize: int("RUNTARA_DB_POOL_SIZE", 1, 1000),
    executionTimeoutSecs: int("EXECUTION_TIMEOUT_SECS", 1, MAX_EXECUTION_TIMEOUT_SECS),
    ociRuntime: str("RUNTARA_OCI_RUNTIME"),
    networkMode: networkMode as (typeof NETWORK_MODES)[number] | undefined,
    corsOrigins,
    maxPayloadBytes: int("RUNTARA_MAX_PAYLOAD_BYTES", 1, MAX_PAYLOAD_BYTES),
    logLevel,
    shutdownGraceMs: int("RUNTARA_SHUTDOWN_GRACE_MS", 0, MAX_SHUTDOWN_GRACE_MS),
    replicaId: str("RUNTARA_REPLICA_ID"),
    memoryLimitBytes: int("RUNTARA_MEMORY_LIMIT_BYTES", 4 * 1024 * 1024, 1024 ** 4),
    cpuLimit: num("RUNTARA_CPU_LIMIT", 0.01, 1024),
    pidsLimit: int("RUNTARA_PIDS_LIMIT", 1, 1_000_000),
    wakeReconcileIntervalMs: int("RUNTARA_WAKE_RECONCILE_INTERVAL_MS", 100, 3_600_000),
    wakeMaxAttempts: int("RUNTARA_WAKE_MAX_ATTEMPTS", 1, 100),
    apiKeysFile: str("RUNTARA_API_KEYS_FILE"),
    heartbeatTimeoutMs: seconds("RUNTARA_HEARTBEAT_TIMEOUT_SECS", 1, 86_400),
    heartbeatCheckIntervalMs: seconds("RUNTARA_HEARTBEAT_CHECK_INTERVAL_SECS", 1, 3_600),
    maxImageBytes: int("RUNTARA_MAX_IMAGE_BYTES", 1, 1024 ** 4),
    maxRequestBytes: int("RUNTARA_MAX_REQUEST_BYTES", 1024 * 1024, 1024 ** 3),
    wakeBatchSize: int("RUNTARA_WAKE_BATCH_SIZE", 1, 10_000),
    nofileLimit: int("RUNTARA_NOFILE_LIMIT", 64, 1_048_576),
    pendingTimeoutMs: seconds("RUNTARA_PENDING_TIMEOUT_SECS", 10, 3_600),
    maxEventPayloadBytes: int("RUNTARA_MAX_EVENT_PAYLOAD_BYTES", 1, MAX_PAYLOAD_BYTES),
    maxConcurrentWakeLaunches: int("RUNTARA_MAX_CONCURRENT_WAKE_LAUNCHES", 1, 1_000),
    maxCheckpointsPerInstance: int("RUNTARA_MAX_CHECKPOINTS_PER_INSTANCE", 1, 1_000_000),
    maxEventsPerInstance: int("RUNTARA_MAX_EVENTS_PER_INSTANCE", 1, 1_000_000),
    maxCustomSignalsPerInstance: int("RUNTARA_MAX_CUSTOM_SIGNALS_PER_INSTANCE", 1, 100_000),
    tenantMaxActiveInstances: int("RUNTARA_TENANT_MAX_ACTIVE_INSTANCES", 1, 1_000_000),
    tenantMaxImages: int("RUNTARA_TENANT_MAX_IMAGES", 1, 1_000_000),
    tenantMaxImageBytes: int("RUNTARA_TENANT_MAX_IMAGE_BYTES", 1, 1024 ** 5),
    maxLogBytes: int("RUNTARA_MAX_LOG_BYTES", MIN_LOG_BYTES, 1024 ** 3),
    maxFileBytes: int("RUNTARA_MAX_FILE_BYTES", MIN_LOG_BYTES, 1024 ** 4),
    totalPidsMax: int("RUNTARA_TOTAL_PIDS_MAX", 0, 4_194_304),
    totalMemoryBytes: int("RUNTARA_TOTAL_MEMORY_BYTES", 0, 1024 ** 5),
    metricsAddr: str("RUNTARA_METRICS_ADDR"),
    metricsTenant: str("RUNTARA_METRICS_TENANT"),
    ...readCleanupOptions(env),
    ...readRunnerOptions(env),
  };
}

/** RUNTARA_METRICS_ADDR as host and port (0: a free port, for tests). */
function metricsListener(addr: string | undefined): { host: string; port: number } | undefined {
  if (addr === undefined) return undefined;
  const [host, port] = splitHostPort("metricsAddr (RUNTARA_METRICS_ADDR)", addr, true);
  return { host, port };
}

function readAllowedHosts(value: string | undefined): string[] | undefined {
  const hosts = value?.split(",").map((h) => h.trim().toLowerCase()).filter((h) => h !== "");
  for (const h of hosts ?? []) {
    if (!/^[a-z0-9.-]{1,253}$/.test(h)) throw new ConfigError(`RUNTARA_ALLOWED_HOSTS entries must be host names without port, got "${h}"`);
  }
  return hosts;
}

// ---------------------------------------------------------------------------------------------
// Runner isolation (native runner policy and user, OCI user namespace).

const NETWORK_MODES = ["isolated", "none", "host"] as const;
const NATIVE_RUNNER_MODES = ["auto", "enabled", "disabled"] as const;
const MAX_ID = 0xffff_ffff;

function readRunnerOptions(env: NodeJS.ProcessEnv): Pick<EnvironmentOptions, "nativeRunner" | "nativeUser" | "ociUidBase" | "ociUidCount"> {
  const { str, int } = envReader(env);
  const nativeRunner = str("RUNTARA_NATIVE_RUNNER");
  if (nativeRunner !== undefined && !(NATIVE_RUNNER_MODES as readonly string[]).includes(nativeRunner)) {
    throw new ConfigError(`RUNTARA_NATIVE_RUNNER must be one of ${NATIVE_RUNNER_MODES.join(", ")}, got "${nativeRunner}"`);
  }
  const nativeUser = str("RUNTARA_NATIVE_USER");
  if (nativeUser !== undefined && !/^[A-Za-z0-9._-]{1,64}$/.test(nativeUser)) {
    throw new ConfigError(`RUNTARA_NATIVE_USER must be a user name or uid ([A-Za-z0-9._-], at most 64), got "${nativeUser}"`);
  }
  const ociUidBase = int("RUNTARA_OCI_UID_BASE", 1000, MAX_ID - 1);
  const ociUidCount = int("RUNTARA_OCI_UID_COUNT", 1, MAX_ID - 1000);
  if (ociUidCount !== undefined && ociUidBase === undefined) {
    throw new ConfigError("RUNTARA_OCI_UID_COUNT needs RUNTARA_OCI_UID_BASE");
  }
  return {
    nativeRunner: nativeRunner as (typeof NATIVE_RUNNER_MODES)[number] | undefined,
    nativeUser,
    ociUidBase,
    ociUidCount,
  };
}

function compileRunnerOptions(o: Required<Pick<EnvironmentOptions, "nativeRunner" | "nativeUser">> & EnvironmentOptions) {
  if (!NATIVE_RUNNER_MODES.includes(o.nativeRunner)) {
    throw new ConfigError(`nativeRunner (RUNTARA_NATIVE_RUNNER) must be one of ${NATIVE_RUNNER_MODES.join(", ")}, got ${String(o.nativeRunner)}`);
  }
  // Only root can switch users, so only then must the user exist.
  let nativeRunAs: SystemUser | undefined;
  if (process.getuid?.() === 0) {
    nativeRunAs = lookupUser(o.nativeUser);
    if (nativeRunAs === undefined) throw new ConfigError(`nativeUser (RUNTARA_NATIVE_USER) "${o.nativeUser}" is not a user in /etc/passwd`);
    if (nativeRunAs.uid === 0) throw new ConfigError(`nativeUser (RUNTARA_NATIVE_USER) "${o.nativeUser}" is root; choose an unprivileged user`);
  }
  let ociIdMapping: IdMapping | undefined;
  if (o.ociUidBase !== undefined) {
    const size = o.ociUidCount ?? 65_536;
    if (!Number.isInteger(o.ociUidBase) || !Number.isInteger(size) || o.ociUidBase < 1000 || size < 1 || o.ociUidBase + size > MAX_ID) {
      throw new ConfigError(
        `ociUidBase/ociUidCount (RUNTARA_OCI_UID_BASE/RUNTARA_OCI_UID_COUNT) must give a range of host ids from 1000 up to ${MAX_ID}, got ${o.ociUidBase}+${size}`,
      );
    }
    ociIdMapping = { uidBase: o.ociUidBase, gidBase: o.ociUidBase, size };
  } else if (o.ociUidCount !== undefined) {
    throw new ConfigError("ociUidCount (RUNTARA_OCI_UID_COUNT) needs ociUidBase (RUNTARA_OCI_UID_BASE)");
  }
  return { nativeRunAs, ociIdMapping };
}

/**
 * Whether NATIVE images may be registered and run: `enabled`, or `auto` on a management API
 * bound to loopback without API keys (one trusted local user). A pure function of the options.
 */
export function nativeRunnerAllowed(o: CompiledOptions): boolean {
  if (o.nativeRunner !== "auto") return o.nativeRunner === "enabled";
  return o.apiKeysFile === undefined && isLoopbackHost(o.httpHost);
}

export function isLoopbackHost(host: string): boolean {
  return host === "localhost" || host === "::1" || /^(::ffff:)?127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(host);
}
