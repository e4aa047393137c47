import { CommanderError } from "commander";
import { buildProgram } from "./runtara/program.js";
import { DEFAULT_SERVER } from "./runtara/context.js";
import { describeFailure, EXIT_USAGE } from "./runtara/failures.js";

const program = buildProgram().exitOverride();
try {
  await program.parseAsync(process.argv);
} catch (e) {
  if (e instanceof CommanderError) {
    // commander printed its message (or the help / version) already.
    process.exitCode = e.exitCode === 0 ? 0 : EXIT_USAGE;
  } else {
    const { line, exitCode } = describeFailure(e, program.opts<{ server?: string }>().server ?? DEFAULT_SERVER);
    process.stderr.write(`runtara: ${line}\n`);
    process.exitCode = exitCode;
  }
}
// The command is done: leave now rather than wait for the HTTP/2 session to go idle.
process.stdout.write("", () => process.stderr.write("", () => process.exit()));
