-- Destinations' circuit-breaker states (docs/delivery.md: destinations),
-- shared by every process on the database: a row per destination that
-- was ever paused. Deliveries of a paused destination wait in the queue,
-- due exactly at its next_probe_at, so that a resume wakes them with one
-- lookup of that due time.
CREATE TABLE destinations (
	destination   TEXT    NOT NULL PRIMARY KEY, -- scheme://host:port
	id            TEXT    NOT NULL,             -- "dst_…", the API's
	state         TEXT    NOT NULL,             -- active | paused
	failures      INTEGER NOT NULL DEFAULT 0,   -- consecutive failed attempts that paused it
	last_code     INTEGER NOT NULL DEFAULT 0,
	last_error    TEXT    NOT NULL DEFAULT '',
	paused_at     INTEGER,
	next_probe_at INTEGER,
	interval_ms   BIGINT  NOT NULL DEFAULT 0,   -- between probes now
	resumed_at    INTEGER,
	pauses        INTEGER NOT NULL DEFAULT 0,
	rules_disabled_at INTEGER,            -- when disable_after disabled the rules pointing only at it (this pause)
	updated_at    INTEGER NOT NULL
);
CREATE UNIQUE INDEX destinations_id ON destinations (id);

-- The deliveries waiting for a paused destination's probe, so that its
-- resume (by any process) makes exactly them due at once. Written only
-- while a destination is paused; emptied when it resumes.
CREATE TABLE destination_waits (
	destination TEXT NOT NULL,
	id          TEXT NOT NULL,
	PRIMARY KEY (destination, id)
);
