-- Up Migration

-- A sleeper whose process is still recorded cannot be claimed, so the wake scheduler leaves it
-- out of its next wake time (it would spin on it otherwise). When that run's record goes (the
-- process exited and was settled), the sleeper's hint is sent again, so every replica's
-- scheduler re-arms for it at once instead of at its next reconcile.
CREATE FUNCTION runtara_notify_run_end() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  v_sleep_until timestamptz;
BEGIN
  SELECT sleep_until INTO v_sleep_until FROM instances
  WHERE instance_id = OLD.instance_id AND status = 'suspended' AND sleep_until IS NOT NULL;
  IF FOUND THEN
    PERFORM pg_notify('runtara_sleep', OLD.instance_id || ' ' || (extract(epoch FROM v_sleep_until) * 1000)::bigint);
  END IF;
  RETURN NULL;
END $$;

CREATE TRIGGER running_processes_end_notify
  AFTER DELETE ON running_processes
  FOR EACH ROW EXECUTE FUNCTION runtara_notify_run_end();

-- Down Migration

DROP TRIGGER running_processes_end_notify ON running_processes;
DROP FUNCTION runtara_notify_run_end();
