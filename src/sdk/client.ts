import { Code, ConnectError, createClient, type Client, type Interceptor, type Transport } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import net from "node:net";
import { InstanceService } from "../../gen/runtara/core/v1/instance_pb.js";
import type { RuntimeSettings } from "./settings.js";
import { backoff, delay } from "./timers.js";

export type InstanceClient = Client<typeof InstanceService>;

/** Adds `authorization: Bearer <RUNTARA_INSTANCE_TOKEN>` to every call. */
export function bearerInterceptor(token: string): Interceptor {
  return (next) => async (req) => {
    req.header.set("authorization", `Bearer ${token}`);
    return await next(req);
  };
}

/**
 * Retries unary calls that fail with UNAVAILABLE (core restarting, connection refused) or
 * lose their connection before an answer (core killed mid-call: the call may or may not have
 * been applied) until the call's own deadline, so a short core outage does not fail a
 * workflow. InstanceService calls tolerate a repeat: checkpoints are first-write-wins, a
 * repeated Sleep answers as the first did, the other status-changing calls are guarded and
 * report `applied`. EmitEvent does not (each call appends an event), so it is retried only
 * on UNAVAILABLE, not after its connection dropped mid-call. Streams are not retried here;
 * the signal watcher reconnects on its own.
 */
export function retryTransientInterceptor(initialMs = 100, maxMs = 2_000): Interceptor {
  return (next) => async (req) => {
    if (req.stream) return await next(req);
    // Stop retrying before the call's deadline, so the caller sees the real cause
    // ("connection refused") rather than a bare deadline_exceeded.
    const timeoutMs = Number(req.header.get("connect-timeout-ms"));
    const deadline = timeoutMs > 0 ? Date.now() + timeoutMs : Number.POSITIVE_INFINITY;
    for (let attempt = 1; ; attempt++) {
      try {
        return await next(req);
      } catch (err) {
        if (req.signal.aborted || !(err instanceof ConnectError) || !isTransient(err, req.method.name)) throw err;
        const wait = backoff(attempt, initialMs, maxMs);
        if (Date.now() + wait + 100 >= deadline) throw err;
        try {
          await delay(wait, { signal: req.signal });
        } catch {
          throw err; // aborted while waiting: report the last real failure
        }
      }
    }
  };
}

/** Calls whose repeat is not harmless: each appends. */
const APPENDING = new Set(["EmitEvent"]);

/**
 * UNAVAILABLE, or (for calls a repeat does not double) a connection that closed under the
 * call: connect-node reports the peer's close as CANCELED and a reset as ABORTED/ECONNRESET;
 * core itself never answers either.
 */
function isTransient(err: ConnectError, method: string): boolean {
  if (err.code === Code.Unavailable) return true;
  if (APPENDING.has(method)) return false;
  if (err.code === Code.Canceled) return true;
  for (let cause: unknown = err.cause; cause instanceof Error; cause = cause.cause) {
    const code = (cause as NodeJS.ErrnoException).code;
    if (code === "ECONNRESET" || code === "EPIPE") return true;
  }
  return false;
}

/**
 * h2c (or h2 over TLS) to core: one connection carries the WatchSignals stream and every
 * unary call. Pings detect a dead connection under an idle watch stream. A `unix:/path`
 * core URL speaks the same h2c over that socket (http2.connect's `createConnection`).
 */
export function createInstanceTransport(settings: RuntimeSettings): Transport {
  const socketPath = settings.coreUrl.startsWith("unix:") ? settings.coreUrl.slice("unix:".length) : undefined;
  return createConnectTransport({
    baseUrl: socketPath === undefined ? settings.coreUrl : "http://localhost",
    httpVersion: "2",
    useBinaryFormat: true,
    defaultTimeoutMs: settings.requestTimeoutMs,
    pingIntervalMs: 15_000,
    pingTimeoutMs: 10_000,
    interceptors: [bearerInterceptor(settings.token), retryTransientInterceptor()],
    ...(socketPath !== undefined ? { nodeOptions: { createConnection: () => net.connect(socketPath) } } : {}),
    ...(settings.skipCertVerification && settings.coreUrl.startsWith("https:")
      ? { nodeOptions: { rejectUnauthorized: false } }
      : {}),
  });
}

export function createInstanceClient(transport: Transport): InstanceClient {
  return createClient(InstanceService, transport);
}

/** True for a refusal because the instance is in the wrong state for the call. */
export function isFailedPrecondition(err: unknown): boolean {
  return err instanceof ConnectError && err.code === Code.FailedPrecondition;
}
