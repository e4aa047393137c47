/** Small helpers shared by the benchmarks: percentiles, rates and ratio lines. */

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

export function printLatency(label: string, s: LatencySummary): void {
  console.log(`${label.padEnd(28)} n=${s.count}  p50=${fmt(s.p50)} ms  p99=${fmt(s.p99)} ms  max=${fmt(s.max)} ms`);
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

/** "label  value (target >= 0.7) ok|BELOW TARGET" — the figure, its target and the verdict. */
export function targetLine(label: string, value: number, op: ">=" | "<=", target: number, unit = ""): string {
  const ok = op === ">=" ? value >= target : value <= target;
  return `${label.padEnd(36)} ${fmt(value)}${unit} (target ${op} ${target}${unit}) ${ok ? "ok" : "MISSED"}`;
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
