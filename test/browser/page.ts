/**
 * The page the Chromium test loads from another origin than the API's: it calls the API
 * through the package's browser client (@connectrpc/connect-web, Connect and gRPC-Web
 * transports), uploads a 40 MiB image through the resumable upload (dropping one chunk's
 * connection on purpose and resuming), starts it, follows WatchInstance, reads an error's code
 * and a response header, and posts what it saw to its own origin's /result.
 */
import { ConnectError } from "@connectrpc/connect";
import { InstanceStatus } from "../../gen/runtara/core/v1/types_pb.js";
import { RunnerType } from "../../gen/runtara/environment/v1/environment_pb.js";
import { createEnvironmentClient } from "../../src/client/browser.js";

// The one DOM global used here (the project type-checks against Node's globals, which have the rest).
declare const location: { search: string };
const api = new URLSearchParams(location.search).get("api")!;
const TENANT = "browser";

async function run(): Promise<Record<string, unknown>> {
  const connect = createEnvironmentClient({ baseUrl: api, tenant: TENANT });
  const grpcWeb = createEnvironmentClient({ baseUrl: api, tenant: TENANT, transport: "grpc-web" });
  const out: Record<string, unknown> = {};

  let requestId: string | null = null;
  out.healthConnect = (await connect.healthCheck({}, { onHeader: (h) => (requestId = h.get("x-request-id")) })).healthy;
  out.requestIdVisible = requestId !== null;
  out.healthGrpcWeb = (await grpcWeb.healthCheck({})).healthy;

  const bytes = new Uint8Array(await (await fetch("/workflow.bin")).arrayBuffer());
  const sha256 = [...new Uint8Array(await crypto.subtle.digest("SHA-256", bytes))].map((b) => b.toString(16).padStart(2, "0")).join("");
  const { uploadId, maxChunkBytes } = await connect.beginImageUpload({ header: { name: "from-a-browser", runnerType: RunnerType.NATIVE, binarySize: BigInt(bytes.length) } });
  const chunkBytes = Math.min(Number(maxChunkBytes), 4 * 1024 * 1024);
  let offset = 0;
  let dropped = false;
  const progress: number[] = [];
  while (offset < bytes.length) {
    const data = bytes.subarray(offset, offset + chunkBytes);
    if (!dropped && offset >= 2 * chunkBytes) {
      // The connection drops mid-chunk: whatever arrived, the upload says where to go on.
      dropped = true;
      const abort = new AbortController();
      const call = connect.uploadImageChunk({ uploadId, offset: BigInt(offset), data }, { signal: abort.signal });
      abort.abort();
      out.droppedCode = await call.then(() => "none", (e: unknown) => ConnectError.from(e).code);
      offset = Number((await connect.getImageUpload({ uploadId })).receivedBytes);
      out.resumedFrom = offset;
      continue;
    }
    offset = Number((await connect.uploadImageChunk({ uploadId, offset: BigInt(offset), data })).receivedBytes);
    progress.push(offset);
  }
  out.progress = progress.length;
  const { image } = await connect.commitImageUpload({ uploadId, sha256 });
  out.image = { imageId: image!.imageId, size: Number(image!.sizeBytes), sha256: image!.sha256 === sha256 };

  const { instanceId } = await grpcWeb.startInstance({ imageId: image!.imageId, env: { WORKFLOW_MODE: "complete" } });
  const statuses: string[] = [];
  for await (const change of grpcWeb.watchInstance({ instanceId })) {
    statuses.push(InstanceStatus[change.instance!.status]);
    if (change.instance!.status >= InstanceStatus.COMPLETED) break;
  }
  out.instanceId = instanceId;
  out.statuses = statuses;

  for (const [name, client] of [["connect", connect], ["grpcWeb", grpcWeb]] as const) {
    try {
      await client.getImage({ imageId: "not-a-uuid" });
      out[`${name}Error`] = "none";
    } catch (e) {
      const err = ConnectError.from(e);
      out[`${name}Error`] = { code: err.code, message: err.rawMessage };
    }
  }
  return out;
}

const report = (body: unknown) => fetch("/result", { method: "POST", body: JSON.stringify(body) });
run().then(
  (out) => report({ ok: true, ...out }),
  (e: unknown) => report({ ok: false, error: String(e instanceof Error ? `${e.message}\n${e.stack}` : e) }),
);
