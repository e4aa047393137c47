import { useEffect, useState } from "preact/hooks";
import { SortOrder } from "../../../gen/runtara/core/v1/types_pb.js";
import type { Instance } from "../../../gen/runtara/environment/v1/environment_pb.js";
import type { EnvironmentClient } from "../../client/browser.js";
import { ErrorNote } from "../components/error-note.js";
import { InstanceActions } from "../components/instance-actions.js";
import { JsonView } from "../components/json-view.js";
import { LogView } from "../components/log-view.js";
import { StatusBadge } from "../components/status-badge.js";
import { describeError, isAbort } from "../errors.js";
import { formatBytes, formatDuration, formatTime, isTerminal, jsonOf, millis, reasonName, runDuration, statusName } from "../format.js";
import { usePolled } from "../hooks.js";

/** A watch that broke (network, restart) is opened again after this. */
const REWATCH_MS = 2000;

/**
 * One instance, live: WatchInstance pushes each status change; each change re-reads the
 * timeline, checkpoints and events, and the terminal one the outcome (output, error, exit code).
 */
export function InstancePage({ client, instanceId }: { client: EnvironmentClient; instanceId: string }) {
  const [instance, setInstance] = useState<Instance>();
  const [error, setError] = useState<string>();
  // Bumped on every change the watch delivers: what depends on the status is read again.
  const [changes, setChanges] = useState(0);

  useEffect(() => {
    const abort = new AbortController();
    const opts = { signal: abort.signal };
    void (async () => {
      while (!abort.signal.aborted) {
        try {
          // The full record (input, output) first; the watch's messages leave the large fields out.
          const full = (await client.getInstanceStatus({ instanceId }, opts)).instance!;
          setInstance(full);
          setError(undefined);
          if (isTerminal(full.status)) return;
          for await (const change of client.watchInstance({ instanceId }, opts)) {
            const next = change.instance!;
            setInstance((old) => ({ ...next, input: old?.input ?? next.input }));
            setChanges((n) => n + 1);
            if (isTerminal(next.status)) {
              setInstance((await client.getInstanceStatus({ instanceId }, opts)).instance!);
              return;
            }
          }
        } catch (e) {
          if (abort.signal.aborted || isAbort(e)) return;
          setError(describeError(e));
          await new Promise((r) => setTimeout(r, REWATCH_MS));
        }
      }
    })();
    return () => abort.abort();
  }, [instanceId]);

  if (!instance) return <section>{error ? <ErrorNote error={error} /> : <p class="muted">Loading {instanceId}…</p>}</section>;
  return (
    <section aria-labelledby="instance-title" data-status={statusName(instance.status)}>
      <p>
        <a href="#/instances">← Instances</a>
      </p>
      <h1 id="instance-title" class="mono">
        {instance.instanceId} <StatusBadge status={instance.status} />
      </h1>
      <ErrorNote error={error} />
      <InstanceActions client={client} instanceId={instanceId} status={instance.status} />
      <div class="instance-grid">
        <Summary instance={instance} />
        <Timeline client={client} instanceId={instanceId} changes={changes} />
      </div>
      <section aria-labelledby="io-title">
        <h2 id="io-title">Input and output</h2>
        <div class="instance-grid">
          <JsonView label="Input" value={jsonOf(instance.input)} />
          <JsonView label="Output" value={jsonOf(instance.output)} />
        </div>
        {instance.stderr && (
          <details>
            <summary>Last stderr of the last run</summary>
            <pre class="logs">{instance.stderr}</pre>
          </details>
        )}
      </section>
      <LogView client={client} instanceId={instanceId} />
      <div class="instance-grid">
        <Checkpoints client={client} instanceId={instanceId} changes={changes} />
        <Events client={client} instanceId={instanceId} changes={changes} />
      </div>
    </section>
  );
}

function Summary({ instance: i }: { instance: Instance }) {
  const rows: [string, string][] = [
    ["Image", i.imageName || "–"],
    ["Created", formatTime(i.createdAt)],
    ["Started", formatTime(i.startedAt)],
    ["Finished", formatTime(i.finishedAt)],
    ["Duration", formatDuration(runDuration(i))],
    ["Reason", reasonName(i.terminationReason) || "–"],
    ["Exit code", i.exitCode === undefined ? "–" : String(i.exitCode)],
    ["Memory peak", formatBytes(i.memoryPeakBytes)],
    ["CPU time", i.cpuUsageUsec === undefined ? "–" : formatDuration(Number(i.cpuUsageUsec) / 1000)],
    ["Checkpoint", i.checkpointId || "–"],
    ["Wakes at", formatTime(i.wakeAt)],
    ["Timeout", `${i.timeoutSeconds} s`],
  ];
  return (
    <section aria-labelledby="summary-title">
      <h2 id="summary-title">Summary</h2>
      <dl class="summary">
        {rows.map(([k, v]) => (
          <div key={k}>
            <dt>{k}</dt>
            <dd>{v}</dd>
          </div>
        ))}
      </dl>
      {i.error && (
        <p class="error" role="note">
          Error: {i.error}
        </p>
      )}
    </section>
  );
}

function Timeline({ client, instanceId, changes }: { client: EnvironmentClient; instanceId: string; changes: number }) {
  const timeline = usePolled((signal) => client.listInstanceTransitions({ instanceId }, { signal }), [instanceId, changes]);
  const transitions = timeline.data?.transitions ?? [];
  return (
    <section aria-labelledby="timeline-title">
      <h2 id="timeline-title">Timeline</h2>
      <ErrorNote error={timeline.error} />
      {timeline.data?.truncated && <p class="muted">Older transitions left out.</p>}
      <ol class="timeline">
        {transitions.map((t, n) => {
          const next = transitions[n + 1];
          const stayed = next ? (millis(next.at) ?? 0) - (millis(t.at) ?? 0) : undefined;
          return (
            <li key={n} data-status={statusName(t.status)}>
              <StatusBadge status={t.status} /> <time dateTime={new Date(millis(t.at) ?? 0).toISOString()}>{formatTime(t.at)}</time>
              {reasonName(t.terminationReason) && <span class="muted"> · {reasonName(t.terminationReason)}</span>}
              {stayed !== undefined && <span class="muted"> · {formatDuration(stayed)}</span>}
            </li>
          );
        })}
      </ol>
    </section>
  );
}

function Checkpoints({ client, instanceId, changes }: { client: EnvironmentClient; instanceId: string; changes: number }) {
  const list = usePolled((signal) => client.listCheckpoints({ instanceId, limit: 100 }, { signal }), [instanceId, changes]);
  return (
    <section aria-labelledby="checkpoints-title">
      <h2 id="checkpoints-title">Checkpoints {list.data && <span class="muted">({String(list.data.totalCount)})</span>}</h2>
      <ErrorNote error={list.error} />
      <ul class="plain">
        {list.data?.checkpoints.map((c) => (
          <li key={c.checkpointId}>
            <span class="mono">{c.checkpointId}</span> <span class="muted">{formatBytes(c.sizeBytes)} · {formatTime(c.createdAt)}</span>
          </li>
        ))}
      </ul>
    </section>
  );
}

function Events({ client, instanceId, changes }: { client: EnvironmentClient; instanceId: string; changes: number }) {
  const list = usePolled((signal) => client.listEvents({ instanceId, limit: 100, sortOrder: SortOrder.DESC }, { signal }), [instanceId, changes]);
  return (
    <section aria-labelledby="events-title">
      <h2 id="events-title">Events {list.data && <span class="muted">({String(list.data.totalCount)})</span>}</h2>
      <ErrorNote error={list.error} />
      <ul class="plain">
        {list.data?.events.map((e) => (
          <li key={String(e.id)}>
            <span class="mono">{e.eventType}{e.subtype ? `/${e.subtype}` : ""}</span> <span class="muted">{formatTime(e.createdAt)}</span>
          </li>
        ))}
      </ul>
    </section>
  );
}
