/**
 * A duration: milliseconds as a number, or a string of one or more `<number><unit>` parts
 * with units `ms`, `s`, `m`, `h`, `d` — `"500ms"`, `"2s"`, `"1.5h"`, `"1h30m"`.
 */
export type Duration = number | `${number}${DurationUnit}` | (string & {});

type DurationUnit = "ms" | "s" | "m" | "h" | "d";

const UNIT_MS: Record<DurationUnit, number> = {
  ms: 1,
  s: 1_000,
  m: 60_000,
  h: 3_600_000,
  d: 86_400_000,
};

const WHOLE = /^(?:\s*\d+(?:\.\d+)?\s*(?:ms|s|m|h|d)\s*)+$/;
const PART = /(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)/g;

/**
 * Converts a {@link Duration} to whole milliseconds (rounded). Throws a RangeError naming the
 * value for anything else: negative or non-finite numbers, unknown units, empty strings.
 */
export function parseDuration(duration: Duration, what = "duration"): number {
  if (typeof duration === "number") {
    if (!Number.isFinite(duration) || duration < 0) {
      throw new RangeError(`${what} must be a non-negative number of milliseconds, got ${duration}`);
    }
    return Math.round(duration);
  }
  if (typeof duration !== "string" || !WHOLE.test(duration)) {
    throw new RangeError(
      `${what} must be milliseconds or a string like "500ms", "2s", "5m", "1h", "1h30m", got ${JSON.stringify(duration)}`,
    );
  }
  let total = 0;
  for (const [, amount, unit] of duration.matchAll(PART)) {
    total += Number(amount) * UNIT_MS[unit as DurationUnit];
  }
  return Math.round(total);
}
