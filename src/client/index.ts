/**
 * A client of the management API for Node programs: the generated EnvironmentService client
 * over HTTP/2 (Connect protocol, binary), with the API key sent on every call.
 */
import { createClient, type Client, type Interceptor, type Transport } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { EnvironmentService } from "../../gen/runtara/environment/v1/environment_pb.js";

export { EnvironmentService };
export type EnvironmentClient = Client<typeof EnvironmentService>;

export interface EnvironmentClientOptions {
  /** `http://host:8002` (h2c) or `https://host:8002`. */
  baseUrl: string;
  /** Sent as `authorization: Bearer <key>`. */
  apiKey?: string;
  /** PEM of the CA that signed the server's certificate (https). */
  ca?: Buffer;
  /** Accept any server certificate (https; for testing only). */
  insecure?: boolean;
  /** Replaces the transport built from the options above. */
  transport?: Transport;
}

export function createEnvironmentClient(options: EnvironmentClientOptions): EnvironmentClient {
  return createClient(EnvironmentService, options.transport ?? environmentTransport(options));
}

function environmentTransport(options: EnvironmentClientOptions): Transport {
  const interceptors: Interceptor[] = [];
  const key = options.apiKey;
  if (key) {
    interceptors.push((next) => (req) => {
      req.header.set("authorization", `Bearer ${key}`);
      return next(req);
    });
  }
  return createConnectTransport({
    baseUrl: options.baseUrl,
    // HTTP/2: image uploads are client streams, which HTTP/1.1 cannot carry.
    httpVersion: "2",
    useBinaryFormat: true,
    interceptors,
    // A server (or something posing as one) cannot make the client buffer more than this.
    readMaxBytes: 256 * 1024 * 1024,
    nodeOptions: {
      ...(options.ca ? { ca: options.ca } : {}),
      ...(options.insecure ? { rejectUnauthorized: false } : {}),
    },
  });
}
