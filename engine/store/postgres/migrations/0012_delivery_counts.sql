-- Stats and /metrics without scanning deliveries (issue #15): the queue
-- depth by state comes from the queue table (live work only) and held,
-- and the number of dead deliveries, which only grows with history, from
-- this counter. Row triggers whose WHEN is false cost no call: claims and
-- completions of deliveries that do not die or come back from dead pay
-- only the comparison; a retention DELETE counts its dead rows once per
-- statement in queue_del.
CREATE TABLE delivery_counts (
	state TEXT   NOT NULL PRIMARY KEY,
	n     BIGINT NOT NULL
);
INSERT INTO delivery_counts (state, n) SELECT 'dead', count(*) FROM deliveries WHERE state = 'dead';

CREATE FUNCTION count_dead() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	UPDATE delivery_counts SET n = n + CASE WHEN NEW.state = 'dead' THEN 1 ELSE -1 END WHERE state = 'dead';
	RETURN NULL;
END $$;
CREATE TRIGGER deliveries_dead_ins AFTER INSERT ON deliveries
	FOR EACH ROW WHEN (NEW.state = 'dead') EXECUTE FUNCTION count_dead();
CREATE TRIGGER deliveries_dead_upd AFTER UPDATE OF state ON deliveries
	FOR EACH ROW WHEN ((OLD.state = 'dead') <> (NEW.state = 'dead')) EXECUTE FUNCTION count_dead();

CREATE OR REPLACE FUNCTION queue_del() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
	dead BIGINT;
BEGIN
	IF NOT EXISTS (SELECT 1 FROM old_rows) THEN
		RETURN NULL;
	END IF;
	DELETE FROM queue q USING old_rows o WHERE q.id = o.id;
	SELECT count(*) INTO dead FROM old_rows WHERE state = 'dead';
	IF dead > 0 THEN
		UPDATE delivery_counts SET n = n - dead WHERE state = 'dead';
	END IF;
	RETURN NULL;
END $$;
