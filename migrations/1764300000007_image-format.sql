-- Up Migration

-- What an image's uploaded bytes are: a static executable, or an OCI image archive unpacked
-- at registration (its manifest digest kept for display and audit).
ALTER TABLE images
  ADD COLUMN format text NOT NULL DEFAULT 'binary' CHECK (format IN ('binary', 'oci_archive')),
  ADD COLUMN manifest_digest text CHECK (manifest_digest IS NULL OR manifest_digest ~ '^sha256:[0-9a-f]{64}$');

-- Down Migration

ALTER TABLE images DROP COLUMN manifest_digest, DROP COLUMN format;
