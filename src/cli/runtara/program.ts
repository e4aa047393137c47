/**
 * The `runtara` command tree (commander): global options, then one module per group of
 * commands. Every action gets a Context resolved from the global options when it runs.
 */
import { Command, Option } from "commander";
import { VERSION } from "../../package.js";
import { registerCompletion } from "./commands/completion.js";
import { registerDeploy } from "./commands/deploy.js";
import { registerImages } from "./commands/images.js";
import { registerInspect } from "./commands/inspect.js";
import { registerInstances } from "./commands/instances.js";
import { registerRun } from "./commands/run.js";
import { resolveContext, type Context, type GlobalFlags } from "./context.js";
import { describeFailure, Reported } from "./failures.js";

/** Wraps an action so it receives the resolved Context first. */
export type Action = <A extends unknown[]>(fn: (ctx: Context, ...args: A) => Promise<void>) => (...args: A) => Promise<void>;

export function buildProgram(): Command {
  const program = new Command("runtara")
    .description("Deploy, run and operate durable workflows on a Runtara environment.")
    .version(VERSION)
    // The variables are read by resolveContext (one place for the precedence: flag, variable,
    // profile, default); the help only names them.
    .addOption(new Option("--server <url>", "management API address (env: RUNTARA_SERVER)").default(undefined, "http://127.0.0.1:8002"))
    .addOption(new Option("--api-key <key>", "API key, sent as a bearer token (env: RUNTARA_API_KEY)"))
    .addOption(new Option("--tenant <id>", "tenant to act for (env: RUNTARA_TENANT)").default(undefined, "default"))
    .addOption(new Option("-o, --output <format>", "table for people, json for scripts").choices(["table", "json"]).default("table"))
    .addOption(new Option("--ca-file <pem>", "CA certificate of an https:// server (env: RUNTARA_CA_FILE)"))
    .addOption(new Option("--insecure", "accept any server certificate (testing only)"))
    .addOption(new Option("--timeout <seconds>", "deadline of each request").default("30"))
    .addOption(new Option("--profile <name>", "named server in the config file (env: RUNTARA_PROFILE)"))
    .addOption(new Option("--config <file>", "config file of named servers, default ~/.config/runtara/config.json (env: RUNTARA_CONFIG)"))
    .showHelpAfterError("(add --help for usage)")
    // Before the commands are added, so they inherit it: a usage error anywhere exits 2.
    .exitOverride()
    .addHelpText(
      "after",
      `
Quickstart:
  runtara deploy examples/multi-step-sleep.ts --name hello
  runtara run hello --input '{"values":[1,2,3]}'
  runtara instances ls --status running
  runtara logs -f <instance-id>

Exit codes: 0 success (run: the instance COMPLETED), 1 a failed operation, 2 a wrong invocation.`,
    );
  const action: Action =
    (fn) =>
    async (...args) => {
      const ctx = resolveContext(program.opts<GlobalFlags>());
      try {
        await fn(ctx, ...args);
      } catch (e) {
        // Described here, where the server actually called is known.
        const { line, exitCode } = describeFailure(e, ctx.server);
        throw new Reported(line, exitCode);
      }
    };
  registerDeploy(program, action);
  registerRun(program, action);
  registerImages(program, action);
  registerInstances(program, action);
  registerInspect(program, action);
  registerCompletion(program);
  return program;
}
