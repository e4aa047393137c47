/**
 * The helpers that fork for the runners (runtara-launcher for workflows and `runc run`, the
 * spawner process for short commands), so this process never does: the launcher can be killed
 * -9 without losing a running process's end or the next launch; both go away with us.
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { once } from "node:events";
import { createInterface } from "node:readline";
import { createRequire, syncBuiltinESMExports } from "node:module";
import { fileURLToPath } from "node:url";
import { mkdir, mkdtemp, readdir, readFile, rm, rmdir, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { DEFAULT_LIMITS, NativeRunner, Spawner, createRunners, isSameProcess, type LaunchSpec } from "../src/runner/index.js";
import { detectCgroupLayout, removeCgroup } from "../src/runner/cgroup.js";
import { CgroupPlacement } from "../src/runner/process-cgroup.js";
import { launchFrame } from "../src/runner/launcher-protocol.js";
import { buildFixtures } from "./fixtures/build.js";

const fx = await buildFixtures();
const LAUNCHER = fileURLToPath(new URL("../dist/launcher/runtara-launcher", import.meta.url));
const base = await mkdtemp(path.join(tmpdir(), "runtara-spawner-test-"));
after(() => rm(base, { recursive: true, force: true }));
let counter = 0;

async function spec(fixture: "sleeper" | "exit-with", env: Record<string, string> = {}): Promise<LaunchSpec> {
  const instanceId = `sp-${process.pid}-${++counter}`;
  const runDir = path.join(base, instanceId);
  await mkdir(runDir, { recursive: true });
  return { instanceId, tenantId: "t", binaryPath: fx[fixture], runDir, env, limits: DEFAULT_LIMITS, networkMode: "host" };
}

async function waitFor(file: string, pattern: RegExp): Promise<RegExpExecArray> {
  for (let i = 0; i < 500; i++) {
    const m = pattern.exec(await readFile(file, "utf8").catch(() => ""));
    if (m) return m;
    await sleep(10);
  }
  throw new Error(`no ${pattern} in ${file}`);
}

/** Counts child_process.spawn calls made in this process while `body` runs. */
async function spawnsDuring(body: () => Promise<void>): Promise<string[]> {
  const cp = createRequire(import.meta.url)("node:child_process") as typeof import("node:child_process");
  const original = cp.spawn;
  const calls: string[] = [];
  cp.spawn = ((file: string, ...rest: unknown[]) => {
    calls.push(file);
    return (original as (...a: unknown[]) => unknown)(file, ...rest);
  }) as typeof cp.spawn;
  syncBuiltinESMExports();
  try {
    await body();
  } finally {
    cp.spawn = original;
    syncBuiltinESMExports();
  }
  return calls;
}

describe("spawner", () => {
  it("launches and runner commands fork nothing in this process but its two helpers", async () => {
    const runners = createRunners();
    try {
      const calls = await spawnsDuring(async () => {
        for (let i = 0; i < 3; i++) {
          const proc = await runners.native.launch(await spec("exit-with", { EXIT_CODE: String(i + 3) }));
          assert.equal((await proc.exited).exitCode, i + 3);
        }
        await runners.oci.runtime().catch(() => undefined); // `<runtime> --version` and the probe run
      });
      assert.deepEqual(calls, [LAUNCHER, process.execPath], "two spawns: the launcher, then the spawner process");
    } finally {
      runners.close();
    }
  });

  it("a kill -9 of the launcher loses neither a running process's end nor the next launch", async () => {
    const spawner = new Spawner();
    const runner = new NativeRunner({ spawner });
    try {
      const s = await spec("sleeper");
      const proc = await runner.launch(s);
      await waitFor(path.join(s.runDir, "stdout.log"), /ready \d+/);
      const launcherPid = spawner.launcherPid!;
      process.kill(launcherPid, "SIGKILL");
      while (spawner.launcherPid === launcherPid) await sleep(10);
      assert.ok(await isSameProcess(proc.pid, proc.startTime), "the workflow outlives its launcher");

      // A new launcher starts with the next launch, and its exit codes arrive as before.
      const next = await runner.launch(await spec("exit-with", { EXIT_CODE: "7" }));
      assert.notEqual(spawner.launcherPid, launcherPid);
      assert.equal((await next.exited).exitCode, 7);

      // The orphan's end is still seen (by pid: its code is unknown), and its cleanup runs.
      await proc.stop("SIGTERM");
      const info = await proc.exited;
      assert.equal(info.exitCode, null);
      assert.match(info.stderrTail, /graceful/);
      assert.equal(runner.activeCount(), 0);
    } finally {
      spawner.close();
    }
  });

  it("an exit read together with its pid (this loop was busy) is not lost", async () => {
    const spawner = new Spawner();
    try {
      await (await spawner.spawn({ file: "/bin/true", args: [] })).exited; // the launcher is up
      for (let i = 0; i < 5; i++) {
        const pending = spawner.spawn({ file: "/bin/true", args: [], detached: true });
        const until = Date.now() + 200;
        while (Date.now() < until); // pid and exit lines arrive in one read
        const child = await pending;
        assert.deepEqual(await child.exited, { code: 0, signal: null });
      }
    } finally {
      spawner.close();
    }
  });

  it("a launcher that answered while this loop was held up past the deadline is not taken for hung", async () => {
    const spawner = new Spawner({ spawnDeadlineMs: 200 });
    try {
      await (await spawner.spawn({ file: "/bin/true", args: [] })).exited; // the launcher is up
      const launcherPid = spawner.launcherPid;
      const pending = spawner.spawn({ file: "/bin/sh", args: ["-c", "exit 5"] });
      for (let i = 0; i < 3; i++) await Promise.resolve(); // its deadline is armed (a microtask), its answer not yet read
      const until = Date.now() + 600;
      while (Date.now() < until); // the answer arrives meanwhile; the deadline passes
      const child = await pending;
      assert.equal((await child.exited).code, 5, "its exit code came from the launcher");
      await sleep(300); // a kill's end would be seen by now
      assert.equal(spawner.launcherPid, launcherPid, "the launcher was not killed");
      assert.ok(existsPid(launcherPid!), "the launcher lives");
    } finally {
      spawner.close();
    }
  });

  it("a hung launcher is killed at the deadline and replaced; a closed one that hangs is killed", async () => {
    const spawner = new Spawner({ spawnDeadlineMs: 300 });
    try {
      await (await spawner.spawn({ file: "/bin/true", args: [] })).exited;
      const hung = spawner.launcherPid!;
      process.kill(hung, "SIGSTOP");
      await assert.rejects(spawner.spawn({ file: "/bin/true", args: [] }), /launcher process exited/);
      const next = await spawner.spawn({ file: "/bin/sh", args: ["-c", "exit 4"] });
      assert.notEqual(spawner.launcherPid, hung);
      assert.equal((await next.exited).code, 4);
      process.kill(spawner.launcherPid!, "SIGSTOP");
      const closing = spawner.launcherPid!;
      spawner.close();
      for (let i = 0; i < 300 && existsPid(closing); i++) await sleep(10);
      assert.equal(existsPid(closing), false, "a stopped launcher does not outlive close()");
    } finally {
      spawner.close();
    }
  });

  it("starts nothing its environment asked for once the environment is dead", async () => {
    const marker = path.join(base, `started-${process.pid}`);
    // A stand-in environment: starts the launcher and, once we froze it (cgroup freezer: no
    // job-control stop, which would end it by the orphaned group's SIGHUP instead), asks for a
    // spawn and dies (kill -9). A process of its own keeps the launcher's stdin open, so the
    // launcher reads the request, not its end, once thawed: only the dead parent can stop it.
    const frame = launchFrame({ id: 1, file: "/bin/sh", args: ["-c", 'echo > "$0"', marker], detached: true })!;
    const script = `
      const { spawn } = require("node:child_process");
      const launcher = spawn(${JSON.stringify(LAUNCHER)}, [String(process.pid)], { stdio: ["pipe", "ignore", "inherit"] });
      spawn("/bin/sleep", ["10"], { stdio: ["ignore", "ignore", "ignore", launcher.stdin], detached: true }).unref();
      launcher.on("spawn", () => process.stdout.write(launcher.pid + "\\n"));
      process.stdin.once("data", () => launcher.stdin.write(Buffer.from(${JSON.stringify(frame.toString("base64"))}, "base64"), () => process.kill(process.pid, "SIGKILL")));`;
    const standIn = spawn(process.execPath, ["-e", script], { stdio: ["pipe", "pipe", "inherit"] });
    const [line] = (await once(createInterface({ input: standIn.stdout }), "line")) as [string];
    const launcherPid = Number(line);
    const freezer = path.join((await detectCgroupLayout()).unified!, `runtara-test-freeze-${process.pid}`);
    await mkdir(freezer);
    try {
      await writeFile(path.join(freezer, "cgroup.procs"), String(launcherPid));
      await writeFile(path.join(freezer, "cgroup.freeze"), "1");
      standIn.stdin.write("go\n");
      await once(standIn, "exit");
      await writeFile(path.join(freezer, "cgroup.freeze"), "0");
      for (let i = 0; i < 300 && existsPid(launcherPid); i++) await sleep(10);
      assert.equal(existsPid(launcherPid), false, "the launcher left with its environment");
      await sleep(200);
      assert.equal(existsSync(marker), false, "nothing started for a dead environment");
    } finally {
      if (existsPid(launcherPid)) process.kill(launcherPid, "SIGKILL");
      await writeFile(path.join(freezer, "cgroup.freeze"), "0").catch(() => {});
      for (let i = 0; i < 100 && !(await rmdir(freezer).then(() => true, () => false)); i++) await sleep(20);
    }
  });

  it("what it starts inherits no descriptor the environment got from its own parent", async () => {
    const listing = path.join(base, `fds-${process.pid}`);
    // A stand-in environment that inherited fd 77 without close-on-exec (bash's `exec 77>file`,
    // a supervisor's or CI runner's pipes); it starts the launcher and asks it for one process.
    const frame = launchFrame({ id: 1, file: "/bin/sh", args: ["-c", 'exec >"$0"; for f in /proc/$$/fd/*; do echo "${f##*/}"; done', listing], detached: false })!;
    const script = `
      const { spawn } = require("node:child_process");
      const launcher = spawn(${JSON.stringify(LAUNCHER)}, [String(process.pid)], { stdio: ["pipe", "pipe", "inherit"] });
      launcher.stdout.on("data", (d) => { if (String(d).includes("X 1 ")) process.exit(0); });
      launcher.stdin.write(Buffer.from(${JSON.stringify(frame.toString("base64"))}, "base64"));`;
    const standIn = spawn("/bin/bash", ["-c", 'exec 77>/dev/null; exec "$0" -e "$1"', process.execPath, script], { stdio: ["ignore", "ignore", "inherit"] });
    const code = await new Promise((resolve) => standIn.once("exit", resolve));
    assert.equal(code, 0);
    const fds = (await readFile(listing, "utf8")).split("\n").filter((l) => l !== "");
    // 0-2 and the listing's own directory; the inherited descriptor (77) must not be there.
    assert.deepEqual(fds.slice(0, 3), ["0", "1", "2"]);
    assert.ok(!fds.includes("77"), `fd 77 reached the process: ${fds.join(" ")}`);
  });

  it("nor does a command the spawner process runs", async () => {
    const listing = path.join(base, `cmd-fds-${process.pid}`);
    const entry = fileURLToPath(new URL("../src/runner/spawner-process.ts", import.meta.url));
    // The same stand-in, asking the spawner process for a command (pasta, which daemonizes, is one).
    const request = { id: 1, file: "/bin/sh", args: ["-c", 'exec >"$0"; for f in /proc/$$/fd/*; do echo "${f##*/}"; done', listing] };
    const script = `
      const { spawn } = require("node:child_process");
      const helper = spawn(process.execPath, ["--import", "tsx", ${JSON.stringify(entry)}], { stdio: ["pipe", "pipe", "inherit"] });
      helper.stdout.on("data", (d) => { if (String(d).includes('"ran"')) process.exit(0); });
      helper.stdin.write(${JSON.stringify(JSON.stringify(request))} + "\\n");`;
    const standIn = spawn("/bin/bash", ["-c", 'exec 77>/dev/null; exec "$0" -e "$1"', process.execPath, script], { stdio: ["ignore", "ignore", "inherit"], cwd: path.dirname(entry) });
    assert.equal(await new Promise((resolve) => standIn.once("exit", resolve)), 0);
    const fds = (await readFile(listing, "utf8")).split("\n").filter((l) => l !== "");
    assert.deepEqual(fds.slice(0, 3), ["0", "1", "2"]);
    assert.ok(!fds.includes("77"), `fd 77 reached the command: ${fds.join(" ")}`);
  });

  it("says which step of a start failed, with its errno, and runs nothing of it", async () => {
    const spawner = new Spawner();
    try {
      const marker = path.join(base, `ran-${process.pid}`);
      const touch = { file: "/bin/sh", args: ["-c", 'echo > "$0"', marker] };
      await assert.rejects(spawner.spawn({ file: "/nonexistent/workflow", args: [] }), { code: "ENOENT", message: "exec /nonexistent/workflow: no such file or directory" });
      const cgroup = (parent: string) => ({ parents: [parent], prefix: "t-", limits: [], reads: [], prefork: 0 });
      await assert.rejects(spawner.spawn({ ...touch, cgroup: cgroup(path.join(base, "no-parent")) }), { code: "ENOENT", message: /^could not create its cgroup: / });
      // A directory that is not a cgroup has no cgroup.procs to join.
      await assert.rejects(spawner.spawn({ ...touch, cgroup: cgroup(base) }), { code: "ENOENT", message: /^could not join its cgroup: / });
      await assert.rejects(spawner.spawn({ ...touch, cwd: path.join(base, "no-dir") }), { code: "ENOENT", message: /^could not enter its working directory: / });
      await assert.rejects(spawner.spawn({ ...touch, env: { A: "x\0y" } }), { code: "EINVAL", message: /NUL byte/ });
      // An errno libuv has no name for.
      const garbage = path.join(base, "not-an-executable");
      await writeFile(garbage, "neither ELF nor a script\n", { mode: 0o755 });
      await assert.rejects(spawner.spawn({ file: garbage, args: [] }), { code: "ENOEXEC", message: `exec ${garbage}: exec format error` });
      assert.equal(existsSync(marker), false, "a failed start ran its program");
      // The launcher lives on: the next start works, and a signal's name comes back.
      const launcherPid = spawner.launcherPid;
      const killed = await spawner.spawn({ file: "/bin/sh", args: ["-c", "kill -TERM $$"] });
      assert.deepEqual(await killed.exited, { code: null, signal: "SIGTERM" });
      assert.equal(spawner.launcherPid, launcherPid);
    } finally {
      spawner.close();
    }
  });

  it("runs commands: output, exit code, a missing program, a timeout", async () => {
    const spawner = new Spawner();
    try {
      const ok = await spawner.run("/bin/sh", ["-c", "echo out; echo err >&2; exit 3"]);
      assert.deepEqual([ok.stdout, ok.stderr, ok.exitCode, ok.failed], ["out\n", "err\n", 3, true]);
      assert.match(ok.message, /exited with 3/);
      const missing = await spawner.run("/nonexistent/tool", []);
      assert.equal(missing.code, "ENOENT");
      assert.ok(missing.failed);
      const t0 = performance.now();
      const slow = await spawner.run("/bin/sleep", ["10"], { timeoutMs: 200 });
      assert.ok(slow.timedOut && slow.failed && performance.now() - t0 < 5_000);
    } finally {
      spawner.close();
    }
  });

  it("a spawner process that hangs while a command without a timeout runs is killed, and the command fails", async () => {
    const spawner = new Spawner({ spawnDeadlineMs: 300 });
    try {
      assert.equal((await spawner.run("/bin/true", [])).exitCode, 0); // it is up
      const hung = spawner.spawnerPid!;
      const running = spawner.run("/bin/sleep", ["5"]);
      await sleep(100);
      process.kill(hung, "SIGSTOP");
      const t0 = performance.now();
      const result = await Promise.race([running, sleep(8_000).then(() => assert.fail("the command hung with its spawner"))]);
      assert.ok(result.failed && /spawner process exited/.test(result.message), result.message);
      assert.ok(performance.now() - t0 < 4_000, "failed by the pings' deadline, not at the command's end");
      assert.equal((await spawner.run("/bin/true", [])).exitCode, 0);
      assert.notEqual(spawner.spawnerPid, hung);
    } finally {
      spawner.close();
    }
  });

  it("when its launcher dies, removes what that generation left and no run accounts for, keeping its runs", async () => {
    const spawner = new Spawner();
    const owner = `gen${process.pid}`;
    const runner = new NativeRunner({ spawner, owner });
    const unified = (await detectCgroupLayout()).unified!;
    const ours = async () => (await readdir(`${unified}/runtara`)).filter((n) => n.startsWith(`native-${owner}-`));
    const s = await spec("sleeper");
    const proc = await runner.launch(s);
    try {
      await waitFor(path.join(s.runDir, "stdout.log"), /ready \d+/);
      for (let i = 0; i < 200 && (await ours()).length < 3; i++) await sleep(10);
      const own = /^0::\/runtara\/(.+)$/m.exec(await readFile(`/proc/${proc.pid}/cgroup`, "utf8"))![1]!;
      const generation = own.slice(`native-${owner}-`.length).split("-")[0]!;
      // A start of that generation whose answer never arrived: a process in a cgroup no run accounts for.
      const stray = spawn("/bin/sleep", ["300"], { detached: true, stdio: "ignore" });
      const strayDir = `${unified}/runtara/native-${owner}-${generation}-0000000000000000`;
      await mkdir(strayDir);
      await writeFile(`${strayDir}/cgroup.procs`, String(stray.pid));
      process.kill(spawner.launcherPid!, "SIGKILL"); // no clean-up of its own: what it forked ahead dies with it
      for (let i = 0; i < 300 && ((await ours()).length > 1 || existsPid(stray.pid!)); i++) await sleep(10);
      assert.deepEqual(await ours(), [own], "only the tracked run's cgroup is left");
      assert.equal(stray.exitCode !== null || stray.signalCode !== null || !existsPid(stray.pid!), true, "the unaccounted process was killed");
      assert.ok(await isSameProcess(proc.pid, proc.startTime), "the tracked run goes on");
      // The next start gets a new launcher.
      const next = await runner.launch(await spec("exit-with", { EXIT_CODE: "0" }));
      await next.exited;
    } finally {
      await proc.stop("SIGKILL");
      await proc.exited;
      spawner.close();
    }
  });

  it("ends a run's cgroup itself: what the run left is killed, the metric files read, the cgroup gone when the exit is told", async () => {
    const spawner = new Spawner();
    const layout = await detectCgroupLayout();
    const placement = await CgroupPlacement.prepare(layout, "/runtara");
    const owner = `end${process.pid}`;
    try {
      const leftover = path.join(base, `leftover-${process.pid}`);
      // The run leaves a process in a session of its own (no group kill reaches it), and uses memory and CPU.
      const script = `/usr/bin/setsid /bin/sleep 300 & echo $! > "$0"; i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done; exit 3`;
      const child = await spawner.spawn({ file: "/bin/sh", args: ["-c", script, leftover], detached: true, cgroup: placement.setup(`native-${owner}-`, DEFAULT_LIMITS, 0) });
      assert.ok(child.cgroup, "it got a cgroup");
      const exit = await child.exited;
      assert.equal(exit.code, 3);
      assert.equal(exit.cgroupReads?.length, 2, "memory and CPU were read");
      const metrics = placement.metricsFrom(exit.cgroupReads!);
      assert.ok((metrics.memoryPeakBytes ?? 0n) > 0n && (metrics.cpuUsageUsec ?? 0n) > 0n, `metrics ${JSON.stringify(metrics, (_, v: unknown) => (typeof v === "bigint" ? String(v) : v))}`);
      const pid = Number((await readFile(leftover, "utf8")).trim());
      const state = await readFile(`/proc/${pid}/stat`, "utf8").then((t) => t.slice(t.lastIndexOf(")") + 2, t.lastIndexOf(")") + 3), () => "gone");
      assert.ok(state === "gone" || state === "Z", `the process the run left in its cgroup was killed (state ${state})`);
      for (const mount of placement.mounts) assert.equal(existsSync(`${mount}/runtara/${child.cgroup}`), false, `the cgroup is gone from ${mount}`);
    } finally {
      spawner.close();
    }
  });

  it("a cgroup the launcher had to leave is removed once it can be", async () => {
    const spawner = new Spawner();
    const owner = `left${process.pid}`;
    const runner = new NativeRunner({ spawner, owner, leftCgroupRetryMs: 100 });
    const unified = (await detectCgroupLayout()).unified!;
    try {
      const s = await spec("sleeper");
      const proc = await runner.launch(s);
      await waitFor(path.join(s.runDir, "stdout.log"), /ready \d+/);
      const own = /^0::(\/runtara\/.+)$/m.exec(await readFile(`/proc/${proc.pid}/cgroup`, "utf8"))![1]!;
      // A child cgroup keeps it from being removed (as a process stuck in the kernel would).
      const blocker = `${unified}${own}/blocker`;
      await mkdir(blocker);
      await proc.stop("SIGKILL");
      await proc.exited; // the launcher tried for 2 s and left it
      assert.ok(existsSync(`${unified}${own}`), "the cgroup was left");
      await rmdir(blocker);
      for (let i = 0; i < 300 && existsSync(`${unified}${own}`); i++) await sleep(20);
      assert.equal(existsSync(`${unified}${own}`), false, "removed once it could be");
    } finally {
      spawner.close();
    }
  });

  it("exits when this side closes; what it started keeps running, what it forked ahead goes", async () => {
    const spawner = new Spawner();
    const owner = `sp${process.pid}`;
    const runner = new NativeRunner({ spawner, owner });
    const s = await spec("sleeper");
    const proc = await runner.launch(s);
    await waitFor(path.join(s.runDir, "stdout.log"), /ready \d+/);
    // The run's cgroup, and those of the processes the launcher forked ahead for the next starts.
    const unified = (await detectCgroupLayout()).unified!;
    const ours = async () => (await readdir(`${unified}/runtara`)).filter((n) => n.startsWith(`native-${owner}-`));
    for (let i = 0; i < 200 && (await ours()).length < 3; i++) await sleep(10);
    assert.equal((await ours()).length, 3, "the run's cgroup and two forked ahead");
    const launcherPid = spawner.launcherPid!;
    runner.detachAll();
    spawner.close();
    for (let i = 0; i < 200 && existsPid(launcherPid); i++) await sleep(10);
    assert.equal(existsPid(launcherPid), false, "the launcher is gone");
    assert.ok(await isSameProcess(proc.pid, proc.startTime), "the workflow still runs");
    for (let i = 0; i < 200 && (await ours()).length > 1; i++) await sleep(10);
    assert.equal((await ours()).length, 1, "the processes forked ahead and their cgroups are gone");
    // Detached, its cgroup is nobody's to remove but ours once it is killed.
    const cgroup = /^0::(\/.+)$/m.exec(await readFile(`/proc/${proc.pid}/cgroup`, "utf8"))?.[1];
    process.kill(-proc.pid, "SIGKILL");
    if (cgroup?.startsWith("/runtara/")) await removeCgroup((await detectCgroupLayout()).hierarchies, cgroup);
    // Afterwards: launches are refused, commands (cleanups of runs ending now) fail without throwing.
    await assert.rejects(spawner.spawn({ file: "/bin/true", args: [] }), /closed/);
    const late = await spawner.run("/bin/true", []);
    assert.ok(late.failed && /stopping/.test(late.message));
  });
});

function existsPid(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}
