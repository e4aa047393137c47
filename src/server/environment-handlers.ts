import type { ServiceImpl } from "@connectrpc/connect";
import type { EnvironmentService } from "../../gen/runtara/environment/v1/environment_pb.js";

export interface HealthProbes {
  version: string;
  startedAtMs: number;
  database(): Promise<boolean>;
  core(): Promise<boolean>;
  /** PENDING and RUNNING instances: of one tenant, or of all when undefined. */
  activeInstances(tenantId: string | undefined): Promise<bigint>;
  /**
   * Who asks, from the request headers: `all` (no API keys are configured), a tenant (a valid
   * key), or undefined (no valid key), who learns only whether the service is healthy.
   */
  caller(headers: Headers): "all" | { tenantId: string } | undefined;
}

export function healthHandler(probes: HealthProbes): Pick<ServiceImpl<typeof EnvironmentService>, "healthCheck"> {
  return {
    async healthCheck(_req, ctx) {
      const [database, core] = await Promise.all([probes.database(), probes.core()]);
      const caller = probes.caller(ctx.requestHeader);
      if (caller === undefined) return { healthy: database && core };
      const tenantId = caller === "all" ? undefined : caller.tenantId;
      const activeInstances = database ? await probes.activeInstances(tenantId).catch(() => 0n) : 0n;
      return {
        healthy: database && core,
        version: probes.version,
        uptimeMs: BigInt(Date.now() - probes.startedAtMs),
        activeInstances,
        databaseReachable: database,
        coreReachable: core,
      };
    },
  };
}
