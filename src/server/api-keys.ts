import { createHash, timingSafeEqual } from "node:crypto";
import { unwatchFile, watchFile } from "node:fs";
import { readFile, stat } from "node:fs/promises";
import type { Interceptor, StreamRequest, UnaryRequest } from "@connectrpc/connect";
import type { Logger } from "pino";
import { ConfigError } from "../config.js";
import { PermissionDenied, Unauthenticated } from "../errors.js";

/** API keys by SHA-256 digest (keys are never kept or compared in the clear). */
type KeyDigests = ReadonlyMap<string, string>;

const digest = (key: string) => createHash("sha256").update(key).digest("hex");

/** How often the keys file is checked for changes (a poll survives editors that replace the file). */
const WATCH_INTERVAL_MS = 1_000;

/**
 * RUNTARA_API_KEYS_FILE: one `<tenant_id> <key>` per line; blank lines and lines starting
 * with # are ignored; keys have at least 16 characters. The file must not be readable or
 * writable by group or others. `reload()` (SIGHUP) and a change of the file replace the keys
 * at once; a reload that fails keeps the keys in force and logs why.
 */
export class ApiKeys {
  private constructor(
    private readonly file: string,
    private keys: KeyDigests,
    private readonly logger: Logger,
  ) {}

  static async load(file: string, logger: Logger): Promise<ApiKeys> {
    return new ApiKeys(file, await readKeys(file), logger);
  }

  /** The tenant whose key `authorization` (`Bearer <key>`) carries, or undefined. */
  tenantOf(authorization: string | null | undefined): string | undefined {
    // The scheme name is case-insensitive (RFC 9110).
    const key = /^Bearer (\S+)$/i.exec(authorization ?? "")?.[1];
    if (key === undefined) return undefined;
    const d = Buffer.from(digest(key));
    let tenant: string | undefined;
    // Every candidate is compared, so the time taken does not tell which one matched.
    for (const [candidate, owner] of this.keys) {
      if (timingSafeEqual(Buffer.from(candidate), d)) tenant = owner;
    }
    return tenant;
  }

  async reload(): Promise<void> {
    try {
      this.keys = await readKeys(this.file);
      this.logger.info({ file: this.file, keys: this.keys.size }, "API keys reloaded");
    } catch (err) {
      this.logger.error({ err, file: this.file }, "API keys not reloaded; the previous keys stay in force");
    }
  }

  /** Reloads whenever the file changes; returns the function that stops watching. */
  watch(): () => void {
    const onChange = (now: { mtimeMs: number; ino: number; size: number }, before: { mtimeMs: number; ino: number; size: number }) => {
      if (now.mtimeMs !== before.mtimeMs || now.ino !== before.ino || now.size !== before.size) void this.reload();
    };
    watchFile(this.file, { interval: WATCH_INTERVAL_MS, persistent: false }, onChange);
    return () => unwatchFile(this.file, onChange);
  }
}

async function readKeys(file: string): Promise<KeyDigests> {
  let text: string;
  try {
    const st = await stat(file);
    if ((st.mode & 0o077) !== 0) {
      throw new ConfigError(
        `RUNTARA_API_KEYS_FILE: ${file} is accessible by group or others (mode ${(st.mode & 0o777).toString(8)}); chmod 600 it`,
      );
    }
    text = await readFile(file, "utf8");
  } catch (e) {
    if (e instanceof ConfigError) throw e;
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

function checkTenant(message: unknown, tenant: string) {
  if (message === null || typeof message !== "object") return;
  // The tenant is in the message, in an upload stream's header message, or in BeginImageUpload's header.
  const m = message as { tenantId?: unknown; payload?: { case?: string; value?: { tenantId?: unknown } }; header?: { tenantId?: unknown } };
  const claimed = typeof m.tenantId === "string" ? m.tenantId : m.payload?.case === "header" ? m.payload.value?.tenantId : m.header?.tenantId;
  if (typeof claimed === "string" && claimed !== tenant) {
    throw new PermissionDenied(`tenant_id: this API key belongs to tenant "${tenant}", not "${claimed}"`);
  }
}

/**
 * The key decides the tenant: a request naming another tenant_id is PERMISSION_DENIED
 * (streamed requests are checked message by message). Whether a key is present and valid
 * was checked before the body was read (see http-auth.ts); this sees only those requests.
 */
export function tenantOfKeyCheck(keys: ApiKeys, exempt: (service: string, method: string) => boolean): Interceptor {
  return (next) => async (req) => {
    if (exempt(req.service.typeName, req.method.name)) return next(req);
    const found = keys.tenantOf(req.header.get("authorization"));
    // The keys may have been reloaded between the HTTP check and here.
    if (found === undefined) throw new Unauthenticated("invalid API key");
    const tenant = found;
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
