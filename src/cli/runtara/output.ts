/**
 * What the CLI prints: aligned tables and relative times for people, protobuf JSON for scripts
 * (`--output json`, one document per command, parseable back with fromJson), colour only on a
 * terminal.
 */
import { styleText } from "node:util";
import { toJson, type DescMessage, type MessageShape } from "@bufbuild/protobuf";
import { timestampDate, type Timestamp } from "@bufbuild/protobuf/wkt";
import { InstanceStatus } from "../../../gen/runtara/core/v1/types_pb.js";
import type { Context } from "./context.js";
import { oneLine } from "./failures.js";

export { oneLine };

type Style = Parameters<typeof styleText>[0];

export function paint(ctx: Pick<Context, "tty">, style: Style, text: string): string {
  return ctx.tty && !process.env.NO_COLOR ? styleText(style, text) : text;
}

const STATUS_STYLE: Partial<Record<InstanceStatus, Style>> = {
  [InstanceStatus.PENDING]: "yellow",
  [InstanceStatus.RUNNING]: "cyan",
  [InstanceStatus.SUSPENDED]: "magenta",
  [InstanceStatus.COMPLETED]: "green",
  [InstanceStatus.FAILED]: "red",
  [InstanceStatus.CANCELLED]: "gray",
};

/** `COMPLETED`, coloured on a terminal. */
export function statusText(ctx: Pick<Context, "tty">, status: InstanceStatus): string {
  const name = InstanceStatus[status] ?? String(status);
  const style = STATUS_STYLE[status];
  return style ? paint(ctx, style, name) : name;
}

/** Enum value name without its prefix: `TERMINATION_REASON_CRASHED` → `crashed`. */
export function enumName(names: Record<number, string>, value: number): string {
  return value === 0 ? "" : (names[value] ?? String(value)).toLowerCase();
}

/** "3m ago", "in 20s"; empty for an unset time. */
export function relativeTime(ts: Timestamp | undefined, now = Date.now()): string {
  if (ts === undefined) return "";
  const deltaMs = timestampDate(ts).getTime() - now;
  const span = Math.abs(deltaMs) / 1000;
  const text =
    span < 1 ? "now" : span < 60 ? `${Math.floor(span)}s` : span < 3600 ? `${Math.floor(span / 60)}m` : span < 86400 ? `${Math.floor(span / 3600)}h` : `${Math.floor(span / 86400)}d`;
  if (text === "now") return text;
  return deltaMs < 0 ? `${text} ago` : `in ${text}`;
}

/** "1.5 s", "2m 3s" between two times (to now when `to` is unset); empty without `from`. */
export function duration(from: Timestamp | undefined, to: Timestamp | undefined, now = Date.now()): string {
  if (from === undefined) return "";
  const ms = (to ? timestampDate(to).getTime() : now) - timestampDate(from).getTime();
  if (ms < 0) return "";
  if (ms < 1000) return `${ms}ms`;
  if (ms < 60_000) return `${(ms / 1000).toFixed(1)}s`;
  return `${Math.floor(ms / 60_000)}m ${Math.floor((ms % 60_000) / 1000)}s`;
}

export function bytes(n: bigint | number): string {
  const v = Number(n);
  if (v < 1024) return `${v} B`;
  const units = ["KiB", "MiB", "GiB", "TiB"];
  let x = v / 1024;
  let i = 0;
  while (x >= 1024 && i < units.length - 1) {
    x /= 1024;
    i++;
  }
  return `${x.toFixed(x < 10 ? 1 : 0)} ${units[i]}`;
}

/** Columns padded to their widest cell (escape codes do not count), two spaces apart. */
export function table(header: string[], rows: string[][]): string {
  const visible = (s: string) => s.replace(/\x1b\[[0-9;]*m/g, "").length;
  const widths = header.map((h, i) => Math.max(visible(h), ...rows.map((r) => visible(r[i] ?? ""))));
  const line = (cells: string[]) =>
    cells
      .map((c, i) => (i === cells.length - 1 ? c : c + " ".repeat(widths[i]! - visible(c))))
      .join("  ")
      .trimEnd();
  return [line(header), ...rows.map(line)].join("\n") + "\n";
}

/** A message as protobuf JSON (what fromJson reads back), pretty-printed, or on one line with `indent` 0. */
export function messageJson<Desc extends DescMessage>(schema: Desc, message: MessageShape<Desc>, indent = 2): string {
  return JSON.stringify(toJson(schema, message, { alwaysEmitImplicit: false }), null, indent) + "\n";
}

/** A command's answer: the message as protobuf JSON with `-o json`, else what `human()` makes of it. */
export function emit<Desc extends DescMessage>(ctx: Pick<Context, "output">, schema: Desc, message: MessageShape<Desc>, human: () => string): void {
  process.stdout.write(ctx.output === "json" ? messageJson(schema, message) : human());
}

/** After a page of a listing: how to ask for the next one (stderr, so stdout stays the table). */
export function morePages(nextPageToken: string): void {
  if (nextPageToken) process.stderr.write(`more: --page-token ${nextPageToken}\n`);
}

/** UTF-8 JSON bytes (input, output, payloads) as text; raw text when not JSON; empty when none. */
export function jsonBytes(data: Uint8Array): string {
  if (data.byteLength === 0) return "";
  const text = new TextDecoder().decode(data);
  try {
    return JSON.stringify(JSON.parse(text));
  } catch {
    return oneLine(text);
  }
}

/** `key:  value` lines, keys aligned; empty values left out. */
export function details(rows: [string, string][]): string {
  const shown = rows.filter(([, v]) => v !== "");
  const width = Math.max(...shown.map(([k]) => k.length));
  return shown.map(([k, v]) => `${(k + ":").padEnd(width + 1)}  ${v}`).join("\n") + "\n";
}
