import assert from "node:assert/strict";
import { createHash, randomUUID } from "node:crypto";
import { execFileSync } from "node:child_process";
import http2 from "node:http2";
import net from "node:net";
import { createReadStream } from "node:fs";
import { mkdtemp, readdir, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { Code } from "@connectrpc/connect";
import { timestampMs } from "@bufbuild/protobuf/wkt";
import { create, toBinary, type MessageInitShape } from "@bufbuild/protobuf";
import { RegisterImageStreamRequestSchema, RunnerType, type Image } from "../gen/runtara/environment/v1/environment_pb.js";
import {
  chunksOf,
  environmentClient,
  eventually,
  imageTree,
  patternBytes,
  rejectsWithCode,
  sha256Hex,
  startEnvironment,
  stopTestPostgres,
  uploadMessages,
  type TestEnvironment,
  type TransportKind,
  emptyImageTree,
  stagingDir,
} from "./helpers.js";

const MiB = 1024 * 1024;
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
const json = (v: unknown) => new TextEncoder().encode(JSON.stringify(v));
const fromJson = (b: Uint8Array) => (b.byteLength === 0 ? undefined : JSON.parse(new TextDecoder().decode(b)));

after(() => stopTestPostgres());

async function fileSha256(file: string): Promise<string> {
  const h = createHash("sha256");
  for await (const chunk of createReadStream(file)) h.update(chunk as Buffer);
  return h.digest("hex");
}

// An empty request stream: the client half-closes without sending any message.
// eslint-disable-next-line require-yield
async function* uploadMessagesWithoutAnything(): AsyncGenerator<never> {}

async function imageRows(t: TestEnvironment, tenantId?: string): Promise<number> {
  const rows = tenantId
    ? await t.query<{ n: number }>("SELECT count(*)::int AS n FROM images WHERE tenant_id = $1", [tenantId])
    : await t.query<{ n: number }>("SELECT count(*)::int AS n FROM images");
  return rows[0]!.n;
}

/** No row in `images` and nothing under DATA_DIR/images but the empty staging directory. */
async function assertNothingStored(t: TestEnvironment) {
  assert.equal(await imageRows(t), 0, "no image row");
  assert.deepEqual(await imageTree(t.dataDir), emptyImageTree(t), "only the empty staging directories");
}

function assertImage(image: Image | undefined, expected: Partial<Image>, startedMs: number): Image {
  assert.ok(image, "image is present");
  assert.match(image.imageId, UUID);
  for (const [k, v] of Object.entries(expected)) assert.deepEqual(image[k as keyof Image], v, `image.${k}`);
  assert.ok(image.createdAt, "created_at is set");
  const created = timestampMs(image.createdAt);
  assert.ok(created >= startedMs - 60_000 && created <= Date.now() + 60_000, "created_at is around now");
  return image;
}

describe("every image RPC over each transport", () => {
  let t: TestEnvironment;
  before(async () => {
    t = await startEnvironment();
  });
  after(() => t?.close());

  const kinds: TransportKind[] = ["connect-binary-h2", "connect-json-h1", "grpc-h2", "grpc-web-h1"];
  for (const kind of kinds) {
    it(`health, register, stream, get, list, delete over ${kind}`, async () => {
      const client = environmentClient(t.baseUrl, kind);
      const tenantId = `tenant-${kind}`;
      const started = Date.now();

      const health = await client.healthCheck({});
      assert.equal(health.healthy, true);
      assert.equal(health.databaseReachable, true);
      assert.ok(health.version.length > 0);
      assert.ok(health.uptimeMs >= 0n);

      // Unary registration: runner type unspecified means OCI; metadata round-trips.
      const small = patternBytes(100_000, 7);
      const reg = await client.registerImage({
        tenantId,
        name: "unary-image",
        description: "registered in one message",
        binary: small,
        metadata: json({ team: "payments", version: 3 }),
        sha256: sha256Hex(small),
      });
      const unary = assertImage(
        reg.image,
        {
          tenantId,
          name: "unary-image",
          description: "registered in one message",
          runnerType: RunnerType.OCI,
          sizeBytes: 100_000n,
          sha256: sha256Hex(small),
          version: 1,
          tag: "",
        },
        started,
      );
      assert.equal(reg.imageId, unary.imageId);
      assert.deepEqual(fromJson(unary.metadata), { team: "payments", version: 3 });

      // Streamed registration of a native image, without a client checksum: the server computes it.
      const big = patternBytes(3 * MiB + 17, 8);
      const streamed = await client.registerImageStream(
        uploadMessages(
          { tenantId, name: "streamed-image", runnerType: RunnerType.NATIVE, binarySize: BigInt(big.byteLength) },
          chunksOf(big, 256 * 1024),
        ),
      );
      assertImage(
        streamed.image,
        { tenantId, name: "streamed-image", runnerType: RunnerType.NATIVE, sizeBytes: BigInt(big.byteLength), sha256: sha256Hex(big) },
        started,
      );
      assert.equal(fromJson(streamed.image!.metadata), undefined);

      const got = await client.getImage({ tenantId, imageId: unary.imageId });
      assert.deepEqual(got.image, unary);

      const list = await client.listImages({ tenantId });
      assert.deepEqual(
        list.images.map((i) => i.name),
        ["streamed-image", "unary-image"],
      );
      assert.equal(list.totalCount, 2n);
      assert.equal(list.nextPageToken, "");

      await client.deleteImage({ tenantId, imageId: unary.imageId });
      await rejectsWithCode(client.getImage({ tenantId, imageId: unary.imageId }), Code.NotFound);
      await rejectsWithCode(client.deleteImage({ tenantId, imageId: unary.imageId }), Code.NotFound);
      const afterDelete = await client.listImages({ tenantId });
      assert.deepEqual(
        afterDelete.images.map((i) => i.imageId),
        [streamed.imageId],
      );
      await assert.rejects(stat(path.join(t.dataDir, "images", unary.imageId)), { code: "ENOENT" });
    });
  }
});

describe("RegisterImageStream stores large binaries", () => {
  let t: TestEnvironment;
  before(async () => {
    t = await startEnvironment();
  });
  after(() => t?.close());

  it("streams 64 MiB with sha256 into DATA_DIR/images/<id>/binary and bundle/rootfs/binary", async () => {
    const client = environmentClient(t.baseUrl, "connect-binary-h2");
    const size = 64 * MiB + 12_345;
    // Generated chunk by chunk so the test itself does not hold the whole binary.
    const chunkSize = 1 * MiB;
    const chunk = (i: number) => patternBytes(Math.min(chunkSize, size - i * chunkSize), 1000 + i);
    const count = Math.ceil(size / chunkSize);
    const h = createHash("sha256");
    for (let i = 0; i < count; i++) h.update(chunk(i));
    const sha256 = h.digest("hex");
    function* chunks() {
      for (let i = 0; i < count; i++) yield chunk(i);
    }

    const res = await client.registerImageStream(
      uploadMessages({ tenantId: "big", name: "sixty-four", binarySize: BigInt(size), sha256 }, chunks()),
    );
    const image = res.image!;
    assert.equal(image.sizeBytes, BigInt(size));
    assert.equal(image.sha256, sha256);
    assert.equal(image.runnerType, RunnerType.OCI);

    const [row] = await t.query<{ size_bytes: string; sha256: string; runner_type: string }>(
      "SELECT size_bytes::text, sha256, runner_type::text FROM images WHERE image_id = $1",
      [res.imageId],
    );
    assert.deepEqual(row, { size_bytes: String(size), sha256, runner_type: "oci" });

    const dir = path.join(t.dataDir, "images", res.imageId);
    const binary = path.join(dir, "binary");
    const inRootfs = path.join(dir, "bundle", "rootfs", "binary");
    const st = await stat(binary);
    assert.equal(st.size, size);
    assert.ok((st.mode & 0o111) !== 0, "binary is executable");
    assert.equal(await fileSha256(binary), sha256);
    const rootfsStat = await stat(inRootfs);
    assert.equal(rootfsStat.size, size);
    assert.equal(await fileSha256(inRootfs), sha256);
    assert.deepEqual(await readdir(stagingDir(t)), [], "staging is empty afterwards");

    await client.deleteImage({ tenantId: "big", imageId: res.imageId });
    await assert.rejects(stat(dir), { code: "ENOENT" });
  });

  it("lays out no bundle for a native image", async () => {
    const client = environmentClient(t.baseUrl, "grpc-h2");
    const bytes = patternBytes(5000, 3);
    const res = await client.registerImage({ tenantId: "big", name: "native-one", binary: bytes, runnerType: RunnerType.NATIVE });
    const dir = path.join(t.dataDir, "images", res.imageId);
    assert.deepEqual(await readdir(dir), ["binary"]);
    assert.equal(await fileSha256(path.join(dir, "binary")), sha256Hex(bytes));
  });

  it("accepts a unary RegisterImage of exactly 16 MiB", async () => {
    const client = environmentClient(t.baseUrl, "connect-binary-h2");
    const bytes = patternBytes(16 * MiB, 4);
    const res = await client.registerImage({ tenantId: "big", name: "sixteen", binary: bytes });
    assert.equal(res.image!.sizeBytes, BigInt(16 * MiB));
    assert.equal(res.image!.sha256, sha256Hex(bytes));
  });
});

describe("failed registrations leave nothing behind", () => {
  let t: TestEnvironment;
  before(async () => {
    t = await startEnvironment();
  });
  after(() => t?.close());

  const header = (extra: Record<string, unknown> = {}) => ({ tenantId: "acme", name: `img-${randomUUID().slice(0, 8)}`, ...extra });
  const data = patternBytes(2 * MiB + 5, 42);

  it("starts clean", async () => {
    await assertNothingStored(t);
  });

  it("refuses a checksum mismatch", async () => {
    const client = environmentClient(t.baseUrl);
    const wrong = sha256Hex(patternBytes(10, 1));
    await rejectsWithCode(
      client.registerImageStream(uploadMessages(header({ binarySize: BigInt(data.byteLength), sha256: wrong }), chunksOf(data, 64 * 1024))),
      Code.InvalidArgument,
      "sha256",
    );
    await assertNothingStored(t);
  });

  it("refuses fewer bytes than binary_size", async () => {
    const client = environmentClient(t.baseUrl);
    await rejectsWithCode(
      client.registerImageStream(uploadMessages(header({ binarySize: BigInt(data.byteLength + 1) }), chunksOf(data, 64 * 1024))),
      Code.InvalidArgument,
      "binary_size",
    );
    await assertNothingStored(t);
  });

  it("refuses more bytes than binary_size", async () => {
    const client = environmentClient(t.baseUrl);
    await rejectsWithCode(
      client.registerImageStream(uploadMessages(header({ binarySize: BigInt(data.byteLength - 1) }), chunksOf(data, 64 * 1024))),
      Code.InvalidArgument,
      "binary_size",
    );
    await assertNothingStored(t);
  });

  it("refuses a stream whose first message is not the header", async () => {
    const client = environmentClient(t.baseUrl);
    async function* noHeader() {
      for (const chunk of chunksOf(data, 64 * 1024)) yield { payload: { case: "chunk" as const, value: chunk } };
    }
    await rejectsWithCode(client.registerImageStream(noHeader()), Code.InvalidArgument, "header");
    await rejectsWithCode(client.registerImageStream(uploadMessagesWithoutAnything()), Code.InvalidArgument, "header");
    await assertNothingStored(t);
  });

  it("refuses a repeated header", async () => {
    const client = environmentClient(t.baseUrl);
    const h = header({ binarySize: BigInt(data.byteLength) });
    async function* twice() {
      yield { payload: { case: "header" as const, value: h } };
      yield { payload: { case: "chunk" as const, value: data.subarray(0, MiB) } };
      yield { payload: { case: "header" as const, value: h } };
      yield { payload: { case: "chunk" as const, value: data.subarray(MiB) } };
    }
    await rejectsWithCode(client.registerImageStream(twice()), Code.InvalidArgument, "header");
    await assertNothingStored(t);
  });

  it("refuses an empty upload", async () => {
    const client = environmentClient(t.baseUrl);
    await rejectsWithCode(client.registerImageStream(uploadMessages(header({ binarySize: 0n }), [])), Code.InvalidArgument, "binary_size");
    await rejectsWithCode(client.registerImage({ tenantId: "acme", name: "empty", binary: new Uint8Array() }), Code.InvalidArgument, "binary");
    await assertNothingStored(t);
  });

  it("refuses a unary RegisterImage over 16 MiB with RESOURCE_EXHAUSTED naming RegisterImageStream", async () => {
    const client = environmentClient(t.baseUrl);
    await rejectsWithCode(
      client.registerImage({ tenantId: "acme", name: "too-big", binary: patternBytes(16 * MiB + 1, 9) }),
      Code.ResourceExhausted,
      "RegisterImageStream",
    );
    await assertNothingStored(t);
  });

  it("refuses a unary RegisterImage whose sha256 does not match", async () => {
    const client = environmentClient(t.baseUrl, "connect-json-h1");
    await rejectsWithCode(
      client.registerImage({ tenantId: "acme", name: "bad-sum", binary: data, sha256: "0".repeat(64) }),
      Code.InvalidArgument,
      "sha256",
    );
    await assertNothingStored(t);
  });

  for (const kind of ["connect-binary-h2", "connect-json-h1", "grpc-h2"] as const) {
    it(`cleans up after a client abort mid-stream (${kind})`, async () => {
      const client = environmentClient(t.baseUrl, kind);
      const controller = new AbortController();
      const total = 32 * MiB;
      async function* partial() {
        yield { payload: { case: "header" as const, value: header({ binarySize: BigInt(total) }) } };
        for (let i = 0; i < 4; i++) yield { payload: { case: "chunk" as const, value: patternBytes(MiB, i) } };
        // Hold the stream open, as a client that stalls, until it is aborted.
        await new Promise((resolve) => controller.signal.addEventListener("abort", resolve, { once: true }));
      }
      const call = client.registerImageStream(partial(), { signal: controller.signal });
      call.catch(() => {});
      // Abort only once the server has written part of the upload to its staging file.
      const staging = stagingDir(t);
      const started = await eventually(async () => {
        for (const dir of await readdir(staging)) {
          const s = await stat(path.join(staging, dir, "binary")).catch(() => undefined);
          if (s && s.size >= MiB) return true;
        }
        return false;
      }, 10_000);
      assert.ok(started, "the server started writing the upload");
      controller.abort();
      await rejectsWithCode(call, Code.Canceled);
      const clean = await eventually(async () => (await imageTree(t.dataDir)).join() === emptyImageTree(t).join(), 10_000);
      assert.ok(clean, `nothing left after the abort: ${(await imageTree(t.dataDir)).join(", ")}`);
      assert.equal(await imageRows(t), 0);
      // The server counts it as the client's cancel, not as its own INTERNAL error.
      const uploads = async () =>
        (await (await fetch(`${t.baseUrl}/metrics`)).text())
          .split("\n")
          .filter((l) => l.startsWith("runtara_rpc_duration_seconds_count") && l.includes("RegisterImageStream"));
      assert.ok(await eventually(async () => (await uploads()).some((l) => l.includes('code="canceled"')), 10_000), (await uploads()).join("\n"));
      assert.ok(!(await uploads()).some((l) => l.includes('code="internal"')), (await uploads()).join("\n"));
    });
  }

  it("counts an upload whose client's connection dropped (as when it is killed) as CANCELED, not INTERNAL", async () => {
    // Raw HTTP/2: destroying the socket mid-upload is what a kill -9 of the client does; the
    // server then sees its streams reset with INTERNAL_ERROR.
    const socket = net.connect(Number(new URL(t.baseUrl).port), "127.0.0.1");
    const session = http2.connect(t.baseUrl, { createConnection: () => socket });
    session.on("error", () => {});
    const stream = session.request({
      ":method": "POST",
      ":path": "/runtara.environment.v1.EnvironmentService/RegisterImageStream",
      "content-type": "application/grpc",
      te: "trailers",
    });
    stream.on("error", () => {});
    const envelope = (m: MessageInitShape<typeof RegisterImageStreamRequestSchema>) => {
      const body = toBinary(RegisterImageStreamRequestSchema, create(RegisterImageStreamRequestSchema, m));
      const head = Buffer.alloc(5);
      head.writeUInt32BE(body.byteLength, 1);
      return Buffer.concat([head, body]);
    };
    stream.write(envelope({ payload: { case: "header", value: header({ binarySize: BigInt(8 * MiB) }) } }));
    stream.write(envelope({ payload: { case: "chunk", value: patternBytes(MiB, 9) } }));
    const staging = stagingDir(t);
    const started = await eventually(async () => {
      for (const dir of await readdir(staging)) if (((await stat(path.join(staging, dir, "binary")).catch(() => undefined))?.size ?? 0) >= MiB) return true;
      return false;
    }, 10_000);
    assert.ok(started, "the server started writing the upload");
    socket.resetAndDestroy(); // a TCP reset, as the kernel sends for a killed process
    const codes = async () =>
      (await (await fetch(`${t.baseUrl}/metrics`)).text())
        .split("\n")
        .filter((l) => l.startsWith("runtara_rpc_duration_seconds_count") && l.includes("RegisterImageStream"));
    const before = (await codes()).find((l) => l.includes('code="canceled"'));
    assert.ok(await eventually(async () => (await codes()).find((l) => l.includes('code="canceled"')) !== before, 10_000), (await codes()).join("\n"));
    assert.ok(!(await codes()).some((l) => l.includes('code="internal"')), (await codes()).join("\n"));
    assert.ok(await eventually(async () => (await imageTree(t.dataDir)).join() === emptyImageTree(t).join(), 10_000));
  });

  it("registers an existing (tenant, name) as its next version; a taken tag is ALREADY_EXISTS and leaves no files", async () => {
    const client = environmentClient(t.baseUrl);
    const first = await client.registerImage({ tenantId: "acme", name: "dup", binary: data, tag: "v1.0" });
    const second = await client.registerImage({ tenantId: "acme", name: "dup", binary: data });
    const third = await client.registerImageStream(
      uploadMessages({ tenantId: "acme", name: "dup", binarySize: BigInt(data.byteLength), tag: "v3" }, chunksOf(data, MiB)),
    );
    assert.deepEqual(
      [first.image, second.image, third.image].map((i) => [i?.version, i?.tag]),
      [
        [1, "v1.0"],
        [2, ""],
        [3, "v3"],
      ],
    );
    assert.equal(new Set([first.imageId, second.imageId, third.imageId]).size, 3, "each version is its own image");
    const treeBefore = await imageTree(t.dataDir);
    await rejectsWithCode(client.registerImage({ tenantId: "acme", name: "dup", binary: data, tag: "v1.0" }), Code.AlreadyExists, "tag", "v1.0");
    await rejectsWithCode(
      client.registerImageStream(uploadMessages({ tenantId: "acme", name: "dup", binarySize: BigInt(data.byteLength), tag: "v3" }, chunksOf(data, MiB))),
      Code.AlreadyExists,
      "tag",
    );
    assert.deepEqual(await imageTree(t.dataDir), treeBefore, "no files of the refused registrations");
    assert.equal(await imageRows(t), 3);
    // A refused registration used no version number; the name is independent in another tenant.
    const fourth = await client.registerImage({ tenantId: "acme", name: "dup", binary: data, tag: "v4" });
    assert.equal(fourth.image?.version, 4);
    const other = await client.registerImage({ tenantId: "other", name: "dup", binary: data, tag: "v1.0" });
    assert.equal(other.image?.version, 1);
    for (const [tenantId, imageId] of [
      ["acme", first.imageId],
      ["acme", second.imageId],
      ["acme", third.imageId],
      ["acme", fourth.imageId],
      ["other", other.imageId],
    ] as const) {
      await client.deleteImage({ tenantId, imageId });
    }
    await assertNothingStored(t);
  });
});

describe("ListImages", () => {
  let t: TestEnvironment;
  const client = () => environmentClient(t.baseUrl);
  const names = Array.from({ length: 150 }, (_, i) => `img-${String(i).padStart(3, "0")}`);

  async function register(tenantId: string, list: readonly string[]) {
    const c = client();
    const bytes = patternBytes(64, 5);
    for (let i = 0; i < list.length; i += 10) {
      await Promise.all(list.slice(i, i + 10).map((name) => c.registerImage({ tenantId, name, binary: bytes, runnerType: RunnerType.NATIVE })));
    }
  }

  before(async () => {
    t = await startEnvironment();
    // Registered in a shuffled order so the listing order cannot come from insertion order.
    const shuffled = [...names].sort((a, b) => (sha256Hex(Buffer.from(a)) < sha256Hex(Buffer.from(b)) ? -1 : 1));
    await register("lister", shuffled);
    await register("prefixes", ["a_b", "a_c", "axb", "a.b", "a-b", "b_a"]);
  });
  after(() => t?.close());

  it("returns 100 by default, ordered by name, with total_count and a next_page_token", async () => {
    const res = await client().listImages({ tenantId: "lister" });
    assert.equal(res.images.length, 100);
    assert.deepEqual(
      res.images.map((i) => i.name),
      names.slice(0, 100),
    );
    assert.equal(res.totalCount, 150n);
    assert.notEqual(res.nextPageToken, "");
  });

  it("returns up to 1000 and refuses 1001", async () => {
    const res = await client().listImages({ tenantId: "lister", limit: 1000 });
    assert.equal(res.images.length, 150);
    assert.equal(res.nextPageToken, "");
    await rejectsWithCode(client().listImages({ tenantId: "lister", limit: 1001 }), Code.InvalidArgument, "limit");
  });

  it("applies offset", async () => {
    const mid = await client().listImages({ tenantId: "lister", limit: 5, offset: 10 });
    assert.deepEqual(
      mid.images.map((i) => i.name),
      names.slice(10, 15),
    );
    assert.equal(mid.totalCount, 150n);
    const tail = await client().listImages({ tenantId: "lister", offset: 140 });
    assert.deepEqual(
      tail.images.map((i) => i.name),
      names.slice(140),
    );
    assert.equal(tail.nextPageToken, "");
    const beyond = await client().listImages({ tenantId: "lister", offset: 500 });
    assert.deepEqual(beyond.images, []);
    assert.equal(beyond.totalCount, 150n);
  });

  it("walks every page with page_token / next_page_token", async () => {
    const seen: string[] = [];
    let token = "";
    let pages = 0;
    do {
      const page = await client().listImages({ tenantId: "lister", limit: 7, pageToken: token });
      assert.ok(page.images.length <= 7);
      assert.equal(page.totalCount, 150n);
      seen.push(...page.images.map((i) => i.name));
      token = page.nextPageToken;
      pages++;
      assert.ok(pages <= 30, "the walk terminates");
    } while (token !== "");
    assert.equal(pages, Math.ceil(150 / 7));
    assert.deepEqual(seen, names);
  });

  it("walks pages within a name prefix", async () => {
    const seen: string[] = [];
    let token = "";
    do {
      const page = await client().listImages({ tenantId: "lister", namePrefix: "img-1", limit: 20, pageToken: token });
      assert.equal(page.totalCount, 50n);
      seen.push(...page.images.map((i) => i.name));
      token = page.nextPageToken;
    } while (token !== "");
    assert.deepEqual(seen, names.slice(100));
  });

  it("keeps keyset pages stable when earlier rows disappear", async () => {
    const c = client();
    await register("keyset", names.slice(0, 30));
    const first = await c.listImages({ tenantId: "keyset", limit: 10 });
    assert.deepEqual(
      first.images.map((i) => i.name),
      names.slice(0, 10),
    );
    // Removing rows already seen would make an offset-based second page skip some.
    for (const image of first.images.slice(0, 3)) await c.deleteImage({ tenantId: "keyset", imageId: image.imageId });
    const second = await c.listImages({ tenantId: "keyset", limit: 10, pageToken: first.nextPageToken });
    assert.deepEqual(
      second.images.map((i) => i.name),
      names.slice(10, 20),
    );
    assert.equal(second.totalCount, 27n);
  });

  it("matches name_prefix literally (LIKE wildcards % and _ are not wildcards)", async () => {
    const c = client();
    const list = async (namePrefix: string) => {
      const res = await c.listImages({ tenantId: "prefixes", namePrefix });
      return { names: res.images.map((i) => i.name), total: res.totalCount };
    };
    assert.deepEqual(await list("a_"), { names: ["a_b", "a_c"], total: 2n });
    assert.deepEqual(await list("_"), { names: [], total: 0n });
    assert.deepEqual(await list("%"), { names: [], total: 0n });
    assert.deepEqual(await list("a%"), { names: [], total: 0n });
    assert.deepEqual(await list("\\"), { names: [], total: 0n });
    assert.deepEqual(await list("a"), { names: ["a-b", "a.b", "a_b", "a_c", "axb"], total: 5n });
    assert.deepEqual(await list(""), { names: ["a-b", "a.b", "a_b", "a_c", "axb", "b_a"], total: 6n });
  });

  it("refuses a page_token it did not issue and a page_token combined with offset", async () => {
    const c = client();
    await rejectsWithCode(c.listImages({ tenantId: "lister", pageToken: "garbage!!" }), Code.InvalidArgument, "page_token");
    const first = await c.listImages({ tenantId: "lister", limit: 10 });
    await rejectsWithCode(c.listImages({ tenantId: "lister", pageToken: first.nextPageToken, offset: 5 }), Code.InvalidArgument, "offset");
  });
});

describe("tenant isolation", () => {
  let t: TestEnvironment;
  before(async () => {
    t = await startEnvironment();
  });
  after(() => t?.close());

  it("hides another tenant's image from get, list and delete, and leaves it intact", async () => {
    const c = environmentClient(t.baseUrl);
    const bytes = patternBytes(1000, 11);
    const alpha = await c.registerImage({ tenantId: "alpha", name: "shared-name", binary: bytes });
    const beta = await c.registerImage({ tenantId: "beta", name: "shared-name", binary: bytes });
    assert.notEqual(alpha.imageId, beta.imageId);

    const hidden = await rejectsWithCode(c.getImage({ tenantId: "beta", imageId: alpha.imageId }), Code.NotFound);
    const missingId = randomUUID();
    const missing = await rejectsWithCode(c.getImage({ tenantId: "beta", imageId: missingId }), Code.NotFound);
    // The answer does not reveal that the image exists elsewhere.
    assert.equal(hidden.rawMessage.replace(alpha.imageId, "<id>"), missing.rawMessage.replace(missingId, "<id>"));

    const betaList = await c.listImages({ tenantId: "beta" });
    assert.deepEqual(
      betaList.images.map((i) => i.imageId),
      [beta.imageId],
    );
    assert.equal(betaList.totalCount, 1n);
    const gammaList = await c.listImages({ tenantId: "gamma" });
    assert.deepEqual(gammaList.images, []);
    assert.equal(gammaList.totalCount, 0n);

    await rejectsWithCode(c.deleteImage({ tenantId: "beta", imageId: alpha.imageId }), Code.NotFound);
    await rejectsWithCode(c.deleteImage({ tenantId: "gamma", imageId: alpha.imageId }), Code.NotFound);

    const still = await c.getImage({ tenantId: "alpha", imageId: alpha.imageId });
    assert.equal(still.image?.name, "shared-name");
    assert.equal((await stat(path.join(t.dataDir, "images", alpha.imageId, "binary"))).size, 1000);
    assert.equal(await imageRows(t, "alpha"), 1);
  });
});

describe("DeleteImage while instances use the image", () => {
  let t: TestEnvironment;
  before(async () => {
    t = await startEnvironment();
  });
  after(() => t?.close());

  it("is FAILED_PRECONDITION while a non-terminal instance uses it, and removes the files once none does", async () => {
    const c = environmentClient(t.baseUrl);
    const res = await c.registerImage({ tenantId: "ops", name: "busy", binary: patternBytes(2048, 2) });
    const dir = path.join(t.dataDir, "images", res.imageId);
    await t.query("INSERT INTO instances (instance_id, tenant_id, image_id, image_name, status) VALUES ($1, 'ops', $2, 'busy', 'running')", [
      "inst-busy",
      res.imageId,
    ]);
    for (const status of ["pending", "running", "suspended"]) {
      await t.query("UPDATE instances SET status = $1 WHERE instance_id = 'inst-busy'", [status]);
      await rejectsWithCode(c.deleteImage({ tenantId: "ops", imageId: res.imageId }), Code.FailedPrecondition);
      assert.equal((await c.getImage({ tenantId: "ops", imageId: res.imageId })).image?.name, "busy");
      assert.equal((await stat(path.join(dir, "binary"))).size, 2048);
    }
    await t.query("UPDATE instances SET status = 'completed' WHERE instance_id = 'inst-busy'");
    await c.deleteImage({ tenantId: "ops", imageId: res.imageId });
    await rejectsWithCode(c.getImage({ tenantId: "ops", imageId: res.imageId }), Code.NotFound);
    await assert.rejects(stat(dir), { code: "ENOENT" });
    // The instance keeps its history; only the reference to the image is cleared.
    const [instance] = await t.query<{ image_id: string | null; image_name: string }>(
      "SELECT image_id, image_name FROM instances WHERE instance_id = 'inst-busy'",
    );
    assert.deepEqual(instance, { image_id: null, image_name: "busy" });
  });
});

describe("a full disk", { skip: process.getuid?.() === 0 ? false : "needs root (mounts a small tmpfs as DATA_DIR)" }, () => {
  let t: TestEnvironment;
  let mount: string;
  before(async () => {
    mount = await mkdtemp(path.join(tmpdir(), "runtara-test-full-"));
    execFileSync("mount", ["-t", "tmpfs", "-o", "size=12m,mode=0711", "tmpfs", mount]);
    t = await startEnvironment({ dataDir: path.join(mount, "data") });
  });
  after(async () => {
    await t?.close();
    execFileSync("umount", [mount]);
    await rm(mount, { recursive: true });
  });

  it("an upload that fills DATA_DIR is RESOURCE_EXHAUSTED naming the disk, leaves nothing, and the next one fits", async () => {
    const client = environmentClient(t.baseUrl);
    const big = patternBytes(16 * MiB, 3);
    const header = { tenantId: "acme", name: "too-big", binarySize: BigInt(big.byteLength), sha256: sha256Hex(big) };
    await rejectsWithCode(client.registerImageStream(uploadMessages(header, chunksOf(big, MiB))), Code.ResourceExhausted, "disk is full", "DATA_DIR");
    const dataDir = t.env.options.dataDir; // the mount, not the helper's own temporary directory
    assert.ok(await eventually(async () => (await imageTree(dataDir)).join() === emptyImageTree(t).join(), 10_000), (await imageTree(dataDir)).join(", "));
    assert.equal(await imageRows(t), 0);
    const small = patternBytes(MiB, 4);
    const res = await client.registerImageStream(
      uploadMessages({ tenantId: "acme", name: "fits", binarySize: BigInt(small.byteLength), sha256: sha256Hex(small) }, chunksOf(small, MiB)),
    );
    assert.equal(res.image?.sizeBytes, BigInt(MiB));
  });
});
