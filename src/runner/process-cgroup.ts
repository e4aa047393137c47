import { readFileSync } from "node:fs";
import { mkdir, readFile, writeFile } from "node:fs/promises";
import { setTimeout as sleep } from "node:timers/promises";
import { metricFiles, metricsFrom, readCgroupMetrics, removeCgroup, type CgroupLayout, type MetricFile } from "./cgroup.js";
import type { CgroupSetup } from "./spawner-protocol.js";
import type { ExitMetrics, ResourceLimits } from "./types.js";

/** v1 controllers a native process is placed under (limits and metrics); v2 needs none listed. */
const V1_CONTROLLERS = ["memory", "pids", "cpu", "cpuacct"];

/**
 * Where the cgroups of native processes go under one parent, found once: the hierarchies a
 * process is placed in, and which limit file lives in which (a hybrid host keeps its
 * controllers in v1, a pure v2 host enables them on the parent). Creating a cgroup then
 * writes only files that exist, hierarchies in parallel (trying every file everywhere, one
 * after another, took 5-7 ms per launch).
 */
export class CgroupPlacement {
  /** What the launcher reads at a run's end (the metric files in a hierarchy a process is placed in). */
  private readonly endReads: MetricFile[];

  private constructor(
    readonly layout: CgroupLayout,
    readonly mounts: readonly string[],
    private readonly parent: string,
    private readonly v2Controllers: ReadonlySet<string>,
  ) {
    this.endReads = metricFiles(layout).filter((f) => mounts.includes(f.dir));
  }

  /** Throws where there is no v2 hierarchy (cgroup.kill needs one). */
  static async prepare(layout: CgroupLayout, parent: string): Promise<CgroupPlacement> {
    if (layout.unified === undefined) throw new Error("no cgroup v2 hierarchy is mounted (cgroup.kill needs one)");
    const v2 = await enableV2Controllers(layout.unified, parent);
    const mounts = new Set([layout.unified]);
    for (const c of V1_CONTROLLERS) {
      const m = layout.v1.get(c);
      if (m !== undefined) mounts.add(m);
    }
    // Each process creates only its own directory (see setup): the parent must be there. The
    // unified hierarchy comes first (CgroupSetup.parents).
    await Promise.all([...mounts].map((m) => mkdir(`${m}${parent}`, { recursive: true })));
    return new CgroupPlacement(layout, [...mounts], parent, new Set(v2));
  }

  /**
   * What the launcher needs to give a process a new cgroup named `<prefix>…` under the
   * parent, with these limits (see CgroupSetup). The process creates and joins it, so that
   * none of it blocks this process's event loop, whose fs/promises calls cost a thread-pool
   * round trip each (about 30 per start: 2-3 ms of CPU here).
   */
  setup(prefix: string, limits: Readonly<ResourceLimits>, prefork: number): CgroupSetup {
    const index = (mount: string) => this.mounts.indexOf(mount);
    const v1 = (controller: string) => {
      const m = this.layout.v1.get(controller);
      return m === undefined ? undefined : index(m);
    };
    const files: CgroupSetup["limits"] = [];
    const memory = v1("memory");
    if (memory !== undefined) files.push([memory, "memory.limit_in_bytes", String(limits.memoryBytes)]);
    else if (this.v2Controllers.has("memory")) files.push([0, "memory.max", String(limits.memoryBytes)]);
    const pids = v1("pids");
    if (pids !== undefined) files.push([pids, "pids.max", String(limits.pidsLimit)]);
    else if (this.v2Controllers.has("pids")) files.push([0, "pids.max", String(limits.pidsLimit)]);
    const cpu = v1("cpu");
    if (cpu !== undefined) {
      files.push([cpu, "cpu.cfs_period_us", String(limits.cpuPeriodUs)], [cpu, "cpu.cfs_quota_us", String(limits.cpuQuotaUs)]);
    } else if (this.v2Controllers.has("cpu")) {
      files.push([0, "cpu.max", `${limits.cpuQuotaUs} ${limits.cpuPeriodUs}`]);
    }
    const reads = this.endReads.map((f): [number, string] => [index(f.dir), f.file]);
    return { parents: this.mounts.map((m) => `${m}${this.parent}`), prefix, limits: files, reads, prefork };
  }

  /** A run's exit metrics from what the launcher read at its end (ChildExit.cgroupReads). */
  metricsFrom(reads: readonly (string | null)[]): ExitMetrics {
    return metricsFrom(this.endReads, reads);
  }
}

/**
 * The cgroup of one native process, `relPath` in the unified (v2) hierarchy and in the v1
 * memory, pids and cpu hierarchies that exist (a hybrid host keeps its controllers in v1).
 * It bounds memory, CPU and pids like a container's, gives the exit metrics, and kills
 * everything the process started — also children that left its session or process group —
 * through `cgroup.kill`.
 */
export class ProcessCgroup {
  private constructor(
    private readonly placement: CgroupPlacement,
    readonly relPath: string,
  ) {}

  /**
   * The cgroup `pid` is in (a process launched by an earlier run of the environment), if it
   * is one under `prefix` — a process that is gone or elsewhere has none of ours.
   */
  static async of(placement: CgroupPlacement, pid: number, prefix: string): Promise<ProcessCgroup | undefined> {
    const text = await readFile(`/proc/${pid}/cgroup`, "utf8").catch(() => "");
    const relPath = /^0::(\/.*)$/m.exec(text)?.[1];
    return relPath?.startsWith(prefix) ? new ProcessCgroup(placement, relPath) : undefined;
  }

  /** The cgroup at `relPath` (one found by name). */
  static at(placement: CgroupPlacement, relPath: string): ProcessCgroup {
    return new ProcessCgroup(placement, relPath);
  }

  /**
   * The processes in it; none when it is gone. Read synchronously: a read of cgroup.procs
   * waits for no lock that cgroup changes hold (cgroup_mutex), takes microseconds, and
   * through fs/promises cost over a millisecond of CPU at every run's end.
   */
  pids(): number[] {
    let text: string;
    try {
      text = readFileSync(`${this.placement.layout.unified}${this.relPath}/cgroup.procs`, "utf8");
    } catch {
      return [];
    }
    return text
      .split("\n")
      .filter((l) => l !== "")
      .map(Number);
  }

  /**
   * SIGKILLs every process in the cgroup and in cgroups under it (cgroup.kill takes the
   * subtree; cgroup.procs lists only its own, so an empty list is no reason to skip the kill)
   * and waits until it is empty.
   */
  async kill(): Promise<void> {
    const unified = `${this.placement.layout.unified}${this.relPath}`;
    const killed = await writeExisting(`${unified}/cgroup.kill`, "1");
    // Kernels before 5.14 have no cgroup.kill: kill what is listed until nothing is (a
    // process forking meanwhile is listed on the next round).
    for (let round = 0; round < 200; round++) {
      const pids = this.pids();
      if (pids.length === 0) return;
      if (!killed) for (const pid of pids) killQuietly(pid);
      await sleep(5);
    }
  }

  metrics(): ExitMetrics {
    return readCgroupMetrics(this.placement.layout, this.relPath);
  }

  /** Removes the directories; returns those that could not be removed. */
  remove(): Promise<string[]> {
    return removeCgroup(this.placement.mounts, this.relPath);
  }

  private dirs(): string[] {
    return this.placement.mounts.map((m) => `${m}${this.relPath}`);
  }
}

/**
 * On a pure v2 host a controller works in a cgroup only if every ancestor enables it in
 * `cgroup.subtree_control`: enables memory, pids and cpu from the root down to `parent`, so
 * they work in the parent's children. Best effort per controller (one the host lacks is
 * simply absent); returns those the parent enables for its children.
 */
async function enableV2Controllers(unified: string, parent: string): Promise<string[]> {
  const available = (await readFile(`${unified}/cgroup.controllers`, "utf8").catch(() => "")).split(/\s+/);
  const wanted = ["memory", "pids", "cpu"].filter((c) => available.includes(c));
  if (wanted.length === 0) return [];
  const enable = async (dir: string) => {
    for (const c of wanted) await writeExisting(`${dir}/cgroup.subtree_control`, `+${c}`).catch(() => false);
  };
  let dir = unified;
  await enable(dir);
  for (const part of parent.split("/").filter((p) => p !== "")) {
    dir = `${dir}/${part}`;
    await mkdir(dir, { recursive: true });
    await enable(dir);
  }
  const enabled = (await readFile(`${dir}/cgroup.subtree_control`, "utf8").catch(() => "")).split(/\s+/);
  return wanted.filter((c) => enabled.includes(c));
}

/**
 * Writes an existing (cgroup) file; false when it does not exist, or its cgroup is being
 * removed meanwhile (ENODEV: the file opened, the directory went before the write).
 */
async function writeExisting(file: string, value: string): Promise<boolean> {
  try {
    await writeFile(file, value, { flag: "r+" });
    return true;
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === "ENOENT" || code === "ENODEV") return false;
    throw e;
  }
}

function killQuietly(pid: number): void {
  try {
    process.kill(pid, "SIGKILL");
  } catch {
    // already gone
  }
}
