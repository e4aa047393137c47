/** Small helpers shared by the benchmarks: percentiles, rates and ratio lines. */

import { readdirSync, readFileSync, writeFileSync } from "node:fs";
import http2 from "node:http2";
import type { AddressInfo } from "node:net";
import type { ConnectRouter } from "@connectrpc/connect";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import { createRequire, syncBuiltinESMExports } from "node:module";
import path from "node:path";

export function percentile(sortedMs: readonly number[], p: number): number {
  if (sortedMs.length === 0) return NaN;
  const i = Math.min(sortedMs.length - 1, Math.max(0, Math.ceil((p / 100) * sortedMs.length) - 1));
  return sortedMs[i]!;
}

export interface LatencySummary {
  count: number;
  p50: number;
  p99: number;
  max: number;
}

export function summarize(samplesMs: readonly number[]): LatencySummary {
  const sorted = [...samplesMs].sort((a, b) => a - b);
  return { count: sorted.length, p50: percentile(sorted, 50), p99: percentile(sorted, 99), max: sorted[sorted.length - 1] ?? NaN };
}

export const fmt = (n: number, digits = 2) => (Number.isFinite(n) ? n.toFixed(digits) : "n/a");

/** One line of latency figures; `extra` (say, a rate) is appended, `width` pads the label. */
export function printLatency(label: string, s: LatencySummary, extra = "", width = 28): void {
  console.log(`${label.padEnd(width)} n=${s.count}  p50=${fmt(s.p50)} ms  p99=${fmt(s.p99)} ms  max=${fmt(s.max)} ms${extra ? `  ${extra}` : ""}`);
}

/** Runs `task` `total` times with `concurrency` workers; returns each duration in ms and the wall time. */
export async function runConcurrent(
  total: number,
  concurrency: number,
  task: (i: number) => Promise<void>,
): Promise<{ durationsMs: number[]; wallMs: number }> {
  const durationsMs: number[] = [];
  let next = 0;
  const started = performance.now();
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      for (let i = next++; i < total; i = next++) {
        const t0 = performance.now();
        await task(i);
        durationsMs.push(performance.now() - t0);
      }
    }),
  );
  return { durationsMs, wallMs: performance.now() - started };
}

export const MiB = 1024 * 1024;

/** Throughput in MB/s (10^6 bytes per second). */
export const mbPerSec = (bytes: number, ms: number) => bytes / 1e6 / (ms / 1000);

export function median(values: readonly number[]): number {
  return percentile([...values].sort((a, b) => a - b), 50);
}

/** One figure a benchmark reports, as `npm run bench` writes it to bench/results.json. */
export interface Figure {
  label: string;
  value: number;
  unit: string;
  target?: { op: ">=" | "<="; value: number; met: boolean };
}

const figures: Figure[] = [];

/**
 * Keeps a figure for bench/results.json. When run by `npm run bench` (BENCH_RESULTS names a
 * file), every figure recorded is written there as JSON when the process exits.
 */
export function recordFigure(label: string, value: number, unit = "", target?: Figure["target"]): void {
  if (figures.length === 0 && process.env.BENCH_RESULTS) {
    const file = process.env.BENCH_RESULTS;
    process.once("exit", () => writeFileSync(file, JSON.stringify(figures)));
  }
  figures.push({ label, value: Number.isFinite(value) ? value : NaN, unit: unit.trim(), ...(target ? { target } : {}) });
}

/** "label  value (target >= 0.7) ok|MISSED" — the figure, its target and the verdict (recorded). */
export function targetLine(label: string, value: number, op: ">=" | "<=", target: number, unit = ""): string {
  const met = op === ">=" ? value >= target : value <= target;
  recordFigure(label, value, unit, { op, value: target, met });
  return `${label.padEnd(36)} ${fmt(value)}${unit} (target ${op} ${target}${unit}) ${met ? "ok" : "MISSED"}`;
}

/**
 * Samples this process's resident set size every `intervalMs` until stop(); reports the
 * baseline taken at start, the maximum seen, and the growth between them.
 */
export function sampleRss(intervalMs = 20): { stop(): { beforeBytes: number; maxBytes: number; growthBytes: number } } {
  const beforeBytes = process.memoryUsage.rss();
  let maxBytes = beforeBytes;
  const timer = setInterval(() => {
    maxBytes = Math.max(maxBytes, process.memoryUsage.rss());
  }, intervalMs);
  return {
    stop() {
      clearInterval(timer);
      maxBytes = Math.max(maxBytes, process.memoryUsage.rss());
      return { beforeBytes, maxBytes, growthBytes: maxBytes - beforeBytes };
    },
  };
}

/** Operations per second for `count` operations over `wallMs`. */
export const perSec = (count: number, wallMs: number) => count / (wallMs / 1000);

export interface SpawnBlocking {
  /** Samples (ms the synchronous spawn() call took) by tag, since the last take(). */
  take(): Map<string, number[]>;
  /** Puts the original child_process.spawn back. */
  restore(): void;
}

/** One spawn() call as `instrumentSpawn` saw it. */
export interface SpawnCall {
  file: string;
  args: readonly string[];
  /** The spawn options (env, stdio, ...), if any were passed. */
  options: { env?: Record<string, string | undefined> } | undefined;
  tag: string;
  /** performance.now() when spawn() was called. */
  calledAt: number;
  /** How long the call blocked the event loop, ms. */
  blockedMs: number;
}

const defaultSpawnTag = (file: string, args: readonly string[]) => {
  const verb = args.find((a) => /^[a-z]+$/.test(a)); // "run", "delete" (skips "--root <dir>")
  return file.includes("runc") || file.includes("crun") ? `${path.basename(file)} ${verb ?? ""}`.trim() : path.basename(file);
};

/**
 * Measures how long each child_process.spawn() call blocks the event loop (libuv forks and
 * waits for the exec inside it), for every caller in this process — execa and ESM modules
 * that imported `spawn` by name included (syncBuiltinESMExports updates their live bindings).
 * Samples are tagged by `tagOf`, by default the program's base name plus, for runc/crun, its
 * subcommand ("runc run", "runc delete", "binary"); `onSpawn` sees every call.
 */
export function instrumentSpawn(
  opts: { tagOf?: (file: string, args: readonly string[]) => string; onSpawn?: (call: SpawnCall) => void } = {},
): SpawnBlocking {
  const tagOf = opts.tagOf ?? defaultSpawnTag;
  const cp = createRequire(import.meta.url)("node:child_process") as typeof import("node:child_process");
  const original = cp.spawn;
  let samples = new Map<string, number[]>();
  const wrapped = function (this: unknown, file: string, ...rest: unknown[]) {
    const args = Array.isArray(rest[0]) ? (rest[0] as string[]) : [];
    const options = (Array.isArray(rest[0]) ? rest[1] : rest[0]) as SpawnCall["options"];
    const calledAt = performance.now();
    try {
      return (original as (...a: unknown[]) => unknown).call(this, file, ...rest);
    } finally {
      const blockedMs = performance.now() - calledAt;
      const tag = tagOf(file, args);
      const list = samples.get(tag);
      if (list) list.push(blockedMs);
      else samples.set(tag, [blockedMs]);
      opts.onSpawn?.({ file, args, options, tag, calledAt, blockedMs });
    }
  };
  cp.spawn = wrapped as typeof cp.spawn;
  syncBuiltinESMExports();
  return {
    take() {
      const out = samples;
      samples = new Map();
      return out;
    },
    restore() {
      cp.spawn = original;
      syncBuiltinESMExports();
    },
  };
}

/** "label  p50 (api) / p50 (bare) = 1.23 (target <= 1.5) ok" style comparison of two figures. */
export function ratioLine(label: string, numerator: number, denominator: number, target?: { op: ">=" | "<="; value: number }): string {
  const ratio = numerator / denominator;
  if (target === undefined) {
    recordFigure(label, ratio, "x");
    return `${label.padEnd(36)} ${fmt(ratio)}`;
  }
  return targetLine(label, ratio, target.op, target.value);
}

/** A count or duration a benchmark takes from the environment (`BENCH_*`), or its default. */
export const envNumber = (name: string, fallback: number) => Number(process.env[name] ?? fallback);

/** Clock ticks per second of /proc/<pid>/stat times (USER_HZ; 100 on Linux). */
const TICKS_PER_SECOND = 100;

/** CPU time, ms, of the whole host and of each process in it. */
export interface HostCpu {
  /** All CPUs, not idle or waiting for I/O (/proc/stat). */
  busyMs: number;
  /** Per pid: its group (by `classify`), its own CPU and its reaped children's. */
  processes: Map<number, { group: string | undefined; selfMs: number; childrenMs: number }>;
}

/**
 * Reads the CPU time of the host and of every process, each named by `classify` (pid, comm,
 * command line; undefined for a process of no interest). A process that exited and was reaped
 * in between counts in its parent's children's time (that is how a run's workflow processes
 * are seen: a launcher reaps them).
 */
export function hostCpu(classify: (pid: number, comm: string, cmdline: string) => string | undefined): HostCpu {
  const ticks = (v: string | undefined) => (Number(v) * 1000) / TICKS_PER_SECOND;
  const all = readFileSync("/proc/stat", "utf8").split("\n", 1)[0]!.trim().split(/\s+/).slice(1).map(Number);
  const busyMs = ticks(String(all.reduce((a, b) => a + b, 0) - all[3]! - (all[4] ?? 0)));
  const processes: HostCpu["processes"] = new Map();
  for (const name of readdirSync("/proc")) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = readFileSync(`/proc/${name}/stat`, "utf8");
      const comm = stat.slice(stat.indexOf("(") + 1, stat.lastIndexOf(")"));
      // Fields after "(comm) ": utime stime cutime cstime are the 12th-15th.
      const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      const cmdline = readFileSync(`/proc/${name}/cmdline`, "utf8").replaceAll("\0", " ");
      const pid = Number(name);
      processes.set(pid, { group: classify(pid, comm, cmdline), selfMs: ticks(f[11]) + ticks(f[12]), childrenMs: ticks(f[13]) + ticks(f[14]) });
    } catch {
      // gone meanwhile
    }
  }
  return { busyMs, processes };
}

/**
 * CPU per group between two readings, ms: each group's own time and, as "<group>'s children",
 * its reaped children's; "everything else" is the rest of the host's busy time (other
 * processes, the kernel's threads and interrupts).
 */
export function hostCpuSplit(before: HostCpu, after: HostCpu): Map<string, number> {
  const out = new Map<string, number>();
  const add = (k: string, ms: number) => ms > 0 && out.set(k, (out.get(k) ?? 0) + ms);
  let grouped = 0;
  for (const [pid, a] of after.processes) {
    if (a.group === undefined) continue;
    const b = before.processes.get(pid);
    const same = b !== undefined && b.group === a.group;
    const self = a.selfMs - (same ? b.selfMs : 0);
    const children = a.childrenMs - (same ? b.childrenMs : 0);
    add(a.group, self);
    add(`${a.group}'s children`, children);
    grouped += Math.max(0, self) + Math.max(0, children);
  }
  add("everything else", after.busyMs - before.busyMs - grouped);
  return out;
}

export interface BareConnectServer {
  baseUrl: string;
  close(): Promise<void>;
}

/**
 * A baseline server: connect-node's own adapter (createConnectRouter via connectNodeAdapter)
 * on node:http2 with default settings, h2c on loopback, serving only `routes`.
 */
export async function serveBareConnect(routes: (router: ConnectRouter) => void): Promise<BareConnectServer> {
  const server = http2.createServer(connectNodeAdapter({ routes }));
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => resolve());
  });
  const sessions = new Set<http2.ServerHttp2Session>();
  server.on("session", (s) => {
    sessions.add(s);
    s.once("close", () => sessions.delete(s));
  });
  return {
    baseUrl: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sessions) s.close();
        server.close(() => resolve());
      }),
  };
}
