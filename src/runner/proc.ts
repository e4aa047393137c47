import { readFileSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { setTimeout as sleep } from "node:timers/promises";

/** The fields of /proc/<pid>/stat this module needs. */
export interface ProcStat {
  /** R, S, D, Z (zombie), X (dead), T, ... */
  state: string;
  ppid: number;
  pgid: number;
  /** Clock ticks since boot at which the process started (field 22); fixed for its lifetime. */
  startTime: bigint;
}

/**
 * Parses /proc/<pid>/stat. The command name (field 2) is in parentheses and may itself contain
 * spaces and ')', so fields are counted from the last ')'.
 */
export function parseProcStat(text: string): ProcStat | null {
  const close = text.lastIndexOf(")");
  if (close < 0) return null;
  // After ") ": field 3 (state) is index 0, so field n is index n - 3.
  const f = text.slice(close + 2).split(" ");
  const state = f[0];
  const ppid = Number(f[1]);
  const pgid = Number(f[2]);
  const start = f[19];
  if (state === undefined || start === undefined || !/^\d+$/.test(start)) return null;
  return { state, ppid, pgid, startTime: BigInt(start) };
}

export async function readProcStat(pid: number): Promise<ProcStat | null> {
  if (!Number.isSafeInteger(pid) || pid <= 0) return null;
  try {
    return parseProcStat(await readFile(`/proc/${pid}/stat`, "utf8"));
  } catch {
    return null; // ENOENT/ESRCH: no such process (any other error means the same to callers)
  }
}

/** Start time of a process in clock ticks since boot, or null when there is no such process. */
export async function readProcessStartTime(pid: number): Promise<bigint | null> {
  return (await readProcStat(pid))?.startTime ?? null;
}

/** True while `pid` is the live (not zombie) process that started at `startTime`. */
export async function isSameProcess(pid: number, startTime: bigint): Promise<boolean> {
  const stat = await readProcStat(pid);
  return stat !== null && stat.startTime === startTime && stat.state !== "Z" && stat.state !== "X";
}

/**
 * Resolves once the process identified by (pid, startTime) is gone or a zombie. For processes
 * that are not our children (adopted after a restart), whose exit we cannot be told about:
 * Node has no pidfd API, so this polls /proc slowly. Children use their exit event instead.
 */
export async function watchPid(
  pid: number,
  startTime: bigint,
  options: { intervalMs?: number; signal?: AbortSignal } = {},
): Promise<void> {
  const interval = options.intervalMs ?? 1_000;
  while (await isSameProcess(pid, startTime)) {
    await sleep(interval, undefined, { signal: options.signal });
  }
}

let cachedBootId: string | undefined;

/**
 * This boot of the host (/proc/sys/kernel/random/boot_id). A pid and start time recorded in
 * another boot can match an unrelated process, so adoption requires the same boot.
 */
export function bootId(): string {
  cachedBootId ??= readFileSync("/proc/sys/kernel/random/boot_id", "utf8").trim();
  return cachedBootId;
}
