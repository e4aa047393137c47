/**
 * The Node request handler of a Connect router (connect-node's connectNodeAdapter, as small),
 * plus gRPC-Web text mode, which the Connect library does not serve: the `grpc-web` npm
 * client's default, and its only mode for server streams. A text request is base64 of the
 * binary gRPC-Web body; it is decoded and handed to the gRPC-Web handler as binary, and each
 * piece of its answer is sent back base64-encoded (padded per piece, as Envoy does, so a
 * streamed message is never held back).
 */
import { Code, ConnectError, createConnectRouter, type ConnectRouter, type ConnectRouterOptions } from "@connectrpc/connect";
import type { UniversalServerRequest, UniversalServerResponse } from "@connectrpc/connect/protocol";
import { compressionBrotli, compressionGzip, universalRequestFromNodeRequest, universalResponseToNodeResponse } from "@connectrpc/connect-node";
import type { Req, Res } from "./refuse.js";

const GRPC_WEB_TEXT = /^application\/grpc-web-text(\+proto)?\s*(;|$)/i;

export function connectHandler(options: ConnectRouterOptions & { routes: (router: ConnectRouter) => void }): (req: Req, res: Res) => void {
  const router = createConnectRouter({ acceptCompression: [compressionGzip, compressionBrotli], ...options });
  options.routes(router);
  const paths = new Map(router.handlers.map((h) => [h.requestPath, h]));
  return (req, res) => {
    const handler = paths.get((req.url ?? "").split("?", 1)[0]!);
    if (!handler) {
      res.writeHead(404);
      res.end();
      return;
    }
    let uReq = universalRequestFromNodeRequest(req, res, undefined, undefined);
    const text = GRPC_WEB_TEXT.test(uReq.header.get("content-type") ?? "");
    if (text) uReq = binaryRequest(uReq);
    handler(uReq)
      .then((uRes) => universalResponseToNodeResponse(text ? textResponse(uRes) : uRes, res))
      .catch((reason: unknown) => {
        // The client went away: nothing to answer. Anything else the router itself answered already.
        if (ConnectError.from(reason).code !== Code.Aborted) res.destroy();
      });
  };
}

function binaryRequest(uReq: UniversalServerRequest): UniversalServerRequest {
  const header = new Headers(uReq.header);
  header.set("content-type", "application/grpc-web+proto");
  return { ...uReq, header, body: decodeBase64(uReq.body as AsyncIterable<Uint8Array>) };
}

function textResponse(uRes: UniversalServerResponse): UniversalServerResponse {
  const header = new Headers(uRes.header);
  if (header.get("content-type")?.startsWith("application/grpc-web")) header.set("content-type", "application/grpc-web-text+proto");
  return uRes.body === undefined ? { ...uRes, header } : { ...uRes, header, body: encodeEach(uRes.body) };
}

async function* encodeEach(pieces: AsyncIterable<Uint8Array>): AsyncIterable<Uint8Array> {
  for await (const piece of pieces) yield base64(piece);
}

const base64 = (bytes: Uint8Array) => Buffer.from(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString("base64"), "latin1");

/** Whole base64 groups, padding only in the last. */
const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;

/**
 * Decodes a base64 text that arrives in pieces cut anywhere, and may be several padded
 * encodings one after another (each piece a client sent, encoded on its own).
 */
async function* decodeBase64(pieces: AsyncIterable<Uint8Array>): AsyncIterable<Uint8Array> {
  let pending = "";
  for await (const piece of pieces) {
    pending += Buffer.from(piece).toString("latin1").replace(/[\r\n]/g, "");
    for (;;) {
      // Up to the group that holds padding (one encoding ends there), else all whole groups.
      const pad = pending.indexOf("=");
      const end = pad >= 0 ? pad - (pad % 4) + 4 : pending.length - (pending.length % 4);
      if (end === 0 || end > pending.length) break;
      const text = pending.slice(0, end);
      pending = pending.slice(end);
      if (!BASE64.test(text)) throw new ConnectError("grpc-web-text: the body is not base64", Code.InvalidArgument);
      yield Buffer.from(text, "base64");
    }
  }
  if (pending.length > 0) throw new ConnectError("grpc-web-text: the body ends inside a base64 group", Code.InvalidArgument);
}
