import { readFileSync } from "node:fs";
import { readFile, rmdir } from "node:fs/promises";
import { setTimeout as sleep } from "node:timers/promises";
import type { ExitMetrics } from "./types.js";

/**
 * Where the cgroup hierarchies are mounted, and which one answers for memory and CPU.
 * Handles cgroup v1, hybrid (v1 controllers + an empty unified hierarchy, as on this host)
 * and pure v2.
 */
export interface CgroupLayout {
  /** Mount points of every cgroup hierarchy (v1 and v2); a container has a directory in each. */
  hierarchies: string[];
  /** The v2 (unified) hierarchy, if mounted: where `cgroup.kill` lives. */
  unified: string | undefined;
  /** v1 hierarchies by controller (memory, pids, cpu, cpuacct, ...). */
  v1: Map<string, string>;
  memory: { dir: string; v2: boolean } | undefined;
  cpu: { dir: string; v2: boolean } | undefined;
  /**
   * The v2 hierarchy is mounted with `favordynmods`: without it, every move of a process into
   * a cgroup waits for an RCU grace period (12-17 ms per native start measured here).
   */
  favorDynmods: boolean;
}

export async function detectCgroupLayout(): Promise<CgroupLayout> {
  const info = await readFile("/proc/self/mountinfo", "utf8");
  const hierarchies: string[] = [];
  const v1 = new Map<string, string>();
  let memory: CgroupLayout["memory"];
  let cpu: CgroupLayout["cpu"];
  let unified: string | undefined;
  let favorDynmods = false;
  for (const line of info.split("\n")) {
    // id parent maj:min root mountpoint options [optional...] - fstype source superoptions
    const sep = line.indexOf(" - ");
    if (sep < 0) continue;
    const left = line.slice(0, sep).split(" ");
    const [fstype, , superOptions = ""] = line.slice(sep + 3).split(" ");
    const mountPoint = left[4]?.replace(/\\040/g, " ");
    if (mountPoint === undefined) continue;
    if (fstype === "cgroup") {
      hierarchies.push(mountPoint);
      const opts = superOptions.split(",");
      for (const o of opts) if (o !== "rw" && o !== "ro") v1.set(o, mountPoint);
      if (opts.includes("memory")) memory = { dir: mountPoint, v2: false };
      if (opts.includes("cpuacct")) cpu = { dir: mountPoint, v2: false };
    } else if (fstype === "cgroup2") {
      hierarchies.push(mountPoint);
      unified = mountPoint;
      favorDynmods = superOptions.split(",").includes("favordynmods");
    }
  }
  if (unified !== undefined) {
    // In hybrid mode the unified hierarchy has no controllers; use it only for what v1 lacks.
    const controllers = (await readFile(`${unified}/cgroup.controllers`, "utf8").catch(() => "")).split(/\s+/);
    if (!memory && controllers.includes("memory")) memory = { dir: unified, v2: true };
    if (!cpu) cpu = { dir: unified, v2: true }; // cpu.stat usage_usec exists without the cpu controller
  }
  return { hierarchies, unified, v1, memory, cpu, favorDynmods };
}

/**
 * Reads peak memory and total CPU time of the cgroup at `relPath` (absolute within each
 * hierarchy, e.g. "/runtara/runtara-abc"). Missing or unreadable files leave the field
 * undefined. Read synchronously, at every run's end: these files wait for no lock that cgroup
 * changes hold, and take microseconds, where fs/promises took over half a millisecond of CPU.
 */
export function readCgroupMetrics(layout: CgroupLayout, relPath: string): ExitMetrics {
  const metrics: ExitMetrics = { memoryPeakBytes: undefined, cpuUsageUsec: undefined };
  if (layout.memory) {
    const file = layout.memory.v2 ? "memory.peak" : "memory.max_usage_in_bytes";
    const v = readBigInt(`${layout.memory.dir}${relPath}/${file}`);
    if (v !== undefined) metrics.memoryPeakBytes = v;
  }
  if (layout.cpu) {
    if (layout.cpu.v2) {
      const m = /^usage_usec (\d+)$/m.exec(readText(`${layout.cpu.dir}${relPath}/cpu.stat`) ?? "");
      if (m) metrics.cpuUsageUsec = BigInt(m[1]!);
    } else {
      const ns = readBigInt(`${layout.cpu.dir}${relPath}/cpuacct.usage`);
      if (ns !== undefined) metrics.cpuUsageUsec = ns / 1000n;
    }
  }
  return metrics;
}

/**
 * Removes `relPath` (and any of the given child directories still there) in each of the
 * hierarchies (mount points; a layout's `hierarchies` for all of them).
 * A cgroup whose last process is still exiting answers EBUSY for a moment, so that is retried
 * (`busyRetries` times). Returns the directories that could not be removed.
 */
export async function removeCgroup(hierarchies: readonly string[], relPath: string, children: readonly string[] = [], busyRetries = 20): Promise<string[]> {
  const failed: string[] = [];
  await Promise.all(
    hierarchies.map(async (h) => {
      for (const dir of [...children.map((c) => `${h}${relPath}/${c}`), `${h}${relPath}`]) {
        const err = await rmdirRetrying(dir, busyRetries);
        if (err) failed.push(`${dir}: ${err}`);
      }
    }),
  );
  return failed;
}

async function rmdirRetrying(dir: string, busyRetries: number): Promise<string | undefined> {
  for (let attempt = 0; ; attempt++) {
    try {
      await rmdir(dir);
      return undefined;
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code === "ENOENT") return undefined;
      if (code !== "EBUSY" || attempt >= busyRetries) return code ?? String(e);
      await sleep(Math.min(5 * 2 ** attempt, 100));
    }
  }
}

function readText(file: string): string | undefined {
  try {
    return readFileSync(file, "utf8");
  } catch {
    return undefined;
  }
}

function readBigInt(file: string): bigint | undefined {
  const text = readText(file)?.trim();
  return text !== undefined && /^\d+$/.test(text) ? BigInt(text) : undefined;
}
