import type { Command } from "commander";
import { InstanceStatus, SignalType, TerminationReason } from "../../../../gen/runtara/core/v1/types_pb.js";
import {
  GetInstanceStatusResponseSchema,
  InstanceOrder,
  ListInstancesResponseSchema,
  WatchInstanceResponseSchema,
} from "../../../../gen/runtara/environment/v1/environment_pb.js";
import { CommandFailed } from "../failures.js";
import { instanceDetails, isTerminal, statusLine } from "../instance-view.js";
import { duration, emit, enumName, messageJson, morePages, relativeTime, statusText, table } from "../output.js";
import { enumArgument, intArgument, timeArgument } from "../parse.js";
import type { Context } from "../context.js";
import type { Action } from "../program.js";

interface ListFlags {
  status?: string;
  image?: string;
  imagePrefix?: string;
  createdAfter?: string;
  createdBefore?: string;
  order?: string;
  limit?: string;
  pageToken?: string;
}

export function registerInstances(program: Command, action: Action): void {
  const instances = program.command("instances").description("list, inspect, follow and steer instances");
  instances
    .command("ls")
    .description("instances of the tenant, newest first")
    .option("--status <status>", "pending, running, suspended, completed, failed or cancelled")
    .option("--image <image-id>", "only instances of this image")
    .option("--image-prefix <prefix>", "only images whose name starts with this")
    .option("--created-after <time>", "ISO time or age (15m, 2h, 7d)")
    .option("--created-before <time>", "ISO time or age")
    .option("--order <order>", "created-desc, created-asc, finished-desc or finished-asc")
    .option("--limit <n>", "at most this many")
    .option("--page-token <token>", "the next page, as a previous listing printed")
    .action(
      action(async (ctx, flags: ListFlags) => {
        const res = await ctx.client.listInstances(
          {
            tenantId: ctx.tenant,
            status: enumArgument<InstanceStatus>("--status", InstanceStatus, flags.status) ?? InstanceStatus.UNSPECIFIED,
            imageId: flags.image ?? "",
            imageNamePrefix: flags.imagePrefix ?? "",
            createdAfter: timeArgument("--created-after", flags.createdAfter),
            createdBefore: timeArgument("--created-before", flags.createdBefore),
            orderBy: enumArgument<InstanceOrder>("--order", InstanceOrder, flags.order) ?? InstanceOrder.UNSPECIFIED,
            limit: intArgument("--limit", flags.limit, 1) ?? 0,
            pageToken: flags.pageToken ?? "",
          },
          ctx.unary,
        );
        emit(ctx, ListInstancesResponseSchema, res, () =>
          table(
            ["INSTANCE ID", "STATUS", "REASON", "IMAGE", "CREATED", "DURATION"],
            res.instances.map((i) => [
              i.instanceId,
              statusText(ctx, i.status),
              enumName(TerminationReason, i.terminationReason),
              i.imageName,
              relativeTime(i.createdAt),
              duration(i.startedAt, i.finishedAt),
            ]),
          ),
        );
        morePages(res.nextPageToken);
      }),
    );
  instances
    .command("get <instance-id>")
    .description("one instance: status, times, input, output, error")
    .action(
      action(async (ctx, instanceId: string) => {
        const res = await ctx.client.getInstanceStatus({ tenantId: ctx.tenant, instanceId }, ctx.unary);
        emit(ctx, GetInstanceStatusResponseSchema, res, () => instanceDetails(ctx, res.instance!));
      }),
    );
  instances
    .command("watch <instance-id>")
    .description("print every status change until the instance ends (exit 0 when COMPLETED)")
    .action(
      action(async (ctx, instanceId: string) => {
        const final = await watchToEnd(ctx, instanceId, (line) => process.stdout.write(line));
        if (final !== InstanceStatus.COMPLETED) throw new CommandFailed(`instance ${instanceId} ended ${InstanceStatus[final]}`);
      }),
    );
  instances
    .command("stop <instance-id>")
    .description("stop gracefully: SIGTERM, then SIGKILL after the grace period")
    .option("--grace <seconds>", "seconds between SIGTERM and SIGKILL")
    .option("--reason <text>", "recorded with the instance")
    .action(
      action(async (ctx, instanceId: string, flags: { grace?: string; reason?: string }) => {
        const grace = intArgument("--grace", flags.grace, 0);
        const res = await ctx.client.stopInstance(
          { tenantId: ctx.tenant, instanceId, reason: flags.reason ?? "", ...(grace !== undefined ? { gracePeriodSeconds: BigInt(grace) } : {}) },
          ctx.unary,
        );
        printStatus(ctx, instanceId, res.status);
      }),
    );
  for (const [name, signalType, text] of [
    ["pause", SignalType.PAUSE, "ask the workflow to checkpoint and suspend"],
    ["cancel", SignalType.CANCEL, "ask the workflow to stop for good (CANCELLED)"],
  ] as const) {
    instances
      .command(`${name} <instance-id>`)
      .description(text)
      .action(
        action(async (ctx, instanceId: string) => {
          const res = await ctx.client.sendSignal({ tenantId: ctx.tenant, instanceId, signalType }, ctx.unary);
          printStatus(ctx, instanceId, res.status);
        }),
      );
  }
  instances
    .command("resume <instance-id>")
    .description("relaunch a paused (SUSPENDED) instance from its last checkpoint")
    .action(
      action(async (ctx, instanceId: string) => {
        const res = await ctx.client.resumeInstance({ tenantId: ctx.tenant, instanceId }, ctx.unary);
        printStatus(ctx, instanceId, res.status);
      }),
    );
}

function printStatus(ctx: Context, instanceId: string, status: InstanceStatus): void {
  if (ctx.output === "json") process.stdout.write(JSON.stringify({ instanceId, status: `INSTANCE_STATUS_${InstanceStatus[status]}` }) + "\n");
  else process.stdout.write(`${instanceId}  ${statusText(ctx, status)}\n`);
}

/**
 * Follows WatchInstance to a terminal status, writing each change through `write` (a line of
 * text, or a JSON document per change with --output json). Returns the terminal status.
 */
export async function watchToEnd(ctx: Context, instanceId: string, write: (line: string) => void, signal?: AbortSignal): Promise<InstanceStatus> {
  let last: InstanceStatus = InstanceStatus.UNSPECIFIED;
  // Ends the server stream as soon as the terminal status is seen.
  const done = new AbortController();
  const both = signal ? AbortSignal.any([signal, done.signal]) : done.signal;
  try {
    for await (const res of ctx.client.watchInstance({ tenantId: ctx.tenant, instanceId }, { signal: both })) {
      const i = res.instance!;
      if (ctx.output === "json") write(messageJson(WatchInstanceResponseSchema, res, 0));
      else if (i.status !== last) write(`${new Date().toISOString().slice(11, 23)}  ${statusLine(ctx, i)}\n`);
      last = i.status;
      if (isTerminal(i.status)) break;
    }
  } finally {
    done.abort();
  }
  return last;
}
