/**
 * Who and where the CLI talks to: flags, then RUNTARA_* variables, then a named profile of the
 * config file, then defaults.
 */
import { readFileSync } from "node:fs";
import { homedir } from "node:os";
import path from "node:path";
import type { CallOptions } from "@connectrpc/connect";
import { createEnvironmentClient, type EnvironmentClient } from "../../client/index.js";
import { UsageError } from "./failures.js";

export type OutputFormat = "table" | "json";

export interface GlobalFlags {
  server?: string;
  apiKey?: string;
  tenant?: string;
  output?: string;
  caFile?: string;
  insecure?: boolean;
  timeout?: string;
  profile?: string;
  config?: string;
}

interface Profile {
  server?: string;
  apiKey?: string;
  tenant?: string;
  caFile?: string;
  insecure?: boolean;
}

interface ConfigFile {
  /** Profile used when none is named. */
  default?: string;
  profiles?: Record<string, Profile>;
}

export interface Context {
  server: string;
  tenant: string;
  output: OutputFormat;
  client: EnvironmentClient;
  /** Options of a unary call (the deadline); streams that follow pass none. */
  unary: CallOptions;
  /** Colour and progress bars: only when writing to a terminal. */
  tty: boolean;
}

export const DEFAULT_SERVER = "http://127.0.0.1:8002";

export function defaultConfigFile(env: NodeJS.ProcessEnv = process.env): string {
  return path.join(env.XDG_CONFIG_HOME || path.join(homedir(), ".config"), "runtara", "config.json");
}

export function resolveContext(flags: GlobalFlags, env: NodeJS.ProcessEnv = process.env): Context {
  const profile = readProfile(flags.config ?? env.RUNTARA_CONFIG ?? defaultConfigFile(env), flags.profile ?? env.RUNTARA_PROFILE);
  const server = flags.server ?? env.RUNTARA_SERVER ?? profile.server ?? DEFAULT_SERVER;
  if (!/^https?:\/\/[^/]+/.test(server)) throw new UsageError(`--server must be an http:// or https:// URL, got ${JSON.stringify(server)}`);
  const output = flags.output ?? "table";
  if (output !== "table" && output !== "json") throw new UsageError(`--output must be table or json, got ${JSON.stringify(output)}`);
  const timeoutSecs = Number(flags.timeout ?? "30");
  if (!Number.isFinite(timeoutSecs) || timeoutSecs <= 0) throw new UsageError(`--timeout must be a positive number of seconds, got ${JSON.stringify(flags.timeout)}`);
  const caFile = flags.caFile ?? env.RUNTARA_CA_FILE ?? profile.caFile;
  const apiKey = flags.apiKey ?? env.RUNTARA_API_KEY ?? profile.apiKey;
  return {
    server,
    tenant: flags.tenant ?? env.RUNTARA_TENANT ?? profile.tenant ?? "default",
    output,
    client: createEnvironmentClient({
      baseUrl: server,
      ...(apiKey ? { apiKey } : {}),
      ...(caFile ? { caFile } : {}),
      insecure: flags.insecure ?? profile.insecure ?? false,
    }),
    unary: { timeoutMs: timeoutSecs * 1000 },
    tty: process.stdout.isTTY === true,
  };
}

function readProfile(file: string, name: string | undefined): Profile {
  let config: ConfigFile;
  try {
    config = JSON.parse(readFileSync(file, "utf8")) as ConfigFile;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT" && name === undefined) return {};
    if ((e as NodeJS.ErrnoException).code === "ENOENT") throw new UsageError(`profile ${JSON.stringify(name)} named, but there is no config file ${file}`);
    throw new UsageError(`cannot read the config file ${file}: ${(e as Error).message}`);
  }
  const chosen = name ?? config.default;
  if (chosen === undefined) return {};
  const profile = config.profiles?.[chosen];
  if (profile === undefined) throw new UsageError(`no profile ${JSON.stringify(chosen)} in ${file} (profiles: ${Object.keys(config.profiles ?? {}).join(", ") || "none"})`);
  return profile;
}
