import http from "node:http";
import http2 from "node:http2";
import net from "node:net";
import type tls from "node:tls";
import type { Req, Res } from "./refuse.js";

type Handler = (req: Req, res: Res) => void;

export interface OnePortServer {
  readonly address: net.AddressInfo;
  /** Stops accepting, lets in-flight requests finish up to graceMs, then closes what is left. */
  close(graceMs: number): Promise<void>;
}

/** What one client may hold of the server. */
export interface ConnectionLimits {
  /** Open connections at most; more are closed as they arrive. */
  maxConnections: number;
  /** Concurrent HTTP/2 streams per connection. */
  maxStreamsPerConnection: number;
  /** A request body that stalls this long is cut off. Responses (watch streams) are not timed. */
  bodyIdleTimeoutMs: number;
}

/** PEM material of a TLS listener. */
export interface TlsMaterial {
  cert: Buffer;
  key: Buffer;
  /** CA of client certificates: asked for, verified, and left to a gate to require. */
  clientCa?: Buffer;
}

export interface ListenOptions {
  port: number;
  host: string;
  limits: ConnectionLimits;
  tls?: TlsMaterial;
}

/** Until the protocol is known (cleartext sniff) or the TLS handshake is done. */
const HANDSHAKE_TIMEOUT_MS = 10_000;
/** An HTTP/2 connection without an open stream this long is closed (GOAWAY). */
const IDLE_SESSION_MS = 30_000;
/** Request headers must arrive within this (HTTP/1.1). */
const HEADERS_TIMEOUT_MS = 15_000;
/** A whole request body must arrive within this: an 8 GiB image at 2.4 MB/s. */
const BODY_TOTAL_MS = 3_600_000;

/**
 * One TCP listener for HTTP/1.1 and HTTP/2, cleartext or TLS. TLS: ALPN picks h2 or
 * http/1.1 (`allowHTTP1`). Cleartext: Node's `allowHTTP1` only works with TLS, so the first
 * bytes decide: an HTTP/2 preface (h2c prior knowledge) starts with "PRI"; anything else is
 * HTTP/1.1.
 */
export async function listenOnePort(handler: Handler, options: ListenOptions): Promise<OnePortServer> {
  const guarded = withBodyTimeouts(handler, options.limits.bodyIdleTimeoutMs);
  // HTTP/2's default 64 KiB flow-control windows and 16 KiB frames make a client-streamed
  // upload stop and wait for WINDOW_UPDATEs every 64 KiB; raw h2 uploads measured ~260 MB/s
  // with the defaults and ~650-780 MB/s with these. The windows bound what a client may send
  // ahead of the handler: 1 MiB per stream, 8 MiB per connection.
  const settings: http2.Settings = {
    initialWindowSize: 1024 * 1024,
    maxFrameSize: 1024 * 1024,
    maxConcurrentStreams: options.limits.maxStreamsPerConnection,
  };
  const sessions = new Set<http2.Http2Session>();
  const sockets = new Set<net.Socket>();
  const track = (socket: net.Socket) => {
    sockets.add(socket);
    socket.once("close", () => sockets.delete(socket));
    // Without this a client that resets before sending anything crashes the process.
    socket.on("error", () => socket.destroy());
  };
  const onSession = (session: http2.Http2Session) => {
    sessions.add(session);
    session.once("close", () => sessions.delete(session));
    session.setLocalWindowSize(8 * 1024 * 1024);
    closeWhenIdle(session);
  };

  let h1: http.Server | undefined;
  let server: net.Server;
  if (options.tls) {
    const secure = http2.createSecureServer(
      {
        settings,
        allowHTTP1: true,
        cert: options.tls.cert,
        key: options.tls.key,
        ...(options.tls.clientCa ? { ca: options.tls.clientCa, requestCert: true, rejectUnauthorized: false } : {}),
        handshakeTimeout: HANDSHAKE_TIMEOUT_MS,
      },
      guarded,
    );
    secure.on("session", onSession);
    secure.on("connection", track);
    // Failed handshakes (scanners, wrong CA) are the client's problem, not the server's.
    secure.on("tlsClientError", (_err: Error, socket: tls.TLSSocket) => socket.destroy());
    server = secure;
  } else {
    h1 = http.createServer(guarded as http.RequestListener);
    h1.headersTimeout = HEADERS_TIMEOUT_MS;
    h1.requestTimeout = BODY_TOTAL_MS;
    h1.keepAliveTimeout = 5_000;
    // h1 never listens itself (sockets are handed to it), so Node never starts its connection
    // tracking, which is what closeIdleConnections() and the headers timeout rely on; without it
    // an idle keep-alive client held close() open for the whole grace period.
    h1.emit("listening");
    const h2 = http2.createServer({ settings }, guarded);
    h2.on("session", onSession);
    const plain = h1;
    server = net.createServer((socket) => {
      track(socket);
      socket.setTimeout(HANDSHAKE_TIMEOUT_MS, () => socket.destroy());
      socket.once("readable", function sniff() {
        const head: Buffer | null = socket.read(3) ?? socket.read();
        if (head === null) return void socket.once("readable", sniff);
        socket.setTimeout(0);
        socket.unshift(head);
        (head.toString("latin1") === "PRI" ? h2 : plain).emit("connection", socket);
      });
    });
  }
  server.maxConnections = options.limits.maxConnections;

  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(options.port, options.host, () => {
      server.off("error", reject);
      resolve();
    });
  });

  return {
    address: server.address() as net.AddressInfo,
    async close(graceMs) {
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      // Closes idle keep-alive connections and stops h1's connection-checking timer.
      h1?.close(() => {});
      for (const session of sessions) session.close(); // GOAWAY: finish open streams, no new ones
      const deadline = setTimeout(() => {
        for (const socket of sockets) socket.destroy();
      }, graceMs);
      deadline.unref();
      // Idle HTTP/1.1 keep-alive sockets would hold close() open; close them as they go idle.
      const sweeper = setInterval(() => h1?.closeIdleConnections(), 100);
      sweeper.unref();
      await closed;
      clearTimeout(deadline);
      clearInterval(sweeper);
    },
  };
}

/** GOAWAY to a session that has had no open stream for IDLE_SESSION_MS. */
function closeWhenIdle(session: http2.Http2Session): void {
  let open = 0;
  let timer: NodeJS.Timeout | undefined;
  const arm = () => {
    timer = setTimeout(() => session.close(), IDLE_SESSION_MS);
    timer.unref();
  };
  session.on("stream", (stream: http2.ServerHttp2Stream) => {
    open++;
    clearTimeout(timer);
    stream.once("close", () => {
      if (--open === 0 && !session.closed) arm();
    });
  });
  session.once("close", () => clearTimeout(timer));
  arm();
}

/**
 * A request body must keep coming (`idleMs` between bytes) and end within BODY_TOTAL_MS;
 * a trickled body otherwise holds a connection and a handler forever. Once the body has
 * ended, the response (a watch stream may be quiet for hours) is not timed.
 */
function withBodyTimeouts(handler: Handler, idleMs: number): Handler {
  return (req, res) => {
    if (!req.complete) {
      const cut = () => {
        if ("stream" in req) req.stream.close(http2.constants.NGHTTP2_CANCEL);
        else req.socket?.destroy();
      };
      const total = setTimeout(cut, BODY_TOTAL_MS);
      total.unref();
      req.setTimeout(idleMs, cut);
      const done = () => {
        clearTimeout(total);
        // A closed HTTP/1.1 request has no socket left (setTimeout would throw); a closed
        // HTTP/2 stream has nothing left to time.
        if ("stream" in req ? !req.stream.destroyed : req.socket !== null) req.setTimeout(0);
      };
      req.once("end", done);
      req.once("close", done);
      // An HTTP/2 answer given before the body ended (a refusal, a size limit): the rest of the
      // body is unwanted, and Node would keep buffering it; end the stream (RFC 9113 §8.1).
      if ("stream" in req) {
        const stream = req.stream;
        res.once("finish", () => {
          if (!req.complete && !stream.closed) stream.close(http2.constants.NGHTTP2_NO_ERROR);
        });
      }
    }
    handler(req, res);
  };
}
