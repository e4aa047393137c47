import { chmod, mkdir, unlink } from "node:fs/promises";
import net from "node:net";
import path from "node:path";
import type { Logger } from "pino";

/** Longest path a Unix socket address holds (sun_path, with its terminating NUL). */
const MAX_SOCKET_PATH = 107;

export interface UnixForwarder {
  readonly path: string;
  close(): Promise<void>;
}

/**
 * Core for containers that have their own network namespace (host loopback is out of their
 * reach): a Unix socket at `socketPath` whose connections are piped byte for byte to core's
 * listener through `connect`. Bytes, not requests, so whatever that listener does (HTTP/1.1
 * and HTTP/2, connection limits) applies unchanged, for an embedded and a standalone core
 * alike. Workflows speak cleartext on the socket; when core speaks TLS, `connect` wraps the
 * bytes in it, naming the protocol the workflow chose (its first bytes) for ALPN.
 *
 * Permissions: the directory is 0711 root (traversable, not listable, not writable: nothing
 * can be planted next to the socket) and is what containers get mounted; the socket is 0666
 * because container root is an unprivileged host uid. That lets any local user connect too,
 * which grants no more than core's TCP port on loopback already does: every call needs an
 * instance token.
 */
export async function forwardUnixSocket(
  socketPath: string,
  connect: (protocol: "h2" | "http/1.1") => net.Socket,
  logger: Logger,
): Promise<UnixForwarder> {
  if (Buffer.byteLength(socketPath) > MAX_SOCKET_PATH) {
    throw new Error(`core socket path ${socketPath} is longer than ${MAX_SOCKET_PATH} bytes; use a shorter DATA_DIR`);
  }
  const dir = path.dirname(socketPath);
  await mkdir(dir, { recursive: true, mode: 0o711 });
  await chmod(dir, 0o711);
  // A socket left by an earlier run of the environment (only this process serves this path).
  await unlink(socketPath).catch((e: NodeJS.ErrnoException) => {
    if (e.code !== "ENOENT") throw e;
  });
  const sockets = new Set<net.Socket>();
  const server = net.createServer((inbound) => {
    sockets.add(inbound);
    inbound.once("close", () => sockets.delete(inbound));
    inbound.on("error", () => inbound.destroy());
    inbound.setTimeout(10_000, () => inbound.destroy()); // until the first bytes
    inbound.once("readable", function sniff() {
      const head: Buffer | null = inbound.read(3) ?? inbound.read();
      if (head === null) return void inbound.once("readable", sniff);
      inbound.setTimeout(0);
      inbound.unshift(head);
      const outbound = connect(head.toString("latin1") === "PRI" ? "h2" : "http/1.1");
      sockets.add(outbound);
      outbound.once("close", () => sockets.delete(outbound));
      // Either side failing or ending takes the other with it; nothing to report to the peer.
      inbound.on("error", () => outbound.destroy());
      outbound.on("error", (err) => {
        logger.debug({ err }, "core connection from a container failed");
        inbound.destroy();
      });
      inbound.pipe(outbound).pipe(inbound);
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(socketPath, () => {
      server.off("error", reject);
      resolve();
    });
  });
  await chmod(socketPath, 0o666);
  return {
    path: socketPath,
    async close() {
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      for (const s of sockets) s.destroy();
      await closed;
    },
  };
}
