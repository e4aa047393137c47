import { createHmac, randomBytes, timingSafeEqual } from "node:crypto";
import { sql, type DatabasePool } from "slonik";
import { z } from "zod";
import { Unauthenticated } from "../errors.js";

/**
 * Tokens derived from a server secret kept in the database, so every replica (and a core
 * running apart from the environment) agrees without configuration:
 * - an instance token is HMAC(secret, "instance:" + instance id): it lets a process act
 *   as that instance and no other;
 * - the management token is HMAC(secret, "management"): the environment sends it to
 *   CoreService, which instances (holding only their own token) cannot call.
 */
export class Tokens {
  private constructor(private readonly secret: Buffer) {}

  /** Loads the secret, creating it on first use (concurrent first starts agree). */
  static async load(db: DatabasePool): Promise<Tokens> {
    await db.query(sql.unsafe`
      INSERT INTO server_secrets (name, secret) VALUES ('token-hmac', ${sql.binary(randomBytes(32))})
      ON CONFLICT (name) DO NOTHING`);
    const secret = await db.oneFirst(sql.type(z.object({ secret: z.instanceof(Buffer) }))`
      SELECT secret FROM server_secrets WHERE name = 'token-hmac'`);
    return new Tokens(secret);
  }

  instanceToken(instanceId: string): string {
    return this.mac(`instance:${instanceId}`);
  }

  managementToken(): string {
    return this.mac("management");
  }

  /** Throws UNAUTHENTICATED unless `authorization` is `Bearer <token for instanceId>`. */
  verifyInstance(authorization: string | null, instanceId: string): void {
    this.verify(authorization, this.instanceToken(instanceId), "instance token");
  }

  verifyManagement(authorization: string | null): void {
    this.verify(authorization, this.managementToken(), "management token");
  }

  private verify(authorization: string | null, expected: string, what: string) {
    const presented = /^Bearer (\S+)$/.exec(authorization ?? "")?.[1];
    if (presented === undefined) throw new Unauthenticated(`missing ${what} (authorization: Bearer <token>)`);
    const a = Buffer.from(presented);
    const b = Buffer.from(expected);
    if (a.length !== b.length || !timingSafeEqual(a, b)) throw new Unauthenticated(`invalid ${what}`);
  }

  private mac(subject: string): string {
    return createHmac("sha256", this.secret).update(subject).digest("base64url");
  }
}
