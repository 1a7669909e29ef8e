-- Stats and /metrics without scanning deliveries (issue #15): the log
-- keeps months of deliveries, and a scrape every few seconds must not read
-- them all.
-- * Live deliveries (pending, failed, running) are the rows of queue: it
--   now carries their state too, so they are counted there. Held ones are
--   the rows of held.
-- * Dead deliveries stay until retention: triggers count them into
--   dead_counts, one row of deltas per insert or delete statement that
--   changed any and per row an update moved in or out of dead, by tenant
--   and by the UTC day in the delivery's id (ids sort by creation time),
--   so that dropping a day of deliveries could drop its counts too. The
--   store folds the rows into one per (tenant, day). Deltas, not one
--   counter row: a counter row would serialise every transaction that
--   kills or replays a delivery.
-- Test deliveries (test-fires) are not work: neither is counted.
-- Writers wait for this migration, so that nothing changes between the
-- new triggers and the counts taken of the rows already there.
LOCK TABLE deliveries IN SHARE ROW EXCLUSIVE MODE;

ALTER TABLE queue ADD COLUMN state TEXT NOT NULL DEFAULT '';
UPDATE queue q SET state = d.state FROM deliveries d WHERE d.id = q.id;

-- delivery_day is the UTC day of a delivery id's ULID time ("dlv_" and 10
-- base32 characters of milliseconds), NULL for any other id.
CREATE FUNCTION delivery_day(id TEXT) RETURNS DATE LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
	SELECT CASE WHEN id ~ '^dlv_[0-7][0-9A-HJKMNP-TV-Z]{9}' THEN
		(to_timestamp((SELECT sum((strpos('0123456789ABCDEFGHJKMNPQRSTVWXYZ', substr(id, 4 + i, 1)) - 1)::bigint << (5 * (10 - i)))
			FROM generate_series(1, 10) i) / 1000.0) AT TIME ZONE 'UTC')::date
	END
$$;

CREATE TABLE dead_counts (
	tenant TEXT   NOT NULL,
	day    DATE,
	n      BIGINT NOT NULL
);
CREATE INDEX dead_counts_tenant ON dead_counts (tenant);

CREATE OR REPLACE FUNCTION queue_ins() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	IF NOT EXISTS (SELECT 1 FROM new_rows) THEN
		RETURN NULL;
	END IF;
	INSERT INTO queue (id, due_at, state) SELECT id, due_at, state FROM new_rows WHERE due_at IS NOT NULL
	ON CONFLICT (id) DO UPDATE SET due_at = EXCLUDED.due_at, state = EXCLUDED.state;
	INSERT INTO dead_counts (tenant, day, n)
	SELECT tenant, delivery_day(id), count(*) FROM new_rows WHERE state = 'dead' AND NOT test GROUP BY 1, 2;
	RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION queue_upd() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	IF NOT EXISTS (SELECT 1 FROM new_rows) THEN
		RETURN NULL;
	END IF;
	DELETE FROM queue q USING new_rows n WHERE q.id = n.id AND n.due_at IS NULL;
	INSERT INTO queue (id, due_at, state) SELECT id, due_at, state FROM new_rows WHERE due_at IS NOT NULL
	ON CONFLICT (id) DO UPDATE SET due_at = EXCLUDED.due_at, state = EXCLUDED.state
	WHERE queue.due_at IS DISTINCT FROM EXCLUDED.due_at OR queue.state IS DISTINCT FROM EXCLUDED.state;
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
		INSERT INTO dead_counts (tenant, day, n) VALUES (OLD.tenant, delivery_day(OLD.id), -1);
	END IF;
	IF NEW.state = 'dead' AND NOT NEW.test THEN
		INSERT INTO dead_counts (tenant, day, n) VALUES (NEW.tenant, delivery_day(NEW.id), 1);
	END IF;
	RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION queue_del() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	IF NOT EXISTS (SELECT 1 FROM old_rows) THEN
		RETURN NULL;
	END IF;
	DELETE FROM queue q USING old_rows o WHERE q.id = o.id;
	INSERT INTO dead_counts (tenant, day, n)
	SELECT tenant, delivery_day(id), -count(*) FROM old_rows WHERE state = 'dead' AND NOT test GROUP BY 1, 2;
	RETURN NULL;
END $$;

CREATE TRIGGER deliveries_dead_upd AFTER UPDATE ON deliveries FOR EACH ROW
	WHEN ((OLD.state = 'dead' AND NOT OLD.test) IS DISTINCT FROM (NEW.state = 'dead' AND NOT NEW.test) OR OLD.tenant <> NEW.tenant)
	EXECUTE FUNCTION dead_upd();

INSERT INTO dead_counts (tenant, day, n)
SELECT tenant, delivery_day(id), count(*) FROM deliveries WHERE state = 'dead' AND NOT test GROUP BY 1, 2;
