import { randomUUID } from "node:crypto";
import { Code, ConnectError, type Interceptor, type StreamResponse } from "@connectrpc/connect";
import { codeToString } from "@connectrpc/connect/protocol-connect";
import type { Logger } from "pino";
import { isDatabaseUnavailable } from "../db/errors.js";
import { isDiskFull, toConnectError } from "./errors.js";

const REQUEST_ID = /^[A-Za-z0-9._:-]{1,128}$/;

/** Probes and tooling that call all day: their lines are at debug, so they do not flood the log. */
const QUIET_SERVICES = new Set(["grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection", "grpc.reflection.v1alpha.ServerReflection"]);
const QUIET_METHODS = new Set(["runtara.environment.v1.EnvironmentService/HealthCheck", "runtara.core.v1.CoreService/HealthCheck"]);

/**
 * One log line per RPC (method, code, duration, request id), its latency by method and code,
 * and the error-to-code mapping, for unary and streaming calls alike. A client-supplied
 * x-request-id is echoed when sane.
 */
export function observeCalls(logger: Logger, latency: { observe(labels: { method: string; code: string }, seconds: number): void }): Interceptor {
  return (next) => async (req) => {
    const started = performance.now();
    const supplied = req.header.get("x-request-id");
    const requestId = supplied && REQUEST_ID.test(supplied) ? supplied : randomUUID();
    const method = `${req.service.typeName}/${req.method.name}`;
    const level = QUIET_SERVICES.has(req.service.typeName) || QUIET_METHODS.has(method) ? "debug" : "info";
    const log = (error?: unknown) => {
      const elapsed = performance.now() - started;
      const ms = Math.round(elapsed * 100) / 100;
      if (error === undefined) {
        latency.observe({ method, code: "ok" }, elapsed / 1000);
        logger[level]({ method, code: "Ok", ms, requestId }, "rpc");
        return;
      }
      const mapped = toConnectError(error);
      // Errors carry the request id too (response headers, or trailers for gRPC), so a
      // failed call can be found in the log.
      mapped.metadata.set("x-request-id", requestId);
      const code = Code[mapped.code] ?? String(mapped.code);
      latency.observe({ method, code: codeToString(mapped.code) }, elapsed / 1000);
      if (mapped.code === Code.Internal || mapped.code === Code.Unknown) {
        logger.error({ method, code, ms, requestId, err: mapped.cause ?? mapped }, "rpc failed");
      } else if (isDiskFull(mapped.cause)) {
        logger.warn({ method, code, ms, requestId, err: mapped.cause }, "rpc failed: disk full");
      } else {
        logger[level]({ method, code, ms, requestId, detail: mapped.rawMessage }, "rpc");
      }
      return mapped;
    };
    let res;
    try {
      res = await next(req);
    } catch (e) {
      // A client-streamed request (an upload) whose client went away fails here, not in the stream below.
      throw log(clientCancel(req.signal, e));
    }
    res.header.set("x-request-id", requestId);
    if (!res.stream) {
      log();
      return res;
    }
    const messages = res.message;
    async function* observed() {
      let settled = false;
      try {
        yield* messages;
        settled = true;
        log();
      } catch (e) {
        settled = true;
        // Writing to a client that went away fails (ERR_STREAM_DESTROYED): that is its cancel, not our fault.
        throw log(clientCancel(req.signal, e));
      } finally {
        // The client went away (or the server shut down) mid-stream: still one line.
        if (!settled) log(canceledByClient());
      }
    }
    return { ...res, message: observed() } as StreamResponse;
  };
}

const CLIENT_GONE = new Set(["ERR_STREAM_DESTROYED", "ERR_STREAM_PREMATURE_CLOSE", "ERR_HTTP2_STREAM_CANCEL", "ECONNRESET", "EPIPE"]);

const canceledByClient = () => new ConnectError("stream ended by the client", Code.Canceled);

/**
 * What ended a failed call. Once its signal is aborted: its deadline, if that was it, else its
 * client, gone (a reset, whatever its HTTP/2 code: a killed client's connection resets its
 * streams with INTERNAL_ERROR), whatever the handler threw meanwhile (an upload cut short fails
 * its size check). Otherwise a write to a client that went away is its cancel too.
 */
function clientCancel(signal: AbortSignal, e: unknown): unknown {
  if (signal.aborted) {
    const reason: unknown = signal.reason;
    return reason instanceof ConnectError && reason.code === Code.DeadlineExceeded ? reason : canceledByClient();
  }
  // A reset of the database's connection has the same codes as a client's: that is UNAVAILABLE.
  return isClientGone(e) && !isDatabaseUnavailable(e) ? canceledByClient() : e;
}

function isClientGone(e: unknown): boolean {
  const code = (e as { code?: unknown } | null)?.code ?? (e as { cause?: { code?: unknown } } | null)?.cause?.code;
  return typeof code === "string" && CLIENT_GONE.has(code);
}
