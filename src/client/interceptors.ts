/**
 * What every client of the management API sends, in Node and in browsers: the API key and a
 * default tenant for requests that name none.
 */
import type { Interceptor } from "@connectrpc/connect";

export interface ClientIdentity {
  /** Sent as `authorization: Bearer <key>`. */
  apiKey?: string;
  /** Filled into requests whose `tenantId` is empty (also an upload's header). */
  tenant?: string;
}

export function identityInterceptors({ apiKey, tenant }: ClientIdentity): Interceptor[] {
  const interceptors: Interceptor[] = [];
  if (apiKey) {
    interceptors.push((next) => (req) => {
      req.header.set("authorization", `Bearer ${apiKey}`);
      return next(req);
    });
  }
  if (tenant) {
    interceptors.push((next) => (req) => {
      if (!req.stream) return next({ ...req, message: withTenant(req.message, tenant) });
      return next({ ...req, message: mapStream(req.message, (m) => withTenant(m, tenant)) });
    });
  }
  return interceptors;
}

type Fields = Record<string, unknown>;

/** A shallow copy with the tenant filled in where the request has an empty `tenantId`; the caller's object is not changed. */
function withTenant<T>(message: T, tenant: string): T {
  const m = message as Fields;
  if (m.tenantId === "") return { ...m, tenantId: tenant } as T;
  // RegisterImageStream: the tenant is in the header, the stream's first message; BeginImageUpload: in its header.
  const payload = m.payload as { case?: string; value?: Fields } | undefined;
  if (payload?.case === "header" && payload.value?.tenantId === "") return { ...m, payload: { ...payload, value: { ...payload.value, tenantId: tenant } } } as T;
  const header = m.header as Fields | undefined;
  if (typeof header === "object" && header !== null && header.tenantId === "") return { ...m, header: { ...header, tenantId: tenant } } as T;
  return message;
}

async function* mapStream<T>(messages: AsyncIterable<T>, fn: (m: T) => T): AsyncIterable<T> {
  for await (const m of messages) yield fn(m);
}
