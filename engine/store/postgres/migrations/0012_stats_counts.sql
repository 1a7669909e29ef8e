-- Stats and /metrics without scanning deliveries (issue #15): the log
-- keeps months of deliveries, and a scrape every few seconds must not read
-- them all.
-- * Live deliveries (pending, failed, running) are the rows of queue: it
--   now carries their state and tenant too, so they are counted there.
--   Held ones are the rows of held.
-- * Dead deliveries stay until retention: triggers count them into
--   dead_counts, rows of deltas by tenant (one per insert or delete
--   statement that changed any, one per row an update moved in or out of
--   dead), which the store folds into one per tenant. Deltas, not one
--   counter row per tenant: that row would serialise every transaction
--   that kills or replays a delivery of the tenant.
-- Test deliveries (test-fires) are not work: neither is counted.
--
-- Writers wait for this migration, so that nothing changes between the
-- new triggers and the counts taken of the rows already there. The two
-- locks are taken without ever waiting while holding one: claims lock
-- queue then deliveries, emits and completions deliveries then queue (by
-- the triggers), and waiting for one while holding the other deadlocks
-- with processes of the previous release still running. Counting the dead
-- deliveries already stored reads the deliveries table once (it has no
-- index on state), while writers wait.
DO $$
DECLARE
	tries INTEGER := 0;
BEGIN
	LOOP
		BEGIN
			LOCK TABLE queue IN ACCESS EXCLUSIVE MODE NOWAIT;
			LOCK TABLE deliveries IN SHARE ROW EXCLUSIVE MODE NOWAIT;
			EXIT;
		EXCEPTION WHEN lock_not_available THEN
			tries := tries + 1;
			IF tries >= 3000 THEN
				RAISE EXCEPTION 'migration 12: deliveries and queue stayed busy for a minute; try again';
			END IF;
			PERFORM pg_sleep(0.02);
		END;
	END LOOP;
END $$;

ALTER TABLE queue ADD COLUMN state TEXT NOT NULL DEFAULT '';
ALTER TABLE queue ADD COLUMN tenant TEXT NOT NULL DEFAULT '';
-- One primary-key lookup per queued delivery, not a join that reads the
-- whole log.
UPDATE queue q SET (state, tenant) = (SELECT d.state, d.tenant FROM deliveries d WHERE d.id = q.id);

CREATE TABLE dead_counts (
	tenant TEXT   NOT NULL,
	n      BIGINT NOT NULL
);

CREATE OR REPLACE FUNCTION queue_ins() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	IF NOT EXISTS (SELECT 1 FROM new_rows) THEN
		RETURN NULL;
	END IF;
	INSERT INTO queue (id, due_at, state, tenant) SELECT id, due_at, state, tenant FROM new_rows WHERE due_at IS NOT NULL
	ON CONFLICT (id) DO UPDATE SET due_at = EXCLUDED.due_at, state = EXCLUDED.state, tenant = EXCLUDED.tenant;
	INSERT INTO dead_counts (tenant, n)
	SELECT tenant, count(*) FROM new_rows WHERE state = 'dead' AND NOT test GROUP BY tenant;
	RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION queue_upd() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	IF NOT EXISTS (SELECT 1 FROM new_rows) THEN
		RETURN NULL;
	END IF;
	DELETE FROM queue q USING new_rows n WHERE q.id = n.id AND n.due_at IS NULL;
	INSERT INTO queue (id, due_at, state, tenant) SELECT id, due_at, state, tenant FROM new_rows WHERE due_at IS NOT NULL
	ON CONFLICT (id) DO UPDATE SET due_at = EXCLUDED.due_at, state = EXCLUDED.state, tenant = EXCLUDED.tenant
	WHERE queue.due_at IS DISTINCT FROM EXCLUDED.due_at OR queue.state IS DISTINCT FROM EXCLUDED.state
		OR queue.tenant IS DISTINCT FROM EXCLUDED.tenant;
	RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION queue_del() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	IF NOT EXISTS (SELECT 1 FROM old_rows) THEN
		RETURN NULL;
	END IF;
	DELETE FROM queue q USING old_rows o WHERE q.id = o.id;
	INSERT INTO dead_counts (tenant, n)
	SELECT tenant, -count(*) FROM old_rows WHERE state = 'dead' AND NOT test GROUP BY tenant;
	RETURN NULL;
END $$;

-- An update changes the dead count only when a row enters or leaves dead
-- (a completion that kills, a replay): a row trigger whose WHEN the
-- executor tests on each updated row, with no function call for the
-- others. A statement trigger would need the old rows of every update (a
-- copy of each claimed and completed row) to see the few that left dead.
CREATE FUNCTION dead_upd() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	IF OLD.state = 'dead' AND NOT OLD.test THEN
		INSERT INTO dead_counts (tenant, n) VALUES (OLD.tenant, -1);
	END IF;
	IF NEW.state = 'dead' AND NOT NEW.test THEN
		INSERT INTO dead_counts (tenant, n) VALUES (NEW.tenant, 1);
	END IF;
	RETURN NULL;
END $$;

CREATE TRIGGER deliveries_dead_upd AFTER UPDATE ON deliveries FOR EACH ROW
	WHEN ((OLD.state = 'dead' AND NOT OLD.test) IS DISTINCT FROM (NEW.state = 'dead' AND NOT NEW.test) OR OLD.tenant <> NEW.tenant)
	EXECUTE FUNCTION dead_upd();

INSERT INTO dead_counts (tenant, n)
SELECT tenant, count(*) FROM deliveries WHERE state = 'dead' AND NOT test GROUP BY tenant;
