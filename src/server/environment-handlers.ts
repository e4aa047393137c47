import type { ServiceImpl } from "@connectrpc/connect";
import type { EnvironmentService } from "../../gen/runtara/environment/v1/environment_pb.js";

export interface HealthProbes {
  version: string;
  startedAtMs: number;
  database(): Promise<boolean>;
  core(): Promise<boolean>;
  activeInstances(): Promise<bigint>;
}

export function healthHandler(probes: HealthProbes): Pick<ServiceImpl<typeof EnvironmentService>, "healthCheck"> {
  return {
    async healthCheck() {
      const [database, core] = await Promise.all([probes.database(), probes.core()]);
      const activeInstances = database ? await probes.activeInstances().catch(() => 0n) : 0n;
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
