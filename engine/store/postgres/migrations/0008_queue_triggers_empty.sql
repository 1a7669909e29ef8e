-- The queue triggers (0001) return at once when their statement changed no
-- row. A statement trigger fires for every UPDATE, also one that matched
-- nothing (a claim that found no due delivery), and planning its
-- statements against an empty transition table cost about a millisecond
-- a call once the queue table had many dead rows.
CREATE OR REPLACE FUNCTION queue_ins() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	IF NOT EXISTS (SELECT 1 FROM new_rows) THEN
		RETURN NULL;
	END IF;
	INSERT INTO queue (id, due_at) SELECT id, due_at FROM new_rows WHERE due_at IS NOT NULL
	ON CONFLICT (id) DO UPDATE SET due_at = EXCLUDED.due_at;
	RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION queue_upd() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	IF NOT EXISTS (SELECT 1 FROM new_rows) THEN
		RETURN NULL;
	END IF;
	DELETE FROM queue q USING new_rows n WHERE q.id = n.id AND n.due_at IS NULL;
	INSERT INTO queue (id, due_at) SELECT id, due_at FROM new_rows WHERE due_at IS NOT NULL
	ON CONFLICT (id) DO UPDATE SET due_at = EXCLUDED.due_at WHERE queue.due_at IS DISTINCT FROM EXCLUDED.due_at;
	RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION queue_del() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	IF NOT EXISTS (SELECT 1 FROM old_rows) THEN
		RETURN NULL;
	END IF;
	DELETE FROM queue q USING old_rows o WHERE q.id = o.id;
	RETURN NULL;
END $$;
