-- Up Migration

-- ListInstances filtered by image, in the list's order: without it the page walks the
-- tenant's index filtering by image, and its count scans every row of the image across tenants.
CREATE INDEX instances_tenant_image_created ON instances (tenant_id, image_id, created_at DESC, instance_id DESC);

-- Down Migration

DROP INDEX instances_tenant_image_created;
