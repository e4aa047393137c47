import { CommanderError } from "commander";
import { buildProgram } from "./runtara/program.js";
import { DEFAULT_SERVER } from "./runtara/context.js";
import { describeFailure, EXIT_USAGE } from "./runtara/failures.js";

// `runtara logs x | head`: a closed pipe ends the command quietly, as for any Unix tool.
process.stdout.on("error", (e: NodeJS.ErrnoException) => {
  if (e.code !== "EPIPE") throw e;
  process.exit(0);
});

const program = buildProgram();
try {
  await program.parseAsync(process.argv);
} catch (e) {
  if (e instanceof CommanderError) {
    // commander printed its message (or the help / version) already.
    process.exitCode = e.exitCode === 0 ? 0 : EXIT_USAGE;
  } else {
    // Failures of a command come described (Reported); this covers the rest.
    const { line, exitCode } = describeFailure(e, DEFAULT_SERVER);
    process.stderr.write(`runtara: ${line}\n`);
    process.exitCode = exitCode;
  }
}
// The command is done: leave now rather than wait for the HTTP/2 session to go idle.
process.stdout.write("", () => process.stderr.write("", () => process.exit()));
