import { readFileSync } from "node:fs";

/**
 * The host ids a container's user namespace maps onto: container uid/gid 0..size-1 are host
 * `uidBase`/`gidBase` onwards. Container root is then an unprivileged host user, so a file it
 * makes setuid in /data is setuid to that user, never to host root.
 */
export interface IdMapping {
  uidBase: number;
  gidBase: number;
  size: number;
}

/** Used when /etc/subuid has no range for the environment's user: far above login uids. */
export const FALLBACK_ID_MAPPING: Readonly<IdMapping> = Object.freeze({ uidBase: 100_000, gidBase: 100_000, size: 65_536 });

/**
 * The first /etc/subuid and /etc/subgid ranges of `user` (name or numeric uid), as
 * shadow-utils hands them out, so containers do not collide with ranges given to others;
 * else {@link FALLBACK_ID_MAPPING}. Both files must have a range, and the sizes must match.
 */
export function subordinateIdMapping(user: string, uid: number, files = { subuid: "/etc/subuid", subgid: "/etc/subgid" }): IdMapping {
  const u = firstRange(files.subuid, user, uid);
  const g = firstRange(files.subgid, user, uid);
  if (u === undefined || g === undefined) return { ...FALLBACK_ID_MAPPING };
  return { uidBase: u.start, gidBase: g.start, size: Math.min(u.count, g.count) };
}

function firstRange(file: string, user: string, uid: number): { start: number; count: number } | undefined {
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch {
    return undefined;
  }
  for (const line of text.split("\n")) {
    const [owner, start, count] = line.trim().split(":");
    if (owner !== user && owner !== String(uid)) continue;
    const s = Number(start);
    const c = Number(count);
    // Never host root, and the whole range must be valid ids.
    if (Number.isSafeInteger(s) && Number.isSafeInteger(c) && s >= 1 && c >= 1 && s + c <= 0xffff_ffff) return { start: s, count: c };
  }
  return undefined;
}
