import { constants, fstatSync, openSync, readSync, closeSync, writeSync, type Stats } from "node:fs";
import path from "node:path";
import { LaunchError } from "./errors.js";
import { capLogFile, LOG_CAP_INTERVAL_MS } from "./log-cap.js";

/**
 * What tini (the containers' init) prints when a signal arrives just after the workflow ended
 * (the runtime forwards signals of its own): noise in a report of the workflow's stderr.
 */
const INIT_NOISE = /^\[WARN {2}tini \(\d+\)\] Child was dead when forwarding signal\n/gm;

/** How much of stderr an exit reports. */
export const STDERR_TAIL_BYTES = 64 * 1024;

/**
 * The output files of one run, opened by us and handed to the process as file descriptors (no
 * pipes, so the process never blocks on us and survives a restart of the environment). Opened
 * with O_NOFOLLOW and O_APPEND: the run directory is writable by the workflow (it is `/data`),
 * so a symlink planted by a previous run must not redirect our writes or reads to a host file.
 * A relaunch appends; `stderrStart` marks where this run's stderr begins, so the tail is this
 * run's alone. While the run lasts, each file is kept within `maxBytes` (head and tail, see
 * capLogFile), checked every second and once more at the end.
 */
export class RunLogs {
  private closed = false;
  private readonly timer: NodeJS.Timeout;

  private constructor(
    readonly stdoutFd: number,
    readonly stderrFd: number,
    private stderrStart: number,
    private readonly maxBytes: number,
  ) {
    this.timer = setInterval(() => this.cap(), LOG_CAP_INTERVAL_MS).unref();
  }

  /** Opens (creating) the logs of a run about to be launched, `header` written first to both. */
  static open(runDir: string, maxBytes: number, header = ""): RunLogs {
    return RunLogs.openFiles(runDir, maxBytes, constants.O_CREAT, (size) => size, header);
  }

  /** The logs of a run launched by an earlier run of the environment (its stderr tail counts from the start). */
  static adopt(runDir: string, maxBytes: number): RunLogs {
    return RunLogs.openFiles(runDir, maxBytes, 0, () => 0, "");
  }

  private static openFiles(runDir: string, maxBytes: number, create: number, start: (stderrSize: number) => number, header: string): RunLogs {
    // O_RDWR so the tail can be read back through the same descriptor (pread ignores
    // O_APPEND), even if the workflow renames or replaces the path meanwhile. O_NONBLOCK so a
    // FIFO planted at the path cannot hang the open; it is then refused as not a regular file.
    // Mode 0600: output often holds secrets, and the process writes through our descriptors.
    const flags = constants.O_RDWR | create | constants.O_APPEND | constants.O_NOFOLLOW | constants.O_NONBLOCK;
    const stdoutFd = openSync(path.join(runDir, "stdout.log"), flags, 0o600);
    let stderrFd = -1;
    try {
      fstatRegular(stdoutFd);
      stderrFd = openSync(path.join(runDir, "stderr.log"), flags, 0o600);
      const stderrStart = start(fstatRegular(stderrFd).size);
      if (header !== "") for (const fd of [stdoutFd, stderrFd]) writeSync(fd, header);
      return new RunLogs(stdoutFd, stderrFd, stderrStart + Buffer.byteLength(header), maxBytes);
    } catch (e) {
      closeSync(stdoutFd);
      if (stderrFd >= 0) closeSync(stderrFd);
      throw e;
    }
  }

  /**
   * This run's last `maxBytes` of stderr, read through our own descriptor, after a last cap,
   * without the container init's housekeeping warnings (they are not the workflow's output).
   */
  stderrTail(maxBytes = STDERR_TAIL_BYTES): string {
    if (this.closed) return "";
    this.cap();
    return readTail(this.stderrFd, this.stderrStart, maxBytes).replace(INIT_NOISE, "");
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.timer);
    closeSync(this.stdoutFd);
    closeSync(this.stderrFd);
  }

  private cap(): void {
    if (this.closed) return;
    try {
      capLogFile(this.stdoutFd, this.maxBytes);
      const moved = capLogFile(this.stderrFd, this.maxBytes);
      if (moved) this.stderrStart = moved(this.stderrStart);
    } catch {
      // A disk error now is retried at the next tick; the process's own writes are unaffected.
    }
  }
}

/** RunLogs.open, failing as a LaunchError (say, the workflow left a directory at stderr.log). */
export function openLogs(runDir: string, maxBytes: number, header?: string): RunLogs {
  try {
    return RunLogs.open(runDir, maxBytes, header);
  } catch (e) {
    throw new LaunchError("spawn_failed", `cannot open the log files in ${runDir}: ${(e as Error).message}`, "", { cause: e });
  }
}

/**
 * RunLogs.adopt, or undefined when the files are gone or not regular files any more (the
 * workflow replaced them): then the run's logs are neither capped nor is a tail reported.
 */
export function adoptLogs(runDir: string, maxBytes: number): RunLogs | undefined {
  try {
    return RunLogs.adopt(runDir, maxBytes);
  } catch {
    return undefined;
  }
}

function fstatRegular(fd: number): Stats {
  const st = fstatSync(fd);
  if (!st.isFile()) throw new Error("a log file in the run directory is not a regular file");
  return st;
}

/** Reads bytes [max(from, size - maxBytes), size) of a readable fd and decodes them. */
function readTail(fd: number, from: number, maxBytes: number): string {
  let size: number;
  try {
    size = fstatSync(fd).size;
  } catch {
    return "";
  }
  const start = Math.max(from, size - maxBytes);
  if (size <= start) return "";
  const buf = Buffer.alloc(size - start);
  let got = 0;
  while (got < buf.length) {
    const n = readSync(fd, buf, got, buf.length - got, start + got);
    if (n === 0) break;
    got += n;
  }
  return decodeUtf8Slice(buf.subarray(0, got), start > from);
}

/**
 * Decodes a slice of a UTF-8 stream. When the slice was cut from a longer stream, leading
 * continuation bytes (10xxxxxx) belong to a character that started before the cut and are
 * dropped; an incomplete character at the very end (a write cut short) is dropped too, so the
 * result never holds a replacement character that was not in the output.
 */
export function decodeUtf8Slice(bytes: Uint8Array, cutAtStart: boolean): string {
  let begin = 0;
  if (cutAtStart) {
    while (begin < bytes.length && begin < 3 && (bytes[begin]! & 0xc0) === 0x80) begin++;
  }
  let end = bytes.length;
  // Walk back over at most 3 continuation bytes to the last lead byte; drop it if incomplete.
  let i = end - 1;
  while (i >= begin && end - i <= 3 && (bytes[i]! & 0xc0) === 0x80) i--;
  if (i >= begin) {
    const lead = bytes[i]!;
    const need = lead >= 0xf0 ? 4 : lead >= 0xe0 ? 3 : lead >= 0xc0 ? 2 : 1;
    if (end - i < need) end = i;
  }
  return Buffer.from(bytes.buffer, bytes.byteOffset + begin, end - begin).toString("utf8");
}
