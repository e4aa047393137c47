-- Up Migration

-- NOTIFY is a hint, the tables are the truth. Triggers send the hints from the writing
-- transaction, so listeners wake only after commit and no writer can forget one.

-- Every status change of an instance: WatchInstance streams and supervisors listen.
CREATE FUNCTION runtara_notify_instance() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_notify('runtara_instance', NEW.instance_id);
  IF NEW.status = 'suspended' AND NEW.sleep_until IS NOT NULL THEN
    PERFORM pg_notify('runtara_sleep', NEW.instance_id || ' ' || (extract(epoch FROM NEW.sleep_until) * 1000)::bigint);
  END IF;
  RETURN NULL;
END $$;

CREATE TRIGGER instances_status_notify
  AFTER UPDATE OF status, sleep_until ON instances
  FOR EACH ROW
  WHEN (OLD.status IS DISTINCT FROM NEW.status OR OLD.sleep_until IS DISTINCT FROM NEW.sleep_until)
  EXECUTE FUNCTION runtara_notify_instance();

-- A new or replaced signal: WatchSignals streams push it at once.
CREATE FUNCTION runtara_notify_signal() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_notify('runtara_signal', NEW.instance_id);
  RETURN NULL;
END $$;

CREATE TRIGGER pending_signals_notify
  AFTER INSERT OR UPDATE ON pending_signals
  FOR EACH ROW EXECUTE FUNCTION runtara_notify_signal();

CREATE TRIGGER custom_signals_notify
  AFTER INSERT OR UPDATE ON custom_signals
  FOR EACH ROW EXECUTE FUNCTION runtara_notify_signal();

-- Down Migration

DROP TRIGGER custom_signals_notify ON custom_signals;
DROP TRIGGER pending_signals_notify ON pending_signals;
DROP FUNCTION runtara_notify_signal();
DROP TRIGGER instances_status_notify ON instances;
DROP FUNCTION runtara_notify_instance();
