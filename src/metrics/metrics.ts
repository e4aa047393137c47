/**
 * The environment's Prometheus metrics, on a registry of its own (several environments can
 * share a process, as the tests do). Components get the narrow recorder they need; what is
 * cheaper to read than to track (instances by status, the database pool) is read at scrape.
 */
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from "prom-client";

/** Seconds: from a millisecond-fast RPC to a slow container start. */
const LATENCY_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];

export interface PoolState {
  acquiredConnections: number;
  idleConnections: number;
  waitingClients: number;
}

export class Metrics {
  readonly registry = new Registry();
  readonly rpcDuration = this.histogram("runtara_rpc_duration_seconds", "RPCs served, by method and status code, and how long they took (streams: until they ended)", ["method", "code"]);
  readonly launches = this.counter("runtara_launches_total", "Instance processes launched (first runs and relaunches), by runner", ["runner"]);
  readonly launchFailures = this.counter("runtara_launch_failures_total", "Launches that failed before the process was recorded, by runner", ["runner"]);
  readonly launchDuration = this.histogram("runtara_launch_duration_seconds", "Time to launch an instance process and record it, by runner", ["runner"]);
  readonly wakeLag = this.histogram("runtara_wake_lag_seconds", "How late a durable sleep was claimed for waking, after its wake time", []);
  readonly signalDelivery = this.histogram("runtara_signal_delivery_seconds", "Time to hand a signal to core (and relaunch a suspended instance for resume), by kind", ["kind"]);
  readonly uploadBytes = this.counter("runtara_image_upload_bytes_total", "Image bytes received and stored by successful registrations", []);
  readonly listenerReconnects = this.counter("runtara_db_listener_reconnects_total", "Times the LISTEN connection to PostgreSQL was re-established", []);
  private readonly instances = this.gauge("runtara_instances", "Instances by status (all tenants)", ["status"]);
  private readonly poolInUse = this.gauge("runtara_db_pool_in_use_connections", "Database connections lent out", []);
  private readonly poolIdle = this.gauge("runtara_db_pool_idle_connections", "Database connections idle in the pool", []);
  private readonly poolWaiting = this.gauge("runtara_db_pool_waiting_clients", "Queries waiting for a database connection", []);
  private countInstances?: () => Promise<ReadonlyMap<string, number>>;
  private poolState?: () => PoolState;

  constructor() {
    collectDefaultMetrics({ register: this.registry });
    // Gauges named like counters break the Prometheus naming rules (promtool says so).
    for (const name of ["nodejs_active_handles_total", "nodejs_active_requests_total", "nodejs_active_resources_total"]) this.registry.removeSingleMetric(name);
  }

  /** Where scrapes read instances by status and the pool's state. */
  readFrom(sources: { countInstances: () => Promise<ReadonlyMap<string, number>>; poolState: () => PoolState }): void {
    this.countInstances = sources.countInstances;
    this.poolState = sources.poolState;
  }

  /** The exposition text; a failed read of the database leaves those gauges out rather than failing the scrape. */
  async scrape(): Promise<string> {
    const pool = this.poolState?.();
    if (pool) {
      this.poolInUse.set(pool.acquiredConnections);
      this.poolIdle.set(pool.idleConnections);
      this.poolWaiting.set(pool.waitingClients);
    }
    this.instances.reset();
    const counts = await this.countInstances?.().catch(() => undefined);
    for (const [status, n] of counts ?? []) this.instances.set({ status }, n);
    return this.registry.metrics();
  }

  get contentType(): string {
    return this.registry.contentType;
  }

  private histogram<L extends string>(name: string, help: string, labelNames: readonly L[]) {
    return new Histogram<L>({ name, help, labelNames, buckets: LATENCY_BUCKETS, registers: [this.registry] });
  }

  private counter<L extends string>(name: string, help: string, labelNames: readonly L[]) {
    return new Counter<L>({ name, help, labelNames, registers: [this.registry] });
  }

  private gauge<L extends string>(name: string, help: string, labelNames: readonly L[]) {
    return new Gauge<L>({ name, help, labelNames, registers: [this.registry] });
  }
}
