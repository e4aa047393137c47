import { Code, ConnectError, createClient, type Client, type Interceptor } from "@connectrpc/connect";
import { createConnectTransport, Http2SessionManager } from "@connectrpc/connect-node";
import { CoreService } from "../../gen/runtara/core/v1/core_pb.js";
import { Unavailable } from "../errors.js";

/**
 * The environment's only way to core's data: the generated CoreService client over the
 * network (even when core runs in the same process), so the two can be split apart.
 */
export class CoreGateway {
  readonly client: Client<typeof CoreService>;
  private readonly session: Http2SessionManager;

  constructor(
    private readonly coreAddr: string,
    managementToken: string,
  ) {
    const auth: Interceptor = (next) => (req) => {
      req.header.set("authorization", `Bearer ${managementToken}`);
      return next(req);
    };
    const baseUrl = `http://${coreAddr}`;
    // Pings notice a restarted core; the idle timeout lets an unused session go away.
    this.session = new Http2SessionManager(baseUrl, { pingIntervalMs: 10_000, idleConnectionTimeoutMs: 60_000 });
    this.client = createClient(
      CoreService,
      createConnectTransport({ baseUrl, httpVersion: "2", interceptors: [auth], defaultTimeoutMs: 30_000, sessionManager: this.session }),
    );
  }

  /** Closes the HTTP/2 session (open calls fail), so nothing keeps the process alive. */
  close(): void {
    this.session.abort();
  }

  /** Runs a core call; transport failures become UNAVAILABLE naming core's address. */
  async call<T>(fn: (client: Client<typeof CoreService>) => Promise<T>): Promise<T> {
    try {
      return await fn(this.client);
    } catch (e) {
      const err = ConnectError.from(e);
      if (err.code === Code.Unavailable || err.code === Code.DeadlineExceeded || err.code === Code.Unknown) {
        throw new Unavailable(`core at ${this.coreAddr} is unreachable (${err.rawMessage}); retry later`);
      }
      throw err;
    }
  }

  async reachable(): Promise<boolean> {
    try {
      const res = await this.client.healthCheck({}, { timeoutMs: 2_000 });
      return res.healthy;
    } catch {
      return false;
    }
  }
}
