import { constants } from "node:fs";
import { open } from "node:fs/promises";
import path from "node:path";
import type { Command } from "commander";
import { ImageFormat, ImageSchema, RunnerType } from "../../../../gen/runtara/environment/v1/environment_pb.js";
import { UsageError } from "../failures.js";
import { bytes, details, emit } from "../output.js";
import { enumArgument } from "../parse.js";
import type { Action } from "../program.js";
import { isDynamicElf } from "../elf.js";
import { withTempDir } from "../temp-dir.js";
import { uploadImage } from "../upload.js";

// The builders load esbuild and postject (megabytes of JavaScript): only for commands that build.
const buildWorkflowImage = async (...args: Parameters<typeof import("../workflow-image.js").buildWorkflowImage>) =>
  (await import("../workflow-image.js")).buildWorkflowImage(...args);
const buildNativeExecutable = async (...args: Parameters<typeof import("../workflow-native.js").buildNativeExecutable>) =>
  (await import("../workflow-native.js")).buildNativeExecutable(...args);

const SOURCE = /\.(ts|mts|cts|tsx|js|mjs|cjs|jsx)$/i;

export function registerDeploy(program: Command, action: Action): void {
  const workflow = program.command("workflow").description("build workflow images");
  workflow
    .command("build <file>")
    .description("bundle a workflow (TypeScript or JavaScript) with esbuild and pack it with Node as an OCI image archive, or with --native as a single executable")
    .option("--out <file>", "where the archive or executable goes (default: <file name>.tar, or <file name> with --native)")
    .option("--native", "a single executable for the native runner (Node's single executable applications)")
    .option("--node <path>", "the Node binary to pack (default: the one running this CLI)")
    .action(
      action(async (ctx, file: string, flags: { out?: string; native?: boolean; node?: string }) => {
        const name = path.basename(file).replace(SOURCE, "");
        const node = nodeOption(flags.node);
        if (flags.native) {
          const built = await buildNativeExecutable({ entry: file, out: flags.out ?? name, ...node });
          if (ctx.output === "json") return void process.stdout.write(JSON.stringify(built) + "\n");
          return void process.stdout.write(details([["built", built.file], ["size", bytes(built.sizeBytes)], ["sha256", built.sha256]]));
        }
        const built = await buildWorkflowImage({ entry: file, out: flags.out ?? `${name}.tar`, ...node });
        if (ctx.output === "json") return void process.stdout.write(JSON.stringify(built) + "\n");
        process.stdout.write(details([["built", built.file], ["size", bytes(built.sizeBytes)], ["manifest digest", built.manifestDigest]]));
      }),
    );
  program
    .command("deploy <file>")
    .description("register a workflow source file (built first), an OCI image archive or a binary as a new version of --name")
    .requiredOption("-n, --name <name>", "image name (a new version if it exists)")
    .option("--tag <tag>", "label of this version")
    .option("--description <text>", "shown with the image")
    .option("--runner <runner>", "oci or native (a source file is then built as a single executable; archives always run under oci)", "oci")
    .option("--node <path>", "the Node binary to pack when building a source file")
    .option("--no-progress", "no progress bar")
    .action(
      action(async (ctx, file: string, flags: { name: string; tag?: string; description?: string; runner: string; node?: string; progress: boolean }) => {
        const runnerType = enumArgument<RunnerType>("--runner", { OCI: RunnerType.OCI, NATIVE: RunnerType.NATIVE }, flags.runner)!;
        await withTempDir("runtara-deploy-", async (work) => {
          let upload = file;
          let { format, dynamic } = await inspectFile(file);
          if (SOURCE.test(file) && runnerType === RunnerType.NATIVE) {
            upload = (await buildNativeExecutable({ entry: file, out: path.join(work, "workflow"), ...nodeOption(flags.node) })).file;
            format = ImageFormat.BINARY;
          } else if (SOURCE.test(file)) {
            upload = (await buildWorkflowImage({ entry: file, out: path.join(work, "image.tar"), ...nodeOption(flags.node) })).file;
            format = ImageFormat.OCI_ARCHIVE;
          } else if (dynamic && runnerType === RunnerType.OCI) {
            throw new UsageError(
              `${file} is dynamically linked, so it cannot run as /binary in an empty container root; deploy it with --runner native, or as an OCI archive that holds its libraries`,
            );
          }
          const image = await uploadImage(
            ctx,
            upload,
            { name: flags.name, tag: flags.tag ?? "", description: flags.description ?? "", runnerType, format },
            flags.progress && process.stderr.isTTY === true,
          );
          emit(ctx, ImageSchema, image, () =>
            details([
              ["name", image.name],
              ["version", String(image.version)],
              ["image id", image.imageId],
              ["digest", image.manifestDigest || `sha256:${image.sha256}`],
              ["size", bytes(image.sizeBytes)],
            ]),
          );
        });
      }),
    );
}

/** The Node binary option of the builders; an empty one is a mistake, not the default. */
function nodeOption(node: string | undefined): { node?: string } {
  if (node === "") throw new UsageError("--node must name a Node binary");
  return node === undefined ? {} : { node };
}

/**
 * A tar (ustar magic at 257) or gzip file is taken for an OCI image archive, anything else for
 * a binary; `dynamic`: an executable that needs a dynamic loader.
 */
async function inspectFile(file: string): Promise<{ format: ImageFormat; dynamic: boolean }> {
  // O_NONBLOCK: a FIFO cannot hang the open; it is then refused as not a regular file.
  const handle = await open(file, constants.O_RDONLY | constants.O_NONBLOCK).catch((e: NodeJS.ErrnoException) => {
    throw new UsageError(`cannot read ${file}: ${e.code === "ENOENT" ? "no such file" : e.message}`);
  });
  try {
    if (!(await handle.stat()).isFile()) throw new UsageError(`${file} is not a regular file`);
    const head = Buffer.alloc(263);
    const { bytesRead } = await handle.read(head, 0, head.length, 0);
    const gzip = bytesRead >= 2 && head[0] === 0x1f && head[1] === 0x8b;
    const tar = bytesRead >= 262 && head.subarray(257, 262).toString("latin1") === "ustar";
    if (gzip || tar) return { format: ImageFormat.OCI_ARCHIVE, dynamic: false };
    return { format: ImageFormat.BINARY, dynamic: await isDynamicElf(handle) };
  } finally {
    await handle.close();
  }
}
