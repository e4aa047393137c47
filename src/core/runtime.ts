import type { AddressInfo } from "node:net";
import { createRouterTransport, type Interceptor, type ServiceImpl, type Transport } from "@connectrpc/connect";
import type { Logger } from "pino";
import type { DatabasePool } from "slonik";
import { CoreService } from "../../gen/runtara/core/v1/core_pb.js";
import { InstanceService } from "../../gen/runtara/core/v1/instance_pb.js";
import { ChannelHub, type Listener } from "../db/index.js";
import { coreHandlers } from "../server/core-handlers.js";
import { sharedProbe } from "../server/health.js";
import type { OnePortServer } from "../server/http.js";
import { instanceHandlers } from "../server/instance-handlers.js";
import { observeCalls } from "../server/interceptors.js";
import { openMethodsGates, registerOpenServices } from "../server/open-services.js";
import { serve } from "../server/serve.js";
import { clientCertGate, holdGate } from "../server/gates.js";
import { loadTlsMaterial } from "../server/tls.js";
import type { CompiledOptions } from "../config.js";
import type { Metrics } from "../metrics/index.js";
import type { Tokens } from "../lifecycle/index.js";
import { VERSION } from "../package.js";
import { databasePing } from "../wiring.js";
import { InstanceCalls } from "./instance-calls.js";
import { ManagementCalls } from "./management-calls.js";

/** The compiled options core uses (both composition roots pass their CompiledOptions). */
export type CoreRuntimeOptions = Pick<
  CompiledOptions,
  | "coreHost"
  | "corePort"
  | "maxPayloadBytes"
  | "maxEventPayloadBytes"
  | "maxCheckpointsPerInstance"
  | "maxEventsPerInstance"
  | "maxCustomSignalsPerInstance"
  | "shutdownGraceMs"
  | "coreServerTls"
  | "maxConnections"
  | "maxStreamsPerConnection"
  | "bodyIdleTimeoutMs"
>;

/**
 * Core's server (InstanceService + CoreService + health + reflection) on one port. It shares
 * the database pool and the LISTEN connection with whoever composes it (the environment when
 * embedded, src/cli/core.ts when standalone).
 */
export class CoreRuntime {
  private server: OnePortServer | undefined;
  private readonly shutdown = new AbortController();
  private coreService: ServiceImpl<typeof CoreService> | undefined;

  constructor(
    private readonly db: DatabasePool,
    private readonly listener: Listener,
    private readonly tokens: Tokens,
    private readonly logger: Logger,
    private readonly options: CoreRuntimeOptions,
    private readonly metrics: Metrics,
  ) {}

  /** Lets instances call (see start's holdInstances). */
  openToInstances(): void {
    this.openInstances();
  }

  private openInstances: () => void = () => {};

  get address(): AddressInfo {
    if (!this.server) throw new Error("core is not started");
    return this.server.address;
  }

  /**
   * With `holdInstances`, InstanceService answers UNAVAILABLE (the SDK retries) until
   * openToInstances(): an embedded core must not let a process of the environment's previous
   * run that was never recorded register before recovery has killed it.
   */
  async start(options: { holdInstances?: boolean } = {}): Promise<void> {
    const hold = holdGate(InstanceService.typeName, "core is recovering the processes of the previous run; retry");
    if (!options.holdInstances) hold.open();
    this.openInstances = hold.open;
    const signals = new ChannelHub(this.listener, "runtara_signal");
    const instances = new InstanceCalls(this.db, signals, this.logger.child({ component: "core" }), this.options);
    const management = new ManagementCalls(this.db, this.logger.child({ component: "core" }), this.options);
    const database = sharedProbe(() => databasePing(this.db));
    const tlsFiles = this.options.coreServerTls;
    const tls = tlsFiles && (await loadTlsMaterial(tlsFiles, "RUNTARA_CORE_TLS_CERT_FILE/KEY_FILE (or RUNTARA_TLS_CERT_FILE/KEY_FILE), RUNTARA_CORE_CLIENT_CA_FILE"));
    const coreService = coreHandlers(management, this.tokens, { version: VERSION, startedAtMs: Date.now(), database });
    this.coreService = coreService;
    this.server = await serve({
      routes: (router) => {
        router.service(InstanceService, instanceHandlers(instances, this.tokens));
        router.service(CoreService, coreService);
        registerOpenServices(router, [InstanceService, CoreService], database);
      },
      port: this.options.corePort,
      host: this.options.coreHost,
      // Browsers have no business with core: no CORS.
      corsOrigins: [],
      limits: this.options,
      ...(tls ? { tls } : {}),
      // With a client CA, CoreService (the management token's side) also needs a client
      // certificate; instances keep proving themselves with their tokens alone.
      gates: [hold.gate, ...(tls?.clientCa ? [clientCertGate(CoreService.typeName)] : []), ...openMethodsGates()],
      logger: this.logger.child({ component: "core-rpc" }),
      // Payload limits are checked by the handlers with a clear message; this only caps
      // what a single message may make the server buffer.
      readMaxBytes: this.options.maxPayloadBytes + 1024 * 1024,
      shutdownSignal: this.shutdown.signal,
      metrics: this.metrics,
    });
    this.logger.info({ port: this.server.address.port, host: this.options.coreHost, tls: tls !== undefined, clientCertificates: tls?.clientCa !== undefined }, "core listening");
  }

  /**
   * CoreService in this process, for the environment that embeds it: the same handlers, token
   * check, logging and metrics as on the port, without HTTP/2 in between (after start()).
   */
  inProcessChannel(auth: Interceptor): { transport: Transport; name: string; close(): void } {
    const service = this.coreService;
    if (!service) throw new Error("core is not started");
    const transport = createRouterTransport((router) => router.service(CoreService, service), {
      transport: { interceptors: [auth], defaultTimeoutMs: 30_000 },
      router: { interceptors: [observeCalls(this.logger.child({ component: "core-rpc" }), this.metrics.rpcDuration)], shutdownSignal: this.shutdown.signal },
    });
    return { transport, name: "core (in this process)", close: () => undefined };
  }

  async stop(): Promise<void> {
    const server = this.server;
    this.server = undefined;
    if (!server) return;
    // Watch streams never end on their own; end them so the drain can finish.
    this.shutdown.abort();
    await server.close(this.options.shutdownGraceMs);
  }
}
