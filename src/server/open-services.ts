import type { DescService } from "@bufbuild/protobuf";
import type { ConnectRouter, ConnectRouterOptions } from "@connectrpc/connect";
import { Health } from "../../gen/grpc/health/v1/health_pb.js";
import * as v1 from "../../gen/grpc/reflection/v1/reflection_pb.js";
import * as v1alpha from "../../gen/grpc/reflection/v1alpha/reflection_pb.js";
import { openBodiesGate, type Gate } from "./gates.js";
import { healthService } from "./health.js";
import { registerReflection } from "./reflection.js";

/**
 * Options of the methods anyone may call without credentials (grpc.health, reflection, the
 * environment's HealthCheck). Their requests are a few bytes; the small cap makes a large or
 * compressed-bomb body fail at its first frame instead of being buffered before any check.
 */
export const OPEN_METHOD_OPTIONS: ConnectRouterOptions = { readMaxBytes: 64 * 1024 };

/**
 * Requests to open methods whose bodies may arrive at once, per listener (each can pin up to
 * its 1 MiB flow-control window until answered). A health check's body ends at once (or at the
 * 64 KiB cap, which answers and ends the stream), so a burst past the cap (watchers reconnecting
 * together) gets RESOURCE_EXHAUSTED and retries; a reflection
 * stream stays open while its client talks and can pin a few MiB of buffers (measured ~3 MiB
 * for one that sends without reading answers), so reflection gets its own, smaller share:
 * holding it all blocks only grpcurl's `list`, never a health probe.
 */
const MAX_OPEN_HEALTH_BODIES = 256;
const MAX_OPEN_REFLECTION_STREAMS = 16;
const REFLECTION = new Set([v1.ServerReflection.typeName, v1alpha.ServerReflection.typeName]);

/**
 * Gates of the methods open without credentials (health, reflection, and `alsoOpen` as
 * "Service/Method"): a bounded number of their request bodies may be arriving at once.
 */
export function openMethodsGates(alsoOpen: readonly string[] = []): Gate[] {
  const health = new Set(alsoOpen);
  return [
    openBodiesGate((rpc) => rpc.service === Health.typeName || health.has(`${rpc.service}/${rpc.method}`), MAX_OPEN_HEALTH_BODIES),
    openBodiesGate((rpc) => REFLECTION.has(rpc.service), MAX_OPEN_REFLECTION_STREAMS),
  ];
}

/** grpc.health.v1.Health and server reflection for `served`, under OPEN_METHOD_OPTIONS. */
export function registerOpenServices(router: ConnectRouter, served: readonly DescService[], probe: () => Promise<boolean>): void {
  router.service(Health, healthService(served.map((s) => s.typeName), probe), OPEN_METHOD_OPTIONS);
  registerReflection(router, [...served, Health], OPEN_METHOD_OPTIONS);
}
