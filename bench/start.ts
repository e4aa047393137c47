/**
 * Start latency and throughput: StartInstance on the environment's port (8002) until the
 * instance's own Register has reached core (PENDING -> RUNNING), for the native and the OCI
 * runner, at concurrency 1 and BENCH_CONCURRENCY (16). Baselines in the same run, launching
 * the same binary with the same RUNTARA_* environment for an instance row inserted beforehand,
 * so it makes the same Register call against the same core:
 *   - native: a bare child_process.spawn of the fixture binary,
 *   - OCI: a bare `runc run` of a bundle whose config.json comes from the runner's own
 *     buildOciConfig (same namespaces, seccomp, limits, mounts), written per launch.
 * "Registered" is observed the same way on every path, without polling: LISTEN on
 * runtara_instance on a dedicated connection. The trigger fires on every status change and an
 * instance's first one is its Register (the row is inserted PENDING and nothing else touches
 * it before the process calls Register).
 *
 * Each pair of paths runs A B B A in halves, so drift over the run falls on both alike; between
 * phases every process of the previous one is drained (exited, recorded, container deleted), so
 * one phase's exits do not load the next. All processes, core, the environment and this client
 * share one Node process (one event loop), as in a deployment with the core embedded.
 *
 * Counts (env): BENCH_NATIVE_STARTS (c=16, default 400), BENCH_NATIVE_STARTS_SERIAL (c=1,
 * default 100), BENCH_OCI_STARTS (default 160), BENCH_OCI_STARTS_SERIAL (default 40),
 * BENCH_CONCURRENCY (default 16), BENCH_RUNNERS ("native,oci"), BENCH_WARMUP (per path, 8).
 */
import { spawn, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { copyFile, mkdir, mkdtemp, open, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { execa } from "execa";
import pg from "pg";
import { RunnerType } from "../gen/runtara/environment/v1/environment_pb.js";
import { detectCgroupLayout, removeCgroup } from "../src/runner/cgroup.js";
import { buildOciConfig } from "../src/runner/oci-spec.js";
import { OciRunner, type RuntimeInfo } from "../src/runner/oci.js";
import { buildFixtures } from "../test/fixtures/build.js";
import { environmentClient, insertInstance, isAlive, startEnvironment, stopTestPostgres, type TestEnvironment } from "../test/helpers.js";
import { fmt, instrumentSpawn, perSec, printLatency, ratioLine, runConcurrent, summarize, targetLine } from "./lib.js";

const num = (name: string, fallback: number) => Number(process.env[name] ?? fallback);
const CONCURRENCY = num("BENCH_CONCURRENCY", 16);
const COUNTS = {
  native: { serial: num("BENCH_NATIVE_STARTS_SERIAL", 100), parallel: num("BENCH_NATIVE_STARTS", 400) },
  oci: { serial: num("BENCH_OCI_STARTS_SERIAL", 40), parallel: num("BENCH_OCI_STARTS", 160) },
};
const RUNNERS = (process.env.BENCH_RUNNERS ?? "native,oci").split(",").map((s) => s.trim()) as ("native" | "oci")[];
const WARMUP = num("BENCH_WARMUP", 8);
const TENANT = "tenant-bench";
const MODE = { WORKFLOW_MODE: "complete" }; // register, save a checkpoint, complete, exit 0
const REGISTER_TIMEOUT_MS = 60_000;
const BARE_CGROUP_PARENT = "/runtara-bench";

// Before anything spawns: every spawn() in this process (runners, execa, the bare paths) is timed.
const spawnBlocking = instrumentSpawn();

/** Resolves when an instance's first status change (its Register) is NOTIFYed. */
class RegisterWatch {
  private readonly waiters = new Map<string, { resolve: (at: number) => void; timer: NodeJS.Timeout }>();

  constructor(private readonly client: pg.Client) {
    client.on("notification", (m) => {
      const at = performance.now();
      const w = m.payload === undefined ? undefined : this.waiters.get(m.payload);
      if (!w) return; // a later change (COMPLETED) of an instance already seen, or not ours
      this.waiters.delete(m.payload!);
      clearTimeout(w.timer);
      w.resolve(at);
    });
  }

  static async open(url: string): Promise<RegisterWatch> {
    const client = new pg.Client({ connectionString: url });
    await client.connect();
    await client.query("LISTEN runtara_instance");
    return new RegisterWatch(client);
  }

  /** Call before launching `instanceId`; resolves with the performance.now() of the NOTIFY. */
  expect(instanceId: string): Promise<number> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiters.delete(instanceId);
        reject(new Error(`instance ${instanceId} did not register within ${REGISTER_TIMEOUT_MS} ms`));
      }, REGISTER_TIMEOUT_MS);
      this.waiters.set(instanceId, { resolve, timer });
    });
  }

  close(): Promise<void> {
    return this.client.end();
  }
}

interface PathRun {
  /** Launch start -> Register seen, ms. */
  registeredMs: number[];
  /** StartInstance path only: launch start -> RPC answered, ms. */
  rpcMs: number[];
  wallMs: number;
  /** Event-loop utilization of this process during the phase (0..1). */
  elu: number;
  spawns: Map<string, number[]>;
}

interface StartPath {
  label: string;
  /** Creates what a start needs beforehand (bare paths: the instance rows); returns the ids. */
  prepare(n: number): Promise<string[]>;
  /** One start; resolves when it is registered (and, for the API, when the RPC answered). */
  start(instanceId: string, run: PathRun): Promise<void>;
  /** Waits until every process of `ids` has exited and been cleaned up; checks they COMPLETED. */
  drain(ids: string[]): Promise<void>;
}

const newId = (prefix: string) => `${prefix}-${randomBytes(6).toString("hex")}`;

async function checkCompleted(t: TestEnvironment, ids: string[]): Promise<void> {
  const bad = await t.query(
    `SELECT instance_id, status, termination_reason, error, stderr FROM instances WHERE instance_id = ANY($1) AND status <> 'completed'`,
    [ids],
  );
  if (bad.length > 0) throw new Error(`${bad.length} of ${ids.length} instances did not complete, e.g. ${JSON.stringify(bad[0])}`);
}

/** StartInstance through the environment's API. */
function apiPath(t: TestEnvironment, watch: RegisterWatch, imageId: string, label: string): StartPath {
  const env = environmentClient(t.baseUrl);
  return {
    label,
    prepare: async (n) => Array.from({ length: n }, () => newId("api")),
    async start(instanceId, run) {
      const registered = watch.expect(instanceId);
      const t0 = performance.now();
      const rpc = env.startInstance({ tenantId: TENANT, imageId, instanceId, env: MODE }).then(() => run.rpcMs.push(performance.now() - t0));
      const [at] = await Promise.all([registered, rpc]);
      run.registeredMs.push(at - t0);
    },
    async drain(ids) {
      const deadline = Date.now() + 120_000;
      for (;;) {
        const [row] = await t.query<{ procs: number; open: number }>(
          `SELECT (SELECT count(*)::int FROM running_processes) AS procs,
                  (SELECT count(*)::int FROM instances WHERE instance_id = ANY($1) AND status IN ('pending', 'running')) AS open`,
          [ids],
        );
        if (row!.procs === 0 && row!.open === 0) break;
        if (Date.now() > deadline) throw new Error(`drain: ${row!.procs} processes, ${row!.open} instances still open`);
        await sleep(25);
      }
      await checkCompleted(t, ids);
    },
  };
}

/** Fixture rows and the exact environment the runners give an instance (SPEC §4). */
function bareEnv(t: TestEnvironment, instanceId: string): Record<string, string> {
  const core = `127.0.0.1:${t.env.coreAddress!.port}`;
  return {
    ...MODE,
    RUNTARA_INSTANCE_ID: instanceId,
    RUNTARA_TENANT_ID: TENANT,
    RUNTARA_CORE_URL: `http://${core}`,
    RUNTARA_CORE_ADDR: core,
    RUNTARA_HTTP_URL: `http://${core}`,
    RUNTARA_INSTANCE_TOKEN: t.env.tokens.instanceToken(instanceId),
  };
}

async function insertRows(t: TestEnvironment, n: number, prefix: string): Promise<string[]> {
  const ids = Array.from({ length: n }, () => newId(prefix));
  for (let i = 0; i < ids.length; i += 32) {
    await Promise.all(ids.slice(i, i + 32).map((instanceId) => insertInstance(t, { tenantId: TENANT, instanceId })));
  }
  return ids;
}

/** Resolves on the child's exit; rejects on a spawn error or a non-zero exit. */
function exitOf(child: ChildProcess, what: string): Promise<void> {
  return new Promise((resolve, reject) => {
    child.once("error", reject);
    child.once("exit", (code, signal) => (code === 0 ? resolve() : reject(new Error(`${what} exited ${code ?? signal}`))));
  });
}

/**
 * Launches one bare process and waits for its Register. Its exit is kept for the drain; a
 * failure before registering (non-zero exit, spawn error) fails the start instead of hanging.
 */
async function bareStart(watch: RegisterWatch, instanceId: string, exits: Map<string, Promise<void>>, run: PathRun, launch: () => Promise<ChildProcess>) {
  const registered = watch.expect(instanceId);
  const t0 = performance.now();
  const child = await launch();
  const exit = exitOf(child, `bare process of ${instanceId}`);
  exits.set(instanceId, exit.catch(() => {}));
  const at = await Promise.race([registered, exit.then(() => registered)]);
  run.registeredMs.push(at - t0);
}

function bareSpawnPath(t: TestEnvironment, watch: RegisterWatch, binary: string, children: Set<ChildProcess>): StartPath {
  const exits = new Map<string, Promise<void>>();
  return {
    label: "bare spawn -> registered",
    prepare: (n) => insertRows(t, n, "bare"),
    start: (instanceId, run) =>
      bareStart(watch, instanceId, exits, run, async () => {
        const child = spawn(binary, [], { env: bareEnv(t, instanceId), detached: true, stdio: "ignore" });
        children.add(child);
        child.once("exit", () => children.delete(child));
        return child;
      }),
    async drain(ids) {
      await Promise.all(ids.map((id) => exits.get(id)));
      await checkCompleted(t, ids);
    },
  };
}

interface BareOci {
  rt: RuntimeInfo;
  rootfs: string;
  runsDir: string;
  containerIds: Set<string>;
}

/** A read-only rootfs holding only /binary (and the mount points), like an image bundle's. */
async function prepareBareOci(rt: RuntimeInfo, binary: string): Promise<BareOci> {
  const dir = await mkdtemp(path.join(tmpdir(), "runtara-bench-bundle-"));
  const rootfs = path.join(dir, "rootfs");
  for (const d of ["proc", "dev", "data", "tmp", "etc"]) await mkdir(path.join(rootfs, d), { recursive: true });
  for (const f of ["etc/hosts", "etc/resolv.conf"]) await (await open(path.join(rootfs, f), "w")).close();
  await copyFile(binary, path.join(rootfs, "binary"));
  await execa("chmod", ["0755", path.join(rootfs, "binary")]);
  const runsDir = path.join(dir, "runs");
  await mkdir(runsDir);
  return { rt, rootfs, runsDir, containerIds: new Set() };
}

function bareRuncPath(t: TestEnvironment, watch: RegisterWatch, oci: BareOci, children: Set<ChildProcess>): StartPath {
  const exits = new Map<string, Promise<void>>();
  const o = t.env.options;
  const limits = {
    memoryBytes: o.memoryLimitBytes,
    cpuPeriodUs: 100_000,
    cpuQuotaUs: Math.round(o.cpuLimit * 100_000),
    pidsLimit: o.pidsLimit,
    nofile: 4096,
  };
  const rootArgs = oci.rt.stateRoot !== undefined ? ["--root", oci.rt.stateRoot] : [];
  return {
    label: `bare ${oci.rt.flavor} run -> registered`,
    prepare: (n) => insertRows(t, n, "bare"),
    start: (instanceId, run) =>
      bareStart(watch, instanceId, exits, run, async () => {
        // Per launch, as the runner does: a run directory and a config.json (env holds the token).
        const runDir = path.join(oci.runsDir, instanceId);
        await mkdir(runDir);
        const containerId = `rtbench-${instanceId}`;
        const config = buildOciConfig({
          rootfs: oci.rootfs,
          args: ["/binary"],
          env: bareEnv(t, instanceId),
          hostname: instanceId.slice(0, 63),
          dataDir: runDir,
          cgroupsPath: `${BARE_CGROUP_PARENT}/${containerId}`,
          limits,
          networkMode: o.networkMode,
          seccomp: true,
        });
        await writeFile(path.join(runDir, "config.json"), JSON.stringify(config));
        oci.containerIds.add(containerId);
        const child = spawn(oci.rt.command, [...rootArgs, "run", "--bundle", runDir, containerId], { detached: true, stdio: "ignore" });
        children.add(child);
        child.once("exit", () => children.delete(child));
        return child;
      }),
    async drain(ids) {
      await Promise.all(ids.map((id) => exits.get(id)));
      await checkCompleted(t, ids);
    },
  };
}

function emptyRun(): PathRun {
  return { registeredMs: [], rpcMs: [], wallMs: 0, elu: 0, spawns: new Map() };
}

/** One measured phase of `ids.length` starts at `concurrency`, accumulated into `into`. */
async function phase(p: StartPath, count: number, concurrency: number, into: PathRun): Promise<void> {
  const ids = await p.prepare(count);
  spawnBlocking.take();
  const elu0 = performance.eventLoopUtilization();
  const r = await runConcurrent(ids.length, concurrency, (i) => p.start(ids[i]!, into));
  const elu = performance.eventLoopUtilization(elu0);
  into.elu = (into.elu * into.wallMs + elu.utilization * r.wallMs) / (into.wallMs + r.wallMs);
  into.wallMs += r.wallMs;
  for (const [tag, samples] of spawnBlocking.take()) into.spawns.set(tag, [...(into.spawns.get(tag) ?? []), ...samples]);
  await p.drain(ids);
}

function printSpawns(label: string, run: PathRun): void {
  for (const [tag, samples] of [...run.spawns].sort()) {
    const s = summarize(samples);
    const total = samples.reduce((a, b) => a + b, 0);
    console.log(
      `    spawn() blocked the loop [${label}: ${tag}] n=${s.count} p50=${fmt(s.p50)} ms p99=${fmt(s.p99)} ms max=${fmt(s.max)} ms, ` +
        `total ${fmt(total, 0)} ms = ${fmt((100 * total) / run.wallMs, 1)}% of the phase wall`,
    );
  }
}

interface PairResult {
  runner: string;
  concurrency: number;
  api: PathRun;
  bare: PathRun;
}

async function measurePair(runner: string, api: StartPath, bare: StartPath, count: number, concurrency: number): Promise<PairResult> {
  // Warm-up (not recorded): connections, plans, the runtime probe, page cache.
  const scratch = emptyRun();
  await phase(api, WARMUP, Math.min(WARMUP, concurrency), scratch);
  await phase(bare, WARMUP, Math.min(WARMUP, concurrency), scratch);
  const a = emptyRun();
  const b = emptyRun();
  const half = Math.ceil(count / 2);
  await phase(api, half, concurrency, a);
  await phase(bare, half, concurrency, b);
  await phase(bare, count - half, concurrency, b);
  await phase(api, count - half, concurrency, a);
  return { runner, concurrency, api: a, bare: b };
}

function report(r: PairResult, apiLabel: string, bareLabel: string): void {
  const api = summarize(r.api.registeredMs);
  const bare = summarize(r.bare.registeredMs);
  const apiRate = perSec(r.api.registeredMs.length, r.api.wallMs);
  const bareRate = perSec(r.bare.registeredMs.length, r.bare.wallMs);
  console.log(`\n${r.runner}, concurrency ${r.concurrency}`);
  const w = 40;
  printLatency(`  ${apiLabel}`, api, `${fmt(apiRate, 1)} starts/s  loop busy ${fmt(100 * r.api.elu, 0)}%`, w);
  printLatency(`  StartInstance RPC answered`, summarize(r.api.rpcMs), "", w);
  printLatency(`  ${bareLabel}`, bare, `${fmt(bareRate, 1)} starts/s  loop busy ${fmt(100 * r.bare.elu, 0)}%`, w);
  console.log(`  ${ratioLine("ratio p50 StartInstance / bare", api.p50, bare.p50, { op: "<=", value: 1.5 })}`);
  console.log(`  ${ratioLine("ratio starts/s StartInstance / bare", apiRate, bareRate)}`);
  if (r.runner === "native" && r.concurrency > 1) console.log(`  ${targetLine("native starts/s via StartInstance", apiRate, ">=", 200)}`);
  printSpawns("StartInstance", r.api);
  printSpawns("bare", r.bare);
}

/** Containers, processes and cgroups of the bare OCI path: none may be left. */
async function cleanupBareOci(oci: BareOci | undefined, children: Set<ChildProcess>): Promise<string[]> {
  const problems: string[] = [];
  for (const child of children) {
    if (child.pid !== undefined && isAlive(child.pid)) {
      problems.push(`bare process ${child.pid} still running; killed`);
      try {
        process.kill(-child.pid, "SIGKILL");
      } catch {
        // gone meanwhile
      }
    }
  }
  if (oci) {
    const rootArgs = oci.rt.stateRoot !== undefined ? ["--root", oci.rt.stateRoot] : [];
    const listed = await execa(oci.rt.command, [...rootArgs, "list", "-q"], { reject: false });
    for (const id of listed.stdout.split("\n").filter((l) => oci.containerIds.has(l))) {
      problems.push(`container ${id} was left; deleted`);
      await execa(oci.rt.command, [...rootArgs, "delete", "--force", id], { reject: false });
    }
    const layout = await detectCgroupLayout();
    const left = await removeCgroup(layout, BARE_CGROUP_PARENT, [...oci.containerIds]);
    if (left.length > 0) problems.push(`cgroups left: ${left.join(", ")}`);
    await rm(path.dirname(oci.rootfs), { recursive: true, force: true });
  }
  return problems;
}

async function leftoverContainers(rt: RuntimeInfo | undefined): Promise<string[]> {
  if (!rt) return [];
  const rootArgs = rt.stateRoot !== undefined ? ["--root", rt.stateRoot] : [];
  const listed = await execa(rt.command, [...rootArgs, "list", "-q"], { reject: false });
  return listed.stdout.split("\n").filter((l) => l.startsWith("runtara-") || l.startsWith("rtbench-"));
}

const fixtures = await buildFixtures();
const rt = RUNNERS.includes("oci") ? await new OciRunner().runtime() : undefined;
const t = await startEnvironment(rt ? { ociRuntime: rt.command } : {});
const children = new Set<ChildProcess>();
let oci: BareOci | undefined;
let watch: RegisterWatch | undefined;
try {
  watch = await RegisterWatch.open(t.database.url);
  const env = environmentClient(t.baseUrl);
  const binary = await readFile(fixtures.workflow);
  console.log(
    `start latency: StartInstance on 8002 -> Register seen by core (LISTEN runtara_instance), WORKFLOW_MODE=complete; ` +
      `${RUNNERS.join(" + ")}, concurrency 1 and ${CONCURRENCY}${rt ? `; OCI runtime ${rt.version}` : ""}`,
  );
  const results: PairResult[] = [];
  for (const runner of RUNNERS) {
    const runnerType = runner === "oci" ? RunnerType.OCI : RunnerType.NATIVE;
    const { imageId } = await env.registerImage({ tenantId: TENANT, name: `bench-start-${runner}`, binary, runnerType });
    const apiLabel = "StartInstance -> registered";
    const api = apiPath(t, watch, imageId, apiLabel);
    let bare: StartPath;
    if (runner === "oci") {
      oci = await prepareBareOci(rt!, fixtures.workflow);
      bare = bareRuncPath(t, watch, oci, children);
    } else {
      bare = bareSpawnPath(t, watch, fixtures.workflow, children);
    }
    for (const [count, concurrency] of [
      [COUNTS[runner].serial, 1],
      [COUNTS[runner].parallel, CONCURRENCY],
    ] as const) {
      const r = await measurePair(runner, api, bare, count, concurrency);
      results.push(r);
      report(r, apiLabel, bare.label);
    }
  }
  console.log(`\nsummary (p50 ratio target <= 1.5; native target >= 200 starts/s)`);
  for (const r of results) {
    const api = summarize(r.api.registeredMs);
    const bare = summarize(r.bare.registeredMs);
    const apiRate = perSec(r.api.registeredMs.length, r.api.wallMs);
    const bareRate = perSec(r.bare.registeredMs.length, r.bare.wallMs);
    console.log(
      `  ${`${r.runner} c=${r.concurrency}`.padEnd(14)} p50 ${fmt(api.p50)} / ${fmt(bare.p50)} ms = ${fmt(api.p50 / bare.p50)}x   ` +
        `starts/s ${fmt(apiRate, 1)} / ${fmt(bareRate, 1)} = ${fmt(apiRate / bareRate)}x`,
    );
  }
} finally {
  await watch?.close();
  const problems = await cleanupBareOci(oci, children);
  await t.close();
  await stopTestPostgres();
  spawnBlocking.restore();
  problems.push(...(await leftoverContainers(rt)).map((id) => `container ${id} left after close`));
  console.log(problems.length === 0 ? "\ncleanup: no containers, processes or cgroups left; database dropped" : `\ncleanup problems: ${problems.join("; ")}`);
}
