-- Up Migration

-- Every launch is a run with its own id: only that run's exit settles the instance, and a
-- relaunch waits until the previous run's row is gone (src/lifecycle/transitions.ts).
ALTER TABLE running_processes ADD COLUMN run_id uuid NOT NULL DEFAULT gen_random_uuid();
-- /proc/sys/kernel/random/boot_id of the host at launch: after a reboot, a pid and start time
-- can match a process that is not ours, so rows of another boot are never adopted.
ALTER TABLE running_processes ADD COLUMN boot_id text NOT NULL DEFAULT '';

-- When the instance last became PENDING (a launch under way). A PENDING row older than the
-- launch timeout with no running process was claimed by an environment that died before it
-- launched; the sweep relaunches it.
ALTER TABLE instances ADD COLUMN pending_since timestamptz;
-- The replica that made it PENDING: after a restart it relaunches its own at once.
ALTER TABLE instances ADD COLUMN claimed_by text;
UPDATE instances SET pending_since = created_at WHERE status = 'pending';
CREATE INDEX instances_pending_since ON instances (pending_since) WHERE status = 'pending';

-- Down Migration

DROP INDEX instances_pending_since;
ALTER TABLE instances DROP COLUMN claimed_by;
ALTER TABLE instances DROP COLUMN pending_since;
ALTER TABLE running_processes DROP COLUMN boot_id;
ALTER TABLE running_processes DROP COLUMN run_id;
