package storetest

import (
	"context"
	"database/sql"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/erpflow/erpflow/engine"
)

// MigrationCheck checks one migration on a store: db, a database no store
// has opened, holds the schema files in dir; now is the SQL literal of a
// time in the dialect's columns; open opens the store on db, which
// migrates it.
type MigrationCheck func(t *testing.T, db *sql.DB, dir, now string, open func() engine.Store)

// Migrations are the checks of single migrations every store runs, by
// name.
var Migrations = map[string]MigrationCheck{
	"DeliveryTrace": DeliveryTraceMigration,
	"StatsCounts":   StatsCountsMigration,
}

// DeliveryTraceMigration checks migration 9 on a store: db, a database no
// store has opened, is brought to migration 8 (before deliveries kept their
// trace) from the migration files in dir and given a delivery; open then
// opens the store on it, which migrates it. The old delivery reads back
// with no trace, and a new one keeps its trace through insert and claim.
// now is the SQL literal of a time in the dialect's columns.
func DeliveryTraceMigration(t *testing.T, db *sql.DB, dir, now string, open func() engine.Store) {
	t.Helper()
	MigrateBefore(t, db, dir, 9, `INSERT INTO deliveries (id, tenant, event_id, entity, event_name, rule, action_index, action_type, payload, state, run_at, created_at, updated_at, due_at)
			VALUES ('dlv_old', 'acme', 'ev1', 'SalesOrder', 'updated', 'a', 0, 'webhook', '{}', 'failed', `+now+`, `+now+`, `+now+`, `+now+`)`)
	s := open()
	ctx := context.Background()
	d, _, err := s.GetDelivery(ctx, "dlv_old")
	if err != nil || d.Trace != "" || d.Rule != "a" {
		t.Fatalf("old delivery %+v, %v; want no trace", d, err)
	}
	const tr = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01 congo=t61rcWkgMzE"
	at := time.Now().UTC()
	r := engine.EventRecord{
		Event:      engine.Event{ID: "new", Tenant: "acme", Entity: "SalesOrder", Event: "updated"},
		Raw:        []byte(`{"id":"new","entity":"SalesOrder","event":"updated"}`),
		ReceivedAt: at,
		Deliveries: []engine.Delivery{{ID: "dlv_new", Rule: "r", ActionType: "webhook",
			Payload: []byte(`{}`), State: engine.StatePending, RunAt: at, CreatedAt: at, Trace: tr}},
	}
	if _, err := s.InsertEvents(ctx, []engine.EventRecord{r}); err != nil {
		t.Fatal(err)
	}
	ds, err := s.Claim(ctx, "w", 10, time.Now().Add(time.Hour), time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range ds {
		if d.ID == "dlv_new" {
			if d.Trace != tr {
				t.Fatalf("claimed trace %q, want %q", d.Trace, tr)
			}
			return
		}
	}
	t.Fatalf("claimed %+v, want dlv_new among them", ds)
}

// MigrateBefore brings db, a database no store has opened, to the last
// migration before version from the migration files in dir, as a store
// of that release would have, then runs stmts.
func MigrateBefore(t *testing.T, db *sql.DB, dir string, version int, stmts ...string) {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join(dir, "*.sql"))
	sort.Strings(files)
	all := []string{`CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)`}
	for _, f := range files {
		name := strings.TrimSuffix(filepath.Base(f), ".sql")
		v, _ := strconv.Atoi(name[:4])
		if v >= version {
			continue
		}
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, string(b),
			`INSERT INTO schema_migrations VALUES (`+strconv.Itoa(v)+`, '`+name+`', '2026-01-01T00:00:00Z')`)
	}
	for _, q := range append(all, stmts...) {
		if _, err := db.Exec(q); err != nil {
			t.Fatalf("%v\n%s", err, q)
		}
	}
}

// StatsCountsMigration checks migration 12 (counts kept apart from the
// deliveries) as DeliveryTraceMigration checks migration 9: the
// deliveries already there when a store migrates are counted, dead ones
// by tenant, test-fires not at all.
func StatsCountsMigration(t *testing.T, db *sql.DB, dir, now string, open func() engine.Store) {
	t.Helper()
	row := func(id, tenant, state string, test bool, due string) string {
		return `INSERT INTO deliveries (id, tenant, event_id, entity, event_name, rule, action_index, action_type, payload, state, run_at, created_at, updated_at, due_at, test)
			VALUES ('` + id + `', '` + tenant + `', 'ev1', 'SalesOrder', 'updated', 'a', 0, 'webhook', '{}', '` + state + `', ` + now + `, ` + now + `, ` + now + `, ` + due + `, ` + strconv.FormatBool(test) + `)`
	}
	MigrateBefore(t, db, dir, 12,
		row("dlv_01KB0000000000000000000001", "acme", "dead", false, "NULL"),
		row("dlv_01KB0000000000000000000002", "acme", "dead", false, "NULL"),
		row("dlv_01KB0000000000000000000003", "globex", "dead", false, "NULL"),
		row("dlv_01KB0000000000000000000004", "acme", "dead", true, "NULL"),
		row("other-id", "acme", "dead", false, "NULL"),
		row("dlv_01KB0000000000000000000005", "acme", "failed", false, now),
		row("dlv_01KB0000000000000000000006", "globex", "succeeded", false, "NULL"))
	s := open()
	ctx := context.Background()
	at := time.Now().Add(time.Hour)
	want := map[string]engine.QueueStats{
		"":       {Dead: 4, Pending: 1, Failed: 1},
		"acme":   {Dead: 3, Pending: 1, Failed: 1},
		"globex": {Dead: 1},
	}
	for tenant, w := range want {
		var got engine.QueueStats
		var err error
		if tenant == "" {
			got, err = s.Stats(ctx, at)
		} else {
			got, err = s.TenantStats(ctx, tenant, at)
		}
		if err != nil {
			t.Fatal(err)
		}
		got.OldestPending = time.Time{}
		if got != w {
			t.Errorf("stats of %q after the migration %+v, want %+v", tenant, got, w)
		}
	}
	// And the counts follow what happens next.
	if _, err := s.Requeue(ctx, []string{"dlv_01KB0000000000000000000001"}, &engine.DeliveryFilter{}, time.Now()); err != nil {
		t.Fatal(err)
	}
	statsAgree(t, s)
}
