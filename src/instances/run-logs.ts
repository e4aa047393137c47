import { constants } from "node:fs";
import { open, type FileHandle } from "node:fs/promises";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import type { DatabasePool } from "slonik";
import { NotFound } from "../errors.js";
import { isTerminal, transitions } from "../lifecycle/index.js";
import { MARKER_MAX_BYTES, markerOffset, offsetAfterCap, readMarker } from "../runner/log-cap.js";
import * as repo from "./repository.js";

export type LogStreamName = "stdout" | "stderr";

export interface LogChunk {
  stream: LogStreamName;
  data: Uint8Array;
}

export interface LogRequest {
  tenantId: string;
  instanceId: string;
  /** Keep going as the logs grow, until the instance is terminal and its process settled. */
  follow: boolean;
  /** Start this many bytes before the end of each log; 0 for the beginning. */
  tailBytes: number;
  signal: AbortSignal;
}

/** Largest piece of a log in one message. */
const CHUNK_BYTES = 64 * 1024;
/** How often a followed log is checked for growth. */
const POLL_MS = 250;

interface OpenLog {
  name: LogStreamName;
  file: string;
  handle: FileHandle | undefined;
  offset: number;
  /** Where the first read starts from the end (tail_bytes); used once. */
  tail: number;
  /** The cap's shift of the file as `offset` counts it (undefined until first read; 0: never capped). */
  shift: number | undefined;
}

/**
 * An instance's stdout.log and stderr.log, as the runners write them in its run directory
 * (every run appends, after a marker line). The run directory is the workflow's `/data`, so
 * a log is opened only as a regular file the environment owns, never through a symlink or
 * into a FIFO the workflow may have planted there. A log capped in place (its middle
 * dropped, `maxLogBytes` as the runners cap it) changes under a follower, which then
 * continues where its next byte moved to (the marker's shift says how far).
 */
export class RunLogReader {
  constructor(
    private readonly db: DatabasePool,
    private readonly dataDir: string,
    private readonly maxLogBytes: number,
  ) {}

  async *read(req: LogRequest): AsyncGenerator<LogChunk> {
    if ((await transitions.tenantStatus(this.db, req.tenantId, req.instanceId)) === null) throw new NotFound(`instance ${req.instanceId} not found`);
    const runDir = path.join(this.dataDir, "runs", req.tenantId, req.instanceId);
    const logs: OpenLog[] = (["stdout", "stderr"] as const).map((name) => ({ name, file: path.join(runDir, `${name}.log`), handle: undefined, offset: 0, tail: req.tailBytes, shift: undefined }));
    try {
      for (;;) {
        // Settled before the last pass, so nothing written before the end is missed.
        const settled = req.follow ? await this.settled(req.instanceId) : true;
        let readAny = false;
        for (const log of logs) {
          for await (const data of drain(log, this.maxLogBytes)) {
            readAny = true;
            yield { stream: log.name, data };
          }
        }
        if (settled || req.signal.aborted) return;
        if (!readAny) await sleep(POLL_MS, undefined, { signal: req.signal }).catch(() => {});
      }
    } finally {
      for (const log of logs) await log.handle?.close();
    }
  }

  private async settled(instanceId: string): Promise<boolean> {
    const status = await transitions.currentStatus(this.db, instanceId);
    return status === null || (isTerminal(status) && !(await repo.runRecorded(this.db, instanceId)));
  }
}

/**
 * What has been appended to the log since the last read. A cut by the cap (see capLogFile)
 * shows as a new shift in the marker: the offset is moved to where its next byte went, and a
 * chunk read while a cut happened is dropped and read again from there.
 */
async function* drain(log: OpenLog, maxLogBytes: number): AsyncGenerator<Uint8Array> {
  log.handle ??= await openOwnRegularFile(log.file);
  const handle = log.handle;
  if (handle === undefined) return;
  /** Takes in a cut made since the last look; false while one is under way (read nothing then). */
  const follow = async () => {
    const shift = await shiftOf(handle, maxLogBytes);
    if (shift === "cutting") return false;
    if (log.shift !== undefined && shift.value !== log.shift && shift.cut) log.offset = offsetAfterCap(log.offset, maxLogBytes, log.shift, shift.cut);
    log.shift = shift.value;
    return true;
  };
  if (!(await follow())) return;
  const size = (await handle.stat()).size;
  // The size must be of the layout the offset counts in: a cut in between starts over next pass.
  const shiftAtSize = log.shift;
  if (!(await follow()) || log.shift !== shiftAtSize) return;
  if (log.tail > 0) {
    log.offset = Math.max(0, size - log.tail);
    log.tail = 0;
  }
  log.offset = Math.min(log.offset, size);
  while (log.offset < size) {
    const buffer = Buffer.alloc(Math.min(CHUNK_BYTES, size - log.offset));
    const { bytesRead } = await handle.read(buffer, 0, buffer.length, log.offset);
    if (bytesRead === 0) return;
    const before = log.shift;
    // Cut meanwhile (or under way): drop the chunk; the next pass reads from the new offset.
    if (!(await follow()) || log.shift !== before) return;
    log.offset += bytesRead;
    yield buffer.subarray(0, bytesRead);
  }
}

/** The shift the marker at markerOffset states (0 and no cut when there is none), or "cutting". */
async function shiftOf(handle: FileHandle, maxLogBytes: number): Promise<{ value: number; cut?: { length: number; shift: number } } | "cutting"> {
  const at = Buffer.alloc(MARKER_MAX_BYTES);
  const { bytesRead } = await handle.read(at, 0, at.length, markerOffset(maxLogBytes));
  const cut = readMarker(at.subarray(0, bytesRead));
  if (cut === "cutting") return cut;
  return cut ? { value: cut.shift, cut } : { value: 0 };
}

async function openOwnRegularFile(file: string): Promise<FileHandle | undefined> {
  let handle: FileHandle;
  try {
    handle = await open(file, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  } catch {
    return undefined; // not there yet (no run so far), or a symlink
  }
  const st = await handle.stat();
  if (st.isFile() && st.uid === (process.getuid?.() ?? st.uid)) return handle;
  await handle.close();
  return undefined;
}
