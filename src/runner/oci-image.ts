import { chmod, chown, lchown, lstat, readdir, readFile, rm } from "node:fs/promises";
import path from "node:path";
import type { IdMapping } from "./idmap.js";
import type { Spawner } from "./spawner.js";

/** What an OCI image's config makes of its process: Entrypoint + Cmd, Env, WorkingDir, User. */
export interface ImageProcess {
  args: string[];
  /** The image's Env (PATH and the like); an instance's own variables go on top. */
  env: Record<string, string>;
  cwd: string;
  /** User inside the container (resolved against the image's /etc/passwd). */
  uid: number;
  gid: number;
}

/**
 * Makes an unpacked root filesystem harmless on the host, where it lies under DATA_DIR:
 * device nodes, FIFOs and sockets go (containers get their own /dev), and file capabilities
 * and setuid/setgid bits are cleared (containers run with no_new_privileges, so the bits grant nothing inside; on the
 * host they would hand a local user the containers' shared mapped uid).
 */
async function defuse(dir: string): Promise<void> {
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    const file = path.join(dir, entry.name);
    if (entry.isDirectory()) await defuse(file);
    if (entry.isCharacterDevice() || entry.isBlockDevice() || entry.isFIFO() || entry.isSocket()) {
      await rm(file);
      continue;
    }
    if (entry.isSymbolicLink()) continue;
    const { mode, uid, gid } = await lstat(file);
    // A chown, even to the same owner, drops a file's capabilities (security.capability, which
    // umoci restores from the layer and which would be effective on the host too).
    if (entry.isFile()) await lchown(file, uid, gid);
    if ((mode & 0o6000) !== 0) await chmod(file, mode & 0o1777);
  }
}

/** The unpacker could not unpack a layout that passed verification (a layer it cannot read). */
export class ImageUnpackError extends Error {}

/**
 * Unpacks the image tagged `ref` in an OCI layout into `bundleDir/rootfs` with umoci (layers,
 * whiteouts and ownership are umoci's business), its files owned by the containers' mapped
 * ids so they look as the image meant inside the user namespace. Returns the process the
 * image config describes, as umoci resolved it (User names looked up in the image).
 */
export async function unpackOciImage(spawner: Spawner, layoutDir: string, ref: string, bundleDir: string, mapping: IdMapping): Promise<ImageProcess> {
  const map = (base: number) => `0:${base}:${mapping.size}`;
  const result = await spawner.run("umoci", ["unpack", "--uid-map", map(mapping.uidBase), "--gid-map", map(mapping.gidBase), "--image", `${layoutDir}:${ref}`, bundleDir]);
  if (result.code === "ENOENT") throw new ImageUnpackError("umoci is not installed (Debian package umoci); OCI archives cannot be unpacked");
  if (result.error) throw new Error(`umoci could not be run: ${result.error.message}`);
  if (result.exitCode !== 0) throw new ImageUnpackError(`umoci could not unpack the image: ${`${result.stderr}\n${result.stdout}`.trim().slice(-2000)}`);
  const spec = JSON.parse(await readFile(path.join(bundleDir, "config.json"), "utf8")) as {
    process?: { args?: string[]; env?: string[]; cwd?: string; user?: { uid?: number; gid?: number } };
  };
  // Only the root filesystem is used; the runner writes its own runtime config per launch.
  for (const f of ["config.json", "umoci.json"]) await rm(path.join(bundleDir, f), { force: true });
  await defuse(path.join(bundleDir, "rootfs"));
  // Container root (a mapped host uid, group gidBase) must pass through the bundle to reach
  // its rootfs; host users other than root may not, so nothing in an image is theirs to run.
  await chown(bundleDir, 0, mapping.gidBase);
  await chmod(bundleDir, 0o710);
  const p = spec.process ?? {};
  if (!p.args || p.args.length === 0) throw new ImageUnpackError("the image config has neither Entrypoint nor Cmd: nothing to run");
  const env: Record<string, string> = {};
  for (const kv of p.env ?? []) {
    const i = kv.indexOf("=");
    // umoci adds TERM for a terminal; workflows have none.
    if (i > 0 && kv.slice(0, i) !== "TERM") env[kv.slice(0, i)] = kv.slice(i + 1);
  }
  return { args: p.args, env, cwd: p.cwd || "/", uid: p.user?.uid ?? 0, gid: p.user?.gid ?? 0 };
}
