/**
 * Resource limits of runs through a real Environment (real runc, real processes, real
 * PostgreSQL): RLIMIT_FSIZE ends a run that writes too large a file.
 */
import assert from "node:assert/strict";
import { readFile, stat } from "node:fs/promises";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { InstanceStatus, TerminationReason } from "../gen/runtara/core/v1/types_pb.js";
import { RunnerType } from "../gen/runtara/environment/v1/environment_pb.js";
import { buildFixtures } from "./fixtures/build.js";
import { environmentClient, startEnvironment, stopTestPostgres, waitUntil, type TestEnvironment } from "./helpers.js";

const TENANT = "tenant-limits";
const MAX_FILE_BYTES = 2 * 1024 * 1024;

describe("run limits", () => {
  let t: TestEnvironment;
  let env: ReturnType<typeof environmentClient>;
  const images: Partial<Record<"oci" | "native", string>> = {};

  before(async () => {
    t = await startEnvironment({ maxFileBytes: MAX_FILE_BYTES, maxLogBytes: 1024 * 1024 });
    env = environmentClient(t.baseUrl);
    const binary = await readFile((await buildFixtures()).workflow);
    for (const [kind, runnerType] of [["oci", RunnerType.OCI], ["native", RunnerType.NATIVE]] as const) {
      images[kind] = (await env.registerImage({ tenantId: TENANT, name: `workflow-${kind}`, binary, runnerType })).imageId;
    }
  });
  after(async () => {
    await t?.close();
    await stopTestPostgres();
  });

  async function settled(instanceId: string) {
    await waitUntil(async () => (await t.query(`SELECT 1 FROM running_processes WHERE instance_id = $1`, [instanceId])).length === 0);
    await waitUntil(async () => (await env.getInstanceStatus({ tenantId: TENANT, instanceId })).instance!.status === InstanceStatus.FAILED);
    return (await env.getInstanceStatus({ tenantId: TENANT, instanceId })).instance!;
  }

  for (const kind of ["native", "oci"] as const) {
    it(`${kind}: a file past RUNTARA_MAX_FILE_BYTES ends the run with SIGXFSZ: FAILED crashed, the file at the limit`, async () => {
      const { instanceId } = await env.startInstance({
        tenantId: TENANT,
        imageId: images[kind]!,
        env: { WORKFLOW_MODE: "bigfile", WRITE_PATH: kind === "oci" ? "/data/big" : "big", WRITE_BYTES: String(8 * MAX_FILE_BYTES) },
      });
      const s = await settled(instanceId);
      assert.equal(s.terminationReason, TerminationReason.CRASHED);
      // SIGXFSZ is 25: native reports the signal (no exit code), tini 128 + 25.
      assert.equal(s.exitCode, kind === "oci" ? 153 : undefined, `exit code ${s.exitCode}, error ${s.error}`);
      const big = await stat(path.join(t.dataDir, "runs", TENANT, instanceId, "big"));
      assert.equal(big.size, MAX_FILE_BYTES);
    });
  }
});
