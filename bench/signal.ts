/**
 * Signal delivery latency: SendCustomSignal on the environment (8002) → core → observed.
 * Measured in the same run:
 *   - floor: one trivial RPC round trip to the same server (HealthCheck of grpc.health),
 *   - raw WatchSignals: an instance client's stream receives the signal (LISTEN/NOTIFY push),
 *   - SDK watch / SDK poll: a workflow process's ctx.waitForSignal resolves (it also reads
 *     its replay checkpoint, and stores the payload durably before resolving).
 * The SDK workflow measures against the sender's timestamp in the payload.
 */
import path from "node:path";
import { fileURLToPath } from "node:url";
import { execa } from "execa";
import { createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { Health } from "../gen/grpc/health/v1/health_pb.js";
import { environmentClient, insertInstance, tokenOf, instanceClient, startEnvironment, stopTestPostgres, type TestEnvironment } from "../test/helpers.js";
import { envNumber, fmt, printLatency, summarize, targetLine } from "./lib.js";

const SIGNALS = envNumber("BENCH_SIGNALS", 1000);
const POLL_MS = envNumber("BENCH_POLL_INTERVAL_MS", 100);
const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const now = () => performance.timeOrigin + performance.now();

async function measure(t: TestEnvironment, mode: "watch" | "poll"): Promise<number[]> {
  const instanceId = await insertInstance(t, { input: { signals: SIGNALS } });
  const core = `127.0.0.1:${t.env.coreAddress!.port}`;
  const child = execa(process.execPath, ["--import", "tsx", path.join(root, "bench/workflows/signal-echo.ts")], {
    cwd: root,
    extendEnv: false,
    reject: false,
    env: {
      RUNTARA_INSTANCE_ID: instanceId,
      RUNTARA_TENANT_ID: "tenant-a",
      RUNTARA_CORE_URL: `http://${core}`,
      RUNTARA_CORE_ADDR: core,
      RUNTARA_INSTANCE_TOKEN: tokenOf(t, instanceId),
      RUNTARA_SIGNAL_MODE: mode,
      RUNTARA_SIGNAL_POLL_INTERVAL_MS: String(POLL_MS),
    },
  });
  const env = environmentClient(t.baseUrl);
  const pending = async (i: number) =>
    (await t.query(`SELECT 1 FROM custom_signals WHERE instance_id = $1 AND checkpoint_id = $2`, [instanceId, `ping-${i}`])).length > 0;
  while ((await t.query(`SELECT status FROM instances WHERE instance_id = $1`, [instanceId]))[0]!.status !== "running") {
    await new Promise((r) => setTimeout(r, 10));
  }
  await new Promise((r) => setTimeout(r, 500)); // let the SDK open its stream or start polling
  for (let i = 0; i < SIGNALS; i++) {
    const payload = new TextEncoder().encode(JSON.stringify({ sentAt: now() }));
    await env.sendCustomSignal({ tenantId: "tenant-a", instanceId, checkpointId: `ping-${i}`, payload });
    // Pace on the acknowledgement (not part of the measurement): one signal in flight at a
    // time, then a random pause so sends fall anywhere in a poll cycle.
    while (await pending(i)) await new Promise((r) => setTimeout(r, 5));
    await new Promise((r) => setTimeout(r, Math.random() * 20));
  }
  const res = await child;
  if (res.exitCode !== 0) throw new Error(`workflow exited ${res.exitCode}: ${res.stderr}`);
  const row = (await t.query(`SELECT output FROM instances WHERE instance_id = $1`, [instanceId]))[0]!;
  return (JSON.parse(row.output.toString()) as { latenciesMs: number[] }).latenciesMs;
}

/** Round trip of a trivial RPC to the environment's port: this machine's floor for any call. */
async function floor(t: TestEnvironment): Promise<number[]> {
  const health = createClient(Health, createConnectTransport({ baseUrl: t.baseUrl, httpVersion: "2" }));
  const samples: number[] = [];
  for (let i = 0; i < SIGNALS; i++) {
    const t0 = performance.now();
    await health.check({ service: "" });
    samples.push(performance.now() - t0);
  }
  return samples;
}

/** Send on 8002 until the instance's own WatchSignals stream delivers it. */
async function rawWatch(t: TestEnvironment): Promise<number[]> {
  const instanceId = await insertInstance(t);
  const client = instanceClient(t, instanceId);
  await client.register({ instanceId });
  const stream = client.watchSignals({ instanceId, includeCustom: true })[Symbol.asyncIterator]();
  await stream.next(); // the stream is open
  const env = environmentClient(t.baseUrl);
  const samples: number[] = [];
  for (let i = 0; i < SIGNALS; i++) {
    const t0 = performance.now();
    const next = stream.next();
    await env.sendCustomSignal({ tenantId: "tenant-a", instanceId, checkpointId: `ping-${i}`, payload: new Uint8Array([1]) });
    await next;
    samples.push(performance.now() - t0);
  }
  await stream.return?.();
  return samples;
}

const t = await startEnvironment();
try {
  const base = summarize(await floor(t));
  const raw = summarize(await rawWatch(t));
  const watch = summarize(await measure(t, "watch"));
  const poll = summarize(await measure(t, "poll"));
  console.log(`signal delivery, ${SIGNALS} signals each (send on 8002 -> observed)`);
  printLatency("floor: trivial RPC", base);
  printLatency("raw WatchSignals stream", raw);
  printLatency("SDK waitForSignal, watch", watch);
  printLatency(`SDK waitForSignal, poll ${POLL_MS}ms`, poll);
  console.log(`p50 ratios to the trivial-RPC floor: raw watch ${fmt(raw.p50 / base.p50)}, SDK watch ${fmt(watch.p50 / base.p50)}, SDK poll ${fmt(poll.p50 / base.p50)}`);
  console.log(`p50 ratio SDK poll / SDK watch: ${fmt(poll.p50 / watch.p50)}`);
  console.log(targetLine("raw WatchSignals p50", raw.p50, "<=", 3, " ms"));
  console.log(targetLine("raw WatchSignals p99", raw.p99, "<=", 10, " ms"));
  console.log(targetLine("SDK waitForSignal (watch) p50", watch.p50, "<=", 5, " ms"));
} finally {
  await t.close();
  await stopTestPostgres();
}
