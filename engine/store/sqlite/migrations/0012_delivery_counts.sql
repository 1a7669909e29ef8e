-- Stats and /metrics without counting dead deliveries one by one (issue
-- #15): the number of dead deliveries, which only grows with history, is
-- kept in this counter by triggers whose WHEN is false for every other
-- write. The live states are counted through deliveries_state.
CREATE TABLE delivery_counts (
	state TEXT    NOT NULL PRIMARY KEY,
	n     INTEGER NOT NULL
);
INSERT INTO delivery_counts (state, n) SELECT 'dead', count(*) FROM deliveries WHERE state = 'dead';

CREATE TRIGGER deliveries_dead_ins AFTER INSERT ON deliveries WHEN NEW.state = 'dead'
BEGIN
	UPDATE delivery_counts SET n = n + 1 WHERE state = 'dead';
END;
CREATE TRIGGER deliveries_dead_upd AFTER UPDATE OF state ON deliveries WHEN (OLD.state = 'dead') <> (NEW.state = 'dead')
BEGIN
	UPDATE delivery_counts SET n = n + CASE WHEN NEW.state = 'dead' THEN 1 ELSE -1 END WHERE state = 'dead';
END;
CREATE TRIGGER deliveries_dead_del AFTER DELETE ON deliveries WHEN OLD.state = 'dead'
BEGIN
	UPDATE delivery_counts SET n = n - 1 WHERE state = 'dead';
END;
