/** The workflow and everything it imports (the SDK included) as one ES module, by esbuild. */
import { stat } from "node:fs/promises";
import path from "node:path";
import { build, type Message } from "esbuild";
import { CommandFailed, UsageError } from "./failures.js";

/**
 * ESM bundles of CommonJS dependencies still call require() for Node's built-ins. Based on the
 * Node binary, not import.meta.url: a single executable loads the bundle from a data: URL.
 */
const REQUIRE_SHIM = 'import { createRequire as __runtaraCreateRequire } from "node:module"; const require = __runtaraCreateRequire(process.execPath);';

export async function bundleWorkflow(entry: string): Promise<Buffer> {
  // A FIFO would hang the build and a device feed it forever; a missing file is esbuild's to report.
  const source = await stat(entry).catch(() => undefined);
  if (source && !source.isFile()) throw new UsageError(`${entry} is not a regular file`);
  try {
    const result = await build({
      entryPoints: [path.resolve(entry)],
      // Paths esbuild writes into the bundle are relative to the workflow's directory, not to
      // wherever the command ran: the same file gives the same image from anywhere.
      absWorkingDir: path.dirname(path.resolve(entry)),
      bundle: true,
      platform: "node",
      format: "esm",
      target: "node20",
      write: false,
      banner: { js: REQUIRE_SHIM },
      legalComments: "none",
      logLevel: "silent",
    });
    return Buffer.from(result.outputFiles[0]!.contents);
  } catch (e) {
    const errors = (e as { errors?: Message[] }).errors;
    if (!errors) throw e;
    const first = errors[0];
    const where = first?.location ? `${first.location.file}:${first.location.line}:${first.location.column}: ` : "";
    throw new CommandFailed(`cannot bundle ${entry}: ${where}${first?.text ?? "unknown error"}${errors.length > 1 ? ` (and ${errors.length - 1} more)` : ""}`);
  }
}
