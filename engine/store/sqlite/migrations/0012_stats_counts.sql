-- Stats and /metrics without reading every delivery (issue #15): the log
-- keeps months of deliveries. Live ones (pending, failed, running, held)
-- are counted through deliveries_state, one index entry each; dead ones,
-- which stay until retention, are counted here, by tenant, by triggers
-- that fire only for deliveries entering or leaving the dead state (the
-- one writer makes a counter row per tenant cheap). Test deliveries
-- (test-fires) are not work: neither is counted.
CREATE TABLE dead_counts (
	tenant TEXT    NOT NULL PRIMARY KEY,
	n      INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TRIGGER deliveries_dead_ins AFTER INSERT ON deliveries
	WHEN NEW.state = 'dead' AND NOT NEW.test
BEGIN
	INSERT INTO dead_counts (tenant, n) VALUES (NEW.tenant, 1) ON CONFLICT (tenant) DO UPDATE SET n = n + 1;
END;

CREATE TRIGGER deliveries_dead_out AFTER UPDATE OF state, test, tenant ON deliveries
	WHEN OLD.state = 'dead' AND NOT OLD.test
BEGIN
	UPDATE dead_counts SET n = n - 1 WHERE tenant = OLD.tenant;
END;

CREATE TRIGGER deliveries_dead_in AFTER UPDATE OF state, test, tenant ON deliveries
	WHEN NEW.state = 'dead' AND NOT NEW.test
BEGIN
	INSERT INTO dead_counts (tenant, n) VALUES (NEW.tenant, 1) ON CONFLICT (tenant) DO UPDATE SET n = n + 1;
END;

CREATE TRIGGER deliveries_dead_del AFTER DELETE ON deliveries
	WHEN OLD.state = 'dead' AND NOT OLD.test
BEGIN
	UPDATE dead_counts SET n = n - 1 WHERE tenant = OLD.tenant;
END;

INSERT INTO dead_counts (tenant, n)
SELECT tenant, COUNT(*) FROM deliveries WHERE state = 'dead' AND NOT test GROUP BY tenant;
