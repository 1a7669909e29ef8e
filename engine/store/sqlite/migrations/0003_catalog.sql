-- The event catalog written through the API (PUT /v1/catalog): one row,
-- shared by every process of the database.
CREATE TABLE catalog (
	id         INTEGER NOT NULL PRIMARY KEY CHECK (id = 1),
	source     TEXT    NOT NULL,
	version    INTEGER NOT NULL,
	updated_at INTEGER NOT NULL
);
