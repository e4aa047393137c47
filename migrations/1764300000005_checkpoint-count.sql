-- Up Migration

-- Checkpoints an instance has saved, kept with the row so the per-instance quota is checked
-- in SaveCheckpoint's own statement without counting the checkpoints table on every save.
ALTER TABLE instances ADD COLUMN checkpoint_count integer NOT NULL DEFAULT 0;
UPDATE instances i SET checkpoint_count = c.n
FROM (SELECT instance_id, count(*)::int AS n FROM checkpoints GROUP BY instance_id) c
WHERE c.instance_id = i.instance_id;

-- Down Migration

ALTER TABLE instances DROP COLUMN checkpoint_count;
