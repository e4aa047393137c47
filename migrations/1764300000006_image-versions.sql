-- Up Migration

-- Images by name and version: registering a name the tenant already has adds its next
-- version instead of being refused. Existing images become version 1 of their name.
ALTER TABLE images ADD COLUMN version integer;
UPDATE images SET version = 1;
ALTER TABLE images
  ALTER COLUMN version SET NOT NULL,
  ADD CONSTRAINT images_version_check CHECK (version >= 1),
  ADD COLUMN tag text COLLATE "C" CHECK (tag ~ '^[A-Za-z0-9._-]{1,128}$'),
  DROP CONSTRAINT images_tenant_name_key,
  -- Its btree serves lookups by name, "latest version" (the highest), name-prefix search and
  -- the keyset order of ListImages, as the old (tenant_id, name) one did.
  ADD CONSTRAINT images_tenant_name_version_key UNIQUE (tenant_id, name, version);

-- A tag labels one version of a name.
CREATE UNIQUE INDEX images_tenant_name_tag_key ON images (tenant_id, name, tag) WHERE tag IS NOT NULL;

-- The last version number given out per name. Registration bumps it with an upsert in the
-- same statement as the image insert: concurrent registrations of one name queue on this
-- row's lock and get consecutive numbers, and a deleted version's number is never given out
-- again (an instance or a client that pinned "name v3" never gets another binary as v3).
CREATE TABLE image_names (
  tenant_id    text COLLATE "C" NOT NULL,
  name         text COLLATE "C" NOT NULL,
  last_version integer NOT NULL CHECK (last_version >= 1),
  PRIMARY KEY (tenant_id, name)
);
INSERT INTO image_names (tenant_id, name, last_version)
SELECT tenant_id, name, max(version) FROM images GROUP BY tenant_id, name;

-- Down Migration

-- Fails while a name has more than one version (delete the extra versions first).
DROP TABLE image_names;
DROP INDEX images_tenant_name_tag_key;
ALTER TABLE images
  DROP CONSTRAINT images_tenant_name_version_key,
  ADD CONSTRAINT images_tenant_name_key UNIQUE (tenant_id, name),
  DROP COLUMN tag,
  DROP COLUMN version;
