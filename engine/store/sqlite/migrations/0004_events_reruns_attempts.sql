-- Stored events are listed newest first by (received_at, tenant, id)
-- (GET /v1/events): all, per tenant or per entity, each walking an index
-- in that order (without the full key SQLite sorts every event for the
-- first page). events_received gives way to it; retention's received_at
-- range uses it as well.
CREATE INDEX events_received_key ON events (received_at, tenant, id);
DROP INDEX events_received;
CREATE INDEX events_tenant_received ON events (tenant, received_at, id);
CREATE INDEX events_entity_received ON events (entity, received_at);

-- A rerun (POST /v1/events/{id}:rerun) marks the deliveries it created.
ALTER TABLE deliveries ADD COLUMN rerun TEXT NOT NULL DEFAULT '';
CREATE INDEX deliveries_rerun ON deliveries (rerun) WHERE rerun <> '';

-- seq orders finished attempts for the live stream (GET
-- /v1/deliveries:stream): one writer connection commits in order, so the
-- next number is the largest plus one. Attempts written before have none
-- and are not streamed. Test-fire records (written by upsert) get none.
ALTER TABLE attempts ADD COLUMN seq INTEGER;
CREATE INDEX attempts_seq ON attempts (seq) WHERE seq IS NOT NULL;
CREATE TRIGGER attempts_seq AFTER INSERT ON attempts FOR EACH ROW WHEN NEW.seq IS NULL AND NOT NEW.test
BEGIN
	UPDATE attempts SET seq = (SELECT COALESCE(MAX(seq), 0) + 1 FROM attempts WHERE seq IS NOT NULL)
		WHERE delivery_id = NEW.delivery_id AND n = NEW.n;
END;
