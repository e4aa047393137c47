import type { Interceptor } from "@connectrpc/connect";
import { EnvironmentService } from "../../gen/runtara/environment/v1/environment_pb.js";
import { tenantOfKeyCheck, type ApiKeys } from "./api-keys.js";
import { apiKeyGate, hostGate, type Gate } from "./gates.js";
import { openMethodsGates } from "./open-services.js";

/** Methods of EnvironmentService anyone may call (HealthCheck then says only healthy or not). */
export const OPEN_METHODS: ReadonlySet<string> = new Set([EnvironmentService.method.healthCheck.name]);

/**
 * Who may call the management API. With API keys: a valid key before the body is read, and
 * the key's tenant in every message. Without: the server is bound to loopback (or the
 * operator opted out), and the Host check keeps DNS-rebinding browser pages out.
 */
export function environmentAccess(keys: ApiKeys | undefined, allowedHosts: readonly string[]): { gates: Gate[]; interceptors: Interceptor[] } {
  const open = openMethodsGates([...OPEN_METHODS].map((m) => `${EnvironmentService.typeName}/${m}`));
  if (!keys) return { gates: [hostGate(allowedHosts), ...open], interceptors: [] };
  return {
    gates: [apiKeyGate(keys, EnvironmentService.typeName, OPEN_METHODS), ...open],
    interceptors: [tenantOfKeyCheck(keys, (service, method) => service !== EnvironmentService.typeName || OPEN_METHODS.has(method))],
  };
}
