-- What range partitioning would cost erpflow's hot statements on
-- PostgreSQL (docs/storage.md, "A log that grows for years"): a table
-- shaped like deliveries (its indexes), split into :parts range
-- partitions by id, 100,000 rows; then the planning and execution time of
-- a claim (UPDATE … WHERE id IN (SELECT … FOR UPDATE SKIP LOCKED)), a
-- completion (UPDATE … FROM unnest), a batched insert and a lookup by
-- (tenant, event_id). Only the planning times mean anything here: with
-- 100,000 rows in all, the planner picks scans that it would not on
-- partitions of millions. Run it in a scratch database:
--   for p in 1 14 30 90; do psql "$URL" -v parts=$p -f scripts/partition-planning.sql | grep Planning; done
DROP SCHEMA IF EXISTS partition_planning CASCADE;
CREATE SCHEMA partition_planning;
SET search_path = partition_planning;
CREATE TABLE d (id text PRIMARY KEY, tenant text, event_id text, rule text, entity text, state text, payload text)
	PARTITION BY RANGE (id);
CREATE INDEX d_tenant ON d (tenant, id);
CREATE INDEX d_event ON d (tenant, event_id);
CREATE INDEX d_rule ON d (rule, id);
CREATE INDEX d_entity ON d (entity, id);
SELECT format('CREATE TABLE d%s PARTITION OF d FOR VALUES FROM (%L) TO (%L)', i, 'k' || lpad(i::text, 3, '0'), 'k' || lpad((i + 1)::text, 3, '0'))
	FROM generate_series(0, :parts - 1) i \gexec
INSERT INTO d SELECT 'k' || lpad((g % :parts)::text, 3, '0') || '-' || g, 'acme', 'e' || g, 'r', 'SalesOrder', 'pending', repeat('x', 200)
	FROM generate_series(1, 100000) g;
CREATE TABLE q (id text PRIMARY KEY);
INSERT INTO q SELECT id FROM d ORDER BY id DESC LIMIT 1000;
ANALYZE;
EXPLAIN (ANALYZE, SUMMARY) UPDATE d SET state = 'running' WHERE id IN (SELECT id FROM q ORDER BY id LIMIT 100 FOR UPDATE SKIP LOCKED);
EXPLAIN (ANALYZE, SUMMARY) UPDATE d SET state = 'succeeded' FROM unnest(ARRAY(SELECT id FROM q LIMIT 100)) u(id) WHERE d.id = u.id;
EXPLAIN (ANALYZE, SUMMARY) INSERT INTO d SELECT 'k000-n' || g, 'acme', 'e', 'r', 'SalesOrder', 'pending', 'y' FROM generate_series(1, 50) g;
EXPLAIN (ANALYZE, SUMMARY) SELECT * FROM d WHERE tenant = 'acme' AND event_id = 'e5';
DROP SCHEMA partition_planning CASCADE;
