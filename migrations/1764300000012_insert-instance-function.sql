-- Up Migration

-- StartInstance's insert as a function, so that the tenant's quota of PENDING and RUNNING
-- instances holds when starts race: the statement counted them in its own snapshot, so starts
-- arriving together all read the same count and all passed (20 at once under a quota of 2
-- stored 20). Here starts of one tenant queue on a transaction-scoped advisory lock, and the
-- count is a later statement with a fresh snapshot: it sees every start that held the lock
-- before this one (they committed before letting it go). Starts of different tenants do not
-- wait for each other (unless their hashes collide, which only costs a short wait).
-- Otherwise unchanged: the image's use time is refreshed to the minute (a fresher one is left
-- alone, so concurrent starts of one image do not queue on its row); returns the row's token
-- nonce, or NULL when the tenant is at its quota.
CREATE FUNCTION runtara_insert_instance(
  p_instance_id text, p_tenant_id text, p_image_id uuid, p_image_name text, p_input bytea, p_env jsonb,
  p_timeout_seconds integer, p_claimed_by text, p_max_active integer, p_active instance_status[]
) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
  v_nonce text;
BEGIN
  PERFORM pg_advisory_xact_lock(hashtext('runtara_insert_instance'), hashtext(p_tenant_id));
  IF (SELECT count(*) FROM instances WHERE tenant_id = p_tenant_id AND status = ANY (p_active)) >= p_max_active THEN
    RETURN NULL;
  END IF;
  UPDATE images SET last_used_at = now()
  WHERE image_id = p_image_id AND (last_used_at IS NULL OR last_used_at < now() - interval '1 minute');
  INSERT INTO instances (instance_id, tenant_id, image_id, image_name, status, input, env, timeout_seconds, pending_since, claimed_by)
  VALUES (p_instance_id, p_tenant_id, p_image_id, p_image_name, 'pending', p_input, p_env, p_timeout_seconds, now(), p_claimed_by)
  RETURNING token_nonce INTO v_nonce;
  RETURN v_nonce;
END $$;

-- Down Migration

DROP FUNCTION runtara_insert_instance(text, text, uuid, text, bytea, jsonb, integer, text, integer, instance_status[]);
