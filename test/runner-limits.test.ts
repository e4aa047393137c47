/**
 * Resource limits of runs through a real Environment (real runc, real processes, real
 * PostgreSQL): RLIMIT_FSIZE ends a run that writes too large a file; the cgroup all runs share
 * holds the aggregate limits.
 */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import { chmod, copyFile, mkdir, mkdtemp, readdir, readFile, rm, rmdir, stat, utimes } from "node:fs/promises";
import { tmpdir } from "node:os";
import { setTimeout as sleep } from "node:timers/promises";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { InstanceStatus, TerminationReason } from "../gen/runtara/core/v1/types_pb.js";
import { RunnerType } from "../gen/runtara/environment/v1/environment_pb.js";
import { buildFixtures } from "./fixtures/build.js";
import { cgroupOwner, DEFAULT_LIMITS, NativeRunner, OciRunner, type Runner } from "../src/runner/index.js";
import { detectCgroupLayout } from "../src/runner/cgroup.js";
import { environmentClient, startEnvironment, stopTestPostgres, waitUntil, type TestEnvironment } from "./helpers.js";

const TENANT = "tenant-limits";
const MAX_FILE_BYTES = 2 * 1024 * 1024;

describe("run limits", () => {
  let t: TestEnvironment;
  let env: ReturnType<typeof environmentClient>;
  const images: Partial<Record<"oci" | "native", string>> = {};

  before(async () => {
    t = await startEnvironment({ maxFileBytes: MAX_FILE_BYTES, maxLogBytes: 1024 * 1024 });
    env = environmentClient(t.baseUrl);
    const binary = await readFile((await buildFixtures()).workflow);
    for (const [kind, runnerType] of [["oci", RunnerType.OCI], ["native", RunnerType.NATIVE]] as const) {
      images[kind] = (await env.registerImage({ tenantId: TENANT, name: `workflow-${kind}`, binary, runnerType })).imageId;
    }
  });
  after(async () => {
    await t?.close();
    await stopTestPostgres();
  });

  async function settled(instanceId: string) {
    await waitUntil(async () => (await t.query(`SELECT 1 FROM running_processes WHERE instance_id = $1`, [instanceId])).length === 0);
    await waitUntil(async () => (await env.getInstanceStatus({ tenantId: TENANT, instanceId })).instance!.status === InstanceStatus.FAILED);
    return (await env.getInstanceStatus({ tenantId: TENANT, instanceId })).instance!;
  }

  it("a reused instance id starts in a fresh run directory (L5)", async () => {
    const instanceId = `reused-${randomBytes(3).toString("hex")}`;
    await env.startInstance({ tenantId: TENANT, imageId: images.native!, instanceId, env: { WORKFLOW_MODE: "exit3" } });
    await settled(instanceId);
    const runDir = path.join(t.dataDir, "runs", TENANT, instanceId);
    assert.match(await readFile(path.join(runDir, "stderr.log"), "utf8"), /something went wrong/);
    await t.query(`DELETE FROM instances WHERE instance_id = $1`, [instanceId]); // as the database cleanup does
    await env.startInstance({ tenantId: TENANT, imageId: images.native!, instanceId, env: { WORKFLOW_MODE: "exit3", STDERR_MSG: "x" } });
    await settled(instanceId);
    const text = await readFile(path.join(runDir, "stderr.log"), "utf8");
    assert.equal(text.match(/something went wrong/g)?.length, 1, "only the new run's output");
  });

  for (const kind of ["native", "oci"] as const) {
    it(`${kind}: a file past RUNTARA_MAX_FILE_BYTES ends the run with SIGXFSZ: FAILED crashed, the file at the limit`, async () => {
      const { instanceId } = await env.startInstance({
        tenantId: TENANT,
        imageId: images[kind]!,
        env: { WORKFLOW_MODE: "bigfile", WRITE_PATH: kind === "oci" ? "/data/big" : "big", WRITE_BYTES: String(8 * MAX_FILE_BYTES) },
      });
      const s = await settled(instanceId);
      assert.equal(s.terminationReason, TerminationReason.CRASHED);
      // SIGXFSZ is 25: native reports the signal (no exit code), tini 128 + 25.
      assert.equal(s.exitCode, kind === "oci" ? 153 : undefined, `exit code ${s.exitCode}, error ${s.error}`);
      assert.match(s.error, kind === "oci" ? /\(code 153\)/ : /\(killed by SIGXFSZ\)/);
      const big = await stat(path.join(t.dataDir, "runs", TENANT, instanceId, "big"));
      assert.equal(big.size, MAX_FILE_BYTES);
    });
  }
});

describe("aggregate limits on the parent cgroup", () => {
  const parent = `/runtara-test-${randomBytes(4).toString("hex")}`;
  after(async () => {
    // The runtime creates the parent in every hierarchy (v1 ones and the unified one).
    for (const h of ["", ...(await readdir("/sys/fs/cgroup"))]) await rmdir(`/sys/fs/cgroup${h && `/${h}`}${parent}`).catch(() => {});
  });

  for (const [kind, make] of [
    ["native", () => new NativeRunner({ cgroupParent: parent, aggregateLimits: { pidsMax: 1000, memoryBytes: 256 * 1024 * 1024 } })],
    ["oci", () => new OciRunner({ cgroupParent: parent, aggregateLimits: { pidsMax: 1000, memoryBytes: 256 * 1024 * 1024 } })],
  ] as const) {
    it(`${kind}: pids.max and memory.max of the parent hold the configured values after a launch`, async () => {
      const runner: Runner = make();
      const fx = await buildFixtures();
      const base = await mkdtempWithBundle(fx["exit-with"]);
      const proc = await runner.launch({
        instanceId: `agg-${kind}-${randomBytes(3).toString("hex")}`,
        tenantId: "t",
        binaryPath: fx["exit-with"],
        bundlePath: base.bundle,
        runDir: base.runDir,
        env: {},
        limits: DEFAULT_LIMITS,
        networkMode: "host",
      });
      assert.equal((await proc.exited).exitCode, 0);
      assert.equal((await readFile(`/sys/fs/cgroup/pids${parent}/pids.max`, "utf8")).trim(), "1000");
      const memory = existsSync("/sys/fs/cgroup/memory") ? `/sys/fs/cgroup/memory${parent}/memory.limit_in_bytes` : `/sys/fs/cgroup${parent}/memory.max`;
      assert.equal((await readFile(memory, "utf8")).trim(), String(256 * 1024 * 1024));
      await base.remove();
    });
  }
});

/** A run directory and an OCI bundle holding `binary`, reachable by a container's mapped root. */
async function mkdtempWithBundle(binary: string) {
  const root = await mkdtemp(path.join(tmpdir(), "runtara-agg-"));
  await chmod(root, 0o711);
  const bundle = path.join(root, "bundle");
  await mkdir(path.join(bundle, "rootfs"), { recursive: true });
  await copyFile(binary, path.join(bundle, "rootfs", "binary"));
  const runDir = path.join(root, "run");
  await mkdir(runDir);
  return { bundle, runDir, remove: () => rm(root, { recursive: true, force: true }) };
}

describe("restart recovery: containers no run accounts for", () => {
  it("removes this DATA_DIR's unrecorded container at startup, and leaves another's alone", async () => {
    const t1 = await startEnvironment();
    const fx = await buildFixtures();
    const oci = new OciRunner();
    const runDir = path.join(t1.dataDir, "runs", "tenant-x", `unrecorded-${randomBytes(3).toString("hex")}`);
    await mkdir(runDir, { recursive: true });
    const outside = await mkdtempWithBundle(fx.sleeper);
    const launch = (id: string, dir: string) =>
      oci.launch({ instanceId: id, tenantId: "tenant-x", binaryPath: "", bundlePath: outside.bundle, runDir: dir, env: {}, limits: DEFAULT_LIMITS, networkMode: "host" });
    // Launched directly through the runner: no instance row, no running_processes row.
    const unrecorded = await launch(path.basename(runDir), runDir);
    const foreign = await launch(`foreign-${randomBytes(3).toString("hex")}`, outside.runDir);
    await t1.env.stop();
    const t2 = await startEnvironment({ databaseUrl: t1.database.url, dataDir: t1.dataDir });
    try {
      const exit = await Promise.race([unrecorded.exited, sleep(10_000, null)]);
      assert.ok(exit !== null, "the unrecorded container was removed at startup");
      const ids = (await oci.listContainers()).map((c) => c.containerId);
      assert.ok(!ids.includes(unrecorded.containerId!));
      assert.ok(ids.includes(foreign.containerId!), "a container of another DATA_DIR is not this environment's to remove");
    } finally {
      await foreign.stop("SIGKILL");
      await foreign.exited;
      await outside.remove();
      await t2.close();
      await t1.close();
    }
  });
});

describe("restart recovery: native processes no run accounts for", () => {
  it("kills this environment's unrecorded native process at startup, and leaves others' alone", async () => {
    const replicaId = `r-${randomBytes(3).toString("hex")}`;
    const t1 = await startEnvironment({ replicaId });
    const fx = await buildFixtures();
    const outside = await mkdtemp(path.join(tmpdir(), "runtara-foreign-"));
    const runDir = async (name: string) => {
      const dir = path.join(t1.dataDir, "runs", "tenant-x", `${name}-${randomBytes(3).toString("hex")}`);
      await mkdir(dir, { recursive: true });
      return dir;
    };
    // FORK=1: a child that ignores SIGTERM too, so the whole cgroup must go, not only the pid.
    const launch = async (owner: string, dir: string) =>
      new NativeRunner({ owner }).launch({
        instanceId: path.basename(dir),
        tenantId: "tenant-x",
        binaryPath: fx.sleeper,
        runDir: dir,
        env: { FORK: "1" },
        limits: DEFAULT_LIMITS,
        networkMode: "host",
      });
    // Launched directly through a runner, as an environment killed before recording it leaves it.
    const unrecorded = await launch(cgroupOwner(t1.dataDir, replicaId), await runDir("unrecorded"));
    // Another DATA_DIR's process working in this one's runs directory (a process picks its
    // cwd), and another replica's sharing this DATA_DIR: not this environment's to kill.
    const others = [
      await launch(cgroupOwner(outside, replicaId), await runDir("foreign")),
      await launch(cgroupOwner(t1.dataDir, `${replicaId}-2`), await runDir("sibling")),
    ];
    await t1.env.stop();
    const t2 = await startEnvironment({ databaseUrl: t1.database.url, dataDir: t1.dataDir, replicaId });
    try {
      const exit = await Promise.race([unrecorded.exited, sleep(10_000, null)]);
      assert.ok(exit !== null, "the unrecorded process was killed at startup");
      assert.equal(exit.signal, "SIGKILL");
      for (const p of others) assert.ok(existsSync(`/proc/${p.pid}`), `${p.instanceId} is not this environment's to kill`);
    } finally {
      for (const p of [unrecorded, ...others]) {
        await p.stop("SIGKILL");
        await p.exited;
      }
      await rm(outside, { recursive: true, force: true });
      await t2.close();
      await t1.close();
    }
  });
});

describe("restart recovery: empty native cgroups", () => {
  it("removes another environment's only once it is an hour old", async (t) => {
    const { unified } = await detectCgroupLayout();
    if (unified === undefined) return t.skip("no cgroup v2 hierarchy");
    const root = `${unified}/runtara`;
    const tag = randomBytes(3).toString("hex");
    const [old, young] = [`${root}/native-gone${tag}-00000000-runtara-x`, `${root}/native-busy${tag}-00000000-runtara-y`];
    await mkdir(old, { recursive: true });
    await mkdir(young);
    await utimes(old, new Date(Date.now() - 2 * 3_600_000), new Date(Date.now() - 2 * 3_600_000));
    const env = await startEnvironment();
    try {
      assert.equal(existsSync(old), false, "an environment that went away an hour ago: removed");
      assert.equal(existsSync(young), true, "one that may be about to be used: left");
    } finally {
      await env.close();
      for (const dir of [old, young]) await rmdir(dir).catch(() => undefined);
    }
  });
});
