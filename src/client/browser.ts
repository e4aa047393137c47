/**
 * The management API client for browsers (fetch, no Node imports): the generated
 * EnvironmentService client over Connect (JSON by default) or gRPC-Web, with the API key and a
 * default tenant. Browsers cannot send client streams: upload images with the resumable upload
 * RPCs, not RegisterImageStream.
 */
import { createClient, type Client, type Transport } from "@connectrpc/connect";
import { createConnectTransport, createGrpcWebTransport } from "@connectrpc/connect-web";
import { EnvironmentService } from "../../gen/runtara/environment/v1/environment_pb.js";
import { identityInterceptors, type ClientIdentity } from "./interceptors.js";

export { EnvironmentService };
export type EnvironmentClient = Client<typeof EnvironmentService>;

export interface EnvironmentClientOptions extends ClientIdentity {
  /** Where the management API is, e.g. `https://runtara.example:8002`. */
  baseUrl: string;
  /** The protocol (default `connect`), or a transport of your own. */
  transport?: "connect" | "grpc-web" | Transport;
}

export function createEnvironmentClient(options: EnvironmentClientOptions): EnvironmentClient {
  if (typeof options.transport === "object") return createClient(EnvironmentService, options.transport);
  const common = { baseUrl: options.baseUrl, interceptors: identityInterceptors(options) };
  const transport = options.transport === "grpc-web" ? createGrpcWebTransport(common) : createConnectTransport(common);
  return createClient(EnvironmentService, transport);
}
