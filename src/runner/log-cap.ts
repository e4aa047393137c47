import { closeSync, constants, fstatSync, ftruncateSync, openSync, readSync, writeSync } from "node:fs";

/** How often a running process's logs are checked against the cap. */
export const LOG_CAP_INTERVAL_MS = 1_000;

/**
 * Written where the middle of an over-long log was dropped. It states how many bytes went, so
 * a follower that had read past the cut can find where it stands in the shortened file.
 */
const marker = (dropped: number) => Buffer.from(`\n[runtara: log over its size limit; ${dropped} bytes of the middle were dropped here]\n`);
const MARKER_PATTERN = /^\n\[runtara: log over its size limit; (\d+) bytes of the middle were dropped here\]\n/;
/** Longest marker (the dropped count has at most 16 digits). */
export const MARKER_MAX_BYTES = marker(10 ** 15).length;

/** Where a log capped at `maxBytes` holds its marker (right after the head it keeps). */
export const markerOffset = (maxBytes: number) => Math.floor(maxBytes / 2);

/**
 * Where a reader that had read up to `offset` of the file before it was capped continues in
 * the capped file (`bytesAtMarker` read from markerOffset): at the same byte when it had not
 * passed the head, at the marker when it was in the dropped middle, else where its byte moved.
 * Undefined when no marker is there. A reader that slept through two caps lands near, not on,
 * its byte.
 */
export function offsetAfterCap(offset: number, maxBytes: number, bytesAtMarker: Uint8Array): number | undefined {
  const head = markerOffset(maxBytes);
  const m = MARKER_PATTERN.exec(Buffer.from(bytesAtMarker).toString("latin1"));
  if (m === null) return undefined;
  if (offset <= head) return offset;
  return Math.max(head, offset - Number(m[1]) + m[0].length);
}

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
 * can grow past the cap (RLIMIT_FSIZE bounds that), and a write landing in the instant between
 * the last size check and the truncate is lost. Returns how byte offsets of the old file map into the new one,
 * or undefined when the file was within the cap.
 */
export function capLogFile(fd: number, maxBytes: number): ((offset: number) => number) | undefined {
  if (fstatSync(fd).size <= maxBytes) return undefined;
  // A descriptor of our own without O_APPEND: Linux appends every pwrite on an O_APPEND one.
  // Through /proc/self/fd it is the same file even if the path was replaced meanwhile.
  const rw = openSync(`/proc/self/fd/${fd}`, constants.O_RDWR);
  try {
    const size = fstatSync(rw).size;
    const head = markerOffset(maxBytes);
    // The marker's length depends on the count it states, which depends on the tail's length.
    let cut = marker(size - maxBytes);
    while (marker(size - (maxBytes - cut.length)).length !== cut.length) cut = marker(size - (maxBytes - cut.length));
    const tail = Buffer.alloc(maxBytes - head - cut.length);
    const tailFrom = size - tail.length;
    cut = marker(tailFrom - head);
    let got = 0;
    while (got < tail.length) {
      const n = readSync(rw, tail, got, tail.length - got, tailFrom + got);
      if (n === 0) break;
      got += n;
    }
    writeAll(rw, cut, head);
    writeAll(rw, tail.subarray(0, got), head + cut.length);
    // What the process appended while we moved the tail goes after it too; the truncate then
    // follows the last size check by microseconds instead of by the whole move.
    let end = head + cut.length + got;
    // Bounded: a process outwriting the copy loses what lands past the last round.
    for (let read = tailFrom + got, round = 0; round < 16; round++) {
      const now = fstatSync(rw).size;
      if (now <= read) break;
      const grown = Buffer.alloc(Math.min(now - read, tail.length));
      const n = readSync(rw, grown, 0, grown.length, read);
      if (n === 0) break;
      writeAll(rw, grown.subarray(0, n), end);
      read += n;
      end += n;
    }
    ftruncateSync(rw, end);
    return (offset) => (offset <= head ? offset : head + cut.length + Math.max(0, offset - tailFrom));
  } finally {
    closeSync(rw);
  }
}

function writeAll(fd: number, buf: Buffer, position: number): void {
  for (let done = 0; done < buf.length; ) done += writeSync(fd, buf, done, buf.length - done, position + done);
}
