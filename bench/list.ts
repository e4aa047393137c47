/**
 * ListInstances latency at a million instances: p50 / p99 per kind of listing, target p99
 * <= 20 ms (each kind, and all calls together).
 *
 * A fresh database is migrated and its instances table filled with BENCH_LIST_ROWS rows by
 * one INSERT … SELECT FROM generate_series (as a superuser with session_replication_role =
 * replica: no row triggers, so no instance_transitions rows and no foreign-key checks, which
 * nothing here reads; a third faster; otherwise with them): BENCH_LIST_TENANTS tenants
 * (interleaved), 4 images per tenant used 50/30/15/5 %, created times spread evenly over the
 * last 30 days, statuses 88.5 % completed, 8 % failed, 3 % cancelled, 0.3 % running, 0.2 %
 * suspended (half sleeping a month, half paused), terminal ones finished within 10 minutes.
 * Then VACUUM (ANALYZE) (what autovacuum does to an insert-only table soon after: statistics
 * and the visibility map that index-only scans rely on), and an Environment starts on it
 * (in this process, as the other benchmarks; heartbeat timeout a day so the monitor leaves the
 * inserted RUNNING rows alone). Calls go through the generated client (Connect binary over
 * HTTP/2), one at a time, the kinds round-robin so drift falls on all alike, tenants in turn:
 *   - first page:  no filter (default limit 100, created_at descending),
 *   - status:      status = completed, failed, cancelled, running, suspended in turn,
 *   - image:       image_id = each of the tenant's 4 images in turn,
 *   - time range:  created_after / created_before around a random BENCH_LIST_RANGE_HOURS (24)
 *                  window,
 *   - next page:   next_page_token of the previous page (keyset), chains of BENCH_LIST_CHAIN
 *                  (10) pages from a first page (which is not counted), unfiltered.
 * Each call is a page query plus a capped count (total_count, at most 100,000 rows).
 * Baseline in the same run: after each call, the same request's two statements through the
 * environment's own pool and repository functions (listInstances and countInstances in
 * parallel, as its manager runs them), without the RPC and the conversion to protobuf.
 *
 * Afterwards the slowest request of each kind is planned again with EXPLAIN ANALYZE: the
 * exact statements the environment runs (its own repository functions, their SQL captured
 * through a slonik interceptor on a separate pool), each statement's execution time printed,
 * and the full plans of every kind that missed its target.
 *
 * Counts (env): BENCH_LIST_ROWS (1000000), BENCH_LIST_CALLS (measured calls per kind, 300),
 * BENCH_LIST_TENANTS (4), BENCH_LIST_CHAIN (10), BENCH_LIST_RANGE_HOURS (24), BENCH_WARMUP
 * (calls per kind before measuring, 20).
 */
import type { MessageInitShape } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { pino } from "pino";
import pg from "pg";
import { createPool, type Interceptor } from "slonik";
import { InstanceStatus } from "../gen/runtara/core/v1/types_pb.js";
import type { ListInstancesRequestSchema } from "../gen/runtara/environment/v1/environment_pb.js";
import { migrate } from "../src/db/index.js";
import { decodePageToken } from "../src/instances/page-token.js";
import { countInstances, listInstances, type InstanceListQuery } from "../src/instances/repository.js";
import { environmentClient, freshDatabase, startEnvironment, stopTestPostgres, type TestEnvironment } from "../test/helpers.js";
import { fmt, printLatency, ratioLine, recordFigure, summarize, targetLine, type LatencySummary, envNumber } from "./lib.js";

const ROWS = envNumber("BENCH_LIST_ROWS", 1_000_000);
const CALLS = envNumber("BENCH_LIST_CALLS", 300);
const TENANTS = envNumber("BENCH_LIST_TENANTS", 4);
const CHAIN = envNumber("BENCH_LIST_CHAIN", 10);
const RANGE_MS = envNumber("BENCH_LIST_RANGE_HOURS", 24) * 3_600_000;
const WARMUP = envNumber("BENCH_WARMUP", 20);
const DAYS = 30;
const TARGET_MS = 20;
const STATUSES = [InstanceStatus.COMPLETED, InstanceStatus.FAILED, InstanceStatus.CANCELLED, InstanceStatus.RUNNING, InstanceStatus.SUSPENDED];

type ListRequest = MessageInitShape<typeof ListInstancesRequestSchema>;
const tenantOf = (i: number) => `tenant-${i % TENANTS}`;

/** One INSERT … SELECT: the statuses, images and times described in the header. */
const FILL = `
  INSERT INTO instances (instance_id, tenant_id, image_id, image_name, status, termination_reason, exit_code, input, output, error,
    checkpoint_id, sleep_until, created_at, started_at, finished_at, heartbeat_at)
  SELECT 'i-' || substr(md5(s.g::text), 1, 20), img.tenant_id, img.image_id, img.name, st.status::instance_status,
    st.reason::termination_reason,
    CASE st.status WHEN 'completed' THEN 0 WHEN 'failed' THEN 1 END,
    convert_to('{"order":' || s.g || ',"items":[1,2,3]}', 'UTF8'),
    CASE WHEN st.status = 'completed' THEN convert_to('{"ok":true,"n":' || s.g || '}', 'UTF8') END,
    CASE WHEN st.status = 'failed' THEN 'step 3: upstream answered 503' END,
    CASE WHEN st.status = 'suspended' THEN 'step-1' END,
    CASE WHEN st.reason = 'sleeping' THEN now() + interval '30 days' END,
    s.created, s.created + interval '150 ms',
    CASE WHEN st.status IN ('completed', 'failed', 'cancelled') THEN s.created + s.r3 * interval '600 s' END,
    CASE WHEN st.status IN ('completed', 'failed', 'cancelled') THEN s.created + s.r3 * interval '600 s' ELSE now() END
  FROM (
    SELECT g, random() AS r1, random() AS r2, random() AS r3,
      now() - interval '${DAYS} days' * (1 - g / $1::float8) + random() * interval '1 s' AS created
    FROM generate_series(0, $1::int - 1) AS g
  ) AS s
  CROSS JOIN LATERAL (
    SELECT CASE WHEN s.r1 < 0.003 THEN 'running' WHEN s.r1 < 0.005 THEN 'suspended' WHEN s.r1 < 0.085 THEN 'failed'
                WHEN s.r1 < 0.115 THEN 'cancelled' ELSE 'completed' END AS status,
           CASE WHEN s.r1 < 0.003 THEN NULL WHEN s.r1 < 0.004 THEN 'sleeping' WHEN s.r1 < 0.005 THEN 'paused'
                WHEN s.r1 < 0.085 THEN 'application_error' WHEN s.r1 < 0.115 THEN 'cancelled' ELSE 'completed' END AS reason
  ) AS st
  JOIN bench_images AS img ON img.t = s.g % $2::int
    AND img.k = CASE WHEN s.r2 < 0.5 THEN 0 WHEN s.r2 < 0.8 THEN 1 WHEN s.r2 < 0.95 THEN 2 ELSE 3 END`;

async function fill(url: string): Promise<{ images: Map<string, string[]>; filledAtMs: number }> {
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  try {
    await c.query(
      `INSERT INTO images (image_id, tenant_id, name, runner_type, size_bytes, sha256, version)
       SELECT gen_random_uuid(), 'tenant-' || t, 'image-' || k, 'native', 1000000, repeat('ab', 32), 1
       FROM generate_series(0, $1::int - 1) AS t, generate_series(0, 3) AS k`,
      [TENANTS],
    );
    await c.query(`INSERT INTO image_names (tenant_id, name, last_version) SELECT tenant_id, name, 1 FROM images`);
    await c.query(
      `CREATE TEMP TABLE bench_images AS
       SELECT substr(tenant_id, 8)::int AS t, substr(name, 7)::int AS k, image_id, tenant_id, name FROM images`,
    );
    await c.query(`SELECT setseed(0.42)`);
    // Skips the row triggers (instance_transitions rows and foreign-key checks: nothing a list
    // reads, and the rows are consistent by construction) when allowed, a superuser setting.
    const fast = await c.query(`SET session_replication_role = replica`).then(
      () => true,
      () => false,
    );
    const filledAtMs = Date.now();
    await c.query(FILL, [ROWS, TENANTS]);
    if (fast) await c.query(`RESET session_replication_role`);
    await c.query(`VACUUM (ANALYZE) instances`);
    const rows = (await c.query<{ tenant_id: string; image_id: string }>(`SELECT tenant_id, image_id FROM images ORDER BY tenant_id, name`)).rows;
    const images = new Map<string, string[]>();
    for (const r of rows) images.set(r.tenant_id, [...(images.get(r.tenant_id) ?? []), r.image_id]);
    return { images, filledAtMs };
  } finally {
    await c.end();
  }
}

interface Kind {
  name: string;
  /** The next request of this kind (measured), after any unmeasured set-up call. */
  next(i: number): Promise<ListRequest>;
  /** Called with the answer of a measured call. */
  answered?(nextPageToken: string): void;
}

/** The repository query the handler makes of a request (for EXPLAIN). */
function queryOf(req: ListRequest): InstanceListQuery {
  const statusName = req.status === undefined || req.status === InstanceStatus.UNSPECIFIED ? undefined : InstanceStatus[req.status].toLowerCase();
  const ms = (t: ListRequest["createdAfter"]) => (t === undefined ? undefined : Number(t.seconds ?? 0n) * 1000 + Math.floor((t.nanos ?? 0) / 1e6));
  return {
    tenantId: req.tenantId ?? "",
    status: statusName as InstanceListQuery["status"],
    imageId: req.imageId || undefined,
    imageNamePrefix: "",
    createdAfterMs: ms(req.createdAfter),
    createdBeforeMs: ms(req.createdBefore),
    finishedAfterMs: undefined,
    finishedBeforeMs: undefined,
    order: "created_desc",
    limit: 100,
    offset: 0,
    after: req.pageToken ? decodePageToken(req.pageToken, "created_desc") : undefined,
  };
}

/** EXPLAIN ANALYZE of the page statement and the count statement the environment runs for `req`. */
async function explain(url: string, req: ListRequest): Promise<{ statement: string; ms: number; plan: string[] }[]> {
  const captured: { sql: string; values: readonly unknown[] }[] = [];
  const capture: Interceptor = {
    name: "bench-capture",
    transformQuery(_ctx, query) {
      captured.push({ sql: query.sql, values: query.values });
      return query;
    },
  };
  const pool = await createPool(url, { maximumPoolSize: 1, interceptors: [capture], captureStackTrace: false });
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  try {
    const q = queryOf(req);
    await listInstances(pool, q);
    await countInstances(pool, q);
    const out = [];
    for (const [i, { sql, values }] of captured.entries()) {
      const res = await c.query<{ "QUERY PLAN": string }>(`EXPLAIN (ANALYZE, BUFFERS) ${sql}`, values as unknown[]);
      const plan = res.rows.map((r) => r["QUERY PLAN"]);
      const ms = Number(/Execution Time: ([\d.]+) ms/.exec(plan.join("\n"))?.[1] ?? NaN);
      out.push({ statement: i === 0 ? "page" : "count", ms, plan });
    }
    return out;
  } finally {
    await c.end();
    await pool.end();
  }
}

const db = await freshDatabase();
let t: TestEnvironment | undefined;
try {
  await migrate(db.url, pino({ level: "silent" }));
  const fillStarted = performance.now();
  const { images, filledAtMs } = await fill(db.url);
  const fillMs = performance.now() - fillStarted;
  t = await startEnvironment({ databaseUrl: db.url, heartbeatTimeoutMs: 86_400_000 });
  const client = environmentClient(t.baseUrl);

  const range = (i: number) => {
    const from = filledAtMs - DAYS * 86_400_000 + Math.random() * (DAYS * 86_400_000 - RANGE_MS);
    return { tenantId: tenantOf(i), createdAfter: timestampFromMs(Math.floor(from)), createdBefore: timestampFromMs(Math.floor(from + RANGE_MS)) };
  };
  let token = "";
  let depth = 0;
  let chains = 0;
  let chainTenant = tenantOf(0);
  const kinds: Kind[] = [
    { name: "first page", next: async (i) => ({ tenantId: tenantOf(i) }) },
    { name: "status", next: async (i) => ({ tenantId: tenantOf(i), status: STATUSES[Math.floor(i / TENANTS) % STATUSES.length] }) },
    { name: "image", next: async (i) => ({ tenantId: tenantOf(i), imageId: images.get(tenantOf(i))![Math.floor(i / TENANTS) % 4] }) },
    { name: "time range", next: async (i) => range(i) },
    {
      name: "next page",
      async next() {
        if (token === "" || depth >= CHAIN) {
          chainTenant = tenantOf(chains++);
          depth = 0;
          token = (await client.listInstances({ tenantId: chainTenant })).nextPageToken;
        }
        depth++;
        return { tenantId: chainTenant, pageToken: token };
      },
      answered(next) {
        token = next;
      },
    },
  ];

  const samples = new Map(kinds.map((k) => [k.name, [] as number[]]));
  const direct = new Map(kinds.map((k) => [k.name, [] as number[]]));
  const slowest = new Map<string, { ms: number; req: ListRequest }>();
  const totals = new Map(kinds.map((k) => [k.name, [] as bigint[]]));
  const round = async (i: number, measure: boolean) => {
    for (const k of kinds) {
      const req = await k.next(i);
      const t0 = performance.now();
      const res = await client.listInstances(req);
      const ms = performance.now() - t0;
      k.answered?.(res.nextPageToken);
      if (res.instances.length === 0) throw new Error(`${k.name}: an empty page for ${JSON.stringify(req, (_, v: unknown) => (typeof v === "bigint" ? String(v) : v))}`);
      if (!measure) continue;
      // Baseline: the same two statements through the environment's own pool, as its manager
      // runs them (in parallel), without the RPC, the conversion to protobuf or the client.
      const q = queryOf(req);
      const d0 = performance.now();
      await Promise.all([listInstances(t!.env.db, q), countInstances(t!.env.db, q)]);
      direct.get(k.name)!.push(performance.now() - d0);
      samples.get(k.name)!.push(ms);
      totals.get(k.name)!.push(res.totalCount);
      if (ms > (slowest.get(k.name)?.ms ?? -1)) slowest.set(k.name, { ms, req });
    }
  };
  for (let i = 0; i < WARMUP; i++) await round(i, false);
  const measureStarted = performance.now();
  for (let i = 0; i < CALLS; i++) await round(i, true);
  const measureMs = performance.now() - measureStarted;

  const { n, bytes } = (
    await t.query<{ n: string; bytes: string }>(`SELECT count(*) AS n, pg_size_pretty(pg_total_relation_size('instances')) AS bytes FROM instances`)
  )[0]!;
  console.log(`ListInstances over ${Number(n).toLocaleString("en")} instances (${bytes} with indexes; filled in ${fmt(fillMs / 1000, 1)} s), ${TENANTS} tenants`);
  console.log(`${CALLS} measured calls per kind, one at a time, kinds round-robin (${fmt(measureMs / 1000, 1)} s)`);
  const summaries = new Map<string, LatencySummary>();
  for (const k of kinds) {
    const s = summarize(samples.get(k.name)!);
    summaries.set(k.name, s);
    const counts = totals.get(k.name)!.map(Number).sort((a, b) => a - b);
    const d = summarize(direct.get(k.name)!);
    printLatency(k.name, s, `total_count median ${counts[Math.floor(counts.length / 2)]}`, 30);
    printLatency(`  ${k.name}, statements only`, d, "", 30);
    recordFigure(`${k.name} p50`, s.p50, "ms");
    recordFigure(`${k.name} statements only p50`, d.p50, "ms");
    recordFigure(`${k.name} statements only p99`, d.p99, "ms");
  }
  const all = summarize([...samples.values()].flat());
  const allDirect = summarize([...direct.values()].flat());
  printLatency("all kinds", all, "", 30);
  printLatency("  all kinds, statements only", allDirect, "", 30);
  recordFigure("all kinds p50", all.p50, "ms");
  console.log(ratioLine("p50 ListInstances / statements only", all.p50, allDirect.p50));
  console.log(ratioLine("p99 ListInstances / statements only", all.p99, allDirect.p99));
  for (const k of kinds) console.log(targetLine(`${k.name} p99`, summaries.get(k.name)!.p99, "<=", TARGET_MS, " ms"));
  console.log(targetLine("all kinds p99", all.p99, "<=", TARGET_MS, " ms"));

  console.log("\nEXPLAIN ANALYZE of each kind's slowest request (the environment's own statements):");
  for (const k of kinds) {
    const s = slowest.get(k.name)!;
    const plans = await explain(db.url, s.req);
    console.log(`  ${k.name.padEnd(12)} slowest call ${fmt(s.ms)} ms; now: ${plans.map((p) => `${p.statement} ${fmt(p.ms)} ms`).join(", ")}`);
    if (summaries.get(k.name)!.p99 > TARGET_MS) {
      for (const p of plans) {
        console.log(`    -- ${p.statement} statement`);
        for (const line of p.plan) console.log(`    ${line}`);
      }
    }
  }
} finally {
  await t?.close(); // the database is ours: close() leaves it
  await db.drop();
  await stopTestPostgres();
}
