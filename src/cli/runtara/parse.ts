/** Arguments as the API wants them; anything malformed is a UsageError naming the flag. */
import { readFileSync, statSync } from "node:fs";
import { timestampFromDate, type Timestamp } from "@bufbuild/protobuf/wkt";
import { UsageError } from "./failures.js";

/** Largest JSON argument read from a file (the server's payload cap is smaller by default). */
const MAX_JSON_ARGUMENT_BYTES = 64 * 1024 * 1024;

/** `--input '{"a":1}'` or `--input @file.json`: JSON checked, sent as UTF-8 bytes. */
export function jsonArgument(flag: string, value: string | undefined): Uint8Array {
  if (value === undefined) return new Uint8Array();
  let text = value;
  if (value.startsWith("@")) {
    const file = value.slice(1);
    // A regular file of bounded size: not /dev/zero, a FIFO or a directory.
    try {
      const st = statSync(file);
      if (!st.isFile()) throw new UsageError(`${flag}: ${file} is not a regular file`);
      if (st.size > MAX_JSON_ARGUMENT_BYTES) throw new UsageError(`${flag}: ${file} is larger than ${MAX_JSON_ARGUMENT_BYTES} bytes`);
      text = readFileSync(file, "utf8");
    } catch (e) {
      if (e instanceof UsageError) throw e;
      throw new UsageError(`${flag}: cannot read ${file}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
    }
  }
  try {
    JSON.parse(text);
  } catch (e) {
    throw new UsageError(`${flag} must be JSON (or @file holding JSON): ${(e as Error).message}`);
  }
  return new TextEncoder().encode(text);
}

/** Repeated `--env K=V`. */
export function envArgument(value: string, previous: Record<string, string> = {}): Record<string, string> {
  const i = value.indexOf("=");
  if (i <= 0) throw new UsageError(`--env wants KEY=VALUE, got ${JSON.stringify(value)}`);
  return { ...previous, [value.slice(0, i)]: value.slice(i + 1) };
}

export function intArgument(flag: string, value: string | undefined, min = 0, max = 2 ** 31 - 1): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (!/^-?\d+$/.test(value) || n < min || n > max) throw new UsageError(`${flag} must be an integer from ${min} to ${max}, got ${JSON.stringify(value)}`);
  return n;
}

/** An ISO 8601 time, or a duration ago: `15m`, `2h`, `7d`. */
export function timeArgument(flag: string, value: string | undefined, now = Date.now()): Timestamp | undefined {
  if (value === undefined) return undefined;
  const ago = /^(\d{1,9})([smhd])$/.exec(value);
  if (ago) return timestampFromDate(new Date(Math.max(0, now - Number(ago[1]) * { s: 1e3, m: 6e4, h: 36e5, d: 864e5 }[ago[2] as "s"])));
  const t = /^\d{4}-\d{2}-\d{2}/.test(value) ? Date.parse(value) : NaN;
  if (Number.isNaN(t)) throw new UsageError(`${flag} must be an ISO time (2026-12-01T10:00:00Z) or an age (15m, 2h, 7d), got ${JSON.stringify(value)}`);
  return timestampFromDate(new Date(t));
}

/** `running` → the enum value of `names` whose name ends in `_RUNNING` (or is RUNNING). */
export function enumArgument<E extends number>(flag: string, names: Record<string, string | number>, value: string | undefined): E | undefined {
  if (value === undefined) return undefined;
  const wanted = value.toUpperCase().replace(/-/g, "_");
  const choices = Object.keys(names).filter((k) => Number.isNaN(Number(k)) && k !== "UNSPECIFIED");
  const match = choices.find((k) => k === wanted);
  if (match === undefined) throw new UsageError(`${flag} must be one of ${choices.map((c) => c.toLowerCase().replace(/_/g, "-")).join(", ")}, got ${JSON.stringify(value)}`);
  return names[match] as E;
}
