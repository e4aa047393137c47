import { rmSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";

/**
 * Runs `fn` with a fresh temporary directory that is removed afterwards, also when Ctrl-C
 * ends the command meanwhile (then with exit code 130, as the shell expects).
 */
export async function withTempDir<T>(prefix: string, fn: (dir: string) => Promise<T>): Promise<T> {
  const dir = await mkdtemp(path.join(tmpdir(), prefix));
  const interrupted = () => {
    rmSync(dir, { recursive: true, force: true });
    process.stderr.write("\n");
    process.exit(130);
  };
  process.once("SIGINT", interrupted);
  try {
    return await fn(dir);
  } finally {
    process.off("SIGINT", interrupted);
    await rm(dir, { recursive: true, force: true });
  }
}
