-- The statements that write new deliveries queue them and count the dead
-- ones themselves (queueNew in postgres.go), instead of the statement
-- trigger queue_ins: its call, its transition table (a copy of every new
-- row) and its three statements cost a write of one event about a quarter
-- of its executor time.
--
-- Processes of the previous release, still running while this one starts,
-- write deliveries without queueing them. Their rows (and those of any
-- other statement) have queued false and go through the row trigger below,
-- whose WHEN the executor tests on each new row, with no function call for
-- the rows that queueNew wrote. queued means something only here, when a
-- row is inserted: updates carry it over, and no statement reads it.
--
-- The lock is taken without waiting in the lock queue, as migration 12
-- does: waiting there would hold back every claim and completion of the
-- running processes meanwhile.
DO $$
DECLARE
	tries INTEGER := 0;
BEGIN
	LOOP
		BEGIN
			LOCK TABLE deliveries IN ACCESS EXCLUSIVE MODE NOWAIT;
			EXIT;
		EXCEPTION WHEN lock_not_available THEN
			tries := tries + 1;
			IF tries >= 3000 THEN
				RAISE EXCEPTION 'migration 13: deliveries stayed busy for a minute; try again';
			END IF;
			PERFORM pg_sleep(0.02);
		END;
	END LOOP;
END $$;

ALTER TABLE deliveries ADD COLUMN queued BOOLEAN NOT NULL DEFAULT false;

CREATE FUNCTION queue_ins_row() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	IF NEW.due_at IS NOT NULL THEN
		INSERT INTO queue (id, due_at, state, tenant) VALUES (NEW.id, NEW.due_at, NEW.state, NEW.tenant)
		ON CONFLICT (id) DO UPDATE SET due_at = EXCLUDED.due_at, state = EXCLUDED.state, tenant = EXCLUDED.tenant;
	END IF;
	IF NEW.state = 'dead' AND NOT NEW.test THEN
		INSERT INTO dead_counts (tenant, n) VALUES (NEW.tenant, 1);
	END IF;
	RETURN NULL;
END $$;

CREATE TRIGGER deliveries_queue_ins_row AFTER INSERT ON deliveries FOR EACH ROW
	WHEN (NOT NEW.queued AND (NEW.due_at IS NOT NULL OR NEW.state = 'dead' AND NOT NEW.test))
	EXECUTE FUNCTION queue_ins_row();

DROP TRIGGER deliveries_queue_ins ON deliveries;
DROP FUNCTION queue_ins();
