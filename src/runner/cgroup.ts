import { existsSync, readFileSync } from "node:fs";
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

/** A file an exit metric is read from: its first number, and what that number means. */
export interface MetricFile {
  /** The hierarchy's mount point. */
  dir: string;
  file: string;
  /** Sets the metric from the file's first number. */
  set(metrics: ExitMetrics, value: bigint): void;
}

/**
 * Where peak memory and total CPU time of a cgroup are read: each file's first number (v2's
 * cpu.stat starts with usage_usec).
 */
export function metricFiles(layout: CgroupLayout): MetricFile[] {
  const files: MetricFile[] = [];
  const { memory, cpu } = layout;
  if (memory) files.push({ dir: memory.dir, file: memory.v2 ? "memory.peak" : "memory.max_usage_in_bytes", set: (m, v) => void (m.memoryPeakBytes = v) });
  if (cpu) files.push({ dir: cpu.dir, file: cpu.v2 ? "cpu.stat" : "cpuacct.usage", set: (m, v) => void (m.cpuUsageUsec = cpu.v2 ? v : v / 1000n) });
  return files;
}

/** The metrics from the first numbers of `files` (null or undefined: none there). */
export function metricsFrom(files: readonly MetricFile[], values: readonly (string | null | undefined)[]): ExitMetrics {
  const metrics: ExitMetrics = { memoryPeakBytes: undefined, cpuUsageUsec: undefined };
  files.forEach((f, i) => {
    const v = values[i];
    if (v != null && /^\d+$/.test(v)) f.set(metrics, BigInt(v));
  });
  return metrics;
}

/**
 * Reads peak memory and total CPU time of the cgroup at `relPath` (absolute within each
 * hierarchy, e.g. "/runtara/runtara-abc"). Missing or unreadable files leave the field
 * undefined. Read synchronously, at every run's end: these files wait for no lock that cgroup
 * changes hold, and take microseconds, where fs/promises took over half a millisecond of CPU.
 */
export function readCgroupMetrics(layout: CgroupLayout, relPath: string): ExitMetrics {
  const files = metricFiles(layout);
  return metricsFrom(files, files.map((f) => /\d+/.exec(readText(`${f.dir}${relPath}/${f.file}`) ?? "")?.[0]));
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
      // Looked up synchronously first (a lookup takes no cgroup lock, unlike rmdir): most of
      // these are gone already (the runtime removed its container's), and each rmdir is a
      // thread-pool round trip.
      for (const dir of [...children.map((c) => `${h}${relPath}/${c}`), `${h}${relPath}`].filter((d) => existsSync(d))) {
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
