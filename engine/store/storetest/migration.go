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

// DeliveryTraceMigration checks migration 9 on a store: db, a database no
// store has opened, is brought to migration 8 (before deliveries kept their
// trace) from the migration files in dir and given a delivery; open then
// opens the store on it, which migrates it. The old delivery reads back
// with no trace, and a new one keeps its trace through insert and claim.
// now is the SQL literal of a time in the dialect's columns.
func DeliveryTraceMigration(t *testing.T, db *sql.DB, dir, now string, open func() engine.Store) {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join(dir, "*.sql"))
	sort.Strings(files)
	stmts := []string{`CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)`}
	for _, f := range files {
		name := strings.TrimSuffix(filepath.Base(f), ".sql")
		v, _ := strconv.Atoi(name[:4])
		if v >= 9 {
			continue
		}
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		stmts = append(stmts, string(b),
			`INSERT INTO schema_migrations VALUES (`+strconv.Itoa(v)+`, '`+name+`', '2026-01-01T00:00:00Z')`)
	}
	stmts = append(stmts, `INSERT INTO deliveries (id, tenant, event_id, entity, event_name, rule, action_index, action_type, payload, state, run_at, created_at, updated_at, due_at)
			VALUES ('dlv_old', 'acme', 'ev1', 'SalesOrder', 'updated', 'a', 0, 'webhook', '{}', 'failed', `+now+`, `+now+`, `+now+`, `+now+`)`)
	for _, q := range stmts {
		if _, err := db.Exec(q); err != nil {
			t.Fatalf("%v\n%s", err, q)
		}
	}
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
