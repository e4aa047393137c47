import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { lutimes, mkdir, mkdtemp, readdir, rm, stat, symlink, utimes, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, afterEach, before, beforeEach, describe, it } from "node:test";
import { pino } from "pino";
import { ConfigError } from "../src/config.js";
import {
  cleanupDefaults,
  compileCleanupOptions,
  readCleanupOptions,
} from "../src/scheduler/cleanup-config.js";
import { DatabaseCleanup } from "../src/scheduler/cleanup-database.js";
import { ImageCleanup } from "../src/scheduler/cleanup-images.js";
import { RunDirCleanup } from "../src/scheduler/cleanup-runs.js";
import { tryAcquireGate } from "../src/scheduler/gate.js";
import { eventually, startEnvironment, stopTestPostgres, type TestEnvironment } from "./helpers.js";

const HOUR = 3_600_000;
const DAY = 24 * HOUR;
const logger = pino({ level: process.env.TEST_LOG_LEVEL ?? "silent" });

describe("cleanup configuration", () => {
  const load = (env: NodeJS.ProcessEnv) => compileCleanupOptions(readCleanupOptions(env));

  it("uses the reference defaults when nothing is set", () => {
    const o = load({});
    assert.deepEqual({ ...o }, { ...cleanupDefaults });
    assert.equal(o.runCleanupMaxAgeMs, 24 * HOUR);
    assert.equal(o.runCleanupIntervalMs, HOUR);
    assert.equal(o.dbCleanupEnabled, false);
    assert.equal(o.dbCleanupIntervalMs, 3_600_000);
    assert.equal(o.dbCleanupMaxAgeMs, 30 * DAY);
    assert.equal(o.dbCleanupBatchSize, 100);
    assert.equal(o.imageCleanupEnabled, false);
    assert.equal(o.imageCleanupIntervalMs, 21_600_000);
    assert.equal(o.imageCleanupMaxAgeMs, 7 * DAY);
    assert.equal(o.imageCleanupBatchSize, 50);
    assert.ok(Object.isFrozen(o));
    // Empty counts as unset, as in src/config.ts.
    assert.deepEqual({ ...load({ RUNTARA_DB_CLEANUP_ENABLED: "", RUNTARA_DB_CLEANUP_BATCH_SIZE: "" }) }, { ...cleanupDefaults });
  });

  it("reads every variable, converting seconds and days", () => {
    const o = load({
      RUNTARA_RUN_CLEANUP_MAX_AGE_SECS: "7200",
      RUNTARA_RUN_CLEANUP_INTERVAL_SECS: "60",
      RUNTARA_DB_CLEANUP_ENABLED: "true",
      RUNTARA_DB_CLEANUP_POLL_INTERVAL_SECS: "600",
      RUNTARA_DB_CLEANUP_MAX_AGE_DAYS: "90",
      RUNTARA_DB_CLEANUP_BATCH_SIZE: "500",
      RUNTARA_IMAGE_CLEANUP_ENABLED: "1",
      RUNTARA_IMAGE_CLEANUP_POLL_INTERVAL_SECS: "3600",
      RUNTARA_IMAGE_CLEANUP_MAX_AGE_DAYS: "14",
      RUNTARA_IMAGE_CLEANUP_BATCH_SIZE: "10",
    });
    assert.deepEqual(
      { ...o },
      {
        runCleanupMaxAgeMs: 2 * HOUR,
        runCleanupIntervalMs: 60_000,
        dbCleanupEnabled: true,
        dbCleanupIntervalMs: 600_000,
        dbCleanupMaxAgeMs: 90 * DAY,
        dbCleanupBatchSize: 500,
        imageCleanupEnabled: true,
        imageCleanupIntervalMs: HOUR,
        imageCleanupMaxAgeMs: 14 * DAY,
        imageCleanupBatchSize: 10,
      },
    );
    assert.equal(load({ RUNTARA_DB_CLEANUP_ENABLED: "0" }).dbCleanupEnabled, false);
    assert.equal(load({ RUNTARA_IMAGE_CLEANUP_ENABLED: "FALSE" }).imageCleanupEnabled, false);
  });

  const invalid: [string, string][] = [
    ["RUNTARA_DB_CLEANUP_ENABLED", "maybe"],
    ["RUNTARA_IMAGE_CLEANUP_ENABLED", "enabled"],
    ["RUNTARA_DB_CLEANUP_BATCH_SIZE", "0"],
    ["RUNTARA_DB_CLEANUP_BATCH_SIZE", "1e3"],
    ["RUNTARA_IMAGE_CLEANUP_BATCH_SIZE", "100000"],
    ["RUNTARA_IMAGE_CLEANUP_MAX_AGE_DAYS", "-1"],
    ["RUNTARA_DB_CLEANUP_MAX_AGE_DAYS", "0"],
    ["RUNTARA_DB_CLEANUP_MAX_AGE_DAYS", "30d"],
    ["RUNTARA_DB_CLEANUP_POLL_INTERVAL_SECS", "1.5"],
    // Beyond setTimeout's range (2^31-1 ms): would fire at once and loop.
    ["RUNTARA_IMAGE_CLEANUP_POLL_INTERVAL_SECS", "3000000"],
    ["RUNTARA_RUN_CLEANUP_MAX_AGE_SECS", "abc"],
    ["RUNTARA_RUN_CLEANUP_INTERVAL_SECS", "0"],
  ];
  for (const [name, value] of invalid) {
    it(`rejects ${name}=${value}, naming the variable`, () => {
      assert.throws(
        () => readCleanupOptions({ [name]: value }),
        (e: unknown) => e instanceof ConfigError && e.message.includes(name) && e.message.includes(value),
      );
    });
  }

  it("validates options given programmatically, naming the option", () => {
    for (const [key, value] of [
      ["dbCleanupBatchSize", 0],
      ["imageCleanupMaxAgeMs", -1],
      ["runCleanupIntervalMs", 2 ** 31],
      ["dbCleanupEnabled", "yes"],
    ] as const) {
      assert.throws(
        () => compileCleanupOptions({ [key]: value } as never),
        (e: unknown) => e instanceof ConfigError && e.message.includes(key),
      );
    }
    assert.equal(compileCleanupOptions({ dbCleanupBatchSize: 7 }).dbCleanupBatchSize, 7);
  });
});

describe("cleanup workers", () => {
  let t: TestEnvironment;
  /** The workers' DATA_DIR (not the environment's own, so its workers never share a gate with these). */
  let dataDir: string;
  let outside: string;

  before(async () => {
    t = await startEnvironment();
  });
  after(async () => {
    await t.close();
    await stopTestPostgres();
  });
  beforeEach(async () => {
    dataDir = await mkdtemp(path.join(tmpdir(), "runtara-cleanup-"));
    outside = await mkdtemp(path.join(tmpdir(), "runtara-cleanup-outside-"));
    await t.query(`DELETE FROM instances`);
    await t.query(`DELETE FROM images`);
    await t.query(`DELETE FROM maintenance_gates`);
  });
  afterEach(async () => {
    await rm(dataDir, { recursive: true, force: true });
    await rm(outside, { recursive: true, force: true });
  });

  /** An instance row; `finishedAgoMs` null leaves finished_at NULL. Created long ago by default. */
  async function instance(
    instanceId: string,
    status: string,
    o: { tenantId?: string; finishedAgoMs?: number | null; imageId?: string | null } = {},
  ) {
    await t.query(
      `INSERT INTO instances (instance_id, tenant_id, status, image_id, created_at, finished_at)
       VALUES ($1, $2, $3, $4, now() - interval '400 days',
               CASE WHEN $5::float8 IS NULL THEN NULL ELSE now() - $5::float8 * interval '1 millisecond' END)`,
      [instanceId, o.tenantId ?? "tenant-a", status, o.imageId ?? null, o.finishedAgoMs ?? null],
    );
  }

  /** One row in every child table of `instanceId`. */
  async function children(instanceId: string) {
    await t.query(`INSERT INTO checkpoints (instance_id, checkpoint_id, state) VALUES ($1, 'cp-1', '\\x00'), ($1, 'cp-2', '\\x01')`, [instanceId]);
    await t.query(`INSERT INTO instance_events (instance_id, event_type) VALUES ($1, 'started'), ($1, 'completed')`, [instanceId]);
    await t.query(`INSERT INTO pending_signals (instance_id, signal_type) VALUES ($1, 'cancel')`, [instanceId]);
    await t.query(`INSERT INTO custom_signals (instance_id, checkpoint_id) VALUES ($1, 'wait-1')`, [instanceId]);
    await t.query(
      `INSERT INTO running_processes (instance_id, runner, container_id, pid, process_start_time, replica_id, host, run_dir, deadline)
       VALUES ($1, 'native', '', 1, 1, 'r', 'h', '/nowhere', now())`,
      [instanceId],
    );
  }

  async function childCounts(ids: string[]) {
    const [row] = await t.query<Record<string, number>>(
      `SELECT (SELECT count(*)::int FROM checkpoints WHERE instance_id = ANY($1)) AS checkpoints,
              (SELECT count(*)::int FROM instance_events WHERE instance_id = ANY($1)) AS events,
              (SELECT count(*)::int FROM pending_signals WHERE instance_id = ANY($1)) AS signals,
              (SELECT count(*)::int FROM custom_signals WHERE instance_id = ANY($1)) AS custom_signals,
              (SELECT count(*)::int FROM running_processes WHERE instance_id = ANY($1)) AS processes`,
      [ids],
    );
    return row;
  }

  async function instanceIds(): Promise<string[]> {
    return (await t.query<{ instance_id: string }>(`SELECT instance_id FROM instances ORDER BY instance_id`)).map((r) => r.instance_id);
  }

  /** A run directory with a file, its mtime set `ageMs` in the past. */
  async function runDir(tenantId: string, instanceId: string, ageMs: number): Promise<string> {
    const dir = path.join(dataDir, "runs", tenantId, instanceId);
    await mkdir(dir, { recursive: true });
    await writeFile(path.join(dir, "stderr.log"), "log\n");
    await age(dir, ageMs);
    return dir;
  }

  async function age(p: string, ageMs: number) {
    const when = new Date(Date.now() - ageMs);
    await utimes(p, when, when);
  }

  async function exists(p: string): Promise<boolean> {
    return stat(p).then(
      () => true,
      () => false,
    );
  }

  const dbOptions = { enabled: true, intervalMs: HOUR, maxAgeMs: 30 * DAY, batchSize: 100 };

  describe("database retention", () => {
    it("deletes old terminal instances with their children and run dirs; keeps recent and live ones", async () => {
      const old = 35 * DAY;
      await instance("old-completed", "completed", { finishedAgoMs: old });
      await instance("old-failed", "failed", { finishedAgoMs: old });
      await instance("old-cancelled", "cancelled", { finishedAgoMs: old, tenantId: "tenant-b" });
      await instance("recent-completed", "completed", { finishedAgoMs: 29 * DAY });
      await instance("old-running", "running");
      await instance("old-suspended", "suspended");
      await instance("old-pending", "pending");
      // A live instance with a stale finished_at (e.g. resumed after a failure) is still live.
      await instance("old-running-stale-finish", "running", { finishedAgoMs: old });
      for (const id of ["old-completed", "old-failed", "old-cancelled", "recent-completed", "old-suspended"]) await children(id);
      const deletedDir = await runDir("tenant-a", "old-completed", 0);
      const deletedDirB = await runDir("tenant-b", "old-cancelled", 0);
      const keptDir = await runDir("tenant-a", "recent-completed", 0);

      const worker = new DatabaseCleanup(t.env.db, dataDir, logger, dbOptions);
      const result = await worker.runOnce();

      assert.deepEqual(result, { ran: true, instancesDeleted: 3, batches: 1, runDirsRemoved: 2, errors: 0 });
      assert.deepEqual(await instanceIds(), [
        "old-pending",
        "old-running",
        "old-running-stale-finish",
        "old-suspended",
        "recent-completed",
      ]);
      assert.deepEqual(await childCounts(["old-completed", "old-failed", "old-cancelled"]), {
        checkpoints: 0,
        events: 0,
        signals: 0,
        custom_signals: 0,
        processes: 0,
      });
      assert.deepEqual(await childCounts(["recent-completed"]), { checkpoints: 2, events: 2, signals: 1, custom_signals: 1, processes: 1 });
      assert.deepEqual(await childCounts(["old-suspended"]), { checkpoints: 2, events: 2, signals: 1, custom_signals: 1, processes: 1 });
      assert.equal(await exists(deletedDir), false);
      assert.equal(await exists(deletedDirB), false);
      assert.equal(await exists(keptDir), true);
    });

    it("works through more instances than the batch size, oldest first, until a short batch", async () => {
      await t.query(
        `INSERT INTO instances (instance_id, tenant_id, status, finished_at)
         SELECT 'bulk-' || lpad(g::text, 4, '0'), 'tenant-bulk', 'completed', now() - interval '40 days' - g * interval '1 minute'
         FROM generate_series(1, 250) g`,
      );
      await instance("bulk-recent", "failed", { finishedAgoMs: DAY });
      const worker = new DatabaseCleanup(t.env.db, dataDir, logger, { ...dbOptions, batchSize: 100 });
      const result = await worker.runOnce();
      assert.deepEqual(result, { ran: true, instancesDeleted: 250, batches: 3, runDirsRemoved: 0, errors: 0 });
      assert.deepEqual(await instanceIds(), ["bulk-recent"]);
    });

    it("stop() aborts a pass between batches and waits for it", async () => {
      await t.query(
        `INSERT INTO instances (instance_id, tenant_id, status, finished_at)
         SELECT 'abort-' || g, 'tenant-bulk', 'completed', now() - interval '40 days' FROM generate_series(1, 20) g`,
      );
      const worker = new DatabaseCleanup(t.env.db, dataDir, logger, { ...dbOptions, batchSize: 1 });
      let settled = false;
      const pass = worker.runOnce().then((r) => {
        settled = true;
        return r;
      });
      await worker.stop();
      assert.equal(settled, true, "stop() resolved only after the pass");
      const result = await pass;
      assert.equal(result.errors, 0);
      assert.ok(result.instancesDeleted < 20, `stopped early (deleted ${result.instancesDeleted})`);
      assert.equal((await instanceIds()).length, 20 - result.instancesDeleted);
    });

    it("does nothing when disabled", async () => {
      await instance("old-completed", "completed", { finishedAgoMs: 365 * DAY });
      const worker = new DatabaseCleanup(t.env.db, dataDir, logger, { ...dbOptions, enabled: false });
      worker.start();
      assert.deepEqual(await worker.runOnce(), { ran: false, instancesDeleted: 0, batches: 0, runDirsRemoved: 0, errors: 0 });
      await worker.stop();
      assert.deepEqual(await instanceIds(), ["old-completed"]);
      assert.equal((await t.query(`SELECT * FROM maintenance_gates`)).length, 0, "a disabled worker does not even take the gate");
    });
  });

  describe("cadence gate", () => {
    it("lets exactly one of many concurrent callers through per interval", async () => {
      const results = await Promise.all(Array.from({ length: 10 }, () => tryAcquireGate(t.env.db, "test-gate", 300)));
      assert.equal(results.filter(Boolean).length, 1);
      assert.equal(await tryAcquireGate(t.env.db, "test-gate", 300), false);
      assert.equal(await tryAcquireGate(t.env.db, "other-gate", 300), true, "gates are independent");
      await new Promise((r) => setTimeout(r, 350));
      const again = await Promise.all(Array.from({ length: 5 }, () => tryAcquireGate(t.env.db, "test-gate", 300)));
      assert.equal(again.filter(Boolean).length, 1, "open again once the interval has passed");
    });

    it("two workers (two replicas) within one interval: only one does the work", async () => {
      await instance("old-completed", "completed", { finishedAgoMs: 40 * DAY });
      const a = new DatabaseCleanup(t.env.db, dataDir, logger, dbOptions);
      const b = new DatabaseCleanup(t.env.db, dataDir, logger, dbOptions);
      const [ra, rb] = await Promise.all([a.runOnce(), b.runOnce()]);
      assert.deepEqual([ra.ran, rb.ran].sort(), [false, true]);
      assert.equal(ra.instancesDeleted + rb.instancesDeleted, 1);
      // Later in the same interval: new expired rows wait for the next interval.
      await instance("old-failed", "failed", { finishedAgoMs: 40 * DAY });
      assert.equal((await a.runOnce()).ran, false);
      assert.equal((await b.runOnce()).ran, false);
      assert.deepEqual(await instanceIds(), ["old-failed"]);

      await runDir("tenant-a", "gone", 2 * DAY);
      const runsA = new RunDirCleanup(t.env.db, dataDir, logger, { maxAgeMs: DAY, intervalMs: HOUR });
      const runsB = new RunDirCleanup(t.env.db, dataDir, logger, { maxAgeMs: DAY, intervalMs: HOUR });
      const [r1, r2] = await Promise.all([runsA.runOnce(), runsB.runOnce()]);
      assert.deepEqual([r1.ran, r2.ran].sort(), [false, true]);
      assert.equal(r1.removed + r2.removed, 1);
    });
  });

  describe("run directories", () => {
    it("removes old dirs of finished or unknown instances, keeps live, recent and recently finished ones, never follows symlinks", async () => {
      const old = 2 * DAY;
      await instance("done-old", "completed", { finishedAgoMs: 3 * DAY });
      await instance("failed-old", "failed", { finishedAgoMs: 3 * DAY, tenantId: "tenant-b" });
      await instance("suspended-old", "suspended");
      await instance("running-old", "running");
      await instance("pending-old", "pending");
      await instance("done-recently", "completed", { finishedAgoMs: HOUR });
      await instance("done-new-dir", "completed", { finishedAgoMs: 3 * DAY });

      // Targets outside DATA_DIR/runs that symlinks point at: they must survive.
      const precious = path.join(outside, "precious");
      await mkdir(precious);
      await writeFile(path.join(precious, "keep.txt"), "keep");
      await age(precious, old);

      const doneOld = await runDir("tenant-a", "done-old", 0);
      // A link inside a run directory that is removed: unlinked, not descended into.
      await symlink(precious, path.join(doneOld, "escape"));
      await age(doneOld, old);
      const gone = [doneOld, await runDir("tenant-a", "no-row-old", old), await runDir("tenant-b", "failed-old", old)];
      const kept = [
        await runDir("tenant-a", "suspended-old", old),
        await runDir("tenant-a", "running-old", old),
        await runDir("tenant-a", "pending-old", old),
        await runDir("tenant-a", "done-recently", old),
        await runDir("tenant-a", "done-new-dir", 0),
        await runDir("tenant-a", "no-row-new", 0),
      ];
      // Links planted in runs/ (as a tenant) and in a tenant dir (as an instance), made to look old.
      await symlink(outside, path.join(dataDir, "runs", "evil-tenant"));
      await lutimes(path.join(dataDir, "runs", "evil-tenant"), new Date(Date.now() - old), new Date(Date.now() - old));
      await symlink(precious, path.join(dataDir, "runs", "tenant-a", "evil-instance"));
      await lutimes(path.join(dataDir, "runs", "tenant-a", "evil-instance"), new Date(Date.now() - old), new Date(Date.now() - old));
      // A stray file is not a run directory.
      await writeFile(path.join(dataDir, "runs", "tenant-a", "notes.txt"), "x");
      await age(path.join(dataDir, "runs", "tenant-a"), old);
      await age(path.join(dataDir, "runs", "tenant-b"), old);
      // A fresh, empty tenant dir may be in use by a launch about to create its run dir.
      await mkdir(path.join(dataDir, "runs", "tenant-new"));

      const worker = new RunDirCleanup(t.env.db, dataDir, logger, { maxAgeMs: DAY, intervalMs: HOUR });
      const result = await worker.runOnce();

      assert.deepEqual(result, { ran: true, candidates: 7, removed: 3, kept: 4, tenantDirsRemoved: 1, errors: 0 });
      for (const dir of gone) assert.equal(await exists(dir), false, `${dir} should be removed`);
      for (const dir of kept) assert.equal(await exists(path.join(dir, "stderr.log")), true, `${dir} should be kept`);
      assert.equal(await exists(path.join(dataDir, "runs", "tenant-b")), false, "an emptied old tenant dir goes");
      assert.equal(await exists(path.join(dataDir, "runs", "tenant-new")), true, "a fresh empty tenant dir stays");
      assert.equal(await exists(path.join(precious, "keep.txt")), true, "symlink targets survive");
      assert.deepEqual((await readdir(outside)).sort(), ["precious"]);
      assert.equal(await exists(path.join(dataDir, "runs", "evil-tenant")), true, "links are left alone");
      assert.equal(await exists(path.join(dataDir, "runs", "tenant-a", "evil-instance")), true);
      assert.equal(await exists(path.join(dataDir, "runs", "tenant-a", "notes.txt")), true);
      assert.deepEqual(await instanceIds(), [
        "done-new-dir",
        "done-old",
        "done-recently",
        "failed-old",
        "pending-old",
        "running-old",
        "suspended-old",
      ], "run cleanup never deletes rows");
    });

    it("a missing runs directory is not an error", async () => {
      const worker = new RunDirCleanup(t.env.db, dataDir, logger, { maxAgeMs: DAY, intervalMs: HOUR });
      assert.deepEqual(await worker.runOnce(), { ran: true, candidates: 0, removed: 0, kept: 0, tenantDirsRemoved: 0, errors: 0 });
    });

    it("start() runs passes on its own timer; start is idempotent and stop() leaves nothing running", async () => {
      const dir = await runDir("tenant-a", "timer-old", 2 * DAY);
      const worker = new RunDirCleanup(t.env.db, dataDir, logger, { maxAgeMs: DAY, intervalMs: 200 });
      worker.start();
      worker.start();
      assert.ok(await eventually(async () => !(await exists(dir)), 5_000), "the first pass runs within the interval");
      await worker.stop();
      await worker.stop();
      // After stop no pass runs any more, even past several intervals.
      const later = await runDir("tenant-a", "after-stop", 2 * DAY);
      await new Promise((r) => setTimeout(r, 600));
      assert.equal(await exists(later), true);
    });
  });

  describe("images", () => {
    const imageOptions = { enabled: true, intervalMs: HOUR, maxAgeMs: 7 * DAY, batchSize: 50, orphanGraceMs: 1_000 };

    async function image(name: string, createdAgoMs: number, lastUsedAgoMs: number | null): Promise<string> {
      const imageId = randomUUID();
      await t.query(
        `INSERT INTO images (image_id, tenant_id, name, version, runner_type, size_bytes, sha256, created_at, last_used_at)
         VALUES ($1, 'tenant-img', $2, 1, 'native', 4, repeat('a', 64), now() - $3::float8 * interval '1 millisecond',
                 CASE WHEN $4::float8 IS NULL THEN NULL ELSE now() - $4::float8 * interval '1 millisecond' END)`,
        [imageId, name, createdAgoMs, lastUsedAgoMs],
      );
      await imageDir(imageId);
      return imageId;
    }

    async function imageDir(name: string): Promise<string> {
      const dir = path.join(dataDir, "images", name);
      await mkdir(path.join(dir, "bundle", "rootfs"), { recursive: true });
      await writeFile(path.join(dir, "binary"), "bin!");
      return dir;
    }

    async function imageRows(): Promise<string[]> {
      return (await t.query<{ name: string }>(`SELECT name FROM images ORDER BY name`)).map((r) => r.name);
    }

    it("removes orphan dirs and unused images; keeps used, recent, young, staged and foreign entries", async () => {
      const old = 30 * DAY;
      // Orphans old enough to remove: created before the grace period.
      const orphan = await imageDir(randomUUID());
      const orphan2 = await imageDir(randomUUID());
      await new Promise((r) => setTimeout(r, 1_100));

      const neverUsed = await image("never-used", old, null);
      const usedLongAgo = await image("used-long-ago", old, old);
      const usedByFinished = await image("used-by-finished", old, old);
      const usedBySuspended = await image("used-by-suspended", old, old);
      const usedByRunning = await image("used-by-running", old, old);
      const usedRecently = await image("used-recently", old, DAY);
      const newlyRegistered = await image("newly-registered", HOUR, null);
      await instance("finished-user", "completed", { finishedAgoMs: old, imageId: usedByFinished });
      await instance("suspended-user", "suspended", { imageId: usedBySuspended });
      await instance("running-user", "running", { imageId: usedByRunning });

      // A young orphan (an upload between rename and insert): an old mtime does not fool the
      // check, rename() refreshes only the ctime.
      const young = await imageDir(randomUUID());
      await age(young, old);
      const staged = await imageDir(path.join(".staging", randomUUID()));
      await age(path.join(dataDir, "images", ".staging"), old);
      const foreign = await imageDir("not-a-uuid");
      const upperCase = await imageDir(randomUUID().toUpperCase());
      const linkName = path.join(dataDir, "images", randomUUID());
      await symlink(outside, linkName);
      await writeFile(path.join(outside, "keep.txt"), "keep");
      const fileName = path.join(dataDir, "images", randomUUID());
      await writeFile(fileName, "a file, not an image directory");

      const worker = new ImageCleanup(t.env.db, dataDir, logger, { ...imageOptions, batchSize: 2 });
      const result = await worker.runOnce();

      assert.deepEqual(result, { ran: true, orphanDirsRemoved: 2, imagesDeleted: 3, imageDirsRemoved: 3, batches: 2, errors: 0 });
      assert.deepEqual(await imageRows(), ["newly-registered", "used-by-running", "used-by-suspended", "used-recently"]);
      const dir = (id: string) => path.join(dataDir, "images", id);
      for (const gone of [orphan, orphan2, dir(neverUsed), dir(usedLongAgo), dir(usedByFinished)]) {
        assert.equal(await exists(gone), false, `${gone} should be removed`);
      }
      for (const kept of [dir(usedBySuspended), dir(usedByRunning), dir(usedRecently), dir(newlyRegistered), young, staged, foreign, upperCase]) {
        assert.equal(await exists(path.join(kept, "binary")), true, `${kept} should be kept`);
      }
      assert.equal(await exists(linkName), true);
      assert.equal(await exists(path.join(outside, "keep.txt")), true);
      assert.equal(await exists(fileName), true);
      // The finished instance keeps its history; only the reference is cleared.
      const [finished] = await t.query(`SELECT image_id, status FROM instances WHERE instance_id = 'finished-user'`);
      assert.deepEqual(finished, { image_id: null, status: "completed" });
      const [suspended] = await t.query(`SELECT image_id FROM instances WHERE instance_id = 'suspended-user'`);
      assert.equal(suspended!.image_id, usedBySuspended);
    });

    it("does nothing when disabled; a second replica within the interval does nothing", async () => {
      await image("never-used", 30 * DAY, null);
      const disabled = new ImageCleanup(t.env.db, dataDir, logger, { ...imageOptions, enabled: false });
      assert.equal((await disabled.runOnce()).ran, false);
      assert.deepEqual(await imageRows(), ["never-used"]);
      const a = new ImageCleanup(t.env.db, dataDir, logger, imageOptions);
      const b = new ImageCleanup(t.env.db, dataDir, logger, imageOptions);
      const results = await Promise.all([a.runOnce(), b.runOnce()]);
      assert.deepEqual(results.map((r) => r.ran).sort(), [false, true]);
      assert.equal(results[0]!.imagesDeleted + results[1]!.imagesDeleted, 1);
      assert.deepEqual(await imageRows(), []);
    });
  });
});
