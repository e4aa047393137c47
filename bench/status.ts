/**
 * GetInstanceStatus on a running environment (port 8002: Connect over HTTP/2, the server's
 * gates, interceptors, metrics and validation, InstanceManager.get, slonik with its row
 * parser, toProtoInstance) against a baseline measured in the same run: a bare connect-node
 * server (createConnectRouter via connectNodeAdapter, h2c on node:http2 with default
 * settings) whose one unary handler, EnvironmentService.GetInstanceStatus, does one point
 * read (`SELECT … FROM instances WHERE instance_id = $1 AND tenant_id = $2`, the same
 * columns) on the same database through a slonik pool of the same size and configuration
 * (createDatabase of src/db), and answers the same message. Both are called by the same kind
 * of client (environmentClient: Connect binary over HTTP/2, one session per server), in this
 * process, as the other benchmarks do.
 *
 * The instances read are BENCH_STATUS_ROWS completed instances with a small input, output and
 * stderr tail, picked in the same order on both paths. Phases run A B B A in halves
 * (environment, bare, bare, environment), so drift over the run falls on both alike:
 *   - serial: one call at a time, p50 / p99,
 *   - concurrency BENCH_CONCURRENCY (16): calls/s over the phase's wall time, p50 / p99.
 * Target: throughput ratio environment / bare >= 0.5. The serial p50 ratio is recorded too.
 *
 * The trivial RPC: grpc.health.v1.Health/Check on the environment's port against the same
 * bare server, which also serves Health with one handler answering SERVING (serial, the two
 * servers in turn call by call); target p50 ratio <= 1.2. What the environment adds to every
 * call: the first-bytes switch (HTTP/1.1 + h2c on one port), its gates, interceptors (request
 * id, log line, metrics).
 *
 * Counts (env): BENCH_STATUS_SERIAL (calls per path at concurrency 1, default 3000),
 * BENCH_STATUS_CALLS (calls per path at concurrency 16, default 20000), BENCH_CONCURRENCY (16),
 * BENCH_STATUS_ROWS (1000), BENCH_WARMUP (calls per path and phase kind, 500).
 */
import { pino } from "pino";
import { sql } from "slonik";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import type { ConnectRouter } from "@connectrpc/connect";
import { Code, ConnectError } from "@connectrpc/connect";
import { InstanceStatus, TerminationReason } from "../gen/runtara/core/v1/types_pb.js";
import { EnvironmentService } from "../gen/runtara/environment/v1/environment_pb.js";
import { Health, HealthCheckResponse_ServingStatus } from "../gen/grpc/health/v1/health_pb.js";
import { createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { createDatabase, type Database } from "../src/db/index.js";
import { environmentClient, startEnvironment, stopTestPostgres } from "../test/helpers.js";
import { fmt, perSec, printLatency, ratioLine, recordFigure, runConcurrent, serveBareConnect, summarize, targetLine, envNumber, type BareConnectServer } from "./lib.js";

const SERIAL = envNumber("BENCH_STATUS_SERIAL", 3000);
const CALLS = envNumber("BENCH_STATUS_CALLS", 20000);
const CONCURRENCY = envNumber("BENCH_CONCURRENCY", 16);
const ROWS = envNumber("BENCH_STATUS_ROWS", 1000);
const WARMUP = envNumber("BENCH_WARMUP", 500);
const TENANT = "tenant-bench-status";

interface Row {
  instance_id: string;
  tenant_id: string;
  image_id: string | null;
  image_name: string;
  status: string;
  termination_reason: string | null;
  exit_code: number | null;
  checkpoint_id: string | null;
  created_at: number;
  started_at: number | null;
  finished_at: number | null;
  heartbeat_at: number | null;
  sleep_until: number | null;
  input: Buffer | null;
  output: Buffer | null;
  error: string | null;
  stderr: string | null;
  memory_peak_bytes: bigint | null;
  cpu_usage_usec: bigint | null;
  timeout_seconds: number;
}

const ts = (ms: number | null) => (ms === null ? undefined : timestampFromMs(ms));

/** The baseline: connect-node's own adapter, one handler, one point read. */
async function startBare(db: Database): Promise<BareConnectServer> {
  const routes = (router: ConnectRouter) =>
    router.service(Health, { check: () => ({ status: HealthCheckResponse_ServingStatus.SERVING }) }).service(EnvironmentService, {
      async getInstanceStatus(req) {
        const r = (await db.maybeOne(sql.unsafe`
          SELECT instance_id, tenant_id, image_id::text, image_name, status, termination_reason, exit_code, checkpoint_id,
            created_at, started_at, finished_at, heartbeat_at, sleep_until, input, output, error, stderr,
            memory_peak_bytes, cpu_usage_usec, timeout_seconds
          FROM instances WHERE instance_id = ${req.instanceId} AND tenant_id = ${req.tenantId}`)) as Row | null;
        if (r === null) throw new ConnectError(`instance ${req.instanceId} not found`, Code.NotFound);
        return {
          instance: {
            instanceId: r.instance_id,
            tenantId: r.tenant_id,
            imageId: r.image_id ?? "",
            imageName: r.image_name,
            status: InstanceStatus[r.status.toUpperCase() as keyof typeof InstanceStatus],
            terminationReason: r.termination_reason === null ? TerminationReason.UNSPECIFIED : TerminationReason[r.termination_reason.toUpperCase() as keyof typeof TerminationReason],
            exitCode: r.exit_code ?? undefined,
            checkpointId: r.checkpoint_id ?? "",
            createdAt: ts(r.created_at),
            startedAt: ts(r.started_at),
            finishedAt: ts(r.finished_at),
            heartbeatAt: ts(r.heartbeat_at),
            wakeAt: ts(r.sleep_until),
            input: r.input ?? new Uint8Array(),
            output: r.output ?? new Uint8Array(),
            error: r.error ?? "",
            stderr: r.stderr ?? "",
            memoryPeakBytes: r.memory_peak_bytes ?? undefined,
            cpuUsageUsec: r.cpu_usage_usec ?? undefined,
            timeoutSeconds: BigInt(r.timeout_seconds),
          },
        };
      },
    });
  return serveBareConnect(routes);
}

const t = await startEnvironment();
let bareDb: Database | undefined;
let bare: Awaited<ReturnType<typeof startBare>> | undefined;
try {
  // Completed instances as a run leaves them: input, output, a stderr tail, times, metrics.
  await t.query(
    `INSERT INTO instances (instance_id, tenant_id, image_name, status, termination_reason, exit_code, input, output, stderr,
       checkpoint_id, created_at, started_at, finished_at, heartbeat_at, memory_peak_bytes, cpu_usage_usec)
     SELECT 'status-' || g, $1, 'bench-image', 'completed', 'completed', 0,
       convert_to('{"orderId":"' || md5(g::text) || '","items":[1,2,3],"note":"' || repeat('x', 150) || '"}', 'UTF8'),
       convert_to('{"ok":true,"total":' || g || ',"detail":"' || repeat('y', 150) || '"}', 'UTF8'),
       repeat('workflow: step ' || g || ' done' || chr(10), 8), 'step-3',
       now() - interval '1 hour', now() - interval '59 minutes', now() - interval '58 minutes', now() - interval '58 minutes',
       12345678, 45678
     FROM generate_series(0, $2 - 1) AS g`,
    [TENANT, ROWS],
  );
  await t.query("ANALYZE instances");
  bareDb = await createDatabase({ url: t.database.url, poolSize: t.env.options.dbPoolSize, logger: pino({ level: "silent" }) });
  bare = await startBare(bareDb);

  const paths = {
    environment: environmentClient(t.baseUrl),
    bare: environmentClient(bare.baseUrl),
  };
  type Path = keyof typeof paths;
  const call = (p: Path, i: number) =>
    paths[p].getInstanceStatus({ tenantId: TENANT, instanceId: `status-${(i * 7919) % ROWS}` }).then((res) => {
      if (res.instance?.instanceId === undefined || res.instance.input.byteLength === 0) throw new Error(`${p}: empty answer`);
    });

  // Same answer from both (the baseline does the same work on the wire).
  const [a, b] = await Promise.all([
    paths.environment.getInstanceStatus({ tenantId: TENANT, instanceId: "status-1" }),
    paths.bare.getInstanceStatus({ tenantId: TENANT, instanceId: "status-1" }),
  ]);
  const size = (x: typeof a) => x.instance!.input.byteLength + x.instance!.output.byteLength + x.instance!.stderr.length;
  if (size(a) !== size(b) || a.instance!.status !== b.instance!.status || a.instance!.finishedAt?.seconds !== b.instance!.finishedAt?.seconds) {
    throw new Error("the baseline answers differently from the environment");
  }

  for (const p of ["environment", "bare"] as const) {
    await runConcurrent(WARMUP, 1, (i) => call(p, i));
    await runConcurrent(WARMUP, CONCURRENCY, (i) => call(p, i));
  }

  /** A B B A in halves: durations pooled per path, wall time summed per path. */
  const abba = async (total: number, concurrency: number) => {
    const out = { environment: { durationsMs: [] as number[], wallMs: 0 }, bare: { durationsMs: [] as number[], wallMs: 0 } };
    const half = Math.ceil(total / 2);
    for (const p of ["environment", "bare", "bare", "environment"] as const) {
      const r = await runConcurrent(half, concurrency, (i) => call(p, i));
      out[p].durationsMs.push(...r.durationsMs);
      out[p].wallMs += r.wallMs;
    }
    return out;
  };
  const serial = await abba(SERIAL, 1);
  const parallel = await abba(CALLS, CONCURRENCY);

  console.log(`GetInstanceStatus, ${ROWS} completed instances; A B B A; Connect binary over HTTP/2`);
  const s = { environment: summarize(serial.environment.durationsMs), bare: summarize(serial.bare.durationsMs) };
  const c = { environment: summarize(parallel.environment.durationsMs), bare: summarize(parallel.bare.durationsMs) };
  const rate = {
    environment: perSec(parallel.environment.durationsMs.length, parallel.environment.wallMs),
    bare: perSec(parallel.bare.durationsMs.length, parallel.bare.wallMs),
  };
  printLatency("environment, serial", s.environment, "", 34);
  printLatency("bare connect-node + 1 SELECT, serial", s.bare, "", 34);
  printLatency(`environment, c=${CONCURRENCY}`, c.environment, `${fmt(rate.environment, 0)} calls/s`, 34);
  printLatency(`bare connect-node, c=${CONCURRENCY}`, c.bare, `${fmt(rate.bare, 0)} calls/s`, 34);
  recordFigure("environment serial p50", s.environment.p50, "ms");
  recordFigure("environment serial p99", s.environment.p99, "ms");
  recordFigure("bare serial p50", s.bare.p50, "ms");
  recordFigure("bare serial p99", s.bare.p99, "ms");
  recordFigure(`environment calls/s (c=${CONCURRENCY})`, rate.environment, "/s");
  recordFigure(`bare calls/s (c=${CONCURRENCY})`, rate.bare, "/s");
  console.log(ratioLine("serial p50 environment / bare", s.environment.p50, s.bare.p50));
  console.log(ratioLine("serial p99 environment / bare", s.environment.p99, s.bare.p99));
  console.log(targetLine(`calls/s environment / bare (c=${CONCURRENCY})`, rate.environment / rate.bare, ">=", 0.5));

  // The trivial RPC, one at a time, the two servers in turn call by call (which goes first
  // alternates): a sub-millisecond call drifts by a fifth between halves of a run on a shared
  // machine, which A B B A in halves of 1,500 calls did not cancel.
  const health = {
    environment: createClient(Health, createConnectTransport({ baseUrl: t.baseUrl, httpVersion: "2" })),
    bare: createClient(Health, createConnectTransport({ baseUrl: bare.baseUrl, httpVersion: "2" })),
  };
  const check = (p: Path) => health[p].check({ service: "" }).then(() => {});
  for (const p of ["environment", "bare"] as const) await runConcurrent(WARMUP, 1, () => check(p));
  const trivial = { environment: [] as number[], bare: [] as number[] };
  for (let i = 0; i < SERIAL; i++) {
    for (const p of i % 2 === 0 ? (["environment", "bare"] as const) : (["bare", "environment"] as const)) {
      const started = performance.now();
      await check(p);
      trivial[p].push(performance.now() - started);
    }
  }
  const h = { environment: summarize(trivial.environment), bare: summarize(trivial.bare) };
  printLatency("grpc.health Check, environment", h.environment, "", 34);
  printLatency("grpc.health Check, bare", h.bare, "", 34);
  console.log(ratioLine("health Check p50 environment / bare", h.environment.p50, h.bare.p50, { op: "<=", value: 1.2 }));
} finally {
  await bare?.close();
  await bareDb?.end();
  await t.close();
  await stopTestPostgres();
}
