package postgres_test

import (
	"context"
	"database/sql"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/erpflow/erpflow/engine"
	"github.com/erpflow/erpflow/engine/store/postgres"
	"github.com/erpflow/erpflow/engine/store/storetest"
)

// TestMigrations runs storetest's checks of single migrations on a
// schema that each brings to the release before its migration.
func TestMigrations(t *testing.T) {
	for name, check := range storetest.Migrations {
		t.Run(name, func(t *testing.T) {
			u := freshSchema(t)
			db := rawDB(t, u)
			check(t, db, "migrations", "now()", func() engine.Store {
				s := open(t, u)
				t.Cleanup(func() { s.Close() })
				return s
			})
		})
	}
}

// TestMigrationBesideOldRelease: migration 12 locks deliveries and queue
// while processes of the previous release go on. One of them is in the
// middle of a write (it holds both tables); another claims meanwhile
// (queue first, then deliveries), as their claims do. The claim must not
// queue up behind the migration, which would deadlock it with the
// migration's wait for queue, and the migration completes once the
// write commits.
func TestMigrationBesideOldRelease(t *testing.T) {
	u := freshSchema(t)
	db := rawDB(t, u)
	row := func(id string) string {
		return `INSERT INTO deliveries (id, tenant, event_id, entity, event_name, rule, action_index, action_type, payload, state, run_at, created_at, updated_at, due_at)
			VALUES ('` + id + `', 'acme', 'ev1', 'SalesOrder', 'updated', 'a', 0, 'webhook', '{}', 'pending', now(), now(), now(), now())`
	}
	storetest.MigrateBefore(t, db, "migrations", 12, row("dlv_a"), row("dlv_b"))
	ctx := context.Background()
	writer, err := db.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer writer.Rollback()
	if _, err := writer.Exec(`UPDATE deliveries SET updated_at = now() WHERE id = 'dlv_a'`); err != nil {
		t.Fatal(err)
	}
	migrated := migrateUntil(t, db, u, "migrations/0012_stats_counts.sql")
	claimCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	claim, err := db.BeginTx(claimCtx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer claim.Rollback()
	if _, err := claim.Exec(`SELECT id FROM queue WHERE id = 'dlv_b' FOR UPDATE SKIP LOCKED`); err != nil {
		t.Fatal(err)
	}
	if _, err := claim.Exec(`UPDATE deliveries SET state = 'running' WHERE id = 'dlv_b'`); err != nil {
		t.Fatalf("an old release's claim during the migration: %v (it waited behind the migration's locks)", err)
	}
	if err := claim.Commit(); err != nil {
		t.Fatal(err)
	}
	if err := writer.Commit(); err != nil {
		t.Fatal(err)
	}
	if err := within(t, migrated, time.Minute, "the migration did not finish after the writer committed"); err != nil {
		t.Fatalf("migration: %v", err)
	}
}

// TestUpgradeFrom11BesideOldRelease: a database at migration 11 gets 12
// and 13 while the previous release goes on. A reader holds deliveries
// (a console query), so migration 13 waits for its lock; meanwhile the
// running release's completion must go through: it did not while 13 ran
// in the transaction of 12, which held 12's locks, and 13's NOWAIT then
// failed on the waiting completion until its minute was up.
func TestUpgradeFrom11BesideOldRelease(t *testing.T) {
	u := freshSchema(t)
	db := rawDB(t, u)
	storetest.MigrateBefore(t, db, "migrations", 12,
		`INSERT INTO deliveries (id, tenant, event_id, entity, event_name, rule, action_index, action_type, payload, state, run_at, created_at, updated_at, due_at)
			VALUES ('dlv_a', 'acme', 'ev1', 'SalesOrder', 'updated', 'a', 0, 'webhook', '{}', 'pending', now(), now(), now(), now())`)
	ctx := context.Background()
	reader, err := db.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer reader.Rollback()
	var n int
	if err := reader.QueryRow(`SELECT count(*) FROM deliveries`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	migrated := migrateUntil(t, db, u, "migrations/0013_queue_in_write.sql")
	completed := make(chan error, 1)
	go func() {
		_, err := db.Exec(`UPDATE deliveries SET state = 'succeeded', due_at = NULL, updated_at = now() WHERE id = 'dlv_a'`)
		completed <- err
	}()
	if err := within(t, completed, 30*time.Second, "the running release's completion waited behind the migration"); err != nil {
		t.Fatalf("the running release's completion: %v", err)
	}
	if err := reader.Commit(); err != nil {
		t.Fatal(err)
	}
	if err := within(t, migrated, 30*time.Second, "the migration did not finish after the reader committed"); err != nil {
		t.Fatalf("migration: %v", err)
	}
	var queued int
	if err := db.QueryRow(`SELECT count(*) FROM queue`).Scan(&queued); err != nil {
		t.Fatal(err)
	}
	if queued != 0 {
		t.Errorf("%d queue rows after the only delivery succeeded", queued)
	}
}

// within receives from ch, failing with late if nothing comes within d.
func within(t *testing.T, ch <-chan error, d time.Duration, late string) error {
	t.Helper()
	select {
	case err := <-ch:
		return err
	case <-time.After(d):
		t.Fatal(late)
		return nil
	}
}

// migrateUntil opens a store on u in the background, which migrates the
// schema, and returns once its session runs the migration of file (which
// then waits for its tables). The channel receives Open's error.
func migrateUntil(t *testing.T, db *sql.DB, u, file string) <-chan error {
	t.Helper()
	// pg_stat_activity shows the start of the migration's text.
	text, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	app := appName("migrate")
	migrated := make(chan error, 1)
	go func() {
		s, err := postgres.Open(context.Background(), u+"&application_name="+app, postgres.Options{})
		if err == nil {
			s.Close()
		}
		migrated <- err
	}()
	untilSession(t, db, app, "the migration of "+file+" did not start",
		`state = 'active' AND starts_with(query, $2)`, string(text[:100]))
	return migrated
}

// appName is a new application name: other tests' stores run on the same
// server, so a test tells its store's sessions apart by theirs.
func appName(prefix string) string {
	return prefix + strconv.FormatInt(time.Now().UnixNano(), 36)
}

// untilSession polls pg_stat_activity until a session of application app
// matches cond (SQL over its columns, with args as $2…), and fails with
// late and those sessions' states after 30 s.
func untilSession(t *testing.T, db *sql.DB, app, late, cond string, args ...any) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); ; {
		var n int
		if err := db.QueryRow(`SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 AND `+cond,
			append([]any{app}, args...)...).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n > 0 {
			return
		}
		if time.Now().After(deadline) {
			var act string
			_ = db.QueryRow(`SELECT string_agg(state || ' ' || coalesce(wait_event_type, '') || ' ' || left(query, 80), E'\n')
				FROM pg_stat_activity WHERE application_name = $1`, app).Scan(&act)
			t.Fatalf("%s; the store's sessions:\n%s", late, act)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestOldReleaseWritesAfterMigration13: since migration 13 the statement
// that writes new deliveries queues them itself, and marks them queued.
// A process of the previous release, still running, inserts without
// queueing: its rows must still be queued and their dead ones counted
// (by the row trigger), or its deliveries would never run.
func TestOldReleaseWritesAfterMigration13(t *testing.T) {
	u := freshSchema(t)
	s := open(t, u)
	defer s.Close()
	db := rawDB(t, u)
	old := func(id, state, due string, test bool) {
		t.Helper()
		q := `INSERT INTO deliveries (id, tenant, event_id, entity, event_name, rule, action_index, action_type, payload, state, run_at, created_at, updated_at, due_at, test)
			VALUES ($1, 'acme', 'ev1', 'SalesOrder', 'updated', 'a', 0, 'webhook', '{}', $2, now() - interval '1 minute', now(), now(), ` + due + `, $3)`
		if _, err := db.Exec(q, id, state, test); err != nil {
			t.Fatal(err)
		}
	}
	old("dlv_pending", "pending", "now() - interval '1 minute'", false)
	old("dlv_dead", "dead", "NULL", false)
	old("dlv_dead_test", "dead", "NULL", true)
	old("dlv_done", "succeeded", "NULL", false)
	ctx := context.Background()
	st, err := s.Stats(ctx, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if st.Pending != 1 || st.Dead != 1 || st.Running != 0 {
		t.Errorf("Stats %+v, want 1 pending and 1 dead", st)
	}
	ds, err := s.Claim(ctx, "w1", 10, time.Now(), time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if len(ds) != 1 || ds[0].ID != "dlv_pending" {
		t.Errorf("claimed %d deliveries (%v), want dlv_pending", len(ds), ds)
	}
}
