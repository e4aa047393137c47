/**
 * Plain HTTP endpoints for operators, beside the RPCs: `/healthz` (the process answers),
 * `/readyz` (the database and core answer: Kubernetes' readiness probe) and `/metrics`
 * (Prometheus text). GET and HEAD only; no request body is read.
 */
import http from "node:http";
import { Code } from "@connectrpc/connect";
import type { Logger } from "pino";
import type { Metrics } from "../metrics/index.js";
import type { ApiKeys } from "./api-keys.js";
import { hostGate, keyTenant, withGates, type Gate } from "./gates.js";
import { refuse, type Req, type Res } from "./refuse.js";

export interface Operations {
  metrics: Metrics;
  /** Whether the database and core answer now (cached briefly by the caller's probes). */
  readiness: () => Promise<{ database: boolean; core: boolean }>;
}

type Handler = (req: Req, res: Res) => void;

/** `next` with the operator endpoints in front; `metricsGate` decides who reads /metrics. */
export function withOperations(ops: Operations, metricsGate: Gate, next: Handler): Handler {
  return (req, res) => {
    const path = (req.url ?? "").split("?", 1)[0];
    if (path !== "/healthz" && path !== "/readyz" && path !== "/metrics") return next(req, res);
    if (req.method !== "GET" && req.method !== "HEAD") {
      res.writeHead(405, { allow: "GET, HEAD", "content-type": "text/plain; charset=utf-8" });
      res.end("use GET\n");
      return;
    }
    if (path === "/healthz") return answer(req, res, 200, "text/plain; charset=utf-8", "ok\n");
    if (path === "/readyz") {
      void ops.readiness().then(
        (r) => answer(req, res, r.database && r.core ? 200 : 503, "application/json", `${JSON.stringify({ database: r.database ? "ok" : "unreachable", core: r.core ? "ok" : "unreachable" })}\n`),
        () => answer(req, res, 503, "application/json", '{"database":"unknown","core":"unknown"}\n'),
      );
      return;
    }
    const refusal = metricsGate(req);
    if (refusal) return refuse(req, res, refusal.code, refusal.message);
    void ops.metrics.scrape().then(
      (text) => answer(req, res, 200, ops.metrics.contentType, text),
      () => answer(req, res, 500, "text/plain; charset=utf-8", "metrics could not be collected\n"),
    );
  };
}

function answer(req: Req, res: Res, status: number, contentType: string, body: string): void {
  if (res.headersSent || res.destroyed) return;
  res.writeHead(status, { "content-type": contentType, "cache-control": "no-store" });
  if (req.method === "HEAD") res.end();
  else res.end(body);
}

/** /metrics for anyone who reaches the port. */
export const openMetrics: Gate = () => undefined;

/**
 * With API keys on the management port: metrics add up every tenant, so only the keys of the
 * tenant named for it (RUNTARA_METRICS_TENANT) read them; with none named, nobody there does.
 */
export function metricsTenantGate(keys: ApiKeys, metricsTenant: string | undefined): Gate {
  return (req) => {
    if (metricsTenant === undefined) {
      return { code: Code.PermissionDenied, message: "metrics on this port need RUNTARA_METRICS_TENANT (or serve them on RUNTARA_METRICS_ADDR)" };
    }
    const found = keyTenant(keys, req);
    if (!("tenant" in found)) return found;
    if (found.tenant !== metricsTenant) return { code: Code.PermissionDenied, message: "this key may not read metrics" };
    return undefined;
  };
}

/** RUNTARA_METRICS_ADDR: the operator endpoints alone, over HTTP/1.1, for a scraper on an internal network. */
export async function listenOperations(
  ops: Operations,
  where: { host: string; port: number; allowedHosts: readonly string[] },
  logger: Logger,
): Promise<{ port: number; close: () => Promise<void> }> {
  const { host, port } = where;
  const notFound = (req: Req, res: Res) => answer(req, res, 404, "text/plain; charset=utf-8", "not found: /healthz, /readyz, /metrics\n");
  // No keys here: the Host check keeps DNS-rebinding pages from reading metrics through a browser.
  const server = http.createServer(withGates([hostGate(where.allowedHosts)], withOperations(ops, openMetrics, notFound)));
  server.headersTimeout = 10_000;
  server.requestTimeout = 30_000;
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, host, () => {
      server.off("error", reject);
      resolve();
    });
  });
  const address = server.address() as { port: number };
  logger.info({ host, port: address.port }, "metrics listening");
  return {
    port: address.port,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
