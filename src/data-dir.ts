import { chmod, mkdir } from "node:fs/promises";
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
