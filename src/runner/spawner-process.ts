/**
 * The spawner: a small long-lived process that creates every process the environment starts
 * (workflows, `runc run`, runc/ip/umoci commands), so the environment's own event loop never
 * forks its large heap. Requests arrive as JSON lines on stdin; answers, exits and command
 * output go back as JSON lines on stdout. It exits when its stdin closes (the environment
 * stopped or died); the detached processes it started keep running and are adopted later.
 */
import { spawn, type ChildProcess, type StdioOptions } from "node:child_process";
import { closeSync, constants, openSync, readdirSync, readFileSync } from "node:fs";
import { writeFile } from "node:fs/promises";
import { createInterface } from "node:readline";
import { readProcStatSync } from "./proc.js";
import type { RunRequest, SpawnerReply, SpawnerRequest, SpawnFailure, SpawnRequest } from "./spawner-protocol.js";

/** Output beyond this per stream is dropped (commands here print a few lines; umoci may print more). */
const MAX_OUTPUT_BYTES = 4 * 1024 * 1024;

/** The environment that started us (it passes its pid: it may be gone before we run). */
const PARENT = Number(process.argv[2]);
if (!Number.isSafeInteger(PARENT) || PARENT <= 1) throw new Error("usage: spawner-process <pid of the environment>");

/** Linux's O_CLOEXEC as /proc/<pid>/fdinfo shows it (octal flags); node:fs does not export it. */
const O_CLOEXEC = 0o2000000;

/**
 * Closes what the environment inherited from its own parent without close-on-exec (a shell's
 * or supervisor's extra descriptors, a CI runner's pipes): every process started here would
 * inherit it too. Node's and libuv's own descriptors are all close-on-exec.
 */
function closeInheritedDescriptors(): void {
  for (const name of readdirSync("/proc/self/fd")) {
    const fd = Number(name);
    if (!(fd > 2)) continue;
    let info: string;
    try {
      info = readFileSync(`/proc/self/fdinfo/${fd}`, "utf8");
    } catch {
      continue; // the directory listing's own descriptor, closed by now
    }
    const flags = /^flags:\s+([0-7]+)/m.exec(info)?.[1];
    if (flags !== undefined && (parseInt(flags, 8) & O_CLOEXEC) === 0) closeSync(fd);
  }
}
closeInheritedDescriptors();

const send = (reply: SpawnerReply) => process.stdout.write(`${JSON.stringify(reply)}\n`);
const failure = (e: unknown): SpawnFailure => {
  const err = e as NodeJS.ErrnoException;
  return { message: err.message ?? String(e), ...(typeof err.code === "string" ? { code: err.code } : {}) };
};

/** The parent's descriptor `fd`, opened again for appending (closed by the caller). */
function parentFd(fd: number | undefined): number | "ignore" {
  if (fd === undefined) return "ignore";
  return openSync(`/proc/${PARENT}/fd/${fd}`, constants.O_WRONLY | constants.O_APPEND | constants.O_NONBLOCK);
}

function startChild(req: SpawnRequest): void {
  const opened: number[] = [];
  let child: ChildProcess;
  try {
    const stdout = parentFd(req.stdoutFd);
    if (typeof stdout === "number") opened.push(stdout);
    const stderr = parentFd(req.stderrFd);
    if (typeof stderr === "number") opened.push(stderr);
    const stdio: StdioOptions = [req.gateCgroupProcs ? "pipe" : "ignore", stdout, stderr];
    child = spawn(req.file, req.args, {
      ...(req.cwd !== undefined ? { cwd: req.cwd } : {}),
      ...(req.env !== undefined ? { env: req.env } : {}),
      detached: req.detached,
      stdio,
      ...(req.uid !== undefined ? { uid: req.uid } : {}),
      ...(req.gid !== undefined ? { gid: req.gid } : {}),
    });
  } catch (e) {
    return void send({ id: req.id, failed: failure(e) });
  } finally {
    for (const fd of opened) closeSync(fd);
  }
  const pid = child.pid;
  if (pid === undefined) {
    // Exec failures (ENOENT, EACCES) come as an 'error' event, not a throw.
    child.once("error", (e) => send({ id: req.id, failed: failure(e) }));
    return;
  }
  // Until this event loop turns, the child cannot be reaped: its /proc entry is there.
  const startTime = readProcStatSync(pid)?.startTime ?? 0n;
  child.on("error", () => {}); // after a successful spawn only stdin errors remain; exit reports the rest
  child.once("exit", (code, signal) => send({ id: req.id, exit: { code, signal } }));
  const reply = () => send({ id: req.id, pid, startTime: String(startTime) });
  const procsFiles = req.gateCgroupProcs;
  if (procsFiles === undefined) return void reply();
  child.stdin?.on("error", () => {}); // the gate died: its exit reports it
  // Off this loop (a cgroup migration can take milliseconds), hierarchies at once: other spawns go on meanwhile.
  void Promise.all(procsFiles.map((procs) => writeFile(procs, String(pid)))).then(
    () => {
      child.stdin?.end("\n");
      reply();
    },
    (e: unknown) => {
      killGroup(pid);
      send({ id: req.id, failed: failure(e) });
    },
  );
}

function runCommand(req: RunRequest): void {
  const out = { stdout: [] as Buffer[], stderr: [] as Buffer[], bytes: [0, 0] };
  let timedOut = false;
  let error: SpawnFailure | undefined;
  const child = spawn(req.file, req.args, { stdio: ["ignore", "pipe", "pipe"] });
  const collect = (which: 0 | 1, list: Buffer[]) => (chunk: Buffer) => {
    if (out.bytes[which]! >= MAX_OUTPUT_BYTES) return;
    out.bytes[which]! += chunk.length;
    list.push(chunk);
  };
  child.stdout?.on("data", collect(0, out.stdout));
  child.stderr?.on("data", collect(1, out.stderr));
  const timer =
    req.timeoutMs !== undefined
      ? setTimeout(() => {
          timedOut = true;
          child.kill("SIGKILL");
        }, req.timeoutMs)
      : undefined;
  child.once("error", (e) => (error = failure(e)));
  child.once("close", (code, signal) => {
    clearTimeout(timer);
    const text = (list: Buffer[]) => Buffer.concat(list).toString("utf8");
    send({ id: req.id, ran: { exitCode: code, signal, stdout: text(out.stdout), stderr: text(out.stderr), timedOut, ...(error ? { error } : {}) } });
  });
}

function killGroup(pid: number): void {
  try {
    process.kill(-pid, "SIGKILL");
  } catch {
    // already gone
  }
}

const lines = createInterface({ input: process.stdin, crlfDelay: Infinity });
send({ id: 0, ready: true });
lines.on("line", (line) => {
  let req: SpawnerRequest;
  try {
    req = JSON.parse(line) as SpawnerRequest;
  } catch {
    return; // only the environment writes here; a torn line cannot be answered
  }
  // Requests still buffered when the environment died are dropped: nobody would record what
  // they start (its instance stays PENDING and is relaunched), and /proc/<parent> would be
  // another process's once we are re-parented.
  if (process.ppid !== PARENT) return;
  if (req.op === "spawn") startChild(req);
  else runCommand(req);
});
// The environment's end of our stdout closed (it died): stop.
process.stdout.on("error", () => process.exit(0));
// The environment is gone: workflows are detached and live on (the next start adopts them).
lines.on("close", () => process.exit(0));
