import { randomBytes } from "node:crypto";
import { chmod, lstat, mkdir, rename, rm, stat } from "node:fs/promises";
import path from "node:path";

/**
 * Creates DATA_DIR, `runs/` and `images/` with the modes isolation relies on (existing
 * directories are corrected). 0711, not 0700: workflows run as unprivileged uids (container
 * root is a mapped host uid; native processes run as RUNTARA_NATIVE_USER under root) that must
 * walk down to their own run directory (0700, theirs) and, for OCI, the image rootfs; and the
 * embedded PostgreSQL runs as `postgres` under DATA_DIR/postgres. 0711 lets them pass through
 * by exact name without listing anything; every file of ours inside is 0600 or in a 0700
 * directory (postgres.password, run directories' config.json and logs, staged uploads).
 */
export async function secureDataDir(dataDir: string): Promise<void> {
  for (const dir of [dataDir, path.join(dataDir, "runs"), path.join(dataDir, "images")]) {
    await mkdir(dir, { recursive: true, mode: 0o711 });
    await chmod(dir, 0o711);
  }
}

/**
 * Directories above DATA_DIR that other users cannot pass through (no o+x), so neither can a
 * container's mapped root or the native user: every launch would fail. A DATA_DIR under a
 * 0700 home or mkdtemp directory is the usual cause.
 */
export async function closedAncestors(dataDir: string): Promise<string[]> {
  const closed: string[] = [];
  for (let dir = path.dirname(path.resolve(dataDir)); ; dir = path.dirname(dir)) {
    const st = await stat(dir).catch(() => undefined);
    if (st !== undefined && (st.mode & 0o001) === 0) closed.push(dir);
    if (dir === path.dirname(dir)) return closed;
  }
}

/**
 * Removes the real directory `parent/name` (not a symlink: that is left alone), first renamed
 * to a tombstone beside it, so the name is free at once (a new run of a reused instance id
 * starts in a fresh directory) and the recursive removal works on a path no launch will reuse.
 * `fs.rm` unlinks symlinks inside rather than following them. Returns whether it removed one.
 */
export async function removeDirViaTombstone(parent: string, name: string): Promise<boolean> {
  const dir = path.join(parent, name);
  const st = await lstat(dir).catch((e: NodeJS.ErrnoException) => {
    if (e.code === "ENOENT") return undefined;
    throw e;
  });
  if (!st?.isDirectory()) return false;
  const tombstone = path.join(parent, `.removing-${randomBytes(6).toString("hex")}`);
  await rename(dir, tombstone);
  await rm(tombstone, { recursive: true, force: true });
  return true;
}
