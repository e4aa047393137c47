-- Up Migration

-- Every status an instance took, in order, written by the database itself with each change,
-- so WatchInstance (and a timeline) can deliver every transition, even a burst of three in a
-- millisecond that a re-read of the row would collapse into the last one.
CREATE TABLE instance_transitions (
  id                 bigserial PRIMARY KEY,
  instance_id        text COLLATE "C" NOT NULL REFERENCES instances (instance_id) ON DELETE CASCADE,
  status             instance_status NOT NULL,
  termination_reason termination_reason,
  at                 timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX instance_transitions_instance ON instance_transitions (instance_id, id);

CREATE FUNCTION runtara_record_transition() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO instance_transitions (instance_id, status, termination_reason)
  VALUES (NEW.instance_id, NEW.status, NEW.termination_reason);
  RETURN NULL;
END $$;

CREATE TRIGGER instances_transition_insert
  AFTER INSERT ON instances
  FOR EACH ROW EXECUTE FUNCTION runtara_record_transition();

CREATE TRIGGER instances_transition_update
  AFTER UPDATE OF status ON instances
  FOR EACH ROW
  WHEN (OLD.status IS DISTINCT FROM NEW.status)
  EXECUTE FUNCTION runtara_record_transition();

INSERT INTO instance_transitions (instance_id, status, termination_reason)
SELECT instance_id, status, termination_reason FROM instances;

-- Down Migration

DROP TRIGGER instances_transition_update ON instances;
DROP TRIGGER instances_transition_insert ON instances;
DROP FUNCTION runtara_record_transition();
DROP TABLE instance_transitions;
