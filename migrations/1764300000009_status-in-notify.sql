-- Up Migration

-- The new status travels with the hint ("<instance id> <status>"): a supervisor that only
-- waits for a terminal status no longer reads the row at every change (at Register it did).
-- Listeners still treat it as a hint; a payload without a status means "read the table".
CREATE OR REPLACE FUNCTION runtara_notify_instance() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_notify('runtara_instance', NEW.instance_id || ' ' || NEW.status);
  IF NEW.status = 'suspended' AND NEW.sleep_until IS NOT NULL THEN
    PERFORM pg_notify('runtara_sleep', NEW.instance_id || ' ' || (extract(epoch FROM NEW.sleep_until) * 1000)::bigint);
  END IF;
  RETURN NULL;
END $$;

-- Down Migration

CREATE OR REPLACE FUNCTION runtara_notify_instance() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_notify('runtara_instance', NEW.instance_id);
  IF NEW.status = 'suspended' AND NEW.sleep_until IS NOT NULL THEN
    PERFORM pg_notify('runtara_sleep', NEW.instance_id || ' ' || (extract(epoch FROM NEW.sleep_until) * 1000)::bigint);
  END IF;
  RETURN NULL;
END $$;
