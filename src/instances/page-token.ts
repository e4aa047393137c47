import { InvalidArgument } from "../errors.js";
import type { InstanceOrder } from "./repository.js";
import type { Instance } from "./types.js";

/** Keyset page tokens of ListInstances: the order, the last row's exact sort key and id. */
export function encodePageToken(last: Instance, order: InstanceOrder): string {
  const key = order.startsWith("created") ? last.sortKeys.created : last.sortKeys.finished;
  return Buffer.from(JSON.stringify({ o: order, k: key, i: last.instanceId })).toString("base64url");
}

const TIMESTAMP_TEXT = /^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}(\.\d{1,6})?[+-]\d{2}(:\d{2})?$/;

export function decodePageToken(token: string, order: InstanceOrder): { key: string | null; id: string } {
  try {
    const t = JSON.parse(Buffer.from(token, "base64url").toString("utf8")) as { o?: unknown; k?: unknown; i?: unknown };
    const keyOk = t.k === null || (typeof t.k === "string" && TIMESTAMP_TEXT.test(t.k));
    if (t.o === order && keyOk && typeof t.i === "string") return { key: t.k as string | null, id: t.i };
  } catch {
    // fall through: any malformed token gets the same answer
  }
  throw new InvalidArgument("page_token", "is not a token returned by this API for this order_by");
}
