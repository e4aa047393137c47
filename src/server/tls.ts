import { readFile } from "node:fs/promises";
import tls from "node:tls";
import { ConfigError, type TlsFiles } from "../config.js";
import type { TlsMaterial } from "./http.js";

/**
 * Reads a listener's PEM files and builds a secure context from them once, so a wrong key,
 * a certificate that does not match it or an unreadable file stops startup naming the
 * variable, instead of failing every handshake later.
 */
export async function loadTlsMaterial(files: TlsFiles, variables: string): Promise<TlsMaterial> {
  const read = (file: string) =>
    readFile(file).catch((e: Error) => {
      throw new ConfigError(`${variables}: cannot read ${file}: ${e.message}`);
    });
  const material: TlsMaterial = {
    cert: await read(files.certFile),
    key: await read(files.keyFile),
    ...(files.clientCaFile !== undefined ? { clientCa: await read(files.clientCaFile) } : {}),
  };
  try {
    tls.createSecureContext({ cert: material.cert, key: material.key, ...(material.clientCa ? { ca: material.clientCa } : {}) });
  } catch (e) {
    throw new ConfigError(`${variables}: ${(e as Error).message}`);
  }
  return material;
}
