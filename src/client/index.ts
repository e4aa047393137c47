/**
 * A client of the management API for Node programs: the generated EnvironmentService client
 * over HTTP/2 (Connect protocol, binary by default; gRPC or gRPC-Web on request), with the API
 * key and a default tenant sent on every call. Browsers get ./browser.ts through the package's
 * "browser" export condition.
 */
import { createClient, type Client, type Transport } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport, createGrpcWebTransport } from "@connectrpc/connect-node";
import { EnvironmentService } from "../../gen/runtara/environment/v1/environment_pb.js";
import { identityInterceptors, type ClientIdentity } from "./interceptors.js";

export { EnvironmentService };
export type EnvironmentClient = Client<typeof EnvironmentService>;

export interface EnvironmentClientOptions extends ClientIdentity {
  /** `http://host:8002` (h2c) or `https://host:8002`. */
  baseUrl: string;
  /** PEM of the CA that signed the server's certificate (https). */
  ca?: Buffer;
  /** Accept any server certificate (https; for testing only). */
  insecure?: boolean;
  /** The protocol (default `connect`), or a transport of your own that replaces all of the above. */
  transport?: "connect" | "grpc" | "grpc-web" | Transport;
}

/** The most a single answer may be: a server (or something posing as one) cannot make the client buffer more. */
const READ_MAX_BYTES = 256 * 1024 * 1024;

export function createEnvironmentClient(options: EnvironmentClientOptions): EnvironmentClient {
  return createClient(EnvironmentService, typeof options.transport === "object" ? options.transport : environmentTransport(options));
}

function environmentTransport(options: EnvironmentClientOptions): Transport {
  const common = {
    baseUrl: options.baseUrl,
    interceptors: identityInterceptors(options),
    readMaxBytes: READ_MAX_BYTES,
    nodeOptions: {
      ...(options.ca ? { ca: options.ca } : {}),
      ...(options.insecure ? { rejectUnauthorized: false } : {}),
    },
  };
  switch (options.transport ?? "connect") {
    case "grpc":
      return createGrpcTransport(common);
    case "grpc-web":
      return createGrpcWebTransport({ ...common, httpVersion: "2" });
    default:
      // HTTP/2: image uploads are client streams, which HTTP/1.1 cannot carry.
      return createConnectTransport({ ...common, httpVersion: "2", useBinaryFormat: true });
  }
}
