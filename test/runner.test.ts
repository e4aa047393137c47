/**
 * Runner tests: real processes, a real OCI runtime (runc here), fixtures compiled from C with
 * gcc -static at test time. Without a usable runtime the OCI tests are skipped locally but
 * fail in CI (CI=true), as they must. RUNTARA_OCI_RUNTIME picks the runtime, as in production.
 */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import { chmod, copyFile, mkdir, mkdtemp, readFile, readlink, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { execa } from "execa";
import { FailedPrecondition } from "../src/errors.js";
import {
  DEFAULT_LIMITS,
  LaunchError,
  MIN_LOG_BYTES,
  NativeRunner,
  OciRunner,
  RuntimeUnavailable,
  containerIdFor,
  createRunners,
  instanceIdOfContainer,
  isSameProcess,
  readProcessStartTime,
  stopWithGrace,
  type ExitInfo,
  type LaunchSpec,
  type Runner,
  type RunningProcess,
} from "../src/runner/index.js";
import { decodeUtf8Slice, STDERR_TAIL_BYTES } from "../src/runner/logs.js";
import { parseProcStat } from "../src/runner/proc.js";
import { buildFixtures, type FixtureName } from "./fixtures/build.js";

const fx = await buildFixtures();
const base = await mkdtemp(path.join(tmpdir(), "runtara-runner-test-"));
// Container root is an unprivileged host uid (user namespace): it must traverse to its rootfs
// and run directory, as it does through DATA_DIR (0711).
await chmod(base, 0o711);
/** The runtime under test: auto-detected, or RUNTARA_OCI_RUNTIME as in production. */
const ociRuntime = process.env.RUNTARA_OCI_RUNTIME || undefined;
const runners = createRunners({ oci: { runtime: ociRuntime, adoptPollMs: 50 }, native: { adoptPollMs: 50 } });
const runtimeProblem = await runners.oci.runtime().then(
  () => undefined,
  (e: unknown) => (e as Error).message,
);
const ociSkip = runtimeProblem !== undefined && process.env.CI !== "true" ? `no usable OCI runtime: ${runtimeProblem}` : false;
const runtimeCommand = runtimeProblem === undefined ? (await runners.oci.runtime()).command : "runc";
/** Instance ids of this run start with this, so leftovers can be told apart from others'. */
const prefix = `rt${randomBytes(3).toString("hex")}`;
let counter = 0;

after(async () => {
  await rm(base, { recursive: true, force: true });
});

const images = new Map<FixtureName, string>();
/** An OCI bundle (rootfs/binary) holding the fixture, laid out as the image store does. */
async function bundleOf(name: FixtureName): Promise<string> {
  let bundle = images.get(name);
  if (!bundle) {
    bundle = path.join(base, "images", name, "bundle");
    await mkdir(path.join(bundle, "rootfs"), { recursive: true });
    await copyFile(fx[name], path.join(bundle, "rootfs", "binary"));
    images.set(name, bundle);
  }
  return bundle;
}

async function specFor(
  fixture: FixtureName,
  env: Record<string, string> = {},
  overrides: Partial<LaunchSpec> & { suffix?: string } = {},
): Promise<LaunchSpec> {
  const instanceId = overrides.instanceId ?? `${prefix}-${++counter}${overrides.suffix ?? ""}`;
  const runDir = overrides.runDir ?? path.join(base, "runs", "tenant-a", instanceId);
  await mkdir(runDir, { recursive: true });
  return {
    instanceId,
    tenantId: "tenant-a",
    imageId: fixture,
    binaryPath: fx[fixture],
    bundlePath: await bundleOf(fixture),
    runDir,
    env,
    limits: { ...DEFAULT_LIMITS, memoryBytes: 128 * 1024 * 1024 },
    networkMode: "host",
    ...overrides,
  };
}

async function waitForOutput(runDir: string, pattern: RegExp, timeoutMs = 10_000): Promise<RegExpExecArray> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const text = await readFile(path.join(runDir, "stdout.log"), "utf8").catch(() => "");
    const m = pattern.exec(text);
    if (m) return m;
    if (Date.now() > deadline) throw new Error(`no ${pattern} in ${runDir}/stdout.log after ${timeoutMs} ms: ${JSON.stringify(text)}`);
    await sleep(10);
  }
}

/** key=value lines of the view fixture; env:K=V lines collected separately. */
function parseView(text: string): { fields: Map<string, string>; env: Map<string, string> } {
  const fields = new Map<string, string>();
  const env = new Map<string, string>();
  for (const line of text.split("\n")) {
    if (line.startsWith("env:")) {
      const kv = line.slice(4);
      const eq = kv.indexOf("=");
      env.set(kv.slice(0, eq), kv.slice(eq + 1));
    } else if (line.includes("=")) {
      const eq = line.indexOf("=");
      fields.set(line.slice(0, eq), line.slice(eq + 1));
    }
  }
  return { fields, env };
}

async function runToExit(runner: Runner, spec: LaunchSpec): Promise<{ exit: ExitInfo; proc: RunningProcess; stdout: string }> {
  const proc = await runner.launch(spec);
  const exit = await withTimeout(proc.exited, 15_000, `${spec.instanceId} did not exit`);
  const stdout = await readFile(path.join(spec.runDir, "stdout.log"), "utf8");
  return { exit, proc, stdout };
}

/** Launches, waits for `pattern` in stdout, kills the process; returns the first group. */
async function runToExitAfter(runner: Runner, spec: LaunchSpec, pattern: RegExp): Promise<string> {
  const proc = await runner.launch(spec);
  try {
    return (await waitForOutput(spec.runDir, pattern))[1]!;
  } finally {
    await proc.stop("SIGKILL");
    await withTimeout(proc.exited, 10_000, `${spec.instanceId} did not exit`);
    if (proc.kind === "oci") await assertNothingLeft(proc);
  }
}

async function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([p, new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(what)), ms)))]);
  } finally {
    clearTimeout(timer);
  }
}

/** Gone, or a zombie waiting for init to reap it (a killed orphan is reparented). */
async function processGone(pid: number, timeoutMs = 2_000): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const stat = await readFile(`/proc/${pid}/stat`, "utf8").catch(() => "");
    if (stat === "" || /\) [ZX] /.test(stat)) return true;
    if (Date.now() > deadline) return false;
    await sleep(10);
  }
}

async function containersOfThisRun(): Promise<string[]> {
  const r = await execa(runtimeCommand, ["list", "--format", "json"], { reject: false });
  const list = (JSON.parse(r.stdout || "null") ?? []) as { id: string }[];
  return list.map((c) => c.id).filter((id) => id.startsWith(`runtara-${prefix}`));
}

/** After an OCI run: no container, no cgroup directory, no process left behind. */
async function assertNothingLeft(proc: RunningProcess) {
  assert.deepEqual(await containersOfThisRun(), []);
  for (const h of ["/sys/fs/cgroup/memory", "/sys/fs/cgroup/pids", "/sys/fs/cgroup/unified", "/sys/fs/cgroup"]) {
    assert.equal(existsSync(`${h}/runtara/${proc.containerId}`), false, `cgroup ${h}/runtara/${proc.containerId} left behind`);
  }
  assert.equal(await isSameProcess(proc.pid, proc.startTime), false, `process ${proc.pid} still alive`);
}

const kinds = [
  { name: "native", runner: runners.native as Runner, skip: false as string | false },
  { name: "oci", runner: runners.oci as Runner, skip: ociSkip },
];

for (const { name, runner, skip } of kinds) {
  describe(`${name} runner`, { skip }, () => {
    it("reports exit code 3 and this run's stderr", async () => {
      const spec = await specFor("exit-with", { EXIT_CODE: "3", STDERR_MSG: "boom: ünïcödé ✓" });
      const { exit, proc, stdout } = await runToExit(runner, spec);
      assert.equal(exit.exitCode, 3);
      assert.equal(exit.signal, null);
      assert.equal(exit.stderrTail, "boom: ünïcödé ✓\n");
      assert.equal(stdout, "stdout line\n");
      assert.ok(proc.pid > 0 && proc.startTime > 0n);
      if (name === "oci") await assertNothingLeft(proc);
    });

    it("gives the process exactly spec.env (nothing of the environment process leaks in)", async () => {
      const spec = await specFor("view", { RUNTARA_INSTANCE_ID: "x", "WITH SPACE": "a=b c" });
      const { exit, stdout } = await runToExit(runner, spec);
      assert.equal(exit.exitCode, 0);
      const { fields, env } = parseView(stdout);
      // runc sets HOME=/ when the spec has none (not taken from this process).
      if (name === "oci") assert.equal(env.get("HOME"), "/");
      env.delete("HOME");
      assert.deepEqual(Object.fromEntries(env), { RUNTARA_INSTANCE_ID: "x", "WITH SPACE": "a=b c" });
      assert.equal(fields.get("cwd"), name === "native" ? spec.runDir : "/");
    });

    it("sets RLIMIT_FSIZE, soft and hard, to limits.fileBytes, to the byte", async () => {
      const fileBytes = 1024 * 1024 + 700;
      const spec = await specFor("view", {}, { limits: { ...DEFAULT_LIMITS, memoryBytes: 128 * 1024 * 1024, fileBytes } });
      const { exit, stdout } = await runToExit(runner, spec);
      assert.equal(exit.exitCode, 0);
      assert.equal(parseView(stdout).fields.get("fsize"), `${fileBytes}/${fileBytes}`);
    });

    it("stops a cooperative process with SIGTERM", async () => {
      const spec = await specFor("sleeper");
      const proc = await runner.launch(spec);
      await waitForOutput(spec.runDir, /^ready \d+$/m);
      await proc.stop("SIGTERM");
      const exit = await withTimeout(proc.exited, 10_000, "SIGTERM did not end the sleeper");
      assert.equal(exit.exitCode, 0);
      assert.match(exit.stderrTail, /graceful/);
      if (name === "oci") await assertNothingLeft(proc);
    });

    it("kills a process that ignores SIGTERM with SIGKILL, leaving nothing behind", async () => {
      const spec = await specFor("sleeper", { IGNORE_TERM: "1", FORK: "1" });
      const proc = await runner.launch(spec);
      const child = Number((await waitForOutput(spec.runDir, /^child (\d+)$/m))[1]);
      await waitForOutput(spec.runDir, /^ready \d+$/m);
      await proc.stop("SIGTERM");
      const early = await Promise.race([proc.exited.then(() => "exited"), sleep(300, "running")]);
      assert.equal(early, "running", "SIGTERM is ignored");
      await proc.stop("SIGKILL");
      const exit = await withTimeout(proc.exited, 10_000, "SIGKILL did not end the sleeper");
      if (name === "native") {
        assert.deepEqual([exit.exitCode, exit.signal], [null, "SIGKILL"]);
        // The forked child was in the group: gone too.
        assert.equal(await processGone(child), true, `forked child ${child} survived`);
      } else {
        assert.deepEqual([exit.exitCode, exit.signal], [137, null]);
        await assertNothingLeft(proc);
      }
      assert.equal(await isSameProcess(proc.pid, proc.startTime), false);
      await proc.stop("SIGKILL"); // after exit: a no-op, not an error
    });

    it("caps the stderr tail at 64 KiB, keeping the end, never splitting a character", async () => {
      const spec = await specFor("exit-with", { STDERR_FILL: "99999", STDERR_MSG: "THE-END" });
      const { exit } = await runToExit(runner, spec);
      const bytes = Buffer.byteLength(exit.stderrTail);
      assert.ok(bytes <= STDERR_TAIL_BYTES && bytes > STDERR_TAIL_BYTES - 4, `tail is ${bytes} bytes`);
      assert.ok(exit.stderrTail.endsWith("€€THE-END\n"));
      assert.ok(exit.stderrTail.startsWith("€"));
      assert.ok(!exit.stderrTail.includes("\uFFFD"));
    });

    it("caps each log while the process runs and at its end, keeping the head and the tail", async () => {
      const capped =
        name === "native"
          ? new NativeRunner({ maxLogBytes: MIN_LOG_BYTES })
          : new OciRunner({ runtime: ociRuntime, maxLogBytes: MIN_LOG_BYTES });
      const spec = await specFor("exit-with", { STDERR_FILL: String(3 * MIN_LOG_BYTES), STDERR_MSG: "THE-END", LINGER_MS: "2500" });
      const stderrLog = path.join(spec.runDir, "stderr.log");
      const proc = await capped.launch(spec);
      await waitForOutput(spec.runDir, /^stdout line$/m); // written after all of stderr
      const deadline = Date.now() + 2_000;
      while ((await stat(stderrLog)).size > MIN_LOG_BYTES && Date.now() < deadline) await sleep(50);
      assert.equal(await isSameProcess(proc.pid, proc.startTime), true, "still running");
      assert.equal((await stat(stderrLog)).size, MIN_LOG_BYTES, "capped while running");
      const exit = await withTimeout(proc.exited, 15_000, "did not exit");
      assert.equal(exit.exitCode, 0);
      assert.ok(exit.stderrTail.endsWith("€THE-END\n"));
      const text = await readFile(stderrLog);
      assert.equal(text.length, MIN_LOG_BYTES);
      // (Not at byte 0 exactly: the OCI runtime may log a warning of its own to stderr first.)
      assert.ok(text.subarray(0, 64 * 1024).toString().includes("€".repeat(1000)), "the head is kept");
      assert.match(text.toString("latin1"), /\[runtara: log over its size limit; \d+ bytes of the middle were dropped here; shift \d+\]\n/);
      assert.ok(text.toString().endsWith("€€THE-END\n"), "the tail is kept");
      assert.equal(capped.activeCount(), 0);
    });

    it("appends on relaunch and reports only this run's stderr", async () => {
      const first = await specFor("exit-with", { STDERR_MSG: "first run", EXIT_CODE: "1" });
      assert.equal((await runToExit(runner, first)).exit.stderrTail, "first run\n");
      const second = { ...first, env: { STDERR_MSG: "second run" } };
      const { exit } = await runToExit(runner, second);
      assert.deepEqual([exit.exitCode, exit.stderrTail], [0, "second run\n"]);
      // tini (the OCI runs' init) may log that a signal the runtime forwarded found the workflow already gone.
      const log = (await readFile(path.join(first.runDir, "stderr.log"), "utf8")).replace(/^\[WARN {2}tini \(\d+\)\] Child was dead when forwarding signal\n/gm, "");
      assert.equal(log, "first run\nsecond run\n");
    });

    it("refuses a missing executable clearly, leaving nothing behind", async () => {
      const spec = await specFor("exit-with", {}, { binaryPath: path.join(base, "nope"), bundlePath: path.join(base, "no-bundle") });
      await assert.rejects(runner.launch(spec), (e: unknown) => {
        assert.ok(e instanceof LaunchError);
        assert.equal(e.reason, "binary_not_found");
        assert.match(e.message, name === "native" ? /nope does not exist/ : /no-bundle\/rootfs\/binary does not exist/);
        return true;
      });
      assert.equal(runner.activeCount(), 0);
    });

    it("refuses an unsafe spec", async () => {
      const cases: Partial<LaunchSpec>[] = [
        { instanceId: "../escape" },
        { instanceId: "a".repeat(129) },
        { env: { "A=B": "x" } },
        { env: { A: "x\0y" } },
        { runDir: "relative/dir" },
        { limits: { ...DEFAULT_LIMITS, pidsLimit: 0 } },
      ];
      for (const bad of cases) {
        const spec = { ...(await specFor("exit-with")), ...bad };
        await assert.rejects(runner.launch(spec), (e: unknown) => e instanceof LaunchError && e.reason === "invalid_spec", JSON.stringify(bad));
      }
    });

    it("adopts a process after a restart and sees it end", async () => {
      const spec = await specFor("sleeper", { IGNORE_TERM: "1" });
      const proc = await runner.launch(spec);
      await waitForOutput(spec.runDir, /^ready/m);
      // A fresh runner, as after a restart of the environment, knowing only the stored row.
      const fresh = name === "native" ? new NativeRunner({ adoptPollMs: 50 }) : new OciRunner({ runtime: ociRuntime, adoptPollMs: 50 });
      const adopted = await fresh.adopt({
        instanceId: spec.instanceId,
        pid: proc.pid,
        startTime: proc.startTime,
        containerId: proc.containerId,
        runDir: spec.runDir,
      });
      assert.equal(fresh.activeCount(), 1);
      await adopted.stop("SIGKILL");
      const exit = await withTimeout(adopted.exited, 10_000, "adopted process did not end");
      assert.equal(exit.exitCode, null, "the exit status of a process that is not our child is unknown");
      await withTimeout(proc.exited, 10_000, "original handle did not see the exit");
      assert.equal(fresh.activeCount(), 0);
      if (name === "oci") {
        assert.ok((exit.metrics.cpuUsageUsec ?? 0n) > 0n || (await proc.exited).metrics.cpuUsageUsec! > 0n);
        await assertNothingLeft(proc);
      }
    });
  });
}

describe("native runner specifics", () => {
  it("kills what the process left running in its group when it exits", async () => {
    // The sleeper's forked child ignores SIGTERM; SIGTERM ends only the leader (cooperative).
    const spec = await specFor("sleeper", { FORK: "1" });
    const proc = await runners.native.launch(spec);
    const child = Number((await waitForOutput(spec.runDir, /^child (\d+)$/m))[1]);
    await waitForOutput(spec.runDir, /^ready/m);
    process.kill(proc.pid, "SIGTERM"); // the leader alone, not the group
    await proc.exited;
    assert.equal(await processGone(child), true, `forked child ${child} survived its leader`);
  });

  it("stopWithGrace: SIGTERM, then SIGKILL after the grace", async () => {
    const spec = await specFor("sleeper", { IGNORE_TERM: "1" });
    const proc = await runners.native.launch(spec);
    await waitForOutput(spec.runDir, /^ready/m);
    const t0 = Date.now();
    const exit = await stopWithGrace(proc, 200);
    assert.equal(exit.signal, "SIGKILL");
    assert.ok(Date.now() - t0 >= 190);
  });
});

describe("OCI runner specifics", { skip: ociSkip }, () => {
  it("isolates the container: own pid namespace, no capabilities, read-only root, /data = run dir; fills metrics", async () => {
    const spec = await specFor("view", { ALLOC_MB: "24", BURN_MS: "30" }, { limits: { ...DEFAULT_LIMITS, nofile: 321 } });
    const { exit, proc, stdout } = await runToExit(runners.oci, spec);
    assert.equal(exit.exitCode, 0, exit.stderrTail);
    const { fields } = parseView(stdout);
    assert.equal(fields.get("pids"), "2", "sees only itself and its init in /proc");
    assert.notEqual(fields.get("pid"), "1", "the init is pid 1");
    assert.equal(fields.get("capeff"), "0000000000000000");
    assert.equal(fields.get("capbnd"), "0000000000000000");
    assert.equal(fields.get("capprm"), "0000000000000000");
    assert.equal(fields.get("nonewprivs"), "1");
    assert.equal(fields.get("data_writable"), "yes");
    assert.ok(existsSync(path.join(spec.runDir, "view-was-here")), "/data is the run directory");
    assert.equal(fields.get("root_writable"), "no:Read-only file system");
    assert.equal(fields.get("tmp_writable"), "yes");
    assert.equal(fields.get("devnull"), "yes");
    assert.equal(fields.get("urandom"), "yes");
    assert.equal(fields.get("hostname"), spec.instanceId);
    assert.equal(fields.get("nofile"), "321");
    assert.equal(fields.get("unshare_user"), "Operation not permitted", "no new user namespaces (seccomp)");
    assert.ok(Number(fields.get("netifs")) > 1, "host network by default");
    assert.ok((exit.metrics.memoryPeakBytes ?? 0n) > 24n * 1024n * 1024n, `memory peak ${exit.metrics.memoryPeakBytes}`);
    assert.ok((exit.metrics.cpuUsageUsec ?? 0n) >= 20_000n, `cpu ${exit.metrics.cpuUsageUsec}`);
    await assertNothingLeft(proc);
  });

  it("network none leaves only loopback", async () => {
    const spec = await specFor("view", {}, { networkMode: "none" });
    const { stdout } = await runToExit(runners.oci, spec);
    assert.equal(parseView(stdout).fields.get("netifs"), "1");
  });

  it("runs two instances whose ids share a long prefix side by side", async () => {
    const shared = `${prefix}-shared-prefix-0123456789abcdef:`;
    const specs = await Promise.all([
      specFor("sleeper", {}, { instanceId: `${shared}a` }),
      specFor("sleeper", {}, { instanceId: `${shared}b` }),
    ]);
    const procs = await Promise.all(specs.map((s) => runners.oci.launch(s)));
    await Promise.all(specs.map((s) => waitForOutput(s.runDir, /^ready/m)));
    assert.deepEqual(procs.map((p) => p.containerId), [`runtara-${shared.replace(":", "+")}a`, `runtara-${shared.replace(":", "+")}b`]);
    assert.equal((await containersOfThisRun()).length, 2);
    await procs[0]!.stop("SIGTERM");
    assert.equal((await procs[0]!.exited).exitCode, 0);
    assert.equal(await isSameProcess(procs[1]!.pid, procs[1]!.startTime), true, "the other one is untouched");
    await procs[1]!.stop("SIGKILL");
    await procs[1]!.exited;
    for (const p of procs) await assertNothingLeft(p);
  });

  it("pid and start time name the container's init (tini, parent of the workflow binary) on the host", async () => {
    const spec = await specFor("sleeper");
    const proc = await runners.oci.launch(spec);
    await waitForOutput(spec.runDir, /^ready/m);
    assert.equal(await readProcessStartTime(proc.pid), proc.startTime);
    assert.match(await readlink(`/proc/${proc.pid}/exe`), /\.runtara-init$/);
    const children = (await readFile(`/proc/${proc.pid}/task/${proc.pid}/children`, "utf8")).trim().split(" ");
    assert.equal(children.length, 1);
    assert.match(await readlink(`/proc/${children[0]}/exe`), /binary$/);
    await proc.stop("SIGKILL");
    await proc.exited;
    await assertNothingLeft(proc);
  });

  it("init: a workflow without a SIGTERM handler ends on SIGTERM (it is not pid 1)", async () => {
    const spec = await specFor("sleeper", { TERM_DEFAULT: "1" });
    const proc = await runners.oci.launch(spec);
    await waitForOutput(spec.runDir, /^ready/m);
    await proc.stop("SIGTERM");
    const exit = await withTimeout(proc.exited, 5_000, "SIGTERM did not end a workflow with the default disposition");
    assert.equal(exit.exitCode, 128 + 15);
    await assertNothingLeft(proc);
  });

  it("init: one that ignores SIGTERM, and its child, end by SIGTERM, grace, SIGKILL", async () => {
    const spec = await specFor("sleeper", { IGNORE_TERM: "1", FORK: "1" });
    const proc = await runners.oci.launch(spec);
    await waitForOutput(spec.runDir, /^ready/m);
    const t0 = Date.now();
    const exit = await stopWithGrace(proc, 300);
    const ms = Date.now() - t0;
    assert.ok(ms >= 290 && ms < 5_000, `stopped after ${ms} ms`);
    assert.equal(exit.exitCode, 137);
    await assertNothingLeft(proc);
  });

  it("init: orphaned grandchildren are reaped (no zombies); without an init they are not", async () => {
    const withInit = await runToExitAfter(runners.oci, await specFor("sleeper", { ORPHANS: "5" }), /^zombies (\d+)$/m);
    assert.equal(withInit, "0");
    const noInit = new OciRunner({ runtime: ociRuntime, initPath: path.join(base, "no-such-init") });
    assert.equal(await noInit.init(), undefined);
    const withoutInit = await runToExitAfter(noInit, await specFor("sleeper", { ORPHANS: "5" }), /^zombies (\d+)$/m);
    assert.equal(withoutInit, "5", "the fixture does make zombies when nothing reaps them");
  });

  it("reports a container the runtime cannot create as a LaunchError, leaving nothing behind", async () => {
    // A rootfs whose /tmp mount point is a file: the runtime fails while creating the container.
    const bundle = path.join(base, "images", "broken", "bundle");
    await mkdir(path.join(bundle, "rootfs"), { recursive: true });
    await copyFile(fx["exit-with"], path.join(bundle, "rootfs", "binary"));
    await writeFile(path.join(bundle, "rootfs", "tmp"), "not a directory");
    const spec = await specFor("exit-with", {}, { bundlePath: bundle });
    await assert.rejects(runners.oci.launch(spec), (e: unknown) => {
      assert.ok(e instanceof LaunchError, String(e));
      assert.equal(e.reason, "start_failed");
      assert.match(e.message, /could not start container/);
      assert.match(e.stderr, /tmp/);
      return true;
    });
    assert.deepEqual(await containersOfThisRun(), []);
    assert.equal(existsSync(`/sys/fs/cgroup/memory/runtara/${containerIdFor(spec.instanceId)}`), false);
    assert.equal(runners.oci.activeCount(), 0);
  });

  it("reports an executable that cannot be exec'd as an exit with the runtime's message", async () => {
    // A script whose interpreter is not in the rootfs: the container starts, exec fails.
    const bundle = path.join(base, "images", "script", "bundle");
    await mkdir(path.join(bundle, "rootfs"), { recursive: true });
    await writeFile(path.join(bundle, "rootfs", "binary"), "#!/bin/sh\necho hi\n", { mode: 0o755 });
    const { exit, proc } = await runToExit(runners.oci, await specFor("exit-with", {}, { bundlePath: bundle }));
    assert.notEqual(exit.exitCode, 0);
    assert.match(exit.stderrTail, /exec \/binary failed: no such file or directory/i, "tini's message");
    await assertNothingLeft(proc);
  });

  it("cleans up after a runtime that does not start the container in time", async () => {
    const impatient = new OciRunner({ runtime: ociRuntime, startTimeoutMs: 1 });
    const spec = await specFor("sleeper");
    await assert.rejects(impatient.launch(spec), (e: unknown) => e instanceof LaunchError && e.reason === "start_timeout");
    assert.deepEqual(await containersOfThisRun(), []);
    assert.equal(existsSync(`/sys/fs/cgroup/memory/runtara/${containerIdFor(spec.instanceId)}`), false);
    // The instance can be launched again under the same container id.
    const proc = await runners.oci.launch(spec);
    await waitForOutput(spec.runDir, /^ready/m);
    await proc.stop("SIGKILL");
    await proc.exited;
    await assertNothingLeft(proc);
  });

  it("deletes the container when the runtime process dies under it", async () => {
    const spec = await specFor("sleeper");
    const proc = await runners.oci.launch(spec);
    await waitForOutput(spec.runDir, /^ready/m);
    const stat = parseProcStat(await readFile(`/proc/${proc.pid}/stat`, "utf8"));
    process.kill(stat!.ppid, "SIGKILL"); // the runtime, parent of the container's init
    const exit = await withTimeout(proc.exited, 10_000, "no exit after the runtime died");
    assert.deepEqual([exit.exitCode, exit.signal], [null, "SIGKILL"]);
    assert.ok((exit.metrics.cpuUsageUsec ?? 0n) > 0n);
    await assertNothingLeft(proc);
  });

  it("answers RuntimeUnavailable (a FailedPrecondition) naming a missing runtime", async () => {
    const runner = new OciRunner({ runtime: "runtara-no-such-runtime" });
    await assert.rejects(runner.launch(await specFor("exit-with")), (e: unknown) => {
      assert.ok(e instanceof RuntimeUnavailable);
      assert.ok(e instanceof FailedPrecondition);
      assert.match(e.message, /runtara-no-such-runtime is not installed/);
      return true;
    });
  });
});

describe("runner helpers", () => {
  it("container ids: whole instance id, ':' mapped without collisions", () => {
    assert.equal(containerIdFor("abc"), "runtara-abc");
    assert.equal(containerIdFor("tenant:job.1_x-y"), "runtara-tenant+job.1_x-y");
    assert.notEqual(containerIdFor("12345678-a"), containerIdFor("12345678-b"));
    assert.equal(instanceIdOfContainer(containerIdFor("a:b:c")), "a:b:c");
    assert.equal(instanceIdOfContainer("other-abc"), undefined);
    assert.throws(() => containerIdFor("a/b"));
  });

  it("reads /proc/<pid>/stat after the last ')'", async () => {
    const st = parseProcStat("42 (a) b (c) S 7 42 42 0 -1 4194304 1 0 0 0 0 0 0 0 20 0 1 0 987654 0 0");
    assert.deepEqual(st, { state: "S", ppid: 7, pgid: 42, startTime: 987654n });
    const mine = await readProcessStartTime(process.pid);
    assert.ok(mine !== null && mine > 0n);
    assert.equal(await isSameProcess(process.pid, mine), true);
    assert.equal(await isSameProcess(process.pid, mine + 1n), false);
    assert.equal(await readProcessStartTime(2 ** 22 + 1), null);
  });

  it("decodes a cut UTF-8 tail without broken characters", () => {
    const bytes = Buffer.from("€uro ✓ done", "utf8");
    assert.equal(decodeUtf8Slice(bytes.subarray(1), true), "uro ✓ done");
    assert.equal(decodeUtf8Slice(bytes.subarray(2), true), "uro ✓ done");
    assert.equal(decodeUtf8Slice(bytes.subarray(0, 7), false), "€uro ");
    assert.equal(decodeUtf8Slice(bytes.subarray(0, 8), false), "€uro ");
    assert.equal(decodeUtf8Slice(bytes, false), "€uro ✓ done");
  });

  it("leaves no process running", () => {
    assert.equal(runners.native.activeCount(), 0);
    assert.equal(runners.oci.activeCount(), 0);
  });
});
