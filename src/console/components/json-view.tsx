/**
 * JSON as a tree of collapsible objects and arrays (<details>: keyboard and screen readers
 * know it); the first levels open.
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
/** Entries shown per object or array: a 16 MiB output must not become a million nodes. */
const MAX_ENTRIES = 200;

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
  const entries = Array.isArray(value) ? value.map((v, i) => [String(i), v] as const) : Object.entries(value);
  const [open, close] = Array.isArray(value) ? ["[", "]"] : ["{", "}"];
  return (
    <details open={depth < OPEN_LEVELS}>
      <summary>
        {key}
        {open}
        <span class="muted"> {entries.length} {entries.length === 1 ? "entry" : "entries"} </span>
        {close}
      </summary>
      <div class="json-children">
        {entries.slice(0, MAX_ENTRIES).map(([k, v]) => (
          <JsonNode key={k} name={k} value={v} depth={depth + 1} />
        ))}
        {entries.length > MAX_ENTRIES && <div class="muted">… {entries.length - MAX_ENTRIES} more</div>}
      </div>
    </details>
  );
}
