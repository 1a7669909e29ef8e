-- Stored events are listed newest first by (received_at, tenant, id)
-- (GET /v1/events): all, per tenant or per entity, each walking an index
-- in that order. events_received gives way to the full key, which also
-- serves retention's received_at range. Events are written once, never
-- updated: these indexes cost one entry per event.
CREATE INDEX events_received_key ON events (received_at, tenant, id);
DROP INDEX events_received;
CREATE INDEX events_tenant_received ON events (tenant, received_at, id);
CREATE INDEX events_entity_received ON events (entity, received_at);

-- A rerun (POST /v1/events/{id}:rerun) marks the deliveries it created.
-- The column never changes after insert, so its index keeps claims and
-- completions HOT; it holds only rerun deliveries.
ALTER TABLE deliveries ADD COLUMN rerun TEXT NOT NULL DEFAULT '';
CREATE INDEX deliveries_rerun ON deliveries (rerun) WHERE rerun <> '';

-- seq orders finished attempts for the live stream (GET
-- /v1/deliveries:stream) across processes: a reader follows it with a
-- cursor. Rows of a concurrent transaction may commit out of seq order;
-- the reader waits a moment at a gap (see the server's attempt feed).
-- Not BIGSERIAL: that numbers every existing row, rewriting the whole
-- attempts table under an exclusive lock. Added bare, the column costs
-- nothing on a big table; attempts recorded before it have no seq (they
-- are in the delivery log, not in the live stream).
CREATE SEQUENCE attempts_seq_seq;
ALTER TABLE attempts ADD COLUMN seq BIGINT;
ALTER TABLE attempts ALTER COLUMN seq SET DEFAULT nextval('attempts_seq_seq');
ALTER SEQUENCE attempts_seq_seq OWNED BY attempts.seq;
CREATE INDEX attempts_seq ON attempts (seq) WHERE seq IS NOT NULL;
