import { Code, ConnectError, createClient, type Client, type Interceptor, type Transport } from "@connectrpc/connect";
import { createConnectTransport, Http2SessionManager } from "@connectrpc/connect-node";
import type { Duplex } from "node:stream";
import { CoreService } from "../../gen/runtara/core/v1/core_pb.js";
import { SortOrder } from "../../gen/runtara/core/v1/types_pb.js";
import type { CheckpointSummary, InstanceEvent } from "../lifecycle/index.js";
import { Unavailable } from "../errors.js";
import type { SignalKind, Status } from "../lifecycle/index.js";
import {
  checkpointFromProto,
  eventFromProto,
  protoSignalType,
  statusFromProto,
  toTimestamp,
} from "../protocol/convert.js";

/** Filters of the read views, in domain terms (validated by the caller). */
export interface CheckpointQuery {
  tenantId: string;
  instanceId: string;
  checkpointId: string;
  limit: number;
  offset: number;
  createdAfterMs: number | undefined;
  createdBeforeMs: number | undefined;
}

export interface EventQuery extends Omit<CheckpointQuery, "checkpointId"> {
  eventType: string;
  subtype: string;
  ascending: boolean;
}

/** How CoreService calls travel, given the interceptor that authenticates them. */
export interface CoreChannel {
  transport: Transport;
  /** Where core is, for messages. */
  name: string;
  /** Ends open calls and connections, so nothing keeps the process alive. */
  close(): void;
}

/**
 * CoreService over HTTP/2 to core's port (a standalone core). Pings notice a restarted core;
 * the idle timeout lets an unused session go away.
 */
export function networkCoreChannel(
  /** Core's base URL and how to open a connection to it (cleartext or TLS). */
  core: { baseUrl: string; connect(): Duplex },
  /** Largest answer read from core (a checkpoint's state, a page of events). */
  readMaxBytes: number,
  auth: Interceptor,
): CoreChannel {
  const session = new Http2SessionManager(core.baseUrl, { pingIntervalMs: 10_000, idleConnectionTimeoutMs: 60_000 }, { createConnection: () => core.connect() });
  return {
    transport: createConnectTransport({ baseUrl: core.baseUrl, httpVersion: "2", interceptors: [auth], defaultTimeoutMs: 30_000, sessionManager: session, readMaxBytes }),
    name: new URL(core.baseUrl).host,
    close: () => session.abort(),
  };
}

/**
 * The environment's only way to core's data: the generated CoreService client, over the
 * network to a standalone core or in-process to an embedded one (one hop fewer; the same
 * client, handlers and token checks either way), so the two can be split apart. Takes and
 * returns domain values; protobuf stays inside this class.
 */
export class CoreGateway {
  private readonly client: Client<typeof CoreService>;
  private readonly channel: CoreChannel;

  constructor(
    channel: (auth: Interceptor) => CoreChannel,
    /** The management token, read per call; reloaded when core refuses it (a rotation elsewhere). */
    private readonly tokens: { managementToken(): string; refresh(): Promise<void> },
  ) {
    const auth: Interceptor = (next) => (req) => {
      req.header.set("authorization", `Bearer ${tokens.managementToken()}`);
      return next(req);
    };
    this.channel = channel(auth);
    this.client = createClient(CoreService, this.channel.transport);
  }

  /** Closes the channel (open calls fail), so nothing keeps the process alive. */
  close(): void {
    this.channel.close();
  }

  async sendSignal(tenantId: string, instanceId: string, kind: SignalKind, payload: Uint8Array): Promise<Status> {
    const res = await this.call(() => this.client.sendSignal({ tenantId, instanceId, signalType: protoSignalType(kind), payload }));
    return statusFromProto("status", res.status);
  }

  async sendCustomSignal(tenantId: string, instanceId: string, checkpointId: string, payload: Uint8Array): Promise<void> {
    await this.call(() => this.client.sendCustomSignal({ tenantId, instanceId, checkpointId, payload }));
  }

  async listCheckpoints(q: CheckpointQuery): Promise<{ items: CheckpointSummary[]; total: bigint }> {
    const res = await this.call(() =>
      this.client.listCheckpoints({
        tenantId: q.tenantId,
        instanceId: q.instanceId,
        checkpointId: q.checkpointId,
        limit: q.limit,
        offset: q.offset,
        createdAfter: toTimestamp(q.createdAfterMs),
        createdBefore: toTimestamp(q.createdBeforeMs),
      }),
    );
    return { items: res.checkpoints.map(checkpointFromProto), total: res.totalCount };
  }

  async getCheckpoint(tenantId: string, instanceId: string, checkpointId: string): Promise<{ checkpoint: CheckpointSummary; state: Uint8Array }> {
    const res = await this.call(() => this.client.getCheckpoint({ tenantId, instanceId, checkpointId }));
    const checkpoint = res.checkpoint ? checkpointFromProto(res.checkpoint) : { instanceId, checkpointId, sizeBytes: 0n, createdAtMs: 0 };
    return { checkpoint, state: res.state };
  }

  async listEvents(q: EventQuery): Promise<{ items: InstanceEvent[]; total: bigint }> {
    const res = await this.call(() =>
      this.client.listEvents({
        tenantId: q.tenantId,
        instanceId: q.instanceId,
        eventType: q.eventType,
        subtype: q.subtype,
        limit: q.limit,
        offset: q.offset,
        createdAfter: toTimestamp(q.createdAfterMs),
        createdBefore: toTimestamp(q.createdBeforeMs),
        sortOrder: q.ascending ? SortOrder.ASC : SortOrder.DESC,
      }),
    );
    return { items: res.events.map(eventFromProto), total: res.totalCount };
  }

  async reachable(): Promise<boolean> {
    try {
      const res = await this.client.healthCheck({}, { timeoutMs: 2_000 });
      return res.healthy;
    } catch {
      return false;
    }
  }

  /**
   * Transport failures become UNAVAILABLE naming core's address. Core's own answers keep
   * their code and message but not its metadata: its content-length, content-type and date
   * headers would otherwise travel on as this server's trailers. A refused management token
   * means the secrets were rotated since this replica loaded them: reload, try once more.
   */
  private async call<T>(fn: () => Promise<T>, retried = false): Promise<T> {
    try {
      return await fn();
    } catch (e) {
      const err = ConnectError.from(e);
      if (err.code === Code.Unauthenticated && !retried) {
        await this.tokens.refresh();
        return this.call(fn, true);
      }
      if (err.code === Code.Unavailable || err.code === Code.DeadlineExceeded) {
        throw new Unavailable(`core at ${this.channel.name} is unreachable (${err.rawMessage}); retry later`);
      }
      throw new ConnectError(err.rawMessage, err.code, undefined, undefined, err);
    }
  }
}
