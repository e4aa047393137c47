import { useEffect, useState } from "preact/hooks";
import type { EnvironmentClient } from "../../client/browser.js";
import { ErrorNote } from "../components/error-note.js";
import { LineChart } from "../components/line-chart.js";
import { StatusBadge } from "../components/status-badge.js";
import { formatCount, formatDuration, STATUSES } from "../format.js";
import { usePolled } from "../hooks.js";
import { byLabel, parsePrometheus, quantileBetween, total, type Samples } from "../metrics.js";
import type { Session } from "../session.js";

const SCRAPE_MS = 5000;
/** Points kept per chart: ten minutes of scrapes. */
const KEEP = 120;
const NAMES = ["runtara_launches_total", "runtara_instances", "runtara_wake_lag_seconds", "runtara_rpc_duration_seconds"];

interface Point {
  at: number;
  startsPerMin: number;
  failuresPerMin: number;
  wakeLagP95: number | undefined;
  rpcP50: number | undefined;
  rpcP95: number | undefined;
}

/**
 * The environment at a glance: health of the database and core, the tenant's instances by
 * status, and charts from /metrics. Counters only say "so far", so the charts are built from
 * consecutive scrapes while the page is open (every 5 s, ten minutes kept).
 */
export function OverviewPage({ client, session }: { client: EnvironmentClient; session: Session }) {
  const health = usePolled((signal) => client.healthCheck({}, { signal }), [], SCRAPE_MS);
  const counts = usePolled(
    (signal) => Promise.all(STATUSES.map(async (status) => [status, (await client.listInstances({ status, limit: 1 }, { signal })).totalCount] as const)),
    [],
    SCRAPE_MS,
  );
  const { points, error: metricsError } = useMetricPoints(session.apiKey);
  const series = (pick: (p: Point) => number | undefined) => points.flatMap((p) => (pick(p) === undefined ? [] : [[p.at, pick(p)!] as const]));
  const h = health.data;

  return (
    <section aria-labelledby="overview-title">
      <h1 id="overview-title">Overview</h1>
      <div class="cards">
        <div class="card" aria-label="Health">
          <h2>Health</h2>
          <ErrorNote error={health.error} />
          {h && (
            <ul class="plain">
              <li data-health="database">Database: {h.databaseReachable ? "reachable" : "unreachable"}</li>
              <li data-health="core">Core: {h.coreReachable ? "reachable" : "unreachable"}</li>
              <li>Version {h.version} · up {formatDuration(Number(h.uptimeMs))}</li>
              <li>{String(h.activeInstances)} active instances</li>
            </ul>
          )}
        </div>
        <div class="card" aria-label="Instances by status">
          <h2>Instances by status</h2>
          <ErrorNote error={counts.error} />
          <ul class="plain by-status">
            {counts.data?.map(([status, n]) => (
              <li key={status}>
                <StatusBadge status={status} /> <a href="#/instances">{formatCount(n)}</a>
              </li>
            ))}
          </ul>
        </div>
      </div>
      <ErrorNote error={metricsError} />
      <div class="charts">
        <LineChart
          title="Starts and failures per minute"
          unit="/min"
          series={[
            { label: "starts", points: series((p) => p.startsPerMin) },
            { label: "failures", points: series((p) => p.failuresPerMin) },
          ]}
        />
        <LineChart title="Wake lag (p95)" unit="s" series={[{ label: "p95", points: series((p) => p.wakeLagP95) }]} />
        <LineChart
          title="RPC latency"
          unit="ms"
          series={[
            { label: "p50", points: series((p) => (p.rpcP50 === undefined ? undefined : p.rpcP50 * 1000)) },
            { label: "p95", points: series((p) => (p.rpcP95 === undefined ? undefined : p.rpcP95 * 1000)) },
          ]}
        />
      </div>
    </section>
  );
}

/** /metrics every SCRAPE_MS, each scrape turned into a point against the one before. */
function useMetricPoints(apiKey: string): { points: readonly Point[]; error: string | undefined } {
  const [points, setPoints] = useState<Point[]>([]);
  const [error, setError] = useState<string>();
  useEffect(() => {
    let previous: { at: number; samples: Samples } | undefined;
    const abort = new AbortController();
    let scraping = false;
    const scrape = async () => {
      // Like the other polls: nothing while the tab is hidden, never two at once.
      if (scraping || document.visibilityState === "hidden") return;
      scraping = true;
      try {
        const res = await fetch("/metrics", { headers: apiKey ? { authorization: `Bearer ${apiKey}` } : {}, signal: abort.signal, cache: "no-store" });
        if (!res.ok) {
          const why = res.status === 403 ? "this key may not read them (RUNTARA_METRICS_TENANT)" : `HTTP ${res.status}`;
          setError(`Metrics unavailable: ${why}`);
          return;
        }
        const now = { at: Date.now(), samples: parsePrometheus(await res.text(), NAMES) };
        if (previous) {
          const point = pointBetween(previous, now);
          setPoints((old) => [...old, point].slice(-KEEP));
        }
        previous = now;
        setError(undefined);
      } catch (e) {
        if (!abort.signal.aborted) setError(`Metrics unavailable: ${(e as Error).message}`);
      } finally {
        scraping = false;
      }
    };
    void scrape();
    const timer = setInterval(() => void scrape(), SCRAPE_MS);
    return () => {
      abort.abort();
      clearInterval(timer);
    };
  }, [apiKey]);
  return { points, error };
}

function pointBetween(a: { at: number; samples: Samples }, b: { at: number; samples: Samples }): Point {
  const perMinute = 60_000 / Math.max(1, b.at - a.at);
  const failed = (s: Samples) => byLabel(s, "runtara_instances", "status").get("failed") ?? 0;
  return {
    at: b.at,
    startsPerMin: Math.max(0, total(b.samples, "runtara_launches_total") - total(a.samples, "runtara_launches_total")) * perMinute,
    // The gauge of FAILED instances (all tenants): its growth is the failures since the last scrape.
    failuresPerMin: Math.max(0, failed(b.samples) - failed(a.samples)) * perMinute,
    wakeLagP95: quantileBetween(a.samples, b.samples, "runtara_wake_lag_seconds", 0.95),
    rpcP50: quantileBetween(a.samples, b.samples, "runtara_rpc_duration_seconds", 0.5),
    rpcP95: quantileBetween(a.samples, b.samples, "runtara_rpc_duration_seconds", 0.95),
  };
}
