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
  // An empty variable counts as unset.
  const fromEnv = (name: string) => env[name] || undefined;
  const profile = readProfile(flags.config ?? fromEnv("RUNTARA_CONFIG") ?? defaultConfigFile(env), flags.profile ?? fromEnv("RUNTARA_PROFILE"));
  const server = flags.server ?? fromEnv("RUNTARA_SERVER") ?? profile.server ?? DEFAULT_SERVER;
  let url: URL;
  try {
    url = new URL(server);
    if (!/^https?:$/.test(url.protocol)) throw new Error();
  } catch {
    throw new UsageError(`--server must be an http:// or https:// URL, got ${JSON.stringify(server)}`);
  }
  // The server is named in messages; a password in it would be printed with them.
  if (url.username !== "" || url.password !== "") throw new UsageError("--server must not hold credentials; give the key with --api-key (RUNTARA_API_KEY)");
  const output = flags.output ?? "table";
  if (output !== "table" && output !== "json") throw new UsageError(`--output must be table or json, got ${JSON.stringify(output)}`);
  const timeoutSecs = Number(flags.timeout ?? "30");
  if (!/^\d+(\.\d+)?$/.test(flags.timeout ?? "30") || timeoutSecs <= 0 || timeoutSecs > 86_400) {
    throw new UsageError(`--timeout must be a number of seconds from 0 to 86400, got ${JSON.stringify(flags.timeout)}`);
  }
  // A profile's credentials go only to that profile's server, never to one named otherwise.
  const own = server === profile.server ? profile : {};
  const caFile = flags.caFile ?? fromEnv("RUNTARA_CA_FILE") ?? own.caFile;
  const apiKey = flags.apiKey ?? fromEnv("RUNTARA_API_KEY") ?? own.apiKey;
  if (apiKey !== undefined && !/^[\x21-\x7e]+$/.test(apiKey)) throw new UsageError("the API key holds characters an HTTP header cannot carry (spaces, newlines, non-ASCII)");
  let ca: Buffer | undefined;
  if (caFile !== undefined) {
    try {
      ca = readFileSync(caFile);
    } catch (e) {
      throw new UsageError(`--ca-file: cannot read ${caFile}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
    }
  }
  return {
    server,
    tenant: flags.tenant || fromEnv("RUNTARA_TENANT") || profile.tenant || "default",
    output,
    client: createEnvironmentClient({
      baseUrl: server,
      ...(apiKey ? { apiKey } : {}),
      ...(ca ? { ca } : {}),
      insecure: flags.insecure ?? own.insecure ?? false,
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
    // A parse error quotes the text around the fault, which may be a key: say where, not what.
    if (e instanceof SyntaxError) throw new UsageError(`the config file ${file} is not valid JSON${/position \d+/.exec(e.message) ? ` (at ${/position \d+/.exec(e.message)![0]})` : ""}`);
    throw new UsageError(`cannot read the config file ${file}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
  if (typeof config !== "object" || config === null) throw new UsageError(`the config file ${file} must hold a JSON object`);
  const chosen = name ?? config.default;
  if (chosen === undefined) return {};
  const profiles = typeof config.profiles === "object" && config.profiles !== null ? config.profiles : {};
  const profile = Object.hasOwn(profiles, chosen) ? profiles[chosen] : undefined;
  if (profile === undefined) throw new UsageError(`no profile ${JSON.stringify(chosen)} in ${file} (profiles: ${Object.keys(profiles).join(", ") || "none"})`);
  if (typeof profile !== "object" || profile === null) throw new UsageError(`profile ${JSON.stringify(chosen)} in ${file} must be an object`);
  for (const key of ["server", "apiKey", "tenant", "caFile"] as const) {
    if (profile[key] !== undefined && typeof profile[key] !== "string") throw new UsageError(`profile ${JSON.stringify(chosen)} in ${file}: ${key} must be a string`);
  }
  if (profile.insecure !== undefined && typeof profile.insecure !== "boolean") throw new UsageError(`profile ${JSON.stringify(chosen)} in ${file}: insecure must be true or false`);
  return profile;
}
