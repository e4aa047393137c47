import type http from "node:http";
import type http2 from "node:http2";
import { type Code, ConnectError } from "@connectrpc/connect";
import { codeToHttpStatus, endStreamFlag, errorToJson } from "@connectrpc/connect/protocol-connect";

export type Req = http.IncomingMessage | http2.Http2ServerRequest;
export type Res = http.ServerResponse | http2.Http2ServerResponse;

/** Body bytes of a refused HTTP/1.1 request read and dropped before its connection is closed. */
const DISCARD_LIMIT = 1024 * 1024;

/**
 * Answers a request with an RPC error before its body is read, in the protocol the client
 * speaks (gRPC and gRPC-Web: a trailers-only response; Connect streaming: an end-stream
 * message; Connect unary and anything else: the JSON error with its HTTP status), then
 * deals with the body nobody wants: HTTP/1.1 discards up to DISCARD_LIMIT of it, so a small
 * request keeps its connection (closing at once makes the client's own body write fail with
 * EPIPE before it reads the answer), and closes the connection beyond; on HTTP/2 the listener
 * ends the stream with NO_ERROR once the answer is sent (see withBodyTimeouts).
 */
export function refuse(req: Req, res: Res, code: Code, message: string): void {
  const contentType = String(req.headers["content-type"] ?? "");
  const error = new ConnectError(message, code);
  if (!("stream" in req)) discardBody(req);
  if (contentType.startsWith("application/grpc")) {
    res.writeHead(200, { "content-type": contentType, "grpc-status": String(code), "grpc-message": encodeURIComponent(message) });
    res.end();
  } else if (contentType.startsWith("application/connect+")) {
    const json = Buffer.from(JSON.stringify({ error: errorToJson(error, undefined) }));
    const envelope = Buffer.alloc(5 + json.length);
    envelope.writeUInt8(endStreamFlag, 0);
    envelope.writeUInt32BE(json.length, 1);
    json.copy(envelope, 5);
    res.writeHead(200, { "content-type": contentType });
    res.end(envelope);
  } else {
    res.writeHead(codeToHttpStatus(code), { "content-type": "application/json" });
    res.end(JSON.stringify(errorToJson(error, undefined)));
  }
}

function discardBody(req: http.IncomingMessage): void {
  let discarded = 0;
  req.on("data", (chunk: Buffer) => {
    discarded += chunk.length;
    if (discarded > DISCARD_LIMIT) req.socket.destroy();
  });
  req.resume();
}
