import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";
import { mkdir, open, readFile, rm, stat, writeFile } from "node:fs/promises";
import path from "node:path";
import { Readable } from "node:stream";
import { createGunzip } from "node:zlib";
import { extract } from "tar-stream";
import { FailedPrecondition, InvalidArgument } from "../errors.js";
import { ImageUnpackError, type ImageProcess } from "../runner/index.js";

/** The tag the unpacker is pointed at (the archive's own tags, if any, are not trusted). */
export const LAYOUT_REF = "runtara";

/** Largest manifest, index or config a layout may hold. */
const MAX_JSON_BYTES = 4 * 1024 * 1024;
/** Entries an archive may hold (blobs, directories, anything skipped). */
const MAX_ENTRIES = 100_000;
/**
 * A gzip-compressed archive may expand to at most this many times its size (and never past
 * the image cap): real archives hold compressed layers and barely shrink in gzip, while a
 * bomb of zeros would otherwise fill the disk up to the cap from a few MiB of upload.
 */
const MAX_ARCHIVE_EXPANSION = 32;
/** ...but a small archive may always expand this far. */
const MIN_EXPANSION_BUDGET = 64n * 1024n * 1024n;
const BLOB = /^blobs\/sha256\/([0-9a-f]{64})$/;
const MEDIA_INDEX = new Set(["application/vnd.oci.image.index.v1+json", "application/vnd.docker.distribution.manifest.list.v2+json"]);

interface Descriptor {
  mediaType?: string;
  digest: string;
  size: number;
  platform?: { architecture?: string; os?: string };
}

export interface ArchiveLayout {
  /** Digest of the image manifest chosen for this host ("sha256:…"). */
  manifestDigest: string;
}

/** What unpacks a verified layout into a bundle (the OCI runner, which knows its user namespace). */
export type LayoutUnpacker = (layoutDir: string, ref: string, bundleDir: string) => Promise<ImageProcess>;

/** Name of the file, in an image's directory, holding the process its config describes. */
export const PROCESS_FILE = "process.json";

/**
 * Turns a staged upload directory holding an OCI archive (`binary`) into an image directory:
 * `bundle/rootfs` unpacked, `process.json` (the image config's process), and nothing of the
 * archive or its layout left. Returns the manifest digest.
 */
export async function unpackArchiveUpload(stagedDir: string, unpack: LayoutUnpacker, maxBytes: bigint): Promise<string> {
  const layoutDir = path.join(stagedDir, "layout");
  const { manifestDigest } = await readOciArchive(path.join(stagedDir, "binary"), layoutDir, maxBytes);
  let imageProcess: ImageProcess;
  try {
    imageProcess = await unpack(layoutDir, LAYOUT_REF, path.join(stagedDir, "bundle"));
  } catch (e) {
    if (e instanceof ImageUnpackError) throw new InvalidArgument("binary", e.message);
    throw e;
  }
  await writeFile(path.join(stagedDir, PROCESS_FILE), JSON.stringify(imageProcess), { mode: 0o644 });
  await rm(layoutDir, { recursive: true, force: true });
  await rm(path.join(stagedDir, "binary"), { force: true });
  return manifestDigest;
}

/** OCI architecture name of this host. */
export function hostArchitecture(): string {
  return process.arch === "x64" ? "amd64" : process.arch;
}

/**
 * Reads an OCI image archive (a tar of an image layout, gzip-compressed or not) into
 * `layoutDir` without trusting it: only `oci-layout`, `index.json` and `blobs/sha256/<hex>`
 * regular files are written (nothing else, so no link or path in the archive can reach
 * outside), every blob is hashed as it is written and must match its name, and at most
 * `maxBytes` are written in all (less for a gzip-compressed archive: MAX_ARCHIVE_EXPANSION;
 * a gzip bomb stops there). Then the manifest for this host's platform is chosen, its config
 * and layers checked present with their declared sizes and their unpacked size within the
 * same budget, and `index.json` rewritten to name only it, tagged LAYOUT_REF, for the unpacker.
 */
export async function readOciArchive(archive: string, layoutDir: string, maxBytes: bigint): Promise<ArchiveLayout> {
  await mkdir(path.join(layoutDir, "blobs", "sha256"), { recursive: true });
  const head = await readHead(archive);
  const budget = isGzip(head) ? min(maxBytes, max(MIN_EXPANSION_BUDGET, BigInt((await stat(archive)).size) * BigInt(MAX_ARCHIVE_EXPANSION))) : maxBytes;
  const { source, entries } = tarEntries(archive, head);
  let written = 0n;
  let count = 0;
  let index: Buffer | undefined;
  let ociLayout: Buffer | undefined;
  try {
    for await (const entry of entries) {
      if (++count > MAX_ENTRIES) throw new InvalidArgument("binary", `OCI archive has more than ${MAX_ENTRIES} entries`);
      const name = entry.header.name.replace(/^(\.\/)+/, "").replace(/\/+$/, "");
      const isFile = entry.header.type === "file" || entry.header.type === "contiguous-file";
      const blob = isFile ? BLOB.exec(name) : null;
      if (isFile && (name === "index.json" || name === "oci-layout")) {
        const bytes = await collect(entry, MAX_JSON_BYTES, name);
        if (name === "index.json") index = bytes;
        else ociLayout = bytes;
      } else if (blob) {
        written += await writeBlob(entry, path.join(layoutDir, "blobs", "sha256", blob[1]!), blob[1]!, budget - written);
      } else {
        await skip(entry); // directories, links, Docker's manifest.json and anything else: not used
      }
    }
  } catch (e) {
    if (e instanceof InvalidArgument) throw e;
    throw new InvalidArgument("binary", `not a readable OCI image archive (tar, optionally gzip): ${(e as Error).message}`);
  } finally {
    source.destroy();
  }
  if (ociLayout === undefined) throw new InvalidArgument("binary", "OCI archive has no oci-layout file (is it an OCI image layout? docker save needs Docker 25+)");
  if (index === undefined) throw new InvalidArgument("binary", "OCI archive has no index.json");
  const version = parseJson<{ imageLayoutVersion?: unknown }>(ociLayout, "oci-layout").imageLayoutVersion;
  if (typeof version !== "string" || !version.startsWith("1.")) throw new InvalidArgument("binary", `OCI archive has image layout version ${String(version)}; 1.x is supported`);
  await writeFile(path.join(layoutDir, "oci-layout"), JSON.stringify({ imageLayoutVersion: version }));
  const { manifest: chosen, layers } = await chooseManifest(layoutDir, parseJson<{ manifests?: unknown }>(index, "index.json"));
  await checkUnpackedSize(layoutDir, layers, budget);
  await writeFile(
    path.join(layoutDir, "index.json"),
    JSON.stringify({ schemaVersion: 2, manifests: [{ ...chosen, annotations: { "org.opencontainers.image.ref.name": LAYOUT_REF } }] }),
  );
  return { manifestDigest: chosen.digest };
}

const isGzip = (head: Buffer) => head[0] === 0x1f && head[1] === 0x8b;
const isZstd = (head: Buffer) => head.readUInt32LE(0) === 0xfd2fb528;
const min = (a: bigint, b: bigint) => (a < b ? a : b);
const max = (a: bigint, b: bigint) => (a > b ? a : b);

/**
 * The layers' files together hold at most `maxBytes` (what umoci would write into the root
 * filesystem), counted from their tar headers as each layer is read (decompressed in memory,
 * nothing written): a layer bomb is refused before the unpacker starts. Sparse entries are
 * refused (their real size is not what the archive holds), and so are zstd layers (Node 20
 * cannot read them to count).
 */
async function checkUnpackedSize(layoutDir: string, layers: readonly Descriptor[], maxBytes: bigint): Promise<void> {
  let total = 0n;
  for (const layer of layers) {
    const file = blobFile(layoutDir, layer);
    const head = await readHead(file);
    if (isZstd(head)) throw new InvalidArgument("binary", `layer ${layer.digest} is zstd-compressed; push the image with gzip layers`);
    const { source, entries } = tarEntries(file, head);
    try {
      for await (const entry of entries) {
        const { header } = entry;
        // An unknown type (null) is GNU's old sparse format among others; PAX sparse is GNU.sparse.*.
        if ((header.type as string | null) === null || Object.keys(header.pax ?? {}).some((k) => k.startsWith("GNU.sparse"))) {
          throw new InvalidArgument("binary", `layer ${layer.digest} holds a sparse file or an entry of an unknown type (${header.name}); they are not supported`);
        }
        total += BigInt(header.size ?? 0) + 512n;
        if (total > maxBytes) {
          throw new InvalidArgument("binary", `the image's layers unpack to more than ${maxBytes} bytes (RUNTARA_MAX_IMAGE_BYTES, or ${MAX_ARCHIVE_EXPANSION}× a gzip-compressed archive)`);
        }
        await skip(entry);
      }
    } catch (e) {
      if (e instanceof InvalidArgument) throw e;
      throw new InvalidArgument("binary", `layer ${layer.digest} is not a readable tar (optionally gzip): ${(e as Error).message}`);
    } finally {
      source.destroy();
    }
  }
}

/** The entries of the tar in `file` (gunzipped when `head`, its first bytes, says gzip); destroy `source` when done. */
function tarEntries(file: string, head: Buffer) {
  const source = createReadStream(file);
  const tar: Readable = isGzip(head) ? source.pipe(createGunzip()) : source;
  const entries = extract();
  tar.on("error", (e) => entries.destroy(e));
  tar.pipe(entries);
  return { source, entries };
}

/** Reads past an entry's data. */
function skip(entry: { resume(): unknown; once(event: "end" | "error", listener: (e?: Error) => void): unknown }): Promise<void> {
  entry.resume();
  return new Promise<void>((resolve, reject) => {
    entry.once("end", () => resolve());
    entry.once("error", reject);
  });
}

async function readHead(file: string): Promise<Buffer> {
  const handle = await open(file, "r");
  try {
    const head = Buffer.alloc(4);
    await handle.read(head, 0, 4, 0);
    return head;
  } finally {
    await handle.close();
  }
}

async function collect(stream: AsyncIterable<unknown>, max: number, what: string): Promise<Buffer> {
  const parts: Buffer[] = [];
  let size = 0;
  for await (const chunk of stream) {
    size += (chunk as Buffer).length;
    if (size > max) throw new InvalidArgument("binary", `${what} in the OCI archive is larger than ${max} bytes`);
    parts.push(chunk as Buffer);
  }
  return Buffer.concat(parts);
}

async function writeBlob(stream: AsyncIterable<unknown>, file: string, hex: string, budget: bigint): Promise<bigint> {
  const hash = createHash("sha256");
  // "wx": a blob named twice in one archive is refused rather than overwritten.
  const handle = await open(file, "wx", 0o600).catch((e: NodeJS.ErrnoException) => {
    throw e.code === "EEXIST" ? new InvalidArgument("binary", `OCI archive holds blob sha256:${hex} twice`) : e;
  });
  let size = 0n;
  try {
    for await (const chunk of stream) {
      size += BigInt((chunk as Buffer).length);
      if (size > budget) throw new InvalidArgument("binary", "OCI archive unpacks to more bytes than images may have (RUNTARA_MAX_IMAGE_BYTES)");
      hash.update(chunk as Buffer);
      await handle.write(chunk as Buffer);
    }
    await handle.sync();
  } finally {
    await handle.close();
  }
  const actual = hash.digest("hex");
  if (actual !== hex) throw new InvalidArgument("binary", `OCI archive blob sha256:${hex} does not match its content (sha256:${actual})`);
  return size;
}

function parseJson<T>(bytes: Buffer, what: string): T {
  try {
    const v: unknown = JSON.parse(bytes.toString("utf8"));
    if (v !== null && typeof v === "object") return v as T;
  } catch {
    // reported below
  }
  throw new InvalidArgument("binary", `${what} in the OCI archive is not a JSON object`);
}

function descriptorsOf(v: unknown, what: string): Descriptor[] {
  if (!Array.isArray(v) || v.length === 0) throw new InvalidArgument("binary", `${what} in the OCI archive lists no manifests`);
  return v.map((d: unknown) => {
    const x = d as Partial<Descriptor> | null;
    if (!x || typeof x.digest !== "string" || !/^sha256:[0-9a-f]{64}$/.test(x.digest) || !Number.isSafeInteger(x.size) || (x.size as number) < 0) {
      throw new InvalidArgument("binary", `${what} in the OCI archive has a malformed descriptor`);
    }
    return x as Descriptor;
  });
}

const blobFile = (layoutDir: string, d: Descriptor) => path.join(layoutDir, "blobs", "sha256", d.digest.slice("sha256:".length));

/** A layer (or any blob) must be in the layout with its declared size; its digest was checked on the way in. */
async function checkBlob(layoutDir: string, d: Descriptor, what: string): Promise<void> {
  const st = await stat(blobFile(layoutDir, d)).catch(() => undefined);
  if (st === undefined) throw new InvalidArgument("binary", `OCI archive is missing ${what} ${d.digest}`);
  if (st.size !== d.size) throw new InvalidArgument("binary", `${what} ${d.digest} is ${st.size} bytes, its descriptor says ${d.size}`);
}

/** A manifest, index or config blob, parsed. */
async function jsonBlob<T>(layoutDir: string, d: Descriptor, what: string): Promise<T> {
  if (d.size > MAX_JSON_BYTES) throw new InvalidArgument("binary", `${what} ${d.digest} is larger than ${MAX_JSON_BYTES} bytes`);
  await checkBlob(layoutDir, d, what);
  return parseJson<T>(await readFile(blobFile(layoutDir, d)), `${what} ${d.digest}`);
}

/**
 * The image manifest for linux on this host's architecture: through image indexes (at most
 * two levels), preferring the platform a descriptor declares, and always confirmed by the
 * image config's own os/architecture.
 */
async function chooseManifest(layoutDir: string, index: { manifests?: unknown }, depth = 0): Promise<{ manifest: Descriptor; layers: Descriptor[] }> {
  const arch = hostArchitecture();
  const candidates = descriptorsOf(index.manifests, "index");
  const fitting = candidates.filter((d) => d.platform === undefined || (d.platform.os === "linux" && d.platform.architecture === arch));
  const seen: string[] = [];
  for (const d of fitting) {
    const doc = await jsonBlob<{ mediaType?: string; manifests?: unknown; config?: Descriptor; layers?: unknown }>(layoutDir, d, "manifest");
    if (MEDIA_INDEX.has(d.mediaType ?? doc.mediaType ?? "") || doc.manifests !== undefined) {
      if (depth >= 2) throw new InvalidArgument("binary", "OCI archive nests image indexes too deeply");
      return chooseManifest(layoutDir, doc, depth + 1);
    }
    const [config] = descriptorsOf(doc.config === undefined ? undefined : [doc.config], `manifest ${d.digest} config`);
    const platform = await jsonBlob<{ os?: string; architecture?: string; config?: { Entrypoint?: unknown; Cmd?: unknown } }>(layoutDir, config!, "config");
    if (platform.os === "linux" && platform.architecture === arch) {
      // Checked here: the unpacker would fill in a default (`sh`) the image never asked for.
      const nonEmpty = (v: unknown) => Array.isArray(v) && v.length > 0;
      if (!nonEmpty(platform.config?.Entrypoint) && !nonEmpty(platform.config?.Cmd)) {
        throw new InvalidArgument("binary", "the image config has neither Entrypoint nor Cmd: nothing to run");
      }
      const layers = Array.isArray(doc.layers) && doc.layers.length > 0 ? descriptorsOf(doc.layers, `manifest ${d.digest} layers`) : [];
      for (const layer of layers) await checkBlob(layoutDir, layer, "layer");
      return { manifest: { mediaType: d.mediaType ?? doc.mediaType ?? "application/vnd.oci.image.manifest.v1+json", digest: d.digest, size: d.size }, layers };
    }
    seen.push(`${platform.os ?? "?"}/${platform.architecture ?? "?"}`);
  }
  for (const d of candidates) if (d.platform && !fitting.includes(d)) seen.push(`${d.platform.os ?? "?"}/${d.platform.architecture ?? "?"}`);
  throw new FailedPrecondition(`binary: the OCI image is for ${[...new Set(seen)].join(", ") || "no platform"}; this host runs linux/${arch}`);
}
