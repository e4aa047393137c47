import type { ConnectRouter, ServiceImpl } from "@connectrpc/connect";
import { EnvironmentService } from "../../gen/runtara/environment/v1/environment_pb.js";
import type { ImageService, ResumableUploads } from "../images/index.js";
import type { InstanceManager, InstanceTimeline, RunLogReader, SignalService } from "../instances/index.js";
import { healthHandler, type HealthProbes } from "./environment-handlers.js";
import { imageHandlers } from "./image-handlers.js";
import { lifecycleHandlers, type LifecycleDefaults } from "./lifecycle-handlers.js";
import { logHandlers } from "./log-handlers.js";
import { OPEN_METHODS } from "./environment-access.js";
import { OPEN_METHOD_OPTIONS, registerOpenServices } from "./open-services.js";
import { signalHandlers } from "./signal-handlers.js";
import { timelineHandlers } from "./timeline-handlers.js";
import { uploadHandlers } from "./upload-handlers.js";

export interface EnvironmentRoutesDeps {
  images: ImageService;
  uploads: ResumableUploads;
  instances: InstanceManager;
  signals: SignalService;
  logs: RunLogReader;
  timeline: InstanceTimeline;
  defaults: LifecycleDefaults;
  probes: HealthProbes;
}

/**
 * EnvironmentService's handlers, checked for completeness at compile time: an RPC added to
 * the proto without a handler fails the build instead of answering UNIMPLEMENTED.
 */
export function environmentService(deps: EnvironmentRoutesDeps): ServiceImpl<typeof EnvironmentService> {
  return {
    ...healthHandler(deps.probes),
    ...imageHandlers(deps.images),
    ...uploadHandlers(deps.uploads),
    ...signalHandlers(deps.signals),
    ...lifecycleHandlers(deps.instances, deps.defaults),
    ...logHandlers(deps.logs),
    ...timelineHandlers(deps.timeline),
  };
}

/** Every service served on the management port. */
export function environmentRoutes(deps: EnvironmentRoutesDeps) {
  return (router: ConnectRouter) => {
    const impl = environmentService(deps);
    // Method by method: those open to callers without a key get the open methods' cap.
    for (const method of EnvironmentService.methods) {
      router.rpc(method as never, impl[method.localName as keyof typeof impl] as never, OPEN_METHODS.has(method.name) ? OPEN_METHOD_OPTIONS : undefined);
    }
    registerOpenServices(router, [EnvironmentService], deps.probes.database);
  };
}
