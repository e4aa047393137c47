/**
 * Where a build's result goes. Checked before building: a regular file or nothing, not the
 * workflow itself (also through a link), in a directory that exists. Written beside it under a
 * temporary name and renamed over it: --out is never half-written, never removed by a failed
 * write, and never written through into a device or the source.
 */
import { randomBytes } from "node:crypto";
import { constants } from "node:fs";
import { chmod, copyFile, rename, rm, stat } from "node:fs/promises";
import path from "node:path";
import { CommandFailed, UsageError } from "./failures.js";
import { cleanOnInterrupt } from "./temp-dir.js";

export async function checkBuildOutput(out: string, entry: string): Promise<void> {
  if (out === "" || out.endsWith("/")) throw new UsageError(`--out must name a file, got ${JSON.stringify(out)}`);
  const dir = path.dirname(path.resolve(out));
  const dirStat = await stat(dir).catch(() => undefined);
  if (!dirStat?.isDirectory()) throw new UsageError(`--out ${out}: there is no directory ${dir}`);
  const existing = await stat(out).catch(() => undefined);
  if (existing === undefined) return;
  if (!existing.isFile()) throw new UsageError(`--out ${out} is not a regular file`);
  const source = await stat(entry).catch(() => undefined);
  if (source && source.dev === existing.dev && source.ino === existing.ino) throw new UsageError(`${out} is the workflow file itself; name another --out`);
}

/** Puts `from` at `out` with `mode`, replacing whatever file was there in one rename. */
export async function publishBuildOutput(from: string, out: string, mode: number): Promise<void> {
  const partial = path.join(path.dirname(path.resolve(out)), `.${path.basename(out)}.runtara-${randomBytes(4).toString("hex")}`);
  const release = cleanOnInterrupt(partial);
  try {
    await copyFile(from, partial, constants.COPYFILE_EXCL);
    await chmod(partial, mode);
    await rename(partial, out);
  } catch (e) {
    await rm(partial, { force: true });
    throw new CommandFailed(`cannot write ${out}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  } finally {
    release();
  }
}
