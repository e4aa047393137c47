/**
 * Pure-logic unit tests of the workflow SDK (src/sdk): duration and env parsing, id rules,
 * the sleep decision, and the replay/cancel bookkeeping of the runtime against an in-memory
 * fake of InstanceService (createRouterTransport). The real core is covered end to end by
 * the integration tests; nothing here talks to a database or a network.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { timestampMs } from "@bufbuild/protobuf/wkt";
import {
  Code,
  ConnectError,
  createClient,
  createRouterTransport,
  type ConnectRouter,
  type HandlerContext,
} from "@connectrpc/connect";
import {
  InstanceService,
  type AckSignalRequest,
  type WatchSignalsRequest,
  type WatchSignalsResponseSchema,
} from "../gen/runtara/core/v1/instance_pb.js";
import { InstanceStatus, SignalSchema, SignalType, type Signal } from "../gen/runtara/core/v1/types_pb.js";
import {
  CancelledError,
  ConfigError,
  NotInInstanceError,
  PausedError,
  SignalTimeoutError,
  WorkflowError,
  defineSignal,
  isCancellation,
  parseDuration,
  runWorkflow,
  step,
  type RegisterOptions,
  type SdkLogger,
  type WorkflowContext,
} from "../src/sdk/index.js";
import { retryTransientInterceptor } from "../src/sdk/client.js";
import { signalCheckpointId, validateCheckpointId, validateStepKey } from "../src/sdk/ids.js";
import { DEFAULTS, compileSettings, readInstanceEnv, type RuntimeSettings } from "../src/sdk/settings.js";
import { SignalChannel } from "../src/sdk/signals.js";
import { planSleep } from "../src/sdk/sleep-plan.js";

const text = new TextEncoder();
const json = (value: unknown) => text.encode(JSON.stringify(value));
const parse = (bytes: Uint8Array | undefined) => (bytes ? JSON.parse(new TextDecoder().decode(bytes)) : undefined);

// ------------------------------------------------------------------ fake core

type WatchMsg = MessageInitShape<typeof WatchSignalsResponseSchema>;

/** An in-memory InstanceService with the proto's semantics, recording every call. */
class FakeCore {
  status = InstanceStatus.PENDING;
  input: Uint8Array = json({ n: 2 });
  readonly checkpoints = new Map<string, Uint8Array>();
  readonly custom = new Map<string, Uint8Array>();
  pending: Signal | undefined;
  readonly calls: { method: string; req: Record<string, unknown> }[] = [];
  output: Uint8Array | undefined;
  error: string | undefined;
  sleptUntil: number | undefined;
  /** GetCheckpoint pretends these do not exist (to stage a first-write-wins race). */
  readonly hiddenOnGet = new Set<string>();
  /** Runs before AckSignal is applied (to stage a CANCEL replacing a PAUSE). */
  beforeAck: ((req: AckSignalRequest) => void) | undefined;
  /** Pending instance signal is only reported through these channels. */
  signalVia = new Set(["register", "heartbeat", "checkpoint", "poll", "watch"]);
  watchFails = false;
  /** Core unreachable: PollSignal and WatchSignals fail with UNAVAILABLE. */
  down = false;
  private readonly watchers = new Set<(msg: WatchMsg) => void>();

  transport() {
    return createRouterTransport((router: ConnectRouter) => this.routes(router));
  }

  count(method: string) {
    return this.calls.filter((c) => c.method === method).length;
  }

  signal(type: SignalType, options: { push?: boolean } = {}) {
    if (this.pending?.signalType === SignalType.CANCEL) return; // a CANCEL is never replaced
    this.pending = create(SignalSchema, { signalType: type });
    if (options.push !== false) for (const w of this.watchers) w({ signal: this.pending });
  }

  sendCustom(checkpointId: string, payload: Uint8Array) {
    this.custom.set(checkpointId, payload);
    for (const w of this.watchers) w({ customSignal: { checkpointId, payload } });
  }

  private sig(channel: string) {
    return this.signalVia.has(channel) ? this.pending : undefined;
  }

  private routes(router: ConnectRouter) {
    const record = (method: string, req: object) => this.calls.push({ method, req: { ...req } });
    router.service(InstanceService, {
      register: (req) => {
        record("register", req);
        if ([InstanceStatus.COMPLETED, InstanceStatus.FAILED, InstanceStatus.CANCELLED].includes(this.status)) {
          throw new ConnectError("terminal", Code.FailedPrecondition);
        }
        this.status = InstanceStatus.RUNNING;
        const state = this.checkpoints.get(req.checkpointId);
        return {
          status: this.status,
          input: this.input,
          checkpointId: req.checkpointId,
          found: state !== undefined,
          state,
          signal: this.sig("register"),
          tenantId: "tenant-1",
        };
      },
      getInput: () => ({ input: this.input }),
      heartbeat: (req) => {
        record("heartbeat", req);
        return { signal: this.sig("heartbeat") };
      },
      saveCheckpoint: (req) => {
        record("saveCheckpoint", req);
        const existing = this.checkpoints.get(req.checkpointId);
        if (existing === undefined) this.checkpoints.set(req.checkpointId, req.state);
        return {
          found: existing !== undefined,
          state: existing ?? req.state,
          signal: this.sig("checkpoint"),
        };
      },
      getCheckpoint: (req) => {
        record("getCheckpoint", req);
        const state = this.hiddenOnGet.has(req.checkpointId) ? undefined : this.checkpoints.get(req.checkpointId);
        return { found: state !== undefined, state };
      },
      sleep: (req) => {
        record("sleep", req);
        if (!this.checkpoints.has(req.checkpointId)) this.checkpoints.set(req.checkpointId, req.state);
        this.sleptUntil = req.wakeAt ? timestampMs(req.wakeAt) : Date.now() + Number(req.durationMs);
        this.status = InstanceStatus.SUSPENDED;
        return { wakeAt: req.wakeAt };
      },
      pollSignal: (req) => {
        record("pollSignal", req);
        if (this.down) throw new ConnectError("connection refused", Code.Unavailable);
        const payload = req.checkpointId ? this.custom.get(req.checkpointId) : undefined;
        return {
          signal: this.sig("poll"),
          customSignal: payload ? { checkpointId: req.checkpointId, payload } : undefined,
        };
      },
      watchSignals: (req, ctx) => this.watch(req, ctx),
      ackSignal: (req) => {
        record("ackSignal", req);
        this.beforeAck?.(req);
        if (req.checkpointId) {
          const had = this.custom.delete(req.checkpointId);
          return { applied: had, status: this.status };
        }
        if (this.pending?.signalType !== req.signalType) {
          throw new ConnectError("that signal is not pending", Code.FailedPrecondition);
        }
        this.pending = undefined;
        if (req.signalType === SignalType.CANCEL) this.status = InstanceStatus.CANCELLED;
        if (req.signalType === SignalType.PAUSE) this.status = InstanceStatus.SUSPENDED;
        return { applied: true, status: this.status };
      },
      emitEvent: (req) => {
        record("emitEvent", req);
        return { eventId: BigInt(this.count("emitEvent")) };
      },
      complete: (req) => {
        record("complete", req);
        if (this.status !== InstanceStatus.RUNNING) return { applied: false, status: this.status };
        this.status = InstanceStatus.COMPLETED;
        this.output = req.output;
        return { applied: true, status: this.status };
      },
      fail: (req) => {
        record("fail", req);
        if (this.status !== InstanceStatus.RUNNING) return { applied: false, status: this.status };
        this.status = InstanceStatus.FAILED;
        this.error = req.error;
        return { applied: true, status: this.status };
      },
    });
  }

  private async *watch(req: WatchSignalsRequest, ctx: HandlerContext): AsyncGenerator<WatchMsg> {
    this.calls.push({ method: "watchSignals", req: { ...req } });
    if (this.watchFails || this.down) throw new ConnectError("watch broken", Code.Unavailable);
    const queue: WatchMsg[] = [];
    let wake: (() => void) | undefined;
    const push = (m: WatchMsg) => {
      queue.push(m);
      wake?.();
    };
    this.watchers.add(push);
    try {
      if (this.pending && this.signalVia.has("watch")) yield { signal: this.pending };
      for (const [checkpointId, payload] of this.custom) yield { customSignal: { checkpointId, payload } };
      while (!ctx.signal.aborted) {
        while (queue.length > 0) {
          const m = queue.shift()!;
          if (m.signal && !this.signalVia.has("watch")) continue;
          yield m;
        }
        await new Promise<void>((resolve) => {
          wake = resolve;
          ctx.signal.addEventListener("abort", () => resolve(), { once: true });
        });
      }
    } finally {
      this.watchers.delete(push);
    }
  }
}

const ENV = {
  RUNTARA_INSTANCE_ID: "inst-1",
  RUNTARA_TENANT_ID: "tenant-1",
  RUNTARA_INSTANCE_TOKEN: "token",
  RUNTARA_CORE_URL: "http://127.0.0.1:1",
};

function memoryLogger() {
  const lines: string[] = [];
  const at =
    (level: string) =>
    (message: string, fields?: Record<string, unknown>): void => {
      lines.push(`${level}: ${message}${fields ? ` ${JSON.stringify(fields, (_k, v: unknown) => (typeof v === "bigint" ? String(v) : v))}` : ""}`);
    };
  const logger: SdkLogger = { debug: at("debug"), info: at("info"), warn: at("warn"), error: at("error") };
  return { lines, logger };
}

/**
 * Starts runWorkflow against `core`; resolves with the exit code the SDK asked for.
 * (runWorkflow itself never resolves: it parks once it has asked to exit.)
 */
function run<I, O>(
  core: FakeCore,
  fn: (ctx: WorkflowContext<I>) => Promise<O>,
  options: RegisterOptions & { checkpointId?: string } = {},
) {
  const { lines, logger } = memoryLogger();
  let exitAt = 0;
  // In a real process the HTTP/2 connection keeps the event loop alive; the in-memory
  // transport holds no handle, and the SDK's background timers are unref'd.
  const keepAlive = setInterval(() => {}, 1_000);
  const exited = new Promise<number>((resolve) => {
    void runWorkflow(fn, {
      env: options.checkpointId ? { ...ENV, RUNTARA_CHECKPOINT_ID: options.checkpointId } : ENV,
      transport: core.transport(),
      logger,
      heartbeatIntervalMs: 60_000,
      ...options,
      exit: (code) => {
        exitAt = Date.now();
        clearInterval(keepAlive);
        resolve(code);
      },
    });
  });
  return { exited, lines, exitAt: () => exitAt };
}

const forever = () => new Promise<never>(() => {});
const tick = (ms = 10) => new Promise((r) => setTimeout(r, ms));

// ------------------------------------------------------------------ pure parsing

describe("parseDuration", () => {
  it("accepts milliseconds and unit strings", () => {
    assert.equal(parseDuration(250), 250);
    assert.equal(parseDuration(0), 0);
    assert.equal(parseDuration("500ms"), 500);
    assert.equal(parseDuration("2s"), 2_000);
    assert.equal(parseDuration("1.5s"), 1_500);
    assert.equal(parseDuration("5m"), 300_000);
    assert.equal(parseDuration("1h"), 3_600_000);
    assert.equal(parseDuration("1d"), 86_400_000);
    assert.equal(parseDuration("1h30m"), 5_400_000);
    assert.equal(parseDuration("2 s"), 2_000);
  });

  it("rejects what is not a duration, naming the value", () => {
    for (const bad of [-1, Number.NaN, Number.POSITIVE_INFINITY, "", "2", "2x", "-2s", "s", "1h junk"]) {
      assert.throws(() => parseDuration(bad as never), RangeError, String(bad));
    }
    assert.throws(() => parseDuration("soon", "sleep duration"), /sleep duration.*"soon"/);
  });
});

describe("readInstanceEnv", () => {
  it("reads the RUNTARA_* variables", () => {
    const env = readInstanceEnv({ ...ENV, RUNTARA_CORE_URL: "http://core:8001/", RUNTARA_CHECKPOINT_ID: "sleep:1" });
    assert.equal(env.instanceId, "inst-1");
    assert.equal(env.tenantId, "tenant-1");
    assert.equal(env.token, "token");
    assert.equal(env.coreUrl, "http://core:8001");
    assert.equal(env.resumeCheckpointId, "sleep:1");
    assert.equal(env.skipCertVerification, false);
  });

  it("names the missing variable, and says it is not inside an instance without an id", () => {
    for (const name of ["RUNTARA_TENANT_ID", "RUNTARA_INSTANCE_TOKEN"] as const) {
      const env: Record<string, string | undefined> = { ...ENV, [name]: undefined };
      assert.throws(
        () => readInstanceEnv(env),
        (err: unknown) => err instanceof ConfigError && err.variable === name && err.message.includes(name),
      );
    }
    assert.throws(
      () => readInstanceEnv({ ...ENV, RUNTARA_INSTANCE_ID: "" }),
      (err: unknown) =>
        err instanceof ConfigError && err.variable === "RUNTARA_INSTANCE_ID" && /inside a Runtara workflow instance/.test(err.message),
    );
  });

  it("falls back from RUNTARA_CORE_URL to RUNTARA_HTTP_URL to RUNTARA_CORE_ADDR", () => {
    const base = { ...ENV, RUNTARA_CORE_URL: undefined };
    assert.equal(readInstanceEnv({ ...base, RUNTARA_HTTP_URL: "https://core.example:9000" }).coreUrl, "https://core.example:9000");
    assert.equal(readInstanceEnv({ ...base, RUNTARA_CORE_ADDR: "127.0.0.1:8001" }).coreUrl, "http://127.0.0.1:8001");
    assert.throws(() => readInstanceEnv(base), (err: unknown) => err instanceof ConfigError && err.variable === "RUNTARA_CORE_URL");
    assert.throws(() => readInstanceEnv({ ...ENV, RUNTARA_CORE_URL: "ftp://x" }), /RUNTARA_CORE_URL must be an http/);
    assert.throws(() => readInstanceEnv({ ...base, RUNTARA_CORE_ADDR: "nohost" }), /RUNTARA_CORE_ADDR must be host:port/);
  });

  it("rejects invalid optional values instead of defaulting", () => {
    const cases: [string, string][] = [
      ["RUNTARA_HEARTBEAT_INTERVAL_MS", "10s"],
      ["RUNTARA_HEARTBEAT_INTERVAL_MS", "0"],
      ["RUNTARA_SIGNAL_MODE", "push"],
      ["RUNTARA_SKIP_CERT_VERIFICATION", "maybe"],
      ["RUNTARA_CHECKPOINT_ID", "../etc"],
      ["RUNTARA_REQUEST_TIMEOUT_MS", "-5"],
    ];
    for (const [name, value] of cases) {
      assert.throws(
        () => readInstanceEnv({ ...ENV, [name]: value }),
        (err: unknown) => err instanceof ConfigError && err.variable === name,
        `${name}=${value}`,
      );
    }
    const ok = readInstanceEnv({ ...ENV, RUNTARA_SKIP_CERT_VERIFICATION: "true", RUNTARA_SIGNAL_MODE: "poll", RUNTARA_HEARTBEAT_INTERVAL_MS: "250" });
    assert.equal(ok.skipCertVerification, true);
    assert.equal(ok.signalMode, "poll");
    assert.equal(ok.heartbeatIntervalMs, 250);
  });

  it("lets code options win over env, env over defaults", () => {
    const env = readInstanceEnv({ ...ENV, RUNTARA_SIGNAL_MODE: "poll", RUNTARA_HEARTBEAT_INTERVAL_MS: "250" });
    assert.equal(compileSettings(env).signalMode, "poll");
    assert.equal(compileSettings(env, { signalMode: "watch" }).signalMode, "watch");
    assert.equal(compileSettings(env).heartbeatIntervalMs, 250);
    assert.equal(compileSettings(readInstanceEnv(ENV)).heartbeatIntervalMs, 10_000);
    assert.throws(() => compileSettings(env, { pollIntervalMs: 0 }), /pollIntervalMs/);
  });
});

describe("checkpoint ids", () => {
  it("allows [A-Za-z0-9._:-] up to 128 characters", () => {
    validateCheckpointId("step-1.a:b_c");
    validateCheckpointId("x".repeat(128));
    for (const bad of ["", ".", "..", "a/b", "a b", "x".repeat(129), "é"]) {
      assert.throws(() => validateCheckpointId(bad), RangeError, bad);
    }
  });

  it("reserves the SDK's own prefixes and checks prefixed signal ids fit", () => {
    assert.throws(() => validateStepKey("sleep:1"), /reserved/);
    assert.throws(() => validateStepKey("signal:x"), /reserved/);
    assert.equal(signalCheckpointId("approval"), "signal:approval");
    assert.throws(() => signalCheckpointId("x".repeat(125)), /too long/);
  });
});

describe("planSleep", () => {
  const base = { nowMs: 1_000_000, inProcessSleepMaxMs: 1_000 };
  it("first run: suspends for long sleeps, waits in-process (and saves) for short ones", () => {
    assert.deepEqual(planSleep({ ...base, storedWakeAtMs: undefined, durationMs: 60_000 }), {
      kind: "suspend",
      wakeAtMs: 1_060_000,
      remainingMs: 60_000,
    });
    assert.deepEqual(planSleep({ ...base, storedWakeAtMs: undefined, durationMs: 200 }), {
      kind: "wait",
      wakeAtMs: 1_000_200,
      remainingMs: 200,
      save: true,
    });
  });

  it("replay: uses the stored wake time, never the full duration again", () => {
    assert.equal(planSleep({ ...base, storedWakeAtMs: 999_000, durationMs: 60_000 }).kind, "continue");
    assert.equal(planSleep({ ...base, storedWakeAtMs: 1_000_000, durationMs: 60_000 }).kind, "continue");
    assert.deepEqual(planSleep({ ...base, storedWakeAtMs: 1_000_300, durationMs: 60_000 }), {
      kind: "wait",
      wakeAtMs: 1_000_300,
      remainingMs: 300,
      save: false,
    });
    assert.deepEqual(planSleep({ ...base, storedWakeAtMs: 1_030_000, durationMs: 60_000 }), {
      kind: "suspend",
      wakeAtMs: 1_030_000,
      remainingMs: 30_000,
    });
  });
});

// ------------------------------------------------------------------ runtime against the fake

describe("runWorkflow: steps and replay", () => {
  it("runs steps once, completes with JSON output, and replays stored results", async () => {
    const core = new FakeCore();
    const ran: string[] = [];
    const workflow = async (ctx: WorkflowContext<{ n: number }>) => {
      const a = await ctx.step("a", () => (ran.push("a"), ctx.input.n * 10));
      const b = await ctx.step("b", async () => (ran.push("b"), { sum: a + 1, when: new Date(0) }));
      return { a, b };
    };
    const first = run(core, workflow);
    assert.equal(await first.exited, 0);
    assert.deepEqual(ran, ["a", "b"]);
    // The first run already sees the JSON round-tripped value, exactly as a replay would.
    assert.deepEqual(parse(core.output), { a: 20, b: { sum: 21, when: "1970-01-01T00:00:00.000Z" } });
    assert.deepEqual(parse(core.checkpoints.get("a")), 20);
    assert.equal(core.calls.find((c) => c.method === "register")?.req.checkpointId, "");

    core.status = InstanceStatus.SUSPENDED;
    const second = run(core, workflow, { checkpointId: "b" });
    assert.equal(await second.exited, 0);
    assert.deepEqual(ran, ["a", "b"], "replay must not run the steps again");
    assert.equal(core.calls.filter((c) => c.method === "register")[1]?.req.checkpointId, "b");
    assert.deepEqual(parse(core.output), { a: 20, b: { sum: 21, when: "1970-01-01T00:00:00.000Z" } });
  });

  it("returns the stored value when another writer saved the checkpoint first", async () => {
    const core = new FakeCore();
    core.checkpoints.set("k", json("theirs"));
    core.hiddenOnGet.add("k");
    const r = run(core, async (ctx) => ctx.step("k", () => "mine"));
    assert.equal(await r.exited, 0);
    assert.equal(parse(core.output), "theirs");
    assert.equal(parse(core.checkpoints.get("k")), "theirs");
  });

  it("retries a failing step in-process, but not past a nonRetryable WorkflowError", async () => {
    const core = new FakeCore();
    let attempts = 0;
    const r = run(core, async (ctx) =>
      ctx.step("flaky", ({ attempt }) => {
        attempts = attempt;
        if (attempt < 3) throw new Error("transient");
        return "ok";
      }, { retry: { maximumAttempts: 5, initialInterval: 1 } }),
    );
    assert.equal(await r.exited, 0);
    assert.equal(attempts, 3);
    assert.equal(parse(core.output), "ok");

    const core2 = new FakeCore();
    let calls = 0;
    const r2 = run(core2, async (ctx) =>
      ctx.step("fatal", () => {
        calls++;
        throw WorkflowError.nonRetryable("bad input");
      }, { retry: { maximumAttempts: 5, initialInterval: 1 } }),
    );
    assert.equal(await r2.exited, 1);
    assert.equal(calls, 1);
    assert.equal(core2.error, "bad input");
    assert.equal(core2.checkpoints.has("fatal"), false);
  });

  it("fails with the error message (exit 1), without string-matching 'cancelled'", async () => {
    const core = new FakeCore();
    const r = run(core, async () => {
      throw new Error("upstream API says: request cancelled");
    });
    assert.equal(await r.exited, 1);
    assert.equal(core.status, InstanceStatus.FAILED);
    assert.equal(core.error, "upstream API says: request cancelled");
    assert.equal(core.count("ackSignal"), 0);
  });

  it("fails when the output is not JSON-serialisable", async () => {
    const core = new FakeCore();
    const r = run(core, async () => ({ big: 1n }));
    assert.equal(await r.exited, 1);
    assert.match(core.error ?? "", /workflow output is not JSON-serialisable/);
  });

  it("exits 2 naming the variable when the environment is incomplete", async () => {
    const core = new FakeCore();
    const r = run(core, async () => "x", { env: { ...ENV, RUNTARA_INSTANCE_TOKEN: undefined } });
    assert.equal(await r.exited, 2);
    assert.ok(r.lines.some((l) => l.includes("RUNTARA_INSTANCE_TOKEN")), r.lines.join("\n"));
    assert.equal(core.calls.length, 0);
  });

  it("plain functions say they need an instance outside one", async () => {
    const saved = process.env.RUNTARA_INSTANCE_ID;
    delete process.env.RUNTARA_INSTANCE_ID;
    try {
      assert.throws(
        () => step("a", () => 1),
        (err: unknown) => err instanceof NotInInstanceError && /RUNTARA_INSTANCE_ID is not set/.test(err.message),
      );
    } finally {
      if (saved !== undefined) process.env.RUNTARA_INSTANCE_ID = saved;
    }
  });
});

describe("runWorkflow: durable sleep", () => {
  it("suspends with an absolute wake time and exits 0; the replay continues after it", async () => {
    const core = new FakeCore();
    const ran: string[] = [];
    const workflow = async (ctx: WorkflowContext) => {
      await ctx.step("before", () => ran.push("before"));
      await ctx.sleep("1m");
      await ctx.step("after", () => ran.push("after"));
      await ctx.sleep(50); // short: in-process, but still checkpointed as sleep:2
      return "done";
    };
    const t0 = Date.now();
    const first = run(core, workflow);
    assert.equal(await first.exited, 0);
    assert.deepEqual(ran, ["before"]);
    assert.equal(core.status, InstanceStatus.SUSPENDED);
    const wakeAt = parse(core.checkpoints.get("sleep:1")).wakeAt as number;
    assert.ok(wakeAt >= t0 + 60_000 && wakeAt <= Date.now() + 60_000);
    assert.equal(core.sleptUntil, wakeAt, "Sleep carries the stored absolute wake time");
    assert.equal(core.count("complete"), 0);

    // Relaunched too early (clock skew, or a resume): Sleep again with the *stored* time.
    const early = run(core, workflow, { checkpointId: "sleep:1" });
    assert.equal(await early.exited, 0);
    assert.equal(core.count("sleep"), 2);
    assert.equal(core.sleptUntil, wakeAt);
    assert.deepEqual(ran, ["before"]);

    // Relaunched at wake time.
    core.checkpoints.set("sleep:1", json({ wakeAt: Date.now() - 1 }));
    const woken = run(core, workflow, { checkpointId: "sleep:1" });
    assert.equal(await woken.exited, 0);
    assert.deepEqual(ran, ["before", "after"]);
    assert.equal(core.count("sleep"), 2, "no new suspension after the wake time");
    assert.ok(core.checkpoints.has("sleep:2"), "short sleeps are checkpointed too");
    assert.equal(parse(core.output), "done");
  });

  it("refuses a sleep record that is not one (workflow changed its sleep order)", async () => {
    const core = new FakeCore();
    core.checkpoints.set("sleep:1", json({ not: "a sleep" }));
    const r = run(core, async (ctx) => ctx.sleep("1h"));
    assert.equal(await r.exited, 1);
    assert.match(core.error ?? "", /does not hold a sleep record/);
  });
});

describe("runWorkflow: cancel and pause", () => {
  it("acks a CANCEL pushed over WatchSignals and exits 0 promptly while user code is stuck", async () => {
    const core = new FakeCore();
    let ctxSignal: AbortSignal | undefined;
    const r = run(core, async (ctx) => {
      ctxSignal = ctx.signal;
      await ctx.step("a", () => 1);
      return await forever();
    });
    while (core.count("saveCheckpoint") === 0 || core.count("watchSignals") === 0) await tick(2);
    const sentAt = Date.now();
    core.signal(SignalType.CANCEL);
    assert.equal(await r.exited, 0);
    assert.ok(r.exitAt() - sentAt < 100, `exit took ${r.exitAt() - sentAt} ms`);
    assert.equal(core.status, InstanceStatus.CANCELLED);
    assert.deepEqual(
      core.calls.filter((c) => c.method === "ackSignal").map((c) => c.req.signalType),
      [SignalType.CANCEL],
    );
    assert.ok(ctxSignal?.aborted);
    assert.ok(ctxSignal?.reason instanceof CancelledError);
    assert.ok(isCancellation(ctxSignal?.reason));
    assert.ok(isCancellation(new Error("wrapped", { cause: new CancelledError() })));
    assert.equal(isCancellation(new Error("cancelled")), false);
    assert.equal(core.count("complete") + core.count("fail"), 0);
  });

  it("sees a PAUSE in a SaveCheckpoint response: acks it, exits 0, runs no further step", async () => {
    const core = new FakeCore();
    core.signalVia = new Set(["checkpoint"]);
    const ran: string[] = [];
    const r = run(core, async (ctx) => {
      await ctx.step("a", () => {
        core.signal(SignalType.PAUSE, { push: false });
        ran.push("a");
      });
      await ctx.step("b", () => ran.push("b"));
    });
    assert.equal(await r.exited, 0);
    assert.deepEqual(ran, ["a"]);
    assert.equal(core.status, InstanceStatus.SUSPENDED);
    assert.equal(core.calls.find((c) => c.method === "ackSignal")?.req.signalType, SignalType.PAUSE);
  });

  it("sees a signal in a heartbeat response", async () => {
    const core = new FakeCore();
    core.signalVia = new Set(["heartbeat"]);
    const r = run(core, async () => forever(), { heartbeatIntervalMs: 10 });
    await tick(5);
    core.signal(SignalType.PAUSE, { push: false });
    assert.equal(await r.exited, 0);
    assert.ok(core.count("heartbeat") >= 1);
    assert.equal(core.status, InstanceStatus.SUSPENDED);
  });

  it("settles the CANCEL when it replaced the PAUSE being acknowledged", async () => {
    const core = new FakeCore();
    let reason: unknown;
    core.beforeAck = (req) => {
      if (req.signalType === SignalType.PAUSE) core.pending = create(SignalSchema, { signalType: SignalType.CANCEL });
    };
    const r = run(core, async (ctx) => {
      ctx.signal.addEventListener("abort", () => (reason = ctx.signal.reason));
      return await forever();
    });
    while (core.count("watchSignals") === 0) await tick(2);
    core.signal(SignalType.PAUSE);
    assert.equal(await r.exited, 0);
    assert.equal(core.status, InstanceStatus.CANCELLED);
    assert.deepEqual(
      core.calls.filter((c) => c.method === "ackSignal").map((c) => c.req.signalType),
      [SignalType.PAUSE, SignalType.CANCEL],
    );
    assert.ok(reason instanceof CancelledError);
  });

  it("handles a CANCEL pending at Register before running any workflow code", async () => {
    const core = new FakeCore();
    core.pending = create(SignalSchema, { signalType: SignalType.CANCEL });
    let ran = false;
    const r = run(core, async () => {
      ran = true;
    });
    assert.equal(await r.exited, 0);
    assert.equal(ran, false);
    assert.equal(core.status, InstanceStatus.CANCELLED);
  });

  it("acknowledges RESUME and keeps running", async () => {
    const core = new FakeCore();
    const r = run(core, async (ctx) => {
      await ctx.step("a", () => 1);
      core.signal(SignalType.RESUME);
      await tick(20);
      return await ctx.step("b", () => 2);
    });
    assert.equal(await r.exited, 0);
    assert.equal(parse(core.output), 2);
    assert.equal(core.calls.find((c) => c.method === "ackSignal")?.req.signalType, SignalType.RESUME);
  });

  it("a PausedError is a cancellation to isCancellation", () => {
    assert.ok(isCancellation(new PausedError()));
  });
});

describe("runWorkflow: waitForSignal", () => {
  it("returns the pushed payload, stores it before acking, and replays it without waiting", async () => {
    const core = new FakeCore();
    const approval = defineSignal<{ ok: boolean }>("approval");
    const workflow = async (ctx: WorkflowContext) => {
      const got = await ctx.waitForSignal(approval);
      return { got };
    };
    const r = run(core, workflow);
    while (core.count("watchSignals") === 0) await tick(2);
    await tick(10);
    core.sendCustom("approval", json({ ok: true }));
    assert.equal(await r.exited, 0);
    assert.deepEqual(parse(core.output), { got: { ok: true } });
    assert.deepEqual(parse(core.checkpoints.get("signal:approval")), { ok: true });
    const saveIdx = core.calls.findIndex((c) => c.method === "saveCheckpoint" && c.req.checkpointId === "signal:approval");
    const ackIdx = core.calls.findIndex((c) => c.method === "ackSignal" && c.req.checkpointId === "approval");
    assert.ok(saveIdx >= 0 && ackIdx > saveIdx, "ack only after the payload is durable");
    assert.equal(core.custom.has("approval"), false);

    core.status = InstanceStatus.SUSPENDED;
    const replay = run(core, workflow, { checkpointId: "signal:approval" });
    assert.equal(await replay.exited, 0);
    assert.deepEqual(parse(core.output), { got: { ok: true } });
  });

  it("polls PollSignal{checkpoint_id} in poll mode; non-JSON payloads come back as text", async () => {
    const core = new FakeCore();
    const r = run(core, async (ctx) => ctx.waitForSignal("answer"), { signalMode: "poll", pollIntervalMs: 5 });
    await tick(30);
    assert.equal(core.count("watchSignals"), 0);
    core.custom.set("answer", text.encode("yes, go"));
    assert.equal(await r.exited, 0);
    assert.equal(parse(core.output), "yes, go");
    assert.ok(core.calls.some((c) => c.method === "pollSignal" && c.req.checkpointId === "answer"));
  });

  it("gives up after its timeout with a SignalTimeoutError (reported with Fail)", async () => {
    const core = new FakeCore();
    let caught: unknown;
    const r = run(core, async (ctx) => {
      try {
        return await ctx.waitForSignal("never", { timeout: "30ms" });
      } catch (err) {
        caught = err;
        throw err;
      }
    });
    assert.equal(await r.exited, 1);
    assert.ok(caught instanceof SignalTimeoutError);
    assert.match(core.error ?? "", /no signal "never" arrived within 30 ms/);
  });

  it("stops waiting when the instance is cancelled", async () => {
    const core = new FakeCore();
    let caught: unknown;
    const r = run(core, async (ctx) => {
      try {
        return await ctx.waitForSignal("approval");
      } catch (err) {
        caught = err;
        throw err;
      }
    });
    while (core.count("watchSignals") === 0) await tick(2);
    core.signal(SignalType.CANCEL);
    assert.equal(await r.exited, 0);
    await tick(5);
    assert.ok(caught instanceof CancelledError);
    assert.equal(core.count("fail"), 0);
  });
});

// ------------------------------------------------------------------ transport pieces

describe("signal channel and retries", () => {
  function channelFor(core: FakeCore, onSignal: (s: Signal | undefined) => void = () => {}) {
    const settings: RuntimeSettings = {
      ...compileSettings(readInstanceEnv(ENV), { pollIntervalMs: 5 }),
      watchBackoffInitialMs: 1,
      watchBackoffMaxMs: 2,
      watchMaxFailures: 3,
    };
    const { logger, lines } = memoryLogger();
    const channel = new SignalChannel(
      createClient(InstanceService, core.transport()),
      settings,
      { onSignal, onCustom: () => {}, waitPoints: () => [] },
      logger,
    );
    return { channel, lines };
  }

  it("falls back to polling when streams fail while core answers PollSignal", async () => {
    const core = new FakeCore();
    core.watchFails = true;
    const seen: SignalType[] = [];
    const { channel, lines } = channelFor(core, (s) => s && seen.push(s.signalType));
    channel.start();
    try {
      while (channel.mode !== "poll") await tick(2);
      assert.equal(core.count("watchSignals"), 3);
      assert.ok(lines.some((l) => l.includes("polling instead")));
      core.signal(SignalType.PAUSE, { push: false });
      while (seen.length === 0) await tick(2);
      assert.deepEqual(seen.slice(0, 1), [SignalType.PAUSE]);
    } finally {
      channel.stop();
    }
    assert.equal(DEFAULTS.watchMaxFailures, 5);
  });

  it("keeps watching through a core outage (polls fail too) and reconnects", async () => {
    const core = new FakeCore();
    core.down = true;
    const seen: SignalType[] = [];
    const { channel } = channelFor(core, (s) => s && seen.push(s.signalType));
    channel.start();
    try {
      while (core.count("watchSignals") < 8) await tick(2);
      assert.equal(channel.mode, "watch");
      core.down = false;
      core.signal(SignalType.CANCEL);
      while (seen.length === 0) await tick(2);
      assert.equal(channel.mode, "watch");
      assert.deepEqual(seen.slice(0, 1), [SignalType.CANCEL]);
    } finally {
      channel.stop();
    }
  });

  it("retries UNAVAILABLE unary calls until they succeed", async () => {
    let n = 0;
    const transport = createRouterTransport(
      (router) =>
        router.service(InstanceService, {
          heartbeat: () => {
            if (++n < 3) throw new ConnectError("core restarting", Code.Unavailable);
            return {};
          },
          getInput: () => {
            throw new ConnectError("nope", Code.FailedPrecondition);
          },
        }),
      { transport: { interceptors: [retryTransientInterceptor(1, 2)] } },
    );
    const client = createClient(InstanceService, transport);
    await client.heartbeat({ instanceId: "i" });
    assert.equal(n, 3);
    await assert.rejects(client.getInput({ instanceId: "i" }), (err: unknown) => err instanceof ConnectError && err.code === Code.FailedPrecondition);
  });
});
