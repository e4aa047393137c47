import { Code, ConnectError, type ServiceImpl } from "@connectrpc/connect";
import { Health, HealthCheckResponse_ServingStatus as Status } from "../../gen/grpc/health/v1/health_pb.js";

/**
 * Health watches open at once per listener. Anyone may open one without a key, and each holds
 * a stream and a timer; orchestrators poll Check, so a thousand is plenty.
 */
const MAX_WATCHERS = 1024;

/** How long one database probe answers for every health caller. */
const PROBE_TTL_MS = 2_000;

/**
 * One probe in flight at a time, its answer reused for PROBE_TTL_MS: a thousand Watch streams
 * or a probe storm cost one database round trip every two seconds, not one each.
 */
export function sharedProbe(probe: () => Promise<boolean>, ttlMs = PROBE_TTL_MS): () => Promise<boolean> {
  let last: { at: number; answer: Promise<boolean> } | undefined;
  return () => {
    const now = Date.now();
    if (last === undefined || now - last.at >= ttlMs) last = { at: now, answer: probe().catch(() => false) };
    return last.answer;
  };
}

/**
 * grpc.health.v1.Health. The overall service ("") and every served service report SERVING
 * while `probe()` (database reachability, a sharedProbe) succeeds, NOT_SERVING otherwise.
 */
export function healthService(serviceNames: readonly string[], probe: () => Promise<boolean>, maxWatchers = MAX_WATCHERS): ServiceImpl<typeof Health> {
  const known = new Set(["", ...serviceNames]);
  let watchers = 0;
  const statusOf = async (service: string) => {
    if (!known.has(service)) return undefined;
    return (await probe()) ? Status.SERVING : Status.NOT_SERVING;
  };
  async function* watchStatus(service: string, signal: AbortSignal) {
    let last: Status | undefined;
    while (!signal.aborted) {
      const status = (await statusOf(service)) ?? Status.SERVICE_UNKNOWN;
      if (status !== last) yield { status };
      last = status;
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, 5_000);
        signal.addEventListener("abort", () => (clearTimeout(t), resolve()), { once: true });
      });
    }
  }
  return {
    async check(req) {
      const status = await statusOf(req.service);
      if (status === undefined) throw new ConnectError(`unknown service ${req.service}`, Code.NotFound);
      return { status };
    },
    async *watch(req, ctx) {
      if (watchers >= maxWatchers) throw new ConnectError(`${maxWatchers} health watches are open already; use Check`, Code.ResourceExhausted);
      watchers++;
      try {
        yield* watchStatus(req.service, ctx.signal);
      } finally {
        watchers--;
      }
    },
    async list() {
      const up = (await probe()) ? Status.SERVING : Status.NOT_SERVING;
      return { statuses: Object.fromEntries([...known].map((name) => [name, { status: up }])) };
    },
  };
}
