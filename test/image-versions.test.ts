import assert from "node:assert/strict";
import { readFile, stat } from "node:fs/promises";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { Code } from "@connectrpc/connect";
import { InstanceStatus, SignalType, TerminationReason } from "../gen/runtara/core/v1/types_pb.js";
import { RunnerType } from "../gen/runtara/environment/v1/environment_pb.js";
import { buildFixtures } from "./fixtures/build.js";
import { environmentClient, patternBytes, rejectsWithCode, startEnvironment, stopTestPostgres, waitUntil, type TestEnvironment } from "./helpers.js";

/** Images by name and version: registration, listing, deletion and starting by name. */

after(() => stopTestPostgres());

const dec = (b: Uint8Array) => JSON.parse(new TextDecoder().decode(b)) as unknown;

describe("image versions", () => {
  let t: TestEnvironment;
  let c: ReturnType<typeof environmentClient>;
  before(async () => {
    t = await startEnvironment();
    c = environmentClient(t.baseUrl);
  });
  after(() => t?.close());

  const register = (tenantId: string, name: string, extra: { tag?: string } = {}) =>
    c.registerImage({ tenantId, name, binary: patternBytes(256, name.length), runnerType: RunnerType.NATIVE, ...extra });

  it("registering a name twice gives versions 1 and 2, each its own image", async () => {
    const one = await register("reg", "app");
    const two = await register("reg", "app", { tag: "release-2.0" });
    assert.deepEqual([one.image?.version, one.image?.tag], [1, ""]);
    assert.deepEqual([two.image?.version, two.image?.tag], [2, "release-2.0"]);
    assert.notEqual(one.imageId, two.imageId);
    assert.equal((await c.getImage({ tenantId: "reg", imageId: one.imageId })).image?.version, 1);
    assert.equal((await c.getImage({ tenantId: "reg", imageId: two.imageId })).image?.tag, "release-2.0");
    await rejectsWithCode(register("reg", "app", { tag: "bad tag" }), Code.InvalidArgument, "tag");
    await rejectsWithCode(register("reg", "app", { tag: "t".repeat(129) }), Code.InvalidArgument, "tag");
  });

  it("20 concurrent registrations of one name get versions 1..20 without an error", async () => {
    const results = await Promise.all(Array.from({ length: 20 }, () => register("race", "same")));
    assert.deepEqual(
      results.map((r) => r.image!.version).sort((a, b) => a - b),
      Array.from({ length: 20 }, (_, i) => i + 1),
    );
    const listed = await c.listImages({ tenantId: "race", allVersions: true });
    assert.equal(listed.totalCount, 20n);
  });

  it("deleting a version deletes only it; the previous one becomes the latest; numbers are not reused", async () => {
    const v1 = await register("del", "svc");
    const v2 = await register("del", "svc");
    const v3 = await register("del", "svc");
    await c.deleteImage({ tenantId: "del", imageId: v3.imageId });
    await assert.rejects(stat(path.join(t.dataDir, "images", v3.imageId)), { code: "ENOENT" });
    const latest = await c.listImages({ tenantId: "del" });
    assert.deepEqual(
      latest.images.map((i) => [i.imageId, i.version]),
      [[v2.imageId, 2]],
    );
    // Refused while in use, and only that version is protected.
    await t.query("INSERT INTO instances (instance_id, tenant_id, image_id, image_name, status) VALUES ('uses-v1', 'del', $1, 'svc', 'suspended')", [
      v1.imageId,
    ]);
    await rejectsWithCode(c.deleteImage({ tenantId: "del", imageId: v1.imageId }), Code.FailedPrecondition, v1.imageId);
    await c.deleteImage({ tenantId: "del", imageId: v2.imageId });
    assert.deepEqual(
      (await c.listImages({ tenantId: "del", allVersions: true })).images.map((i) => i.version),
      [1],
    );
    // Version 3 was given out once: a new registration is 4, never a second "svc v3".
    const v4 = await register("del", "svc");
    assert.equal(v4.image?.version, 4);
  });

  describe("ListImages", () => {
    // Names a..e with versions: a:3, b:1, c:2, d:1, e:4 (11 images, 5 names).
    const versions: Record<string, number> = { "lst-a": 3, "lst-b": 1, "lst-c": 2, "lst-d": 1, "lst-e": 4 };
    const all = Object.entries(versions).flatMap(([name, n]) => Array.from({ length: n }, (_, i) => [name, i + 1] as const));
    before(async () => {
      // Interleaved so list order cannot come from insertion order.
      for (let round = 0; round < 4; round++) {
        for (const [name, n] of Object.entries(versions).reverse()) if (round < n) await register("lst", name, { tag: `r${round}` });
      }
      await register("lst", "other");
    });

    it("shows the latest version per name by default, every version with all_versions", async () => {
      const latest = await c.listImages({ tenantId: "lst", namePrefix: "lst-" });
      assert.deepEqual(
        latest.images.map((i) => [i.name, i.version]),
        Object.entries(versions),
      );
      assert.equal(latest.totalCount, 5n);
      const every = await c.listImages({ tenantId: "lst", namePrefix: "lst-", allVersions: true });
      assert.deepEqual(
        every.images.map((i) => [i.name, i.version]),
        all,
      );
      assert.equal(every.totalCount, 11n);
      assert.equal((await c.listImages({ tenantId: "lst" })).totalCount, 6n);
      assert.equal((await c.listImages({ tenantId: "lst", allVersions: true })).totalCount, 12n);
    });

    for (const allVersions of [false, true]) {
      it(`walks pages with page_token (all_versions ${allVersions}), also with offset pages`, async () => {
        const expected = allVersions ? all : Object.entries(versions);
        for (const limit of [1, 2, 4]) {
          const seen: (readonly [string, number])[] = [];
          let token = "";
          do {
            const page = await c.listImages({ tenantId: "lst", namePrefix: "lst-", allVersions, limit, pageToken: token });
            assert.equal(page.totalCount, BigInt(expected.length));
            seen.push(...page.images.map((i) => [i.name, i.version] as const));
            token = page.nextPageToken;
          } while (token !== "" && seen.length <= expected.length);
          assert.deepEqual(seen, expected, `limit ${limit}`);
        }
        const mid = await c.listImages({ tenantId: "lst", namePrefix: "lst-", allVersions, limit: 2, offset: 2 });
        assert.deepEqual(
          mid.images.map((i) => [i.name, i.version]),
          expected.slice(2, 4),
        );
      });
    }

    it("refuses a page_token issued for the other all_versions", async () => {
      const latest = await c.listImages({ tenantId: "lst", limit: 1 });
      const every = await c.listImages({ tenantId: "lst", limit: 1, allVersions: true });
      await rejectsWithCode(c.listImages({ tenantId: "lst", pageToken: latest.nextPageToken, allVersions: true }), Code.InvalidArgument, "page_token", "all_versions");
      await rejectsWithCode(c.listImages({ tenantId: "lst", pageToken: every.nextPageToken }), Code.InvalidArgument, "page_token", "all_versions");
      const bogus = Buffer.from(JSON.stringify({ n: "lst-a", v: 0 })).toString("base64url");
      await rejectsWithCode(c.listImages({ tenantId: "lst", pageToken: bogus, allVersions: true }), Code.InvalidArgument, "page_token");
    });
  });
});

describe("starting instances by image name and version", () => {
  const TENANT = "by-name";
  let t: TestEnvironment;
  let c: ReturnType<typeof environmentClient>;
  let workflow: Uint8Array;
  let exitWith: Uint8Array;
  before(async () => {
    t = await startEnvironment();
    c = environmentClient(t.baseUrl);
    const fixtures = await buildFixtures();
    [workflow, exitWith] = await Promise.all([readFile(fixtures.workflow), readFile(fixtures["exit-with"])]);
  });
  after(() => t?.close());

  const status = async (instanceId: string) => (await c.getInstanceStatus({ tenantId: TENANT, instanceId })).instance!;
  const settled = async (instanceId: string) => {
    await waitUntil(async () => {
      const s = await status(instanceId);
      const done = [InstanceStatus.COMPLETED, InstanceStatus.FAILED, InstanceStatus.CANCELLED].includes(s.status);
      return done && (await t.query("SELECT 1 FROM running_processes WHERE instance_id = $1", [instanceId])).length === 0;
    });
    return status(instanceId);
  };

  it("a paused instance of version 1 resumes on version 1 after version 2 is registered; by name starts 2; by name + version 1 starts 1", async () => {
    // Version 1 is the workflow fixture; version 2 a different program that exits 7 saying so.
    const v1 = await c.registerImage({ tenantId: TENANT, name: "flow", binary: workflow, runnerType: RunnerType.NATIVE, tag: "first" });
    assert.equal(v1.image?.version, 1);
    const paused = await c.startInstance({ tenantId: TENANT, imageName: "flow", env: { WORKFLOW_MODE: "cooperative" } });
    assert.equal((await status(paused.instanceId)).imageId, v1.imageId, "by name, the latest (1)");
    await waitUntil(async () => (await t.query("SELECT 1 FROM checkpoints WHERE instance_id = $1", [paused.instanceId])).length === 1);
    await c.sendSignal({ tenantId: TENANT, instanceId: paused.instanceId, signalType: SignalType.PAUSE });
    await waitUntil(async () => {
      const s = await status(paused.instanceId);
      return s.status === InstanceStatus.SUSPENDED && (await t.query("SELECT 1 FROM running_processes WHERE instance_id = $1", [paused.instanceId])).length === 0;
    });

    const v2 = await c.registerImage({ tenantId: TENANT, name: "flow", binary: exitWith, runnerType: RunnerType.NATIVE });
    assert.equal(v2.image?.version, 2);

    // Resumed after version 2 exists: version 1 continues from its checkpoint (version 2 would exit 7).
    await c.resumeInstance({ tenantId: TENANT, instanceId: paused.instanceId });
    const resumed = await settled(paused.instanceId);
    assert.equal(resumed.status, InstanceStatus.COMPLETED, resumed.error || resumed.stderr);
    assert.deepEqual(dec(resumed.output), { resumed: true });
    assert.equal(resumed.imageId, v1.imageId);
    assert.equal(resumed.exitCode, 0);

    // By name alone: the latest, version 2.
    const latest = await c.startInstance({ tenantId: TENANT, imageName: "flow", env: { EXIT_CODE: "7", STDERR_MSG: "this is version 2" } });
    const ranLatest = await settled(latest.instanceId);
    assert.equal(ranLatest.imageId, v2.imageId);
    assert.equal(ranLatest.imageName, "flow");
    assert.equal(ranLatest.exitCode, 7);
    assert.equal(ranLatest.terminationReason, TerminationReason.CRASHED);
    assert.match(ranLatest.stderr, /this is version 2/);

    // By name and version 1: the workflow again.
    const pinned = await c.startInstance({ tenantId: TENANT, imageName: "flow", imageVersion: 1, env: { WORKFLOW_MODE: "complete" } });
    const ranPinned = await settled(pinned.instanceId);
    assert.equal(ranPinned.imageId, v1.imageId);
    assert.equal(ranPinned.status, InstanceStatus.COMPLETED, ranPinned.error);
    assert.deepEqual(dec(ranPinned.output), { ok: true });
  });

  it("an unknown name or version is NOT_FOUND and starts nothing; ambiguous or incomplete references are INVALID_ARGUMENT", async () => {
    const before = (await t.query<{ n: number }>("SELECT count(*)::int AS n FROM instances"))[0]!.n;
    await rejectsWithCode(c.startInstance({ tenantId: TENANT, imageName: "nope" }), Code.NotFound, "image_name", "nope");
    await rejectsWithCode(c.startInstance({ tenantId: TENANT, imageName: "flow", imageVersion: 9 }), Code.NotFound, "image_version", "9");
    // Another tenant's name is not found either.
    await rejectsWithCode(c.startInstance({ tenantId: "someone-else", imageName: "flow" }), Code.NotFound, "image_name");
    const id = (await c.listImages({ tenantId: TENANT })).images[0]!.imageId;
    await rejectsWithCode(c.startInstance({ tenantId: TENANT, imageId: id, imageName: "flow" }), Code.InvalidArgument, "image_name");
    await rejectsWithCode(c.startInstance({ tenantId: TENANT, imageId: id, imageVersion: 1 }), Code.InvalidArgument, "image_version");
    await rejectsWithCode(c.startInstance({ tenantId: TENANT }), Code.InvalidArgument, "image_id");
    await rejectsWithCode(c.startInstance({ tenantId: TENANT, imageName: "flow", imageVersion: 0 }), Code.InvalidArgument, "image_version");
    assert.equal((await t.query<{ n: number }>("SELECT count(*)::int AS n FROM instances"))[0]!.n, before);
  });
});
