-- erpflow schema, SQLite. Times are INTEGER unix microseconds (UTC); JSON is
-- kept as BLOB so that the exact bytes come back.

CREATE TABLE events (
	tenant      TEXT    NOT NULL,
	id          TEXT    NOT NULL,
	entity      TEXT    NOT NULL,
	entity_id   TEXT    NOT NULL DEFAULT '',
	event_name  TEXT    NOT NULL,
	occurred_at INTEGER,
	received_at INTEGER NOT NULL,
	internal    INTEGER NOT NULL DEFAULT 0,
	raw         BLOB    NOT NULL,
	PRIMARY KEY (tenant, id)
);
CREATE INDEX events_received ON events (received_at);

CREATE TABLE deliveries (
	id           TEXT    NOT NULL PRIMARY KEY,
	tenant       TEXT    NOT NULL,
	event_id     TEXT    NOT NULL,
	entity       TEXT    NOT NULL,
	event_name   TEXT    NOT NULL,
	rule         TEXT    NOT NULL,
	action_index INTEGER NOT NULL,
	action_type  TEXT    NOT NULL,
	retry        TEXT    NOT NULL DEFAULT '',
	payload      BLOB    NOT NULL,
	state        TEXT    NOT NULL,
	attempts     INTEGER NOT NULL DEFAULT 0,
	retry_base   INTEGER NOT NULL DEFAULT 0,
	run_at       INTEGER NOT NULL,
	last_code    INTEGER NOT NULL DEFAULT 0,
	last_error   TEXT    NOT NULL DEFAULT '',
	internal     INTEGER NOT NULL DEFAULT 0,
	test         INTEGER NOT NULL DEFAULT 0,
	lease_owner  TEXT    NOT NULL DEFAULT '',
	locked_until INTEGER,
	created_at   INTEGER NOT NULL,
	updated_at   INTEGER NOT NULL,
	-- when it can be claimed: run_at while pending/failed, locked_until while
	-- running (an expired lease is claimable), NULL when done
	due_at       INTEGER
);
CREATE INDEX deliveries_due ON deliveries (due_at) WHERE due_at IS NOT NULL;
CREATE INDEX deliveries_event ON deliveries (tenant, event_id);
CREATE INDEX deliveries_tenant ON deliveries (tenant, id);
CREATE INDEX deliveries_rule ON deliveries (rule, id);
CREATE INDEX deliveries_state ON deliveries (state, id);

CREATE TABLE attempts (
	delivery_id TEXT    NOT NULL, -- no foreign key: checking it costs every completion; Prune deletes attempts with their delivery
	n           INTEGER NOT NULL,
	started_at  INTEGER NOT NULL,
	duration_ns INTEGER NOT NULL,
	outcome     TEXT    NOT NULL,
	code        INTEGER NOT NULL DEFAULT 0,
	error       TEXT    NOT NULL DEFAULT '',
	detail      BLOB,
	test        INTEGER NOT NULL DEFAULT 0,
	PRIMARY KEY (delivery_id, n)
) WITHOUT ROWID;

CREATE TABLE rules (
	name       TEXT    NOT NULL PRIMARY KEY,
	tenant     TEXT    NOT NULL DEFAULT '',
	source     TEXT    NOT NULL,
	enabled    INTEGER NOT NULL,
	version    INTEGER NOT NULL,
	updated_at INTEGER NOT NULL
);
