/**
 * RegisterImageStream of 1 GiB (generated on the fly in 256 KiB chunks; the client computes
 * the sha256 first because the header carries it) through the generated Connect client over
 * HTTP/2 (binary), against two baselines in the same run: the raw Node path (a bare
 * node:http server streaming the request body through sha256 into a file, the client in this
 * process posting the same chunks over HTTP/1.1) and writing the same bytes, in the same
 * chunks, to a file on the same disk with FileHandle writes. Prints MB/s of each, the ratios,
 * and the growth of the server process's RSS during the upload.
 *
 * The upload runs twice per round: with the client in this process (client and server share
 * one event loop and one RSS) and with the client in a child process (as a real remote
 * client; the RSS sampled here is then the server's alone).
 *
 *   node --import tsx bench/upload.ts      env: BENCH_UPLOAD_MIB (1024), BENCH_CHUNK_KIB (256), BENCH_ROUNDS (3)
 */
import { spawn } from "node:child_process";
import { once } from "node:events";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { createHash } from "node:crypto";
import { open, rm } from "node:fs/promises";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { environmentClient, patternBytes, startEnvironment, stopTestPostgres } from "../test/helpers.js";
import { envNumber, fmt, mbPerSec, median, MiB, ratioLine, sampleRss, targetLine } from "./lib.js";

const TOTAL = envNumber("BENCH_UPLOAD_MIB", 1024) * MiB;
const CHUNK = envNumber("BENCH_CHUNK_KIB", 256) * 1024;
const ROUNDS = envNumber("BENCH_ROUNDS", 3);

// A ring of distinct chunks, cycled, so generating the bytes does not dominate either side.
const RING = Array.from({ length: 64 }, (_, i) => patternBytes(CHUNK, i + 1));
function* chunks(): Generator<Uint8Array> {
  for (let sent = 0, i = 0; sent < TOTAL; i++) {
    const c = RING[i % RING.length]!;
    const n = Math.min(c.byteLength, TOTAL - sent);
    yield n === c.byteLength ? c : c.subarray(0, n);
    sent += n;
  }
}

function sha256OfAll(): string {
  const hash = createHash("sha256");
  for (const c of chunks()) hash.update(c);
  return hash.digest("hex");
}

/** One upload through the generated client; returns its duration and the stored image. */
async function upload(baseUrl: string, name: string, sha256: string) {
  const client = environmentClient(baseUrl, "connect-binary-h2");
  async function* messages() {
    yield { payload: { case: "header" as const, value: { tenantId: "bench", name, binarySize: BigInt(TOTAL), sha256 } } };
    for (const c of chunks()) yield { payload: { case: "chunk" as const, value: c } };
  }
  const started = performance.now();
  const res = await client.registerImageStream(messages());
  const ms = performance.now() - started;
  if (res.image?.sha256 !== sha256 || res.image.sizeBytes !== BigInt(TOTAL)) throw new Error("the stored image does not match the upload");
  return { ms, imageId: res.imageId };
}

if (process.argv[2] === "--client") {
  // Child mode: upload once and report the duration as JSON on stdout.
  const [baseUrl, name] = [process.argv[3]!, process.argv[4]!];
  const result = await upload(baseUrl, name, sha256OfAll());
  process.stdout.write(JSON.stringify(result) + "\n");
  process.exit(0);
}

function uploadFromChildProcess(baseUrl: string, name: string): Promise<{ ms: number; imageId: string }> {
  const self = fileURLToPath(import.meta.url);
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ["--import", "tsx", self, "--client", baseUrl, name], {
      stdio: ["ignore", "pipe", "inherit"],
      env: process.env,
    });
    let out = "";
    child.stdout.setEncoding("utf8").on("data", (d: string) => (out += d));
    child.on("error", reject);
    child.on("close", (code) => (code === 0 ? resolve(JSON.parse(out)) : reject(new Error(`upload client exited with ${code}`))));
  });
}

async function baseline(file: string): Promise<number> {
  const started = performance.now();
  const fh = await open(file, "wx", 0o644);
  try {
    for (const c of chunks()) {
      for (let off = 0; off < c.byteLength; ) off += (await fh.write(c, off)).bytesWritten;
    }
  } finally {
    await fh.close();
  }
  const ms = performance.now() - started;
  await rm(file);
  return ms;
}

/** The raw Node path: HTTP/1.1 body -> sha256 + file writes, client and server in this process. */
async function rawHttp(file: string): Promise<number> {
  const server = http.createServer((req, res) => {
    void (async () => {
      const hash = createHash("sha256");
      const fh = await open(file, "wx", 0o644);
      try {
        for await (const c of req as AsyncIterable<Buffer>) {
          hash.update(c);
          for (let off = 0; off < c.byteLength; ) off += (await fh.write(c, off)).bytesWritten;
        }
      } finally {
        await fh.close();
      }
      res.end(hash.digest("hex"));
    })().catch((e: unknown) => res.destroy(e as Error));
  });
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  const started = performance.now();
  try {
    await new Promise<void>((resolve, reject) => {
      const req = http.request({ host: "127.0.0.1", port: (server.address() as AddressInfo).port, method: "POST", path: "/", agent: false }, (res) => {
        res.resume();
        res.once("end", resolve);
      });
      req.once("error", reject);
      void (async () => {
        for (const c of chunks()) if (!req.write(c)) await once(req, "drain");
        req.end();
      })().catch(reject);
    });
    return performance.now() - started;
  } finally {
    server.close();
    await rm(file, { force: true });
  }
}

const t = await startEnvironment();
try {
  const client = environmentClient(t.baseUrl);
  const sha256 = sha256OfAll();
  const measure = async <T extends { ms: number; imageId: string }>(run: () => Promise<T>) => {
    const rss = sampleRss();
    const r = await run();
    const { growthBytes } = rss.stop();
    await client.deleteImage({ tenantId: "bench", imageId: r.imageId });
    return { ms: r.ms, growthBytes };
  };

  // Warm-up (connections, JIT, first file creation), not counted.
  await baseline(path.join(t.dataDir, "warmup.bin"));
  await rawHttp(path.join(t.dataDir, "warmup-raw.bin"));
  await measure(() => upload(t.baseUrl, "warmup", sha256));

  const baseMs: number[] = [];
  const rawMs: number[] = [];
  const inProcessMs: number[] = [];
  const childMs: number[] = [];
  let inProcessRss = 0;
  let childRss = 0;
  for (let round = 0; round < ROUNDS; round++) {
    const steps = [
      async () => baseMs.push(await baseline(path.join(t.dataDir, `baseline-${round}.bin`))),
      async () => rawMs.push(await rawHttp(path.join(t.dataDir, `raw-${round}.bin`))),
      async () => {
        const r = await measure(() => upload(t.baseUrl, `in-process-${round}`, sha256));
        inProcessMs.push(r.ms);
        inProcessRss = Math.max(inProcessRss, r.growthBytes);
      },
      async () => {
        const r = await measure(() => uploadFromChildProcess(t.baseUrl, `child-${round}`));
        childMs.push(r.ms);
        childRss = Math.max(childRss, r.growthBytes);
      },
    ];
    // Rotate the order so no side always runs first (page cache, writeback).
    for (let i = 0; i < steps.length; i++) await steps[(i + round) % steps.length]!();
  }

  const rates = (ms: number[]) => `[${ms.map((m) => fmt(mbPerSec(TOTAL, m), 0)).join(", ")}]`;
  const base = mbPerSec(TOTAL, median(baseMs));
  const raw = mbPerSec(TOTAL, median(rawMs));
  const inProcess = mbPerSec(TOTAL, median(inProcessMs));
  const child = mbPerSec(TOTAL, median(childMs));
  console.log(`upload: ${TOTAL / MiB} MiB in ${CHUNK / 1024} KiB chunks, Connect binary over h2c; median of ${ROUNDS} rounds [each round]`);
  console.log(`${"baseline: fs FileHandle writes".padEnd(36)} ${fmt(base, 1)} MB/s  ${rates(baseMs)}`);
  console.log(`${"raw Node: HTTP/1.1 + sha256 + file".padEnd(36)} ${fmt(raw, 1)} MB/s  ${rates(rawMs)}`);
  console.log(`${"RegisterImageStream, client in-proc".padEnd(36)} ${fmt(inProcess, 1)} MB/s  ${rates(inProcessMs)}`);
  console.log(`${"RegisterImageStream, client process".padEnd(36)} ${fmt(child, 1)} MB/s  ${rates(childMs)}`);
  console.log(targetLine("ratio upload (in-proc) / raw Node path", inProcess / raw, ">=", 0.9));
  console.log(ratioLine("ratio upload (process) / raw Node path", child / raw, 1));
  console.log(ratioLine("ratio upload (in-proc) / file writes", inProcess / base, 1));
  console.log(targetLine("RSS growth, server + in-proc client", inProcessRss / MiB, "<=", 64, " MiB"));
  console.log(targetLine("RSS growth, server alone", childRss / MiB, "<=", 64, " MiB"));
} finally {
  await t.close();
  await stopTestPostgres();
}
