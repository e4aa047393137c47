import { closeSync, constants, fstatSync, ftruncateSync, openSync, readSync, writeSync } from "node:fs";

/** How often a running process's logs are checked against the cap. */
export const LOG_CAP_INTERVAL_MS = 1_000;

/**
 * Written where the middle of an over-long log was dropped: how many bytes went in this cut
 * (for people), and the shift (for followers): how far every byte after the marker now sits
 * before where it would be had nothing ever been dropped. Shifts only grow, so a follower that
 * knew the previous shift can tell that a cut happened and where its next byte went.
 */
const marker = (dropped: number, shift: number) =>
  Buffer.from(`\n[runtara: log over its size limit; ${dropped} bytes of the middle were dropped here; shift ${shift}]\n`);
const MARKER_PATTERN = /^\n\[runtara: log over its size limit; \d+ bytes of the middle were dropped here; shift (\d+)\]\n/;
/** Longest marker (counts of at most 16 digits). */
export const MARKER_MAX_BYTES = marker(10 ** 15, 10 ** 15).length;

/** Where a log capped at `maxBytes` holds its marker (right after the head it keeps). */
export const markerOffset = (maxBytes: number) => Math.floor(maxBytes / 2);

/** At the marker's place while a cut moves bytes: what follows is not to be read yet. */
const CUTTING = Buffer.from("\n[runtara: log over its size limit; cutting]\n");

/**
 * The marker at the start of `bytes` (read from markerOffset): its length and shift, "cutting"
 * while a cut is under way, undefined when none is there.
 */
export function readMarker(bytes: Uint8Array): { length: number; shift: number } | "cutting" | undefined {
  if (Buffer.from(bytes).subarray(0, CUTTING.length).equals(CUTTING)) return "cutting";
  const m = MARKER_PATTERN.exec(Buffer.from(bytes).toString("latin1"));
  return m ? { length: m[0].length, shift: Number(m[1]) } : undefined;
}

/**
 * Where a reader at `offset` of the file as it was when the shift was `knownShift` continues
 * after a cut (the marker now at markerOffset says `cut`): at the same byte when it had not
 * passed the head, at the marker when its next byte was dropped, else where that byte moved.
 */
export function offsetAfterCap(offset: number, maxBytes: number, knownShift: number, cut: { length: number; shift: number }): number {
  const head = markerOffset(maxBytes);
  if (offset <= head) return offset;
  const moved = offset + knownShift - cut.shift;
  return moved < head + cut.length ? head : moved;
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
    // The shift so far is in the marker of the previous cut, if there was one.
    const previous = Buffer.alloc(MARKER_MAX_BYTES);
    const found = readMarker(previous.subarray(0, readSync(rw, previous, 0, previous.length, head)));
    const shiftBefore = typeof found === "object" ? found.shift : 0;
    // The marker's length depends on the counts it states, which depend on the tail's length.
    const cutFor = (length: number) => {
      const tailFrom = size - (maxBytes - head - length);
      return marker(tailFrom - head, shiftBefore + tailFrom - head - length);
    };
    let cut = cutFor(MARKER_MAX_BYTES);
    for (let sized = MARKER_MAX_BYTES; cut.length !== sized; cut = cutFor(cut.length)) sized = cut.length;
    const tail = Buffer.alloc(maxBytes - head - cut.length);
    const tailFrom = size - tail.length;
    let got = 0;
    while (got < tail.length) {
      const n = readSync(rw, tail, got, tail.length - got, tailFrom + got);
      if (n === 0) break;
      got += n;
    }
    // Readers see "cutting" while bytes move, and the new marker only once they are in place.
    writeAll(rw, CUTTING, head);
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
    writeAll(rw, cut, head);
    return (offset) => (offset <= head ? offset : head + cut.length + Math.max(0, offset - tailFrom));
  } finally {
    closeSync(rw);
  }
}

function writeAll(fd: number, buf: Buffer, position: number): void {
  for (let done = 0; done < buf.length; ) done += writeSync(fd, buf, done, buf.length - done, position + done);
}
