import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { useState } from "preact/hooks";
import type { InstanceStatus } from "../../../gen/runtara/core/v1/types_pb.js";
import type { MessageInitShape } from "@bufbuild/protobuf";
import { InstanceOrder, type ListInstancesRequestSchema } from "../../../gen/runtara/environment/v1/environment_pb.js";
import type { EnvironmentClient } from "../../client/browser.js";
import { ErrorNote } from "../components/error-note.js";
import { StatusBadge } from "../components/status-badge.js";
import { formatCount, formatDuration, formatTime, reasonName, runDuration, statusName, STATUSES } from "../format.js";
import { usePolled } from "../hooks.js";
import { useImageVersions } from "../image-versions.js";
import { hrefOf, navigate } from "../router.js";

/** How often the page on screen is read again: the list has no tenant-wide stream. */
const REFRESH_MS = 2000;
const PAGE_SIZE = 50;

interface Filters {
  status: InstanceStatus | 0;
  imageNamePrefix: string;
  instanceIdPrefix: string;
  createdAfter: string;
  createdBefore: string;
  order: InstanceOrder;
}

const NO_FILTERS: Filters = { status: 0, imageNamePrefix: "", instanceIdPrefix: "", createdAfter: "", createdBefore: "", order: InstanceOrder.CREATED_DESC };

function request(f: Filters, pageToken: string): MessageInitShape<typeof ListInstancesRequestSchema> {
  const time = (local: string) => (local === "" ? undefined : timestampFromMs(new Date(local).getTime()));
  return {
    status: f.status,
    imageNamePrefix: f.imageNamePrefix.trim(),
    instanceIdPrefix: f.instanceIdPrefix.trim(),
    createdAfter: time(f.createdAfter),
    createdBefore: time(f.createdBefore),
    orderBy: f.order,
    limit: PAGE_SIZE,
    pageToken,
  };
}

/**
 * Instances of the tenant, newest first by default: filters and keyset pages as ListInstances
 * has them (the server sorts and counts; the browser holds one page), read again every 2 s.
 */
export function InstancesPage({ client }: { client: EnvironmentClient }) {
  const [draft, setDraft] = useState(NO_FILTERS);
  const [filters, setFilters] = useState(NO_FILTERS);
  // Tokens of the pages before this one: "" is the first page.
  const [tokens, setTokens] = useState<string[]>([""]);
  const token = tokens.at(-1)!;
  const page = usePolled((signal) => client.listInstances(request(filters, token), { signal }), [filters, token], REFRESH_MS);
  const versions = useImageVersions(client, page.data?.instances.map((i) => i.imageId) ?? []);

  const apply = (e: Event) => {
    e.preventDefault();
    setFilters(draft);
    setTokens([""]);
  };
  const set = <K extends keyof Filters>(key: K, value: Filters[K]) => setDraft({ ...draft, [key]: value });
  const total = page.data?.totalCount;

  return (
    <section aria-labelledby="instances-title">
      <h1 id="instances-title">Instances</h1>
      <form class="filters" onSubmit={apply} aria-label="Filters">
        <label>
          Status
          <select name="status" value={draft.status} onChange={(e) => set("status", Number(e.currentTarget.value) as InstanceStatus)}>
            <option value={0}>any</option>
            {STATUSES.map((s) => (
              <option key={s} value={s}>
                {statusName(s).toLowerCase()}
              </option>
            ))}
          </select>
        </label>
        <label>
          Image
          <input name="image" placeholder="name prefix" value={draft.imageNamePrefix} onInput={(e) => set("imageNamePrefix", e.currentTarget.value)} />
        </label>
        <label>
          Id
          <input name="id" placeholder="id prefix" value={draft.instanceIdPrefix} onInput={(e) => set("instanceIdPrefix", e.currentTarget.value)} />
        </label>
        <label>
          Created after
          <input name="createdAfter" type="datetime-local" value={draft.createdAfter} onInput={(e) => set("createdAfter", e.currentTarget.value)} />
        </label>
        <label>
          Created before
          <input name="createdBefore" type="datetime-local" value={draft.createdBefore} onInput={(e) => set("createdBefore", e.currentTarget.value)} />
        </label>
        <label>
          Order
          <select name="order" value={draft.order} onChange={(e) => set("order", Number(e.currentTarget.value) as InstanceOrder)}>
            <option value={InstanceOrder.CREATED_DESC}>newest first</option>
            <option value={InstanceOrder.CREATED_ASC}>oldest first</option>
            <option value={InstanceOrder.FINISHED_DESC}>finished, latest first</option>
            <option value={InstanceOrder.FINISHED_ASC}>finished, earliest first</option>
          </select>
        </label>
        <button type="submit" class="primary">
          Apply
        </button>
      </form>
      <ErrorNote error={page.error} />
      <p class="muted" aria-live="polite">
        {total === undefined ? "Loading…" : `${formatCount(total)} instances · page ${tokens.length} · updated every 2 s`}
      </p>
      <div class="table-wrap">
        <table class="instances">
          <thead>
            <tr>
              <th scope="col">Instance</th>
              <th scope="col">Status</th>
              <th scope="col">Image</th>
              <th scope="col">Started</th>
              <th scope="col">Duration</th>
              <th scope="col">Reason</th>
            </tr>
          </thead>
          <tbody>
            {page.data?.instances.map((i) => {
              const route = { page: "instance" as const, instanceId: i.instanceId };
              const version = versions.get(i.imageId);
              return (
                <tr
                  key={i.instanceId}
                  tabIndex={0}
                  data-instance-id={i.instanceId}
                  data-status={statusName(i.status)}
                  onClick={() => navigate(route)}
                  onKeyDown={(e) => e.key === "Enter" && navigate(route)}
                >
                  <td class="mono">
                    <a href={hrefOf(route)} tabIndex={-1}>
                      {i.instanceId}
                    </a>
                  </td>
                  <td>
                    <StatusBadge status={i.status} />
                  </td>
                  <td>
                    {i.imageName || "–"}
                    {version ? <span class="muted"> v{version}</span> : null}
                  </td>
                  <td>{formatTime(i.startedAt ?? i.createdAt)}</td>
                  <td>{formatDuration(runDuration(i))}</td>
                  <td>{reasonName(i.terminationReason)}</td>
                </tr>
              );
            })}
          </tbody>
        </table>
        {page.data?.instances.length === 0 && <p class="muted">No instances match.</p>}
      </div>
      <nav class="pager" aria-label="Pages">
        <button type="button" disabled={tokens.length === 1} onClick={() => setTokens(tokens.slice(0, -1))}>
          ← Previous
        </button>
        <button type="button" disabled={!page.data?.nextPageToken} onClick={() => setTokens([...tokens, page.data!.nextPageToken])}>
          Next →
        </button>
      </nav>
    </section>
  );
}
