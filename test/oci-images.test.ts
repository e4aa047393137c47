/**
 * OCI image archives as images (issue 11, item 1): archives built here with independent tools
 * (umoci to make layers, skopeo to write `oci-archive:`), registered through the streamed
 * upload, verified, unpacked and run under real runc; bad archives leave nothing behind.
 */
import assert from "node:assert/strict";
import { appendFile, chmod, mkdir, mkdtemp, readdir, readFile, rm, stat, truncate, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { gzipSync } from "node:zlib";
import { after, before, describe, it } from "node:test";
import { Code, ConnectError } from "@connectrpc/connect";
import { InstanceStatus } from "../gen/runtara/core/v1/types_pb.js";
import { ImageFormat, RunnerType } from "../gen/runtara/environment/v1/environment_pb.js";
import { hostArchitecture } from "../src/images/oci-archive.js";
import { buildFixtures } from "./fixtures/build.js";
import { archiveOf, buildLayout, run } from "./fixtures/oci-layout.js";
import {
  chunksOf,
  emptyImageTree,
  environmentClient,
  imageTree,
  rejectsWithCode,
  startEnvironment,
  stopTestPostgres,
  uploadMessages,
  type TestEnvironment,
  ociSkip,
} from "./helpers.js";

const TENANT = "tenant-oci";
const skip = await ociSkip();

after(() => stopTestPostgres());

describe("OCI image archives", { skip }, () => {
  let t: TestEnvironment;
  let dir: string;
  let workflow: string;
  let client: ReturnType<typeof environmentClient>;
  let archive: Uint8Array;
  let layout: string;

  const register = (bytes: Uint8Array, name: string, runnerType = RunnerType.OCI, c = client) =>
    c.registerImageStream(
      uploadMessages({ tenantId: TENANT, name, runnerType, format: ImageFormat.OCI_ARCHIVE, binarySize: BigInt(bytes.byteLength) }, chunksOf(bytes, 256 * 1024)),
    );

  async function runToEnd(imageId: string, env: Record<string, string> = {}) {
    const { instanceId } = await client.startInstance({ tenantId: TENANT, imageId, env });
    let last;
    for await (const r of client.watchInstance({ tenantId: TENANT, instanceId }, { timeoutMs: 60_000 })) last = r.instance!;
    return last!;
  }
  const output = (i: { output: Uint8Array }) => JSON.parse(new TextDecoder().decode(i.output)) as Record<string, unknown>;

  let treeBefore: string[];
  async function assertNothingLeft(name: string) {
    assert.deepEqual(await imageTree(t.dataDir), treeBefore, "no files of the refused upload");
    assert.equal((await t.query(`SELECT count(*)::int AS n FROM images WHERE name = $1`, [name]))[0]!.n, 0, "no row");
  }

  before(async () => {
    t = await startEnvironment();
    client = environmentClient(t.baseUrl);
    dir = await mkdtemp(path.join(tmpdir(), "runtara-oci-images-"));
    workflow = (await buildFixtures()).workflow;
    layout = await buildLayout(
      path.join(dir, "a"),
      [
        {
          files: { "bin/busybox": { from: "/bin/busybox" }, "bin/wf": { from: workflow }, "etc/gone": { text: "deleted above" }, "work/.keep": { text: "" } },
          symlinks: { "bin/sh": "busybox" },
        },
        { files: { "etc/kept": { text: "here" } }, remove: ["etc/gone"] },
      ],
      [
        "--config.entrypoint=/bin/wf",
        "--config.env=FOO=from-image",
        "--config.env=WORKFLOW_MODE=probe",
        "--config.env=PROBE_ENV=FOO",
        "--config.env=PROBE_PATHS=/etc/gone,/etc/kept,/bin/sh",
        "--config.workingdir=/work",
      ],
    );
    archive = await archiveOf(layout, path.join(dir, "a.tar"));
  });
  after(async () => {
    await t.close();
    await rm(dir, { recursive: true, force: true });
  });

  it("a two-layer image runs with its Entrypoint, Env and WorkingDir; the file its upper layer deleted is absent", async () => {
    const { image } = await register(archive, "probe");
    assert.equal(image!.format, ImageFormat.OCI_ARCHIVE);
    const index = JSON.parse(await readFile(path.join(layout, "index.json"), "utf8")) as { manifests: { digest: string }[] };
    assert.equal(image!.manifestDigest, index.manifests[0]!.digest, "the manifest digest is stored and shown");
    assert.equal((await client.getImage({ tenantId: TENANT, imageId: image!.imageId })).image!.manifestDigest, image!.manifestDigest);
    assert.equal((await client.listImages({ tenantId: TENANT })).images.find((i) => i.imageId === image!.imageId)!.manifestDigest, image!.manifestDigest);

    const done = await runToEnd(image!.imageId);
    assert.equal(done.status, InstanceStatus.COMPLETED, `${done.error} ${done.stderr}`);
    assert.deepEqual(output(done), { env: "from-image", exists: "011", uid: 0, cwd: "/work" });
    // The instance's own env goes on top of the image's.
    const overridden = await runToEnd(image!.imageId, { FOO: "from-request" });
    assert.equal(output(overridden).env, "from-request");
    // Only the unpacked root and the process are kept, not the archive.
    const files = await imageTree(t.dataDir);
    assert.ok(files.includes(`${image!.imageId}/process.json`));
    assert.ok(!files.includes(`${image!.imageId}/binary`));
  });

  it("a gzip-compressed archive and an image with a non-root User", async () => {
    const { image: gz } = await register(gzipSync(archive), "probe-gz");
    const done = await runToEnd(gz!.imageId);
    assert.equal(done.status, InstanceStatus.COMPLETED, `${done.error} ${done.stderr}`);

    await run("umoci", ["config", "--image", `${layout}:t`, "--config.user=1000:1000"]);
    const { image: user } = await register(await archiveOf(layout, path.join(dir, "user.tar")), "probe-user");
    const asUser = await runToEnd(user!.imageId);
    assert.equal(asUser.status, InstanceStatus.COMPLETED, `${asUser.error} ${asUser.stderr}`);
    assert.equal(output(asUser).uid, 1000);
  });

  it("an image cannot reach the host: symlinked etc and run, setuid files, file capabilities, device nodes and FIFOs are defused", async () => {
    const hostTarget = path.join(dir, "host-target");
    const hostile = await buildLayout(
      path.join(dir, "hostile"),
      [
        {
          files: { "bin/busybox": { from: "/bin/busybox" }, "bin/wf": { from: workflow }, "bin/suid": { from: "/bin/busybox" } },
          symlinks: { "bin/sh": "busybox", etc: hostTarget, run: `${hostTarget}-run` },
          shape: async (rootfs) => {
            await chmod(path.join(rootfs, "bin/suid"), 0o6755);
            await run("setcap", ["cap_dac_override,cap_setuid+ep", path.join(rootfs, "bin/busybox")]);
            await mkdir(path.join(rootfs, "devs"));
            await run("mknod", [path.join(rootfs, "devs/null"), "c", "1", "3"]);
            await run("mknod", [path.join(rootfs, "devs/disk"), "b", "8", "0"]);
            await run("mkfifo", [path.join(rootfs, "devs/fifo")]);
          },
        },
      ],
      ["--config.entrypoint=/bin/wf", "--config.env=WORKFLOW_MODE=probe", "--config.env=PROBE_PATHS=/bin/suid"],
    );
    const { image } = await register(await archiveOf(hostile, path.join(dir, "hostile.tar")), "hostile");
    const bundle = path.join(t.dataDir, "images", image!.imageId, "bundle");
    assert.equal((await stat(bundle)).mode & 0o777, 0o710, "host users other than root cannot enter the bundle");
    assert.equal((await stat(path.join(bundle, "rootfs/bin/suid"))).mode & 0o7777, 0o755, "setuid and setgid cleared");
    assert.deepEqual(await readdir(path.join(bundle, "rootfs/devs")), [], "device nodes and the FIFO removed");
    assert.equal((await run("getcap", [path.join(bundle, "rootfs/bin/busybox")])).stdout.trim(), "", "file capabilities dropped");
    // The runtime may refuse such a root (FAILED launch_failed) or run it; either way the host is untouched.
    const outcome = await runToEnd(image!.imageId).then(
      (done) => InstanceStatus[done.status],
      (e: unknown) => (ConnectError.from(e).code === Code.FailedPrecondition ? "launch refused" : Promise.reject(e)),
    );
    assert.ok(["COMPLETED", "FAILED", "launch refused"].includes(outcome), outcome);
    for (const p of [hostTarget, `${hostTarget}-run`]) {
      await assert.rejects(stat(p), { code: "ENOENT" }, `${p} was created on the host through the image's symlink`);
    }
  });

  it("a layer that unpacks past the image cap is refused before it is unpacked (a layer gzip bomb)", async () => {
    const capped = await startEnvironment({ maxImageBytes: 32 * 1024 * 1024 });
    try {
      const bomb = await buildLayout(
        path.join(dir, "bomb"),
        [{ files: { "bin/wf": { from: workflow } }, shape: (rootfs) => writeFile(path.join(rootfs, "zeros"), Buffer.alloc(96 * 1024 * 1024)) }],
        ["--config.entrypoint=/bin/wf"],
      );
      const bytes = await archiveOf(bomb, path.join(dir, "bomb.tar"));
      assert.ok(bytes.byteLength < 8 * 1024 * 1024, `the archive is ${bytes.byteLength} bytes`);
      const c = environmentClient(capped.baseUrl);
      await rejectsWithCode(
        register(bytes, "bomb", RunnerType.OCI, c),
        Code.InvalidArgument,
        "binary",
        "unpack to more than",
      );
      assert.deepEqual(await imageTree(capped.dataDir), emptyImageTree(capped), "nothing left of the refused upload");
      // A 1 GiB sparse file is a few blocks of archive: refused for what it is, not its size.
      const sparse = path.join(dir, "sparse");
      await mkdir(sparse);
      await writeFile(path.join(sparse, "big"), "");
      await truncate(path.join(sparse, "big"), 1024 * 1024 * 1024);
      await run("tar", ["--sparse", "--format=pax", "-C", sparse, "-cf", path.join(dir, "sparse.tar"), "big"]);
      const sparseLayout = await buildLayout(path.join(dir, "sparse-image"), [{ files: { "bin/wf": { from: workflow } } }], ["--config.entrypoint=/bin/wf"]);
      await run("umoci", ["raw", "add-layer", "--image", `${sparseLayout}:t`, path.join(dir, "sparse.tar")]);
      const sparseBytes = await archiveOf(sparseLayout, path.join(dir, "sparse-image.tar"));
      await rejectsWithCode(
        register(sparseBytes, "sparse", RunnerType.OCI, c),
        Code.InvalidArgument,
        "binary",
        "sparse file",
      );
      assert.deepEqual(await imageTree(capped.dataDir), emptyImageTree(capped), "nothing left of the sparse upload");
    } finally {
      await capped.close();
    }
  });

  it("a corrupted blob, a truncated archive, another architecture, a non-archive, a NATIVE runner and an image with nothing to run are refused, leaving nothing", async () => {
    treeBefore = await imageTree(t.dataDir);
    assert.ok(treeBefore.includes(emptyImageTree(t)[1]!), "nothing staged");
    // Corrupted: a layer blob with a byte appended, archived by tar itself.
    const bad = path.join(dir, "bad");
    await run("cp", ["-a", layout, bad]);
    const manifest = JSON.parse(await readFile(path.join(bad, "index.json"), "utf8")) as { manifests: { digest: string }[] };
    const m = JSON.parse(await readFile(path.join(bad, "blobs/sha256", manifest.manifests[0]!.digest.slice(7)), "utf8")) as { layers: { digest: string }[] };
    await appendFile(path.join(bad, "blobs/sha256", m.layers[0]!.digest.slice(7)), "x");
    await run("tar", ["-C", bad, "-cf", path.join(dir, "bad.tar"), "."]);
    await rejectsWithCode(register(new Uint8Array(await readFile(path.join(dir, "bad.tar"))), "corrupt"), Code.InvalidArgument, "binary", "does not match its content");
    await assertNothingLeft("corrupt");

    const truncated = path.join(dir, "truncated.tar");
    await writeFile(truncated, archive);
    await truncate(truncated, Math.floor((await stat(truncated)).size / 2));
    await rejectsWithCode(register(new Uint8Array(await readFile(truncated)), "truncated"), Code.InvalidArgument, "binary");
    await assertNothingLeft("truncated");

    const other = hostArchitecture() === "amd64" ? "arm64" : "amd64";
    await run("umoci", ["config", "--image", `${layout}:t`, `--architecture=${other}`]);
    await rejectsWithCode(register(await archiveOf(layout, path.join(dir, "other.tar")), "other-arch"), Code.FailedPrecondition, `linux/${other}`, "this host runs");
    await assertNothingLeft("other-arch");

    await rejectsWithCode(register(new TextEncoder().encode("not a tar at all, just text ".repeat(40)), "text"), Code.InvalidArgument, "binary");
    await assertNothingLeft("text");

    await rejectsWithCode(register(archive, "native-archive", RunnerType.NATIVE), Code.InvalidArgument, "format");
    await assertNothingLeft("native-archive");

    const idle = await buildLayout(path.join(dir, "idle"), [{ files: { "bin/wf": { from: workflow } } }], []);
    await rejectsWithCode(register(await archiveOf(idle, path.join(dir, "idle.tar")), "no-entrypoint"), Code.InvalidArgument, "binary", "neither Entrypoint nor Cmd");
    await assertNothingLeft("no-entrypoint");
  });
});
