-- Up Migration

-- SendCustomSignal's statement as a function, for two reasons:
-- - The cap: the statement counted the instance's custom signals in its own snapshot, taken
--   before it waited for the instance's row lock, so sends racing at the cap all read the same
--   count and each stored (20 sends at once under a cap of 2 stored 20). Here the row is
--   locked first and the count is a later statement with a fresh snapshot: it sees every send
--   that held the lock before this one (they committed before letting it go).
-- - The plan: slonik sends every statement unnamed, so PostgreSQL planned it on every call
--   (0.3 ms, about as long as running it); PL/pgSQL keeps its statements' plans for the session.
-- What it does is otherwise unchanged: 'inactive' when the tenant has no such instance in one of
-- p_statuses; 'full' when it holds p_max_signals unacknowledged custom signals already (a
-- replacement of one of them is refused then too); else the signal is stored, replacing one of
-- the same wait point, with its time taken after the lock, so signals of one instance commit in
-- the order of their times (a watch's cursor relies on it).
CREATE FUNCTION runtara_store_custom_signal(
  p_tenant_id text, p_instance_id text, p_checkpoint_id text, p_payload bytea, p_max_signals integer, p_statuses instance_status[]
) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
  PERFORM 1 FROM instances
  WHERE instance_id = p_instance_id AND tenant_id = p_tenant_id AND status = ANY (p_statuses)
  FOR NO KEY UPDATE;
  IF NOT FOUND THEN
    RETURN 'inactive';
  END IF;
  IF (SELECT count(*) FROM custom_signals WHERE instance_id = p_instance_id) >= p_max_signals THEN
    RETURN 'full';
  END IF;
  INSERT INTO custom_signals (instance_id, checkpoint_id, payload, created_at)
  VALUES (p_instance_id, p_checkpoint_id, p_payload, clock_timestamp())
  ON CONFLICT (instance_id, checkpoint_id) DO UPDATE SET payload = EXCLUDED.payload, created_at = EXCLUDED.created_at;
  RETURN 'stored';
END $$;

-- Down Migration

DROP FUNCTION runtara_store_custom_signal(text, text, text, bytea, integer, instance_status[]);
