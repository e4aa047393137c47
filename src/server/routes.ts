import type { ConnectRouter } from "@connectrpc/connect";
import { EnvironmentService } from "../../gen/runtara/environment/v1/environment_pb.js";
import { Health } from "../../gen/grpc/health/v1/health_pb.js";
import type { ImageService } from "../images/index.js";
import type { CoreGateway } from "../instances/core-gateway.js";
import type { InstanceService } from "../instances/service.js";
import { healthHandler, type HealthProbes } from "./environment-handlers.js";
import { healthService } from "./health.js";
import { imageHandlers } from "./image-handlers.js";
import { lifecycleHandlers, type LifecycleDefaults } from "./lifecycle-handlers.js";
import { registerReflection } from "./reflection.js";
import { signalHandlers } from "./signal-handlers.js";

export interface EnvironmentRoutesDeps {
  images: ImageService;
  core: CoreGateway;
  instances: InstanceService;
  defaults: LifecycleDefaults;
  probes: HealthProbes;
}

/** Every service served on the management port. */
export function environmentRoutes(deps: EnvironmentRoutesDeps) {
  return (router: ConnectRouter) => {
    router.service(EnvironmentService, {
      ...healthHandler(deps.probes),
      ...imageHandlers(deps.images),
      ...signalHandlers(deps.core),
      ...lifecycleHandlers(deps.instances, deps.defaults),
    });
    router.service(Health, healthService([EnvironmentService.typeName], deps.probes.database));
    registerReflection(router, [EnvironmentService, Health]);
  };
}
