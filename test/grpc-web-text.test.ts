/**
 * gRPC-Web text mode (issue 13): `application/grpc-web-text`, the `grpc-web` npm client's
 * default and its only mode for server streams, served for unary and server-streaming calls
 * (the Connect library alone answers 415). Driven by the `grpc-web` package itself (its XHR
 * transport, on xhr2 in Node), with the generated protobuf-es messages as its codec, and by hand
 * for the base64 framing's corners.
 */
import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import { after, before, describe, it } from "node:test";
import { fromBinary, toBinary, type DescMessage, type MessageShape } from "@bufbuild/protobuf";
import * as grpcWeb from "grpc-web";
import XMLHttpRequest from "xhr2";
import { InstanceStatus } from "../gen/runtara/core/v1/types_pb.js";
import {
  EnvironmentService,
  GetImageRequestSchema,
  GetImageResponseSchema,
  HealthCheckRequestSchema,
  HealthCheckResponseSchema,
  RunnerType,
  WatchInstanceRequestSchema,
  WatchInstanceResponseSchema,
  type WatchInstanceResponse,
} from "../gen/runtara/environment/v1/environment_pb.js";
import { buildFixtures } from "./fixtures/build.js";
import { environmentClient, startEnvironment, stopTestPostgres, type TestEnvironment } from "./helpers.js";

// grpc-web speaks through XMLHttpRequest, which Node lacks.
(globalThis as { XMLHttpRequest?: unknown }).XMLHttpRequest = XMLHttpRequest;
after(() => stopTestPostgres());

function descriptor<I extends DescMessage, O extends DescMessage>(method: string, kind: "unary" | "server_streaming", input: I, output: O) {
  return new grpcWeb.MethodDescriptor<MessageShape<I>, MessageShape<O>>(
    `/${EnvironmentService.typeName}/${method}`,
    kind,
    Object as never,
    Object as never,
    (req: MessageShape<I>) => toBinary(input, req),
    (bytes: Uint8Array) => fromBinary(output, bytes),
  );
}

describe("gRPC-Web text mode", () => {
  let t: TestEnvironment;
  const client = new grpcWeb.GrpcWebClientBase({ format: "text" });
  before(async () => {
    t = await startEnvironment({ maxRequestBytes: 2 * 1024 * 1024 }); // small, so the oversized text body is cheap to send
  });
  after(() => t?.close());

  it("a unary call through the grpc-web client", async () => {
    const method = descriptor("HealthCheck", "unary", HealthCheckRequestSchema, HealthCheckResponseSchema);
    const res = await client.unaryCall(`${t.baseUrl}${method.getName()}`, { $typeName: HealthCheckRequestSchema.typeName } as never, {}, method);
    assert.equal(res.healthy, true);
  });

  it("an error arrives with its code and message naming the field", async () => {
    const method = descriptor("GetImage", "unary", GetImageRequestSchema, GetImageResponseSchema);
    const request = { $typeName: GetImageRequestSchema.typeName, tenantId: "web", imageId: "not-a-uuid" } as never;
    await assert.rejects(client.unaryCall(`${t.baseUrl}${method.getName()}`, request, {}, method), (e: grpcWeb.RpcError) => {
      assert.equal(e.code, grpcWeb.StatusCode.INVALID_ARGUMENT);
      assert.match(e.message, /image_id/);
      return true;
    });
  });

  it("a server stream (WatchInstance) followed to COMPLETED through the grpc-web client", async () => {
    const env = environmentClient(t.baseUrl);
    const binary = await readFile((await buildFixtures()).workflow);
    const { imageId } = await env.registerImage({ tenantId: "web", name: "wf", binary, runnerType: RunnerType.NATIVE });
    const { instanceId } = await env.startInstance({ tenantId: "web", imageId, env: { WORKFLOW_MODE: "complete" } });
    const method = descriptor("WatchInstance", "server_streaming", WatchInstanceRequestSchema, WatchInstanceResponseSchema);
    const request = { $typeName: WatchInstanceRequestSchema.typeName, tenantId: "web", instanceId } as never;
    const seen: InstanceStatus[] = [];
    await new Promise<void>((resolve, reject) => {
      const stream = client.serverStreaming(`${t.baseUrl}${method.getName()}`, request, {}, method);
      stream.on("data", (res: WatchInstanceResponse) => {
        seen.push(res.instance!.status);
        if (res.instance!.status === InstanceStatus.COMPLETED) {
          stream.cancel();
          resolve();
        }
      });
      stream.on("error", reject);
      setTimeout(() => reject(new Error(`no COMPLETED within 30 s; saw ${seen.join(",")}`)), 30_000).unref();
    });
    assert.equal(seen.at(-1), InstanceStatus.COMPLETED);
  });

  it("base64 framing: pieces encoded one by one are decoded, bad base64 is INVALID_ARGUMENT, answers are text", async () => {
    const frame = (payload: Uint8Array) => Buffer.concat([Buffer.from([0, 0, 0, 0, payload.length]), payload]);
    const request = frame(toBinary(GetImageRequestSchema, { $typeName: GetImageRequestSchema.typeName, tenantId: "web", imageId: "not-a-uuid" } as never));
    // Two separately padded encodings one after another, as a client streaming its body may send.
    const body = Buffer.from(request.subarray(0, 4)).toString("base64") + Buffer.from(request.subarray(4)).toString("base64");
    const post = (text: string) =>
      fetch(`${t.baseUrl}/${EnvironmentService.typeName}/GetImage`, {
        method: "POST",
        headers: { "content-type": "application/grpc-web-text", "x-grpc-web": "1" },
        body: text,
      });
    const ok = await post(body);
    assert.equal(ok.headers.get("content-type"), "application/grpc-web-text+proto");
    const decoded = Buffer.from(await ok.text(), "base64").toString("latin1");
    assert.match(`${ok.headers.get("grpc-message") ?? ""}${decoded}`, /grpc-status: ?3|image_id/, "the error comes back in the text answer");
    // Thousands of padded one-byte encodings in one body decode as one (and cost linear time: bench figures in the issue note).
    const oneByOne = [...request].map((b) => Buffer.from([b]).toString("base64")).join("");
    const decodedOneByOne = Buffer.from(await (await post(oneByOne)).text(), "base64").toString("latin1");
    assert.match(decodedOneByOne, /image_id/, "the same answer as the body sent whole");
    const health = frame(new Uint8Array(0));
    const padded = [...health].map((b) => Buffer.from([b]).toString("base64")).join("") + "\r\n".repeat(4);
    const healthy = await fetch(`${t.baseUrl}/${EnvironmentService.typeName}/HealthCheck`, { method: "POST", headers: { "content-type": "application/grpc-web-text" }, body: padded });
    assert.equal(healthy.status, 200);
    // A text body longer than the largest message could encode to is refused.
    // (Line breaks, which the decoder skips, count too.)
    const huge = await post(`${Buffer.from(frame(new Uint8Array(0))).toString("base64")}${"\r\n".repeat(Math.ceil((t.env.options.maxRequestBytes * 2) / 3) + 8192)}`);
    const hugeAnswer = `${huge.headers.get("grpc-status") ?? ""} ${decodeURIComponent(huge.headers.get("grpc-message") ?? "")} ${Buffer.from(await huge.text(), "base64").toString("latin1")}`;
    assert.match(hugeAnswer, /exceeds/);
    const bad = await post("!!!!not base64");
    const answer = `${bad.headers.get("grpc-status") ?? ""} ${bad.headers.get("grpc-message") ?? ""} ${Buffer.from(await bad.text(), "base64").toString("latin1")}`;
    assert.match(answer, /3|INVALID_ARGUMENT/);
    assert.match(decodeURIComponent(answer), /not base64/);
  });
});
