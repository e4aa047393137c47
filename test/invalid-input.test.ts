import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { after, before, describe, it } from "node:test";
import { Code } from "@connectrpc/connect";
import { RunnerType } from "../gen/runtara/environment/v1/environment_pb.js";
import {
  environmentClient,
  imageTree,
  patternBytes,
  rejectsWithCode,
  sha256Hex,
  startEnvironment,
  stopTestPostgres,
  uploadMessages,
  type TestEnvironment,
  emptyImageTree,
} from "./helpers.js";

after(() => stopTestPostgres());

type Client = ReturnType<typeof environmentClient>;

interface Case {
  rpc: "RegisterImage" | "RegisterImageStream" | "GetImage" | "ListImages" | "DeleteImage";
  what: string;
  /** Overrides of a valid request. */
  input: Record<string, unknown>;
  code: Code;
  /** The field the message must name. */
  field: string;
}

const binary = patternBytes(1024, 99);
const enc = (s: string) => new TextEncoder().encode(s);
const someUuid = "3f2504e0-4f89-41d3-9a0c-0305e82c3301";

/** Identifier problems shared by every field that takes a tenant id. */
const badTenants: [string, string][] = [
  ["empty", ""],
  ["too long", "t".repeat(129)],
  ["a parent path", "../x"],
  ["a slash", "a/b"],
  ["a dot", "."],
  ["a double dot", ".."],
  ["a space", "a b"],
  ["a NUL", "a\u0000b"],
  ["non-ASCII", "tenänt"],
];

const cases: Case[] = [
  // RegisterImage
  ...badTenants.map(([what, tenantId]): Case => ({ rpc: "RegisterImage", what: `tenant_id ${what}`, input: { tenantId }, code: Code.InvalidArgument, field: "tenant_id" })),
  { rpc: "RegisterImage", what: "name empty", input: { name: "" }, code: Code.InvalidArgument, field: "name" },
  { rpc: "RegisterImage", what: "name with a slash", input: { name: "x/../../etc" }, code: Code.InvalidArgument, field: "name" },
  { rpc: "RegisterImage", what: "name too long", input: { name: "n".repeat(257) }, code: Code.InvalidArgument, field: "name" },
  { rpc: "RegisterImage", what: "description too long", input: { description: "d".repeat(4097) }, code: Code.InvalidArgument, field: "description" },
  { rpc: "RegisterImage", what: "metadata invalid JSON", input: { metadata: enc("{not json") }, code: Code.InvalidArgument, field: "metadata" },
  { rpc: "RegisterImage", what: "metadata a JSON array", input: { metadata: enc("[1,2]") }, code: Code.InvalidArgument, field: "metadata" },
  { rpc: "RegisterImage", what: "metadata a JSON string", input: { metadata: enc('"x"') }, code: Code.InvalidArgument, field: "metadata" },
  { rpc: "RegisterImage", what: "metadata JSON null", input: { metadata: enc("null") }, code: Code.InvalidArgument, field: "metadata" },
  { rpc: "RegisterImage", what: "metadata not UTF-8", input: { metadata: new Uint8Array([0x7b, 0xff, 0x7d]) }, code: Code.InvalidArgument, field: "metadata" },
  { rpc: "RegisterImage", what: "sha256 too short", input: { sha256: "abc" }, code: Code.InvalidArgument, field: "sha256" },
  { rpc: "RegisterImage", what: "sha256 upper case", input: { sha256: sha256Hex(binary).toUpperCase() }, code: Code.InvalidArgument, field: "sha256" },
  { rpc: "RegisterImage", what: "sha256 not hex", input: { sha256: "z".repeat(64) }, code: Code.InvalidArgument, field: "sha256" },
  { rpc: "RegisterImage", what: "runner_type 99", input: { runnerType: 99 as RunnerType }, code: Code.InvalidArgument, field: "runner_type" },
  { rpc: "RegisterImage", what: "binary empty", input: { binary: new Uint8Array() }, code: Code.InvalidArgument, field: "binary" },
  { rpc: "RegisterImage", what: "description with a NUL", input: { description: "a\u0000b" }, code: Code.InvalidArgument, field: "description" },
  { rpc: "RegisterImage", what: "metadata with a NUL in a value", input: { metadata: enc('{"a":"\\u0000"}') }, code: Code.InvalidArgument, field: "metadata" },
  { rpc: "RegisterImage", what: "metadata with a NUL in a nested key", input: { metadata: enc('{"a":[{"\\u0000":1}]}') }, code: Code.InvalidArgument, field: "metadata" },

  // RegisterImageStream (the header)
  ...badTenants.map(([what, tenantId]): Case => ({ rpc: "RegisterImageStream", what: `tenant_id ${what}`, input: { tenantId }, code: Code.InvalidArgument, field: "tenant_id" })),
  { rpc: "RegisterImageStream", what: "name ..", input: { name: ".." }, code: Code.InvalidArgument, field: "name" },
  { rpc: "RegisterImageStream", what: "metadata invalid JSON", input: { metadata: enc("{") }, code: Code.InvalidArgument, field: "metadata" },
  { rpc: "RegisterImageStream", what: "metadata a JSON array", input: { metadata: enc("[]") }, code: Code.InvalidArgument, field: "metadata" },
  { rpc: "RegisterImageStream", what: "sha256 bad format", input: { sha256: "xyz" }, code: Code.InvalidArgument, field: "sha256" },
  { rpc: "RegisterImageStream", what: "runner_type 99", input: { runnerType: 99 as RunnerType }, code: Code.InvalidArgument, field: "runner_type" },
  { rpc: "RegisterImageStream", what: "binary_size 0", input: { binarySize: 0n }, code: Code.InvalidArgument, field: "binary_size" },
  { rpc: "RegisterImageStream", what: "binary_size negative", input: { binarySize: -1n }, code: Code.InvalidArgument, field: "binary_size" },
  {
    rpc: "RegisterImageStream",
    what: "binary_size over the server limit",
    input: { binarySize: 1n << 40n },
    code: Code.ResourceExhausted,
    field: "binary_size",
  },

  // GetImage
  ...badTenants.map(([what, tenantId]): Case => ({ rpc: "GetImage", what: `tenant_id ${what}`, input: { tenantId }, code: Code.InvalidArgument, field: "tenant_id" })),
  { rpc: "GetImage", what: "image_id empty", input: { imageId: "" }, code: Code.InvalidArgument, field: "image_id" },
  { rpc: "GetImage", what: "image_id not a UUID", input: { imageId: "not-a-uuid" }, code: Code.InvalidArgument, field: "image_id" },
  { rpc: "GetImage", what: "image_id a path", input: { imageId: "../../etc/passwd" }, code: Code.InvalidArgument, field: "image_id" },

  // ListImages
  ...badTenants.map(([what, tenantId]): Case => ({ rpc: "ListImages", what: `tenant_id ${what}`, input: { tenantId }, code: Code.InvalidArgument, field: "tenant_id" })),
  { rpc: "ListImages", what: "negative limit", input: { limit: -1 }, code: Code.InvalidArgument, field: "limit" },
  { rpc: "ListImages", what: "limit 1001", input: { limit: 1001 }, code: Code.InvalidArgument, field: "limit" },
  { rpc: "ListImages", what: "negative offset", input: { offset: -5 }, code: Code.InvalidArgument, field: "offset" },
  { rpc: "ListImages", what: "garbage page_token", input: { pageToken: "%%%not-a-token" }, code: Code.InvalidArgument, field: "page_token" },
  { rpc: "ListImages", what: "page_token of valid base64 but not ours", input: { pageToken: Buffer.from("hello").toString("base64url") }, code: Code.InvalidArgument, field: "page_token" },
  { rpc: "ListImages", what: "name_prefix too long", input: { namePrefix: "p".repeat(257) }, code: Code.InvalidArgument, field: "name_prefix" },
  { rpc: "ListImages", what: "name_prefix with a NUL", input: { namePrefix: "a\u0000" }, code: Code.InvalidArgument, field: "name_prefix" },
  { rpc: "ListImages", what: "page_token naming a NUL", input: { pageToken: Buffer.from(JSON.stringify({ n: "a\u0000" })).toString("base64url") }, code: Code.InvalidArgument, field: "page_token" },

  // DeleteImage
  ...badTenants.map(([what, tenantId]): Case => ({ rpc: "DeleteImage", what: `tenant_id ${what}`, input: { tenantId }, code: Code.InvalidArgument, field: "tenant_id" })),
  { rpc: "DeleteImage", what: "image_id not a UUID", input: { imageId: "abc" }, code: Code.InvalidArgument, field: "image_id" },
  { rpc: "DeleteImage", what: "image_id with a slash", input: { imageId: `${someUuid}/..` }, code: Code.InvalidArgument, field: "image_id" },
];

function call(client: Client, c: Case): Promise<unknown> {
  switch (c.rpc) {
    case "RegisterImage":
      return client.registerImage({ tenantId: "acme", name: `img-${randomUUID()}`, binary, ...c.input });
    case "RegisterImageStream":
      return client.registerImageStream(
        uploadMessages({ tenantId: "acme", name: `img-${randomUUID()}`, binarySize: BigInt(binary.byteLength), ...c.input }, [binary]),
      );
    case "GetImage":
      return client.getImage({ tenantId: "acme", imageId: someUuid, ...c.input });
    case "ListImages":
      return client.listImages({ tenantId: "acme", ...c.input });
    case "DeleteImage":
      return client.deleteImage({ tenantId: "acme", imageId: someUuid, ...c.input });
  }
}

describe("invalid input is refused with a status code naming the field, and writes nothing", () => {
  let t: TestEnvironment;
  let client: Client;
  before(async () => {
    t = await startEnvironment();
    client = environmentClient(t.baseUrl, "connect-binary-h2");
  });
  after(() => t?.close());

  it("the table's valid baseline requests succeed (so each failure below is due to its one change)", async () => {
    const reg = await client.registerImage({ tenantId: "acme", name: "baseline", binary, metadata: enc('{"ok":true}'), sha256: sha256Hex(binary) });
    const streamed = await client.registerImageStream(
      uploadMessages({ tenantId: "acme", name: "baseline-stream", binarySize: BigInt(binary.byteLength), sha256: sha256Hex(binary) }, [binary]),
    );
    const list = await client.listImages({ tenantId: "acme" });
    assert.equal(list.totalCount, 2n);
    await client.getImage({ tenantId: "acme", imageId: reg.imageId });
    await client.deleteImage({ tenantId: "acme", imageId: reg.imageId });
    await client.deleteImage({ tenantId: "acme", imageId: streamed.imageId });
    const [row] = await t.query<{ n: number }>("SELECT count(*)::int AS n FROM images");
    assert.equal(row!.n, 0);
  });

  for (const c of cases) {
    it(`${c.rpc}: ${c.what} → ${Code[c.code]} naming ${c.field}`, async () => {
      const err = await rejectsWithCode(call(client, c), c.code, c.field);
      assert.ok(err.rawMessage.length < 300, "the message is short");
    });
  }

  // Inputs that once reached PostgreSQL and came back INTERNAL (text and jsonb cannot hold NUL,
  // timestamps outside years 1-9999, forged keyset tokens, an env too large to exec).
  const forgedToken = (o: unknown) => Buffer.from(JSON.stringify(o)).toString("base64url");
  const hostile: [string, () => Promise<unknown>, string][] = [
    ["ListInstances created_after in year 285 million", () => client.listInstances({ tenantId: "acme", createdAfter: { seconds: 9_000_000_000_000_000n, nanos: 0 } }), "created_after"],
    ["ListInstances finished_before before year 1", () => client.listInstances({ tenantId: "acme", finishedBefore: { seconds: -70_000_000_000n, nanos: 0 } }), "finished_before"],
    ["ListInstances image_name_prefix with a NUL", () => client.listInstances({ tenantId: "acme", imageNamePrefix: "x\u0000" }), "image_name_prefix"],
    ["ListInstances page token with month 13", () => client.listInstances({ tenantId: "acme", pageToken: forgedToken({ o: "created_desc", k: "2024-13-45 25:61:61+00", i: "x" }) }), "page_token"],
    ["ListInstances page token with Feb 30", () => client.listInstances({ tenantId: "acme", pageToken: forgedToken({ o: "created_desc", k: "2023-02-30 10:00:00+00", i: "x" }) }), "page_token"],
    ["ListInstances page token naming a NUL id", () => client.listInstances({ tenantId: "acme", pageToken: forgedToken({ o: "created_desc", k: "2023-02-03 10:00:00+00", i: "a\u0000" }) }), "page_token"],
    ["ListEvents event_type with a NUL", () => client.listEvents({ tenantId: "acme", instanceId: "i", eventType: "a\u0000" }), "event_type"],
    ["ListEvents created_before out of range", () => client.listEvents({ tenantId: "acme", instanceId: "i", createdBefore: { seconds: 1n << 60n, nanos: 0 } }), "created_before"],
    ["ListCheckpoints created_after out of range", () => client.listCheckpoints({ tenantId: "acme", instanceId: "i", createdAfter: { seconds: -(1n << 60n), nanos: 0 } }), "created_after"],
    ["StopInstance reason with a NUL", () => client.stopInstance({ tenantId: "acme", instanceId: "i", reason: "\u0000" }), "reason"],
    [
      "StartInstance env larger than exec allows",
      () => client.startInstance({ tenantId: "acme", imageId: someUuid, env: Object.fromEntries(Array.from({ length: 128 }, (_, i) => [`V${i}`, "x".repeat(32 * 1024)])) }),
      "env",
    ],
  ];
  for (const [what, run, field] of hostile) {
    it(`${what} → INVALID_ARGUMENT naming ${field}`, async () => {
      await rejectsWithCode(run(), Code.InvalidArgument, field);
    });
  }

  it("wrote nothing for any of them", async () => {
    const [row] = await t.query<{ n: number }>("SELECT count(*)::int AS n FROM images");
    assert.equal(row!.n, 0);
    assert.deepEqual(await imageTree(t.dataDir), emptyImageTree(t));
  });
});
