/**
 * The resumable upload (issue 13): unary calls a browser can make (begin, chunks at offsets,
 * commit with sha256, abort, resume after a drop), sharing RegisterImageStream's storage and
 * checks. Through the generated client against a real server: what ends an upload leaves no
 * row and no file; offsets, tenants and sizes are enforced; concurrent retries are safe.
 */
import assert from "node:assert/strict";
import { mkdir, readdir, readFile, utimes, writeFile } from "node:fs/promises";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { Code } from "@connectrpc/connect";
import { pino } from "pino";
import { Environment } from "../src/environment.js";
import { RunnerType } from "../gen/runtara/environment/v1/environment_pb.js";
import { emptyImageTree, environmentClient, imageTree, patternBytes, rejectsWithCode, sha256Hex, startEnvironment, stopTestPostgres, type TestEnvironment } from "./helpers.js";

after(() => stopTestPostgres());

const TENANT = "uploads";
const MiB = 1024 * 1024;

describe("resumable image upload", () => {
  let t: TestEnvironment;
  let env: ReturnType<typeof environmentClient>;
  before(async () => {
    t = await startEnvironment();
    env = environmentClient(t.baseUrl, "connect-json-h1");
  });
  after(() => t?.close());

  const begin = (size: number, extra: object = {}) =>
    env.beginImageUpload({ header: { tenantId: TENANT, name: "resumable", runnerType: RunnerType.NATIVE, binarySize: BigInt(size), ...extra } });
  const chunk = (uploadId: string, offset: number, data: Uint8Array, tenantId = TENANT) => env.uploadImageChunk({ tenantId, uploadId, offset: BigInt(offset), data });

  it("chunks at offsets, a resume from what arrived, then commit: the image is registered byte for byte", async () => {
    const bytes = patternBytes(5 * MiB + 123);
    const { uploadId, maxChunkBytes } = await begin(bytes.length);
    assert.ok(maxChunkBytes > 1n * BigInt(MiB), `max chunk ${maxChunkBytes}`);
    assert.equal((await chunk(uploadId, 0, bytes.subarray(0, 2 * MiB))).receivedBytes, BigInt(2 * MiB));
    // The connection dropped here: ask what arrived and go on from there.
    const { receivedBytes, binarySize } = await env.getImageUpload({ tenantId: TENANT, uploadId });
    assert.deepEqual([receivedBytes, binarySize], [BigInt(2 * MiB), BigInt(bytes.length)]);
    for (let offset = Number(receivedBytes); offset < bytes.length; offset += 2 * MiB) await chunk(uploadId, offset, bytes.subarray(offset, offset + 2 * MiB));
    const { image } = await env.commitImageUpload({ tenantId: TENANT, uploadId, sha256: sha256Hex(bytes) });
    assert.equal(image!.sizeBytes, BigInt(bytes.length));
    assert.equal(image!.sha256, sha256Hex(bytes));
    const stored = await readFile(path.join(t.dataDir, "images", image!.imageId, "binary"));
    assert.ok(stored.equals(bytes), "the stored file is the uploaded bytes");
    await rejectsWithCode(env.getImageUpload({ tenantId: TENANT, uploadId }), Code.NotFound, uploadId);
  });

  it("a chunk at the wrong offset is FAILED_PRECONDITION naming where to continue; a retry of a chunk that arrived too", async () => {
    const bytes = patternBytes(3 * MiB, 2);
    const { uploadId } = await begin(bytes.length);
    await rejectsWithCode(chunk(uploadId, 5, bytes.subarray(0, MiB)), Code.FailedPrecondition, "offset", "send from offset 0");
    await chunk(uploadId, 0, bytes.subarray(0, MiB));
    await rejectsWithCode(chunk(uploadId, 0, bytes.subarray(0, MiB)), Code.FailedPrecondition, `send from offset ${MiB}`);
    // Two retries of the same chunk at once: exactly one lands.
    const both = await Promise.allSettled([chunk(uploadId, MiB, bytes.subarray(MiB, 2 * MiB)), chunk(uploadId, MiB, bytes.subarray(MiB, 2 * MiB))]);
    assert.deepEqual(both.map((r) => r.status).sort(), ["fulfilled", "rejected"]);
    assert.equal((await env.getImageUpload({ tenantId: TENANT, uploadId })).receivedBytes, BigInt(2 * MiB));
    await env.abortImageUpload({ tenantId: TENANT, uploadId });
    await rejectsWithCode(chunk(uploadId, 2 * MiB, bytes.subarray(2 * MiB)), Code.NotFound);
  });

  it("a wrong checksum, too many bytes, or an abort leave no row and no file", async () => {
    const bytes = patternBytes(MiB, 3);
    const mismatch = await begin(bytes.length);
    await chunk(mismatch.uploadId, 0, bytes);
    await rejectsWithCode(env.commitImageUpload({ tenantId: TENANT, uploadId: mismatch.uploadId, sha256: "0".repeat(64) }), Code.InvalidArgument, "sha256", "checksum mismatch");
    await rejectsWithCode(env.getImageUpload({ tenantId: TENANT, uploadId: mismatch.uploadId }), Code.NotFound);

    const tooMany = await begin(10);
    await rejectsWithCode(chunk(tooMany.uploadId, 0, bytes.subarray(0, 11)), Code.InvalidArgument, "binary_size");
    await rejectsWithCode(env.getImageUpload({ tenantId: TENANT, uploadId: tooMany.uploadId }), Code.NotFound);

    const short = await begin(bytes.length);
    await chunk(short.uploadId, 0, bytes.subarray(0, 100));
    await rejectsWithCode(env.commitImageUpload({ tenantId: TENANT, uploadId: short.uploadId, sha256: sha256Hex(bytes) }), Code.InvalidArgument, "binary_size");

    const aborted = await begin(bytes.length);
    await chunk(aborted.uploadId, 0, bytes.subarray(0, 100));
    await env.abortImageUpload({ tenantId: TENANT, uploadId: aborted.uploadId });
    await rejectsWithCode(env.abortImageUpload({ tenantId: TENANT, uploadId: aborted.uploadId }), Code.NotFound);

    const rows = await t.query("SELECT count(*)::int AS n FROM images WHERE tenant_id = $1 AND name = 'resumable'", [TENANT]);
    assert.equal(rows[0]!.n, 1, "only the first test's image");
    const tree = (await imageTree(t.dataDir)).filter((p) => p.startsWith(".staging"));
    assert.deepEqual(tree, emptyImageTree(t), "nothing staged");
  });

  it("another tenant's upload is NOT_FOUND; bad fields are INVALID_ARGUMENT naming them; open uploads per tenant are capped", async () => {
    const { uploadId } = await begin(100);
    await rejectsWithCode(chunk(uploadId, 0, new Uint8Array(10), "someone-else"), Code.NotFound);
    await rejectsWithCode(env.commitImageUpload({ tenantId: "someone-else", uploadId, sha256: "0".repeat(64) }), Code.NotFound);
    await rejectsWithCode(env.beginImageUpload({}), Code.InvalidArgument, "header");
    await rejectsWithCode(begin(0), Code.InvalidArgument, "binary_size");
    await rejectsWithCode(begin(10, { name: "" }), Code.InvalidArgument, "name");
    await rejectsWithCode(env.uploadImageChunk({ tenantId: TENANT, uploadId: "nope", offset: 0n, data: new Uint8Array(1) }), Code.InvalidArgument, "upload_id");
    await rejectsWithCode(env.uploadImageChunk({ tenantId: TENANT, uploadId, offset: -1n, data: new Uint8Array(1) }), Code.InvalidArgument, "offset");
    await rejectsWithCode(env.uploadImageChunk({ tenantId: TENANT, uploadId, offset: 0n, data: new Uint8Array(0) }), Code.InvalidArgument, "data");
    await rejectsWithCode(env.commitImageUpload({ tenantId: TENANT, uploadId, sha256: "" }), Code.InvalidArgument, "sha256");
    await rejectsWithCode(env.commitImageUpload({ tenantId: TENANT, uploadId, sha256: "xyz" }), Code.InvalidArgument, "sha256");
    const opened = [uploadId];
    for (let i = 1; i < 16; i++) opened.push((await begin(100)).uploadId);
    await rejectsWithCode(begin(100), Code.ResourceExhausted, "uploads open");
    for (const id of opened) await env.abortImageUpload({ tenantId: TENANT, uploadId: id });
    await begin(100).then(({ uploadId: id }) => env.abortImageUpload({ tenantId: TENANT, uploadId: id }));
  });

  it("the tenant's byte quota counts uploads in progress, and is checked again when an upload commits", async () => {
    const own = await startEnvironment({ tenantMaxImageBytes: MiB });
    try {
      const client = environmentClient(own.baseUrl);
      const bytes = patternBytes(600 * 1024, 7);
      const header = (name: string) => ({ header: { tenantId: TENANT, name, runnerType: RunnerType.NATIVE, binarySize: BigInt(bytes.length) } });
      const first = await client.beginImageUpload(header("first"));
      await rejectsWithCode(client.beginImageUpload(header("second")), Code.ResourceExhausted, "binary_size", "uploads in progress");
      // Another path registers meanwhile: the open upload no longer fits when it commits.
      await client.registerImage({ tenantId: TENANT, name: "unary", binary: bytes, runnerType: RunnerType.NATIVE });
      await client.uploadImageChunk({ tenantId: TENANT, uploadId: first.uploadId, offset: 0n, data: bytes });
      await rejectsWithCode(client.commitImageUpload({ tenantId: TENANT, uploadId: first.uploadId, sha256: sha256Hex(bytes) }), Code.ResourceExhausted, "binary_size");
      const [usage] = await own.query("SELECT count(*)::int AS n, sum(size_bytes)::bigint AS bytes FROM images WHERE tenant_id = $1", [TENANT]);
      assert.deepEqual([usage!.n, Number(usage!.bytes)], [1, bytes.length], "only the unary image");
      assert.deepEqual((await imageTree(own.dataDir)).filter((p) => p.startsWith(".staging") && !p.endsWith("/")), [], "nothing staged");
      // Concurrent begins cannot pass the per-tenant cap together.
      const begins = await Promise.allSettled(Array.from({ length: 40 }, (_, i) => client.beginImageUpload({ header: { tenantId: "many", name: `n${i}`, runnerType: RunnerType.NATIVE, binarySize: 10n } })));
      assert.equal(begins.filter((b) => b.status === "fulfilled").length, 16);
    } finally {
      await own.close();
    }
  });

  it("staged uploads another replica abandoned are removed at startup once stale; recent ones stay", async () => {
    const staging = path.join(t.dataDir, "images", ".staging", "a-replica-that-never-returns");
    for (const [upload, ageMs] of [["stale", 3 * 3600_000], ["recent", 60_000]] as const) {
      await mkdir(path.join(staging, upload), { recursive: true });
      await writeFile(path.join(staging, upload, "binary"), "partial");
      const when = new Date(Date.now() - ageMs);
      await utimes(path.join(staging, upload, "binary"), when, when);
      await utimes(path.join(staging, upload), when, when);
    }
    const second = new Environment({ databaseUrl: t.database.url, dataDir: t.dataDir, httpPort: 0, coreAddr: "127.0.0.1:0", replicaId: "second", logger: pino({ level: "silent" }) });
    await second.start();
    try {
      assert.deepEqual(await readdir(staging), ["recent"]);
    } finally {
      await second.stop();
    }
  });

  it("uploads still open when the environment stops leave no staged file", async () => {
    const own = await startEnvironment();
    try {
      const client = environmentClient(own.baseUrl);
      const { uploadId } = await client.beginImageUpload({ header: { tenantId: TENANT, name: "left-open", runnerType: RunnerType.NATIVE, binarySize: 1000n } });
      await client.uploadImageChunk({ tenantId: TENANT, uploadId, offset: 0n, data: new Uint8Array(500) });
      assert.equal((await imageTree(own.dataDir)).filter((p) => p.startsWith(`.staging/${own.env.options.replicaId}/`) && !p.endsWith("/")).length, 1, "one staged file");
      await own.env.stop();
      assert.deepEqual((await imageTree(own.dataDir)).filter((p) => !p.endsWith("/")), [], "no staged file after stop");
    } finally {
      await own.close();
    }
  });
});
