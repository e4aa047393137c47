import { readFile } from "node:fs/promises";
import net from "node:net";
import tls from "node:tls";
import { ConfigError, type CompiledOptions } from "./config.js";

/** How the environment's own parts (its core client, the containers' socket bridge) reach core. */
export interface CoreLink {
  /** Base URL of core: http:// or https://. */
  readonly baseUrl: string;
  /**
   * A new connection to core whose bytes speak `protocol` (TLS negotiates it by ALPN).
   * `asEnvironment` presents the environment's client certificate, when it has one (for
   * CoreService calls to a core that demands one); the containers' bridge never does.
   */
  connect(protocol: "h2" | "http/1.1", asEnvironment: boolean): net.Socket;
}

/**
 * The link to core: the embedded one on the port it bound (`embeddedPort`), or the configured
 * standalone one. TLS when core speaks it: a standalone core's certificate is verified (system
 * roots plus RUNTARA_CORE_CA_FILE, unless RUNTARA_SKIP_CERT_VERIFICATION); an embedded core is
 * this very process on a port it holds, so there is nothing to verify.
 */
export async function coreLink(o: CompiledOptions, host: string, embeddedPort: number | undefined): Promise<CoreLink> {
  const port = embeddedPort ?? o.corePort;
  const bracketed = net.isIPv6(host) ? `[${host}]` : host;
  if (!o.coreTls) {
    return { baseUrl: `http://${bracketed}:${port}`, connect: () => net.connect(port, host) };
  }
  const read = (file: string, variable: string) =>
    readFile(file).catch((e: Error) => {
      throw new ConfigError(`${variable}: cannot read ${file}: ${e.message}`);
    });
  const verify: tls.ConnectionOptions =
    embeddedPort !== undefined || o.skipCertVerification
      ? { rejectUnauthorized: false }
      : {
          rejectUnauthorized: true,
          ...(net.isIP(host) === 0 ? { servername: host } : {}),
          ...(o.coreCaFile !== undefined ? { ca: [...tls.rootCertificates, (await read(o.coreCaFile, "RUNTARA_CORE_CA_FILE")).toString()] } : {}),
        };
  const clientCert: tls.ConnectionOptions =
    o.coreClientCertFile !== undefined && o.coreClientKeyFile !== undefined
      ? { cert: await read(o.coreClientCertFile, "RUNTARA_CORE_CLIENT_CERT_FILE"), key: await read(o.coreClientKeyFile, "RUNTARA_CORE_CLIENT_KEY_FILE") }
      : {};
  return {
    baseUrl: `https://${bracketed}:${port}`,
    connect: (protocol, asEnvironment) => tls.connect({ host, port, ALPNProtocols: [protocol], ...verify, ...(asEnvironment ? clientCert : {}) }),
  };
}
