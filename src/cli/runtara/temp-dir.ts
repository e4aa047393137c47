import { rmSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";

/** Paths removed if Ctrl-C ends the command: one handler for all, so nested users are all cleaned. */
const removeOnInterrupt = new Set<string>();

function interrupted(): void {
  for (const p of removeOnInterrupt) rmSync(p, { recursive: true, force: true });
  process.stderr.write("\n");
  process.exit(130);
}

/** Removes `file` (or directory) if Ctrl-C ends the command before the returned function is called. */
export function cleanOnInterrupt(file: string): () => void {
  if (removeOnInterrupt.size === 0) process.on("SIGINT", interrupted);
  removeOnInterrupt.add(file);
  return () => {
    removeOnInterrupt.delete(file);
    if (removeOnInterrupt.size === 0) process.off("SIGINT", interrupted);
  };
}

/**
 * Runs `fn` with a fresh temporary directory that is removed afterwards, also when Ctrl-C
 * ends the command meanwhile (then with exit code 130, as the shell expects).
 */
export async function withTempDir<T>(prefix: string, fn: (dir: string) => Promise<T>): Promise<T> {
  const dir = await mkdtemp(path.join(tmpdir(), prefix));
  const release = cleanOnInterrupt(dir);
  try {
    return await fn(dir);
  } finally {
    release();
    await rm(dir, { recursive: true, force: true });
  }
}
