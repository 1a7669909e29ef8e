package postgres_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/erpflow/erpflow/engine"
	"github.com/erpflow/erpflow/engine/store/postgres"
	"github.com/erpflow/erpflow/engine/store/storetest"
	_ "github.com/lib/pq"
)

func baseURL(t testing.TB) string {
	u := os.Getenv("TEST_DATABASE_URL")
	if u == "" {
		t.Skip("TEST_DATABASE_URL not set: run `make test` (starts a throwaway PostgreSQL) or point it at an empty database")
	}
	return u
}

var schemaSeq atomic.Int64

// freshSchema creates an empty schema and returns a URL whose search_path
// is that schema; the schema is dropped when t ends.
func freshSchema(t testing.TB) string {
	base := baseURL(t)
	admin, err := sql.Open("postgres", base)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { admin.Close() })
	name := fmt.Sprintf("erpflow_t%d_%d", os.Getpid(), schemaSeq.Add(1))
	ctx := context.Background()
	if _, err := admin.ExecContext(ctx, "DROP SCHEMA IF EXISTS "+name+" CASCADE; CREATE SCHEMA "+name); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { admin.ExecContext(context.Background(), "DROP SCHEMA IF EXISTS "+name+" CASCADE") })
	u, err := url.Parse(base)
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	q.Set("search_path", name)
	u.RawQuery = q.Encode()
	return u.String()
}

// rawDB opens the schema at u as a plain *sql.DB, closed when t ends.
func rawDB(t testing.TB, u string) *sql.DB {
	t.Helper()
	db, err := sql.Open("postgres", u)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// openFresh opens a store on a fresh schema, a plain *sql.DB beside it,
// and a context of two minutes, all ended with t.
func openFresh(t *testing.T) (*postgres.Store, *sql.DB, context.Context) {
	t.Helper()
	u := freshSchema(t)
	s := open(t, u)
	t.Cleanup(func() { s.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return s, rawDB(t, u), ctx
}

func open(t testing.TB, u string) *postgres.Store {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s, err := postgres.Open(ctx, u, postgres.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestStore(t *testing.T) {
	baseURL(t)
	storetest.Run(t, func(t *testing.T) engine.Store {
		u := freshSchema(t)
		t.Cleanup(func() { queueAgrees(t, u) })
		return open(t, u)
	})
}

// queueAgrees checks, once a test's store is closed, that the queue table
// holds exactly the deliveries a worker may claim (due_at set: waiting or
// running, not test-fires), each with its delivery's due time, state and
// tenant. A delivery missing from it would never be delivered; one too
// many would be claimed for nothing.
func queueAgrees(t *testing.T, u string) {
	if t.Failed() {
		return
	}
	db, err := sql.Open("postgres", u)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	rows, err := db.Query(`SELECT coalesce(d.id, q.id), d.state, d.test, d.due_at, q.state, q.due_at
		FROM (SELECT * FROM deliveries WHERE due_at IS NOT NULL) d FULL JOIN queue q ON q.id = d.id
		WHERE d.id IS NULL OR q.id IS NULL OR q.due_at <> d.due_at OR q.state <> d.state OR q.tenant <> d.tenant
		UNION ALL
		SELECT id, state, test, due_at, NULL, NULL FROM deliveries
		WHERE (due_at IS NOT NULL) <> (NOT test AND state IN ('pending', 'failed', 'running'))
		LIMIT 5`)
	if err != nil {
		t.Fatalf("queue check: %v", err)
	}
	defer rows.Close()
	for rows.Next() {
		var id string
		var state, qstate sql.NullString
		var test sql.NullBool
		var due, qdue sql.NullTime
		if err := rows.Scan(&id, &state, &test, &due, &qstate, &qdue); err != nil {
			t.Fatal(err)
		}
		t.Errorf("queue check: delivery %s (state %v, test %v, due %v) has queue row (state %v, due %v)",
			id, state, test, due, qstate, qdue)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
}

func TestShared(t *testing.T) {
	baseURL(t)
	storetest.RunShared(t, func(t *testing.T, n int) []engine.Store {
		u := freshSchema(t)
		t.Cleanup(func() { queueAgrees(t, u) })
		var ss []engine.Store
		for i := 0; i < n; i++ {
			ss = append(ss, open(t, u))
		}
		return ss
	})
}

func BenchmarkInsertEvents(b *testing.B) {
	s := open(b, freshSchema(b))
	defer s.Close()
	storetest.BenchInsertEvents(b, s)
}

func BenchmarkInsertOne(b *testing.B) {
	s := open(b, freshSchema(b))
	defer s.Close()
	storetest.BenchInsertOne(b, s)
}

// BenchmarkAddDeliveries: reruns of one delivery and of 100 at a time.
func BenchmarkAddDeliveries(b *testing.B) {
	for _, n := range []int{1, 100} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			s := open(b, freshSchema(b))
			defer s.Close()
			storetest.BenchAddDeliveries(b, s, n)
		})
	}
}

// BenchmarkWakeDestination: waking b.N deliveries waiting for a paused
// destination.
func BenchmarkWakeDestination(b *testing.B) {
	s := open(b, freshSchema(b))
	defer s.Close()
	storetest.BenchWakeDestination(b, s)
}

func BenchmarkClaimComplete(b *testing.B) {
	s := open(b, freshSchema(b))
	defer s.Close()
	storetest.BenchClaimComplete(b, s)
}

// BenchmarkArmTimer and BenchmarkInsertDelivery compare what a schedule
// rule and an ordinary rule cost per event at emit (issue #13: at most 2×).
func BenchmarkArmTimer(b *testing.B) {
	s := open(b, freshSchema(b))
	defer s.Close()
	storetest.BenchArmTimer(b, s)
}

func BenchmarkInsertDelivery(b *testing.B) {
	s := open(b, freshSchema(b))
	defer s.Close()
	storetest.BenchInsertDelivery(b, s)
}

func record(id string) engine.EventRecord {
	now := time.Now().UTC()
	return engine.EventRecord{
		Event:      engine.Event{ID: id, Tenant: "acme", Entity: "SalesOrder", Event: "updated"},
		Raw:        []byte(`{"id":"` + id + `","entity":"SalesOrder","event":"updated"}`),
		ReceivedAt: now,
		Deliveries: []engine.Delivery{{ID: "dlv_" + id, Rule: "r", ActionType: "webhook",
			Payload: []byte(`{"b":1, "a":2}`), State: engine.StatePending, RunAt: now, CreatedAt: now}},
	}
}

// wait receives from ch or fails after a generous deadline.
func wait(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(30 * time.Second):
		t.Fatalf("no wakeup: %s", what)
	}
}

// Another process's insert wakes this one's workers (LISTEN/NOTIFY).
func TestWakeupAcrossStores(t *testing.T) {
	u := freshSchema(t)
	a, b := open(t, u), open(t, u)
	defer a.Close()
	defer b.Close()
	ch := b.Wakeups()
	wait(t, ch, "the listener's first wakeup once it listens")
	if _, err := a.InsertEvents(context.Background(), []engine.EventRecord{record("w1")}); err != nil {
		t.Fatal(err)
	}
	wait(t, ch, "after another store inserted a delivery")
}

// InsertEventsTx commits and rolls back with the host's transaction.
func TestInsertEventsTx(t *testing.T) {
	u := freshSchema(t)
	s := open(t, u)
	defer s.Close()
	host := rawDB(t, u)
	ctx := context.Background()
	if _, err := host.ExecContext(ctx, "CREATE TABLE orders (id TEXT PRIMARY KEY, status TEXT)"); err != nil {
		t.Fatal(err)
	}
	emit := func(id string, commit bool) {
		tx, err := host.BeginTx(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer tx.Rollback()
		if _, err := tx.ExecContext(ctx, "INSERT INTO orders VALUES ($1, 'RELEASED')", id); err != nil {
			t.Fatal(err)
		}
		res, err := s.InsertEventsTx(ctx, tx, []engine.EventRecord{record(id)})
		if err != nil || len(res) != 1 || res[0].Duplicate || len(res[0].Deliveries) != 1 {
			t.Fatalf("InsertEventsTx: %+v %v", res, err)
		}
		// Not visible to others before the host commits.
		if _, _, err := s.GetDelivery(ctx, "dlv_"+id); !errors.Is(err, engine.ErrNotFound) {
			t.Fatalf("delivery visible before commit: %v", err)
		}
		if commit {
			if err := tx.Commit(); err != nil {
				t.Fatal(err)
			}
		}
	}
	emit("kept", true)
	emit("dropped", false)
	if _, _, err := s.GetDelivery(ctx, "dlv_kept"); err != nil {
		t.Errorf("committed delivery: %v", err)
	}
	if _, _, err := s.GetDelivery(ctx, "dlv_dropped"); !errors.Is(err, engine.ErrNotFound) {
		t.Errorf("rolled back delivery: %v", err)
	}
	if _, err := s.GetEvent(ctx, "acme", "dropped"); !errors.Is(err, engine.ErrNotFound) {
		t.Errorf("rolled back event: %v", err)
	}
	ds, err := s.Claim(ctx, "w", 10, time.Now().Add(time.Second), time.Minute)
	if err != nil || len(ds) != 1 || ds[0].ID != "dlv_kept" {
		t.Fatalf("claimed %+v %v", ds, err)
	}
}

// Migrations run once when several processes open a new database at once.
func TestConcurrentMigrations(t *testing.T) {
	// Whatever the server's default isolation: under repeatable read a
	// process that waited for the lock read the migrations recorded before
	// the winner committed, and applied them again.
	for _, iso := range []string{"", "repeatable%20read", "serializable"} {
		t.Run("isolation="+iso, func(t *testing.T) {
			u := freshSchema(t)
			if iso != "" {
				u += "&default_transaction_isolation=" + iso
			}
			errs := make(chan error, 5)
			for i := 0; i < 5; i++ {
				go func() {
					s, err := postgres.Open(context.Background(), u, postgres.Options{MaxConns: 2})
					if err == nil {
						s.Close()
					}
					errs <- err
				}()
			}
			for i := 0; i < 5; i++ {
				if err := <-errs; err != nil {
					t.Fatal(err)
				}
			}
			db := rawDB(t, u)
			// Each migration applied once: as many rows as distinct versions.
			var n, versions int
			if err := db.QueryRow("SELECT count(*), count(DISTINCT version) FROM schema_migrations").Scan(&n, &versions); err != nil || n != versions || n < 2 {
				t.Fatalf("schema_migrations rows %d, versions %d, %v", n, versions, err)
			}
		})
	}
}

// After the server restarts, the pool and the listener reconnect by
// themselves: the next calls succeed and wakeups resume.
func TestServerRestart(t *testing.T) {
	restart, base := os.Getenv("TEST_PG_RESTART"), os.Getenv("TEST_PG_RESTART_URL")
	if restart == "" || base == "" {
		t.Skip("TEST_PG_RESTART/TEST_PG_RESTART_URL not set: run `make test`")
	}
	// The restartable server, which the engine's crash tests restart too.
	storetest.LockRestartServer(t, base)
	t.Setenv("TEST_DATABASE_URL", base)
	u := freshSchema(t)
	s := open(t, u)
	defer s.Close()
	ch := s.Wakeups()
	wait(t, ch, "first listen")
	ctx := context.Background()
	if _, err := s.InsertEvents(ctx, []engine.EventRecord{record("before")}); err != nil {
		t.Fatal(err)
	}
	wait(t, ch, "insert before restart")
	// Fill the pool with idle connections that the restart will kill.
	for i := 0; i < 4; i++ {
		if _, err := s.ListDeliveries(ctx, engine.DeliveryFilter{}); err != nil {
			t.Fatal(err)
		}
	}
	if out, err := exec.Command("sh", "-c", restart).CombinedOutput(); err != nil {
		t.Fatalf("restart: %v\n%s", err, out)
	}
	// The listener reconnects and signals (notifications may be lost).
	wait(t, ch, "listener reconnect")
	if _, err := s.InsertEvents(ctx, []engine.EventRecord{record("after")}); err != nil {
		t.Fatalf("insert after restart: %v", err)
	}
	ds, err := s.Claim(ctx, "w", 10, time.Now().Add(time.Second), time.Minute)
	if err != nil || len(ds) != 2 {
		t.Fatalf("claim after restart: %d, %v", len(ds), err)
	}
	wait(t, ch, "insert after restart")
}

// TestMigrateRuleIDs: a database from before rule ids (migration 1 only)
// gets an id for every stored rule, each its own, and keeps its
// deliveries with no rule id (they run by name).
func TestMigrateRuleIDs(t *testing.T) {
	u := freshSchema(t)
	init, err := os.ReadFile("migrations/0001_init.sql")
	if err != nil {
		t.Fatal(err)
	}
	db := rawDB(t, u)
	for _, q := range []string{string(init),
		`CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)`,
		`INSERT INTO schema_migrations VALUES (1, '0001_init', '2026-01-01T00:00:00Z')`,
		`INSERT INTO rules (name, tenant, source, enabled, version, updated_at) VALUES ('a', 'acme', 'name: a', true, 4, now()), ('b', '', 'name: b', false, 1, now())`,
		`INSERT INTO deliveries (id, tenant, event_id, entity, event_name, rule, action_index, action_type, payload, state, run_at, created_at, updated_at, due_at)
			VALUES ('dlv_old', 'acme', 'ev1', 'SalesOrder', 'updated', 'a', 0, 'webhook', '{}', 'failed', now(), now(), now(), now())`,
	} {
		if _, err := db.Exec(q); err != nil {
			t.Fatalf("%v\n%s", err, q)
		}
	}
	s := open(t, u)
	defer s.Close()
	ctx := context.Background()
	rs, err := s.ListRules(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(rs) != 2 || len(rs[0].ID) != 36 || rs[0].ID[:4] != "rul_" || len(rs[1].ID) != 36 || rs[0].ID == rs[1].ID || rs[0].Version != 4 {
		t.Fatalf("rules after the migration: %+v", rs)
	}
	d, _, err := s.GetDelivery(ctx, "dlv_old")
	if err != nil || d.RuleID != "" || d.Rule != "a" {
		t.Fatalf("old delivery %+v, %v", d, err)
	}
}

// orderedRecord is record with its delivery held in the ordered chain
// key, preclaimed by owner when set.
func orderedRecord(id, key, owner string) engine.EventRecord {
	r := record(id)
	d := &r.Deliveries[0]
	d.State, d.OrderKey = engine.StateHeld, key
	if owner != "" {
		d.LeaseOwner, d.LockedUntil = owner, time.Now().Add(time.Minute)
	}
	return r
}

// The stale head: an emit that read a headless chain's held delivery Y
// (the state TestOrderedOrphans leaves) and then waited for the chain's
// row while Y became head, ran and ended, found the chain headless again
// and made Y, now ended, its head: the emit's own delivery and every
// later one of the chain stayed held for good. The emit now has such a
// chain checked once it committed, and a head that ended counts as none.
func TestOrderedStaleHead(t *testing.T) {
	s, db, ctx := openFresh(t)
	// stale-0 ended and its completion saw none held: stale-1 (Y) is held
	// in a chain without a head.
	for i := range 2 {
		if _, err := s.InsertEvents(ctx, []engine.EventRecord{orderedRecord(fmt.Sprintf("stale-%d", i), "stale", "")}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := db.ExecContext(ctx, `UPDATE deliveries SET state = 'succeeded', due_at = NULL WHERE id = 'dlv_stale-0';
		UPDATE chains SET head = '' WHERE key = 'stale'`); err != nil {
		t.Fatal(err)
	}
	// Another transaction holds the chain's row while the emit of
	// stale-2 (Z) runs, and meanwhile Y ends: made head, run, completed.
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, `SELECT 1 FROM chains WHERE key = 'stale' FOR UPDATE`); err != nil {
		t.Fatal(err)
	}
	emitted := make(chan error, 1)
	go func() {
		_, err := s.InsertEvents(ctx, []engine.EventRecord{orderedRecord("stale-2", "stale", "")})
		emitted <- err
	}()
	untilLockWaiters(t, ctx, db, 1, emitted, "the emit waits for the chain's row")
	if _, err := tx.ExecContext(ctx, `UPDATE deliveries SET state = 'succeeded', due_at = NULL WHERE id = 'dlv_stale-1';
		DELETE FROM held WHERE id = 'dlv_stale-1'`); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	if err := <-emitted; err != nil {
		t.Fatal(err)
	}
	var head string
	if err := db.QueryRowContext(ctx, `SELECT head FROM chains WHERE key = 'stale'`).Scan(&head); err != nil {
		t.Fatal(err)
	}
	d, _, err := s.GetDelivery(ctx, "dlv_stale-2")
	if err != nil {
		t.Fatal(err)
	}
	if head != "dlv_stale-2" || d.State != engine.StatePending {
		t.Fatalf("chain head %q, stale-2 %s; want stale-2, pending", head, d.State)
	}

	// RepairChains finds a chain whose head ended too (a process that
	// stopped before its look after the commit).
	if _, err := s.InsertEvents(ctx, []engine.EventRecord{orderedRecord("stale-3", "stale", "")}); err != nil {
		t.Fatal(err)
	}
	if _, err := db.ExecContext(ctx, `UPDATE deliveries SET state = 'dead', due_at = NULL WHERE id = 'dlv_stale-2'`); err != nil {
		t.Fatal(err)
	}
	if n, err := s.RepairChains(ctx); err != nil || n != 1 {
		t.Fatalf("RepairChains = %d, %v; want 1", n, err)
	}
	if d, _, err := s.GetDelivery(ctx, "dlv_stale-3"); err != nil || d.State != engine.StatePending {
		t.Fatalf("stale-3 after the repair: %v %v, want pending", d.State, err)
	}
}

// A chain left with held deliveries but no head (what a completion that
// read held before an emit committed leaves, when the process stops
// before its look after the commit): the next emit to the chain makes the
// earliest held one the head instead of its own, and RepairChains gives a
// chain that gets no emit its head.
func TestOrderedOrphans(t *testing.T) {
	s, db, ctx := openFresh(t)
	orphan := func(key string, n int) []string {
		t.Helper()
		var out []string
		for i := range n {
			r := orderedRecord(fmt.Sprintf("%s-%d", key, i), key, "")
			if _, err := s.InsertEvents(ctx, []engine.EventRecord{r}); err != nil {
				t.Fatal(err)
			}
			out = append(out, r.Deliveries[0].ID)
		}
		// The head ended, and its completion saw none held.
		if _, err := db.ExecContext(ctx, `UPDATE deliveries SET state = 'succeeded', due_at = NULL WHERE id = $1;`, out[0]); err != nil {
			t.Fatal(err)
		}
		if _, err := db.ExecContext(ctx, `UPDATE chains SET head = '' WHERE key = $1`, key); err != nil {
			t.Fatal(err)
		}
		return out[1:]
	}
	state := func(id string) engine.State {
		t.Helper()
		d, _, err := s.GetDelivery(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		return d.State
	}

	held := orphan("adopt", 3)
	r := orderedRecord("adopt-new", "adopt", "me")
	res, err := s.InsertEvents(ctx, []engine.EventRecord{r})
	if err != nil {
		t.Fatal(err)
	}
	if got := res[0].Deliveries[0]; got.State != engine.StateHeld || got.LeaseOwner != "" {
		t.Fatalf("the new delivery of a chain with earlier held ones: %s (owner %q), want held", got.State, got.LeaseOwner)
	}
	if st := state(held[0]); st != engine.StatePending {
		t.Fatalf("the earliest held one: %s, want pending (the chain's head)", st)
	}
	if st := state(held[1]); st != engine.StateHeld {
		t.Fatalf("the second held one: %s, want still held", st)
	}

	stuck := orphan("repair", 2)
	if n, err := s.RepairChains(ctx); err != nil || n != 1 {
		t.Fatalf("RepairChains = %d, %v; want 1 (the chain without emits)", n, err)
	}
	if st := state(stuck[0]); st != engine.StatePending {
		t.Fatalf("the repaired chain's next: %s, want pending", st)
	}
	ds, err := s.Claim(ctx, "w", 10, time.Now().Add(time.Second), time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, d := range ds {
		got = append(got, d.ID)
	}
	sort.Strings(got)
	if want := []string{held[0], stuck[0]}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("claimable %v, want the two heads %v", got, want)
	}
	if n, err := s.RepairChains(ctx); err != nil || n != 0 {
		t.Fatalf("RepairChains again = %d, %v; want 0", n, err)
	}
}

// BenchmarkPrune measures retention over 200,000 deliveries, as on
// SQLite. Run with -benchtime 1x.
func BenchmarkPrune(b *testing.B) {
	s := open(b, freshSchema(b))
	defer s.Close()
	storetest.BenchPrune(b, s, 200000)
}

// TestSmallWritesInTransactionsOnAFullPool: writes of one event (from
// VALUES) inside transactions — an entity with schedule rules makes one —
// while every pooled connection is held by such a transaction. Preparing
// a statement then could wait for a connection that never comes (the
// review of the VALUES writes found it hang until the deadline, every
// time): every statement is prepared at Open.
func TestSmallWritesInTransactionsOnAFullPool(t *testing.T) {
	for _, c := range []struct{ conns, writers int }{{1, 1}, {4, 16}} {
		t.Run(fmt.Sprintf("%d connections, %d writers", c.conns, c.writers), func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			s, err := postgres.Open(ctx, freshSchema(t), postgres.Options{MaxConns: c.conns})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			var wg sync.WaitGroup
			errs := make(chan error, c.writers)
			for w := range c.writers {
				wg.Go(func() {
					for i := range 6 { // 0 to 5 deliveries: every VALUES shape, and arrays
						r := record(fmt.Sprintf("w%d-%d", w, i))
						r.TrackLatest = true
						r.Deliveries = nil
						for k := range i {
							d := record("").Deliveries[0]
							d.ID = fmt.Sprintf("dlv_w%d-%d-%d", w, i, k)
							r.Deliveries = append(r.Deliveries, d)
						}
						res, err := s.InsertEvents(ctx, []engine.EventRecord{r})
						if err == nil && len(res[0].Deliveries) != i {
							err = fmt.Errorf("event %s: %d deliveries, want %d", r.Event.ID, len(res[0].Deliveries), i)
						}
						if err != nil {
							errs <- err
							return
						}
					}
				})
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Error(err)
			}
		})
	}
}
