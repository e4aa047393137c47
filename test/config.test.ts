import assert from "node:assert/strict";
import path from "node:path";
import { describe, it } from "node:test";
import { compileOptions, ConfigError, readEnvironmentOptions } from "../src/config.js";

/** Reads then compiles, as startup does. */
const load = (env: NodeJS.ProcessEnv) => compileOptions(readEnvironmentOptions(env));

describe("configuration from environment variables", () => {
  it("uses the documented defaults when nothing is set", () => {
    const o = load({});
    assert.equal(o.httpPort, 8002);
    assert.equal(o.coreAddr, "127.0.0.1:8001");
    assert.equal(o.coreHost, "127.0.0.1");
    assert.equal(o.corePort, 8001);
    assert.equal(o.dataDir, path.resolve(".data"));
    assert.equal(o.skipCertVerification, false);
    assert.equal(o.databaseUrl, undefined, "no URL means the embedded database");
    assert.equal(o.networkMode, "isolated", "own network namespace; host only as an opt-in");
    assert.equal(o.executionTimeoutSecs, 300);
    assert.deepEqual(o.corsOrigins, []);
    assert.equal(o.logLevel, "info");
  });

  it("reads every documented variable", () => {
    const o = load({
      RUNTARA_ENV_HTTP_PORT: "9100",
      RUNTARA_CORE_ADDR: "core.internal:9001",
      DATA_DIR: "/var/lib/runtara",
      RUNTARA_SKIP_CERT_VERIFICATION: "true",
      RUNTARA_DATABASE_URL: "postgresql://u:p@db:5432/runtara",
      RUNTARA_DB_POOL_SIZE: "7",
      EXECUTION_TIMEOUT_SECS: "60",
      RUNTARA_NETWORK_MODE: "none",
      RUNTARA_CORS_ORIGINS: "http://a.test, https://b.test:8443",
      LOG_LEVEL: "debug",
    });
    assert.equal(o.httpPort, 9100);
    assert.equal(o.coreHost, "core.internal");
    assert.equal(o.corePort, 9001);
    assert.equal(o.dataDir, "/var/lib/runtara");
    assert.equal(o.skipCertVerification, true);
    assert.equal(o.databaseUrl, "postgresql://u:p@db:5432/runtara");
    assert.equal(o.dbPoolSize, 7);
    assert.equal(o.executionTimeoutSecs, 60);
    assert.equal(o.networkMode, "none");
    assert.deepEqual(o.corsOrigins, ["http://a.test", "https://b.test:8443"]);
    assert.equal(o.logLevel, "debug");
  });

  it("prefers RUNTARA_ENVIRONMENT_DATABASE_URL over RUNTARA_DATABASE_URL", () => {
    const both = readEnvironmentOptions({
      RUNTARA_ENVIRONMENT_DATABASE_URL: "postgres://env@h/envdb",
      RUNTARA_DATABASE_URL: "postgres://shared@h/shared",
    });
    assert.equal(both.databaseUrl, "postgres://env@h/envdb");
    const fallback = readEnvironmentOptions({ RUNTARA_DATABASE_URL: "postgres://shared@h/shared" });
    assert.equal(fallback.databaseUrl, "postgres://shared@h/shared");
    const emptyPreferred = readEnvironmentOptions({ RUNTARA_ENVIRONMENT_DATABASE_URL: "", RUNTARA_DATABASE_URL: "postgres://shared@h/shared" });
    assert.equal(emptyPreferred.databaseUrl, "postgres://shared@h/shared", "an empty variable counts as unset");
  });

  it("accepts the usual spellings of booleans", () => {
    for (const v of ["true", "TRUE", "1", "yes", "on"]) assert.equal(load({ RUNTARA_SKIP_CERT_VERIFICATION: v }).skipCertVerification, true, v);
    for (const v of ["false", "0", "no", "off"]) assert.equal(load({ RUNTARA_SKIP_CERT_VERIFICATION: v }).skipCertVerification, false, v);
  });

  const invalid: [string, NodeJS.ProcessEnv][] = [
    ["RUNTARA_ENV_HTTP_PORT", { RUNTARA_ENV_HTTP_PORT: "abc" }],
    ["RUNTARA_ENV_HTTP_PORT", { RUNTARA_ENV_HTTP_PORT: "70000" }],
    ["RUNTARA_ENV_HTTP_PORT", { RUNTARA_ENV_HTTP_PORT: "-1" }],
    ["RUNTARA_ENV_HTTP_PORT", { RUNTARA_ENV_HTTP_PORT: "80.5" }],
    ["RUNTARA_CORE_ADDR", { RUNTARA_CORE_ADDR: "nope" }],
    ["RUNTARA_CORE_ADDR", { RUNTARA_CORE_ADDR: "host:99999" }],
    ["RUNTARA_SKIP_CERT_VERIFICATION", { RUNTARA_SKIP_CERT_VERIFICATION: "maybe" }],
    ["RUNTARA_DATABASE_URL", { RUNTARA_DATABASE_URL: "mysql://x" }],
    ["RUNTARA_ENVIRONMENT_DATABASE_URL", { RUNTARA_ENVIRONMENT_DATABASE_URL: "mysql://x", RUNTARA_DATABASE_URL: "postgres://ok@h/db" }],
    ["RUNTARA_NETWORK_MODE", { RUNTARA_NETWORK_MODE: "bridge" }],
    ["LOG_LEVEL", { LOG_LEVEL: "loud" }],
    ["RUNTARA_DB_POOL_SIZE", { RUNTARA_DB_POOL_SIZE: "0" }],
    ["EXECUTION_TIMEOUT_SECS", { EXECUTION_TIMEOUT_SECS: "soon" }],
    // Above 24.8 days a timer fires at once (every instance killed); the bound is 7 days.
    ["EXECUTION_TIMEOUT_SECS", { EXECUTION_TIMEOUT_SECS: "3000000" }],
    ["EXECUTION_TIMEOUT_SECS", { EXECUTION_TIMEOUT_SECS: "604801" }],
    ["RUNTARA_SHUTDOWN_GRACE_MS", { RUNTARA_SHUTDOWN_GRACE_MS: "99999999999" }],
    ["RUNTARA_MAX_PAYLOAD_BYTES", { RUNTARA_MAX_PAYLOAD_BYTES: "9999999999999" }],
    ["RUNTARA_MEMORY_LIMIT_BYTES", { RUNTARA_MEMORY_LIMIT_BYTES: "99999999999999999" }],
    ["RUNTARA_MAX_REQUEST_BYTES", { RUNTARA_MAX_REQUEST_BYTES: "100" }],
    ["RUNTARA_WAKE_BATCH_SIZE", { RUNTARA_WAKE_BATCH_SIZE: "0" }],
    ["RUNTARA_NOFILE_LIMIT", { RUNTARA_NOFILE_LIMIT: "99999999" }],
    ["RUNTARA_EMBED_CORE", { RUNTARA_EMBED_CORE: "perhaps" }],
    ["RUNTARA_MAX_LOG_BYTES", { RUNTARA_MAX_LOG_BYTES: "1000" }],
    ["RUNTARA_MAX_LOG_BYTES", { RUNTARA_MAX_LOG_BYTES: "2147483648" }],
    ["RUNTARA_MAX_FILE_BYTES", { RUNTARA_MAX_FILE_BYTES: "1000" }],
    ["RUNTARA_TOTAL_PIDS_MAX", { RUNTARA_TOTAL_PIDS_MAX: "-1" }],
    ["RUNTARA_TOTAL_MEMORY_BYTES", { RUNTARA_TOTAL_MEMORY_BYTES: "lots" }],
    ["RUNTARA_MAX_FILE_BYTES", { RUNTARA_MAX_LOG_BYTES: "4194304", RUNTARA_MAX_FILE_BYTES: "2097152" }],
    // A log cut only once past the cap, with the limit at or below the cap, kills its workflow.
    ["RUNTARA_MAX_FILE_BYTES", { RUNTARA_MAX_LOG_BYTES: "2097152", RUNTARA_MAX_FILE_BYTES: "2097152" }],
    ["RUNTARA_CORS_ORIGINS", { RUNTARA_CORS_ORIGINS: "example.test" }],
  ];
  for (const [name, env] of invalid) {
    it(`refuses ${name}=${Object.values(env)[0]} naming the variable`, () => {
      assert.throws(
        () => load(env),
        (e: unknown) => e instanceof ConfigError && e.message.includes(name),
      );
    });
  }

  it("takes a file-size limit one byte above the log cap, and not less", () => {
    assert.equal(load({ RUNTARA_MAX_LOG_BYTES: "1048576", RUNTARA_MAX_FILE_BYTES: "1048577" }).maxFileBytes, 1048577);
    assert.throws(() => load({ RUNTARA_MAX_LOG_BYTES: "1048576", RUNTARA_MAX_FILE_BYTES: "1048576" }), /must be below maxFileBytes \(RUNTARA_MAX_FILE_BYTES\), got 1048576 >= 1048576/);
  });

  it("refuses invalid options passed in code, naming the option", () => {
    assert.throws(() => compileOptions({ httpPort: 65536 }), /httpPort/);
    assert.throws(() => compileOptions({ coreAddr: "nope" }), /coreAddr/);
    assert.throws(() => compileOptions({ networkMode: "bridge" as "host" }), /networkMode/);
    assert.throws(() => compileOptions({ logLevel: "loud" }), /logLevel/);
    assert.throws(() => compileOptions({ dataDir: "" }), /dataDir/);
    assert.throws(() => compileOptions({ executionTimeoutSecs: 3_000_000 }), /executionTimeoutSecs/);
    assert.throws(() => compileOptions({ shutdownGraceMs: -1 }), /shutdownGraceMs/);
    assert.throws(() => compileOptions({ cpuPeriodUs: 10 }), /cpuPeriodUs/);
    assert.throws(() => compileOptions({ maxLogBytes: 1 }), /maxLogBytes/);
  });
});
