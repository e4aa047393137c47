/**
 * `runtara workflow build`: a TypeScript (or JavaScript) workflow bundled with esbuild into one
 * ES module, packed with a Node runtime (this machine's `node` and the shared libraries it
 * links) as a one-layer OCI image archive the OCI runner runs. Reproducible: fixed times,
 * owners and order everywhere, no history, so the same input gives the same digest.
 */
import { createHash } from "node:crypto";
import { createReadStream, createWriteStream } from "node:fs";
import { realpath, stat } from "node:fs/promises";
import path from "node:path";
import { once } from "node:events";
import { Readable, Transform } from "node:stream";
import { pipeline } from "node:stream/promises";
import { createGzip } from "node:zlib";
import { execa } from "execa";
import { pack, type Pack } from "tar-stream";
import { bundleWorkflow } from "./bundle.js";
import { checkBuildOutput, publishBuildOutput } from "./build-output.js";
import { CommandFailed } from "./failures.js";
import { withTempDir } from "./temp-dir.js";

export interface BuildOptions {
  /** The workflow's entry file. */
  entry: string;
  /** Where the archive goes. */
  out: string;
  /** The Node binary packed as the runtime (default: the one running this CLI). */
  node?: string;
}

export interface BuiltImage {
  file: string;
  sizeBytes: number;
  /** Digest of the image manifest, as the server will show it. */
  manifestDigest: string;
}

/** Where things are in the image. */
const NODE_IN_IMAGE = "usr/bin/node";
const WORKFLOW_IN_IMAGE = "app/workflow.mjs";
const EPOCH = new Date(0);

interface LayerFile {
  /** Path in the image, without a leading slash. */
  name: string;
  mode: number;
  from: string | Buffer;
}

export async function buildWorkflowImage(options: BuildOptions): Promise<BuiltImage> {
  await checkBuildOutput(options.out, options.entry);
  const bundle = await bundleWorkflow(options.entry);
  const files: LayerFile[] = [...(await runtimeFiles(options.node ?? process.execPath)), { name: WORKFLOW_IN_IMAGE, mode: 0o644, from: bundle }];
  return withTempDir("runtara-build-", async (work) => {
    const tarFile = path.join(work, "layer.tar");
    const gzFile = path.join(work, "layer.tar.gz");
    const diffId = await writeLayerTar(files, tarFile);
    const layerDigest = await digestWhileWriting(createReadStream(tarFile).pipe(createGzip()), gzFile);
    const layer = { mediaType: "application/vnd.oci.image.layer.v1.tar+gzip", digest: layerDigest, size: (await stat(gzFile)).size };
    const config = json({
      architecture: process.arch === "x64" ? "amd64" : process.arch,
      os: "linux",
      config: { Entrypoint: [`/${NODE_IN_IMAGE}`], Cmd: [`/${WORKFLOW_IN_IMAGE}`], Env: ["PATH=/usr/local/bin:/usr/bin:/bin", "NODE_ENV=production"], WorkingDir: "/app" },
      rootfs: { type: "layers", diff_ids: [diffId] },
    });
    const configDescriptor = { mediaType: "application/vnd.oci.image.config.v1+json", digest: sha256(config), size: config.length };
    const manifest = json({ schemaVersion: 2, mediaType: "application/vnd.oci.image.manifest.v1+json", config: configDescriptor, layers: [layer] });
    const manifestDigest = sha256(manifest);
    const index = json({
      schemaVersion: 2,
      manifests: [{ mediaType: "application/vnd.oci.image.manifest.v1+json", digest: manifestDigest, size: manifest.length, annotations: { "org.opencontainers.image.ref.name": "latest" } }],
    });
    const archive = path.join(work, "image.tar");
    await writeArchive(archive, [
      { name: "oci-layout", mode: 0o644, from: json({ imageLayoutVersion: "1.0.0" }) },
      { name: "index.json", mode: 0o644, from: index },
      { name: `blobs/sha256/${hex(configDescriptor.digest)}`, mode: 0o644, from: config },
      { name: `blobs/sha256/${hex(manifestDigest)}`, mode: 0o644, from: manifest },
      { name: `blobs/sha256/${hex(layerDigest)}`, mode: 0o644, from: gzFile },
    ]);
    const sizeBytes = (await stat(archive)).size;
    await publishBuildOutput(archive, options.out, 0o644);
    return { file: options.out, sizeBytes, manifestDigest };
  });
}

/** The Node binary and every shared library it links (with the loader), at their paths. */
async function runtimeFiles(node: string): Promise<LayerFile[]> {
  const binary = await realpath(node).catch(() => {
    throw new CommandFailed(`no Node binary at ${node}`);
  });
  const files: LayerFile[] = [{ name: NODE_IN_IMAGE, mode: 0o755, from: binary }];
  const ldd = await execa("ldd", [binary], { reject: false });
  for (const [, lib] of ldd.stdout.matchAll(/(\/\S+\.so[.\d]*)/g)) {
    files.push({ name: lib!.slice(1), mode: ((await stat(lib!)).mode & 0o755) | 0o444, from: await realpath(lib!) });
  }
  return files;
}

/** The layer: directories first implied by the files, all sorted, owned by root, at the epoch. */
async function writeLayerTar(files: LayerFile[], out: string): Promise<string> {
  const dirs = new Set<string>();
  for (const f of files) for (let d = path.posix.dirname(f.name); d !== "."; d = path.posix.dirname(d)) dirs.add(d);
  const tar = pack();
  const digest = digestWhileWriting(Readable.from(tar), out);
  for (const d of [...dirs].sort()) await addEntry(tar, { name: `${d}/`, mode: 0o755, from: Buffer.alloc(0) }, "directory");
  for (const f of [...files].sort((a, b) => a.name.localeCompare(b.name))) await addEntry(tar, f, "file");
  tar.finalize();
  return digest;
}

async function writeArchive(out: string, entries: LayerFile[]): Promise<void> {
  const tar = pack();
  const written = pipeline(Readable.from(tar), createWriteStream(out, { mode: 0o644 }));
  for (const e of entries) await addEntry(tar, e, "file");
  tar.finalize();
  await written;
}

async function addEntry(tar: Pack, file: LayerFile, type: "file" | "directory"): Promise<void> {
  const header = { name: file.name, mode: file.mode, mtime: EPOCH, uid: 0, gid: 0, uname: "", gname: "", type };
  if (typeof file.from !== "string") {
    await new Promise<void>((resolve, reject) => tar.entry({ ...header, size: file.from.length }, file.from as Buffer, (e) => (e ? reject(e) : resolve())));
    return;
  }
  const size = (await stat(file.from)).size;
  let done!: () => void;
  let failed!: (e: Error) => void;
  const finished = new Promise<void>((resolve, reject) => ((done = resolve), (failed = reject)));
  const entry = tar.entry({ ...header, size }, (e) => (e ? failed(e) : done()));
  for await (const chunk of createReadStream(file.from)) {
    if (!entry.write(chunk as Buffer)) await once(entry as unknown as NodeJS.EventEmitter, "drain");
  }
  entry.end(undefined);
  await finished;
}

/** Writes `source` to `out`, resolving with the sha256 digest ("sha256:…") of what was written. */
async function digestWhileWriting(source: Readable, out: string): Promise<string> {
  const hash = createHash("sha256");
  const tap = new Transform({
    transform(chunk: Buffer, _enc, callback) {
      hash.update(chunk);
      callback(null, chunk);
    },
  });
  await pipeline(source, tap, createWriteStream(out));
  return `sha256:${hash.digest("hex")}`;
}

const json = (value: unknown) => Buffer.from(JSON.stringify(value));
const sha256 = (data: Buffer) => `sha256:${createHash("sha256").update(data).digest("hex")}`;
const hex = (digest: string) => digest.slice("sha256:".length);

