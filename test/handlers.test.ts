import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { Code, ConnectError, createClient, createRouterTransport } from "@connectrpc/connect";
import { pino } from "pino";
import { ConnectionError } from "slonik";
import { InstanceStatus, SignalType, SortOrder } from "../gen/runtara/core/v1/types_pb.js";
import { EnvironmentService, InstanceOrder } from "../gen/runtara/environment/v1/environment_pb.js";
import type { ImageService, ResumableUploads } from "../src/images/index.js";
import type { InstanceManager, InstanceTimeline, SignalService, RunLogReader } from "../src/instances/index.js";
import { classifyLaunchError } from "../src/instances/launch-errors.js";
import { LaunchError, RuntimeUnavailable } from "../src/runner/index.js";
import { Metrics } from "../src/metrics/index.js";
import { observeCalls } from "../src/server/interceptors.js";
import { environmentRoutes } from "../src/server/routes.js";
import { rejectsWithCode } from "./helpers.js";

/**
 * EnvironmentService's handlers in memory (createRouterTransport, the real routes and error
 * mapping) over services that record what reaches them: validation is proved to answer
 * INVALID_ARGUMENT naming the field before any service is called, and launch failures to map
 * to the right code. What the services do is proved end to end against real PostgreSQL and
 * real runners in the other suites.
 */
function inMemory(overrides: { instances?: Partial<InstanceManager>; signals?: Partial<SignalService> } = {}) {
  const reached: string[] = [];
  const recorder = <T extends object>(name: string, impl: Partial<T>) =>
    new Proxy(impl, {
      get(target, prop) {
        if (typeof prop !== "string") return undefined;
        const own = (target as Record<string, unknown>)[prop];
        return (...args: unknown[]) => {
          reached.push(`${name}.${prop}`);
          if (typeof own === "function") return (own as (...a: unknown[]) => unknown)(...args);
          throw new Error(`${name}.${prop} has no fake`);
        };
      },
    }) as T;
  const routes = environmentRoutes({
    images: recorder<ImageService>("images", {}),
    uploads: recorder<ResumableUploads>("uploads", {}),
    instances: recorder<InstanceManager>("instances", overrides.instances ?? {}),
    signals: recorder<SignalService>("signals", overrides.signals ?? {}),
    logs: recorder<RunLogReader>("logs", {}),
    timeline: recorder<InstanceTimeline>("timeline", {}),
    defaults: { executionTimeoutSecs: 300, maxPayloadBytes: 1024 * 1024 },
    probes: {
      version: "test",
      startedAtMs: Date.now(),
      database: async () => true,
      core: async () => true,
      activeInstances: async () => 0n,
      caller: () => "all",
    },
  });
  const transport = createRouterTransport(routes, { router: { interceptors: [observeCalls(pino({ level: "silent" }), new Metrics().rpcDuration)] } });
  return { client: createClient(EnvironmentService, transport), reached };
}

const uuid = "3f2504e0-4f89-41d3-9a0c-0305e82c3301";
const target = { tenantId: "t", instanceId: "i-1" };

type Client = ReturnType<typeof inMemory>["client"];
const invalid: [string, (c: Client) => Promise<unknown>, string][] = [
  ["StartInstance without tenant", (c) => c.startInstance({ imageId: uuid }), "tenant_id"],
  ["StartInstance with a non-UUID image id", (c) => c.startInstance({ tenantId: "t", imageId: "../x" }), "image_id"],
  ["StartInstance with a bad instance id", (c) => c.startInstance({ tenantId: "t", imageId: uuid, instanceId: "a/b" }), "instance_id"],
  ["StartInstance with invalid JSON input", (c) => c.startInstance({ tenantId: "t", imageId: uuid, input: new TextEncoder().encode("{") }), "input"],
  ["StartInstance with a zero timeout", (c) => c.startInstance({ tenantId: "t", imageId: uuid, timeoutSeconds: 0n }), "timeout_seconds"],
  ["StartInstance with a timeout over 7 days", (c) => c.startInstance({ tenantId: "t", imageId: uuid, timeoutSeconds: 604_801n }), "timeout_seconds"],
  ["StartInstance overriding RUNTARA_*", (c) => c.startInstance({ tenantId: "t", imageId: uuid, env: { RUNTARA_TOKEN: "x" } }), "env"],
  ["StartInstance with neither image_id nor image_name", (c) => c.startInstance({ tenantId: "t" }), "image_id"],
  ["StartInstance with both image_id and image_name", (c) => c.startInstance({ tenantId: "t", imageId: uuid, imageName: "app" }), "image_name"],
  ["StartInstance with image_version but no image_name", (c) => c.startInstance({ tenantId: "t", imageId: uuid, imageVersion: 2 }), "image_version"],
  ["StartInstance with image_version 0", (c) => c.startInstance({ tenantId: "t", imageName: "app", imageVersion: 0 }), "image_version"],
  ["StartInstance with a bad image_name", (c) => c.startInstance({ tenantId: "t", imageName: "../app" }), "image_name"],
  ["RegisterImage with a bad tag", (c) => c.registerImage({ tenantId: "t", name: "app", binary: new Uint8Array(1), tag: "v 1" }), "tag"],
  ["StartInstance with a bad env name", (c) => c.startInstance({ tenantId: "t", imageId: uuid, env: { "A-B": "x" } }), "env"],
  ["StopInstance with grace over an hour", (c) => c.stopInstance({ ...target, gracePeriodSeconds: 3601n }), "grace_period_seconds"],
  ["StopInstance with a long reason", (c) => c.stopInstance({ ...target, reason: "r".repeat(1025) }), "reason"],
  ["ResumeInstance without instance id", (c) => c.resumeInstance({ tenantId: "t" }), "instance_id"],
  ["GetInstanceStatus with a bad tenant", (c) => c.getInstanceStatus({ tenantId: "..", instanceId: "i" }), "tenant_id"],
  ["ListInstances with an unknown status", (c) => c.listInstances({ tenantId: "t", status: 42 as InstanceStatus }), "status"],
  ["ListInstances with an unknown order", (c) => c.listInstances({ tenantId: "t", orderBy: 9 as InstanceOrder }), "order_by"],
  ["ListInstances with limit over 1000", (c) => c.listInstances({ tenantId: "t", limit: 1001 }), "limit"],
  ["ListInstances with a negative offset", (c) => c.listInstances({ tenantId: "t", offset: -1 }), "offset"],
  ["ListInstances with a non-UUID image id", (c) => c.listInstances({ tenantId: "t", imageId: "x" }), "image_id"],
  ["ListInstances with an instance id prefix too long", (c) => c.listInstances({ tenantId: "t", instanceIdPrefix: "i".repeat(129) }), "instance_id_prefix"],
  ["ListInstances with an instance id prefix holding a NUL", (c) => c.listInstances({ tenantId: "t", instanceIdPrefix: "a\u0000" }), "instance_id_prefix"],
  ["ListInstanceTransitions without instance id", (c) => c.listInstanceTransitions({ tenantId: "t" }), "instance_id"],
  ["ListInstanceTransitions with a bad tenant", (c) => c.listInstanceTransitions({ tenantId: "a/b", instanceId: "i" }), "tenant_id"],
  ["SendSignal with an unspecified type", (c) => c.sendSignal({ ...target, signalType: SignalType.UNSPECIFIED }), "signal_type"],
  ["SendSignal with a payload over 1 MiB", (c) => c.sendSignal({ ...target, signalType: SignalType.PAUSE, payload: new Uint8Array(1024 * 1024 + 1) }), "payload"],
  ["SendCustomSignal without checkpoint id", (c) => c.sendCustomSignal({ ...target }), "checkpoint_id"],
  ["SendCustomSignal with a checkpoint id path", (c) => c.sendCustomSignal({ ...target, checkpointId: "../x" }), "checkpoint_id"],
  ["ListCheckpoints with a bad checkpoint id", (c) => c.listCheckpoints({ ...target, checkpointId: "a/b" }), "checkpoint_id"],
  ["ListCheckpoints with limit -1", (c) => c.listCheckpoints({ ...target, limit: -1 }), "limit"],
  ["GetCheckpoint without checkpoint id", (c) => c.getCheckpoint({ ...target }), "checkpoint_id"],
  ["ListEvents with an unknown sort order", (c) => c.listEvents({ ...target, sortOrder: 7 as SortOrder }), "sort_order"],
  ["ListEvents with a long subtype", (c) => c.listEvents({ ...target, subtype: "s".repeat(129) }), "subtype"],
  ["ListEvents with a negative offset", (c) => c.listEvents({ ...target, offset: -5 }), "offset"],
];

describe("EnvironmentService handlers in memory", () => {
  for (const [what, call, field] of invalid) {
    it(`${what}: INVALID_ARGUMENT naming ${field}, no service called`, async () => {
      const { client, reached } = inMemory();
      await rejectsWithCode(call(client), Code.InvalidArgument, field);
      assert.deepEqual(reached, []);
    });
  }

  it("WatchInstance validates before streaming", async () => {
    const { client, reached } = inMemory();
    const watch = async () => {
      for await (const _ of client.watchInstance({ tenantId: "", instanceId: "i" })) break;
    };
    await rejectsWithCode(watch(), Code.InvalidArgument, "tenant_id");
    assert.deepEqual(reached, []);
  });

  it("valid calls reach the service with domain values and map its answers back", async () => {
    const seen: unknown[] = [];
    const { client } = inMemory({
      signals: {
        send: async (tenantId, instanceId, kind, payload) => {
          seen.push({ tenantId, instanceId, kind, payload: new TextDecoder().decode(payload) });
          return "suspended";
        },
      },
      instances: {
        start: async (req) => {
          seen.push({ image: req.image, input: new TextDecoder().decode(req.input), timeoutSeconds: req.timeoutSeconds });
          return { instanceId: "generated", status: "running" };
        },
      },
    });
    const signalled = await client.sendSignal({ ...target, signalType: SignalType.PAUSE, payload: new TextEncoder().encode("p") });
    assert.equal(signalled.status, InstanceStatus.SUSPENDED);
    const started = await client.startInstance({ tenantId: "t", imageId: uuid });
    assert.equal(started.instanceId, "generated");
    assert.equal(started.status, InstanceStatus.RUNNING);
    await client.startInstance({ tenantId: "t", imageName: "app" });
    await client.startInstance({ tenantId: "t", imageName: "app", imageVersion: 3 });
    assert.deepEqual(seen, [
      { tenantId: "t", instanceId: "i-1", kind: "pause", payload: "p" },
      { image: { imageId: uuid }, input: "{}", timeoutSeconds: 300 },
      { image: { name: "app", version: undefined }, input: "{}", timeoutSeconds: 300 },
      { image: { name: "app", version: 3 }, input: "{}", timeoutSeconds: 300 },
    ]);
  });

  describe("launch failures", () => {
    const failingStart = (cause: unknown) =>
      inMemory({
        instances: {
          start: async () => {
            throw classifyLaunchError(cause, "instance i-1 is FAILED, launch_failed").error;
          },
        },
      }).client.startInstance({ tenantId: "t", imageId: uuid });

    it("a runtime or image problem is FAILED_PRECONDITION with a short message: no host path, no runtime stderr (L3)", async () => {
      const unavailable = new RuntimeUnavailable("/opt/bin/runc", "runc: exec /data/runs/t/i/x: permission denied");
      const e1 = await rejectsWithCode(failingStart(unavailable), Code.FailedPrecondition, "no usable container runtime", "launch_failed");
      const missing = new LaunchError("binary_not_found", "image x bundle: /var/lib/runtara/images/x/bundle/rootfs/binary does not exist");
      const e2 = await rejectsWithCode(failingStart(missing), Code.FailedPrecondition, "the image's executable is missing");
      const refused = new LaunchError("start_failed", "runc could not start container runtara-i-1 (exit 1): mount /var/lib/runtara/runs/t/i: EPERM", "EPERM stderr");
      const e3 = await rejectsWithCode(failingStart(refused), Code.FailedPrecondition, "could not start the container");
      for (const [e, cause] of [[e1, unavailable], [e2, missing], [e3, refused]] as const) {
        assert.doesNotMatch(e.rawMessage, /\/(opt|var|data)\/|EPERM|permission denied/);
        assert.doesNotMatch(classifyLaunchError(cause, "x").recorded, /\/(opt|var|data)\/|EPERM|permission denied/, "nor the instance's error column");
      }
    });

    it("the previous run's container still there, or a start timeout, is UNAVAILABLE (retry)", async () => {
      await rejectsWithCode(failingStart(new LaunchError("already_running", "container runtara-i-1 is running")), Code.Unavailable, "retry");
      await rejectsWithCode(failingStart(new LaunchError("start_timeout", "did not start within 30 s")), Code.Unavailable);
    });

    it("a database outage is UNAVAILABLE", async () => {
      await rejectsWithCode(failingStart(new ConnectionError("connection refused")), Code.Unavailable, "retry");
      const refused = Object.assign(new Error("connect ECONNREFUSED 127.0.0.1:5432"), { code: "ECONNREFUSED" });
      await rejectsWithCode(failingStart(refused), Code.Unavailable);
    });

    it("anything else is INTERNAL and its message is not sent", async () => {
      const err = await rejectsWithCode(failingStart(new TypeError("cannot read /srv/secret/path of undefined")), Code.Internal);
      assert.doesNotMatch(err.rawMessage, /secret|undefined/);
      const { recorded } = classifyLaunchError(new TypeError("cannot read /srv/secret/path"), "instance i-1 is FAILED, launch_failed");
      assert.doesNotMatch(recorded, /secret/, "the instance's error column does not get it either");
    });

  });
});
