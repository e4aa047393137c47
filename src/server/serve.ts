import { setMaxListeners } from "node:events";
import type { ConnectRouter, Interceptor } from "@connectrpc/connect";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import type { Logger } from "pino";
import { withCors } from "./cors.js";
import { listenOnePort, type OnePortServer } from "./http.js";
import { observeCalls } from "./interceptors.js";

export interface ServeOptions {
  routes: (router: ConnectRouter) => void;
  port: number;
  host: string;
  corsOrigins: readonly string[];
  logger: Logger;
  /** Largest single message accepted (stream messages count one by one). */
  readMaxBytes: number;
  /** Aborted when the server shuts down; ends server streams so close() can finish. */
  shutdownSignal: AbortSignal;
  /** Interceptors after logging/error mapping (e.g. API-key auth). */
  interceptors?: Interceptor[];
}

/** gRPC, gRPC-Web and Connect (JSON and binary) over HTTP/1.1 and h2c on one port. */
export function serve(options: ServeOptions): Promise<OnePortServer> {
  // Every in-flight call listens on the shutdown signal; many at once is normal.
  setMaxListeners(0, options.shutdownSignal);
  const handler = connectNodeAdapter({
    routes: options.routes,
    interceptors: [observeCalls(options.logger), ...(options.interceptors ?? [])],
    readMaxBytes: options.readMaxBytes,
    shutdownSignal: options.shutdownSignal,
  });
  return listenOnePort(withCors(options.corsOrigins, handler), options.port, options.host);
}
