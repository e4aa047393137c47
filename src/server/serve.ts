import { setMaxListeners } from "node:events";
import type { ConnectRouter, Interceptor } from "@connectrpc/connect";
import type { Logger } from "pino";
import { connectHandler } from "./connect-adapter.js";
import { withConsole, type ConsoleAssets } from "./console-assets.js";
import { withCors } from "./cors.js";
import { withGates, type Gate } from "./gates.js";
import { listenOnePort, type ConnectionLimits, type OnePortServer, type TlsMaterial } from "./http.js";
import { observeCalls } from "./interceptors.js";
import { withOperations, type Operations } from "./operations.js";
import type { Metrics } from "../metrics/index.js";

export interface ServeOptions {
  routes: (router: ConnectRouter) => void;
  port: number;
  host: string;
  /** Browser origins allowed (empty: no CORS headers at all). */
  corsOrigins: readonly string[];
  logger: Logger;
  /** Largest single message accepted (stream messages count one by one). */
  readMaxBytes: number;
  /** Aborted when the server shuts down; ends server streams so close() can finish. */
  shutdownSignal: AbortSignal;
  limits: ConnectionLimits;
  tls?: TlsMaterial;
  /** Checks of headers and connection before the body is read (API keys, Host, client certificate). */
  gates?: readonly Gate[];
  /** Interceptors after logging/error mapping (e.g. the tenant of an API key). */
  interceptors?: Interceptor[];
  /** Where RPC counts and latencies are recorded. */
  metrics: Metrics;
  /** /healthz, /readyz and /metrics on this port, and who may read /metrics. */
  operations?: { ops: Operations; metricsGate: Gate };
  /** The web console's files, served at /ui behind the same gates. */
  console?: ConsoleAssets;
}

/** gRPC, gRPC-Web (binary and text) and Connect (JSON and binary) over HTTP/1.1 and HTTP/2 on one port. */
export function serve(options: ServeOptions): Promise<OnePortServer> {
  // Every in-flight call listens on the shutdown signal; many at once is normal.
  setMaxListeners(0, options.shutdownSignal);
  const handler = connectHandler({
    routes: options.routes,
    interceptors: [observeCalls(options.logger, options.metrics.rpcDuration), ...(options.interceptors ?? [])],
    readMaxBytes: options.readMaxBytes,
    shutdownSignal: options.shutdownSignal,
  });
  // CORS preflights carry no credentials, so they are answered before the gates.
  const op = options.operations;
  const withOps = op ? withOperations(op.ops, op.metricsGate, handler) : handler;
  const served = options.console ? withConsole(options.console, withOps) : withOps;
  return listenOnePort(withCors(options.corsOrigins, withGates(options.gates ?? [], served)), options);
}
