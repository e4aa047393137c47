/**
 * The Go client (issue 13): the code generated into clients/go/gen by `npm run generate`
 * (protoc-gen-go + protoc-gen-go-grpc) builds offline with Debian's Go packages, and the
 * example program lists images, stream-uploads a workflow binary, starts it and watches it to
 * COMPLETED against a running server. The README's Go lines are the example's own.
 */
import assert from "node:assert/strict";
import { mkdir, mkdtemp, readFile, rm, symlink } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { execa } from "execa";
import { buildFixtures } from "./fixtures/build.js";
import { startEnvironment, stopTestPostgres, type TestEnvironment } from "./helpers.js";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const MODULE = "github.com/runtara/runtara-environment/clients/go";
after(() => stopTestPostgres());

describe("the Go client", () => {
  let work: string;
  let example: string;
  let server: TestEnvironment;

  before(async () => {
    work = await mkdtemp(path.join(tmpdir(), "runtara-go-"));
    server = await startEnvironment();
    // Offline: GOPATH mode over Debian's Go sources (/usr/share/gocode), the module linked in.
    const gopath = path.join(work, "gopath");
    await mkdir(path.join(gopath, "src", path.dirname(MODULE)), { recursive: true });
    await symlink(path.join(root, "clients/go"), path.join(gopath, "src", MODULE));
    example = path.join(work, "example");
    const built = await execa("go", ["build", "-o", example, `${MODULE}/example`], {
      env: { GOPATH: `${gopath}:/usr/share/gocode`, GO111MODULE: "off", GOFLAGS: "", GOCACHE: path.join(tmpdir(), "runtara-go-cache"), GOPROXY: "off" },
      reject: false,
      timeout: 300_000,
    });
    assert.notEqual(built.code, "ENOENT", "go is installed (Debian: golang-go golang-google-grpc-dev golang-google-protobuf-dev golang-github-golang-protobuf-1-5-dev)");
    assert.equal(built.exitCode, 0, `go build: ${built.stderr}`);
  });
  after(async () => {
    await server?.close();
    await rm(work, { recursive: true, force: true });
  });

  it("the example lists images, uploads through RegisterImageStream, starts and watches to COMPLETED", async () => {
    const binary = (await buildFixtures()).workflow;
    const r = await execa(example, ["-server", server.baseUrl.replace("http://", ""), "-tenant", "go", "-binary", binary, "-env", "WORKFLOW_MODE=complete"], {
      reject: false,
      timeout: 120_000,
    });
    assert.equal(r.exitCode, 0, `${r.stdout}\n${r.stderr}`);
    assert.match(r.stdout, /^images: 0$/m);
    assert.match(r.stdout, /^registered go-example version 1 \([0-9a-f-]{36}\)$/m);
    assert.match(r.stdout, /^status INSTANCE_STATUS_COMPLETED$/m);
    assert.match(r.stdout, /^output \{"ok":true\}$/m);
    const [image] = await server.query("SELECT size_bytes FROM images WHERE tenant_id = 'go'");
    assert.equal(Number(image?.size_bytes), (await readFile(binary)).length, "the streamed upload stored every byte");
  });

  it("the example exits non-zero with the server's error when the workflow fails", async () => {
    const binary = (await buildFixtures()).workflow;
    const r = await execa(example, ["-server", server.baseUrl.replace("http://", ""), "-tenant", "go", "-name", "failing", "-binary", binary, "-env", "WORKFLOW_MODE=fail"], {
      reject: false,
      timeout: 120_000,
    });
    assert.equal(r.exitCode, 1);
    assert.match(r.stdout, /ended TERMINATION_REASON_APPLICATION_ERROR: boom/);
  });

  it("is gofmt-clean, and the README's Go lines are copied from the example", async () => {
    const fmt = await execa("gofmt", ["-l", path.join(root, "clients/go")]);
    assert.equal(fmt.stdout, "", "gofmt -l lists nothing");
    const readme = await readFile(path.join(root, "README.md"), "utf8");
    const block = /<!-- client-go -->\n```go\n([\s\S]*?)```/.exec(readme)![1]!;
    const source = await readFile(path.join(root, "clients/go/example/main.go"), "utf8");
    for (const line of block.split("\n").map((l) => l.trim()).filter((l) => l !== "")) assert.ok(source.includes(line), `README line not in the example: ${line}`);
  });
});
