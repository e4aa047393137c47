import { closeSync, constants, fstatSync, ftruncateSync, openSync, readSync, writeSync } from "node:fs";

/** How often a running process's logs are checked against the cap. */
export const LOG_CAP_INTERVAL_MS = 1_000;

/** Written where the middle of an over-long log was dropped. */
const MARKER = Buffer.from("\n[runtara: log over its size limit; the middle was dropped here]\n");

/** Default cap of each of a run's stdout.log and stderr.log. */
export const DEFAULT_MAX_LOG_BYTES = 16 * 1024 * 1024;

/** The smallest cap: room for a head, the marker and a tail longer than the stderr tail reported. */
export const MIN_LOG_BYTES = 1024 * 1024;

/**
 * Keeps a log the process writes itself (through our O_APPEND descriptor `fd`) within
 * `maxBytes`: when it is longer, the first half stays, then a marker, then its last bytes,
 * moved down in place. The process keeps writing at the (new) end. In place rather than
 * through a pipe we read: a pipe's reader dies with the environment, and the workflow would
 * then get SIGPIPE — a restart must never kill a workflow. The cost: between checks the file
 * can grow past the cap (RLIMIT_FSIZE bounds that), and what the process writes during the
 * moment of the move is lost. Returns how byte offsets of the old file map into the new one,
 * or undefined when the file was within the cap.
 */
export function capLogFile(fd: number, maxBytes: number): ((offset: number) => number) | undefined {
  if (fstatSync(fd).size <= maxBytes) return undefined;
  // A descriptor of our own without O_APPEND: Linux appends every pwrite on an O_APPEND one.
  // Through /proc/self/fd it is the same file even if the path was replaced meanwhile.
  const rw = openSync(`/proc/self/fd/${fd}`, constants.O_RDWR);
  try {
    const size = fstatSync(rw).size;
    const head = Math.floor(maxBytes / 2);
    const tail = Buffer.alloc(maxBytes - head - MARKER.length);
    const tailFrom = size - tail.length;
    let got = 0;
    while (got < tail.length) {
      const n = readSync(rw, tail, got, tail.length - got, tailFrom + got);
      if (n === 0) break;
      got += n;
    }
    writeAll(rw, MARKER, head);
    writeAll(rw, tail.subarray(0, got), head + MARKER.length);
    ftruncateSync(rw, head + MARKER.length + got);
    return (offset) => (offset <= head ? offset : head + MARKER.length + Math.max(0, offset - tailFrom));
  } finally {
    closeSync(rw);
  }
}

function writeAll(fd: number, buf: Buffer, position: number): void {
  for (let done = 0; done < buf.length; ) done += writeSync(fd, buf, done, buf.length - done, position + done);
}
