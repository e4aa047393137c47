import type { Command } from "commander";
import { SortOrder } from "../../../../gen/runtara/core/v1/types_pb.js";
import {
  GetCheckpointResponseSchema,
  HealthCheckResponseSchema,
  ListCheckpointsResponseSchema,
  ListEventsResponseSchema,
  LogStream,
} from "../../../../gen/runtara/environment/v1/environment_pb.js";
import type { Context } from "../context.js";
import { CommandFailed } from "../failures.js";
import { bytes, details, emit, jsonBytes, paint, relativeTime, table } from "../output.js";
import { intArgument, jsonArgument } from "../parse.js";
import type { Action } from "../program.js";

export function registerInspect(program: Command, action: Action): void {
  program
    .command("logs <instance-id>")
    .description("the instance's stdout and stderr (every run, each marked)")
    .option("-f, --follow", "keep printing until the instance ends")
    .option("--tail <bytes>", "start this many bytes before the end of each log")
    .action(
      action(async (ctx, instanceId: string, flags: { follow?: boolean; tail?: string }) => {
        await printLogs(ctx, instanceId, flags.follow ?? false, intArgument("--tail", flags.tail, 0) ?? 0);
      }),
    );
  program
    .command("signal <instance-id> <name> [payload]")
    .description("send a custom signal to the wait point <name>; payload is JSON or @file (pause, resume, cancel: see instances)")
    .action(
      action(async (ctx, instanceId: string, name: string, payload: string | undefined) => {
        await ctx.client.sendCustomSignal({ tenantId: ctx.tenant, instanceId, checkpointId: name, payload: jsonArgument("payload", payload) }, ctx.unary);
        if (ctx.output === "json") return void process.stdout.write("{}\n");
        process.stdout.write(`sent ${name} to ${instanceId}\n`);
      }),
    );
  const checkpoints = program.command("checkpoints").description("an instance's saved checkpoints");
  checkpoints
    .command("ls <instance-id>")
    .option("--limit <n>", "at most this many")
    .action(
      action(async (ctx, instanceId: string, flags: { limit?: string }) => {
        const res = await ctx.client.listCheckpoints({ tenantId: ctx.tenant, instanceId, limit: intArgument("--limit", flags.limit, 1) ?? 0 }, ctx.unary);
        emit(ctx, ListCheckpointsResponseSchema, res, () => table(["CHECKPOINT", "SIZE", "CREATED"], res.checkpoints.map((c) => [c.checkpointId, bytes(c.sizeBytes), relativeTime(c.createdAt)])));
      }),
    );
  checkpoints
    .command("get <instance-id> <checkpoint-id>")
    .description("one checkpoint and its state")
    .action(
      action(async (ctx, instanceId: string, checkpointId: string) => {
        const res = await ctx.client.getCheckpoint({ tenantId: ctx.tenant, instanceId, checkpointId }, ctx.unary);
        const c = res.checkpoint!;
        emit(ctx, GetCheckpointResponseSchema, res, () => details([["checkpoint", c.checkpointId], ["size", bytes(c.sizeBytes)], ["created", relativeTime(c.createdAt)], ["state", jsonBytes(res.state)]]));
      }),
    );
  program
    .command("events <instance-id>")
    .description("an instance's events: lifecycle (registered, checkpoint, sleep, …) and custom ones")
    .option("--type <type>", "only this event type")
    .option("--subtype <subtype>", "only this subtype")
    .option("--limit <n>", "at most this many")
    .option("--desc", "newest first")
    .action(
      action(async (ctx, instanceId: string, flags: { type?: string; subtype?: string; limit?: string; desc?: boolean }) => {
        const res = await ctx.client.listEvents(
          {
            tenantId: ctx.tenant,
            instanceId,
            eventType: flags.type ?? "",
            subtype: flags.subtype ?? "",
            limit: intArgument("--limit", flags.limit, 1) ?? 0,
            sortOrder: flags.desc ? SortOrder.DESC : SortOrder.ASC,
          },
          ctx.unary,
        );
        emit(ctx, ListEventsResponseSchema, res, () => table(["TYPE", "SUBTYPE", "CHECKPOINT", "CREATED", "PAYLOAD"], res.events.map((e) => [e.eventType, e.subtype, e.checkpointId, relativeTime(e.createdAt), jsonBytes(e.payload)])));
      }),
    );
  program
    .command("health")
    .description("whether the server, its database and core are up (exit 1 when not)")
    .action(
      action(async (ctx) => {
        const res = await ctx.client.healthCheck({}, ctx.unary);
        emit(ctx, HealthCheckResponseSchema, res, () =>
          details([
            ["server", ctx.server],
            ["healthy", res.healthy ? paint(ctx, "green", "yes") : paint(ctx, "red", "no")],
            ["version", res.version],
            ["database", res.version ? (res.databaseReachable ? "reachable" : "unreachable") : ""],
            ["core", res.version ? (res.coreReachable ? "reachable" : "unreachable") : ""],
            ["active instances", res.version ? String(res.activeInstances) : ""],
          ]),
        );
        if (!res.healthy) throw new CommandFailed(`the server at ${ctx.server} is not healthy`);
      }),
    );
}

/**
 * Writes the logs as they were written (stdout to `out`, stderr to our stderr), until they end.
 * With `merged` (both go to one terminal) the run marker, written to both logs, shows once.
 */
export async function printLogs(ctx: Context, instanceId: string, follow: boolean, tailBytes: number, signal?: AbortSignal, merged = false): Promise<void> {
  // Without follow the logs are read to their current end: bounded by --timeout like any call.
  const options = follow ? { signal } : { ...ctx.unary, signal };
  for await (const r of ctx.client.streamInstanceLogs({ tenantId: ctx.tenant, instanceId, follow, tailBytes: BigInt(tailBytes) }, options)) {
    if (r.stream !== LogStream.STDERR) (merged ? process.stderr : process.stdout).write(r.data);
    else process.stderr.write(merged ? Buffer.from(r.data).toString("utf8").replace(RUN_MARKER, "") : r.data);
  }
}

const RUN_MARKER = /^--- runtara: run [0-9a-f-]+ started \S+ ---\n/gm;
