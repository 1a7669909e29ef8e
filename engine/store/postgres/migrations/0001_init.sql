-- erpflow schema, PostgreSQL. JSON documents are BYTEA: the log must show
-- exactly the bytes that were sent (JSONB would reorder keys).

CREATE TABLE events (
	tenant      TEXT        NOT NULL,
	id          TEXT        NOT NULL,
	entity      TEXT        NOT NULL,
	entity_id   TEXT        NOT NULL DEFAULT '',
	event_name  TEXT        NOT NULL,
	occurred_at TIMESTAMPTZ,
	received_at TIMESTAMPTZ NOT NULL,
	internal    BOOLEAN     NOT NULL DEFAULT false,
	raw         BYTEA       NOT NULL,
	PRIMARY KEY (tenant, id)
);
CREATE INDEX events_received ON events (received_at);

CREATE TABLE deliveries (
	id           TEXT        NOT NULL PRIMARY KEY,
	tenant       TEXT        NOT NULL,
	event_id     TEXT        NOT NULL,
	entity       TEXT        NOT NULL,
	event_name   TEXT        NOT NULL,
	rule         TEXT        NOT NULL,
	action_index INTEGER     NOT NULL,
	action_type  TEXT        NOT NULL,
	retry        TEXT        NOT NULL DEFAULT '',
	payload      BYTEA       NOT NULL,
	state        TEXT        NOT NULL,
	attempts     INTEGER     NOT NULL DEFAULT 0,
	retry_base   INTEGER     NOT NULL DEFAULT 0,
	run_at       TIMESTAMPTZ NOT NULL,
	last_code    INTEGER     NOT NULL DEFAULT 0,
	last_error   TEXT        NOT NULL DEFAULT '',
	internal     BOOLEAN     NOT NULL DEFAULT false,
	test         BOOLEAN     NOT NULL DEFAULT false,
	lease_owner  TEXT        NOT NULL DEFAULT '',
	locked_until TIMESTAMPTZ,
	created_at   TIMESTAMPTZ NOT NULL,
	updated_at   TIMESTAMPTZ NOT NULL,
	-- when it can be claimed: run_at while pending/failed, locked_until while
	-- running (an expired lease is claimable), NULL when done
	due_at       TIMESTAMPTZ
);
-- No index may cover a column that claims and completions change (state,
-- attempts, lease_owner, locked_until, due_at, run_at, last_*,
-- updated_at): then every such update is HOT (heap-only: no index entry
-- written), and the free space left by fillfactor keeps the new version on
-- the same page (a delivery is updated twice: claimed, completed; 50 left
-- measurably more updates HOT than 70). The claim index lives on the
-- narrow queue table below. Listing by state and retention walk the
-- primary key (ids sort by creation time) instead of a (state, id) index.
ALTER TABLE deliveries SET (fillfactor = 50);
CREATE INDEX deliveries_event ON deliveries (tenant, event_id);
CREATE INDEX deliveries_tenant ON deliveries (tenant, id);
CREATE INDEX deliveries_rule ON deliveries (rule, id);

-- queue holds the claimable deliveries (due_at IS NOT NULL): a narrow
-- copy of deliveries.due_at, kept in step by the statement triggers below
-- whatever statement writes deliveries, and the only index on due_at.
CREATE TABLE queue (
	id     TEXT        NOT NULL PRIMARY KEY,
	due_at TIMESTAMPTZ NOT NULL
) WITH (fillfactor = 70);
CREATE INDEX queue_due ON queue (due_at);

CREATE FUNCTION queue_ins() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	INSERT INTO queue (id, due_at) SELECT id, due_at FROM new_rows WHERE due_at IS NOT NULL
	ON CONFLICT (id) DO UPDATE SET due_at = EXCLUDED.due_at;
	RETURN NULL;
END $$;

CREATE FUNCTION queue_upd() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	DELETE FROM queue q USING new_rows n WHERE q.id = n.id AND n.due_at IS NULL;
	INSERT INTO queue (id, due_at) SELECT id, due_at FROM new_rows WHERE due_at IS NOT NULL
	ON CONFLICT (id) DO UPDATE SET due_at = EXCLUDED.due_at WHERE queue.due_at IS DISTINCT FROM EXCLUDED.due_at;
	RETURN NULL;
END $$;

CREATE FUNCTION queue_del() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	DELETE FROM queue q USING old_rows o WHERE q.id = o.id;
	RETURN NULL;
END $$;

CREATE TRIGGER deliveries_queue_ins AFTER INSERT ON deliveries
	REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION queue_ins();
CREATE TRIGGER deliveries_queue_upd AFTER UPDATE ON deliveries
	REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION queue_upd();
CREATE TRIGGER deliveries_queue_del AFTER DELETE ON deliveries
	REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION queue_del();

CREATE TABLE attempts (
	delivery_id TEXT        NOT NULL, -- no foreign key: checking it costs every completion; Prune deletes attempts with their delivery
	n           INTEGER     NOT NULL,
	started_at  TIMESTAMPTZ NOT NULL,
	duration_ns BIGINT      NOT NULL,
	outcome     TEXT        NOT NULL,
	code        INTEGER     NOT NULL DEFAULT 0,
	error       TEXT        NOT NULL DEFAULT '',
	detail      BYTEA,
	test        BOOLEAN     NOT NULL DEFAULT false,
	PRIMARY KEY (delivery_id, n)
);

CREATE TABLE rules (
	name       TEXT        NOT NULL PRIMARY KEY,
	tenant     TEXT        NOT NULL DEFAULT '',
	source     TEXT        NOT NULL,
	enabled    BOOLEAN     NOT NULL,
	version    BIGINT      NOT NULL,
	updated_at TIMESTAMPTZ NOT NULL
);
