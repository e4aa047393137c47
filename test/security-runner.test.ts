/**
 * Runner isolation, proved from outside (review findings C2, H1, H2): real environments, real
 * runc, real processes. The native-user and setuid tests need root (as CI runs); OCI tests
 * need a usable runtime and, like the other runner tests, fail rather than skip in CI.
 */
import assert from "node:assert/strict";
import { mkdir, mkdtemp, readFile, rm, stat, symlink, writeFile } from "node:fs/promises";
import net from "node:net";
import { networkInterfaces, tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { Code, type Interceptor } from "@connectrpc/connect";
import { createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { execa } from "execa";
import { EnvironmentService, RunnerType } from "../gen/runtara/environment/v1/environment_pb.js";
import { InstanceStatus } from "../gen/runtara/core/v1/types_pb.js";
import { compileOptions, nativeRunnerAllowed, readEnvironmentOptions } from "../src/config.js";
import { createRunners, DEFAULT_LIMITS, Spawner } from "../src/runner/index.js";
import { createPastaNetns, detectOutbound, removeNetns, stopOrphanedPastas } from "../src/runner/netns.js";
import { createInstanceClient, createInstanceTransport } from "../src/sdk/client.js";
import { compileSettings, readInstanceEnv } from "../src/sdk/settings.js";
import { buildFixtures } from "./fixtures/build.js";
import {
  environmentClient,
  insertInstance,
  isAlive,
  rejectsWithCode,
  startEnvironment,
  stopTestPostgres,
  tokenOf,
  waitUntil,
  type TestEnvironment,
  ociSkip,
} from "./helpers.js";

const TENANT = "tenant-sec";
const OTHER = "tenant-other";
const isRoot = process.getuid?.() === 0;
const rootSkip = isRoot ? false : "needs root (native processes switch users; files are chowned)";
const ociSkipReason = await ociSkip();
const dec = (b: Uint8Array) => JSON.parse(new TextDecoder().decode(b)) as Record<string, string>;
const script = (body: string) => new TextEncoder().encode(`#!/bin/sh\n${body}\n`);

after(() => stopTestPostgres());

async function watchToEnd(t: TestEnvironment, tenantId: string, instanceId: string) {
  let last;
  for await (const res of environmentClient(t.baseUrl).watchInstance({ tenantId, instanceId }, { timeoutMs: 60_000 })) last = res.instance!;
  return last!;
}

/** Waits until the run's exit has been recorded (the runner has cleaned up after it). */
async function runRecorded(t: TestEnvironment, instanceId: string) {
  await waitUntil(async () => (await t.query(`SELECT 1 FROM running_processes WHERE instance_id = $1`, [instanceId])).length === 0);
}

async function gone(pid: number, timeoutMs = 5_000): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const st = await readFile(`/proc/${pid}/stat`, "utf8").catch(() => "");
    if (st === "" || /\) [ZX] /.test(st)) return true;
    if (Date.now() > deadline) return false;
    await new Promise((r) => setTimeout(r, 50));
  }
}

describe("native runner policy (RUNTARA_NATIVE_RUNNER)", () => {
  const keys = (file: string) => writeFile(file, `${TENANT} key-sec-0123456789abcdef\n`, { mode: 0o600 });

  it("auto allows native only on loopback without API keys", () => {
    assert.equal(nativeRunnerAllowed(compileOptions({ httpHost: "127.0.0.1" })), true);
    assert.equal(nativeRunnerAllowed(compileOptions({ httpHost: "::1" })), true);
    assert.equal(nativeRunnerAllowed(compileOptions({ httpHost: "0.0.0.0", allowUnauthenticated: true })), false);
    assert.equal(nativeRunnerAllowed(compileOptions({ httpHost: "127.0.0.1", apiKeysFile: "/k" })), false);
    assert.equal(nativeRunnerAllowed(compileOptions({ httpHost: "0.0.0.0", allowUnauthenticated: true, nativeRunner: "enabled" })), true);
    assert.equal(nativeRunnerAllowed(compileOptions({ httpHost: "127.0.0.1", nativeRunner: "disabled" })), false);
  });

  it("validates the new variables, naming them", () => {
    const load = (env: NodeJS.ProcessEnv) => compileOptions(readEnvironmentOptions(env));
    for (const [name, env] of [
      ["RUNTARA_NATIVE_RUNNER", { RUNTARA_NATIVE_RUNNER: "maybe" }],
      ["RUNTARA_NATIVE_USER", { RUNTARA_NATIVE_USER: "no such user" }],
      ["RUNTARA_OCI_UID_BASE", { RUNTARA_OCI_UID_BASE: "0" }],
      ["RUNTARA_OCI_UID_BASE", { RUNTARA_OCI_UID_BASE: "4294967295" }],
      ["RUNTARA_OCI_UID_COUNT", { RUNTARA_OCI_UID_COUNT: "10" }],
      ["RUNTARA_NETWORK_MODE", { RUNTARA_NETWORK_MODE: "bridge" }],
      ...(isRoot ? [["RUNTARA_NATIVE_USER", { RUNTARA_NATIVE_USER: "runtara-no-such-user" }] as const] : []),
    ] as const) {
      assert.throws(() => load(env), (e: Error) => e.message.includes(name), `${JSON.stringify(env)} must be refused naming ${name}`);
    }
    const o = load({ RUNTARA_OCI_UID_BASE: "200000", RUNTARA_OCI_UID_COUNT: "1000", RUNTARA_NETWORK_MODE: "none" });
    assert.deepEqual(o.ociIdMapping, { uidBase: 200000, gidBase: 200000, size: 1000 });
    assert.equal(o.networkMode, "none");
    if (isRoot) assert.equal(load({}).nativeRunAs?.name, "nobody");
  });

  it("refuses RegisterImage and StartInstance of NATIVE with API keys or a non-loopback bind", async () => {
    const binary = script("exit 0");
    // An image registered where native is allowed, then started where it is not.
    const open = await startEnvironment();
    const { imageId } = await environmentClient(open.baseUrl).registerImage({ tenantId: TENANT, name: "n", binary, runnerType: RunnerType.NATIVE });
    await open.env.stop();
    try {
      const keysFile = path.join(open.dataDir, "keys");
      await keys(keysFile);
      const auth: Interceptor = (next) => (req) => {
        req.header.set("authorization", "Bearer key-sec-0123456789abcdef");
        return next(req);
      };
      for (const options of [{ apiKeysFile: keysFile }, { httpHost: "0.0.0.0", allowUnauthenticated: true }]) {
        const t = await startEnvironment({ ...options, databaseUrl: open.database.url });
        try {
          const client = createClient(EnvironmentService, createConnectTransport({ baseUrl: t.baseUrl, httpVersion: "2", interceptors: [auth] }));
          await rejectsWithCode(
            client.registerImage({ tenantId: TENANT, name: "n2", binary, runnerType: RunnerType.NATIVE }),
            Code.FailedPrecondition,
            "RUNTARA_NATIVE_RUNNER",
          );
          await rejectsWithCode(client.startInstance({ tenantId: TENANT, imageId }), Code.FailedPrecondition, "RUNTARA_NATIVE_RUNNER");
          const rows = await t.query(`SELECT count(*)::int AS n FROM instances`);
          assert.equal(rows[0]!.n, 0, "nothing was started");
        } finally {
          await t.close();
        }
      }
      // The explicit opt-in wins over a non-loopback bind.
      const enabled = await startEnvironment({ httpHost: "0.0.0.0", allowUnauthenticated: true, nativeRunner: "enabled", databaseUrl: open.database.url });
      try {
        const client = environmentClient(enabled.baseUrl);
        await client.registerImage({ tenantId: TENANT, name: "n3", binary, runnerType: RunnerType.NATIVE });
      } finally {
        await enabled.close();
      }
    } finally {
      // Stopped above already; this drops its database and removes its data directory.
      await open.close();
    }
  });
});

describe("native runner under root (C2)", { skip: rootSkip }, () => {
  let t: TestEnvironment;
  let client: ReturnType<typeof environmentClient>;
  before(async () => {
    t = await startEnvironment();
    client = environmentClient(t.baseUrl);
  });
  after(() => t.close());

  let images = 0;
  async function run(tenantId: string, body: string) {
    const name = `probe-${++images}`;
    const { imageId } = await client.registerImage({ tenantId, name, binary: script(body), runnerType: RunnerType.NATIVE });
    const { instanceId } = await client.startInstance({ tenantId, imageId });
    return { instanceId, runDir: path.join(t.dataDir, "runs", tenantId, instanceId) };
  }

  it("runs as the unprivileged user and cannot read DATA_DIR secrets, other run dirs or images' directories", async () => {
    const secret = path.join(t.dataDir, "postgres.password");
    await writeFile(secret, "s3cret", { mode: 0o600 });
    const other = await run(OTHER, "echo other > other.txt; exit 0");
    await runRecorded(t, other.instanceId);
    const { instanceId, runDir } = await run(
      TENANT,
      [
        `echo "uid=$(/usr/bin/id -u)"`,
        `/bin/cat ${secret} && echo secret=read || echo secret=denied`,
        `/bin/cat ${other.runDir}/other.txt && echo other=read || echo other=denied`,
        `/bin/ls ${t.dataDir} && echo list=yes || echo list=denied`,
        `/bin/ls ${path.join(t.dataDir, "images")} && echo images=yes || echo images=denied`,
        `echo mine > mine.txt && echo own=yes`,
      ].join("\n"),
    );
    await runRecorded(t, instanceId);
    const out = await readFile(path.join(runDir, "stdout.log"), "utf8");
    assert.match(out, /^uid=65534$/m, out);
    assert.match(out, /^secret=denied$/m);
    assert.match(out, /^other=denied$/m);
    assert.match(out, /^list=denied$/m);
    assert.match(out, /^images=denied$/m);
    assert.match(out, /^own=yes$/m);
    // Between runs the run directory is root's again, 0700.
    const st = await stat(runDir);
    assert.equal(st.uid, 0);
    assert.equal(st.mode & 0o777, 0o700);
  });

  it("kills a setsid child when the workflow exits", async () => {
    const { instanceId, runDir } = await run(TENANT, "/usr/bin/setsid /bin/sleep 1000 & echo child=$!; exit 0");
    await runRecorded(t, instanceId);
    const child = Number(/child=(\d+)/.exec(await readFile(path.join(runDir, "stdout.log"), "utf8"))![1]);
    assert.ok(await gone(child), `setsid child ${child} survived the workflow's exit`);
  });

  it("kills a setsid child on StopInstance, and reports metrics from the cgroup", async () => {
    const { instanceId, runDir } = await run(TENANT, "/usr/bin/setsid /bin/sleep 1000 & echo child=$!; exec /bin/sleep 1000");
    await waitUntil(async () => /child=\d+/.test(await readFile(path.join(runDir, "stdout.log"), "utf8").catch(() => "")));
    const child = Number(/child=(\d+)/.exec(await readFile(path.join(runDir, "stdout.log"), "utf8"))![1]);
    assert.ok(isAlive(child));
    await client.stopInstance({ tenantId: TENANT, instanceId, gracePeriodSeconds: 1n });
    await runRecorded(t, instanceId);
    assert.ok(await gone(child), `setsid child ${child} survived StopInstance`);
    const status = (await client.getInstanceStatus({ tenantId: TENANT, instanceId })).instance!;
    assert.equal(status.status, InstanceStatus.CANCELLED);
    assert.ok((status.memoryPeakBytes ?? 0n) > 0n, "memory peak from the cgroup");
  });
});

describe("native run directory ownership (runAs)", { skip: rootSkip }, () => {
  it("a launch refused for a planted log leaves the directory root's, and later runs hand it back too", async (t) => {
    const base = await mkdtemp(path.join(tmpdir(), "runtara-runas-"));
    const runners = createRunners({ native: { runAs: { uid: 65534, gid: 65534 }, owner: "runastest" } });
    const { native } = runners;
    t.after(async () => {
      runners.close();
      await rm(base, { recursive: true, force: true });
    });
    const runDir = path.join(base, "run");
    await mkdir(runDir, { recursive: true, mode: 0o700 });
    const fx = await buildFixtures();
    const spec = { instanceId: "runas", tenantId: "t", binaryPath: fx["exit-with"], runDir, env: { EXIT_CODE: "0" }, limits: DEFAULT_LIMITS, networkMode: "host" as const };
    // A previous run of the instance left a symlink as its log: the launch is refused.
    await symlink("/etc/hostname", path.join(runDir, "stdout.log"));
    await assert.rejects(native.launch(spec), /log files/);
    await rm(path.join(runDir, "stdout.log"));
    for (let i = 0; i < 2; i++) await (await native.launch(spec)).exited;
    const st = await stat(runDir);
    assert.deepEqual([st.uid, st.mode & 0o777], [0, 0o700], "the run directory is root's again between runs");
  });
});

describe("OCI isolation (H1, H2)", { skip: ociSkipReason }, () => {
  let t: TestEnvironment;
  let client: ReturnType<typeof environmentClient>;
  let imageId: string;
  let listener: net.Server;
  let listenerPort: number;
  before(async () => {
    t = await startEnvironment();
    client = environmentClient(t.baseUrl);
    const binary = await readFile((await buildFixtures()).workflow);
    imageId = (await client.registerImage({ tenantId: TENANT, name: "wf", binary, runnerType: RunnerType.OCI })).imageId;
    // A host service on every address, standing in for anything bound to 0.0.0.0.
    listener = net.createServer((s) => s.destroy());
    await new Promise<void>((r) => listener.listen(0, "0.0.0.0", r));
    listenerPort = (listener.address() as net.AddressInfo).port;
  });
  after(async () => {
    await new Promise((r) => listener.close(r));
    await t.close();
  });

  async function runMode(mode: string, env: Record<string, string> = {}) {
    const { instanceId } = await client.startInstance({ tenantId: TENANT, imageId, env: { WORKFLOW_MODE: mode, ...env } });
    const last = await watchToEnd(t, TENANT, instanceId);
    await runRecorded(t, instanceId);
    return { instanceId, last, runDir: path.join(t.dataDir, "runs", TENANT, instanceId) };
  }

  it("cannot reach the host's loopback services (management API, PostgreSQL, any port) yet completes through core's socket", async () => {
    const hostIp = Object.values(networkInterfaces())
      .flat()
      .find((a) => a && a.family === "IPv4" && !a.internal)?.address;
    const targets = [`127.0.0.1:${t.env.address.port}`, "127.0.0.1:5432", `127.0.0.1:${t.env.coreAddress!.port}`, `127.0.0.1:${listenerPort}`];
    if (hostIp) targets.push(`${hostIp}:${listenerPort}`);
    const { last } = await runMode("netprobe", { PROBE_ADDRS: targets.join(",") });
    assert.equal(last.status, InstanceStatus.COMPLETED, last.error);
    const results = dec(last.output);
    for (const target of targets) assert.notEqual(results[target], "connected", `${target} is reachable from the container: ${JSON.stringify(results)}`);
  });

  it("a file made setuid in /data belongs to the mapped uid on the host, not root", async () => {
    const { last, runDir } = await runMode("setuid");
    assert.equal(last.status, InstanceStatus.COMPLETED, last.error);
    assert.deepEqual(dec(last.output), { chmod: "ok" });
    const mapped = createRunners().oci.idMapping();
    const x = await stat(path.join(runDir, "x"));
    assert.equal(x.uid, mapped.uidBase, "owned by container root's host uid");
    assert.notEqual(x.uid, 0);
    const dir = await stat(runDir);
    assert.equal(dir.uid, mapped.uidBase);
    assert.equal(dir.mode & 0o777, 0o700);
  });

  it("keeps DATA_DIR 0711, config.json and logs 0600 root's, and the core socket reachable only through its directory", async () => {
    const { runDir } = await runMode("complete");
    const mode = async (p: string) => (await stat(p)).mode & 0o777;
    assert.equal(await mode(t.dataDir), 0o711);
    assert.equal(await mode(path.join(t.dataDir, "runs")), 0o711);
    assert.equal(await mode(path.join(t.dataDir, "runs", TENANT)), 0o711);
    assert.equal(await mode(path.join(t.dataDir, "images")), 0o711);
    assert.equal(await mode(path.join(t.dataDir, "images", ".staging")), 0o700);
    assert.equal(await mode(path.join(t.dataDir, "sockets")), 0o711);
    for (const f of ["config.json", "stdout.log", "stderr.log"]) {
      const st = await stat(path.join(runDir, f));
      assert.equal(st.mode & 0o777, 0o600, f);
      assert.equal(st.uid, 0, f);
    }
    if (isRoot) {
      const r = await execa("su", ["nobody", "-s", "/bin/sh", "-c", `cat ${path.join(runDir, "config.json")}`], { reject: false });
      assert.notEqual(r.exitCode, 0, "nobody cannot read config.json");
    }
  });

  it("leaves no pasta process or network namespace behind", async () => {
    const { instanceId } = await runMode("complete");
    const containerId = `runtara-${instanceId}`;
    await waitUntil(async () => !(await execa("pgrep", ["-f", `netns/${containerId}`], { reject: false })).stdout.trim(), 10_000);
    assert.equal((await stat(`/run/netns/${containerId}`).catch(() => null)) === null, true);
  });
});

describe("pasta cleanup", { skip: !isRoot ? "needs root (ip netns)" : false }, () => {
  it("stops every namespace's pasta when many namespaces are removed at once", async (t) => {
    const outbound = await detectOutbound();
    if (outbound.kind !== "pasta") return t.skip(outbound.reason);
    const spawner = new Spawner();
    // passt 2023 misses its own deletion now and then when several come at once (1-2 of 32 here).
    const names = Array.from({ length: 32 }, (_, i) => `runtara-pasta-test-${process.pid}-${i}`);
    const alive = async () => (await execa("pgrep", ["-f", `netns/runtara-pasta-test-${process.pid}-`], { reject: false })).stdout.trim();
    try {
      const inodes = await Promise.all(names.map((name) => createPastaNetns(spawner, outbound, name)));
      assert.equal((await alive()).split("\n").length, names.length, "one pasta per namespace");
      await Promise.all(names.map((name, i) => removeNetns(spawner, outbound, name, inodes[i])));
      await waitUntil(async () => (await alive()) === "", 5_000).catch(() => undefined);
      assert.equal(await alive(), "", "no pasta outlives its namespace");
    } finally {
      await Promise.all(names.map((name) => removeNetns(spawner, outbound, name)));
    }
  });

  it("stops, at startup, a pasta whose namespace a crashed environment deleted", async (t) => {
    const outbound = await detectOutbound();
    if (outbound.kind !== "pasta") return t.skip(outbound.reason);
    const name = `runtara-pasta-test-${process.pid}-orphan`;
    // Entries pasta never writes, listed before and after the orphan's file whatever the
    // directory's order: skipped, not the end of the sweep (a directory stopped it once).
    const strays = [`/run/runtara-pasta/${name}-before.pid`, `/run/runtara-pasta/${name}-after.pid`];
    await mkdir(strays[0]!, { recursive: true });
    await createPastaNetns(new Spawner(), outbound, name);
    await mkdir(strays[1]!);
    const pidFile = `/run/runtara-pasta/${name}.pid`;
    const pid = Number((await readFile(pidFile, "utf8")).trim());
    // Stopped, it cannot notice the deletion itself: what ends it is the sweep's SIGTERM.
    process.kill(pid, "SIGSTOP");
    try {
      await execa("ip", ["netns", "delete", name]);
      await stopOrphanedPastas();
      const status = await readFile(`/proc/${pid}/status`, "utf8");
      const pending = BigInt(`0x${/^ShdPnd:\s*([0-9a-f]+)/m.exec(status)?.[1] ?? "0"}`);
      assert.equal((pending >> 14n) & 1n, 1n, "SIGTERM is pending");
      assert.equal((await stat(pidFile).catch(() => null)) === null, true, "its pid file is removed");
      for (const stray of strays) assert.equal((await stat(stray)).isDirectory(), true, `${stray} is left alone`);
    } finally {
      process.kill(pid, "SIGCONT");
      for (const stray of strays) await rm(stray, { recursive: true, force: true });
    }
    await waitUntil(async () => (await stat(`/proc/${pid}`).catch(() => null)) === null, 5_000);
  });
});

describe("SDK over core's Unix socket", () => {
  let t: TestEnvironment;
  before(async () => {
    t = await startEnvironment();
  });
  after(() => t.close());

  it("registers through RUNTARA_CORE_URL=unix:<DATA_DIR>/sockets/core.sock", async () => {
    const instanceId = await insertInstance(t, { tenantId: TENANT });
    const settings = compileSettings(
      readInstanceEnv({
        RUNTARA_INSTANCE_ID: instanceId,
        RUNTARA_TENANT_ID: TENANT,
        RUNTARA_INSTANCE_TOKEN: tokenOf(t, instanceId),
        RUNTARA_CORE_URL: `unix:${path.join(t.dataDir, "sockets", "core.sock")}`,
      }),
    );
    const core = createInstanceClient(createInstanceTransport(settings));
    await core.register({ instanceId });
    const rows = await t.query(`SELECT status FROM instances WHERE instance_id = $1`, [instanceId]);
    assert.equal(rows[0]!.status, "running");
  });
});
