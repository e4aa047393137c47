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
import { universalRequestFromNodeRequest, universalResponseToNodeResponse } from "@connectrpc/connect-node";
import { serverCompressions } from "./compression.js";
import type { Req, Res } from "./refuse.js";

const GRPC_WEB_TEXT = /^application\/grpc-web-text(\+proto)?\s*(;|$)/i;

export function connectHandler(options: ConnectRouterOptions & { routes: (router: ConnectRouter) => void }): (req: Req, res: Res) => void {
  const router = createConnectRouter({ acceptCompression: serverCompressions, ...options });
  options.routes(router);
  const paths = new Map(router.handlers.map((h) => [h.requestPath, h]));
  // A text body is one message (unary and server-streaming calls): base64 of at most readMaxBytes.
  const textLimit = Math.ceil(((options.readMaxBytes ?? 0xffffffff) + 5) / 3) * 4 + 1024;
  return (req, res) => {
    const handler = paths.get((req.url ?? "").split("?", 1)[0]!);
    if (!handler) {
      res.writeHead(404);
      res.end();
      return;
    }
    const raw = universalRequestFromNodeRequest(req, res, undefined, undefined);
    let uReq: UniversalServerRequest = { ...raw, body: coalesce(raw.body as AsyncIterable<Uint8Array>) };
    const text = GRPC_WEB_TEXT.test(uReq.header.get("content-type") ?? "");
    if (text) uReq = binaryRequest(uReq, textLimit);
    handler(uReq)
      .then((uRes) => universalResponseToNodeResponse(text ? textResponse(uRes) : uRes, res))
      .catch((reason: unknown) => {
        // The client went away: nothing to answer. Anything else the router itself answered already.
        if (ConnectError.from(reason).code !== Code.Aborted) res.destroy();
      });
  };
}

function binaryRequest(uReq: UniversalServerRequest, textLimit: number): UniversalServerRequest {
  const header = new Headers(uReq.header);
  header.set("content-type", "application/grpc-web+proto");
  return { ...uReq, header, body: decodeBase64(uReq.body as AsyncIterable<Uint8Array>, textLimit) };
}

const NOT_READY = Symbol("not ready");
/** Largest batch coalesce() joins, in bytes and in pieces. */
const BATCH_BYTES = 1024 * 1024;
const BATCH_PIECES = 4096;

/**
 * The body in batches: every piece already received is joined to the one before, so a client
 * that cuts its body into tiny pieces costs one buffer per batch (the router's message decoder
 * does work per piece it holds, which a million one-byte pieces would make quadratic). Nothing
 * waits for more: a piece that has not arrived yet ends the batch.
 */
async function* coalesce(source: AsyncIterable<Uint8Array>): AsyncIterable<Uint8Array> {
  const it = source[Symbol.asyncIterator]();
  let pending = it.next();
  for (;;) {
    const first = await pending;
    if (first.done) return;
    const parts = [first.value];
    let size = first.value.byteLength;
    for (;;) {
      pending = it.next();
      if (size >= BATCH_BYTES || parts.length >= BATCH_PIECES) break;
      const ready = await Promise.race([pending, new Promise<typeof NOT_READY>((resolve) => setImmediate(resolve, NOT_READY))]);
      if (ready === NOT_READY || ready.done) break;
      parts.push(ready.value);
      size += ready.value.byteLength;
    }
    yield parts.length === 1 ? parts[0]! : Buffer.concat(parts, size);
    // Pieces already buffered resolve without a turn of the event loop; give it one between batches.
    if (parts.length >= BATCH_PIECES) await new Promise((resolve) => setImmediate(resolve));
  }
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
async function* decodeBase64(pieces: AsyncIterable<Uint8Array>, limit: number): AsyncIterable<Uint8Array> {
  let pending = "";
  let total = 0;
  for await (const piece of pieces) {
    total += piece.byteLength;
    if (total > limit) throw new ConnectError(`grpc-web-text: the body exceeds ${limit} bytes`, Code.ResourceExhausted);
    pending += Buffer.from(piece).toString("latin1").replace(/[\r\n]/g, "");
    // All that decodes from this piece goes on as one buffer, however many padded encodings it
    // holds; `at` moves forward so a piece of many tiny encodings costs linear time.
    const decoded: Buffer[] = [];
    let at = 0;
    for (;;) {
      // Up to the group that holds padding (one encoding ends there), else all whole groups.
      const pad = pending.indexOf("=", at);
      const end = pad >= 0 ? pad - ((pad - at) % 4) + 4 : pending.length - ((pending.length - at) % 4);
      if (end === at || end > pending.length) break;
      const text = pending.slice(at, end);
      at = end;
      if (!BASE64.test(text)) throw new ConnectError("grpc-web-text: the body is not base64", Code.InvalidArgument);
      decoded.push(Buffer.from(text, "base64"));
    }
    pending = pending.slice(at);
    if (decoded.length > 0) yield Buffer.concat(decoded);
  }
  if (pending.length > 0) throw new ConnectError("grpc-web-text: the body ends inside a base64 group", Code.InvalidArgument);
}
