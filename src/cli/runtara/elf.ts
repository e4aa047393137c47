/**
 * Whether an executable needs a dynamic loader (an ELF PT_INTERP program header): such a
 * binary cannot run as /binary in the OCI runner's otherwise empty root.
 */
import type { FileHandle } from "node:fs/promises";

const PT_INTERP = 3;

export async function isDynamicElf(handle: FileHandle): Promise<boolean> {
  const header = Buffer.alloc(64);
  const { bytesRead } = await handle.read(header, 0, 64, 0);
  // 64-bit little-endian ELF only (what Linux x86-64 and arm64 run); anything else is not judged.
  if (bytesRead < 64 || header.readUInt32BE(0) !== 0x7f454c46 || header[4] !== 2 || header[5] !== 1) return false;
  const phoff = Number(header.readBigUInt64LE(0x20));
  const phentsize = header.readUInt16LE(0x36);
  const phnum = header.readUInt16LE(0x38);
  if (phentsize < 4 || phnum === 0 || phnum > 4096) return false;
  const table = Buffer.alloc(phentsize * phnum);
  const read = await handle.read(table, 0, table.length, phoff);
  for (let i = 0; (i + 1) * phentsize <= read.bytesRead; i++) {
    if (table.readUInt32LE(i * phentsize) === PT_INTERP) return true;
  }
  return false;
}
