import { createHash, timingSafeEqual } from "node:crypto";
import { readFile } from "node:fs/promises";
import type { Interceptor, StreamRequest, UnaryRequest } from "@connectrpc/connect";
import { EnvironmentService } from "../../gen/runtara/environment/v1/environment_pb.js";
import { ConfigError } from "../config.js";
import { PermissionDenied, Unauthenticated } from "../errors.js";

/** API keys by SHA-256 digest (keys are never kept or compared in the clear). */
export type ApiKeys = ReadonlyMap<string, string>;

const digest = (key: string) => createHash("sha256").update(key).digest("hex");

/**
 * Reads RUNTARA_API_KEYS_FILE: one `<tenant_id> <key>` per line; blank lines and lines
 * starting with # are ignored. Keys must be at least 16 characters.
 */
export async function loadApiKeys(file: string): Promise<ApiKeys> {
  let text: string;
  try {
    text = await readFile(file, "utf8");
  } catch (e) {
    throw new ConfigError(`RUNTARA_API_KEYS_FILE: cannot read ${file}: ${(e as Error).message}`);
  }
  const keys = new Map<string, string>();
  text.split("\n").forEach((raw, i) => {
    const line = raw.trim();
    if (line === "" || line.startsWith("#")) return;
    const m = /^([A-Za-z0-9._:-]{1,128})\s+(\S{16,})$/.exec(line);
    if (!m) throw new ConfigError(`RUNTARA_API_KEYS_FILE: line ${i + 1} must be "<tenant_id> <key of 16+ characters>"`);
    keys.set(digest(m[2]!), m[1]!);
  });
  if (keys.size === 0) throw new ConfigError("RUNTARA_API_KEYS_FILE: no keys in the file");
  return keys;
}

function tenantOfKey(keys: ApiKeys, authorization: string | null): string {
  const key = /^Bearer (\S+)$/.exec(authorization ?? "")?.[1];
  if (key === undefined) throw new Unauthenticated("missing API key (authorization: Bearer <key>)");
  const d = Buffer.from(digest(key));
  for (const [candidate, tenant] of keys) {
    if (timingSafeEqual(Buffer.from(candidate), d)) return tenant;
  }
  throw new Unauthenticated("invalid API key");
}

function checkTenant(message: unknown, tenant: string) {
  if (message === null || typeof message !== "object") return;
  const m = message as { tenantId?: unknown; payload?: { case?: string; value?: { tenantId?: unknown } } };
  const claimed = typeof m.tenantId === "string" ? m.tenantId : m.payload?.case === "header" ? m.payload.value?.tenantId : undefined;
  if (typeof claimed === "string" && claimed !== tenant) {
    throw new PermissionDenied(`tenant_id: this API key belongs to tenant "${tenant}", not "${claimed}"`);
  }
}

/**
 * When API keys are configured, every EnvironmentService call except HealthCheck needs
 * `authorization: Bearer <key>`; the key decides the tenant, and a request naming another
 * tenant_id is PERMISSION_DENIED (streamed requests are checked message by message).
 */
export function apiKeyAuth(keys: ApiKeys): Interceptor {
  return (next) => async (req) => {
    if (req.service.typeName !== EnvironmentService.typeName || req.method.name === "HealthCheck") return next(req);
    const tenant = tenantOfKey(keys, req.header.get("authorization"));
    if (!req.stream) {
      checkTenant((req as UnaryRequest).message, tenant);
      return next(req);
    }
    const messages = (req as StreamRequest).message;
    async function* checked() {
      for await (const m of messages) {
        checkTenant(m, tenant);
        yield m;
      }
    }
    return next({ ...(req as StreamRequest), message: checked() } as typeof req);
  };
}
