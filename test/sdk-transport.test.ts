/**
 * The SDK's core transport over a real h2c socket: a call whose connection dies before the
 * answer (core killed mid-call) is retried on a new connection, as UNAVAILABLE is.
 */
import assert from "node:assert/strict";
import http2 from "node:http2";
import type { AddressInfo, Socket } from "node:net";
import { describe, it } from "node:test";
import { Code, ConnectError } from "@connectrpc/connect";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import { InstanceService } from "../gen/runtara/core/v1/instance_pb.js";
import { createInstanceClient, createInstanceTransport } from "../src/sdk/client.js";
import { DEFAULTS, type RuntimeSettings } from "../src/sdk/settings.js";

/** A core that answers Heartbeat and EmitEvent, but kills the connection of the first `drops` calls. */
async function droppingCore(drops: number, kill: (socket: Socket) => void) {
  let calls = 0;
  const sockets = new Set<Socket>();
  const adapter = connectNodeAdapter({ routes: (router) => router.service(InstanceService, { heartbeat: () => ({}), emitEvent: () => ({ eventId: 1n }) }) });
  const server = http2.createServer((req, res) => {
    if (++calls <= drops) {
      for (const s of sockets) kill(s);
      return;
    }
    adapter(req, res);
  });
  server.on("connection", (s: Socket) => {
    sockets.add(s);
    s.once("close", () => sockets.delete(s));
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const settings = {
    ...DEFAULTS,
    coreUrl: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    token: "t",
    requestTimeoutMs: 10_000,
    skipCertVerification: false,
  } as RuntimeSettings;
  return {
    client: createInstanceClient(createInstanceTransport(settings)),
    calls: () => calls,
    close: () => {
      // The client keeps its h2 session open (pings); end it so the server can close.
      for (const s of sockets) s.destroy();
      return new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

describe("SDK transport to core", () => {
  for (const [how, kill] of [
    ["closed", (s: Socket) => s.destroy()],
    ["reset", (s: Socket) => s.resetAndDestroy()],
  ] as const) {
    it(`retries a call whose connection is ${how} before the answer`, async () => {
      const core = await droppingCore(2, kill);
      try {
        await core.client.heartbeat({ instanceId: "i" });
        assert.equal(core.calls(), 3);
      } finally {
        await core.close();
      }
    });
  }

  it("does not repeat an EmitEvent whose connection dropped (it may have been appended)", async () => {
    const core = await droppingCore(1, (s) => s.resetAndDestroy());
    try {
      await assert.rejects(core.client.emitEvent({ instanceId: "i", subtype: "x" }), (e) => e instanceof ConnectError && e.code === Code.Aborted);
      assert.equal(core.calls(), 1);
    } finally {
      await core.close();
    }
  });

  it("does not retry a call the caller aborted", async () => {
    const core = await droppingCore(0, () => {});
    try {
      const abort = new AbortController();
      abort.abort();
      await assert.rejects(core.client.heartbeat({ instanceId: "i" }, { signal: abort.signal }), (e) => e instanceof ConnectError && e.code === Code.Canceled);
      assert.equal(core.calls(), 0);
    } finally {
      await core.close();
    }
  });
});
