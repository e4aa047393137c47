/**
 * StreamInstanceLogs (issue 11, item 3): an instance's stdout and stderr from the beginning or
 * the tail, followed live until it is terminal, across relaunches (each run marked), and never
 * through a link the workflow planted in its run directory.
 */
import assert from "node:assert/strict";
import { readFile, rm, symlink } from "node:fs/promises";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { Code } from "@connectrpc/connect";
import { InstanceStatus } from "../gen/runtara/core/v1/types_pb.js";
import { LogStream, RunnerType } from "../gen/runtara/environment/v1/environment_pb.js";
import { buildFixtures } from "./fixtures/build.js";
import { environmentClient, rejectsWithCode, startEnvironment, stopTestPostgres, waitUntil, type TestEnvironment } from "./helpers.js";

const TENANT = "tenant-logs";
after(() => stopTestPostgres());

describe("StreamInstanceLogs", () => {
  let t: TestEnvironment;
  let client: ReturnType<typeof environmentClient>;
  let chatty: string;

  before(async () => {
    t = await startEnvironment({ wakeReconcileIntervalMs: 500 });
    client = environmentClient(t.baseUrl);
    const script = "#!/bin/sh\nfor i in 1 2 3 4 5 6; do echo \"line $i\"; echo \"err $i\" >&2; sleep 0.4; done\n";
    chatty = (await client.registerImage({ tenantId: TENANT, name: "chatty", binary: new TextEncoder().encode(script), runnerType: RunnerType.NATIVE })).imageId;
  });
  after(() => t.close());

  async function collect(instanceId: string, options: { follow?: boolean; tailBytes?: bigint } = {}) {
    const out = { stdout: "", stderr: "", firstAt: 0 };
    const dec = new TextDecoder();
    for await (const r of client.streamInstanceLogs({ tenantId: TENANT, instanceId, follow: options.follow ?? false, tailBytes: options.tailBytes ?? 0n }, { timeoutMs: 60_000 })) {
      out.firstAt ||= Date.now();
      if (r.stream === LogStream.STDOUT) out.stdout += dec.decode(r.data);
      else out.stderr += dec.decode(r.data);
    }
    return out;
  }

  it("follows a running instance live and ends when it is terminal", async () => {
    const { instanceId } = await client.startInstance({ tenantId: TENANT, imageId: chatty });
    const followed = await collect(instanceId, { follow: true });
    const { instance } = await client.getInstanceStatus({ tenantId: TENANT, instanceId });
    assert.ok([InstanceStatus.FAILED, InstanceStatus.COMPLETED].includes(instance!.status), "terminal once the stream ended");
    assert.ok(followed.firstAt < Number(instance!.finishedAt!.seconds) * 1000, "output arrived while the instance ran");
    assert.match(followed.stdout, /^--- runtara: run [0-9a-f-]{36} started .* ---\nline 1\nline 2\nline 3\nline 4\nline 5\nline 6\n$/);
    assert.match(followed.stderr, /err 6\n$/);
    // Afterwards, the whole log, and its tail.
    assert.equal((await collect(instanceId)).stdout, followed.stdout);
    assert.equal((await collect(instanceId, { tailBytes: 14n })).stdout, "line 5\nline 6\n");
  });

  it("a follower that goes away mid-stream is a CANCELED call, not an internal error", async () => {
    const { instanceId } = await client.startInstance({ tenantId: TENANT, imageId: chatty });
    const abort = new AbortController();
    // Dropped after the first chunk: the server's next write finds the stream gone.
    for await (const r of client.streamInstanceLogs({ tenantId: TENANT, instanceId, follow: true, tailBytes: 0n }, { signal: abort.signal })) {
      if (r.data.byteLength > 0) break;
    }
    abort.abort();
    const ended = [InstanceStatus.COMPLETED, InstanceStatus.FAILED];
    await waitUntil(async () => ended.includes((await client.getInstanceStatus({ tenantId: TENANT, instanceId })).instance!.status), 30_000);
    const metrics = await (await fetch(`${t.baseUrl}/metrics`)).text();
    const streams = metrics.split("\n").filter((l) => l.startsWith("runtara_rpc_duration_seconds_count") && l.includes("StreamInstanceLogs"));
    assert.ok(streams.some((l) => l.includes('code="canceled"')), streams.join("\n"));
    assert.ok(!streams.some((l) => l.includes('code="internal"')), streams.join("\n"));
  });

  it("marks every run of a relaunched instance", async () => {
    const binary = await readFile((await buildFixtures()).workflow);
    const { imageId } = await client.registerImage({ tenantId: TENANT, name: "sleeper", binary, runnerType: RunnerType.NATIVE });
    const { instanceId } = await client.startInstance({ tenantId: TENANT, imageId, env: { WORKFLOW_MODE: "sleep", SLEEP_MS: "300" } });
    await waitUntil(async () => (await client.getInstanceStatus({ tenantId: TENANT, instanceId })).instance!.status === InstanceStatus.COMPLETED);
    const { stdout, stderr } = await collect(instanceId, { follow: true });
    assert.equal(stdout.match(/--- runtara: run /g)?.length, 2, stdout);
    assert.equal(stderr.match(/--- runtara: run /g)?.length, 2, stderr);
  });

  it("a log over the cap keeps its head and its tail", async () => {
    const capped = await startEnvironment({ maxLogBytes: 1024 * 1024 });
    try {
      const c = environmentClient(capped.baseUrl);
      // 3 MiB of numbered lines, then a last line; the cap is 1 MiB.
      const script = '#!/bin/sh\ni=0; while [ $i -lt 40000 ]; do echo "line $i ................................................................"; i=$((i+1)); done; echo "the very end"\n';
      const { imageId } = await c.registerImage({ tenantId: TENANT, name: "loud", binary: new TextEncoder().encode(script), runnerType: RunnerType.NATIVE });
      const { instanceId } = await c.startInstance({ tenantId: TENANT, imageId });
      let text = "";
      const dec = new TextDecoder();
      for await (const r of c.streamInstanceLogs({ tenantId: TENANT, instanceId, follow: true, tailBytes: 0n }, { timeoutMs: 60_000 })) {
        if (r.stream === LogStream.STDOUT) text += dec.decode(r.data, { stream: true });
      }
      const whole = await readFile(path.join(capped.dataDir, "runs", TENANT, instanceId, "stdout.log"), "utf8");
      assert.ok(Buffer.byteLength(whole) <= 1024 * 1024, `the log holds ${Buffer.byteLength(whole)} bytes`);
      assert.match(whole, /^--- runtara: run .*\nline 0 \./, "the head is kept");
      assert.match(whole, /bytes of the middle were dropped here/, "the cut is marked");
      assert.match(whole, /line 39999 \.+\nthe very end\n$/, "the tail is kept");
      assert.match(text, /the very end\n$/, "the follower saw the end");
      const seen = [...text.matchAll(/^line (\d+) /gm)].map((m) => Number(m[1]));
      assert.ok(seen.every((n, i) => i === 0 || n > seen[i - 1]!), "the follower saw no line twice and none out of order");
    } finally {
      await capped.close();
    }
  });

  it("a follower slower than the workflow loses lines only at a marked cut, never silently", async () => {
    const capped = await startEnvironment({ maxLogBytes: 1024 * 1024 });
    try {
      const c = environmentClient(capped.baseUrl);
      // ~5.8 MiB in bursts of 72 KB (a few block writes each) every 0.1 s; the follower reads
      // ~200 KB/s, so the cap cuts under it again and again. Few large writes, because a write
      // landing in the instant between the cap's last size check and its truncate is lost from
      // the file itself (README), which no follower could see.
      const script =
        '#!/bin/sh\nawk \'BEGIN { for (i = 0; i < 80000; i++) { printf "line %d ................................................................\\n", i; if (i % 1000 == 999) { fflush(); system("sleep 0.1") } } print "the very end" }\'\n';
      const { imageId } = await c.registerImage({ tenantId: TENANT, name: "steady", binary: new TextEncoder().encode(script), runnerType: RunnerType.NATIVE });
      const { instanceId } = await c.startInstance({ tenantId: TENANT, imageId });
      let text = "";
      const dec = new TextDecoder();
      const log = path.join(capped.dataDir, "runs", TENANT, instanceId, "stdout.log");
      const shiftNow = async () => /; shift (\d+)\]/.exec((await readFile(log)).subarray(512 * 1024, 512 * 1024 + 200).toString("latin1"))?.[1];
      let paused = false;
      for await (const r of c.streamInstanceLogs({ tenantId: TENANT, instanceId, follow: true, tailBytes: 0n }, { timeoutMs: 120_000 })) {
        if (r.stream === LogStream.STDOUT) text += dec.decode(r.data, { stream: true });
        if (!paused && text.length > 600 * 1024) {
          // Past the head: stop reading until the cap has cut the log under us, whatever the machine's speed.
          paused = true;
          // A cut must drop more than the server could have read ahead of us: wait for 1.5 MiB.
          const before = Number((await shiftNow()) ?? 0);
          await waitUntil(async () => Number((await shiftNow()) ?? 0) >= before + 1.5 * 1024 * 1024, 60_000);
        }
        await new Promise((resolve) => setTimeout(resolve, 300));
      }
      let last = -1;
      let cuts = 0;
      let cutAllowed = false;
      for (const line of text.split("\n")) {
        if (line.includes("bytes of the middle were dropped here")) {
          cutAllowed = true;
          cuts++;
          continue;
        }
        const m = /^line (\d+) \.{64}$/.exec(line);
        if (!m) continue;
        const n = Number(m[1]);
        if (!(n === last + 1 || (cutAllowed && n > last))) {
          const at = text.indexOf(`line ${n} `, text.indexOf(`line ${last} `));
          assert.fail(`line ${n} after line ${last} with no marked cut between: ${JSON.stringify(text.slice(at - 300, at + 100))}`);
        }
        last = n;
        cutAllowed = false;
      }
      assert.ok(cuts > 0, "the cap cut under the follower");
      assert.match(text, /line 79999 \.+\nthe very end\n$/, "the follower saw the end");
    } finally {
      await capped.close();
    }
  });

  it("another tenant's instance is NOT_FOUND; a symlink planted as a log is not followed", async () => {
    const { instanceId } = await client.startInstance({ tenantId: TENANT, imageId: chatty });
    const first = (tenantId: string, tailBytes = 0n) => client.streamInstanceLogs({ tenantId, instanceId, follow: false, tailBytes })[Symbol.asyncIterator]().next();
    await rejectsWithCode(first("someone-else"), Code.NotFound);
    await rejectsWithCode(first(TENANT, -1n), Code.InvalidArgument, "tail_bytes");
    await collect(instanceId, { follow: true });
    const log = path.join(t.dataDir, "runs", TENANT, instanceId, "stdout.log");
    await rm(log);
    await symlink("/etc/passwd", log);
    const { stdout } = await collect(instanceId);
    assert.equal(stdout, "", "nothing read through the link");
  });
});
