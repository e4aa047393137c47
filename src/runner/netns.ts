import { access, constants, mkdir, readdir, readFile, rm, stat } from "node:fs/promises";
import path from "node:path";
import type { Spawner } from "./spawner.js";

/** Where `ip netns` keeps named network namespaces (bind mounts). */
const NETNS_DIR = "/run/netns";
/** Where each namespace's pasta writes its pid (`--pid`), so that cleanup can stop it. */
const PASTA_PID_DIR = "/run/runtara-pasta";

/** How an `isolated` container gets outbound traffic: through pasta, or not at all. */
export type Outbound = { kind: "pasta"; pasta: string; ip: string } | { kind: "none"; reason: string };

/** Finds pasta (Debian package `passt`) and `ip` (iproute2) on PATH; both are needed. */
export async function detectOutbound(searchPath = process.env.PATH ?? "/usr/sbin:/usr/bin:/sbin:/bin"): Promise<Outbound> {
  const pasta = await which("pasta", searchPath);
  const ip = await which("ip", searchPath);
  if (pasta === undefined) return { kind: "none", reason: "pasta is not installed (Debian package passt)" };
  if (ip === undefined) return { kind: "none", reason: "ip (iproute2) is not installed" };
  return { kind: "pasta", pasta, ip };
}

export function netnsPath(name: string): string {
  return path.join(NETNS_DIR, name);
}

/**
 * A named network namespace for one container, connected to the outside by pasta. The
 * namespace is created in the host's user namespace, so pasta (run as root: the 2023 passt
 * cannot join it after dropping to nobody) attaches to it, and the container joins it by path.
 *
 * pasta options, each closing a way back to the host:
 * - `-T none -U none`: nothing in the namespace is forwarded to the host's ports (the
 *   default, `auto`, would make the host's bound loopback ports appear on the container's);
 * - `-t none -u none`: no host port is forwarded in;
 * - `--no-map-gw`: the gateway address is the real gateway, not an alias of the host.
 * The namespace gets copies of the host's addresses, so connecting to the host's own
 * address from inside reaches the container itself, not the host.
 *
 * pasta is meant to quit by itself once the namespace file is deleted (its `--netns` watch),
 * but it does not always: `removeNetns` stops it by the pid it wrote. Returns the namespace's inode, which `removeNetns` checks so that the cleanup of a run never
 * deletes the namespace a relaunch of the same instance has meanwhile created under the name.
 */
export async function createPastaNetns(spawner: Spawner, outbound: Extract<Outbound, { kind: "pasta" }>, name: string): Promise<number> {
  await removeNetns(spawner, outbound, name);
  const add = await spawner.run(outbound.ip, ["netns", "add", name], { timeoutMs: 10_000 });
  if (add.failed) throw new Error(`ip netns add ${name} failed: ${add.stderr || add.message}`);
  await mkdir(PASTA_PID_DIR, { recursive: true, mode: 0o700 });
  // Without --foreground pasta returns once the namespace is configured: the readiness signal.
  const r = await spawner.run(
    outbound.pasta,
    [
      ...["--config-net", "--quiet", "--runas", "0:0", "--pid", pastaPidFile(name)],
      ...["-T", "none", "-U", "none", "-t", "none", "-u", "none", "--no-map-gw", "--netns", netnsPath(name)],
    ],
    { timeoutMs: 10_000 },
  );
  if (r.failed) {
    await removeNetns(spawner, outbound, name);
    throw new Error(`pasta failed for ${name}: ${lastLines(r.stderr) || r.message}`);
  }
  return (await stat(netnsPath(name))).ino;
}

/** The inode of a process's network namespace (to remove it later with `removeNetns`). */
export async function netnsInodeOf(pid: number): Promise<number | undefined> {
  return (await stat(`/proc/${pid}/ns/net`).catch(() => undefined))?.ino;
}

/**
 * Deletes the namespace and stops its pasta; a missing namespace is fine. With `ino`, only if
 * the name still holds that namespace (otherwise the name's pasta is a newer run's).
 */
export async function removeNetns(spawner: Spawner, outbound: Extract<Outbound, { kind: "pasta" }>, name: string, ino?: number): Promise<void> {
  const st = await stat(netnsPath(name)).catch(() => undefined);
  // With `ino`, a name that holds another namespace, or none (whoever deleted it stopped its
  // pasta: a relaunch's createPastaNetns, or the startup sweep), is a newer run's to clean.
  if (ino !== undefined && st?.ino !== ino) return;
  if (st !== undefined) await spawner.run(outbound.ip, ["netns", "delete", name], { timeoutMs: 10_000 });
  await stopPasta(name);
}

/**
 * pasta (passt 2023) reads its inotify events a buffer at a time but checks only the first, so
 * when several namespaces are deleted at once some of their pastas miss their own deletion and
 * live on (seen: 5 of 192 containers at concurrency 16). The pid it wrote is checked against
 * its command line first, in case the pid now belongs to another process.
 */
async function stopPasta(name: string): Promise<void> {
  const pidFile = pastaPidFile(name);
  const written = await readFile(pidFile, "utf8").catch(() => "");
  // A pasta writes its pid once its namespace exists, so a pid read while the namespace is
  // missing is of a pasta whose namespace was deleted; a newer run's pid and namespace are
  // left alone.
  if ((await stat(netnsPath(name)).catch(() => undefined)) !== undefined) return;
  const pid = Number(written.trim());
  if (Number.isSafeInteger(pid) && pid > 0) {
    const cmdline = await readFile(`/proc/${pid}/cmdline`, "utf8").catch(() => "");
    if (cmdline.includes(`\0--netns\0${netnsPath(name)}\0`)) {
      try {
        process.kill(pid, "SIGTERM");
      } catch {
        // it exited meanwhile
      }
    }
  }
  if ((await readFile(pidFile, "utf8").catch(() => "")) === written) await rm(pidFile, { force: true });
}

/**
 * Stops the pastas whose namespace is gone: left by an environment that died between deleting
 * a namespace and stopping its pasta. Whoever started them, they serve nothing any more.
 */
export async function stopOrphanedPastas(): Promise<void> {
  const entries = await readdir(PASTA_PID_DIR, { withFileTypes: true }).catch(() => []);
  for (const entry of entries) {
    // Only files pasta could have written; whatever else is there is not this sweep's to touch.
    if (!entry.isFile() || !entry.name.endsWith(".pid")) continue;
    await stopPasta(entry.name.slice(0, -".pid".length));
  }
}

function pastaPidFile(name: string): string {
  return path.join(PASTA_PID_DIR, `${name}.pid`);
}

async function which(command: string, searchPath: string): Promise<string | undefined> {
  for (const dir of searchPath.split(":")) {
    if (dir === "") continue;
    const candidate = path.join(dir, command);
    try {
      await access(candidate, constants.X_OK);
      return candidate;
    } catch {
      // not here
    }
  }
  return undefined;
}

/** pasta's stderr, without the syslog complaints it prints where there is no syslog. */
function lastLines(text: string): string {
  return text
    .split("\n")
    .filter((l) => l.trim() !== "" && !l.startsWith("Failed to send"))
    .slice(-3)
    .join("; ");
}
