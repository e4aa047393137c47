import http from "node:http";
import http2 from "node:http2";
import net from "node:net";

type Handler = (req: http.IncomingMessage | http2.Http2ServerRequest, res: http.ServerResponse | http2.Http2ServerResponse) => void;

export interface OnePortServer {
  readonly address: net.AddressInfo;
  /** Stops accepting, lets in-flight requests finish up to graceMs, then closes what is left. */
  close(graceMs: number): Promise<void>;
}

/**
 * One TCP listener for HTTP/1.1 and HTTP/2 cleartext (h2c prior knowledge). Node's
 * `allowHTTP1` only works with TLS, so the first bytes decide: an HTTP/2 preface starts
 * with "PRI"; anything else is HTTP/1.1.
 */
export async function listenOnePort(handler: Handler, port: number, host: string): Promise<OnePortServer> {
  const h1 = http.createServer(handler as http.RequestListener);
  // Long uploads must not be cut off by Node's default 5-minute request timeout.
  h1.requestTimeout = 0;
  h1.keepAliveTimeout = 5_000;
  // h1 never listens itself (sockets are handed to it), so Node never starts its connection
  // tracking, which is what closeIdleConnections() and the headers timeout rely on; without it
  // an idle keep-alive client held close() open for the whole grace period.
  h1.emit("listening");
  // HTTP/2's default 64 KiB flow-control windows and 16 KiB frames make a client-streamed
  // upload stop and wait for WINDOW_UPDATEs every 64 KiB; raw h2 uploads measured ~260 MB/s
  // with the defaults and ~650-780 MB/s with these. The windows bound what a client may send
  // ahead of the handler: 1 MiB per stream, 8 MiB per connection.
  const h2 = http2.createServer(
    { settings: { initialWindowSize: 1024 * 1024, maxFrameSize: 1024 * 1024 } },
    handler as (req: http2.Http2ServerRequest, res: http2.Http2ServerResponse) => void,
  );
  const sockets = new Set<net.Socket>();
  const sessions = new Set<http2.Http2Session>();
  h2.on("session", (session) => {
    sessions.add(session);
    session.setLocalWindowSize(8 * 1024 * 1024);
    session.once("close", () => sessions.delete(session));
  });

  const server = net.createServer((socket) => {
    sockets.add(socket);
    socket.once("close", () => sockets.delete(socket));
    // Without this a client that resets before sending anything crashes the process.
    socket.on("error", () => socket.destroy());
    socket.setTimeout(10_000, () => socket.destroy()); // only until the protocol is known
    socket.once("readable", function sniff() {
      const head: Buffer | null = socket.read(3) ?? socket.read();
      if (head === null) return void socket.once("readable", sniff);
      socket.setTimeout(0);
      socket.unshift(head);
      (head.toString("latin1") === "PRI" ? h2 : h1).emit("connection", socket);
    });
  });

  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, host, () => {
      server.off("error", reject);
      resolve();
    });
  });

  return {
    address: server.address() as net.AddressInfo,
    async close(graceMs) {
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      // Closes idle keep-alive connections and stops h1's connection-checking timer.
      h1.close(() => {});
      for (const session of sessions) session.close(); // GOAWAY: finish open streams, no new ones
      const deadline = setTimeout(() => {
        for (const socket of sockets) socket.destroy();
      }, graceMs);
      deadline.unref();
      // Idle HTTP/1.1 keep-alive sockets would hold close() open; close them as they go idle.
      const sweeper = setInterval(() => h1.closeIdleConnections(), 100);
      sweeper.unref();
      await closed;
      clearTimeout(deadline);
      clearInterval(sweeper);
    },
  };
}
