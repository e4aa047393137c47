import path from "node:path";
import { LaunchError } from "./errors.js";
import { isValidInstanceId } from "./oci-spec.js";
import type { LaunchSpec } from "./types.js";

const ENV_NAME = /^[^=\0]+$/;

/** Refuses a spec the runners cannot launch safely; throws LaunchError("invalid_spec"). */
export function validateSpec(spec: LaunchSpec): void {
  const bad = (msg: string): never => {
    throw new LaunchError("invalid_spec", `instance ${JSON.stringify(spec.instanceId)}: ${msg}`);
  };
  if (!isValidInstanceId(spec.instanceId)) bad("instance id must be 1-128 characters of A-Z a-z 0-9 . _ : -");
  if (!path.isAbsolute(spec.runDir)) bad(`run directory must be absolute, got ${JSON.stringify(spec.runDir)}`);
  for (const [k, v] of Object.entries(spec.env)) {
    if (!ENV_NAME.test(k)) bad(`environment variable name ${JSON.stringify(k)} is empty or contains '=' or NUL`);
    if (typeof v !== "string" || v.includes("\0")) bad(`environment variable ${k} contains NUL`);
  }
  if (!["isolated", "none", "host"].includes(spec.networkMode)) bad(`network mode must be "isolated", "none" or "host"`);
  if (spec.coreSocketDir !== undefined && !path.isAbsolute(spec.coreSocketDir)) bad("core socket directory must be absolute");
  const l = spec.limits;
  for (const [name, value, min] of [
    ["memoryBytes", l.memoryBytes, 4 * 1024 * 1024],
    ["cpuQuotaUs", l.cpuQuotaUs, 1_000],
    ["cpuPeriodUs", l.cpuPeriodUs, 1_000],
    ["pidsLimit", l.pidsLimit, 1],
    ["nofile", l.nofile, 16],
    ["fileBytes", l.fileBytes, 1024 * 1024],
  ] as const) {
    if (!Number.isSafeInteger(value) || value < min) bad(`limit ${name} must be an integer >= ${min}, got ${value}`);
  }
  if (l.cpuPeriodUs > 1_000_000) bad(`limit cpuPeriodUs must be at most 1000000, got ${l.cpuPeriodUs}`);
  // The kernel's default fs.nr_open; a higher RLIMIT_NOFILE makes the runtime fail at start.
  if (l.nofile > 1_048_576) bad(`limit nofile must be at most 1048576, got ${l.nofile}`);
}
