import { spawn, type ChildProcess } from "node:child_process";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import type { Logger } from "pino";
import { watchPid } from "./proc.js";
import type { RunOutcome, SpawnerReply, SpawnerRequest, SpawnFailure, SpawnRequest } from "./spawner-protocol.js";

/** What a spawned process may be given; see SpawnRequest. */
export type SpawnOptions = Omit<SpawnRequest, "op" | "id" | "detached"> & { detached?: boolean };

export interface ChildExit {
  /** null when a signal ended it, or when the spawner died first and the exit was only seen as the pid going away. */
  code: number | null;
  signal: string | null;
}

export interface SpawnedChild {
  readonly pid: number;
  /** Start time of `pid` (clock ticks since boot), read before the child could be reaped. */
  readonly startTime: bigint;
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
  ) {
    super(message);
    this.name = "SpawnError";
  }
}

/** An adopted child's exit is polled this often once its spawner is gone. */
const ORPHAN_POLL_MS = 1_000;

interface Pending {
  resolve(reply: SpawnerReply): void;
  reject(e: Error): void;
}

interface Child {
  pid: number;
  startTime: bigint;
  resolveExit(exit: ChildExit): void;
  held: boolean;
  abort: AbortController;
}

/** One spawner process and what it is doing for us. */
interface Helper {
  proc: ChildProcess;
  pending: Map<number, Pending>;
  children: Map<number, Child>;
  /** Children still observed (not detached). */
  held: number;
  /** Whether its handles currently hold this process open. */
  holding: boolean;
}

type Refable = { ref?(): void; unref?(): void };

const helperEntry = () => {
  const ts = import.meta.url.endsWith(".ts");
  const file = fileURLToPath(new URL(ts ? "./spawner-process.ts" : "./spawner-process.js", import.meta.url));
  // Under tsx (tests, development) the helper needs the same loader; nothing else of our flags (no inspector, no profiler).
  return ts ? ["--import", "tsx", file] : [file];
};

/**
 * The environment's side of the spawner process (spawner-process.ts): every process the
 * runners start is forked there, off this event loop, and its pid, start time and exit come
 * back over a pipe. The spawner starts on first use and again after it died; the children of
 * a spawner that died keep running and are then watched by pid (exit code unknown), as an
 * adopted process is. Holds this process open only while something is pending or running.
 */
export class Spawner {
  private helper: Helper | undefined;
  private nextId = 1;
  private closed = false;

  constructor(private readonly logger?: Logger) {}

  async spawn(options: SpawnOptions): Promise<SpawnedChild> {
    const { detached = false, ...rest } = options;
    let resolveExit!: (exit: ChildExit) => void;
    const exited = new Promise<ChildExit>((r) => (resolveExit = r));
    const { helper, id, reply } = this.request((id) => ({ op: "spawn", id, detached, ...rest }));
    const answer = await reply;
    if ("failed" in answer) throw new SpawnError(answer.failed.message, answer.failed.code);
    if (!("pid" in answer)) throw new SpawnError(`unexpected answer from the spawner: ${JSON.stringify(answer)}`);
    const child: Child = { pid: answer.pid, startTime: BigInt(answer.startTime), resolveExit, held: true, abort: new AbortController() };
    if (helper.proc.exitCode !== null || helper.proc.signalCode !== null) this.watchOrphan(child);
    else {
      helper.children.set(id, child);
      helper.held++;
    }
    this.updateHold(helper);
    return {
      pid: child.pid,
      startTime: child.startTime,
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

  /** Runs a command to completion (stdin closed), killing it after `timeoutMs`. Never rejects. */
  async run(file: string, args: readonly string[], options: { timeoutMs?: number } = {}): Promise<CommandResult> {
    const { reply } = this.request((id) => ({ op: "run", id, file, args: [...args], ...(options.timeoutMs !== undefined ? { timeoutMs: options.timeoutMs } : {}) }));
    const answer = await reply.catch((e: Error): SpawnerReply => ({ id: 0, failed: { message: e.message } }));
    const ran: RunOutcome =
      "ran" in answer ? answer.ran : { exitCode: null, signal: null, stdout: "", stderr: "", timedOut: false, error: "failed" in answer ? answer.failed : { message: "unexpected answer" } };
    const failed = ran.error !== undefined || ran.timedOut || ran.exitCode !== 0;
    return { ...ran, failed, message: failed ? describe(file, ran) : "", ...(ran.error?.code ? { code: ran.error.code } : {}) };
  }

  /** Ends the spawner (it exits when its stdin closes); running children are not touched. */
  close(): void {
    this.closed = true;
    this.helper?.proc.stdin?.end();
    this.helper = undefined;
  }

  /** The spawner's pid while one runs. */
  get helperPid(): number | undefined {
    return this.helper?.proc.pid;
  }

  private request(make: (id: number) => SpawnerRequest): { helper: Helper; id: number; reply: Promise<SpawnerReply> } {
    if (this.closed) throw new SpawnError("the spawner is closed (the environment is stopping)");
    const helper = (this.helper ??= this.startHelper());
    const id = this.nextId++;
    const reply = new Promise<SpawnerReply>((resolve, reject) => helper.pending.set(id, { resolve, reject }));
    this.updateHold(helper);
    helper.proc.stdin!.write(`${JSON.stringify(make(id))}\n`);
    return { helper, id, reply };
  }

  private startHelper(): Helper {
    const proc = spawn(process.execPath, helperEntry(), { stdio: ["pipe", "pipe", "inherit"] });
    const helper: Helper = { proc, pending: new Map(), children: new Map(), held: 0, holding: true };
    proc.stdin!.on("error", () => {}); // it died: 'exit' handles that
    createInterface({ input: proc.stdout!, crlfDelay: Infinity }).on("line", (line) => this.onReply(helper, line));
    proc.once("exit", (code, signal) => this.onHelperExit(helper, code, signal));
    proc.once("error", (e) => this.logger?.error({ err: e }, "could not start the spawner process"));
    return helper;
  }

  private onReply(helper: Helper, line: string): void {
    const reply = JSON.parse(line) as SpawnerReply;
    if ("exit" in reply) {
      const child = helper.children.get(reply.id);
      helper.children.delete(reply.id);
      if (child?.held) helper.held--;
      child?.resolveExit(reply.exit);
    } else {
      const pending = helper.pending.get(reply.id);
      helper.pending.delete(reply.id);
      pending?.resolve(reply);
    }
    this.updateHold(helper);
  }

  /**
   * Requests in flight fail; children live on, now orphans, and are watched by pid. An
   * exit's code that arrived before the spawner died was already delivered above.
   */
  private onHelperExit(helper: Helper, code: number | null, signal: NodeJS.Signals | null): void {
    if (this.helper === helper) this.helper = undefined;
    if (!this.closed) this.logger?.warn({ code, signal, children: helper.children.size }, "the spawner process exited; a new one starts with the next launch");
    for (const p of helper.pending.values()) p.reject(new SpawnError(`the spawner process exited (${signal ?? `code ${code}`})`));
    helper.pending.clear();
    for (const child of helper.children.values()) if (child.held) this.watchOrphan(child);
    helper.children.clear();
    helper.held = 0;
  }

  private watchOrphan(child: Child): void {
    void watchPid(child.pid, child.startTime, { intervalMs: ORPHAN_POLL_MS, signal: child.abort.signal }).then(
      () => child.resolveExit({ code: null, signal: null }),
      () => {}, // detached: no longer observed
    );
  }

  /** The spawner holds this process open while we wait for it (a request, a child we observe). */
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

function describe(file: string, ran: RunOutcome): string {
  if (ran.error) return `${file}: ${ran.error.message}`;
  if (ran.timedOut) return `${file} timed out`;
  return `${file} exited with ${ran.exitCode ?? ran.signal}`;
}
