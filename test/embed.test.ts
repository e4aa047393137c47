import assert from "node:assert/strict";
import { chmod, mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { after, it } from "node:test";
import { execa } from "execa";
import { buildFixtures } from "./fixtures/build.js";
import { freshDatabase, stopTestPostgres } from "./helpers.js";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
after(stopTestPostgres);

it("embeddable runtime: start, use and stop inside another program leaves no handle open", async () => {
  const db = await freshDatabase();
  const dataDir = await mkdtemp(path.join(tmpdir(), "runtara-embed-"));
  await chmod(dataDir, 0o755);
  try {
    const fixture = (await buildFixtures()).workflow;
    const res = await execa(process.execPath, ["--import", "tsx", path.join(root, "test/scripts/embed-lifecycle.ts"), db.url, dataDir, fixture], {
      cwd: root,
      reject: false,
      // The script never calls process.exit: it must end by itself once stop() resolves.
      timeout: 60_000,
    });
    assert.equal(res.timedOut, false, "the program did not exit by itself");
    assert.equal(res.exitCode, 0, res.stderr);
    // Stopping the environment does not kill the workflows it launched.
    assert.match(res.stdout, /^stopped \S+ survivor-alive=true$/m);
  } finally {
    await db.drop();
    await rm(dataDir, { recursive: true, force: true });
  }
});
