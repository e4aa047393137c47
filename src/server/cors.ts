import { cors } from "@connectrpc/connect";
import type { Req, Res } from "./refuse.js";

/**
 * Wraps a handler with CORS for the configured origins; "*" (only when configured so) allows
 * any origin and answers `*`, never an echo of the caller's origin. Every answer then says
 * `Vary: Origin`, so no cache hands one origin's answer to another. connect-node has no CORS
 * handling of its own; the header lists come from @connectrpc/connect's `cors`.
 */
export function withCors(origins: readonly string[], handler: (req: Req, res: Res) => void) {
  if (origins.length === 0) return handler;
  const any = origins.includes("*");
  const allowed = new Set(origins);
  const allowHeaders = [...cors.allowedHeaders, "Authorization", "X-Request-Id"].join(", ");
  const exposeHeaders = [...cors.exposedHeaders, "X-Request-Id"].join(", ");
  return (req: Req, res: Res) => {
    res.setHeader("Vary", "Origin");
    const origin = req.headers.origin;
    if (typeof origin === "string" && (any || allowed.has(origin))) {
      res.setHeader("Access-Control-Allow-Origin", any ? "*" : origin);
      res.setHeader("Access-Control-Expose-Headers", exposeHeaders);
      if (req.method === "OPTIONS") {
        res.setHeader("Access-Control-Allow-Methods", cors.allowedMethods.join(", "));
        res.setHeader("Access-Control-Allow-Headers", allowHeaders);
        res.setHeader("Access-Control-Max-Age", "7200");
        res.writeHead(204);
        res.end();
        return;
      }
    }
    handler(req, res);
  };
}
