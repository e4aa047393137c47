import { mkdir, readFile, writeFile } from "node:fs/promises";
import { setTimeout as sleep } from "node:timers/promises";
import { readCgroupMetrics, removeCgroup, type CgroupLayout } from "./cgroup.js";
import type { ExitMetrics, ResourceLimits } from "./types.js";

/** v1 controllers a native process is placed under (limits and metrics); v2 needs none listed. */
const V1_CONTROLLERS = ["memory", "pids", "cpu", "cpuacct"];

/**
 * The cgroup of one native process, `relPath` in the unified (v2) hierarchy and in the v1
 * memory, pids and cpu hierarchies that exist (a hybrid host keeps its controllers in v1).
 * It bounds memory, CPU and pids like a container's, gives the exit metrics, and kills
 * everything the process started — also children that left its session or process group —
 * through `cgroup.kill`.
 */
export class ProcessCgroup {
  private constructor(
    private readonly layout: CgroupLayout,
    readonly relPath: string,
  ) {}

  /** Creates the cgroup with the limits set. Throws (EACCES, EROFS, ...) where cgroups are not writable. */
  static async create(layout: CgroupLayout, relPath: string, limits: Readonly<ResourceLimits>): Promise<ProcessCgroup> {
    const cgroup = new ProcessCgroup(layout, relPath);
    if (layout.unified === undefined) throw new Error("no cgroup v2 hierarchy is mounted (cgroup.kill needs one)");
    await enableV2Controllers(layout.unified, relPath);
    try {
      for (const dir of cgroup.dirs()) await mkdir(dir, { recursive: true });
      await cgroup.limit(limits);
    } catch (e) {
      await cgroup.remove();
      throw e;
    }
    return cgroup;
  }

  private async limit(limits: Readonly<ResourceLimits>): Promise<void> {
    const limitFiles: [string, string][] = [
      ["memory.max", String(limits.memoryBytes)],
      ["memory.limit_in_bytes", String(limits.memoryBytes)],
      ["pids.max", String(limits.pidsLimit)],
      ["cpu.max", `${limits.cpuQuotaUs} ${limits.cpuPeriodUs}`],
      ["cpu.cfs_period_us", String(limits.cpuPeriodUs)],
      ["cpu.cfs_quota_us", String(limits.cpuQuotaUs)],
    ];
    // Each file exists only where its controller is (v2 files in v2 with the controller
    // enabled, v1 files in their hierarchy); the others answer ENOENT.
    for (const dir of this.dirs()) {
      for (const [file, value] of limitFiles) await writeExisting(`${dir}/${file}`, value);
    }
  }

  /**
   * The cgroup `pid` is in (a process launched by an earlier run of the environment), if it
   * is one under `prefix` — a process that is gone or elsewhere has none of ours.
   */
  static async of(layout: CgroupLayout, pid: number, prefix: string): Promise<ProcessCgroup | undefined> {
    if (layout.unified === undefined) return undefined;
    const text = await readFile(`/proc/${pid}/cgroup`, "utf8").catch(() => "");
    const relPath = /^0::(\/.*)$/m.exec(text)?.[1];
    return relPath?.startsWith(prefix) ? new ProcessCgroup(layout, relPath) : undefined;
  }

  /** The files a pid is written to to move it into the cgroup, in every hierarchy. */
  procsFiles(): string[] {
    return this.dirs().map((dir) => `${dir}/cgroup.procs`);
  }

  /** SIGKILLs every process in the cgroup and waits until it is empty. */
  async kill(): Promise<void> {
    const unified = `${this.layout.unified}${this.relPath}`;
    const killed = await writeExisting(`${unified}/cgroup.kill`, "1");
    // Kernels before 5.14 have no cgroup.kill: kill what is listed until nothing is (a
    // process forking meanwhile is listed on the next round).
    for (let round = 0; round < 200; round++) {
      const pids = (await readFile(`${unified}/cgroup.procs`, "utf8").catch(() => "")).split("\n").filter((l) => l !== "");
      if (pids.length === 0) return;
      if (!killed) for (const pid of pids) killQuietly(Number(pid));
      await sleep(5);
    }
  }

  metrics(): Promise<ExitMetrics> {
    return readCgroupMetrics(this.layout, this.relPath);
  }

  /** Removes the directories; returns those that could not be removed. */
  remove(): Promise<string[]> {
    return removeCgroup(this.layout, this.relPath);
  }

  private dirs(): string[] {
    const mounts = new Set<string>();
    if (this.layout.unified !== undefined) mounts.add(this.layout.unified);
    for (const c of V1_CONTROLLERS) {
      const m = this.layout.v1.get(c);
      if (m !== undefined) mounts.add(m);
    }
    return [...mounts].map((m) => `${m}${this.relPath}`);
  }
}

/**
 * On a pure v2 host a controller works in a cgroup only if every ancestor enables it in
 * `cgroup.subtree_control`. Best effort per controller: one the host lacks is simply absent.
 */
async function enableV2Controllers(unified: string, relPath: string): Promise<void> {
  const available = (await readFile(`${unified}/cgroup.controllers`, "utf8").catch(() => "")).split(/\s+/);
  const wanted = ["memory", "pids", "cpu"].filter((c) => available.includes(c));
  if (wanted.length === 0) return;
  const parts = relPath.split("/").filter((p) => p !== "");
  let dir = unified;
  for (const part of parts.slice(0, -1)) {
    for (const c of wanted) await writeExisting(`${dir}/cgroup.subtree_control`, `+${c}`).catch(() => false);
    dir = `${dir}/${part}`;
    await mkdir(dir, { recursive: true });
  }
  for (const c of wanted) await writeExisting(`${dir}/cgroup.subtree_control`, `+${c}`).catch(() => false);
}

/** Writes an existing (cgroup) file; false when it does not exist. */
async function writeExisting(file: string, value: string): Promise<boolean> {
  try {
    await writeFile(file, value, { flag: "r+" });
    return true;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return false;
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
