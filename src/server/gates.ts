import net from "node:net";
import type { TLSSocket } from "node:tls";
import { Code } from "@connectrpc/connect";
import type { ApiKeys } from "./api-keys.js";
import { refuse, type Req, type Res } from "./refuse.js";

/**
 * A check on a request's headers and connection, made before its body is read: a refusal
 * costs the server nothing however large the body the client meant to send.
 */
export type Gate = (req: Req) => { code: Code; message: string } | undefined;

/**
 * `handler` behind `authorityGate` and then `gates`. A request the handler still throws on
 * synchronously (before any answer) gets an INTERNAL answer instead of taking the process down.
 */
export function withGates(gates: readonly Gate[], handler: (req: Req, res: Res) => void) {
  const all = [authorityGate, ...gates];
  return (req: Req, res: Res) => {
    for (const gate of all) {
      const refusal = gate(req);
      if (refusal !== undefined) return refuse(req, res, refusal.code, refusal.message);
    }
    try {
      handler(req, res);
    } catch {
      if (res.headersSent) res.destroy();
      else refuse(req, res, Code.Internal, "the request could not be handled");
    }
  };
}

/** Hosts (`name[:port]`) already parsed as valid; bounded, since clients choose them. */
const validAuthorities = new Set<string>();
const VALID_AUTHORITIES_KEPT = 256;
const PLAIN_PATH = /^\/[\w.~-][\w.~/-]*$/;

/**
 * The request names a host the way a URL can hold it. Every listener runs this first: the
 * RPC layer builds a URL from Host (`:authority` on HTTP/2) and throws, outside any handler,
 * on a missing one (HTTP/1.0) or one it cannot parse (`x:99999`).
 */
export const authorityGate: Gate = (req) => {
  const authority = "authority" in req ? req.authority : req.headers.host;
  if (!authority) return { code: Code.InvalidArgument, message: "the request names no host (Host header or :authority)" };
  // A plain path (an RPC's) resolves against any valid base, so a host seen valid before needs
  // no new parse (a URL parse per call was a third of the gates' CPU). Not plain: "//h:1",
  // "/\\h:1" and tabs, which the URL parser reads as a host.
  const url = req.url ?? "/";
  const plainPath = PLAIN_PATH.test(url);
  if (plainPath && validAuthorities.has(authority)) return undefined;
  try {
    new URL(url, `http://${authority}`);
    if (plainPath) {
      // Full (any client can send many valid names): start over, so the hosts in use come back.
      if (validAuthorities.size >= VALID_AUTHORITIES_KEPT) validAuthorities.clear();
      validAuthorities.add(authority);
    }
    return undefined;
  } catch {
    if (URL.canParse(`http://${authority}`)) return { code: Code.InvalidArgument, message: `the request path ${JSON.stringify(url.slice(0, 100))} is not a URL path` };
    return { code: Code.InvalidArgument, message: `Host ${JSON.stringify(authority)} is not a valid host[:port]` };
  }
};

/** `/<service>/<method>` of an RPC request path (query string dropped). */
function rpcOf(req: Req): { service: string; method: string } | undefined {
  const m = /^\/([^/?]+)\/([^/?]+)/.exec(req.url ?? "");
  return m ? { service: m[1]!, method: m[2]! } : undefined;
}

/** The tenant of the request's API key, or the refusal of a missing or invalid one. */
export function keyTenant(keys: ApiKeys, req: Req): { tenant: string } | { code: Code; message: string } {
  const authorization = req.headers.authorization;
  if (authorization === undefined) return { code: Code.Unauthenticated, message: "missing API key (authorization: Bearer <key>)" };
  const tenant = keys.tenantOf(authorization);
  return tenant === undefined ? { code: Code.Unauthenticated, message: "invalid API key" } : { tenant };
}

/** Calls of `service`, other than `exempt` methods, need a valid API key. */
export function apiKeyGate(keys: ApiKeys, service: string, exempt: ReadonlySet<string>): Gate {
  return (req) => {
    const rpc = rpcOf(req);
    if (rpc?.service !== service || exempt.has(rpc.method)) return undefined;
    const found = keyTenant(keys, req);
    return "tenant" in found ? undefined : found;
  };
}

/**
 * DNS-rebinding defence for a server without API keys: a browser page whose host name was
 * re-pointed at this machine still sends its own name in Host. IP literals cannot be
 * rebound, so they pass, as do `localhost` and the names configured.
 */
export function hostGate(allowedNames: readonly string[]): Gate {
  const allowed = new Set(["localhost", ...allowedNames.map((n) => n.toLowerCase())]);
  return (req) => {
    const authority = (req.headers[":authority"] ?? req.headers.host) as string | undefined;
    const host = hostOf(authority ?? "");
    if (host !== undefined && (net.isIP(host) !== 0 || allowed.has(host) || host.endsWith(".localhost"))) return undefined;
    return {
      code: Code.PermissionDenied,
      message: `Host ${JSON.stringify(authority ?? "")} is not allowed; add it to RUNTARA_ALLOWED_HOSTS or configure RUNTARA_API_KEYS_FILE`,
    };
  };
}

function hostOf(authority: string): string | undefined {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^:[\]]+))(?::\d{1,5})?$/.exec(authority);
  return m ? (m[1] ?? m[2]!).toLowerCase() : undefined;
}

/** Calls of `service` need a client certificate the TLS listener verified (mutual TLS). */
/**
 * Refuses `service` with UNAVAILABLE (clients retry) until `open()` says it may be served:
 * an embedded core's instance API, until the environment has dealt with the processes of its
 * previous run (see Environment.start).
 */
export function holdGate(service: string, message: string): { gate: Gate; open(): void } {
  let open = false;
  return {
    gate: (req) => (open || rpcOf(req)?.service !== service ? undefined : { code: Code.Unavailable, message }),
    open: () => void (open = true),
  };
}

export function clientCertGate(service: string): Gate {
  return (req) => {
    if (rpcOf(req)?.service !== service) return undefined;
    const socket = ("stream" in req ? req.stream.session?.socket : req.socket) as TLSSocket | undefined;
    if (socket?.authorized === true) return undefined;
    return { code: Code.Unauthenticated, message: `${service} needs a client certificate signed by RUNTARA_CORE_CLIENT_CA_FILE` };
  };
}

/**
 * At most `max` requests matching `matches` whose bodies are still arriving, at once (the
 * methods anyone may call: each such stream may hold up to its flow-control window in server
 * memory until read). Past the cap, RESOURCE_EXHAUSTED before anything is read.
 */
export function openBodiesGate(matches: (rpc: { service: string; method: string }) => boolean, max: number): Gate {
  let open = 0;
  return (req) => {
    const rpc = rpcOf(req);
    if (rpc === undefined || !matches(rpc) || req.complete) return undefined;
    if (open >= max) return { code: Code.ResourceExhausted, message: `${max} requests to methods open without credentials are arriving already; retry` };
    open++;
    let counted = true;
    const release = () => {
      if (counted) open--;
      counted = false;
    };
    req.once("end", release);
    req.once("close", release);
    return undefined;
  };
}
