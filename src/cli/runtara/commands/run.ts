import { createInterface } from "node:readline/promises";
import type { Command } from "commander";
import { InstanceStatus } from "../../../../gen/runtara/core/v1/types_pb.js";
import { GetInstanceStatusResponseSchema } from "../../../../gen/runtara/environment/v1/environment_pb.js";
import type { Context } from "../context.js";
import { CommandFailed } from "../failures.js";
import { statusLine } from "../instance-view.js";
import { jsonBytes, messageJson, paint } from "../output.js";
import { envArgument, intArgument, jsonArgument } from "../parse.js";
import type { Action } from "../program.js";
import { printLogs } from "./inspect.js";
import { watchToEnd } from "./instances.js";

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

interface RunFlags {
  input?: string;
  env?: Record<string, string>;
  id?: string;
  imageVersion?: string;
  timeoutSecs?: string;
  detach?: boolean;
  logs: boolean;
}

export function registerRun(program: Command, action: Action): void {
  program
    .command("run <image>")
    .description("start an instance of an image (name, latest version unless --version; or an image id) and follow it to its end")
    .option("-i, --input <json>", "input as JSON, or @file")
    .option("-e, --env <KEY=VALUE>", "environment variable for the workflow (repeatable)", envArgument)
    .option("--id <instance-id>", "instance id (default: a new UUID)")
    .option("--image-version <n>", "image version to run (default: the latest)")
    .option("--timeout-secs <n>", "execution timeout of the instance")
    .option("-d, --detach", "print the instance id and return at once")
    .option("--no-logs", "do not print the workflow's output while following")
    .addHelpText("after", "\nExit code 0 when the instance COMPLETED (its output printed), 1 otherwise. Ctrl-C offers to stop it.")
    .action(action(run));
}

async function run(ctx: Context, image: string, flags: RunFlags): Promise<void> {
  const version = intArgument("--image-version", flags.imageVersion, 1, 2 ** 31 - 1);
  const timeout = intArgument("--timeout-secs", flags.timeoutSecs, 1, 7 * 86_400);
  const { instanceId } = await ctx.client.startInstance(
    {
      tenantId: ctx.tenant,
      ...(UUID.test(image) ? { imageId: image } : { imageName: image }),
      ...(version !== undefined ? { imageVersion: version } : {}),
      ...(timeout !== undefined ? { timeoutSeconds: BigInt(timeout) } : {}),
      instanceId: flags.id ?? "",
      input: jsonArgument("--input", flags.input),
      env: flags.env ?? {},
    },
    ctx.unary,
  );
  if (flags.detach) {
    process.stdout.write(ctx.output === "json" ? JSON.stringify({ instanceId }) + "\n" : `${instanceId}\n`);
    return;
  }
  const note = (line: string) => {
    if (ctx.output === "table") process.stderr.write(paint(ctx, "dim", line));
  };
  note(`instance ${instanceId}\n`);
  const stop = new AbortController();
  const interrupted = onInterrupt(ctx, instanceId, stop);
  try {
    // Logs go to stderr while following, so stdout holds only the result.
    const logs = flags.logs ? printLogs(ctx, instanceId, true, 0, stop.signal, true).catch(() => {}) : Promise.resolve();
    const final = await watchToEnd(ctx, instanceId, note, stop.signal).catch((e: unknown) => {
      // Ctrl-C aborted the watch: the interrupt handler asks, then exits; nothing more here.
      if (stop.signal.aborted) return new Promise<never>(() => {});
      throw e;
    });
    await logs;
    const res = await ctx.client.getInstanceStatus({ tenantId: ctx.tenant, instanceId }, ctx.unary);
    const instance = res.instance!;
    if (ctx.output === "json") process.stdout.write(messageJson(GetInstanceStatusResponseSchema, res));
    else if (final === InstanceStatus.COMPLETED) process.stdout.write(`${jsonBytes(instance.output)}\n`);
    if (final !== InstanceStatus.COMPLETED) throw new CommandFailed(`instance ${instanceId} ended ${statusLine({ ...ctx, tty: false }, instance)}`);
  } finally {
    interrupted.dispose();
  }
}

/**
 * Ctrl-C while following: on a terminal, ask whether to stop the instance (it keeps running
 * otherwise); without one, leave it running and say how to stop it. Exit 130 either way.
 */
function onInterrupt(ctx: Context, instanceId: string, following: AbortController): { dispose(): void } {
  const handler = () => {
    following.abort();
    void (async () => {
      if (process.stdin.isTTY) {
        const rl = createInterface({ input: process.stdin, output: process.stderr });
        const answer = await rl.question(`\nstop instance ${instanceId}? [y/N] `);
        rl.close();
        if (/^y(es)?$/i.test(answer.trim())) {
          await ctx.client.stopInstance({ tenantId: ctx.tenant, instanceId }, ctx.unary).then(
            () => process.stderr.write(`stopping ${instanceId}\n`),
            (e: unknown) => process.stderr.write(`runtara: could not stop ${instanceId}: ${(e as Error).message}\n`),
          );
          process.exit(130);
        }
      }
      process.stderr.write(`\ninstance ${instanceId} keeps running; stop it with: runtara instances stop ${instanceId}\n`);
      process.exit(130);
    })();
  };
  process.once("SIGINT", handler);
  return { dispose: () => process.off("SIGINT", handler) };
}
