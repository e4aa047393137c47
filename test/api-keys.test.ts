import assert from "node:assert/strict";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { Code, createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { EnvironmentService } from "../gen/runtara/environment/v1/environment_pb.js";
import { rejectsWithCode, startEnvironment, stopTestPostgres, type TestEnvironment } from "./helpers.js";

const KEY_A = "key-of-tenant-a-0123456789";
const KEY_B = "key-of-tenant-b-0123456789";

describe("API keys (RUNTARA_API_KEYS_FILE)", () => {
  let t: TestEnvironment;
  let dir: string;
  const client = (key?: string) =>
    createClient(
      EnvironmentService,
      createConnectTransport({
        baseUrl: t.baseUrl,
        httpVersion: "2",
        interceptors: key ? [(next) => (req) => (req.header.set("authorization", `Bearer ${key}`), next(req))] : [],
      }),
    );

  before(async () => {
    dir = await mkdtemp(path.join(tmpdir(), "runtara-keys-"));
    const file = path.join(dir, "keys");
    await writeFile(file, `# tenant key\ntenant-a ${KEY_A}\n\ntenant-b ${KEY_B}\n`, { mode: 0o600 });
    // Registers NATIVE images: with API keys that needs the explicit opt-in.
    t = await startEnvironment({ apiKeysFile: file, nativeRunner: "enabled" });
  });
  after(async () => {
    await t.close();
    await rm(dir, { recursive: true, force: true });
    await stopTestPostgres();
  });

  it("the key decides the tenant: missing or wrong key is UNAUTHENTICATED, another tenant_id is PERMISSION_DENIED", async () => {
    assert.equal((await client().healthCheck({})).healthy, true, "health needs no key");
    await rejectsWithCode(client().listImages({ tenantId: "tenant-a" }), Code.Unauthenticated, "missing API key");
    await rejectsWithCode(client("not-a-key-at-all-xxxx").listImages({ tenantId: "tenant-a" }), Code.Unauthenticated, "invalid API key");
    await rejectsWithCode(client(KEY_A).listImages({ tenantId: "tenant-b" }), Code.PermissionDenied, "tenant_id");
    const ok = await client(KEY_A).registerImage({ tenantId: "tenant-a", name: "img", binary: new Uint8Array([1]), runnerType: 2 });
    await rejectsWithCode(client(KEY_B).getImage({ tenantId: "tenant-a", imageId: ok.imageId }), Code.PermissionDenied);
    assert.equal((await client(KEY_A).listImages({ tenantId: "tenant-a" })).totalCount, 1n);
  });

  it("a streamed upload whose header names another tenant is refused and leaves nothing", async () => {
    async function* upload() {
      yield { payload: { case: "header" as const, value: { tenantId: "tenant-a", name: "streamed", binarySize: 1n } } };
      yield { payload: { case: "chunk" as const, value: new Uint8Array([1]) } };
    }
    await rejectsWithCode(client(KEY_B).registerImageStream(upload()), Code.PermissionDenied, "tenant_id");
    const rows = await t.query(`SELECT count(*)::int AS n FROM images WHERE name = 'streamed'`);
    assert.equal(rows[0]!.n, 0);
  });

  it("an unreadable or malformed keys file stops startup naming the variable", async () => {
    const bad = path.join(dir, "bad");
    await writeFile(bad, "tenant-a short\n", { mode: 0o600 });
    await assert.rejects(startEnvironment({ apiKeysFile: bad }), /RUNTARA_API_KEYS_FILE: line 1/);
    await assert.rejects(startEnvironment({ apiKeysFile: path.join(dir, "missing") }), /RUNTARA_API_KEYS_FILE: cannot read/);
  });
});
