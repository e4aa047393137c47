import { COUNT_CAP } from "../db/count.js";
import { InvalidArgument } from "../errors.js";
import { isValidId } from "../validation.js";
import type { InstanceOrder } from "./repository.js";
import type { Instance } from "./types.js";

/**
 * Keyset page tokens of ListInstances: the order, the last row's exact sort key and id, and
 * the total_count of the first page (later pages answer with it instead of counting again).
 */
export function encodePageToken(last: Instance, order: InstanceOrder, totalCount: bigint): string {
  const key = order.startsWith("created") ? last.sortKeys.created : last.sortKeys.finished;
  return Buffer.from(JSON.stringify({ o: order, k: key, i: last.instanceId, c: Number(totalCount) })).toString("base64url");
}

export interface PageTokenPosition {
  key: string | null;
  id: string;
  /** The first page's total_count; absent in tokens that carry none. */
  totalCount: bigint | undefined;
}

/** PostgreSQL's timestamptz text, as the list query returned it. */
const TIMESTAMP_TEXT = /^(\d{4})-(\d{2})-(\d{2}) (\d{2}):(\d{2}):(\d{2})(\.\d{1,6})?[+-](\d{2})(:\d{2})?$/;

/** A real point in time in PostgreSQL's text form (a forged "2024-13-45 25:61:61+00" is not). */
function isTimestampText(text: string): boolean {
  const m = TIMESTAMP_TEXT.exec(text);
  if (m === null) return false;
  const [year, month, day, hour, minute, second, , offset] = [m[1], m[2], m[3], m[4], m[5], m[6], m[7], m[8]].map(Number) as number[];
  const date = new Date(Date.UTC(year!, month! - 1, day!));
  return (
    year! >= 1 &&
    date.getUTCMonth() === month! - 1 &&
    date.getUTCDate() === day &&
    hour! <= 23 &&
    minute! <= 59 &&
    second! <= 59 &&
    offset! <= 15
  );
}

export function decodePageToken(token: string, order: InstanceOrder): PageTokenPosition {
  try {
    const t = JSON.parse(Buffer.from(token, "base64url").toString("utf8")) as { o?: unknown; k?: unknown; i?: unknown; c?: unknown };
    // Only finished_at can be null (an unfinished instance); created_at never is.
    const keyOk = (t.k === null && order.startsWith("finished")) || (typeof t.k === "string" && isTimestampText(t.k));
    const count = t.c === undefined ? undefined : Number.isSafeInteger(t.c) && (t.c as number) >= 0 && (t.c as number) <= COUNT_CAP ? BigInt(t.c as number) : null;
    if (t.o === order && keyOk && typeof t.i === "string" && isValidId(t.i) && count !== null) return { key: t.k as string | null, id: t.i, totalCount: count };
  } catch {
    // fall through: any malformed token gets the same answer
  }
  throw new InvalidArgument("page_token", "is not a token returned by this API for this order_by");
}
