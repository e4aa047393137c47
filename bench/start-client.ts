/**
 * The start bench's API client, in a process of its own as a user's client is: calls
 * StartInstance for each request line on stdin ({"id", "request"}) and answers one line each
 * ({"id"} or {"id", "error"}), concurrently. Argument: the environment's base URL.
 */
import type { MessageInitShape } from "@bufbuild/protobuf";
import { createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { createInterface } from "node:readline";
import { EnvironmentService, type StartInstanceRequestSchema } from "../gen/runtara/environment/v1/environment_pb.js";

const client = createClient(EnvironmentService, createConnectTransport({ baseUrl: process.argv[2]!, httpVersion: "2", useBinaryFormat: true }));
const out = (m: object) => process.stdout.write(`${JSON.stringify(m)}\n`);
createInterface({ input: process.stdin })
  .on("line", (line) => {
    const { id, request } = JSON.parse(line) as { id: number; request: MessageInitShape<typeof StartInstanceRequestSchema> };
    client.startInstance(request).then(
      () => out({ id }),
      (e: unknown) => out({ id, error: String(e) }),
    );
  })
  .on("close", () => process.exit(0));
