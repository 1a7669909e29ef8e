-- The Log History filters deliveries by entity, newest first
-- (GET /v1/deliveries?entity=).
CREATE INDEX deliveries_entity ON deliveries (entity, id);
