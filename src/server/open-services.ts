import type { DescService } from "@bufbuild/protobuf";
import type { ConnectRouter, ConnectRouterOptions } from "@connectrpc/connect";
import { Health } from "../../gen/grpc/health/v1/health_pb.js";
import { healthService } from "./health.js";
import { registerReflection } from "./reflection.js";

/**
 * Options of the methods anyone may call without credentials (grpc.health, reflection, the
 * environment's HealthCheck). Their requests are a few bytes; the small cap makes a large or
 * compressed-bomb body fail at its first frame instead of being buffered before any check.
 */
export const OPEN_METHOD_OPTIONS: ConnectRouterOptions = { readMaxBytes: 64 * 1024 };

/** grpc.health.v1.Health and server reflection for `served`, under OPEN_METHOD_OPTIONS. */
export function registerOpenServices(router: ConnectRouter, served: readonly DescService[], probe: () => Promise<boolean>): void {
  router.service(Health, healthService(served.map((s) => s.typeName), probe), OPEN_METHOD_OPTIONS);
  registerReflection(router, [...served, Health], OPEN_METHOD_OPTIONS);
}
