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
CREATE INDEX deliveries_due ON deliveries (due_at) WHERE due_at IS NOT NULL;
CREATE INDEX deliveries_event ON deliveries (tenant, event_id);
CREATE INDEX deliveries_tenant ON deliveries (tenant, id);
CREATE INDEX deliveries_rule ON deliveries (rule, id);
CREATE INDEX deliveries_state ON deliveries (state, id);

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
