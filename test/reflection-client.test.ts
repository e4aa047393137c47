/**
 * The path grpcurl takes (issue 13), with a client that knows nothing but the reflection
 * protocol: it lists services, resolves descriptors through reflection v1 and v1alpha, builds
 * requests from JSON with them and calls the server over gRPC. Every grpcurl line of the
 * README is run this way, and what grpcurl relies on is checked: the requested file first in
 * an answer, every dependency present, enum values and fields resolvable as symbols.
 */
import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { create, createFileRegistry, fromBinary, fromJson, toBinary, toJson, type DescMessage, type FileRegistry, type JsonValue } from "@bufbuild/protobuf";
import { FileDescriptorProtoSchema, FileDescriptorSetSchema, type FileDescriptorProto } from "@bufbuild/protobuf/wkt";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import { startEnvironment, stopTestPostgres, type TestEnvironment } from "./helpers.js";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
after(() => stopTestPostgres());

interface ReflectionAnswer {
  list_services_response?: { service: { name: string }[] };
  file_descriptor_response?: { file_descriptor_proto: Buffer[] };
  error_response?: { error_code: number; error_message: string };
}

/** A client of the reflection service alone (its proto is the only one it loads). */
class ReflectionOnlyClient {
  private readonly reflection: grpc.Client & { ServerReflectionInfo(): grpc.ClientDuplexStream<object, ReflectionAnswer> };
  private readonly generic: grpc.Client;

  constructor(address: string, version: "v1" | "v1alpha") {
    const definition = grpc.loadPackageDefinition(
      protoLoader.loadSync(`grpc/reflection/${version}/reflection.proto`, { includeDirs: [path.join(root, "third_party")], keepCase: true, defaults: false, oneofs: true }),
    ) as any;
    this.reflection = new definition.grpc.reflection[version].ServerReflection(address, grpc.credentials.createInsecure());
    this.generic = new grpc.Client(address, grpc.credentials.createInsecure());
  }

  close(): void {
    this.reflection.close();
    this.generic.close();
  }

  ask(request: object): Promise<ReflectionAnswer> {
    return new Promise((resolve, reject) => {
      const call = this.reflection.ServerReflectionInfo();
      call.once("data", resolve);
      call.once("error", reject);
      call.write({ host: "", ...request });
      call.end();
    });
  }

  async services(): Promise<string[]> {
    return (await this.ask({ list_services: "" })).list_services_response!.service.map((s) => s.name);
  }

  /** The files of the answer for `symbol`, in the server's order. */
  async filesFor(symbol: string): Promise<FileDescriptorProto[]> {
    const answer = await this.ask({ file_containing_symbol: symbol });
    if (answer.error_response) throw new Error(`${symbol}: ${answer.error_response.error_message}`);
    return answer.file_descriptor_response!.file_descriptor_proto.map((b) => fromBinary(FileDescriptorProtoSchema, b));
  }

  /** The answer's files, imports before importers (a registry is built in that order), whatever order they came in. */
  async registryFor(symbol: string): Promise<FileRegistry> {
    const files = await this.filesFor(symbol);
    const byName = new Map(files.map((f) => [f.name, f]));
    const ordered: FileDescriptorProto[] = [];
    const visit = (f: FileDescriptorProto) => {
      if (ordered.includes(f)) return;
      for (const dep of f.dependency) visit(byName.get(dep) ?? assert.fail(`${f.name} imports ${dep}, missing from the answer`));
      ordered.push(f);
    };
    files.forEach(visit);
    return createFileRegistry(create(FileDescriptorSetSchema, { file: ordered }));
  }

  /** What `grpcurl -d JSON host Service/Method` does: resolve, encode the JSON, call, decode to JSON. */
  async call(fullMethod: string, json: JsonValue): Promise<JsonValue> {
    const [serviceName, methodName] = fullMethod.split("/") as [string, string];
    const registry = await this.registryFor(serviceName);
    const method = registry.getService(serviceName)?.methods.find((m) => m.name === methodName);
    assert.ok(method, `${fullMethod} resolved through reflection`);
    const encode = (desc: DescMessage) => (value: JsonValue) => Buffer.from(toBinary(desc, fromJson(desc, value, { registry })));
    const decode = (desc: DescMessage) => (bytes: Buffer) => toJson(desc, fromBinary(desc, bytes), { registry });
    return new Promise((resolve, reject) => {
      this.generic.makeUnaryRequest(`/${serviceName}/${methodName}`, encode(method.input), decode(method.output), json, (err, res) => (err ? reject(err) : resolve(res!)));
    });
  }
}

/** Splits a shell line the way the README writes them (words, '…' quoted). */
function words(line: string): string[] {
  return [...line.matchAll(/'([^']*)'|(\S+)/g)].map((m) => m[1] ?? m[2]!);
}

describe("a reflection-only client, as grpcurl", () => {
  let t: TestEnvironment;
  let address: string;
  before(async () => {
    t = await startEnvironment();
    address = `127.0.0.1:${t.env.address.port}`;
  });
  after(() => t?.close());

  for (const version of ["v1", "v1alpha"] as const) {
    it(`reflection ${version}: the requested file first, every dependency, enum values and fields as symbols`, async () => {
      const client = new ReflectionOnlyClient(address, version);
      try {
        const files = await client.filesFor("runtara.environment.v1.EnvironmentService");
        assert.equal(files[0]!.name, "runtara/environment/v1/environment.proto", "the requested file comes first");
        const names = new Set(files.map((f) => f.name));
        for (const f of files) for (const dep of f.dependency) assert.ok(names.has(dep), `${f.name}'s dependency ${dep} is in the answer`);
        assert.equal(names.size, files.length, "each file once");
        for (const [symbol, file] of [
          ["runtara.core.v1.INSTANCE_STATUS_COMPLETED", "runtara/core/v1/types.proto"],
          ["runtara.environment.v1.RUNNER_TYPE_OCI", "runtara/environment/v1/environment.proto"],
          ["runtara.environment.v1.ListImagesRequest.tenant_id", "runtara/environment/v1/environment.proto"],
          ["runtara.environment.v1.RegisterImageStreamRequest.payload", "runtara/environment/v1/environment.proto"],
          ["runtara.environment.v1.EnvironmentService.StartInstance", "runtara/environment/v1/environment.proto"],
          [".runtara.core.v1.InstanceStatus", "runtara/core/v1/types.proto"],
        ] as const) {
          assert.equal((await client.filesFor(symbol))[0]!.name, file, symbol);
        }
        assert.equal((await client.ask({ file_containing_symbol: "runtara.core.v1.NO_SUCH_VALUE" })).error_response?.error_code, 5);
        const byName = await client.ask({ file_by_filename: "runtara/core/v1/types.proto" });
        assert.equal(fromBinary(FileDescriptorProtoSchema, byName.file_descriptor_response!.file_descriptor_proto[0]!).name, "runtara/core/v1/types.proto");
      } finally {
        client.close();
      }
    });
  }

  it("runs the README's grpcurl lines", async () => {
    const readme = await readFile(path.join(root, "README.md"), "utf8");
    const lines = /<!-- grpcurl -->\n```sh\n([\s\S]*?)```/.exec(readme)![1]!.trim().split("\n");
    assert.ok(lines.length >= 4);
    const client = new ReflectionOnlyClient(address, "v1");
    try {
      for (const line of lines) {
        const argv = words(line);
        assert.deepEqual(argv.slice(0, 2), ["grpcurl", "-plaintext"], line);
        const data = argv[2] === "-d" ? (JSON.parse(argv[3]!) as JsonValue) : {};
        const [host, command, target] = argv.slice(argv[2] === "-d" ? 4 : 2);
        assert.equal(host, "localhost:8002", line);
        if (command === "list") {
          const services = await client.services();
          for (const s of ["runtara.environment.v1.EnvironmentService", "grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection", "grpc.reflection.v1alpha.ServerReflection"]) {
            assert.ok(services.includes(s), `${line}: lists ${s}`);
          }
        } else if (command === "describe") {
          const registry = await client.registryFor(target!);
          assert.ok(registry.getService(target!)?.methods.some((m) => m.name === "StartInstance"), line);
        } else {
          const answer = (await client.call(command!, data)) as Record<string, unknown>;
          if (command!.endsWith("/Check")) assert.equal(answer.status, "SERVING", line);
          else assert.equal(answer.totalCount ?? "0", "0", `${line}: ${JSON.stringify(answer)}`);
        }
      }
      // An enum given by name reaches the server as its number: a filter that matches nothing here.
      await assert.rejects(client.call("runtara.environment.v1.EnvironmentService/ListInstances", { tenant_id: "acme", status: "NOT_A_STATUS" }), /NOT_A_STATUS/);
    } finally {
      client.close();
    }
  });
});
