import { useState } from "preact/hooks";
import type { JSX } from "preact";

/**
 * JSON as a tree of collapsible objects and arrays (<details>: keyboard and screen readers
 * know it); the first levels open. A closed node builds no children (a wide 16 MiB output
 * must not become millions of nodes), and nesting is cut at MAX_DEPTH (the server accepts
 * any depth; rendering recursively past a few hundred overflows the stack).
 */
export function JsonView({ value, label }: { value: unknown; label: string }) {
  if (value === undefined) return <p class="muted">{label}: none</p>;
  return (
    <div class="json" aria-label={label}>
      <JsonNode value={value} depth={0} />
    </div>
  );
}

const OPEN_LEVELS = 2;
/** A node below the root opens by itself only with at most this many entries. */
const OPEN_MAX_ENTRIES = 20;
/** Entries shown per object or array when it is open. */
const MAX_ENTRIES = 100;
const MAX_DEPTH = 32;

function JsonNode({ value, depth, name }: { value: unknown; depth: number; name?: string }) {
  const key = name === undefined ? null : <span class="json-key">{name}: </span>;
  if (value === null || typeof value !== "object") {
    return (
      <div class="json-leaf">
        {key}
        <span class={`json-${value === null ? "null" : typeof value}`}>{JSON.stringify(value)}</span>
      </div>
    );
  }
  if (depth >= MAX_DEPTH) {
    return (
      <div class="json-leaf">
        {key}
        <span class="muted">… nested deeper than {MAX_DEPTH} levels</span>
      </div>
    );
  }
  return <JsonBranch value={value} depth={depth} keyLabel={key} />;
}

function JsonBranch({ value, depth, keyLabel }: { value: object; depth: number; keyLabel: JSX.Element | null }) {
  const count = Array.isArray(value) ? value.length : Object.keys(value).length;
  // The root opens; below it only small nodes do, so a wide value starts as one screen.
  const [expanded, setExpanded] = useState(depth === 0 || (depth < OPEN_LEVELS && count <= OPEN_MAX_ENTRIES));
  const [open, close] = Array.isArray(value) ? ["[", "]"] : ["{", "}"];
  return (
    <details open={expanded} onToggle={(e) => setExpanded((e.currentTarget as HTMLDetailsElement).open)}>
      <summary>
        {keyLabel}
        {open}
        <span class="muted"> {count} {count === 1 ? "entry" : "entries"} </span>
        {close}
      </summary>
      {expanded && (
        <div class="json-children">
          {firstEntries(value).map(([k, v]) => (
            <JsonNode key={k} name={k} value={v} depth={depth + 1} />
          ))}
          {count > MAX_ENTRIES && <div class="muted">… {count - MAX_ENTRIES} more</div>}
        </div>
      )}
    </details>
  );
}

/** The first MAX_ENTRIES entries, without copying a huge object's every key. */
function firstEntries(value: object): [string, unknown][] {
  if (Array.isArray(value)) return value.slice(0, MAX_ENTRIES).map((v, i) => [String(i), v]);
  const out: [string, unknown][] = [];
  for (const k in value) {
    if (!Object.prototype.hasOwnProperty.call(value, k)) continue;
    out.push([k, (value as Record<string, unknown>)[k]]);
    if (out.length === MAX_ENTRIES) break;
  }
  return out;
}
