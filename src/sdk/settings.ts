import { ConfigError } from "./errors.js";
import { validateCheckpointId } from "./ids.js";

/** How the SDK learns about signals. */
export type SignalMode = "watch" | "poll";

/** What the environment passes to an instance (SPEC §4), parsed and validated. */
export interface InstanceEnv {
  readonly instanceId: string;
  readonly tenantId: string;
  readonly token: string;
  /**
   * Base URL of core, without a trailing slash: `http(s)://host:port`, or `unix:/path` for
   * core's Unix socket (a container in its own network namespace).
   */
  readonly coreUrl: string;
  /** Set on a relaunch after sleep or pause. */
  readonly resumeCheckpointId: string | undefined;
  readonly skipCertVerification: boolean;
  readonly heartbeatIntervalMs: number | undefined;
  readonly signalMode: SignalMode | undefined;
  readonly pollIntervalMs: number | undefined;
  readonly requestTimeoutMs: number | undefined;
}

export type EnvSource = Readonly<Record<string, string | undefined>>;

/**
 * Reads the RUNTARA_* variables. A missing or invalid value throws a {@link ConfigError}
 * that names the variable; nothing is silently replaced by a default.
 */
export function readInstanceEnv(env: EnvSource): InstanceEnv {
  const instanceId = env.RUNTARA_INSTANCE_ID?.trim();
  if (!instanceId) {
    throw new ConfigError(
      "RUNTARA_INSTANCE_ID",
      "not running inside a Runtara workflow instance: RUNTARA_INSTANCE_ID is not set (the environment sets it when it launches an instance)",
    );
  }
  return {
    instanceId,
    tenantId: required(env, "RUNTARA_TENANT_ID"),
    token: required(env, "RUNTARA_INSTANCE_TOKEN"),
    coreUrl: coreUrl(env),
    resumeCheckpointId: optionalCheckpoint(env, "RUNTARA_CHECKPOINT_ID"),
    skipCertVerification: bool(env, "RUNTARA_SKIP_CERT_VERIFICATION") ?? false,
    heartbeatIntervalMs: positiveInt(env, "RUNTARA_HEARTBEAT_INTERVAL_MS"),
    signalMode: signalMode(env, "RUNTARA_SIGNAL_MODE"),
    pollIntervalMs: positiveInt(env, "RUNTARA_SIGNAL_POLL_INTERVAL_MS"),
    requestTimeoutMs: positiveInt(env, "RUNTARA_REQUEST_TIMEOUT_MS"),
  };
}

function present(env: EnvSource, name: string): string | undefined {
  const value = env[name]?.trim();
  return value ? value : undefined;
}

function required(env: EnvSource, name: string): string {
  const value = present(env, name);
  if (value === undefined) {
    throw new ConfigError(name, `${name} is not set; the environment passes it to every instance`);
  }
  return value;
}

/** RUNTARA_CORE_URL, else RUNTARA_HTTP_URL, else http://RUNTARA_CORE_ADDR. */
function coreUrl(env: EnvSource): string {
  for (const name of ["RUNTARA_CORE_URL", "RUNTARA_HTTP_URL"] as const) {
    const value = present(env, name);
    if (value !== undefined) return baseUrl(name, value);
  }
  const addr = present(env, "RUNTARA_CORE_ADDR");
  if (addr !== undefined) {
    if (!/^[^\s/]+:\d{1,5}$/.test(addr)) {
      throw new ConfigError("RUNTARA_CORE_ADDR", `RUNTARA_CORE_ADDR must be host:port, got ${JSON.stringify(addr)}`);
    }
    return baseUrl("RUNTARA_CORE_ADDR", `http://${addr}`);
  }
  throw new ConfigError(
    "RUNTARA_CORE_URL",
    "RUNTARA_CORE_URL is not set (nor RUNTARA_HTTP_URL or RUNTARA_CORE_ADDR); the SDK cannot reach core",
  );
}

function baseUrl(name: string, value: string): string {
  if (value.startsWith("unix:")) {
    if (!value.startsWith("unix:/") || value.includes("\0")) {
      throw new ConfigError(name, `${name} must name an absolute socket path (unix:/path), got ${JSON.stringify(value)}`);
    }
    return value;
  }
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    throw new ConfigError(name, `${name} is not a URL: ${JSON.stringify(value)}`);
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") {
    throw new ConfigError(name, `${name} must be an http://, https:// or unix: URL, got ${JSON.stringify(value)}`);
  }
  return url.href.replace(/\/+$/, "");
}

function optionalCheckpoint(env: EnvSource, name: string): string | undefined {
  const value = present(env, name);
  if (value === undefined) return undefined;
  try {
    return validateCheckpointId(value, name);
  } catch (err) {
    throw new ConfigError(name, (err as Error).message);
  }
}

function bool(env: EnvSource, name: string): boolean | undefined {
  const value = present(env, name)?.toLowerCase();
  if (value === undefined) return undefined;
  if (["1", "true", "yes", "on"].includes(value)) return true;
  if (["0", "false", "no", "off"].includes(value)) return false;
  throw new ConfigError(name, `${name} must be true or false, got ${JSON.stringify(env[name])}`);
}

function positiveInt(env: EnvSource, name: string): number | undefined {
  const value = present(env, name);
  if (value === undefined) return undefined;
  const n = Number(value);
  if (!/^\d+$/.test(value) || !Number.isSafeInteger(n) || n <= 0) {
    throw new ConfigError(name, `${name} must be a positive whole number of milliseconds, got ${JSON.stringify(value)}`);
  }
  return n;
}

function signalMode(env: EnvSource, name: string): SignalMode | undefined {
  const value = present(env, name);
  if (value === undefined) return undefined;
  if (value === "watch" || value === "poll") return value;
  throw new ConfigError(name, `${name} must be "watch" or "poll", got ${JSON.stringify(value)}`);
}

/** Runtime settings: env plus code options plus defaults, compiled once. */
export interface RuntimeSettings extends InstanceEnv {
  readonly heartbeatIntervalMs: number;
  readonly signalMode: SignalMode;
  readonly pollIntervalMs: number;
  readonly requestTimeoutMs: number;
  readonly inProcessSleepMaxMs: number;
  /** WatchSignals reconnect backoff: first delay, cap, and failures before polling instead. */
  readonly watchBackoffInitialMs: number;
  readonly watchBackoffMaxMs: number;
  readonly watchMaxFailures: number;
  /** A watch that stayed open this long counts as healthy (resets the failure count). */
  readonly watchStableMs: number;
}

/** Tuning knobs a workflow may set in code; each wins over its RUNTARA_* variable. */
export interface TuningOptions {
  /**
   * Background heartbeat interval. Any call refreshes liveness; the heartbeat keeps a
   * quiet run (a long step, a wait for a signal) from being failed as heartbeat_timeout.
   * @default RUNTARA_HEARTBEAT_INTERVAL_MS, else 10 s
   */
  heartbeatIntervalMs?: number;
  /**
   * `watch`: one WatchSignals stream (signals arrive within milliseconds); after
   * repeated stream failures the SDK falls back to polling. `poll`: PollSignal every
   * `pollIntervalMs` (simpler, slower; for proxies that cannot stream, and benchmarks).
   * @default RUNTARA_SIGNAL_MODE, else "watch"
   */
  signalMode?: SignalMode;
  /** @default RUNTARA_SIGNAL_POLL_INTERVAL_MS, else 500 ms */
  pollIntervalMs?: number;
  /** Per-call deadline for unary calls (not WatchSignals). @default RUNTARA_REQUEST_TIMEOUT_MS, else 30 s */
  requestTimeoutMs?: number;
  /**
   * A durable sleep whose remaining time is at most this long waits inside the process
   * instead of suspending: a relaunch costs a process start, more than a short timer.
   * The wake time is still checkpointed, so a crash does not restart the full duration.
   * @default 1000 ms
   */
  inProcessSleepMaxMs?: number;
}

export const DEFAULTS = {
  heartbeatIntervalMs: 10_000,
  signalMode: "watch",
  pollIntervalMs: 500,
  requestTimeoutMs: 30_000,
  inProcessSleepMaxMs: 1_000,
  watchBackoffInitialMs: 100,
  watchBackoffMaxMs: 5_000,
  watchMaxFailures: 5,
  watchStableMs: 10_000,
} as const satisfies Omit<RuntimeSettings, Exclude<keyof InstanceEnv, keyof TuningOptions>>;

export function compileSettings(env: InstanceEnv, options: TuningOptions = {}): RuntimeSettings {
  for (const key of ["heartbeatIntervalMs", "pollIntervalMs", "requestTimeoutMs"] as const) {
    const v = options[key];
    if (v !== undefined && (!Number.isFinite(v) || v <= 0)) throw new RangeError(`options.${key} must be a positive number, got ${v}`);
  }
  const sleepMax = options.inProcessSleepMaxMs;
  if (sleepMax !== undefined && (!Number.isFinite(sleepMax) || sleepMax < 0)) {
    throw new RangeError(`options.inProcessSleepMaxMs must be a non-negative number, got ${sleepMax}`);
  }
  return {
    ...DEFAULTS,
    ...env,
    heartbeatIntervalMs: options.heartbeatIntervalMs ?? env.heartbeatIntervalMs ?? DEFAULTS.heartbeatIntervalMs,
    signalMode: options.signalMode ?? env.signalMode ?? DEFAULTS.signalMode,
    pollIntervalMs: options.pollIntervalMs ?? env.pollIntervalMs ?? DEFAULTS.pollIntervalMs,
    requestTimeoutMs: options.requestTimeoutMs ?? env.requestTimeoutMs ?? DEFAULTS.requestTimeoutMs,
    inProcessSleepMaxMs: sleepMax ?? DEFAULTS.inProcessSleepMaxMs,
  };
}
