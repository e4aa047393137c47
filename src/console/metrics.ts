/**
 * The figures the overview charts, from /metrics (Prometheus text, parsed here): counters and
 * histograms are cumulative, so each scrape is compared with the one before it.
 */

/** `name{labels}` -> value, for the metric names asked for. */
export type Samples = Map<string, number>;

const LINE = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)/;

export function parsePrometheus(text: string, names: readonly string[]): Samples {
  const wanted = new Set(names);
  const samples: Samples = new Map();
  for (const line of text.split("\n")) {
    const m = LINE.exec(line);
    if (!m || !wanted.has(baseName(m[1]!))) continue;
    samples.set(`${m[1]}${m[2] ?? ""}`, Number(m[3]));
  }
  return samples;
}

/** A histogram's or counter's family name (`_bucket`, `_sum`, `_count`, `_total` kept apart from it). */
function baseName(name: string): string {
  return name.replace(/_(bucket|sum|count)$/, "");
}

/** Sum of every series of `name` (all label sets). */
export function total(samples: Samples, name: string): number {
  let sum = 0;
  for (const [key, value] of samples) if (key === name || key.startsWith(`${name}{`)) sum += value;
  return sum;
}

/** Values of `name` by the value of `label`. */
export function byLabel(samples: Samples, name: string, label: string): Map<string, number> {
  const out = new Map<string, number>();
  const re = new RegExp(`${label}="([^"]*)"`);
  for (const [key, value] of samples) {
    if (!key.startsWith(`${name}{`)) continue;
    const m = re.exec(key);
    if (m) out.set(m[1]!, (out.get(m[1]!) ?? 0) + value);
  }
  return out;
}

/** Cumulative bucket counts of histogram `name` by upper bound (every label set added up). */
function buckets(samples: Samples, name: string): Map<number, number> {
  const out = new Map<number, number>();
  for (const [key, value] of samples) {
    if (!key.startsWith(`${name}_bucket{`)) continue;
    const le = /le="([^"]+)"/.exec(key)?.[1];
    if (le === undefined) continue;
    const bound = le === "+Inf" ? Infinity : Number(le);
    out.set(bound, (out.get(bound) ?? 0) + value);
  }
  return out;
}

/**
 * The `q` quantile of what histogram `name` observed between two scrapes (the upper bound of
 * the bucket it falls in), or undefined when nothing was observed.
 */
export function quantileBetween(before: Samples, after: Samples, name: string, q: number): number | undefined {
  const b = buckets(before, name);
  const a = [...buckets(after, name)].sort((x, y) => x[0] - y[0]);
  const count = (a.at(-1)?.[1] ?? 0) - (b.get(Infinity) ?? 0);
  if (count <= 0) return undefined;
  for (const [bound, cumulative] of a) {
    if (cumulative - (b.get(bound) ?? 0) >= q * count) return Number.isFinite(bound) ? bound : a.at(-2)?.[0];
  }
  return undefined;
}
