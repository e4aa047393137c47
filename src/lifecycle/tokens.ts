import { createHmac, randomBytes, randomUUID, timingSafeEqual } from "node:crypto";
import { sql, type DatabasePool } from "slonik";
import { z } from "zod";
import { Unauthenticated } from "../errors.js";

/** How many secrets verify at once: the newest mints, the one before it still verifies. */
const ACTIVE_SECRETS = 2;
/** A failed verification reloads the secrets at most this often (a rotation on another replica). */
const RELOAD_ON_MISS_MS = 5_000;

/**
 * Tokens derived from server secrets kept in the database, so every replica (and a core
 * running apart from the environment) agrees without configuration:
 * - an instance token is `<nonce>.<HMAC(secret, "instance:" + id + ":" + nonce)>`, where the
 *   nonce is random per instance row (`instances.token_nonce`): it lets a process act as that
 *   one row and no other, so a deleted and re-created id (same or another tenant) does not
 *   accept it; the caller checks the nonce against the row (InstanceCalls.authenticate);
 * - the management token is HMAC(secret, "management"): the environment sends it to
 *   CoreService, which instances (holding only their own token) cannot call.
 * Rotation (`rotate`, `npm run rotate-secret`) adds a secret; the two newest verify, the newest
 * mints, and every replica picks the new one up within `refresh`'s interval or at the first
 * token it cannot verify.
 */
export class Tokens {
  private secrets: readonly Buffer[];
  private reloadedAtMs = Date.now();

  private constructor(
    private readonly db: DatabasePool,
    secrets: readonly Buffer[],
  ) {
    this.secrets = secrets;
  }

  /** Loads the secrets, creating the first on first use (concurrent first starts agree). */
  static async load(db: DatabasePool): Promise<Tokens> {
    await db.query(sql.unsafe`
      INSERT INTO server_secrets (name, secret) VALUES ('token-hmac', ${sql.binary(randomBytes(32))})
      ON CONFLICT (name) DO NOTHING`);
    return new Tokens(db, await activeSecrets(db));
  }

  /** Adds a new secret (it mints from now on); secrets older than the previous one stop verifying. */
  static async rotate(db: DatabasePool): Promise<void> {
    await db.transaction(async (tx) => {
      await tx.query(sql.unsafe`
        INSERT INTO server_secrets (name, secret, created_at) VALUES (${`token-hmac-${randomUUID()}`}, ${sql.binary(randomBytes(32))}, clock_timestamp())`);
      await tx.query(sql.unsafe`
        DELETE FROM server_secrets WHERE name LIKE 'token-hmac%' AND name NOT IN (
          SELECT name FROM server_secrets WHERE name LIKE 'token-hmac%' ORDER BY created_at DESC, name DESC LIMIT ${ACTIVE_SECRETS})`);
    });
  }

  /** Re-reads the secrets (after a rotation elsewhere). */
  async refresh(): Promise<void> {
    this.secrets = await activeSecrets(this.db);
    this.reloadedAtMs = Date.now();
  }

  instanceToken(instanceId: string, nonce: string): string {
    return `${nonce}.${this.mac(this.secrets[0]!, `instance:${instanceId}:${nonce}`)}`;
  }

  managementToken(): string {
    return this.mac(this.secrets[0]!, "management");
  }

  /**
   * Checks that `authorization` is `Bearer <token minted for instanceId>` and returns the
   * nonce it names; the caller still checks the nonce against the instance's row.
   */
  async verifyInstance(authorization: string | null, instanceId: string): Promise<string> {
    const presented = bearer(authorization, "instance token");
    const m = /^([0-9a-f]{32})\.([A-Za-z0-9_-]{43})$/.exec(presented);
    if (m === null) throw new Unauthenticated("invalid instance token");
    const nonce = m[1]!;
    await this.verify(presented, (secret) => `${nonce}.${this.mac(secret, `instance:${instanceId}:${nonce}`)}`, "instance token");
    return nonce;
  }

  async verifyManagement(authorization: string | null): Promise<void> {
    await this.verify(bearer(authorization, "management token"), (secret) => this.mac(secret, "management"), "management token");
  }

  private async verify(presented: string, expectedFor: (secret: Buffer) => string, what: string) {
    if (this.secrets.some((s) => same(presented, expectedFor(s)))) return;
    if (Date.now() - this.reloadedAtMs >= RELOAD_ON_MISS_MS) {
      this.reloadedAtMs = Date.now(); // before the query: a flood of bad tokens reloads once
      await this.refresh();
      if (this.secrets.some((s) => same(presented, expectedFor(s)))) return;
    }
    throw new Unauthenticated(`invalid ${what}`);
  }

  private mac(secret: Buffer, subject: string): string {
    return createHmac("sha256", secret).update(subject).digest("base64url");
  }
}

async function activeSecrets(db: DatabasePool): Promise<readonly Buffer[]> {
  const secrets = await db.anyFirst(sql.type(z.object({ secret: z.instanceof(Buffer) }))`
    SELECT secret FROM server_secrets WHERE name LIKE 'token-hmac%' ORDER BY created_at DESC, name DESC LIMIT ${ACTIVE_SECRETS}`);
  if (secrets.length === 0) throw new Error("no token secret in server_secrets");
  return secrets;
}

function bearer(authorization: string | null, what: string): string {
  const presented = /^Bearer (\S+)$/i.exec(authorization ?? "")?.[1];
  if (presented === undefined) throw new Unauthenticated(`missing ${what} (authorization: Bearer <token>)`);
  return presented;
}

function same(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
}
