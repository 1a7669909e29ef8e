package sqlite_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/erpflow/erpflow/engine"
	"github.com/erpflow/erpflow/engine/store/internal/sqlcore"
	"github.com/erpflow/erpflow/engine/store/sqlite"
	"github.com/erpflow/erpflow/engine/store/storetest"
)

func open(t *testing.T, path string) *sqlite.Store {
	t.Helper()
	s, err := sqlite.Open(context.Background(), path, sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	// The suite's wake of many deliveries crosses batches of 200, not
	// 5,000: the same statements with a 25th of the rows (the PostgreSQL
	// suite keeps the default).
	s.WakeBatch = 200
	return s
}

// The two suites share nothing and each is most of this package's time:
// they run side by side.
func TestStore(t *testing.T) {
	t.Parallel()
	storetest.Run(t, func(t *testing.T) engine.Store {
		return open(t, filepath.Join(t.TempDir(), "erpflow.db"))
	})
}

func TestStoreInMemory(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("short")
	}
	// The same statements as the file's: without the volume tests, which
	// took 63 of this test's 101 s under -race.
	storetest.RunBasic(t, func(t *testing.T) engine.Store { return open(t, ":memory:") })
}

func TestShared(t *testing.T) {
	storetest.RunShared(t, func(t *testing.T, n int) []engine.Store {
		path := filepath.Join(t.TempDir(), "shared.db")
		var ss []engine.Store
		for i := 0; i < n; i++ {
			s, err := sqlite.Open(context.Background(), path, sqlite.Options{NoLock: true})
			if err != nil {
				t.Fatal(err)
			}
			ss = append(ss, s)
		}
		return ss
	})
}

// Opening an existing database applies no migration twice and keeps data.
func TestReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "erpflow.db")
	s := open(t, path)
	ctx := context.Background()
	if _, err := s.PutRule(ctx, engine.RuleRecord{Name: "r", Source: "x"}, 0); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s = open(t, path)
	defer s.Close()
	rs, err := s.ListRules(ctx)
	if err != nil || len(rs) != 1 {
		t.Fatalf("after reopen: %v %v", rs, err)
	}
}

// The writer keeps statement journals in memory (see dsn); readers keep
// the default, temporary files, for sorts of unbounded size.
func TestWriterTempStoreInMemory(t *testing.T) {
	s := open(t, filepath.Join(t.TempDir(), "erpflow.db"))
	defer s.Close()
	for _, c := range []struct {
		name string
		db   interface{ QueryRow(string, ...any) *sql.Row }
		want int
	}{{"writer", s.W, 2}, {"reader", s.R, 0}} {
		var got int
		if err := c.db.QueryRow("PRAGMA temp_store").Scan(&got); err != nil {
			t.Fatal(err)
		}
		if got != c.want {
			t.Errorf("%s: temp_store %d, want %d", c.name, got, c.want)
		}
	}
}

// TestWriterDurable: the writer commits with synchronous=FULL (the WAL is
// on disk before a commit returns: an accepted event survives power
// loss), unless Options.RelaxedSync asks for NORMAL. A transaction of the
// queue's bookkeeping (sqlcore.Relaxed) commits with NORMAL, and the
// writer is back to FULL for the next one.
func TestWriterDurable(t *testing.T) {
	ctx := context.Background()
	for _, c := range []struct {
		relaxed           bool
		want, wantRelaxed int
	}{{false, 2, 1}, {true, 1, 1}} {
		s, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "erpflow.db"), sqlite.Options{RelaxedSync: c.relaxed})
		if err != nil {
			t.Fatal(err)
		}
		level := func(ctx context.Context) (got int) {
			t.Helper()
			err := s.Tx(ctx, func(tx *sqlcore.Tx) error {
				return tx.QueryRowContext(ctx, "PRAGMA synchronous").Scan(&got)
			})
			if err != nil {
				t.Fatal(err)
			}
			return got
		}
		before, inRelaxed, after := level(ctx), level(sqlcore.Relaxed(ctx)), level(ctx)
		var outside int
		if err := s.W.QueryRow("PRAGMA synchronous").Scan(&outside); err != nil {
			t.Fatal(err)
		}
		s.Close()
		if before != c.want || after != c.want || outside != c.want || inRelaxed != c.wantRelaxed {
			t.Errorf("RelaxedSync %v: synchronous %d, in a relaxed transaction %d, then %d and %d; want %d, %d, %d, %d",
				c.relaxed, before, inRelaxed, after, outside, c.want, c.wantRelaxed, c.want, c.want)
		}
	}
}

// TestBookkeepingRelaxed: claims, completions and releases commit under
// Core.SyncRelax; an event's insert does not (its commit is the 202's
// promise). SyncRelax is swapped for a statement that counts its runs
// on the writer's one connection.
func TestBookkeepingRelaxed(t *testing.T) {
	ctx := context.Background()
	s := open(t, filepath.Join(t.TempDir(), "erpflow.db"))
	defer s.Close()
	if _, err := s.W.Exec("CREATE TEMP TABLE relaxed (n INTEGER)"); err != nil {
		t.Fatal(err)
	}
	s.SyncRelax, s.SyncRestore = "INSERT INTO temp.relaxed VALUES (1)", "SELECT 1"
	count := func() (n int) {
		t.Helper()
		if err := s.W.QueryRow("SELECT count(*) FROM temp.relaxed").Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	now := time.Now()
	ev := engine.Event{ID: "ev1", Tenant: "acme", Entity: "SalesOrder", Event: "updated"}
	var ds []engine.Delivery
	for _, id := range []string{"dlv_1", "dlv_2"} {
		ds = append(ds, engine.Delivery{ID: id, Rule: "r", ActionType: "webhook", Payload: []byte(`{}`), RunAt: now})
	}
	if _, err := s.InsertEvents(ctx, []engine.EventRecord{{Event: ev, Deliveries: ds}}); err != nil {
		t.Fatal(err)
	}
	if n := count(); n != 0 {
		t.Fatalf("an event's insert ran relaxed (%d)", n)
	}
	got, err := s.Claim(ctx, "w", 10, now, time.Hour)
	if err != nil || len(got) != 2 {
		t.Fatalf("claim: %v %v", got, err)
	}
	if n := count(); n != 1 {
		t.Fatalf("after a claim: %d relaxed transactions, want 1", n)
	}
	if _, err := s.Complete(ctx, []engine.Completion{{ID: "dlv_1", Owner: "w", Attempt: engine.Attempt{N: 1, StartedAt: now, Outcome: "ok"}, State: engine.StateSucceeded}}); err != nil {
		t.Fatal(err)
	}
	if n := count(); n != 2 {
		t.Fatalf("after a completion: %d relaxed transactions, want 2", n)
	}
	if err := s.Release(ctx, "w", []string{"dlv_2"}, now); err != nil {
		t.Fatal(err)
	}
	if n := count(); n != 3 {
		t.Fatalf("after a release: %d relaxed transactions, want 3", n)
	}
}

// The WAL is copied into the database file in the background, write
// after write: the writer's own checkpoints come only every 10,000 pages
// (~40 MB), and would stall every Emit behind their fsync.
func TestCheckpointsInTheBackground(t *testing.T) {
	path := filepath.Join(t.TempDir(), "erpflow.db")
	s := open(t, path)
	defer s.Close()
	size := func() int64 { return fileSize(t, path) }
	const big = 1 << 20
	for _, name := range []string{"first", "second", "third"} {
		before := size()
		if _, err := s.PutRule(context.Background(), engine.RuleRecord{Name: name, Source: strings.Repeat("x", big)}, 0); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(10 * time.Second)
		for size() < before+big {
			if time.Now().After(deadline) {
				t.Fatalf("rule %s: the database file is %d bytes, %d before the write: its 1 MiB is still only in the WAL", name, size(), before)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
}

// benchStore opens a store in a new file for a benchmark, closed after it.
func benchStore(b *testing.B) *sqlite.Store {
	s, err := sqlite.Open(context.Background(), filepath.Join(b.TempDir(), "bench.db"), sqlite.Options{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	return s
}

// BenchmarkOpen: opening an existing database and closing it, what every
// CLI command on SQLite pays (the 64- and 256-row statements are prepared
// only when a batch needs them).
func BenchmarkOpen(b *testing.B) {
	path := filepath.Join(b.TempDir(), "erpflow.db")
	s, err := sqlite.Open(context.Background(), path, sqlite.Options{})
	if err != nil {
		b.Fatal(err)
	}
	s.Close()
	b.ResetTimer()
	for range b.N {
		s, err := sqlite.Open(context.Background(), path, sqlite.Options{})
		if err != nil {
			b.Fatal(err)
		}
		s.Close()
	}
}

func BenchmarkInsertEvents(b *testing.B) {
	s := benchStore(b)
	storetest.BenchInsertEvents(b, s)
}

func BenchmarkInsertOne(b *testing.B) {
	s := benchStore(b)
	storetest.BenchInsertOne(b, s)
}

// BenchmarkAddDeliveries: reruns of one delivery and of 100 at a time.
func BenchmarkAddDeliveries(b *testing.B) {
	for _, n := range []int{1, 100} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			storetest.BenchAddDeliveries(b, benchStore(b), n)
		})
	}
}

// BenchmarkWakeDestination: waking b.N deliveries waiting for a paused
// destination.
func BenchmarkWakeDestination(b *testing.B) {
	storetest.BenchWakeDestination(b, benchStore(b))
}

func BenchmarkClaimComplete(b *testing.B) {
	s := benchStore(b)
	storetest.BenchClaimComplete(b, s)
}

// BenchmarkArmTimer and BenchmarkInsertDelivery compare what a schedule
// rule and an ordinary rule cost per event at emit (issue #13: at most 2×).
func BenchmarkArmTimer(b *testing.B) {
	s := benchStore(b)
	storetest.BenchArmTimer(b, s)
}

func BenchmarkInsertDelivery(b *testing.B) {
	s := benchStore(b)
	storetest.BenchInsertDelivery(b, s)
}

// One Store owns a file: a second Open fails with an *InUseError naming
// the holder until the first closes; NoLock opens beside it.
func TestOneStorePerFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "erpflow.db")
	s := open(t, path)
	_, err := sqlite.Open(context.Background(), path, sqlite.Options{})
	var inUse *sqlite.InUseError
	if !errors.As(err, &inUse) || inUse.Path != path || inUse.PID != os.Getpid() {
		t.Fatalf("second open: %v, want an InUseError of %s held by pid %d", err, path, os.Getpid())
	}
	if want := "database " + path + " is already open in this process"; !strings.Contains(err.Error(), want) {
		t.Fatalf("second open: %q, want it to say %q", err, want)
	}
	reader, err := sqlite.Open(context.Background(), path, sqlite.Options{NoLock: true})
	if err != nil {
		t.Fatalf("NoLock open beside the owner: %v", err)
	}
	if _, err := reader.ListRules(context.Background()); err != nil {
		t.Fatal(err)
	}
	reader.Close()
	s.Close()
	open(t, path).Close() // the lock went with Close
}

// claimOne stores an event with one delivery, due at now, and claims it
// for owner with an hour's lease.
func claimOne(t *testing.T, s *sqlite.Store, owner string, now time.Time) {
	t.Helper()
	ctx := context.Background()
	ev := engine.Event{ID: "ev1", Tenant: "acme", Entity: "SalesOrder", Event: "updated"}
	d := engine.Delivery{ID: "dlv_1", Rule: "r", ActionType: "webhook", Payload: []byte(`{}`), RunAt: now}
	if _, err := s.InsertEvents(ctx, []engine.EventRecord{{Event: ev, Deliveries: []engine.Delivery{d}}}); err != nil {
		t.Fatal(err)
	}
	if ds, err := s.Claim(ctx, owner, 10, now, time.Hour); err != nil || len(ds) != 1 {
		t.Fatalf("claim: %v %v", ds, err)
	}
}

// TestOneStorePerFileByAnyName: the lock belongs to the file, not to the
// name it is opened by. Before, a second Open through a symlink, a
// symlinked directory or a relative path took another lock (path+".lock"
// of that name), and then made the first owner's running deliveries due.
func TestOneStorePerFileByAnyName(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("no flock: files are not guarded")
	}
	dir, other := t.TempDir(), t.TempDir()
	path := filepath.Join(dir, "erpflow.db")
	link := filepath.Join(other, "link.db")
	if err := os.Symlink(path, link); err != nil {
		t.Fatal(err)
	}
	linkedDir := filepath.Join(other, "data")
	if err := os.Symlink(dir, linkedDir); err != nil {
		t.Fatal(err)
	}
	// The link dangles until the first Open creates the file through it.
	s := open(t, link)
	ctx := context.Background()
	now := time.Now()
	claimOne(t, s, "owner", now)
	t.Chdir(other)
	for _, name := range []string{path, filepath.Join(linkedDir, "erpflow.db"), "link.db", "./data/../link.db"} {
		second, err := sqlite.Open(ctx, name, sqlite.Options{})
		var inUse *sqlite.InUseError
		if !errors.As(err, &inUse) || inUse.Path != name || inUse.PID != os.Getpid() {
			if err == nil {
				second.Close()
			}
			t.Fatalf("open %s beside the owner: %v, want an InUseError", name, err)
		}
	}
	// The owner's lease is untouched: nothing is due before it ends.
	if ds, err := s.Claim(ctx, "other", 10, now.Add(time.Minute), time.Hour); err != nil || len(ds) != 0 {
		t.Fatalf("claim under the owner's lease: %v %v", ds, err)
	}
	s.Close()
	open(t, path).Close()
}

// A process killed mid-delivery leaves deliveries running under its lease;
// the next Store to own the file makes them due at once (a NoLock one,
// which may run beside a live owner, does not).
func TestOpenExpiresDeadLeases(t *testing.T) {
	path := filepath.Join(t.TempDir(), "erpflow.db")
	ctx := context.Background()
	now := time.Now()
	s := open(t, path)
	claimOne(t, s, "killed", now)
	s.Close() // as the kernel drops the lock of a killed process

	reader, err := sqlite.Open(ctx, path, sqlite.Options{NoLock: true})
	if err != nil {
		t.Fatal(err)
	}
	if ds, err := reader.Claim(ctx, "reader", 10, time.Now(), time.Minute); err != nil || len(ds) != 0 {
		t.Fatalf("a NoLock open expired the lease: claimed %v (%v)", ds, err)
	}
	reader.Close()

	s = open(t, path)
	defer s.Close()
	ds, err := s.Claim(ctx, "next", 10, time.Now(), time.Minute)
	if err != nil || len(ds) != 1 || ds[0].ID != "dlv_1" || ds[0].Attempts != 2 {
		t.Fatalf("after reopening claimed %+v (%v), want dlv_1 at attempt 2 at once", ds, err)
	}
}

// TestMigrateRuleIDs: a database from before rule ids (migration 1 only)
// gets an id for every stored rule, each its own, and keeps its
// deliveries with no rule id (they run by name).
func TestMigrateRuleIDs(t *testing.T) {
	path := filepath.Join(t.TempDir(), "old.db")
	init, err := os.ReadFile("migrations/0001_init.sql")
	if err != nil {
		t.Fatal(err)
	}
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{string(init),
		`CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)`,
		`INSERT INTO schema_migrations VALUES (1, '0001_init', '2026-01-01T00:00:00Z')`,
		`INSERT INTO rules (name, tenant, source, enabled, version, updated_at) VALUES ('a', 'acme', 'name: a', 1, 4, 1), ('b', '', 'name: b', 0, 1, 1)`,
		`INSERT INTO deliveries (id, tenant, event_id, entity, event_name, rule, action_index, action_type, payload, state, run_at, created_at, updated_at, due_at)
			VALUES ('dlv_old', 'acme', 'ev1', 'SalesOrder', 'updated', 'a', 0, 'webhook', '{}', 'failed', 1, 1, 1, 1)`,
	} {
		if _, err := db.Exec(q); err != nil {
			t.Fatalf("%v\n%s", err, q)
		}
	}
	db.Close()
	s := open(t, path)
	defer s.Close()
	ctx := context.Background()
	rs, err := s.ListRules(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(rs) != 2 || !strings.HasPrefix(rs[0].ID, "rul_") || len(rs[0].ID) != 36 || !strings.HasPrefix(rs[1].ID, "rul_") ||
		rs[0].ID == rs[1].ID || rs[0].Version != 4 {
		t.Fatalf("rules after the migration: %+v", rs)
	}
	d, _, err := s.GetDelivery(ctx, "dlv_old")
	if err != nil || d.RuleID != "" || d.Rule != "a" {
		t.Fatalf("old delivery %+v, %v", d, err)
	}
	// The id stays on edits.
	r := rs[0]
	got, err := s.PutRule(ctx, r, r.Version)
	if err != nil || got.ID != r.ID {
		t.Fatalf("edit: %+v, %v", got, err)
	}
}

// The writer numbers attempts (seq) in its batch insert: no trigger writes
// every attempt row a second time on the hot path.
func TestAttemptSeqWithoutTrigger(t *testing.T) {
	path := filepath.Join(t.TempDir(), "seq.db")
	s := open(t, path)
	s.Close()
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var n int
	if err := db.QueryRow(`SELECT COUNT(*) FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'attempts'`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Fatalf("%d triggers on attempts", n)
	}
}

// BenchmarkPrune measures retention over 200,000 deliveries (issue #15:
// no batch may block the writer for more than 50 ms). Run with
// -benchtime 1x.
func BenchmarkPrune(b *testing.B) {
	s := benchStore(b)
	storetest.BenchPrune(b, s, 200000)
}
