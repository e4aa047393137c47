/**
 * The `runtara` CLI (issue 12), run as a child process the way a user runs it, against a server
 * started as `npm start` starts it: the README quickstart executed as written (under runc),
 * JSON output that round-trips through the generated schemas, tables, a 200 MiB upload with
 * its progress bar on a pseudo-terminal, Ctrl-C during an upload, every error's one line and
 * exit code, --help of every command, and reproducible image builds.
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import http2 from "node:http2";
import { createHash, randomBytes } from "node:crypto";
import { chmod, mkdtemp, readdir, readFile, rm, stat, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { fromJson, toJson, type DescMessage } from "@bufbuild/protobuf";
import { Command, CommanderError } from "commander";
import { execa } from "execa";
import {
  GetImageResponseSchema,
  GetInstanceStatusResponseSchema,
  HealthCheckResponseSchema,
  ImageSchema,
  ListCheckpointsResponseSchema,
  ListEventsResponseSchema,
  ListImagesResponseSchema,
  ListInstancesResponseSchema,
} from "../gen/runtara/environment/v1/environment_pb.js";
import { buildProgram } from "../src/cli/runtara/program.js";
import { freePort, freshDatabase, ociSkip, startCli, startEnvironment, stopTestPostgres, waitUntil, type Cli, type TestDatabase } from "./helpers.js";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const skip = await ociSkip();
after(() => stopTestPostgres());

/** One CLI invocation: its exit code and what it printed. */
async function runtara(args: string[], env: Record<string, string> = {}) {
  const r = await execa(process.execPath, [path.join(root, "bin/runtara.js"), ...args], {
    cwd: root,
    env: { ...env, NO_COLOR: "1" },
    reject: false,
    timeout: 120_000,
  });
  return { code: r.exitCode, stdout: r.stdout, stderr: r.stderr };
}

/** Parses `text` as protobuf JSON of `schema` and checks it prints back the same. */
function roundTrips(schema: DescMessage, text: string): void {
  const parsed = JSON.parse(text) as object;
  assert.deepEqual(toJson(schema, fromJson(schema, parsed as never)), parsed, `${schema.typeName} round-trips`);
}

describe("runtara CLI", { skip }, () => {
  let db: TestDatabase;
  let dir: string;
  let dataDir: string;
  let server: Cli;
  let env: Record<string, string>;
  const cli = (...args: string[]) => runtara(args, env);

  before(async () => {
    db = await freshDatabase();
    dir = await mkdtemp(path.join(tmpdir(), "runtara-cli-"));
    await chmod(dir, 0o711); // containers' mapped root walks down to DATA_DIR
    dataDir = path.join(dir, "data");
    const port = await freePort();
    server = startCli({ RUNTARA_DATABASE_URL: db.url, DATA_DIR: dataDir, RUNTARA_ENV_HTTP_PORT: String(port), RUNTARA_CORE_ADDR: `127.0.0.1:${await freePort()}` });
    await server.waitFor("environment listening");
    env = { RUNTARA_SERVER: `http://127.0.0.1:${port}`, RUNTARA_TENANT: "cli-tenant", HOME: dir };
  });
  after(async () => {
    server.child.kill("SIGTERM");
    await server.exited;
    await db.drop();
    await rm(dir, { recursive: true, force: true });
  });

  it("the README quickstart, as written: deploy, run through a durable sleep, detach, signal, watch, logs", async (t) => {
    const readme = await readFile(path.join(root, "README.md"), "utf8");
    const block = /<!-- quickstart -->\n```sh\n([\s\S]*?)```/.exec(readme)![1]!;
    // Everything after starting the server (which the test did as `npm start` does).
    const lines = block.split("\n").filter((l) => l.startsWith("runtara ") || l.startsWith("id="));
    assert.ok(lines.length >= 8, block);
    const script = `set -e\nruntara() { "${process.execPath}" "${root}/bin/runtara.js" "$@"; }\n${lines.map((l) => `echo "+ ${l.replace(/"/g, '\\"').replace(/\$/g, "\\$")}" >&2\n${l}`).join("\n")}\n`;
    const r = await execa("sh", ["-c", script], { cwd: root, env: { ...env, NO_COLOR: "1" }, reject: false, timeout: 300_000 });
    t.diagnostic(r.stderr.split("\n").filter((l) => l.startsWith("+ ")).join(" | "));
    assert.equal(r.exitCode, 0, `${r.stdout}\n${r.stderr}`);
    assert.match(r.stdout, /\{"fetched":\{"values":\[1,2,3\].*"transformed":\{"doubled":\[2,4,6\]\}.*"published":\{"sum":12/, "run printed the output");
    assert.match(r.stderr, /SUSPENDED \(sleeping/, "the run went through its durable sleep");
    assert.match(r.stdout, /output:\s+\{"request":"ship it","approved":true,"by":"ada"\}/, "instances get shows the signalled result");
    assert.match(r.stdout, /^[0-9a-f-]{36}\s+COMPLETED\s+completed\s+approval/m, "instances ls lists it");
  });

  it("run --image-version N --detach prints the new instance's id", async () => {
    const r = await cli("run", "hello", "--image-version", "1", "--detach");
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout.trim(), /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/);
    assert.equal((await cli("instances", "watch", r.stdout.trim())).code, 0);
  });

  it("--output json of every list and get parses with the generated schemas and round-trips", async () => {
    const listed = await cli("-o", "json", "instances", "ls");
    assert.equal(listed.code, 0, listed.stderr);
    roundTrips(ListInstancesResponseSchema, listed.stdout);
    const id = (JSON.parse(listed.stdout) as { instances: { instanceId: string }[] }).instances[0]!.instanceId;
    const images = await cli("-o", "json", "images", "ls", "--all-versions");
    roundTrips(ListImagesResponseSchema, images.stdout);
    const imageId = (JSON.parse(images.stdout) as { images: { imageId: string }[] }).images[0]!.imageId;
    for (const [schema, args] of [
      [GetInstanceStatusResponseSchema, ["instances", "get", id]],
      [GetImageResponseSchema, ["images", "get", imageId]],
      [ListEventsResponseSchema, ["events", id]],
      [ListCheckpointsResponseSchema, ["checkpoints", "ls", id]],
      [HealthCheckResponseSchema, ["health"]],
    ] as const) {
      const r = await cli("-o", "json", ...args);
      assert.equal(r.code, 0, `${args.join(" ")}: ${r.stderr}`);
      roundTrips(schema, r.stdout);
    }
  });

  it("tables: a header row and aligned columns", async () => {
    const r = await cli("images", "ls");
    assert.equal(r.code, 0, r.stderr);
    const [header, ...rows] = r.stdout.trimEnd().split("\n");
    assert.equal(header, header!.trimEnd());
    assert.match(header!, /^NAME {2,}VERSION {2,}TAG {2,}IMAGE ID {2,}RUNNER {2,}FORMAT {2,}SIZE {2,}CREATED$/);
    assert.deepEqual(
      rows.map((l) => l.split(/ {2,}/).slice(0, 2)).sort(),
      [
        ["approval", "1"],
        ["hello", "1"],
      ],
    );
    // Every row's IMAGE ID starts in the header's column.
    const column = header!.indexOf("IMAGE ID");
    for (const row of rows) assert.match(row.slice(column), /^[0-9a-f-]{36} /, row);
  });

  it("a 200 MiB upload shows bytes, rate and ETA on a terminal and succeeds; Ctrl-C during an upload leaves nothing", async () => {
    const big = path.join(dir, "big.bin");
    const data = randomBytes(200 * 1024 * 1024);
    await writeFile(big, data);
    await chmod(big, 0o755);
    // script(1) gives the CLI a pseudo-terminal, as a person's shell would.
    const command = `"${process.execPath}" "${root}/bin/runtara.js" -o json deploy "${big}" --name big`;
    const r = await execa("script", ["-qefc", command, "/dev/null"], { cwd: root, env: { ...env, NO_COLOR: "1" }, reject: false, timeout: 120_000 });
    assert.equal(r.exitCode, 0, r.stdout);
    assert.match(r.stdout, /uploading \[[#-]+\] [\d.]+ MiB \/ 200 MiB {2}[\d.]+ [KMG]?i?B\/s {2}ETA \d+s/, "a progress line with bytes, rate and ETA");
    const image = JSON.parse(r.stdout.slice(r.stdout.indexOf("{"), r.stdout.lastIndexOf("}") + 1).replace(/\r/g, "")) as { sha256: string; sizeBytes: string };
    assert.equal(image.sha256, createHash("sha256").update(data).digest("hex"));
    assert.equal(image.sizeBytes, String(data.length));
    roundTrips(ImageSchema, JSON.stringify(image));

    // Ctrl-C once the upload is under way.
    const child = spawn(process.execPath, [path.join(root, "bin/runtara.js"), "deploy", big, "--name", "interrupted"], { cwd: root, env: { ...process.env, ...env }, stdio: "ignore" });
    const exited = new Promise<number | null>((resolve) => child.once("close", (code) => resolve(code)));
    const staging = path.join(dataDir, "images", ".staging");
    const staged = async () => (await readdir(staging, { recursive: true })).length > 1;
    await waitUntil(staged, 30_000);
    child.kill("SIGINT");
    assert.notEqual(await exited, 0);
    await waitUntil(async () => !(await staged()), 10_000);
    const listed = await cli("-o", "json", "images", "ls", "--name-prefix", "interrupted");
    assert.deepEqual((JSON.parse(listed.stdout) as { images?: unknown[] }).images ?? [], [], "no image registered");
  });

  it("each failure prints one line saying what to do, with exit 1 (failed) or 2 (usage)", async () => {
    const buildDirsBefore = (await readdir(tmpdir())).filter((f) => f.startsWith("runtara-build-") || f.startsWith("runtara-deploy-"));
    await symlink(path.join(root, "examples/wait-for-signal.ts"), path.join(dir, "link.ts"));
    await writeFile(path.join(dir, "broken.json"), '{ "profiles": { "p": { "apiKey": secret-key-unquoted } } }');
    const cases: [string[], Record<string, string>, number, RegExp][] = [
      [["images", "ls"], { RUNTARA_SERVER: "http://127.0.0.1:1" }, 1, /^runtara: cannot reach the server at http:\/\/127\.0\.0\.1:1 .*is it running\? Set --server or RUNTARA_SERVER$/],
      [["instances", "get", "no-such-instance"], {}, 1, /^runtara: .*no-such-instance.*not found/i],
      [["run", "hello", "--id", "bad id with spaces"], {}, 1, /^runtara: .*instance_id/],
      [["run", "hello", "--input", "{not json"], {}, 2, /^runtara: --input must be JSON/],
      [["instances", "ls", "--status", "sleeping"], {}, 2, /^runtara: --status must be one of pending, running/],
      [["instances", "ls", "--limit", "-3"], {}, 2, /^runtara: --limit must be an integer/],
      [["no-such-command"], {}, 2, /unknown command 'no-such-command'/],
      [["deploy", "/nonexistent/file.bin", "--name", "x"], {}, 2, /^runtara: cannot read \/nonexistent\/file\.bin: no such file$/],
      [["--profile", "prod", "health"], {}, 2, /^runtara: profile "prod" named, but there is no config file/],
      [["images", "ls", "--bogus"], {}, 2, /unknown option '--bogus'/],
      [["deploy", "examples/wait-for-signal.ts"], {}, 2, /required option '-n, --name <name>' not specified/],
      [["workflow", "build", "examples/wait-for-signal.ts", "--out", "examples/wait-for-signal.ts"], {}, 2, /^runtara: examples\/wait-for-signal\.ts is the workflow file itself; name another --out$/],
      [["workflow", "build", "--native", "examples/wait-for-signal.ts", "--out", path.join(dir, "link.ts")], {}, 2, /^runtara: .*link\.ts is the workflow file itself; name another --out$/],
      [["workflow", "build", "examples/wait-for-signal.ts", "--out", "/dev/null"], {}, 2, /^runtara: --out \/dev\/null is not a regular file$/],
      [["workflow", "build", "examples/wait-for-signal.ts", "--out", "/nonexistent-dir/x.tar"], {}, 2, /^runtara: --out \/nonexistent-dir\/x\.tar: there is no directory \/nonexistent-dir$/],
      [["workflow", "build", "/dev/zero"], {}, 2, /^runtara: \/dev\/zero is not a regular file$/],
      [["workflow", "build", "--native", "examples/wait-for-signal.ts", "--node", ""], {}, 2, /^runtara: --node must name a Node binary$/],
      [["workflow", "build", "evil\x1b[31m\nname.ts"], {}, 1, /^runtara: cannot bundle evil\\x1b\[31m \| name\.ts: /],
      [["deploy", process.execPath, "--name", "node"], {}, 2, /is dynamically linked, so it cannot run as \/binary in an empty container root; deploy it with --runner native/],
      [["--server", "http://admin:secret-key@127.0.0.1:1", "health"], {}, 2, /^runtara: --server must not hold credentials/],
      [["--config", path.join(dir, "broken.json"), "health"], {}, 2, /^runtara: the config file .*broken\.json is not valid JSON/],
      [["run", "hello", "--input", "@/dev/zero"], {}, 2, /^runtara: --input: \/dev\/zero is not a regular file$/],
      [["instances", "ls", "--limit", "2147483648"], {}, 2, /^runtara: --limit must be an integer from 1 to 2147483647/],
      [["instances", "ls", "--created-after", "1"], {}, 2, /^runtara: --created-after must be an ISO time/],
      [["health"], { RUNTARA_API_KEY: "secret-key\nwith-newline" }, 2, /^runtara: the API key holds characters an HTTP header cannot carry/],
    ];
    // Four at a time: each case is a process start, and they share nothing.
    const results: Awaited<ReturnType<typeof runtara>>[] = [];
    for (let i = 0; i < cases.length; i += 4) {
      results.push(...(await Promise.all(cases.slice(i, i + 4).map(([args, extra]) => runtara(args, { ...env, ...extra })))));
    }
    for (const [i, [args, , code, line]] of cases.entries()) {
      const r = results[i]!;
      assert.equal(r.code, code, `${args.join(" ")}: ${r.stderr}`);
      assert.match(r.stderr.split("\n")[0]!, line, args.join(" "));
      if (code === 1) assert.equal(r.stderr.trim().split("\n").length, 1, `one line: ${r.stderr}`);
      assert.ok(!r.stderr.includes("secret-key"), "the key is never printed");
    }
    // Ctrl-C while deploy builds: the builder's and deploy's temporary directories both go.
    const deploying = execa(process.execPath, [path.join(root, "bin/runtara.js"), "deploy", "examples/wait-for-signal.ts", "--name", "interrupted", "--runner", "native"], { cwd: root, env, reject: false });
    await new Promise((resolve) => setTimeout(resolve, 2_500));
    deploying.kill("SIGINT");
    assert.equal((await deploying).exitCode, 130);
    const leftover = (await readdir(tmpdir())).filter((f) => (f.startsWith("runtara-build-") || f.startsWith("runtara-deploy-")) && !buildDirsBefore.includes(f));
    assert.deepEqual(leftover, [], "failed and interrupted builds leave no temporary files");
    assert.ok((await stat("/dev/null")).isCharacterDevice(), "/dev/null is still a device");
    // A closed pipe ends `logs` quietly.
    const id = (JSON.parse((await cli("-o", "json", "instances", "ls", "--limit", "1")).stdout) as { instances: { instanceId: string }[] }).instances[0]!.instanceId;
    const piped = await execa("sh", ["-c", `"${process.execPath}" "${root}/bin/runtara.js" logs ${id} | head -c 1`], { env: { ...env }, reject: false });
    assert.ok(!/EPIPE|Error|\n\s+at /.test(piped.stderr), `no EPIPE trace: ${piped.stderr}`);
    // A profile's key goes only to its own server, never to one named with --server.
    const seen: (string | undefined)[] = [];
    const spy = http2.createServer((req, res) => {
      seen.push(req.headers.authorization);
      res.writeHead(503).end();
    });
    await new Promise<void>((resolve) => spy.listen(0, "127.0.0.1", resolve));
    try {
      const config = path.join(dir, "spy.json");
      await writeFile(config, JSON.stringify({ default: "prod", profiles: { prod: { server: env.RUNTARA_SERVER, apiKey: "secret-key-of-prod-0123" } } }));
      const other = await runtara(["--config", config, "--server", `http://127.0.0.1:${(spy.address() as { port: number }).port}`, "health"], { HOME: dir });
      assert.equal(other.code, 1);
      assert.ok(seen.length > 0 && seen.every((a) => a === undefined), `authorization sent: ${seen.join(",")}`);
      await writeFile(config, JSON.stringify({ profiles: { prod: { server: env.RUNTARA_SERVER, insecure: "false" } } }));
      const typo = await runtara(["--config", config, "--profile", "prod", "health"], { HOME: dir });
      assert.equal(typo.code, 2);
      assert.match(typo.stderr, /insecure must be true or false/);
    } finally {
      spy.close();
    }
    // A wrong API key, against a server with keys.
    const keysFile = path.join(dir, "keys");
    await writeFile(keysFile, "cli-tenant key-cli-0123456789abcdef\n", { mode: 0o600 });
    const keyed = await startEnvironment({ apiKeysFile: keysFile });
    try {
      const wrong = await runtara(["images", "ls"], { ...env, RUNTARA_SERVER: keyed.baseUrl, RUNTARA_API_KEY: "wrong-key-0123456789" });
      assert.equal(wrong.code, 1);
      assert.match(wrong.stderr.trim(), /^runtara: the server refused the request: invalid API key; set --api-key or RUNTARA_API_KEY$/);
      const right = await runtara(["images", "ls"], { ...env, RUNTARA_SERVER: keyed.baseUrl, RUNTARA_API_KEY: "key-cli-0123456789abcdef" });
      assert.equal(right.code, 0, right.stderr);
      // A named profile from the config file.
      await writeFile(path.join(dir, "runtara.json"), JSON.stringify({ profiles: { keyed: { server: keyed.baseUrl, apiKey: "key-cli-0123456789abcdef", tenant: "cli-tenant" } } }));
      const profiled = await runtara(["--config", path.join(dir, "runtara.json"), "--profile", "keyed", "health"], { HOME: dir });
      assert.equal(profiled.code, 0, profiled.stderr);
      assert.match(profiled.stdout, new RegExp(`server:\\s+${keyed.baseUrl}`));
    } finally {
      await keyed.close();
    }
  });

  it("--help of every command, and a completion script that names them", async () => {
    const commands = [
      [],
      ["deploy"],
      ["run"],
      ["workflow", "build"],
      ["images", "ls"],
      ["images", "get"],
      ["images", "rm"],
      ["instances", "ls"],
      ["instances", "get"],
      ["instances", "watch"],
      ["instances", "stop"],
      ["instances", "pause"],
      ["instances", "resume"],
      ["instances", "cancel"],
      ["logs"],
      ["signal"],
      ["checkpoints", "ls"],
      ["checkpoints", "get"],
      ["events"],
      ["health"],
      ["completion"],
    ];
    // Every command's help from the command tree itself (pure), then a few through the real bin.
    for (const c of commands) {
      let out = "";
      const program = buildProgram().exitOverride();
      const capture = (cmd: Command): void => {
        cmd.configureOutput({ writeOut: (s) => (out += s), writeErr: (s) => (out += s) }).exitOverride();
        cmd.commands.forEach(capture);
      };
      capture(program);
      await assert.rejects(program.parseAsync(["node", "runtara", ...c, "--help"]), (e: unknown) => e instanceof CommanderError && e.exitCode === 0, c.join(" "));
      assert.match(out, new RegExp(`^Usage: runtara${c.length ? ` ${c.join(" ")}` : ""} `), c.join(" "));
    }
    for (const c of [[], ["run"], ["instances", "ls"]]) {
      const r = await runtara([...c, "--help"]);
      assert.equal(r.code, 0, c.join(" "));
      assert.match(r.stdout, new RegExp(`^Usage: runtara${c.length ? ` ${c.join(" ")}` : ""} `), c.join(" "));
    }
    const completion = await runtara(["completion", "bash"]);
    assert.equal(completion.code, 0);
    const r = await execa("bash", ["-c", `${completion.stdout}\nCOMP_WORDS=(runtara inst); COMP_CWORD=1; _runtara; echo "\${COMPREPLY[@]}"`], { reject: false });
    assert.equal(r.stdout.trim(), "instances");
  });

  it("Ctrl-C while following a run leaves the instance running and says how to stop it (exit 130); status is coloured on a terminal only", async () => {
    const child = spawn(process.execPath, [path.join(root, "bin/runtara.js"), "run", "approval", "--input", '{"request":"wait"}'], {
      cwd: root,
      env: { ...process.env, ...env },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let err = "";
    child.stderr!.setEncoding("utf8").on("data", (d: string) => (err += d));
    const exited = new Promise<number | null>((resolve) => child.once("close", (code) => resolve(code)));
    await waitUntil(async () => /RUNNING/.test(err), 60_000);
    child.kill("SIGINT");
    assert.equal(await exited, 130, err);
    const id = /instance ([0-9a-f-]{36})/.exec(err)![1]!;
    assert.match(err, new RegExp(`instance ${id} keeps running; stop it with: runtara instances stop ${id}`));
    const status = await cli("-o", "json", "instances", "get", id);
    assert.equal((JSON.parse(status.stdout) as { instance: { status: string } }).instance.status, "INSTANCE_STATUS_RUNNING");
    assert.equal((await cli("instances", "cancel", id)).code, 0);

    const plain = await cli("instances", "ls", "--status", "completed");
    assert.ok(!plain.stdout.includes("\x1b["), "no escape codes into a pipe");
    const command = `"${process.execPath}" "${root}/bin/runtara.js" instances ls --status completed`;
    // Node's colour detection also reads TERM and CI (a CI run gets no colour), so a plain terminal here.
    const tty = await execa("script", ["-qefc", command, "/dev/null"], { cwd: root, env: { ...env, PATH: process.env.PATH!, TERM: "xterm-256color" }, extendEnv: false, reject: false });
    assert.ok(tty.stdout.includes("\x1b[32mCOMPLETED\x1b[39m"), `green on a terminal: ${JSON.stringify(tty.stdout.slice(0, 300))}`);
  });

  it("workflow build twice gives the same digest", async () => {
    const a = await cli("-o", "json", "workflow", "build", "examples/wait-for-signal.ts", "--out", path.join(dir, "a.tar"));
    const b = await cli("-o", "json", "workflow", "build", "examples/wait-for-signal.ts", "--out", path.join(dir, "b.tar"));
    assert.equal(a.code, 0, a.stderr);
    const [da, db2] = [a, b].map((r) => JSON.parse(r.stdout) as { manifestDigest: string; sizeBytes: number });
    assert.equal(da!.manifestDigest, db2!.manifestDigest);
    assert.deepEqual(await readFile(path.join(dir, "a.tar")), await readFile(path.join(dir, "b.tar")), "byte for byte");
  });

  it("workflow build --native gives the same executable as deploy --runner native builds; it runs through a durable sleep", async () => {
    const out = (name: string) => path.join(dir, name);
    const a = await cli("-o", "json", "workflow", "build", "--native", "examples/multi-step-sleep.ts", "--out", out("a"));
    assert.equal(a.code, 0, a.stderr);
    const ja = JSON.parse(a.stdout) as { sha256: string; sizeBytes: number };
    assert.equal(createHash("sha256").update(await readFile(out("a"))).digest("hex"), ja.sha256, "the printed digest is the file's");
    // The executable alone: a workflow with no core to talk to fails, and says so on stderr.
    const alone = await execa(out("a"), [], { reject: false, env: {}, extendEnv: false, timeout: 30_000 });
    assert.notEqual(alone.exitCode, 0);
    assert.match(alone.stderr, /RUNTARA_/, `names the missing variable: ${alone.stderr}`);
    const deployed = await cli("-o", "json", "deploy", "examples/multi-step-sleep.ts", "--name", "hello-native", "--runner", "native");
    assert.equal(deployed.code, 0, deployed.stderr);
    assert.equal((JSON.parse(deployed.stdout) as { sha256: string }).sha256, ja.sha256, "deploy's own build of the same input is byte for byte the same");
    const run = await cli("run", "hello-native", "--input", '{"values":[4,5]}');
    assert.equal(run.code, 0, run.stderr);
    assert.match(run.stdout, /"transformed":\{"doubled":\[8,10\]\}.*"published":\{"sum":18/);
    assert.match(run.stderr, /SUSPENDED \(sleeping/, "relaunched from its checkpoint after the sleep");
  });
});
