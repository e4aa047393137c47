/**
 * The spawner: a small long-lived process that runs the short commands of the runners (runc
 * state/delete, ip, pasta, umoci) and returns their output, so the environment's own event loop never
 * forks its large heap for them. Requests arrive as JSON lines on stdin; outcomes go back as
 * JSON lines on stdout. (Long-lived processes are forked by runtara-launcher, which the
 * environment talks to directly.) It exits when its stdin closes: the environment stopped or
 * died.
 */
import { spawn } from "node:child_process";
import { closeSync, readdirSync, readFileSync } from "node:fs";
import { createInterface } from "node:readline";
import type { PingRequest, RunRequest, SpawnerReply, SpawnFailure } from "./spawner-protocol.js";

/** The environment that started us: requests still buffered once it is gone are not run. */
const PARENT = process.ppid;

/** Output beyond this per stream is dropped (commands here print a few lines; umoci may print more). */
const MAX_OUTPUT_BYTES = 4 * 1024 * 1024;

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
  let req: RunRequest | PingRequest;
  try {
    req = JSON.parse(line) as RunRequest | PingRequest;
  } catch {
    return; // only the environment writes here; a torn line cannot be answered
  }
  // Nobody waits for what a dead environment asked (a pasta started now would serve nothing).
  if (process.ppid !== PARENT) return;
  if ("ping" in req) send({ id: req.id, pong: true });
  else runCommand(req);
});
// The environment's end of our stdout closed (it died): stop.
process.stdout.on("error", () => process.exit(0));
// The environment is gone (a command still running finishes on its own).
lines.on("close", () => process.exit(0));
