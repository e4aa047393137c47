import type { ServiceImpl } from "@connectrpc/connect";
import { type EnvironmentService, LogStream } from "../../gen/runtara/environment/v1/environment_pb.js";
import { InvalidArgument } from "../errors.js";
import type { RunLogReader } from "../instances/index.js";
import { requireId } from "../validation.js";

/** Largest tail_bytes: what a run's log keeps at most is far less. */
const MAX_TAIL_BYTES = 1024 ** 3;

export function logHandlers(logs: RunLogReader): Pick<ServiceImpl<typeof EnvironmentService>, "streamInstanceLogs"> {
  return {
    async *streamInstanceLogs(req, ctx) {
      if (req.tailBytes < 0n || req.tailBytes > BigInt(MAX_TAIL_BYTES)) throw new InvalidArgument("tail_bytes", `must be between 0 and ${MAX_TAIL_BYTES}`);
      const chunks = logs.read({
        tenantId: requireId("tenant_id", req.tenantId),
        instanceId: requireId("instance_id", req.instanceId),
        follow: req.follow,
        tailBytes: Number(req.tailBytes),
        signal: ctx.signal,
      });
      for await (const chunk of chunks) {
        yield { stream: chunk.stream === "stdout" ? LogStream.STDOUT : LogStream.STDERR, data: chunk.data };
      }
    },
  };
}
