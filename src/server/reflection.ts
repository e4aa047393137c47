import { create, fromBinary, toBinary, type DescFile, type DescService, type MessageInitShape } from "@bufbuild/protobuf";
import { FileDescriptorProtoSchema } from "@bufbuild/protobuf/wkt";
import type { ConnectRouter, ConnectRouterOptions } from "@connectrpc/connect";
import * as v1 from "../../gen/grpc/reflection/v1/reflection_pb.js";
import * as v1alpha from "../../gen/grpc/reflection/v1alpha/reflection_pb.js";

type Response = MessageInitShape<typeof v1.ServerReflectionResponseSchema>;

/**
 * gRPC server reflection (v1 and v1alpha share the wire shape, so one handler serves both)
 * for grpcurl `list` / `describe`. The RPC is bidi, so it works over HTTP/2 only.
 */
export function registerReflection(router: ConnectRouter, served: readonly DescService[], options?: ConnectRouterOptions) {
  const services = [...served, v1.ServerReflection, v1alpha.ServerReflection];
  const files = new Map<string, DescFile>();
  const symbols = new Map<string, DescFile>();
  const addFile = (file: DescFile) => {
    if (files.has(file.proto.name)) return;
    files.set(file.proto.name, file);
    for (const dep of file.dependencies) addFile(dep);
    for (const s of file.services) {
      symbols.set(s.typeName, file);
      for (const m of s.methods) symbols.set(`${s.typeName}.${m.name}`, file);
    }
    // Enum values are scoped beside their enum (`runtara.core.v1.INSTANCE_STATUS_COMPLETED`).
    const addEnum = (e: (typeof file.enums)[number], scope: string) => {
      symbols.set(e.typeName, file);
      for (const v of e.values) symbols.set(`${scope}${v.name}`, file);
    };
    const pkg = file.proto.package === "" ? "" : `${file.proto.package}.`;
    for (const e of file.enums) addEnum(e, pkg);
    for (const x of file.extensions) symbols.set(x.typeName, file);
    const addMessage = (m: (typeof file.messages)[number]) => {
      symbols.set(m.typeName, file);
      for (const f of m.fields) symbols.set(`${m.typeName}.${f.name}`, file);
      for (const o of m.oneofs) symbols.set(`${m.typeName}.${o.name}`, file);
      for (const n of m.nestedMessages) addMessage(n);
      for (const e of m.nestedEnums) addEnum(e, `${m.typeName}.`);
    };
    for (const m of file.messages) addMessage(m);
  };
  for (const s of services) addFile(s.file);

  // The requested file first (as grpc-go answers; older grpcurl releases take the first file
  // for the answer), then its transitive dependencies, each once.
  const withDeps = (file: DescFile) => {
    const out: Uint8Array[] = [];
    const seen = new Set<string>();
    const visit = (f: DescFile) => {
      if (seen.has(f.proto.name)) return;
      seen.add(f.proto.name);
      out.push(toBinary(FileDescriptorProtoSchema, f.proto));
      for (const d of f.dependencies) visit(d);
    };
    visit(file);
    return out;
  };
  const notFound = (what: string): Response["messageResponse"] => ({
    case: "errorResponse",
    value: { errorCode: 5, errorMessage: `${what} not found` },
  });

  const answer = (req: v1.ServerReflectionRequest): Response => {
    const r = req.messageRequest;
    let messageResponse: Response["messageResponse"];
    switch (r.case) {
      case "listServices":
        messageResponse = { case: "listServicesResponse", value: { service: services.map((s) => ({ name: s.typeName })) } };
        break;
      case "fileByFilename": {
        const file = files.get(r.value);
        messageResponse = file
          ? { case: "fileDescriptorResponse", value: { fileDescriptorProto: withDeps(file) } }
          : notFound(`file ${r.value}`);
        break;
      }
      case "fileContainingSymbol": {
        const file = symbols.get(r.value.replace(/^\./, ""));
        messageResponse = file
          ? { case: "fileDescriptorResponse", value: { fileDescriptorProto: withDeps(file) } }
          : notFound(`symbol ${r.value}`);
        break;
      }
      case "fileContainingExtension":
        messageResponse = notFound(`extension ${r.value.extensionNumber} of ${r.value.containingType}`);
        break;
      case "allExtensionNumbersOfType":
        messageResponse = symbols.has(r.value)
          ? { case: "allExtensionNumbersResponse", value: { baseTypeName: r.value, extensionNumber: [] } }
          : notFound(`type ${r.value}`);
        break;
      default:
        messageResponse = { case: "errorResponse", value: { errorCode: 3, errorMessage: "empty reflection request" } };
    }
    return { validHost: req.host, originalRequest: req, messageResponse };
  };

  router.service(v1.ServerReflection, {
    async *serverReflectionInfo(requests) {
      for await (const req of requests) yield answer(req);
    },
  }, options);
  router.service(v1alpha.ServerReflection, {
    async *serverReflectionInfo(requests) {
      for await (const req of requests) {
        // Same wire shape: re-read the v1alpha request as v1, answer, and re-read back.
        const asV1 = fromBinary(v1.ServerReflectionRequestSchema, toBinary(v1alpha.ServerReflectionRequestSchema, req));
        const res = toBinary(v1.ServerReflectionResponseSchema, create(v1.ServerReflectionResponseSchema, answer(asV1)));
        yield fromBinary(v1alpha.ServerReflectionResponseSchema, res);
      }
    },
  }, options);
}
