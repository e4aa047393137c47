import { spawn, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import type { Logger } from "pino";
import { watchPid } from "./proc.js";
import { launcherReply, launchFrame } from "./launcher-protocol.js";
import type { LauncherReply, PingRequest, RunOutcome, RunRequest, SpawnerReply, SpawnRequest } from "./spawner-protocol.js";

/** What a spawned process may be given; see SpawnRequest. */
export type SpawnOptions = Omit<SpawnRequest, "id" | "detached"> & { detached?: boolean };

export interface ChildExit {
  /** null when a signal ended it, or when the launcher died first and the exit was only seen as the pid going away. */
  code: number | null;
  signal: string | null;
  /**
   * Present when the launcher ended the child's cgroup (SpawnRequest.cgroup): killed what was
   * left in it, read CgroupSetup.reads (null: no number there) and removed it.
   */
  cgroupReads?: (string | null)[];
  /** Something in the cgroup would not die (a process stuck in the kernel): the launcher left the cgroup. */
  cgroupLeft?: true;
}

export interface SpawnedChild {
  readonly pid: number;
  /** Start time of `pid` (clock ticks since boot), read before the child could be reaped. */
  readonly startTime: bigint;
  /** The name of the cgroup it was started in, when it asked for one (SpawnRequest.cgroup). */
  readonly cgroup?: string;
  /** Settles once the child exited. Never rejects. */
  readonly exited: Promise<ChildExit>;
  /** Stops observing it and holding this process open (environment shutdown); `exited` may then never settle. */
  detach(): void;
}

/** A command's outcome, execa-style: `failed` when it could not start, timed out or exited non-zero. */
export interface CommandResult extends RunOutcome {
  failed: boolean;
  /** One line saying why it failed (empty when it did not). */
  message: string;
  /** errno name when the command could not be started (ENOENT: not installed). */
  code?: string;
}

export class SpawnError extends Error {
  constructor(
    message: string,
    readonly code?: string,
    /** The step of the start that failed (SpawnFailure.step). */
    readonly step?: string,
  ) {
    super(message);
    this.name = "SpawnError";
  }
}

/** An adopted child's exit is polled this often once its launcher is gone. */
const ORPHAN_POLL_MS = 1_000;
/** A spawn or ping is answered in milliseconds; a helper silent this long is hung and replaced (default). */
const SPAWN_DEADLINE_MS = 10_000;
/** Starting a helper (the spawner is a Node process) takes well under a second; this long means it is stuck. */
const STARTUP_DEADLINE_MS = 30_000;
/** How long a closed helper may take to exit before it is killed. */
const CLOSE_GRACE_MS = 1_000;

/** Built by `npm run build` into dist/launcher (beside dist/src; under tsx, in the checkout's dist/). */
const LAUNCHER = fileURLToPath(new URL(import.meta.url.endsWith(".ts") ? "../../dist/launcher/runtara-launcher" : "../../launcher/runtara-launcher", import.meta.url));

interface Pending {
  resolve(reply: LauncherReply | SpawnerReply): void;
  reject(e: Error): void;
  /** The file a spawn executes (it names an exec failure). */
  file?: string;
}

interface Child {
  pid: number;
  startTime: bigint;
  cgroup?: string;
  resolveExit(exit: ChildExit): void;
  held: boolean;
  abort: AbortController;
}

/**
 * One helper process and what it is doing for us: runtara-launcher (spawns, answered in its
 * own lines) or the spawner process (commands, answered in JSON lines).
 */
interface Helper {
  kind: "launcher" | "spawner";
  proc: ChildProcess;
  pending: Map<number, Pending>;
  /** The launcher's children, by request id. */
  children: Map<number, Child>;
  /** Children still observed (not detached). */
  held: number;
  /** Whether its handles currently hold this process open. */
  holding: boolean;
  /** Settles when it is ready: request deadlines count from then, not from its start. */
  ready: Promise<void>;
  markReady(): void;
  /** In the names of the cgroups its launches get, so that what it leaves when it dies can be found. */
  generation: string;
  gone: boolean;
}

type Refable = { ref?(): void; unref?(): void };

const spawnerEntry = () => {
  const ts = import.meta.url.endsWith(".ts");
  const file = fileURLToPath(new URL(ts ? "./spawner-process.ts" : "./spawner-process.js", import.meta.url));
  // Under tsx (tests, development) the helper needs the same loader; nothing else of our flags (no inspector, no profiler).
  return ts ? ["--import", "tsx", file] : [file];
};

/**
 * The environment's side of its two helper processes, so that this event loop never forks per
 * launch: every long-lived process (workflow, `runc run`) is forked by runtara-launcher
 * (launcher.c), to which spawns are written directly and whose pid, start time and exit come
 * back over its pipe; the short commands of the runners run in the spawner process
 * (spawner-process.ts). Each starts on first use and again after it died; the children of a
 * launcher that died keep running and are then watched by pid (exit code unknown), as an
 * adopted process is. Holds this process open only while something is pending or running.
 */
export class Spawner {
  private launcher: Helper | undefined;
  private spawner: Helper | undefined;
  private readonly goneListeners: ((generation: string) => void)[] = [];
  private nextId = 1;
  private closed = false;

  private readonly logger: Logger | undefined;
  private readonly spawnDeadlineMs: number;

  constructor(options: { logger?: Logger | undefined; spawnDeadlineMs?: number } = {}) {
    this.logger = options.logger;
    this.spawnDeadlineMs = options.spawnDeadlineMs ?? SPAWN_DEADLINE_MS;
  }

  async spawn(options: SpawnOptions): Promise<SpawnedChild> {
    const { detached = false, ...rest } = options;
    if (this.closed) throw new SpawnError("the spawner is closed (the environment is stopping)");
    const helper = (this.launcher ??= this.startHelper("launcher"));
    const id = this.nextId++;
    const cgroup = rest.cgroup ? { cgroup: { ...rest.cgroup, prefix: `${rest.cgroup.prefix}${helper.generation}-` } } : {};
    const frame = launchFrame({ id, detached, ...rest, ...cgroup });
    if (frame === undefined) {
      this.updateHold(helper); // a launcher started for this request must not hold this process open
      throw new SpawnError("a path, argument or environment entry holds a NUL byte", "EINVAL");
    }
    let resolveExit!: (exit: ChildExit) => void;
    const exited = new Promise<ChildExit>((r) => (resolveExit = r));
    // Known before any reply is read: the exit can arrive in the same read as the pid.
    const child: Child = { pid: 0, startTime: 0n, resolveExit, held: true, abort: new AbortController() };
    helper.children.set(id, child);
    helper.held++;
    let answer: LauncherReply | SpawnerReply;
    try {
      answer = await this.send(helper, id, frame, this.spawnDeadlineMs, rest.file);
    } catch (e) {
      this.forget(helper, id);
      throw e;
    }
    if (!("pid" in answer)) {
      this.forget(helper, id);
      if (!("failed" in answer)) throw new SpawnError(`unexpected answer from the launcher: ${JSON.stringify(answer)}`);
      throw new SpawnError(answer.failed.message, answer.failed.code, answer.failed.step);
    }
    return {
      pid: child.pid,
      startTime: child.startTime,
      ...(child.cgroup !== undefined ? { cgroup: child.cgroup } : {}),
      exited,
      detach: () => {
        if (!child.held) return;
        child.held = false;
        child.abort.abort();
        if (helper.children.has(id)) helper.held--;
        this.updateHold(helper);
      },
    };
  }

  /**
   * Calls `fn` when a launcher dies while the environment runs, with the generation that its
   * launches' cgroup names carry (`<prefix><generation>-…`): a start it answered for whose
   * answer never arrived, or that it forked ahead, is in one of those and recorded nowhere.
   */
  onLauncherGone(fn: (generation: string) => void): void {
    this.goneListeners.push(fn);
  }

  /** Runs a command to completion (stdin closed), killing it after `timeoutMs`. Never rejects. */
  async run(file: string, args: readonly string[], options: { timeoutMs?: number } = {}): Promise<CommandResult> {
    const { timeoutMs } = options;
    if (this.closed) return failedRun(file, "the environment is stopping");
    const helper = (this.spawner ??= this.startHelper("spawner"));
    const id = this.nextId++;
    const request = { id, file, args: [...args], ...(timeoutMs !== undefined ? { timeoutMs } : {}) } satisfies RunRequest;
    const reply = this.send(helper, id, `${JSON.stringify(request)}\n`, timeoutMs === undefined ? undefined : timeoutMs + this.spawnDeadlineMs);
    if (timeoutMs === undefined) this.keepAsking(helper, reply);
    let answer: LauncherReply | SpawnerReply;
    try {
      answer = await reply;
    } catch (e) {
      return failedRun(file, (e as Error).message);
    }
    if (!("ran" in answer)) return failedRun(file, `unexpected answer from the spawner process: ${JSON.stringify(answer)}`);
    const ran = answer.ran;
    const failed = ran.error !== undefined || ran.timedOut || ran.exitCode !== 0;
    return { ...ran, failed, message: failed ? describe(file, ran) : "", ...(ran.error?.code ? { code: ran.error.code } : {}) };
  }

  /**
   * Ends both helpers: each exits when its stdin closes, and is killed if it has not within
   * CLOSE_GRACE_MS (a stopped or hung one must not keep this process alive, nor outlive it).
   * Running children are not touched.
   */
  close(): void {
    this.closed = true;
    for (const helper of [this.launcher, this.spawner]) {
      if (helper === undefined) continue;
      helper.proc.stdin?.end();
      const kill = setTimeout(() => helper.proc.kill("SIGKILL"), CLOSE_GRACE_MS);
      helper.proc.once("exit", () => clearTimeout(kill));
    }
    this.launcher = this.spawner = undefined;
  }

  /** The launcher's pid while one runs. */
  get launcherPid(): number | undefined {
    return this.launcher?.proc.pid;
  }

  /** The spawner process's pid while one runs. */
  get spawnerPid(): number | undefined {
    return this.spawner?.proc.pid;
  }

  /**
   * Writes one request. `deadlineMs`: a helper that has not answered by then is hung (stopped,
   * starved): it is killed, which fails every request in flight and starts a new one next time.
   */
  private send(helper: Helper, id: number, data: string | Buffer, deadlineMs: number | undefined, file?: string): Promise<LauncherReply | SpawnerReply> {
    const reply = new Promise<LauncherReply | SpawnerReply>((resolve, reject) => helper.pending.set(id, { resolve, reject, ...(file !== undefined ? { file } : {}) }));
    if (deadlineMs !== undefined) {
      void helper.ready.then(() => {
        if (!helper.pending.has(id)) return;
        // Checked after the next poll phase: when this loop was held up past the deadline (a
        // stall, a paused VM), an answer that arrived meanwhile is read before the verdict.
        const timer = setTimeout(() => setImmediate(() => helper.pending.has(id) && this.kill(helper, "did not answer in time", deadlineMs)), deadlineMs);
        void reply.finally(() => clearTimeout(timer)).catch(() => {});
      });
    }
    this.updateHold(helper);
    helper.proc.stdin!.write(data);
    return reply;
  }

  /**
   * A command without a timeout (umoci unpacking a large image) has no deadline of its own:
   * while it runs, the spawner is pinged every spawnDeadlineMs, each ping under that deadline,
   * so that a hung spawner is still found and killed (which fails the command).
   */
  private keepAsking(helper: Helper, reply: Promise<unknown>): void {
    const timer = setInterval(() => {
      const id = this.nextId++;
      void this.send(helper, id, `${JSON.stringify({ id, ping: true } satisfies PingRequest)}\n`, this.spawnDeadlineMs).catch(() => {});
    }, this.spawnDeadlineMs);
    void reply.finally(() => clearInterval(timer)).catch(() => {});
  }

  private startHelper(kind: Helper["kind"]): Helper {
    const proc =
      kind === "launcher"
        ? spawn(LAUNCHER, [String(process.pid)], { stdio: ["pipe", "pipe", "inherit"] })
        : spawn(process.execPath, spawnerEntry(), { stdio: ["pipe", "pipe", "inherit"] });
    let markReady!: () => void;
    const ready = new Promise<void>((resolve) => (markReady = resolve));
    const generation = randomBytes(3).toString("hex");
    const helper: Helper = { kind, proc, pending: new Map(), children: new Map(), held: 0, holding: true, ready, markReady, generation, gone: false };
    const startup = setTimeout(() => this.kill(helper, "did not start in time", STARTUP_DEADLINE_MS), STARTUP_DEADLINE_MS);
    void ready.then(() => clearTimeout(startup));
    proc.once("exit", () => clearTimeout(startup));
    // The launcher reads requests as soon as it runs; the spawner says when it does.
    if (kind === "launcher") proc.once("spawn", markReady);
    proc.stdin!.on("error", () => {}); // it died: 'close' handles that
    createInterface({ input: proc.stdout!, crlfDelay: Infinity }).on("line", (line) => this.onReply(helper, line));
    // 'close', not 'exit': its last lines (a pid, an exit) are read before its death is handled.
    proc.once("close", (code, signal) => this.onHelperExit(helper, `${signal ?? `code ${code}`}`));
    proc.once("error", (e: NodeJS.ErrnoException) => {
      clearTimeout(startup);
      if (proc.pid !== undefined) return void this.logger?.error({ err: e, pid: proc.pid }, `the ${kind} process failed`);
      // Not started (not built, not executable, no fds or processes left): handled here, with
      // the reason; the 'close' that follows finds it handled.
      const hint = kind === "launcher" && (e.code === "ENOENT" || e.code === "EACCES") ? "; `npm run build` builds it with the C compiler" : "";
      this.logger?.error({ err: e }, `could not start the ${kind} process`);
      this.onHelperExit(helper, e.message, `the ${kind} ${kind === "launcher" ? LAUNCHER : "process"} could not start (${e.message})${hint}`, e.code);
    });
    return helper;
  }

  private onReply(helper: Helper, line: string): void {
    const reply: LauncherReply | SpawnerReply = helper.kind === "launcher" ? launcherReply(line, (id) => helper.pending.get(id)?.file ?? "?") : (JSON.parse(line) as SpawnerReply);
    if ("ready" in reply) return helper.markReady();
    if ("exit" in reply) {
      const child = helper.children.get(reply.id);
      this.forget(helper, reply.id);
      child?.resolveExit(reply.exit);
      return;
    }
    if ("pid" in reply) {
      const child = helper.children.get(reply.id);
      if (child) {
        child.pid = reply.pid;
        child.startTime = BigInt(reply.startTime);
        if (reply.cgroup !== undefined) child.cgroup = reply.cgroup;
      }
    }
    const pending = helper.pending.get(reply.id);
    helper.pending.delete(reply.id);
    pending?.resolve(reply);
    this.updateHold(helper);
  }

  /** A hung helper: killing it fails what is in flight (onHelperExit), and the next request starts a new one. */
  private kill(helper: Helper, why: string, deadlineMs: number): void {
    if (helper.proc.exitCode !== null || helper.proc.signalCode !== null) return;
    this.logger?.error({ pid: helper.proc.pid, deadlineMs }, `the ${helper.kind} ${why}; killing it`);
    helper.proc.kill("SIGKILL");
  }

  /** Stops tracking spawn `id` (it exited, or it never started). */
  private forget(helper: Helper, id: number): void {
    const child = helper.children.get(id);
    if (child === undefined) return;
    helper.children.delete(id);
    if (child.held) helper.held--;
    this.updateHold(helper);
  }

  /**
   * Requests in flight fail; children live on, now orphans, and are watched by pid. An
   * exit's code that arrived before the launcher died was already delivered above. A spawn
   * whose pid never came back is failed by its request (its process, if one was forked, is
   * killed by the launcher, or dies with it: until its exec it has a parent-death signal).
   */
  private onHelperExit(helper: Helper, why: string, message = `the ${helper.kind} process exited (${why})`, code?: string): void {
    if (helper.gone) return;
    helper.gone = true;
    if (this.launcher === helper) this.launcher = undefined;
    if (this.spawner === helper) this.spawner = undefined;
    // One that never started (logged where it failed) left nothing behind.
    const ran = helper.proc.pid !== undefined && !this.closed;
    if (ran && helper.kind === "launcher") for (const fn of this.goneListeners) fn(helper.generation);
    if (ran) this.logger?.warn({ why, children: helper.children.size }, `the ${helper.kind} process exited; a new one starts when next needed`);
    for (const child of helper.children.values()) if (child.held && child.pid !== 0) this.watchOrphan(child);
    helper.children.clear();
    helper.held = 0;
    for (const p of helper.pending.values()) p.reject(new SpawnError(message, code));
    helper.pending.clear();
  }

  private watchOrphan(child: Child): void {
    void watchPid(child.pid, child.startTime, { intervalMs: ORPHAN_POLL_MS, signal: child.abort.signal }).then(
      () => child.resolveExit({ code: null, signal: null }),
      () => {}, // detached: no longer observed
    );
  }

  /** A helper holds this process open while we wait for it (a request, a child we observe). */
  private updateHold(helper: Helper): void {
    const busy = helper.pending.size > 0 || helper.held > 0;
    if (busy === helper.holding) return;
    helper.holding = busy;
    for (const handle of [helper.proc, helper.proc.stdin, helper.proc.stdout] as (Refable | null)[]) {
      if (busy) handle?.ref?.();
      else handle?.unref?.();
    }
  }
}

/** What run() answers for a command it could not send. */
function failedRun(file: string, why: string): CommandResult {
  return { exitCode: null, signal: null, stdout: "", stderr: "", timedOut: false, error: { message: why }, failed: true, message: `${file}: ${why}` };
}

function describe(file: string, ran: RunOutcome): string {
  if (ran.error) return `${file}: ${ran.error.message}`;
  if (ran.timedOut) return `${file} timed out`;
  return `${file} exited with ${ran.exitCode ?? ran.signal}`;
}
