/**
 * The wire format of runtara-launcher (launcher.c, where it is described): a spawn request as
 * the frame it reads, and its answer lines as replies.
 */
import { constants as osConstants } from "node:os";
import { getSystemErrorMap } from "node:util";
import type { LauncherReply, SpawnRequest } from "./spawner-protocol.js";

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

/** errno names libuv's map lacks (ENOEXEC: a file that is not an executable for this machine). */
const ERRNO_NAMES = new Map(Object.entries(osConstants.errno).map(([name, n]) => [n, name]));

/** A request as the launcher reads it: its length, then NUL-terminated fields; undefined when a field holds a NUL. */
export function launchFrame(req: SpawnRequest): Buffer | undefined {
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

/**
 * One answer line of the launcher as a reply. `fileOf(id)`: the file request `id` executes,
 * which names an exec failure.
 */
export function launcherReply(line: string, fileOf: (id: number) => string): LauncherReply {
  const words = line.split(" ");
  const [kind, idText, a = "-", b = "-", c = "-"] = words;
  const id = Number(idText);
  if (kind === "X") {
    // "X <id> <code> <signal> [= <read>...]": "=" when the launcher ended the run's cgroup, "~" when it had to leave it.
    const [marker, ...reads] = words.slice(4);
    const ended = marker === "=" || marker === "~" ? { cgroupReads: reads.map((v) => (v === "-" ? null : v)), ...(marker === "~" ? { cgroupLeft: true as const } : {}) } : {};
    return { id, exit: { code: a === "-" ? null : Number(a), signal: b === "-" ? null : b, ...ended } };
  }
  if (kind === "P") return { id, pid: Number(a), startTime: b, ...(c !== "-" ? { cgroup: c } : {}) };
  // "F <id> <errno> <step> <strerror text>"
  const errno = Number(a);
  const [code = ERRNO_NAMES.get(errno) ?? `errno ${a}`, text = words.slice(4).join(" ").toLowerCase()] = getSystemErrorMap().get(-errno) ?? [];
  return { id, failed: { message: `${b === "exec" ? `exec ${fileOf(id)}` : `could not ${STEPS[b] ?? b}`}: ${text}`, code, step: b } };
}
