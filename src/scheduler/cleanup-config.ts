import { ConfigError, envReader } from "../env-vars.js";

// NOTE: src/config.ts is meant to import this module (for EnvironmentOptions and
// readEnvironmentOptions) while this module imports ConfigError from it. That cycle is safe
// only as long as neither module reads the other's bindings at top level: keep every use
// inside functions (spreading `cleanupDefaults` into config.ts's top-level `defaults` object
// would hit the temporal dead zone when this module is loaded first).

const SECOND = 1_000;
const HOUR = 3_600 * SECOND;
const DAY = 24 * HOUR;

/**
 * Settings of the three cleanup workers (SPEC §7, reference §3.4/§7.3–7.5/§8). Durations
 * are milliseconds here; the environment variables use the reference's seconds and days.
 */
export interface CleanupOptions {
  /** Run directories untouched this long (and whose instance is not live) are removed. @default 24 h */
  runCleanupMaxAgeMs?: number;
  /** How often run directories are scanned. @default 1 h */
  runCleanupIntervalMs?: number;
  /** Delete terminal instances (and their checkpoints, events, signals) after a retention. @default false */
  dbCleanupEnabled?: boolean;
  /** How often the database retention pass runs. @default 1 h */
  dbCleanupIntervalMs?: number;
  /** Retention of terminal instances, counted from finished_at. @default 30 days */
  dbCleanupMaxAgeMs?: number;
  /** Instances deleted per statement. @default 100 */
  dbCleanupBatchSize?: number;
  /** Delete images unused for a retention, and image directories without a row. @default false */
  imageCleanupEnabled?: boolean;
  /** How often the image cleanup runs. @default 6 h */
  imageCleanupIntervalMs?: number;
  /** Retention of an unused image, counted from last use (or registration). @default 7 days */
  imageCleanupMaxAgeMs?: number;
  /** Images deleted per statement. @default 50 */
  imageCleanupBatchSize?: number;
}

export type CompiledCleanupOptions = Readonly<Required<CleanupOptions>>;

export const cleanupDefaults = {
  runCleanupMaxAgeMs: 24 * HOUR,
  runCleanupIntervalMs: HOUR,
  dbCleanupEnabled: false,
  dbCleanupIntervalMs: 3_600 * SECOND,
  dbCleanupMaxAgeMs: 30 * DAY,
  dbCleanupBatchSize: 100,
  imageCleanupEnabled: false,
  imageCleanupIntervalMs: 21_600 * SECOND,
  imageCleanupMaxAgeMs: 7 * DAY,
  imageCleanupBatchSize: 50,
} as const satisfies CompiledCleanupOptions;

/**
 * Upper bound of every interval: Node's setTimeout fires at once (after 1 ms) for delays
 * above 2^31-1 ms (~24.8 days), which would turn a "monthly" pass into a hot loop.
 */
const MAX_INTERVAL_SECS = 24 * 86_400;
const MAX_INTERVAL_MS = MAX_INTERVAL_SECS * SECOND;
/** Ages beyond this are certainly a typo (100 years). */
const MAX_AGE_DAYS = 36_500;
const MAX_AGE_MS = MAX_AGE_DAYS * DAY;
const MAX_BATCH = 10_000;

/** Environment variable → option, for the messages of compileCleanupOptions as well. */
export const cleanupVariables = {
  runCleanupMaxAgeMs: "RUNTARA_RUN_CLEANUP_MAX_AGE_SECS",
  runCleanupIntervalMs: "RUNTARA_RUN_CLEANUP_INTERVAL_SECS",
  dbCleanupEnabled: "RUNTARA_DB_CLEANUP_ENABLED",
  dbCleanupIntervalMs: "RUNTARA_DB_CLEANUP_POLL_INTERVAL_SECS",
  dbCleanupMaxAgeMs: "RUNTARA_DB_CLEANUP_MAX_AGE_DAYS",
  dbCleanupBatchSize: "RUNTARA_DB_CLEANUP_BATCH_SIZE",
  imageCleanupEnabled: "RUNTARA_IMAGE_CLEANUP_ENABLED",
  imageCleanupIntervalMs: "RUNTARA_IMAGE_CLEANUP_POLL_INTERVAL_SECS",
  imageCleanupMaxAgeMs: "RUNTARA_IMAGE_CLEANUP_MAX_AGE_DAYS",
  imageCleanupBatchSize: "RUNTARA_IMAGE_CLEANUP_BATCH_SIZE",
} as const satisfies Record<keyof CleanupOptions, string>;

/**
 * Maps the cleanup environment variables to options; unset (or empty) variables stay
 * undefined so that defaults are filled in one place (compileCleanupOptions). An invalid
 * value throws ConfigError naming the variable — never a silent fallback to the default
 * (the reference's weak spot: "unparsable numeric worker values fall back to defaults").
 */
export function readCleanupOptions(env: NodeJS.ProcessEnv): CleanupOptions {
  const { int: integer, bool } = envReader(env);
  const int = (name: string, min: number, max: number, unitMs: number) => {
    const v = integer(name, min, max);
    return v === undefined ? undefined : v * unitMs;
  };
  const v = cleanupVariables;
  return {
    runCleanupMaxAgeMs: int(v.runCleanupMaxAgeMs, 1, MAX_AGE_DAYS * 86_400, SECOND),
    runCleanupIntervalMs: int(v.runCleanupIntervalMs, 1, MAX_INTERVAL_SECS, SECOND),
    dbCleanupEnabled: bool(v.dbCleanupEnabled),
    dbCleanupIntervalMs: int(v.dbCleanupIntervalMs, 1, MAX_INTERVAL_SECS, SECOND),
    dbCleanupMaxAgeMs: int(v.dbCleanupMaxAgeMs, 1, MAX_AGE_DAYS, DAY),
    dbCleanupBatchSize: int(v.dbCleanupBatchSize, 1, MAX_BATCH, 1),
    imageCleanupEnabled: bool(v.imageCleanupEnabled),
    imageCleanupIntervalMs: int(v.imageCleanupIntervalMs, 1, MAX_INTERVAL_SECS, SECOND),
    imageCleanupMaxAgeMs: int(v.imageCleanupMaxAgeMs, 1, MAX_AGE_DAYS, DAY),
    imageCleanupBatchSize: int(v.imageCleanupBatchSize, 1, MAX_BATCH, 1),
  };
}

/**
 * Fills defaults and validates options given programmatically (the embeddable runtime);
 * messages name the option. Returns a frozen object with every field set.
 */
export function compileCleanupOptions(options: CleanupOptions = {}): CompiledCleanupOptions {
  const o: Required<CleanupOptions> = { ...cleanupDefaults };
  for (const key of Object.keys(cleanupDefaults) as (keyof CleanupOptions)[]) {
    const value = options[key];
    if (value !== undefined) (o as Record<keyof CleanupOptions, unknown>)[key] = value;
  }
  const range = (name: keyof CleanupOptions, v: number, min: number, max: number) => {
    if (typeof v !== "number" || !Number.isInteger(v) || v < min || v > max) {
      throw new ConfigError(`${name} must be an integer between ${min} and ${max}, got ${String(v)}`);
    }
  };
  const flag = (name: keyof CleanupOptions, v: boolean) => {
    if (typeof v !== "boolean") throw new ConfigError(`${name} must be true or false, got ${String(v)}`);
  };
  range("runCleanupMaxAgeMs", o.runCleanupMaxAgeMs, 1, MAX_AGE_MS);
  range("runCleanupIntervalMs", o.runCleanupIntervalMs, 1, MAX_INTERVAL_MS);
  flag("dbCleanupEnabled", o.dbCleanupEnabled);
  range("dbCleanupIntervalMs", o.dbCleanupIntervalMs, 1, MAX_INTERVAL_MS);
  range("dbCleanupMaxAgeMs", o.dbCleanupMaxAgeMs, 1, MAX_AGE_MS);
  range("dbCleanupBatchSize", o.dbCleanupBatchSize, 1, MAX_BATCH);
  flag("imageCleanupEnabled", o.imageCleanupEnabled);
  range("imageCleanupIntervalMs", o.imageCleanupIntervalMs, 1, MAX_INTERVAL_MS);
  range("imageCleanupMaxAgeMs", o.imageCleanupMaxAgeMs, 1, MAX_AGE_MS);
  range("imageCleanupBatchSize", o.imageCleanupBatchSize, 1, MAX_BATCH);
  return Object.freeze(o);
}
