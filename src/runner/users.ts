import { readFileSync } from "node:fs";

export interface SystemUser {
  name: string;
  uid: number;
  gid: number;
}

/**
 * Looks a user up by name or numeric uid in /etc/passwd (no NSS: the accounts workflows run
 * as are local system accounts such as `nobody`). Undefined when there is no such user.
 */
export function lookupUser(nameOrUid: string, passwdFile = "/etc/passwd"): SystemUser | undefined {
  let text: string;
  try {
    text = readFileSync(passwdFile, "utf8");
  } catch {
    return undefined;
  }
  for (const line of text.split("\n")) {
    const [name, , uid, gid] = line.split(":");
    if (name === undefined || uid === undefined || gid === undefined) continue;
    if (name !== nameOrUid && uid !== nameOrUid) continue;
    if (!/^\d+$/.test(uid) || !/^\d+$/.test(gid)) continue;
    return { name, uid: Number(uid), gid: Number(gid) };
  }
  return undefined;
}
