/**
 * The spawner: a small long-lived process that creates every process the environment starts
 * (workflows, `runc run`, runc/ip/umoci commands), so the environment's own event loop never
 * forks its large heap. Requests arrive as JSON lines on stdin; answers, exits and command
 * output go back as JSON lines on stdout. Long-lived processes are forked by its own helper,
 * runtara-launcher (launcher.c), which is smaller still and prepares each child before exec;
 * short commands, whose output is read here, are spawned by Node. It exits when its stdin
 * closes (the environment stopped or died), or when the launcher died (the environment then
 * watches the launcher's children by pid); the detached processes started live on and are
 * adopted later.
 */
import { spawn } from "node:child_process";
import { closeSync, readdirSync, readFileSync } from "node:fs";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { getSystemErrorMap } from "node:util";
import { constants as osConstants } from "node:os";
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

/** Built by `npm run build` into dist/launcher (beside dist/src; under tsx, in the checkout's dist/). */
const LAUNCHER = fileURLToPath(new URL(import.meta.url.endsWith(".ts") ? "../../dist/launcher/runtara-launcher" : "../../launcher/runtara-launcher", import.meta.url));

/** What the launcher's failure steps were doing, for the message. */
const STEPS: Record<string, string> = {
  fork: "fork",
  setsid: "start a session",
  mkcgroup: "create its cgroup",
  cgroup: "join its cgroup",
  limits: "set its cgroup limits",
  rlimit: "set its RLIMIT_FSIZE",
  stdio: "open its stdout and stderr",
  owncwd: "take its working directory",
  cwd: "enter its working directory",
  user: "switch to its user",
};

const launcher = spawn(LAUNCHER, [String(PARENT)], { stdio: ["pipe", "pipe", "inherit"] });
/** Spawns sent to the launcher and not yet answered: their files, for failure messages. */
const launching = new Map<number, string>();
// Not started (not built, not executable, no fds or processes left): the starts sent fail
// with the reason, and this process exits, so the next start tries a new launcher.
launcher.once("error", (e: NodeJS.ErrnoException) => {
  const hint = e.code === "ENOENT" || e.code === "EACCES" ? "; `npm run build` builds it with the C compiler" : "";
  const failed = { message: `the launcher ${LAUNCHER} could not start (${e.message})${hint}`, ...(e.code ? { code: e.code } : {}) };
  for (const id of launching.keys()) send({ id, failed });
  process.stderr.write(`runtara spawner: ${failed.message}\n`);
  process.exit(1);
});
launcher.stdin.on("error", () => {}); // it died: its exit ends us
launcher.once("exit", (code, signal) => {
  process.stderr.write(`runtara spawner: the launcher exited (${signal ?? `code ${code}`})\n`);
  process.exit(1);
});

/** errno names libuv's map lacks (ENOEXEC: a file that is not an executable for this machine). */
const ERRNO_NAMES = new Map(Object.entries(osConstants.errno).map(([name, n]) => [n, name]));

createInterface({ input: launcher.stdout, crlfDelay: Infinity }).on("line", (line) => {
  const words = line.split(" ");
  const [kind, idText, a = "-", b = "-", c = "-"] = words;
  const id = Number(idText);
  if (kind === "X") {
    // "X <id> <code> <signal> [= <read>...]": "=" when the launcher ended the run's cgroup, "~" when it had to leave it.
    const [marker, ...reads] = words.slice(4);
    const ended = marker === "=" || marker === "~" ? { cgroupReads: reads.map((v) => (v === "-" ? null : v)), ...(marker === "~" ? { cgroupLeft: true } : {}) } : {};
    return void send({ id, exit: { code: a === "-" ? null : Number(a), signal: b === "-" ? null : b, ...ended } });
  }
  const file = launching.get(id) ?? "?";
  launching.delete(id);
  if (kind === "P") return void send({ id, pid: Number(a), startTime: b, ...(c !== "-" ? { cgroup: c } : {}) });
  // "F <id> <errno> <step> <strerror text>"
  const errno = Number(a);
  const [code = ERRNO_NAMES.get(errno) ?? `errno ${a}`, text = words.slice(4).join(" ").toLowerCase()] = getSystemErrorMap().get(-errno) ?? [];
  send({ id, failed: { message: `${b === "exec" ? `exec ${file}` : `could not ${STEPS[b] ?? b}`}: ${text}`, code, step: b } });
});

/** A request as the launcher reads it (see launcher.c): its length, then NUL-terminated fields. */
function launchFrame(req: SpawnRequest): Buffer | undefined {
  const opt = (v: number | undefined) => (v === undefined ? "" : String(v));
  const list = (items: readonly string[] = []) => [String(items.length), ...items];
  const env = req.env === undefined ? ["-"] : list(Object.entries(req.env).map(([k, v]) => `${k}=${v}`));
  const fields = [String(req.id), req.file, req.cwd ?? "", opt(req.uid), opt(req.gid), req.detached ? "1" : "0", req.ownCwd ? "1" : "0"];
  const cgroup = req.cgroup;
  fields.push(opt(req.stdoutFd), opt(req.stderrFd), opt(req.fileSizeLimit), ...list(cgroup?.parents), cgroup?.prefix ?? "");
  fields.push(...list(cgroup?.limits.flat().map(String)), ...list(cgroup?.reads.flat().map(String)), opt(cgroup?.prefork), ...list(req.args), ...env);
  if (fields.some((f) => f.includes("\0"))) return undefined;
  const body = Buffer.from(`${fields.join("\0")}\0`);
  return Buffer.concat([Buffer.from(`${body.length}\n`), body]);
}

function startChild(req: SpawnRequest): void {
  const frame = launchFrame(req);
  if (frame === undefined) return void send({ id: req.id, failed: { message: "a path, argument or environment entry holds a NUL byte", code: "EINVAL" } });
  launching.set(req.id, req.file);
  launcher.stdin.write(frame);
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
