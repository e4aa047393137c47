-- Up Migration

-- A random nonce per instance row, bound into the row's instance token (src/lifecycle/tokens.ts):
-- a token names one row, so a deleted and re-created instance id (same or another tenant)
-- does not accept an old token. 32 hex characters (128 bits).
ALTER TABLE instances ADD COLUMN token_nonce text NOT NULL DEFAULT replace(gen_random_uuid()::text, '-', '');

-- Down Migration

ALTER TABLE instances DROP COLUMN token_nonce;
