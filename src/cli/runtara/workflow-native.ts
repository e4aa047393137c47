/**
 * `runtara workflow build --native`: the bundled workflow as a Node single executable
 * application (a copy of the Node binary with the workflow injected by postject) for the native
 * runner. Node 20 starts a single executable's main script as CommonJS, and workflows are ES
 * modules with top-level await, so the main script imports the bundle from a data: URL through
 * the main context's module loader.
 */
import { chmod, copyFile, readFile, realpath, writeFile } from "node:fs/promises";
import { createHash } from "node:crypto";
import path from "node:path";
import { execa } from "execa";
import { inject } from "postject";
import { bundleWorkflow } from "./bundle.js";
import { checkBuildOutput, publishBuildOutput } from "./build-output.js";
import { CommandFailed } from "./failures.js";
import { withTempDir } from "./temp-dir.js";

export interface NativeBuildOptions {
  entry: string;
  out: string;
  /** The Node binary the executable is made from (default: the one running this CLI). */
  node?: string;
}

export interface BuiltExecutable {
  file: string;
  sizeBytes: number;
  /** sha256 of the executable, as the server will show it. */
  sha256: string;
}

/** The fuse Node's binaries carry for single executable applications. */
const SEA_FUSE = "NODE_SEA_FUSE_fce680ab2cc467b6e072b8b5df1996b2";

export async function buildNativeExecutable(options: NativeBuildOptions): Promise<BuiltExecutable> {
  await checkBuildOutput(options.out, options.entry);
  const node = await realpath(options.node ?? process.execPath).catch(() => {
    throw new CommandFailed(`no Node binary at ${options.node}`);
  });
  const bundle = await bundleWorkflow(options.entry);
  return withTempDir("runtara-build-", async (work) => {
    await writeFile(path.join(work, "main.cjs"), mainScript(bundle));
    await writeFile(
      path.join(work, "sea-config.json"),
      JSON.stringify({ main: "main.cjs", output: "sea.blob", disableExperimentalSEAWarning: true, useSnapshot: false, useCodeCache: false }),
    );
    // The blob's format belongs to the Node version, so the binary that runs it writes it.
    const prepared = await execa(node, ["--experimental-sea-config", "sea-config.json"], { cwd: work, reject: false, env: { NODE_OPTIONS: "" } });
    const why = firstLine(prepared.stderr || prepared.stdout) || (prepared.signal ? `killed by ${prepared.signal}` : `exit code ${prepared.exitCode ?? prepared.code}`);
    if (prepared.exitCode !== 0) throw new CommandFailed(`${node} cannot make a single executable: ${why}`);
    const blob = await readFile(path.join(work, "sea.blob")).catch(() => {
      throw new CommandFailed(`${node} wrote no single executable blob; --node must be Node 20 or later`);
    });
    const executable = path.join(work, "workflow");
    await copyFile(node, executable);
    await chmod(executable, 0o755);
    await quietly(() => inject(executable, "NODE_SEA_BLOB", blob, { sentinelFuse: SEA_FUSE })).catch((e: Error) => {
      throw new CommandFailed(`cannot make ${node} a single executable (${firstLine(e.message)}); use a Node binary from nodejs.org with --node`);
    });
    const built = await readFile(executable);
    await publishBuildOutput(executable, options.out, 0o755);
    return { file: options.out, sizeBytes: built.length, sha256: createHash("sha256").update(built).digest("hex") };
  });
}

/**
 * The executable's CommonJS entry: imports the ES module bundle. The experimental warning for
 * the loader option is the builder's business, not the workflow's stderr.
 */
function mainScript(bundle: Buffer): string {
  const importer = `import(${JSON.stringify(`data:text/javascript;base64,${bundle.toString("base64")}`)})`;
  return `"use strict";
const vm = require("node:vm");
const emitWarning = process.emitWarning;
process.emitWarning = function (warning, ...rest) {
  if (!String(warning && warning.message !== undefined ? warning.message : warning).includes("USE_MAIN_CONTEXT_DEFAULT_LOADER")) emitWarning.call(process, warning, ...rest);
};
const loaded = new vm.Script(${JSON.stringify(importer)}, { importModuleDynamically: vm.constants.USE_MAIN_CONTEXT_DEFAULT_LOADER }).runInThisContext();
process.emitWarning = emitWarning;
loaded.catch((error) => { process.exitCode = 1; console.error(error); });
`;
}

/** postject's ELF library prints notes about sections it does not know; they are not the user's. */
async function quietly<T>(fn: () => Promise<T>): Promise<T> {
  const log = console.log;
  const warn = console.warn;
  console.log = console.warn = () => {};
  try {
    return await fn();
  } finally {
    console.log = log;
    console.warn = warn;
  }
}

const firstLine = (text: string) => text.trim().split("\n")[0] ?? "";
