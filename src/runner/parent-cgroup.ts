import { mkdir, readFile, writeFile } from "node:fs/promises";
import type { CgroupLayout } from "./cgroup.js";

/** Limits on the cgroup all runs live under (both runners share it); undefined: none. */
export interface AggregateLimits {
  /** pids.max: processes + threads of all runs together. */
  pidsMax?: number;
  /** memory.max (v1: memory.limit_in_bytes) of all runs together, bytes. */
  memoryBytes?: number;
}

/**
 * Puts the aggregate limits on `parent` in the hierarchies that hold the pids and memory
 * controllers (v2, or v1 on a hybrid host), so that many runs at their own limits cannot
 * exhaust the host's pids or memory together. A limit that is not set is reset to none, so
 * removing the setting takes effect. Throws where cgroups are not writable; the callers log it.
 */
export async function limitParentCgroup(layout: CgroupLayout, parent: string, limits: AggregateLimits): Promise<void> {
  const pids = limits.pidsMax === undefined ? "max" : String(limits.pidsMax);
  const files: [string, string][] = [];
  if (layout.unified !== undefined) {
    const controllers = (await readFile(`${layout.unified}/cgroup.controllers`, "utf8").catch(() => "")).split(/\s+/);
    const wanted = ["pids", "memory"].filter((c) => controllers.includes(c));
    if (wanted.length > 0) {
      // A v2 controller works in a cgroup only when its parent enables it for children.
      await writeFile(`${layout.unified}/cgroup.subtree_control`, wanted.map((c) => `+${c}`).join(" "));
      if (wanted.includes("pids")) files.push([`${layout.unified}${parent}/pids.max`, pids]);
      if (wanted.includes("memory")) files.push([`${layout.unified}${parent}/memory.max`, limits.memoryBytes === undefined ? "max" : String(limits.memoryBytes)]);
    }
  }
  const v1Pids = layout.v1.get("pids");
  if (v1Pids !== undefined) files.push([`${v1Pids}${parent}/pids.max`, pids]);
  const v1Memory = layout.v1.get("memory");
  if (v1Memory !== undefined) files.push([`${v1Memory}${parent}/memory.limit_in_bytes`, limits.memoryBytes === undefined ? "-1" : String(limits.memoryBytes)]);
  for (const [file, value] of files) {
    await mkdir(file.slice(0, file.lastIndexOf("/")), { recursive: true });
    await writeFile(file, value, { flag: "r+" });
  }
}
