-- Timers (docs/rules.md: schedule, debounce, cron). One pending timer per
-- (tenant, entity, entity_id, rule): an event re-arms it in place (an
-- upsert on timers_pending, which also finds the pending schedule timers
-- of an entity whose latest event changes); fired and cancelled timers
-- stay as history until retention. Nothing is kept in memory per timer:
-- the engine claims due ones through timers_due.
CREATE TABLE timers (
	id           TEXT        NOT NULL PRIMARY KEY, -- "tmr_…", time-sortable
	kind         TEXT        NOT NULL,
	rule         TEXT        NOT NULL,
	rule_id      TEXT        NOT NULL DEFAULT '',
	tenant       TEXT        NOT NULL,
	entity       TEXT        NOT NULL,
	entity_id    TEXT        NOT NULL,
	event_id     TEXT        NOT NULL,
	latest_id    TEXT        NOT NULL DEFAULT '',
	latest_at    TIMESTAMPTZ,
	fire_at      TIMESTAMPTZ NOT NULL,
	first_at     TIMESTAMPTZ NOT NULL,
	deadline     TIMESTAMPTZ NOT NULL, -- debounce: first_at + max, the latest it fires; else fire_at
	state        TEXT        NOT NULL,
	reason       TEXT        NOT NULL DEFAULT '',
	events       TEXT        NOT NULL DEFAULT '', -- JSON strings joined by ',' (a JSON array without its brackets)
	count        INTEGER     NOT NULL DEFAULT 1,
	deliveries   TEXT        NOT NULL DEFAULT '', -- the same, of the delivery ids created when it fired
	spec         TEXT        NOT NULL DEFAULT '',
	version      BIGINT      NOT NULL DEFAULT 1,
	lease_owner  TEXT        NOT NULL DEFAULT '',
	locked_until TIMESTAMPTZ,
	created_at   TIMESTAMPTZ NOT NULL,
	updated_at   TIMESTAMPTZ NOT NULL
);
CREATE UNIQUE INDEX timers_pending ON timers (tenant, entity, entity_id, rule) WHERE state = 'pending';
CREATE INDEX timers_due ON timers (fire_at) WHERE state = 'pending';
CREATE INDEX timers_tenant ON timers (tenant, id);
CREATE INDEX timers_rule ON timers (rule, id);

-- Ordered delivery (an ordered rule): the deliveries of one chain (rule,
-- action, tenant, entity, entity_id) run one at a time. A chain's row
-- names its head, the one delivery of the chain that may run ('' when
-- none is open); the others wait as 'held' (due_at NULL: not claimable)
-- with a row in held, the narrow index the next head is taken from, in
-- id order. Writers of a chain serialise on its row. No index of
-- deliveries covers state: claims and completions stay HOT.
ALTER TABLE deliveries ADD COLUMN order_key TEXT NOT NULL DEFAULT '';
ALTER TABLE deliveries ADD COLUMN coalesced TEXT NOT NULL DEFAULT '';
CREATE TABLE chains (
	key  TEXT NOT NULL PRIMARY KEY,
	head TEXT NOT NULL DEFAULT ''
);
CREATE TABLE held (
	key TEXT NOT NULL,
	id  TEXT NOT NULL,
	PRIMARY KEY (key, id)
);
